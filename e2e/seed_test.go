package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/internal/prereq"
)

var binDir = func() string { d, _ := filepath.Abs("../bin"); return d }()

func TestMain(m *testing.M) {
	stop := testbed.CloseOnSignal()
	code := m.Run()
	stop()
	os.Exit(code)
}

// needAll skips unless root with bin/vipd, bin/etcd, bin/vipd-probe and
// haproxy present. `make e2e` runs as root in CI after building them, so
// there this test always runs: under CI=true a missing one fails it.
func needAll(t *testing.T) {
	t.Helper()
	if miss := testbed.Prereqs(binDir, ""); len(miss) > 0 {
		prereq.Missing(t, "namespace e2e needs %v (run `make e2e` as root)", miss)
	}
}

// newTestbed builds a testbed for t (BinDir and Logf filled in), dumps
// its logs if t fails, and closes it when t ends.
func newTestbed(t *testing.T, opts testbed.Options) *testbed.Testbed {
	t.Helper()
	opts.BinDir, opts.Logf = binDir, t.Logf
	opts.KeepDir = opts.KeepDir || os.Getenv("VIPD_E2E_KEEPDIR") != ""
	tb, err := testbed.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testbed logs:\n%s", tb.Logs(80))
		}
		if err := tb.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return tb
}

// row is one line of the results table.
type row struct{ what, measured, target string }

type results struct {
	t     *testing.T
	title string
	rows  []row
}

func (r *results) add(what string, measured any, target string) {
	r.rows = append(r.rows, row{what, fmt.Sprint(measured), target})
}

func (r *results) log() {
	w := [3]int{len("measurement"), len("measured"), len("target / asserted")}
	for _, x := range r.rows {
		w[0], w[1], w[2] = max(w[0], len(x.what)), max(w[1], len(x.measured)), max(w[2], len(x.target))
	}
	var b strings.Builder
	line := func(a, m, t string) { fmt.Fprintf(&b, "| %-*s | %-*s | %-*s |\n", w[0], a, w[1], m, w[2], t) }
	title := r.title
	if title == "" {
		title = "seed scenario results"
	}
	b.WriteString(title + "\n")
	line("measurement", "measured", "target / asserted")
	line(strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2]))
	for _, x := range r.rows {
		line(x.what, x.measured, x.target)
	}
	r.t.Log(b.String())
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// TestSeedScenario is the seed keepalived recipe replaced by vipd: two
// HAProxy nodes, VIP 192.168.20.15, a 3-member etcd cluster, and a client
// probing http://192.168.20.15/ every 10 ms with a fresh connection.
//
// Steps: steady state on web-node-1 → HAProxy stops on web-node-1 (failover
// to web-node-2, client reaches it within 1 s, client neighbour entry carries
// web-node-2's MAC, VIP gone from web-node-1) → HAProxy back (preempt back to
// web-node-1) → SIGTERM on the holder's vipd (VIP on web-node-2 within 0.5 s)
// → vipd restarted on web-node-1 (preempt back). Throughout: never two
// holders, as seen by netlink address events in both node namespaces.
//
// The graceful-stop step runs with HAProxy healthy on both nodes, so its
// client outage measures vipd's handover and not a missing backend.
func TestSeedScenario(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t}
	defer res.log()

	tStart := time.Now()
	if err := tb.StartAll(); err != nil {
		t.Fatal(err)
	}
	res.add("etcd 3-member cluster healthy", ms(tb.EtcdStartup), "")
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	mac1, _ := n1.EthMAC()
	mac2, _ := n2.EthMAC()

	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}
	// outageAfter waits settle, then measures the longest client outage in
	// [from, now].
	outageAfter := func(from time.Time, settle time.Duration) testbed.Outage {
		time.Sleep(settle)
		return tb.Probes().Window(from, time.Now()).LongestOutage()
	}

	step("steady-state", func(t *testing.T) {
		if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
			t.Fatalf("%v\nvipd web-node-1:\n%s", err, n1.Vipd().LogTail(30))
		}
		res.add("start → web-node-1 holds the VIP", ms(time.Since(tStart)), "")
		if _, err := tb.WaitAnswer(testbed.Node1, tStart, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		tSteady := time.Now()
		time.Sleep(time.Second)
		if hs := tb.Holders(); len(hs) != 1 || hs[0] != testbed.Node1 {
			t.Fatalf("holders %v, want exactly [web-node-1]", hs)
		}
		if has, err := n2.HasVIP(); err != nil || has {
			t.Fatalf("web-node-2 has the VIP: %v %v", has, err)
		}
		st := tb.Mon.Stats(tSteady, time.Now())
		if st.Changes != 0 || st.MaxHolders != 1 {
			t.Fatalf("VIP not steady: %+v", st)
		}
		win := tb.Probes().Window(tSteady, time.Now())
		c := win.Counts()
		if c[testbed.Node1] == 0 || c[testbed.Node2] != 0 {
			t.Fatalf("steady answers %v, want only web-node-1", c)
		}
		if nb, err := tb.ClientNeigh(); err != nil || nb.MAC.String() != mac1.String() {
			t.Errorf("client neighbour for VIP: %v %s (%v), want web-node-1's %v", nb.MAC, nb.State, err, mac1)
		}
		res.add("steady: holders / client answers (1 s)", fmt.Sprintf("[web-node-1] / %v", c), "exactly one holder (asserted)")
	})

	step("haproxy-stops-on-holder", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.StopHAProxy(); err != nil {
			t.Fatal(err)
		}
		first, err := tb.WaitAnswer(testbed.Node2, t0, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		reach := first.Start.Sub(t0)
		if reach > time.Second {
			t.Errorf("client reached web-node-2 %v after HAProxy stopped, want ≤ 1s", ms(reach))
		}
		// The answer came through the VIP, so the client's ARP entry must now
		// carry web-node-2's MAC.
		var nb testbed.Neigh
		deadline := time.Now().Add(500 * time.Millisecond)
		for {
			nb, err = tb.ClientNeigh()
			if err == nil && nb.MAC.String() == mac2.String() || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil || nb.MAC.String() != mac2.String() {
			t.Errorf("client neighbour for VIP: %v %s (%v), want web-node-2's %v", nb.MAC, nb.State, err, mac2)
		}
		if err := tb.WaitHolder(testbed.Node2, time.Second); err != nil {
			t.Fatal(err)
		}
		if has, err := n1.HasVIP(); err != nil || has {
			t.Errorf("VIP still on web-node-1 (%v)", err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		out := outageAfter(t0, 500*time.Millisecond)
		res.add("HAProxy stop → VIP removed from web-node-1", ms(del.Time.Sub(t0)), "")
		res.add("HAProxy stop → VIP added on web-node-2", ms(add.Time.Sub(t0)), "")
		res.add("HAProxy stop → client answered by web-node-2", ms(reach), "≤ 1s (asserted); target outage ≤ 0.5s")
		res.add("HAProxy stop: client outage", out, "keepalived seed 5.5–6.6s")
		res.add("client neighbour entry for VIP", fmt.Sprintf("%v %s (%s)", nb.MAC, nb.State, tb.NodeByMAC(nb.MAC)), "web-node-2's MAC (asserted)")
	})

	step("haproxy-back-preempts", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		first, err := tb.WaitAnswer(testbed.Node1, t0, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node1, true, t0)
		out := outageAfter(t0, 500*time.Millisecond)
		res.add("HAProxy back → VIP on web-node-1 (preempt)", ms(add.Time.Sub(t0)), "preempt back (asserted ≤ 5s)")
		res.add("HAProxy back → client answered by web-node-1", ms(first.Start.Sub(t0)), "")
		res.add("preempt: client outage", out, "planned handover ≤ 50ms")
	})

	step("sigterm-on-holder", func(t *testing.T) {
		p := n1.Vipd()
		t0 := time.Now()
		if err := n1.SignalVipd(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node2, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		if d := add.Time.Sub(t0); d > 500*time.Millisecond {
			t.Errorf("VIP on web-node-2 %v after SIGTERM, want ≤ 0.5s", ms(d))
		}
		if err := p.Wait(5 * time.Second); err != nil {
			t.Error(err)
		} else if p.ExitErr() != nil {
			t.Errorf("vipd exit after SIGTERM: %v", p.ExitErr())
		}
		first, err := tb.WaitAnswer(testbed.Node2, t0, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		out := outageAfter(t0, 500*time.Millisecond)
		res.add("SIGTERM vipd@web-node-1 → VIP removed there", ms(del.Time.Sub(t0)), "")
		res.add("SIGTERM vipd@web-node-1 → VIP on web-node-2", ms(add.Time.Sub(t0)), "≤ 0.5s (asserted)")
		res.add("SIGTERM → client answered by web-node-2", ms(first.Start.Sub(t0)), "")
		res.add("SIGTERM: client outage", out, "target ≤ 50ms; keepalived 0.61s")
	})

	step("vipd-restart-preempts", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.StartVipd(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node1, true, t0)
		out := outageAfter(t0, 500*time.Millisecond)
		res.add("vipd restart on web-node-1 → VIP back (preempt)", ms(add.Time.Sub(t0)), "preempt back (asserted ≤ 10s)")
		res.add("restart preempt: client outage", out, "")
	})

	t.Run("never-two-holders", func(t *testing.T) {
		st := tb.Mon.Stats(tStart, time.Now())
		if st.TwoHolders != 0 || st.MaxHolders > 1 {
			t.Errorf("two holders for %v (max %d holders)", st.TwoHolders, st.MaxHolders)
		}
		if errs := tb.Mon.Errors(); len(errs) > 0 {
			t.Errorf("holder monitor errors (events may be lost): %v", errs)
		}
		if err := tb.Mon.CrossCheck(time.Second); err != nil {
			t.Error(err)
		}
		all := tb.Probes()
		res.add("time with two holders (whole run)", ms(st.TwoHolders), "0 (asserted)")
		res.add("time with no holder (whole run)", ms(st.NoHolder), "")
		res.add("closest handover (VIP removed → next add)", ms(st.MinGap), "> 0: release before acquire")
		res.add("holder changes / probes", fmt.Sprintf("%d / %d at %.1f/s", st.Changes, len(all), all.Rate()), "")
		for _, e := range tb.Mon.Events() {
			t.Logf("  %s (+%v)", e, ms(e.Time.Sub(tStart)))
		}
	})
}
