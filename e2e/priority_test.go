package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// Check timing of the priority scenario (the seed's http check on HAProxy's
// monitor-uri): a change is seen after fall (or rise) runs.
const (
	prioCheckInterval = 200 * time.Millisecond
	prioRise          = 2
	prioWeight        = 10 // healthy 111/110/109 beat any unhealthy 101/100/99
	prioDelay         = 3 * time.Second
)

// prioConfig is n's seed config with the track weight, preempt and
// preempt_delay of this scenario. It fails the test if the seed config no
// longer has the lines it rewrites.
func prioConfig(t *testing.T, n *testbed.Node, preempt bool, delay time.Duration) string {
	t.Helper()
	cfg := n.VipdConfig()
	for _, r := range []struct{ old, new string }{
		{"track: [{check: haproxy, weight: 2}]", fmt.Sprintf("track: [{check: haproxy, weight: %d}]", prioWeight)},
		{"preempt: true", fmt.Sprintf("preempt: %v", preempt)},
		{"preempt_delay: 0s", "preempt_delay: " + delay.String()},
		{"interval: 200ms", "interval: " + prioCheckInterval.String()},
		{"rise: 2", fmt.Sprintf("rise: %d", prioRise)},
	} {
		if strings.Count(cfg, r.old) != 1 {
			t.Fatalf("testbed vipd config no longer has exactly one %q:\n%s", r.old, cfg)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	return cfg
}

// TestPriorityOrder runs three nodes at base priorities 101/100/99, each
// tracking its HAProxy with weight 10, and checks keepalived's priority
// semantics end to end:
//
//   - order: the best node by effective priority always holds, as HAProxy
//     fails on the nodes in turn (all down: the base priorities decide) and
//     comes back in turn; every move goes straight to the expected node.
//   - preempt: false on web-node-1: when it returns (better than the
//     holder), the holder keeps the VIP; it still wins a vacancy.
//   - preempt_delay 3s: a better node that comes back takes over only after
//     the holder has seen it for 3s (± the check's rise and one interval).
//
// Never two holders, throughout.
func TestPriorityOrder(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{Nodes: 3})
	res := &results{t: t}
	defer res.log()
	tStart := time.Now()
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := tb.Node(testbed.Node1), tb.Node(testbed.Node2), tb.Node(testbed.Node3)
	nodes := []*testbed.Node{n1, n2, n3}
	for _, n := range nodes {
		if err := n.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
	}
	// startAll starts first's vipd, waits until it holds the VIP, then
	// starts the others. Started together, whichever node is ready first
	// may claim the vacancy before a better one has published its
	// candidacy; without preemption that would decide the rest of the
	// phase, so the phases start from a known holder.
	startAll := func(t *testing.T, first *testbed.Node, cfg func(n *testbed.Node) string) {
		t.Helper()
		if err := first.StartVipdWithConfig(cfg(first)); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(first.Name, 20*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, first.Vipd().LogTail(30))
		}
		for _, n := range nodes {
			if n == first {
				continue
			}
			if err := n.StartVipdWithConfig(cfg(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	stopAll := func(t *testing.T) {
		t.Helper()
		for i := len(nodes) - 1; i >= 0; i-- {
			if err := nodes[i].StopVipd(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, 5*time.Second); err != nil {
			t.Fatalf("VIP still held after every vipd stopped: %v", err)
		}
	}
	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}
	// movesTo waits until want alone holds the VIP and checks that it was
	// the only node to acquire it since t0: no detour through another one.
	movesTo := func(t *testing.T, t0 time.Time, want string, timeout time.Duration) time.Duration {
		t.Helper()
		if err := tb.WaitHolder(want, timeout); err != nil {
			t.Fatalf("%v\nholder events:\n%s", err, eventsSince(tb, t0))
		}
		add, ok := tb.Mon.EventAfter(want, true, t0)
		if !ok {
			return 0 // held already
		}
		return add.Time.Sub(t0)
	}
	onlyAdds := func(t *testing.T, t0 time.Time, want ...string) {
		t.Helper()
		var adds []string
		for _, e := range tb.Mon.Events() {
			if e.Added && !e.Time.Before(t0) {
				adds = append(adds, e.Node)
			}
		}
		if strings.Join(adds, ",") != strings.Join(want, ",") {
			t.Errorf("VIP acquired by %v since %s, want %v\n%s", adds, t0.Format("15:04:05.000"), want, eventsSince(tb, t0))
		}
	}
	stays := func(t *testing.T, holder string, d time.Duration) {
		t.Helper()
		t0 := time.Now()
		time.Sleep(d)
		if hs := tb.Holders(); len(hs) != 1 || hs[0] != holder {
			t.Fatalf("holders %v after %v, want [%s]", hs, d, holder)
		}
		onlyAdds(t, t0)
	}

	// ---- order, preempt on, no delay ----
	step("order/start", func(t *testing.T) {
		// All at once: with preemption the best node ends up holding
		// whoever claims the vacancy first.
		for _, n := range nodes {
			if err := n.StartVipdWithConfig(prioConfig(t, n, true, 0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, n1.Vipd().LogTail(30))
		}
		res.add("start → web-node-1 holds (111 > 110 > 109)", ms(time.Since(tStart)), "")
		// Every node is up and ready within 2 s; the holder stays.
		stays(t, testbed.Node1, 2*time.Second)
	})
	type move struct {
		name   string
		do     func() error
		holder string
		why    string
	}
	for _, m := range []move{
		{"haproxy-down-n1", n1.StopHAProxy, testbed.Node2, "101 110 109"},
		{"haproxy-down-n2", n2.StopHAProxy, testbed.Node3, "101 100 109"},
		{"haproxy-down-n3", n3.StopHAProxy, testbed.Node1, "all down: 101 100 99"},
		{"haproxy-up-n3", n3.StartHAProxy, testbed.Node3, "101 100 109"},
		{"haproxy-up-n2", n2.StartHAProxy, testbed.Node2, "101 110 109"},
		{"haproxy-up-n1", n1.StartHAProxy, testbed.Node1, "111 110 109"},
	} {
		step("order/"+m.name, func(t *testing.T) {
			t0 := time.Now()
			if err := m.do(); err != nil {
				t.Fatal(err)
			}
			took := movesTo(t, t0, m.holder, 5*time.Second)
			onlyAdds(t, t0, m.holder)
			res.add(fmt.Sprintf("%s → %s (priorities %s)", m.name, m.holder, m.why), ms(took), "straight to the best node (asserted)")
		})
	}

	// ---- preempt: false on web-node-1 ----
	step("nopreempt/restart-configs", func(t *testing.T) {
		stopAll(t)
		startAll(t, n1, func(n *testbed.Node) string { return prioConfig(t, n, n != n1, 0) })
		stays(t, testbed.Node1, 2*time.Second)
	})
	step("nopreempt/better-node-returns", func(t *testing.T) {
		t0 := time.Now()
		if err := n1.StopVipd(); err != nil {
			t.Fatal(err)
		}
		movesTo(t, t0, testbed.Node2, 3*time.Second)
		tBack := time.Now()
		if err := n1.StartVipdWithConfig(prioConfig(t, n1, false, 0)); err != nil {
			t.Fatal(err)
		}
		// web-node-1 (111) is ready well within 4 s; it must not take over.
		stays(t, testbed.Node2, 4*time.Second)
		onlyAdds(t, tBack)
		res.add("preempt: false, web-node-1 (111) back → web-node-2 (110) keeps", "held 4s", "no move (asserted)")
		// It is a healthy candidate all the same: a vacancy goes to it.
		t1 := time.Now()
		if err := n2.StopVipd(); err != nil {
			t.Fatal(err)
		}
		took := movesTo(t, t1, testbed.Node1, 3*time.Second)
		onlyAdds(t, t1, testbed.Node1)
		res.add("preempt: false node wins a vacancy (web-node-2 stopped)", ms(took), "web-node-1 (asserted)")
	})

	// ---- preempt_delay ----
	step("preempt-delay", func(t *testing.T) {
		stopAll(t)
		if err := n1.StopHAProxy(); err != nil {
			t.Fatal(err)
		}
		startAll(t, n2, func(n *testbed.Node) string { return prioConfig(t, n, true, prioDelay) })
		stays(t, testbed.Node2, 2*time.Second) // 110 beats 109 and 101
		t0 := time.Now()
		if err := n1.StartHAProxy(); err != nil { // returns once it answers
			t.Fatal(err)
		}
		tUp := time.Now()
		movesTo(t, t0, testbed.Node1, prioDelay+5*time.Second)
		onlyAdds(t, t0, testbed.Node1)
		add, _ := tb.Mon.EventAfter(testbed.Node1, true, t0)
		took := add.Time.Sub(tUp)
		// web-node-1 turns 111 after rise successful runs (within rise
		// intervals of HAProxy answering), then the holder waits
		// preempt_delay: the move comes after the delay, and at most rise
		// intervals plus one interval later (plus 300ms of etcd and
		// scheduling slack for a loaded box).
		lo := prioDelay
		hi := prioDelay + time.Duration(prioRise+1)*prioCheckInterval + 300*time.Millisecond
		if took < lo || took > hi {
			t.Errorf("web-node-1 took over %v after its HAProxy came back, want within [%v, %v] (preempt_delay %v)", ms(took), lo, hi, prioDelay)
		}
		res.add("preempt_delay 3s: HAProxy back on web-node-1 → VIP moves", ms(took), fmt.Sprintf("in [%v, %v] (asserted)", lo, hi))
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
		res.add("time with two holders (whole run)", ms(st.TwoHolders), "0 (asserted)")
		res.add("holder changes", st.Changes, "")
		res.add("wall time", ms(time.Since(tStart)), "")
	})
}

func eventsSince(tb *testbed.Testbed, t0 time.Time) string {
	var b strings.Builder
	for _, e := range tb.Mon.Events() {
		if !e.Time.Before(t0.Add(-time.Second)) {
			fmt.Fprintln(&b, e)
		}
	}
	return b.String()
}
