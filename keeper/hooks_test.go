package keeper_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/keeper"
)

func TestNotifyHooksGetTheirEnvironment(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	dir := t.TempDir()
	hook := `["/bin/sh", "-c", "env | grep ^VIPD_ | sort > ` + dir + `/$VIPD_STATE"]`
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101,
		Extra: "    notify: {master: " + hook + ", backup: " + hook + ", stop: " + hook + "}\n"})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	n1.Stop()

	for state, want := range map[string][]string{
		"MASTER": {"VIPD_GROUP=VI_1", "VIPD_NODE=web-node-1", "VIPD_STATE=MASTER", "VIPD_ADDRESSES=192.168.20.15/24", "VIPD_INTERFACE=eth0", "VIPD_PRIORITY=101"},
		"BACKUP": {"VIPD_STATE=BACKUP", "VIPD_PREVIOUS_STATE=INIT"},
		"STOP":   {"VIPD_STATE=STOP", "VIPD_PREVIOUS_STATE=MASTER", "VIPD_PRIORITY=101"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, state))
		if err != nil {
			t.Errorf("hook for %s did not run: %v", state, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(string(b), w+"\n") {
				t.Errorf("%s hook environment lacks %s:\n%s", state, w, b)
			}
		}
	}
}

// TestNotifyAnyGetsKeepalivedArguments: the generic hook runs on every
// transition with INSTANCE, the group, the state and the priority after
// its own arguments, and STOP carries the last priority.
func TestNotifyAnyGetsKeepalivedArguments(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	dir := t.TempDir()
	hook := `["/bin/sh", "-c", "printf '%s|' \"$0\" \"$@\" > ` + dir + `/$3", "first-arg"]`
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101,
		Extra: "    notify: {any: " + hook + "}\n"})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	n1.Stop()

	for state, want := range map[string]string{
		"BACKUP": "first-arg|INSTANCE|VI_1|BACKUP|101|",
		"MASTER": "first-arg|INSTANCE|VI_1|MASTER|101|",
		"STOP":   "first-arg|INSTANCE|VI_1|STOP|101|",
	} {
		b, err := os.ReadFile(filepath.Join(dir, state))
		if err != nil {
			t.Errorf("notify.any did not run for %s: %v", state, err)
			continue
		}
		if string(b) != want {
			t.Errorf("notify.any for %s got arguments %q, want %q", state, b, want)
		}
	}
}

func TestSlowNotifyHookDoesNotDelayFailover(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	slow := "    notify: {master: [/bin/sleep, \"30\"], backup: [/bin/sleep, \"30\"], fault: [/bin/sleep, \"30\"], timeout: 3s}\n"
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, Extra: slow})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, Extra: slow})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(200 * time.Millisecond) // both nodes' hooks are now sleeping

	start := time.Now()
	n1.Healthy.Store(false)
	rec.WaitFor(t, "web-node-2", 2*time.Second)
	t.Logf("failover with 30 s hooks running: %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	n1.Stop()
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("stopping with hooks running took %v; hooks must be killed, not awaited", took)
	}
}

func TestReloadKeepsHeldVIPAndAppliesChanges(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	seen := len(rec.History())

	vi2 := netip.MustParsePrefix("192.168.20.16/24")
	extra := `
  - name: VI_2
    interface: eth0
    addresses: [192.168.20.16/24]
`
	cfg := keepertest.Config(t, m.Endpoint, keepertest.Spec{Name: "web-node-1", Priority: 150, Extra: extra})
	cfg.Groups[0].GARP.Count = 7
	if err := n1.K.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitUntil(t, "VI_2 bound after reload", func() bool { return n1.Host.Has(vi2) })
	waitUntil(t, "priority 150 published", func() bool {
		resp, err := m.Client(t).Get(t.Context(), "/vipd/groups/VI_1/candidates/web-node-1")
		return err == nil && len(resp.Kvs) == 1 && strings.Contains(string(resp.Kvs[0].Value), `"priority":150`)
	})

	// Back to one group: VI_2 is released, VI_1 stays.
	if err := n1.K.Reload(keepertest.Config(t, m.Endpoint, keepertest.Spec{Name: "web-node-1", Priority: 101})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitUntil(t, "VI_2 removed after reload", func() bool { return !n1.Host.Has(vi2) })
	for _, line := range rec.History()[seen:] {
		if strings.Contains(line, "web-node-1 bound=false") {
			t.Errorf("the held VIP was dropped during reloads: %s", line)
		}
	}
	if !n1.Host.Has(netip.MustParsePrefix("192.168.20.15/24")) {
		t.Error("VI_1 not bound after reloads")
	}

	renamed := keepertest.Config(t, m.Endpoint, keepertest.Spec{Name: "web-node-9", Priority: 101})
	if err := n1.K.Reload(renamed); !errors.Is(err, keeper.ErrNeedsRestart) {
		t.Errorf("Reload with a new node name: %v, want ErrNeedsRestart", err)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadWithChangedCheckKeepsHolder: a reload that changes a tracked
// check restarts it, but its last status stands until the new run
// reports, so the holder's priority does not dip and no peer preempts.
func TestReloadWithChangedCheckKeepsHolder(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	// Probes take 100ms, like an HTTP check: long enough for the loop to
	// see an unknown check if the reload forgot its status.
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, CheckInterval: 200 * time.Millisecond, ProbeDelay: 100 * time.Millisecond}
	n1 := keepertest.Start(t, m, rec, spec)
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(800 * time.Millisecond)
	seen := len(rec.History())
	for i, interval := range []time.Duration{300 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		cfg := keepertest.Config(t, m.Endpoint, spec)
		ch := cfg.Checks["haproxy"]
		ch.Interval, ch.Timeout = interval, interval
		cfg.Checks["haproxy"] = ch
		if err := n1.K.Reload(cfg); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if changes := rec.History()[seen:]; len(changes) != 0 {
		t.Errorf("the VIP moved during reloads of a changed check:\n%s", strings.Join(changes, "\n"))
	}
}

// TestLeaselessRecordsAreIgnored: a candidate record or handover request
// without a lease (not written by vipd or vipctl) must not move the VIP.
func TestLeaselessRecordsAreIgnored(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	seen := len(rec.History())
	cli := m.Client(t)
	keys := election.Keys{Prefix: "/vipd"}
	ghost := `{"node":"ghost-node","priority":250,"state":"BACKUP","preempt":true}`
	if _, err := cli.Put(t.Context(), keys.Candidate("VI_1", "ghost-node"), ghost); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), keys.Handover("VI_1"), `{"from":"web-node-1","to":"ghost-node"}`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if changes := rec.History()[seen:]; len(changes) != 0 {
		t.Errorf("lease-less records moved the VIP:\n%s", strings.Join(changes, "\n"))
	}
}
