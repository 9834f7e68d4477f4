package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// TestHolderFaults covers the rows of DESIGN.md's target table where the
// holder cannot hand over: its vipd is SIGKILLed, frozen, or the node drops
// off the LAN. The VIP must move to web-node-2 without ever being on both
// nodes (the kernel lifetime removes it on web-node-1 before the lease can
// expire at etcd); for the LAN drop the target is lease TTL + 0.5 s.
func TestHolderFaults(t *testing.T) {
	needAll(t)
	tb, err := testbed.New(testbed.Options{BinDir: binDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testbed logs:\n%s", tb.Logs(60))
		}
		if err := tb.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	res := &results{t: t, title: "holder fault results"}
	defer res.log()
	tStart := time.Now()
	if err := tb.StartAll(); err != nil {
		t.Fatal(err)
	}
	n1 := tb.Node(testbed.Node1)
	const ttl = 3 * time.Second

	// back makes web-node-1 the healthy holder again.
	back := func(t *testing.T) {
		t.Helper()
		if !n1.Vipd().Running() {
			if err := n1.StartVipd(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.WaitAnswer(testbed.Node1, time.Now(), 3*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// measure checks the move to web-node-2 after a fault at t0.
	measure := func(t *testing.T, what string, t0 time.Time, limit time.Duration) {
		t.Helper()
		if err := tb.WaitHolder(testbed.Node2, limit+5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.WaitAnswer(testbed.Node2, t0, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		time.Sleep(300 * time.Millisecond)
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		st := tb.Mon.Stats(t0, time.Now())
		if st.TwoHolders != 0 || st.MaxHolders > 1 {
			t.Errorf("%s: two holders for %v", what, st.TwoHolders)
		}
		// The target is the safety floor, lease TTL + 0.5 s; the assertion
		// allows another 0.5 s for etcd's lease expiry scan (every 500 ms)
		// on a loaded CI runner. The table says whether the target was met.
		if limit > 0 && out.Duration > limit+500*time.Millisecond {
			t.Errorf("%s: client outage %v, want ≤ %v (target %v)", what, out, limit+500*time.Millisecond, limit)
		}
		res.add(what+": VIP removed from web-node-1", ms(del.Time.Sub(t0)), "before web-node-2 adds it")
		res.add(what+": VIP added on web-node-2", ms(add.Time.Sub(t0)), fmt.Sprintf("gap %v", ms(add.Time.Sub(del.Time))))
		lim := "0 ms with two holders (asserted)"
		if limit > 0 {
			met := "met"
			if out.Duration > limit {
				met = "MISSED"
			}
			lim = fmt.Sprintf("target ≤ %v: %s (asserted ≤ %v)", limit, met, limit+500*time.Millisecond)
		}
		res.add(what+": client outage", out, lim)
	}

	if !t.Run("steady", back) {
		t.FailNow()
	}
	t.Run("sigkill-holder-vipd", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.KillVipd(); err != nil {
			t.Fatal(err)
		}
		measure(t, "SIGKILL vipd@web-node-1", t0, 0)
	})
	if !t.Run("back-1", back) {
		t.FailNow()
	}
	t.Run("freeze-holder-vipd", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.FreezeVipd(); err != nil {
			t.Fatal(err)
		}
		measure(t, "SIGSTOP vipd@web-node-1", t0, 0)
		// Thawed, it must not take the VIP back while web-node-2 holds it
		// (preempt happens, but only through a release by web-node-2).
		tThaw := time.Now()
		if err := n1.ThawVipd(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		st := tb.Mon.Stats(tThaw, time.Now())
		if st.TwoHolders != 0 || st.MaxHolders > 1 {
			t.Errorf("after thaw: two holders for %v", st.TwoHolders)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node1, true, tThaw)
		res.add("SIGCONT → web-node-1 back (preempt)", ms(add.Time.Sub(tThaw)), "never two holders (asserted)")
	})
	// Off the LAN, twice: with carrier kept on web-node-1's eth0 (its bridge
	// port is detached: it cannot tell from its link), and with carrier lost
	// (its bridge port goes down).
	for _, c := range []struct {
		name, what string
		cut        func(bool) error
	}{
		{"holder-isolated-carrier-kept", "web-node-1 cut off (carrier up)", func(cut bool) error { return tb.Isolate(&n1.Host, cut) }},
		{"holder-link-down", "web-node-1 link down", func(cut bool) error { return tb.SetLinkUp(&n1.Host, !cut) }},
	} {
		if !t.Run("back-"+c.name, back) {
			t.FailNow()
		}
		t.Run(c.name, func(t *testing.T) {
			t0 := time.Now()
			if err := c.cut(true); err != nil {
				t.Fatal(err)
			}
			measure(t, c.what, t0, ttl+500*time.Millisecond)
			tUp := time.Now()
			if err := c.cut(false); err != nil {
				t.Fatal(err)
			}
			if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			add, _ := tb.Mon.EventAfter(testbed.Node1, true, tUp)
			res.add(c.what+": back → web-node-1 holds (preempt)", ms(add.Time.Sub(tUp)), "")
		})
	}
	st := tb.Mon.Stats(tStart, time.Now())
	if st.TwoHolders != 0 || st.MaxHolders > 1 {
		t.Errorf("two holders for %v over the run", st.TwoHolders)
	}
	if err := tb.Mon.CrossCheck(time.Second); err != nil {
		t.Error(err)
	}
	res.add("time with two holders (whole run)", ms(st.TwoHolders), "0 (asserted)")
	res.add("closest handover (VIP removed → next add)", ms(st.MinGap), "")
}
