package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// processConfig is the node's vipd config with one tracked check: HAProxy's
// master through its pidfile, or every HAProxy process by name. Its
// interval is 30 s, longer than any wait below: a check that reacts within
// them reacted to the process event, not to its interval.
func processConfig(n *testbed.Node, byName bool) string {
	check := "pidfile: " + n.HAProxyPidfile()
	if byName {
		check = "name: " + n.HAProxyName()
	}
	conf := n.VipdConfig()
	conf = strings.Replace(conf, `    type: http
    url: http://127.0.0.1:8404/healthz
    interval: 200ms
    timeout: 150ms
    rise: 2
    fall: 2
`, "    type: process\n    "+check+"\n    interval: 30s\n    fall: 2\n    fast_interval: 10ms\n", 1)
	return conf
}

// TestProcessCheckEvents: with a process check, HAProxy dying on the holder
// (SIGKILL or SIGTERM to the master) moves the VIP at once, long before the
// check's interval; HAProxy reloading (master-worker reload, as `systemctl
// reload haproxy`; a new PID written to the pidfile) never moves it. Both
// forms: pidfile and name. Never two holders.
func TestProcessCheckEvents(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	for _, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	for _, byName := range []bool{false, true} {
		form := map[bool]string{false: "pidfile", true: "name"}[byName]
		for _, n := range tb.Nodes {
			n.StopVipd()
			if err := n.StartVipdWithConfig(processConfig(n, byName)); err != nil {
				t.Fatal(err)
			}
		}
		// Back to web-node-1 with HAProxy running everywhere.
		ensureHolder := func() {
			t.Helper()
			if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
				t.Fatalf("%s: %v\n%s", form, err, n1.Vipd().LogTail(30))
			}
		}
		ensureHolder()

		for _, reload := range []struct {
			name string
			do   func() error
		}{{"master-worker reload", n1.ReloadHAProxy}, {"new PID in the pidfile", n1.RestartHAProxyNewPID}} {
			from := time.Now()
			if err := reload.do(); err != nil {
				t.Fatalf("%s: %s: %v", form, reload.name, err)
			}
			time.Sleep(time.Second)
			if st := tb.Mon.Stats(from, time.Now()); st.Changes != 0 {
				t.Errorf("%s: %s moved the VIP (%d VIP events)\n%s", form, reload.name, st.Changes, n1.Vipd().LogTail(20))
			}
		}

		for _, kill := range []struct {
			name string
			do   func() error
		}{{"SIGKILL", n1.KillHAProxy}, {"SIGTERM", n1.StopHAProxy}} {
			from := time.Now()
			if err := kill.do(); err != nil {
				t.Fatal(err)
			}
			if err := tb.WaitHolder(testbed.Node2, 10*time.Second); err != nil {
				t.Fatalf("%s: HAProxy %s on web-node-1: %v (the check's interval is 30s: the exit was not seen)\n%s", form, kill.name, err, n1.Vipd().LogTail(30))
			}
			ev, _ := tb.Mon.EventAfter(testbed.Node2, true, from)
			t.Logf("%s check, HAProxy %s on the holder: VIP on web-node-2 after %v", form, kill.name, ev.Time.Sub(from).Round(time.Millisecond))
			// HAProxy back; a restarted vipd runs its check at once.
			if err := n1.StartHAProxy(); err != nil {
				t.Fatal(err)
			}
			n1.StopVipd()
			if err := n1.StartVipdWithConfig(processConfig(n1, byName)); err != nil {
				t.Fatal(err)
			}
			ensureHolder()
		}
		_ = n2
	}
	if st := tb.Mon.Stats(t0, time.Now()); st.TwoHolders != 0 || st.MaxHolders > 1 {
		t.Errorf("two holders for %v (max %d)", st.TwoHolders, st.MaxHolders)
	}
}
