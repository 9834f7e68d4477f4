package keeper

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

func TestRefreshLifetime(t *testing.T) {
	renewed := t0
	l := election.Lease{ID: lease, Renewed: renewed, ServerExpiry: renewed.Add(3 * time.Second), Deadline: renewed.Add(2500 * time.Millisecond)}
	cases := []struct {
		name   string
		now    time.Time
		heldOn clientv3.LeaseID
		until  time.Time
		want   time.Duration // 0 = no refresh
	}{
		{"just renewed: one whole second, ending 1.05 s+ before the server may expire", t0, lease, t0.Add(500 * time.Millisecond), time.Second},
		{"set at the previous renewal: the new end is 500 ms later", t0.Add(100 * time.Millisecond), lease, t0.Add(600 * time.Millisecond), time.Second},
		{"would not move the end by 250 ms: skip", t0.Add(100 * time.Millisecond), lease, t0.Add(900 * time.Millisecond), 0},
		{"held on an older lease: never", t0, lease + 1, time.Time{}, 0},
		{"fence passed: never", t0.Add(2500 * time.Millisecond), lease, time.Time{}, 0},
		{"less than a safe second left: never", t0.Add(960 * time.Millisecond), lease, time.Time{}, 0},
	}
	for _, c := range cases {
		got, ok := RefreshLifetime(c.now, l, c.heldOn, c.until)
		if ok != (c.want > 0) || got != c.want {
			t.Errorf("%s: RefreshLifetime = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
}

// leaseFeed is a LeaseSource the test sets by hand.
type leaseFeed struct {
	mu      sync.Mutex
	l       election.Lease
	changed chan struct{}
}

func newLeaseFeed(l election.Lease) *leaseFeed { return &leaseFeed{l: l, changed: make(chan struct{})} }

func (f *leaseFeed) Current() election.Lease {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.l
}

func (f *leaseFeed) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *leaseFeed) renew(at time.Time) {
	f.mu.Lock()
	f.l.Renewed, f.l.ServerExpiry, f.l.Deadline = at, at.Add(3*time.Second), at.Add(2500*time.Millisecond)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

type refreshCall struct {
	iface    string
	p        netip.Prefix
	lifetime time.Duration
	at       time.Time
}

type refreshLog struct {
	mu    sync.Mutex
	clk   clock.Clock
	calls []refreshCall
	fail  error
	block chan struct{} // if set, each refresh waits for it
}

func (r *refreshLog) refresh(iface string, p netip.Prefix, lifetime time.Duration, _ netif.AddrOptions) error {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, refreshCall{iface, p, lifetime, r.clk.Now()})
	return r.fail
}

func (r *refreshLog) taken() []refreshCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

var vipA = netip.MustParsePrefix("192.168.20.15/24")

func newTestRefresher(t *testing.T) (*refresher, *leaseFeed, *refreshLog, *clock.Fake) {
	clk := clock.NewFake(t0)
	feed := newLeaseFeed(election.Lease{ID: lease})
	feed.renew(t0)
	rl := &refreshLog{clk: clk}
	// The view has caught up with every claim (created at rev 90) and
	// shows the keys present, unless a test says otherwise.
	view := func(group string) election.GroupState {
		return election.GroupState{Synced: true, Rev: 100, Leader: election.LeaderInfo{Present: true, CreateRev: 90}}
	}
	r := newRefresher(feed, view, rl.refresh, clk, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return r, feed, rl, clk
}

// One pass per renewal refreshes every group held on the current lease,
// and nothing else.
func TestRefresherPassPerRenewal(t *testing.T) {
	r, feed, rl, clk := newTestRefresher(t)
	vipB := netip.MustParsePrefix("192.168.20.16/24")
	r.hold("a", heldVIPs{iface: "eth0", prefixes: []netip.Prefix{vipA}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() {}})
	r.hold("b", heldVIPs{iface: "eth1", prefixes: []netip.Prefix{vipB}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() {}})
	r.hold("stale", heldVIPs{iface: "eth0", prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.20.17/24")}, lease: lease + 1, failed: func() {}})

	if r.pass(); len(rl.taken()) != 0 {
		t.Fatal("refreshed right after bind, before any renewal moved the lifetime")
	}
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	r.pass()
	got := rl.taken()
	if len(got) != 2 {
		t.Fatalf("refreshes after a renewal = %+v, want one per held VIP on the current lease", got)
	}
	for _, c := range got {
		if c.lifetime != time.Second {
			t.Errorf("%v refreshed with %v, want 1s", c.p, c.lifetime)
		}
	}
	if r.pass(); len(rl.taken()) != 0 {
		t.Fatal("a second pass without a renewal refreshed again")
	}
	r.release("a")
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	r.pass()
	if got := rl.taken(); len(got) != 1 || got[0].p != vipB {
		t.Fatalf("after releasing a: refreshes %+v, want only b's", got)
	}
}

// A leader key the view shows deleted is not refreshed, even while its
// group loop has not yet reacted (a stuck loop must not keep a VIP alive
// for a key another node may now create).
func TestRefresherSkipsDeletedKey(t *testing.T) {
	r, feed, rl, clk := newTestRefresher(t)
	r.view = func(group string) election.GroupState {
		st := election.GroupState{Synced: true, Rev: 100}
		if group == "kept" {
			st.Leader = election.LeaderInfo{Present: true, CreateRev: 90}
		}
		if group == "behind" { // the view has not yet seen the key's creation
			st.Rev = 80
		}
		return st
	}
	for _, g := range []string{"kept", "deleted", "behind"} {
		r.hold(g, heldVIPs{iface: g, prefixes: []netip.Prefix{vipA}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() {}})
	}
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	r.pass()
	got := map[string]bool{}
	for _, c := range rl.taken() {
		got[c.iface] = true
	}
	if !got["kept"] || got["deleted"] || !got["behind"] {
		t.Fatalf("refreshed %v; want kept and behind (not yet known gone), not deleted", got)
	}
}

// release waits for a pass in progress, so no refresh (which re-creates
// an absent address) can follow the group's removal of its VIPs.
func TestRefresherReleaseWaitsForPass(t *testing.T) {
	r, feed, rl, clk := newTestRefresher(t)
	r.hold("a", heldVIPs{iface: "eth0", prefixes: []netip.Prefix{vipA}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() {}})
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	rl.block = make(chan struct{})

	passDone := make(chan struct{})
	go func() { defer close(passDone); r.pass() }()
	// Wait until the pass holds the lock (it is blocked in refresh).
	for r.mu.TryLock() {
		r.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	released := make(chan struct{})
	go func() { defer close(released); r.release("a") }()
	select {
	case <-released:
		t.Fatal("release returned while a refresh of the group was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(rl.block)
	<-passDone
	<-released
	if len(rl.taken()) != 1 {
		t.Fatal("the pass in flight did not complete its refresh")
	}
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	if r.pass(); len(rl.taken()) != 0 {
		t.Fatal("refreshed a released group")
	}
}

// A failed refresh hands the group back to its loop to re-bind.
func TestRefresherFailureAsksGroupToRebind(t *testing.T) {
	r, feed, rl, clk := newTestRefresher(t)
	rebind := 0
	r.hold("a", heldVIPs{iface: "eth0", prefixes: []netip.Prefix{vipA}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() { rebind++ }})
	rl.fail = errors.New("netlink: no buffer space")
	clk.Advance(500 * time.Millisecond)
	feed.renew(clk.Now())
	r.pass()
	if rebind != 1 {
		t.Fatalf("failed callbacks = %d, want 1", rebind)
	}
	// Its lifetime end did not move, so the next pass tries again.
	rl.fail = nil
	r.pass()
	if rebind != 1 || len(rl.taken()) != 2 {
		t.Fatal("the failed refresh was not retried on the next pass")
	}
}

// Without a renewal, the loop still refreshes once at the last safe
// moment (election.LastRefresh), then stops extending: the lifetime never
// outruns the lease.
func TestRefresherLastSafeRefreshWithoutRenewal(t *testing.T) {
	r, feed, rl, clk := newTestRefresher(t)
	r.hold("a", heldVIPs{iface: "eth0", prefixes: []netip.Prefix{vipA}, lease: lease, keyRev: 90, until: t0.Add(time.Second), failed: func() {}})
	clk.Advance(400 * time.Millisecond)
	feed.renew(clk.Now()) // renewed at t0+400ms; none after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	defer func() { cancel(); <-done }()

	serverExpiry := feed.Current().ServerExpiry
	for clk.Now().Before(serverExpiry) {
		if !clk.WaitForTimers(1, 5*time.Second) {
			t.Fatal("refresher loop not waiting on a timer")
		}
		clk.Advance(50 * time.Millisecond)
	}
	calls := rl.taken()
	if len(calls) == 0 {
		t.Fatal("never refreshed after the renewal")
	}
	last := calls[len(calls)-1]
	if end := last.at.Add(last.lifetime); end.Add(election.KernelExpirySlack).After(serverExpiry) {
		t.Fatalf("last refresh at %v for %v ends %v after the server may expire the lease", last.at.Sub(t0), last.lifetime, end.Add(election.KernelExpirySlack).Sub(serverExpiry))
	}
	if want := election.LastRefresh(serverExpiry); last.at.Before(want.Add(-50*time.Millisecond)) || last.at.After(want.Add(50*time.Millisecond)) {
		t.Fatalf("last refresh at +%v, want near the last safe refresh +%v", last.at.Sub(t0), want.Sub(t0))
	}
}
