package keeper

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/netif"
)

// Regression tests for the findings of the adversarial reviews of the
// issue-12 change: each failed on the code they were found in.

// frozenView is a node whose watch stopped delivering while its other
// requests still reach etcd.
type frozenView struct {
	groupView
	mu     sync.Mutex
	frozen *election.GroupState
}

func (f *frozenView) Group(name string, addrs []netip.Addr) election.GroupState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen != nil {
		return *f.frozen
	}
	return f.groupView.Group(name, addrs)
}

func (f *frozenView) freeze(st *election.GroupState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = st
}

// handoverTo writes a handover request for VI_1 from node.
func handoverFrom(t *testing.T, h *harness, node string) {
	t.Helper()
	l, err := h.cli.Grant(h.ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.cli.Put(h.ctx, h.keys.Handover("VI_1"), `{"from":"`+node+`"}`, clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
}

// A resign whose answer is lost or late may land at any time: the old
// holder never binds under that claim again, so when it lands (and records
// a graceful release) the VIP is already off, and the target binds at once
// without two holders.
func TestLateResignNeverRebinds(t *testing.T) {
	m := etcdtest.Start(t)
	a := newHarness(t, m, "web-node-1", "")
	b := newHarness(t, m, "web-node-2", "")
	a.hold()
	b.until("b standby, its record published", 5*time.Second, func() bool { return b.g.rec.Lease != 0 && b.g.held.Claim == nil })
	a.step()
	_, oldRev := a.leader()
	handoverFrom(t, a, "web-node-1")
	a.kv.add(&faultRule{match: "/released", mode: "late", times: 1, delay: 400 * time.Millisecond})
	a.step()
	if a.host.Has(hvip) || a.g.held.Claim == nil {
		t.Fatalf("after the release pass: bound %v, claim %v; want off, claim kept", a.host.Has(hvip), a.g.held.Claim)
	}
	landed := false
	for i := 0; i < 60; i++ {
		for _, x := range []*harness{a, b} {
			x.clk.Advance(50 * time.Millisecond)
			x.lease.renew()
			x.step()
		}
		if a.host.Has(hvip) && a.g.held.Claim != nil && a.g.held.Claim.CreateRev == oldRev {
			t.Fatal("the old holder bound the VIP again under a claim whose resign was sent")
		}
		if a.host.Has(hvip) && b.host.Has(hvip) {
			t.Fatal("two holders")
		}
		if n, rev := a.leader(); n == "" || rev != oldRev {
			landed = true
		}
		time.Sleep(10 * time.Millisecond) // let the late write land meanwhile
	}
	if !landed {
		t.Fatal("the old claim was never deleted")
	}
	if !b.host.Has(hvip) || a.host.Has(hvip) {
		t.Fatalf("after the handover: web-node-1 bound %v, web-node-2 bound %v; want web-node-2 alone", a.host.Has(hvip), b.host.Has(hvip))
	}
}

// The same with the answer lost and the old holder's view re-listing
// (unsynced): it does not hold again while it cannot see the key go.
func TestLostResignWithUnsyncedViewNeverRebinds(t *testing.T) {
	m := etcdtest.Start(t)
	a := newHarness(t, m, "web-node-1", "")
	b := newHarness(t, m, "web-node-2", "")
	a.hold()
	b.until("b standby, its record published", 5*time.Second, func() bool { return b.g.rec.Lease != 0 && b.g.held.Claim == nil })
	a.step()
	handoverFrom(t, a, "web-node-1")
	a.sync()
	before := a.view.Group("VI_1", []netip.Addr{hvip.Addr()})
	a.kv.add(&faultRule{match: "/released", mode: "lose", times: 1})
	a.step()
	if n, _ := a.leader(); n != "" {
		t.Fatal("setup: the resign did not commit")
	}
	fv := &frozenView{groupView: a.g.env.view}
	unsynced := before
	unsynced.Synced = false
	fv.freeze(&unsynced)
	a.g.env.view = fv
	b.until("the target bound", 3*time.Second, func() bool { return b.host.Has(hvip) })
	for range 15 {
		a.clk.Advance(100 * time.Millisecond)
		a.lease.renew()
		a.g.reconcile(a.ctx, "")
		if a.host.Has(hvip) && b.host.Has(hvip) {
			t.Fatal("two holders while the old holder's view re-lists")
		}
	}
}

// A node whose watch stalls acts on an old vacancy (a graceful one); its
// acquire wins a later vacancy left by an expiry. It binds only once its
// view has caught up with its claim, and then only ExpiryGrace after it
// saw the expiry.
func TestStaleViewStillWaitsOutTheGrace(t *testing.T) {
	m := etcdtest.Start(t)
	a := newHarness(t, m, "web-node-1", strings.Replace(harnessGroup, "priority: 101", "priority: 110", 1))
	c := newHarness(t, m, "web-node-3", strings.Replace(harnessGroup, "priority: 101", "priority: 100", 1)+"preempt: false\n")
	b := newHarness(t, m, "web-node-2", strings.Replace(harnessGroup, "priority: 101", "priority: 99", 1))
	a.hold()
	for range 5 {
		for _, x := range []*harness{c, b} {
			x.step()
			x.clk.Advance(100 * time.Millisecond)
			x.lease.renew()
		}
	}
	a.health.set(true) // A releases gracefully
	a.step()
	b.sync()
	st := b.view.Group("VI_1", []netip.Addr{hvip.Addr()})
	fv := &frozenView{groupView: b.g.env.view}
	fv.freeze(&st) // B's watch stalls here
	b.g.env.view = fv

	c.until("C holds", 5*time.Second, func() bool { return c.host.Has(hvip) && c.g.vips.bound() })
	for range 5 { // B tries and loses
		b.step()
		b.clk.Advance(100 * time.Millisecond)
		b.lease.renew()
	}
	if _, err := c.cli.Revoke(c.ctx, c.lease.Current().ID); err != nil { // C's lease expires; C frozen with its VIP
		t.Fatal(err)
	}
	expired := b.clk.Now()
	for range 10 {
		b.step()
		if b.host.Has(hvip) {
			t.Fatalf("B bound %v after a vacancy by expiry, on a stalled view", b.clk.Now().Sub(expired))
		}
		b.clk.Advance(50 * time.Millisecond)
		b.lease.renew()
	}
	// The watch recovers: B binds, but not before ExpiryGrace after the
	// expiry.
	fv.freeze(nil)
	b.until("B bound", 10*time.Second, func() bool { return b.host.Has(hvip) })
	if took := b.clk.Now().Sub(expired); took < ExpiryGrace {
		t.Fatalf("B bound %v after the expiry, less than ExpiryGrace %v", took, ExpiryGrace)
	}
}

// An address moved by a reload into a group that has long been vacant is
// still waited for: the grace counts from the address's own vacancy, not
// the group's.
func TestAddressMovedByReloadWaitsOutItsOwnVacancy(t *testing.T) {
	g16 := strings.Replace(harnessGroup, "192.168.20.15/24", "192.168.20.16/24", 1)
	b := newHarness(t, nil, "web-node-2", g16)
	b.health.set(true)
	for range 30 {
		b.step()
		b.clk.Advance(100 * time.Millisecond)
		b.lease.renew()
	}
	l, err := b.cli.Grant(b.ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.cli.Put(b.ctx, "/vipd/groups/VI_2/leader", "web-node-3", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.cli.Put(b.ctx, b.keys.Address(hvip.Addr()), `{"node":"web-node-3","group":"VI_2"}`, clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	b.step()
	if _, err := b.cli.Revoke(b.ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	b.sync()
	expired := b.clk.Now()
	gc := b.g.config()
	gc.Addresses = config.Addrs("192.168.20.15/24")
	gc.Prefixes, gc.Links = []netip.Prefix{hvip}, []string{"eth0"}
	b.g.update(gc)
	b.health.set(false)
	b.until("bound", 10*time.Second, func() bool { return b.host.Has(hvip) })
	if took := b.clk.Now().Sub(expired); took < ExpiryGrace {
		t.Fatalf("bound %v after the address's claim expired, less than ExpiryGrace %v", took, ExpiryGrace)
	}
}

// A publish whose answer was lost, then the group retires: its record is
// deleted all the same (Leave unpublishes on the current lease).
func TestLostPublishThenRetireLeavesNoRecord(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	rule := h.kv.add(&faultRule{match: "/candidates/", mode: "lose", times: 1})
	h.step()
	if h.kv.hits(rule) != 1 {
		t.Fatalf("publish not attempted")
	}
	h.g.retire("group removed by reload")
	left := false
	h.g.env.leave = func(*group) bool { left = true; return true }
	h.until("left", 10*time.Second, func() bool { return left })
	if n := h.count(h.keys.Candidate("VI_1", "web-node-1")); n != 0 {
		t.Fatal("candidate record left on the live lease after the group left")
	}
}

// An acquire whose answer was lost, then a reload that changes the
// addresses before the loop inspects: the claim of the old address is
// found and deleted too.
func TestLostAcquireThenAddressChangeLeavesNoClaim(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	rule := h.kv.add(&faultRule{match: "/leader", mode: "lose", times: 1})
	h.until("acquire sent", 5*time.Second, func() bool { return h.kv.hits(rule) > 0 })
	gc := h.g.config()
	gc.Addresses = config.Addrs("192.168.20.16/24")
	gc.Prefixes, gc.Links = []netip.Prefix{netip.MustParsePrefix("192.168.20.16/24")}, []string{"eth0"}
	h.g.update(gc)
	h.until("holding the new address", 10*time.Second, func() bool { return h.host.Has(gc.Prefixes[0]) && h.g.vips.bound() })
	if n := h.count(h.keys.Address(hvip.Addr())); n != 0 {
		t.Fatal("the claim of the old address is left on the live lease")
	}
}

// A node that cannot bind its VIP (a netlink error that persists) stands
// down, so a peer takes the group.
func TestPersistentBindFailureStandsDown(t *testing.T) {
	m := etcdtest.Start(t)
	h := newHarness(t, m, "web-node-1", "")
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "bind" {
			return errors.New("permission denied")
		}
		return nil
	})
	h.until("won", 5*time.Second, func() bool { return h.g.held.Claim != nil })
	h2 := newHarness(t, m, "web-node-2", strings.Replace(harnessGroup, "priority: 101", "priority: 100", 1))
	for range 100 { // 10 s on both
		h.step()
		h2.step()
		for _, x := range []*harness{h, h2} {
			x.clk.Advance(100 * time.Millisecond)
			if x.clk.Now().Sub(x.lease.Current().Renewed) >= renewEvery {
				x.lease.renew()
			}
		}
		if h2.host.Has(hvip) {
			break
		}
	}
	if !h2.host.Has(hvip) {
		n, _ := h.leader()
		t.Fatalf("nobody has the VIP: leader key %q, web-node-1 %s, web-node-2 %s", n, h.g.currentState(), h2.g.currentState())
	}
	if st := h.g.currentState(); st != election.StateFault {
		t.Errorf("web-node-1 reports %s, want FAULT while it cannot bind", st)
	}
}

// closingWatcher hands out watches the test can end early, as netif.Watch
// does when its subscription overflows.
type closingWatcher struct {
	mu      sync.Mutex
	up      bool
	watches []chan netif.Event
}

func (w *closingWatcher) LinkUp(string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up, nil
}

func (w *closingWatcher) Watch(context.Context, []string) (<-chan netif.Event, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan netif.Event, 4)
	w.watches = append(w.watches, ch)
	return ch, nil
}

// A link watch that ends (its subscription overflowed) is started again,
// and the link state read afresh.
func TestLinkWatchEndedIsRestarted(t *testing.T) {
	w := &closingWatcher{up: true}
	h := newHealth(clock.Real{}, testLog(t), nopObserver{}, nil, w)
	resynced := make(chan string, 1)
	h.onResync = func(name string) { resynced <- name }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.start(ctx)
	gc := config.Group{Name: "VI_1", Interface: "eth0"}
	if err := h.watch([]config.Group{gc}); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	close(w.watches[0])
	w.up = false
	w.mu.Unlock()
	select {
	case name := <-resynced:
		if name != "eth0" {
			t.Fatalf("resync of %q", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the ended watch was not started again")
	}
	w.mu.Lock()
	n := len(w.watches)
	w.mu.Unlock()
	if hl := h.Of(gc); !hl.Fault || n != 2 {
		t.Fatalf("after the watch ended: %d watches, health %+v; want a new watch and the link seen down", n, hl)
	}
	cancel()
	h.stop()
}

// An acquire that lands after its group left (a reload removed it while
// the answer was lost) leaves keys no loop owns: the keeper's sweep finds
// and deletes them.
func TestLateAcquireAfterLeaveIsSwept(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	kv := &faultKV{KV: cli.KV}
	host := fakenet.NewHost("web-node-1", nil)
	cfg, err := config.Parse(strings.NewReader(`
node: web-node-1
etcd: {endpoints: [` + m.Endpoint + `], lease_ttl: 3s, request_timeout: 300ms}
metrics: {listen: ""}
groups:
  - {name: VI_1, interface: eth0, addresses: [192.168.20.15/24], backoff_step: 50ms}
  - {name: VI_2, interface: eth0, addresses: [192.168.20.16/24], backoff_step: 50ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	rule := kv.add(&faultRule{match: "/groups/VI_1/leader", mode: "late", times: 1, delay: 1500 * time.Millisecond})
	k := New(Options{Config: cfg, Client: cli, KV: kv, Clock: clock.Real{}, Log: testLog(t), Ifaces: host,
		Probes: func(string, config.Check) (checks.Probe, error) {
			return func(context.Context) error { return nil }, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for kv.hits(rule) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no acquire of VI_1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cfg2 := cfg
	cfg2.Groups = cfg.Groups[1:]
	if err := k.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	keys := election.Keys{Prefix: "/vipd"}
	landed := false
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		resp, err := cli.Get(t.Context(), keys.Leader("VI_1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) > 0 {
			landed = true
		} else if landed {
			claims, _ := cli.Get(t.Context(), keys.Address(netip.MustParseAddr("192.168.20.15")))
			if len(claims.Kvs) == 0 {
				return // swept
			}
		}
	}
	if !landed {
		t.Fatal("the late acquire never landed")
	}
	t.Fatal("the keys of the late acquire were never swept")
}

// A holder that lapsed (a renewal gap longer than the fence) binds again
// under its intact claim once renewed, whatever order its addresses are
// configured in (the claim re-read from etcd lists them sorted).
func TestLapseThenRenewHoldsTheSameClaim(t *testing.T) {
	for _, order := range []string{"[192.168.20.15/24, 192.168.20.16/24]", "[192.168.20.16/24, 192.168.20.15/24]"} {
		t.Run(order, func(t *testing.T) {
			two := strings.Replace(harnessGroup, "addresses: [192.168.20.15/24]", "addresses: "+order, 1)
			h := newHarness(t, nil, "web-node-1", two)
			h.hold()
			_, rev := h.leader()
			h.noRenew = true
			for i := 0; i < 30 && !h.g.held.Lapsed; i++ {
				h.clk.Advance(100 * time.Millisecond)
				h.step()
			}
			if !h.g.held.Lapsed || h.host.Has(hvip) {
				t.Fatalf("setup: lapsed %v, bound %v", h.g.held.Lapsed, h.host.Has(hvip))
			}
			h.lease.renew()
			h.noRenew = false
			h.until("bound again", 3*time.Second, func() bool { return h.host.Has(hvip) })
			if _, rev2 := h.leader(); rev2 != rev {
				t.Fatalf("the intact claim (rev %d) was released after a lapse; now rev %d", rev, rev2)
			}
		})
	}
}

// A bind that fails for a moment (a netlink buffer overrun) does not stand
// a lone node down: nobody else could hold the group.
func TestPassingBindFailureDoesNotStrandALoneNode(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	fails := 0
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "bind" && fails < 3 {
			fails++
			return errors.New("no buffer space available")
		}
		return nil
	})
	start := h.clk.Now()
	h.until("bound", 10*time.Second, func() bool { return h.host.Has(hvip) && h.g.vips.bound() })
	if took := h.clk.Now().Sub(start); took > ExpiryGrace+2*time.Second {
		t.Fatalf("bound %v after three passing bind failures", took)
	}
}

// A handover whose first VIP removal fails is still carried out: the
// request counts as done only once the resign is sent.
func TestHandoverSurvivesAFailedRemoval(t *testing.T) {
	m := etcdtest.Start(t)
	a := newHarness(t, m, "web-node-1", "")
	b := newHarness(t, m, "web-node-2", "")
	a.hold()
	b.until("b standby, its record published", 5*time.Second, func() bool { return b.g.rec.Lease != 0 && b.g.held.Claim == nil })
	a.step()
	failed := false
	a.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "unbind" && !failed {
			failed = true
			return errors.New("transient netlink failure")
		}
		return nil
	})
	handoverFrom(t, a, "web-node-1")
	for range 40 {
		for _, x := range []*harness{a, b} {
			x.clk.Advance(50 * time.Millisecond)
			x.lease.renew()
			x.step()
		}
		if b.host.Has(hvip) {
			if a.host.Has(hvip) {
				t.Fatal("two holders")
			}
			return
		}
	}
	n, _ := a.leader()
	t.Fatalf("handover not carried out after one failed removal: leader %q, web-node-1 bound %v", n, a.host.Has(hvip))
}

// A bind that fails although the address is on the host (added, then the
// refresh of it failed; or there already): the release must still confirm
// it gone before the keys go, or a peer would bind next to it.
func TestFailedBindOfAPresentAddressIsRemovedBeforeRelease(t *testing.T) {
	m := etcdtest.Start(t)
	h := newHarness(t, m, "web-node-1", "")
	h2 := newHarness(t, m, "web-node-2", strings.Replace(harnessGroup, "priority: 101", "priority: 100", 1))
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "bind" {
			h.host.AddByHand("eth0", hvip) // the kernel has it; the request still fails
			return errors.New("refresh failed")
		}
		return nil
	})
	for range 100 {
		h.step()
		if n, _ := h.leader(); n == "" && h.g.held.Resigned != 0 && h.host.Has(hvip) {
			t.Fatal("keys released while the address a failed bind left is still on the host")
		}
		h2.step()
		if h.host.Has(hvip) && h2.host.Has(hvip) {
			t.Fatal("two holders")
		}
		for _, x := range []*harness{h, h2} {
			x.clk.Advance(100 * time.Millisecond)
			x.lease.renew()
		}
		if h2.host.Has(hvip) {
			return
		}
	}
	t.Fatalf("the peer never took over: web-node-1 %s, web-node-2 %s", h.g.currentState(), h2.g.currentState())
}
