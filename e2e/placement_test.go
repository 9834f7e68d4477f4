package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// vip2 is the seed group's second address in TestGroupPlacement, on eth1.
var vip2 = netip.MustParsePrefix("10.1.0.15/24")

// placementConfig is n's seed config with a second address on eth1 (one
// group: both move together, a keepalived sync group across interfaces),
// and a group without addresses whose hooks append its state to hookFile.
func placementConfig(t *testing.T, n *testbed.Node, hookFile string) string {
	t.Helper()
	conf := n.VipdConfig()
	one := fmt.Sprintf("addresses: [%s]", testbed.VIP)
	if !strings.Contains(conf, one) {
		t.Fatalf("the seed config no longer has %q", one)
	}
	conf = strings.Replace(conf, one, fmt.Sprintf("addresses: [%s, {address: %s, interface: eth1}]", testbed.VIP, vip2), 1)
	hook := fmt.Sprintf(`[/bin/sh, -c, 'echo "$VIPD_STATE" >> %s']`, hookFile)
	return conf + fmt.Sprintf(`  - name: hooks
    interface: eth0
    addresses: []
    priority: %d
    notify: {master: %s, backup: %s, fault: %s}
`, n.Priority, hook, hook, hook)
}

// TestGroupPlacement (issue 15): a group whose addresses sit on two
// interfaces binds each on its own, moves them together, and is in FAULT
// while either link is down: pulling the holder's eth1 cable moves both
// addresses to the peer, and they come back with the cable. A group
// without addresses beside it has exactly one MASTER, which runs its
// master hook; the eth1 cable does not concern it. Never two holders of
// either address.
func TestGroupPlacement(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t, title: "group placement results (issue 15)"}
	defer res.log()
	if err := tb.AddSecondLAN(netip.MustParsePrefix("10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	hookFile := map[*testbed.Node]string{}
	for _, n := range []*testbed.Node{n1, n2} {
		if err := n.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
		hookFile[n] = filepath.Join(tb.Dir, n.Name+"-hooks.log")
		if err := n.StartVipdWithConfig(placementConfig(t, n, hookFile[n])); err != nil {
			t.Fatal(err)
		}
	}

	// Who has vip2 on eth1, sampled every 2 ms (the holder monitor follows
	// the seed VIP; this follows the second address).
	var mu sync.Mutex
	var both time.Duration
	var bothSamples int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			on1, _ := n1.AddrOn("eth1", vip2.Addr())
			on2, _ := n2.AddrOn("eth1", vip2.Addr())
			now := time.Now()
			if on1 && on2 {
				mu.Lock()
				both += now.Sub(last)
				bothSamples++
				mu.Unlock()
			}
			last = now
		}
	})
	defer func() { close(stop); wg.Wait() }()

	holds := func(n *testbed.Node, timeout time.Duration) bool {
		t.Helper()
		for end := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
			on1, err1 := n.AddrOn("eth0", testbed.VIP.Addr())
			on2, err2 := n.AddrOn("eth1", vip2.Addr())
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: %v %v", n.Name, err1, err2)
			}
			if on1 && on2 {
				return true
			}
			if time.Now().After(end) {
				return false
			}
		}
	}
	tStart := time.Now()
	if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, n1.Vipd().LogTail(30))
	}
	if !holds(n1, 2*time.Second) {
		t.Fatalf("web-node-1 holds %v but not %v on eth1\n%s", testbed.VIP, vip2, n1.Vipd().LogTail(30))
	}
	res.add("start → web-node-1 holds both addresses", ms(time.Since(tStart)), "192.168.20.15 on eth0, 10.1.0.15 on eth1 (asserted)")

	// The holder's eth1 loses its carrier: FAULT, both addresses move.
	t0 := time.Now()
	if err := tb.SetLAN2Up(&n1.Host, false); err != nil {
		t.Fatal(err)
	}
	fault, ok := waitState(n1, t0, "FAULT", 5*time.Second)
	if !ok {
		t.Fatalf("web-node-1 not in FAULT with eth1 down: %v", states(n1, t0))
	}
	if !strings.Contains(fault.Attrs["reason"], "interface eth1") {
		t.Errorf("FAULT reason %q does not name eth1", fault.Attrs["reason"])
	}
	if err := tb.WaitHolder(testbed.Node2, 5*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, n2.Vipd().LogTail(30))
	}
	if !holds(n2, 2*time.Second) {
		t.Fatalf("web-node-2 holds the VIP but not %v on eth1\n%s", vip2, n2.Vipd().LogTail(30))
	}
	moved := time.Since(t0)
	if on, _ := n1.AddrOn("eth1", vip2.Addr()); on {
		t.Errorf("%v still on web-node-1's eth1 after the move", vip2)
	}
	res.add("web-node-1 eth1 cable pulled → FAULT", ms(fault.Time.Sub(t0)), "reason names eth1 (asserted)")
	res.add("eth1 cable pulled → both addresses on web-node-2", ms(moved), "≤ 5 s (asserted)")

	// The cable back: web-node-1 preempts, both addresses return.
	t1 := time.Now()
	if err := tb.SetLAN2Up(&n1.Host, true); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, n1.Vipd().LogTail(30))
	}
	if !holds(n1, 2*time.Second) {
		t.Fatalf("web-node-1 holds the VIP again but not %v\n%s", vip2, n1.Vipd().LogTail(30))
	}
	res.add("eth1 cable back → both addresses on web-node-1 (preempt)", ms(time.Since(t1)), "")

	// The group without addresses: web-node-1 MASTER throughout (its
	// interface is eth0), web-node-2 never.
	read := func(n *testbed.Node) string {
		b, _ := os.ReadFile(hookFile[n])
		return string(b)
	}
	for end := time.Now().Add(3 * time.Second); !strings.Contains(read(n1), "MASTER") && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := strings.Fields(read(n1)); len(got) == 0 || got[len(got)-1] != "MASTER" || strings.Count(read(n1), "MASTER") != 1 {
		t.Errorf("web-node-1's hooks of the group without addresses ran %q, want MASTER once, last", got)
	}
	if strings.Contains(read(n2), "MASTER") {
		t.Errorf("web-node-2 ran the master hook of the group without addresses: %q", read(n2))
	}
	res.add("group without addresses: hooks run", fmt.Sprintf("web-node-1 %q, web-node-2 %q", strings.Fields(read(n1)), strings.Fields(read(n2))),
		"MASTER once on web-node-1, never on web-node-2 (asserted)")

	st := tb.Mon.Stats(tStart, time.Now())
	mu.Lock()
	b, bs := both, bothSamples
	mu.Unlock()
	if st.TwoHolders > 0 || bs > 0 {
		t.Errorf("two holders: %v of %v (monitor), %v of %v (%d samples)", st.TwoHolders, testbed.VIP, b, vip2, bs)
	}
	res.add("time with two holders", fmt.Sprintf("%v / %v", ms(st.TwoHolders), ms(b)), "0 for each address (asserted; the second sampled every 2 ms)")
}
