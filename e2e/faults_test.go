package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/keeper"
)

// TestHolderFaults covers the rows of the target table (docs/design.md)
// where the holder cannot hand over: its vipd is SIGKILLed, frozen, or the
// node drops off the LAN. The VIP must move to web-node-2 without ever
// being on both nodes: the kernel lifetime removes it on web-node-1, and
// web-node-2, seeing the group vacated without a graceful release, waits
// out the kernel's expiry lag (keeper.ExpiryGrace) before binding. For the
// LAN drop the target is lease TTL + 0.5 s + ExpiryGrace.
func TestHolderFaults(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t, title: "holder fault results"}
	defer res.log()
	tStart := time.Now()
	if err := tb.StartAll(); err != nil {
		t.Fatal(err)
	}
	n1 := tb.Node(testbed.Node1)
	const ttl = 3 * time.Second
	lanTarget := ttl + 500*time.Millisecond + keeper.ExpiryGrace

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
		// The target is the safety floor, lease TTL + 0.5 s + the expiry
		// grace; the assertion allows another 0.5 s for etcd's lease expiry
		// scan (every 500 ms) on a loaded CI runner. The table says whether
		// the target was met.
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

	// record adds the fault's row to the suite table when the subtest ends.
	record := func(t *testing.T, title string, from time.Time, note *string) {
		st := tb.Mon.Stats(from, time.Now())
		suiteAdd(suiteRow{scenario: title, dual: st.TwoHolders, noHolder: st.NoHolder,
			outage: tb.Probes().Window(from, time.Now()).LongestOutage(), result: resultOf(t), note: *note})
	}

	if !t.Run("steady", back) {
		t.FailNow()
	}
	t.Run("sigkill-holder-vipd", func(t *testing.T) {
		t0 := time.Now()
		note := ""
		defer record(t, "SIGKILL holder's vipd; restart after the move", t0, &note)
		if err := n1.KillVipd(); err != nil {
			t.Fatal(err)
		}
		measure(t, "SIGKILL vipd@web-node-1", t0, 0)
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		note = fmt.Sprintf("kernel lifetime removed the VIP %s after the kill, web-node-2 added it %s later", ms(del.Time.Sub(t0)), ms(add.Time.Sub(del.Time)))
		// Restarted, vipd cleans up, rejoins as standby for web-node-2, and
		// then preempts it (web-node-1 is better: 103 > 102) through a
		// release by web-node-2.
		tR := time.Now()
		if err := n1.StartVipd(); err != nil {
			t.Fatal(err)
		}
		first, ok := waitLog(n1, tR, "state change", 10*time.Second)
		if !ok || first.Attrs["to"] != "BACKUP" {
			t.Errorf("restarted vipd's first state: %q (%s), want BACKUP (standby)", first.Attrs["to"], first.Raw)
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		rel, _ := tb.Mon.EventAfter(testbed.Node2, false, tR)
		back1, _ := tb.Mon.EventAfter(testbed.Node1, true, tR)
		if back1.Time.Before(rel.Time) {
			t.Errorf("restarted web-node-1 added the VIP before web-node-2 released it")
		}
		res.add("SIGKILL: restarted vipd → first state", first.Attrs["to"], first.Attrs["reason"])
		res.add("SIGKILL: restarted vipd → VIP back (preempt)", ms(back1.Time.Sub(tR)), fmt.Sprintf("after web-node-2's release (gap %v, asserted ≥ 0)", ms(back1.Time.Sub(rel.Time))))
		note += fmt.Sprintf("; restarted: first state %s, preempted back after %s", first.Attrs["to"], ms(back1.Time.Sub(tR)))
	})
	if !t.Run("back-1", back) {
		t.FailNow()
	}
	t.Run("sigkill-immediate-restart", func(t *testing.T) {
		// systemd's Restart= brings vipd back before the kernel lifetime
		// has run out: the startup cleanup removes the VIP, and nobody
		// holds it again before the old lease expires.
		t0 := time.Now()
		note := ""
		defer record(t, "SIGKILL holder's vipd + immediate restart", t0, &note)
		if err := n1.KillVipd(); err != nil {
			t.Fatal(err)
		}
		tR := time.Now()
		if err := n1.StartVipd(); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, ttl); err != nil {
			t.Fatal(err)
		}
		hs, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 1 }, 3*ttl)
		if err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(hs[0], true, del.Time)
		cleaned, ok := waitLog(n1, tR, "removed VIP", 0)
		if ok && !del.Time.Before(cleaned.Time.Add(-5*time.Millisecond)) {
			note = fmt.Sprintf("startup cleanup removed the VIP %s after the kill", ms(del.Time.Sub(t0)))
		} else {
			note = fmt.Sprintf("kernel lifetime removed the VIP %s after the kill, before the restarted vipd's cleanup", ms(del.Time.Sub(t0)))
		}
		// The old lease was renewed at most TTL/4 before the kill: nobody
		// may hold before it expires.
		if gap := add.Time.Sub(t0); gap < ttl-ttl/4-100*time.Millisecond {
			t.Errorf("%s acquired %v after the kill, before the old lease could expire", hs[0], ms(gap))
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.WaitAnswer(testbed.Node1, time.Now(), 3*time.Second); err != nil {
			t.Fatal(err)
		}
		st := tb.Mon.Stats(t0, time.Now())
		if st.TwoHolders != 0 || st.MaxHolders > 1 {
			t.Errorf("two holders for %v", st.TwoHolders)
		}
		res.add("SIGKILL+restart: VIP removed", ms(del.Time.Sub(t0)), note)
		res.add("SIGKILL+restart: "+hs[0]+" holds", ms(add.Time.Sub(t0)), "after the old lease expired (asserted)")
		note += fmt.Sprintf("; %s holds %s after the kill", hs[0], ms(add.Time.Sub(t0)))
	})
	if !t.Run("back-2", back) {
		t.FailNow()
	}
	t.Run("freeze-holder-vipd", func(t *testing.T) {
		t0 := time.Now()
		note := ""
		defer record(t, "SIGSTOP holder's vipd for 2×TTL, SIGCONT", t0, &note)
		if err := n1.FreezeVipd(); err != nil {
			t.Fatal(err)
		}
		measure(t, "SIGSTOP vipd@web-node-1", t0, 0)
		// Frozen for 2 × lease TTL in all.
		time.Sleep(time.Until(t0.Add(2 * ttl)))
		// Thawed, it must not re-add the VIP on its stale state: its lease
		// expired while it was stopped. It gets it back only by winning
		// the key again (it preempts: web-node-2 releases first).
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
		rel, _ := tb.Mon.EventAfter(testbed.Node2, false, tThaw)
		if add.Time.Before(rel.Time) {
			t.Errorf("thawed web-node-1 re-added the VIP while web-node-2 held it")
		}
		// The monitor can see the address before vipd's log line about it
		// is written: give the log a moment.
		bound, okB := waitLog(n1, tThaw, "VIP bound", 2*time.Second)
		won, okW := waitLog(n1, tThaw, "won leadership", 2*time.Second)
		if !okB || !okW || bound.Time.Before(won.Time) {
			t.Errorf("thawed vipd bound the VIP without winning the key again first (bound %v %s, won %v %s)", okB, bound.Time.Format("15:04:05.000"), okW, won.Time.Format("15:04:05.000"))
		}
		var after []string
		for _, l := range logSince(n1, tThaw, "") {
			if l.Msg == "VIP removed" || l.Msg == "state change" || strings.HasPrefix(l.Msg, "lease") || l.Msg == "won leadership" || l.Msg == "VIP bound" {
				after = append(after, l.Msg+" "+l.Attrs["reason"])
			}
			if len(after) == 4 {
				break
			}
		}
		res.add("SIGCONT after 2×TTL → web-node-1 back (preempt)", ms(add.Time.Sub(tThaw)), fmt.Sprintf("after web-node-2's release, gap %v (asserted ≥ 0)", ms(add.Time.Sub(rel.Time))))
		res.add("SIGCONT: vipd's first log lines", strings.Join(after, " | "), "won the key before binding (asserted)")
		note = fmt.Sprintf("frozen %v; thawed: re-won the key, back after %s", 2*ttl, ms(add.Time.Sub(tThaw)))
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
			note := fmt.Sprintf("outage target ≤ lease TTL + 0.5s + expiry grace = %v", lanTarget)
			defer record(t, c.what+" (bridge port)", t0, &note)
			if err := c.cut(true); err != nil {
				t.Fatal(err)
			}
			measure(t, c.what, t0, lanTarget)
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
