package keeper

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/netif"
)

// Review of 9b910e7 (issue 15: addresses on several interfaces, groups
// without addresses). Each test failed against that commit; the comments
// describe the fault as found, the names the behaviour now required.

// slowProbe is the fake host with an ARP probe that takes its wait, as
// netif's does (it returns early only on a conflict).
type slowProbe struct {
	*fakenet.Host
	clk      *clock.Fake
	mu       sync.Mutex
	probes   int
	inflight int
	errs     map[string]int // Bind errors seen
}

func (s *slowProbe) Bind(ifname string, p netip.Prefix, goneBy time.Time, o netif.AddrOptions) (netif.Binding, error) {
	b, err := s.Host.Bind(ifname, p, goneBy, o)
	if err != nil {
		if s.errs == nil {
			s.errs = map[string]int{}
		}
		s.errs[err.Error()]++
	}
	return b, err
}

// ProbeARP takes its wait on the fake clock. Probes that overlap in real
// time (one per interface, started together) wait together: the first of
// them advances the clock, the ones that join it while it runs do not.
// Probes one after the other each advance it.
func (s *slowProbe) ProbeARP(_ context.Context, _ string, _ []netip.Addr, wait time.Duration) ([]netif.Conflict, error) {
	s.mu.Lock()
	s.probes++
	first := s.inflight == 0
	s.inflight++
	s.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // real time, for probes started together to overlap
	if first {
		s.clk.Advance(wait)
	}
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
	return nil, nil
}

const probeTwoIfGroup = `
name: VI_1
interface: eth0
addresses: [192.168.20.15/24, {address: 10.1.0.5/24, interface: eth1}]
priority: 101
backoff_step: 50ms
garp: {count: 2, interval: 100ms, probe: true, probe_wait: 500ms}
`

const probeOneIfGroup = `
name: VI_1
interface: eth0
addresses: [192.168.20.15/24, 192.168.20.16/24]
priority: 101
backoff_step: 50ms
garp: {count: 2, interval: 100ms, probe: true, probe_wait: 500ms}
`

// Control: one interface, probe_wait at its maximum: the probe fits in
// the lifetime budget of a renewal and the VIPs are bound.
func TestReview15bProbeOneInterfaceBinds(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", probeOneIfGroup)
	sp := &slowProbe{Host: h.host, clk: h.clk}
	h.g.vips.nl = sp
	h.until("bound", 10*time.Second, func() bool { return h.g.vips.bound() && h.host.Has(hvip) })
}

// The probes of a group on several interfaces ran one after the other,
// while bind keeps the lifetime end computed from the lease it was handed
// before them. Two interfaces at probe_wait 500ms took 1s: no renewal
// (every 0.5s of a 3s lease) leaves a whole second of lifetime after that
// (LifetimeEnd is ServerExpiry-1.05s, less AckAllowance), so every Bind
// returned ErrLifetimeTooShort -> bindTooLate; nothing was added, so the
// next pass was "fresh" again and probed again. bindTooLate is not a
// failure: the bind-fault stand-down never fired. The node held the keys
// for ever with nothing bound; its peers stayed in standby. Fixed: the
// probes run at once, so they wait as long as one.
func TestReview15bProbesOnTwoInterfacesBind(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", probeTwoIfGroup)
	h.host.AddLink("eth1")
	sp := &slowProbe{Host: h.host, clk: h.clk}
	h.g.vips.nl = sp
	end := h.clk.Now().Add(15 * time.Second)
	for h.clk.Now().Before(end) {
		w := h.step()
		if h.g.vips.bound() {
			return
		}
		if w <= 0 || w > 100*time.Millisecond {
			w = 100 * time.Millisecond
		}
		h.clk.Advance(w)
		if h.clk.Now().Sub(h.lease.Current().Renewed) >= renewEvery {
			h.lease.renew()
		}
	}
	n, _ := h.leader()
	t.Errorf("after 15s: leader key held by %q, VIPs bound: %v, %d probes, bind errors %v, state %s: the holder never binds and never stands down",
		n, h.g.vips.bound(), sp.probes, sp.errs, h.g.currentState())
}

// resignHook runs after a resign has landed in etcd, before its answer
// reaches the loop (as a slow answer would).
type resignHook struct {
	leadership
	after func()
}

func (r *resignHook) Resign(ctx context.Context, c election.Claim, graceful bool) error {
	err := r.leadership.Resign(ctx, c, graceful)
	if err == nil && r.after != nil {
		f := r.after
		r.after = nil
		f()
	}
	return err
}

const noAddrGroup2 = `
name: VI_1
interface: eth0
priority: 100
backoff_step: 50ms
`

// twoNoAddr starts web-node-1 (MASTER of a group without addresses) and
// web-node-2 (its standby) on one etcd.
func twoNoAddr(t *testing.T) (*harness, *harness) {
	m := etcdtest.Start(t)
	h1 := newHarness(t, m, "web-node-1", noAddrGroup)
	h1.until("MASTER", 5*time.Second, func() bool {
		n, _ := h1.leader()
		return n == "web-node-1" && h1.g.currentState() == election.StateMaster
	})
	h2 := newHarness(t, m, "web-node-2", noAddrGroup2)
	h2.until("standby", 5*time.Second, func() bool { return h2.g.currentState() == election.StateBackup && h2.g.rec.Lease != 0 })
	h1.until("sees web-node-2", 2*time.Second, func() bool {
		return len(h1.view.Group("VI_1", nil).Candidates) == 2
	})
	return h1, h2
}

// A group without addresses "holds" its MASTER state, and the design
// (§2.1) says two nodes are never MASTER of it at once while processes
// run. A VIP group's release takes the VIP off before the resign; here
// the resign is sent while the state is still MASTER, and the state (and
// the BACKUP/FAULT hook) changes only once the resign's answer is back.
// A peer that sees the graceful release acquires at once (no grace) and
// reports MASTER (and runs its MASTER hook) while the old holder still
// does.
func TestReview15bNoAddressReleaseLeavesMasterFirst(t *testing.T) {
	h1, h2 := twoNoAddr(t)
	both := false
	h1.g.env.etcd = &resignHook{leadership: h1.g.env.etcd, after: func() {
		h2.until("web-node-2 MASTER", 5*time.Second, func() bool { return h2.g.currentState() == election.StateMaster })
		both = h1.g.currentState() == election.StateMaster
	}}
	h1.health.set(true) // FAULT: web-node-1 releases
	h1.until("web-node-1 released", 5*time.Second, func() bool { n, _ := h1.leader(); return n != "web-node-1" })
	if both {
		t.Errorf("web-node-2 reported MASTER (its MASTER hook ran) while web-node-1 was still MASTER: its resign was sent before it left MASTER")
	}
}

// The same on SIGTERM: shutdown resigns (and unpublishes) before stopped()
// moves the state from MASTER to STOP.
func TestReview15bNoAddressStopLeavesMasterFirst(t *testing.T) {
	h1, h2 := twoNoAddr(t)
	both := false
	h1.g.env.etcd = &resignHook{leadership: h1.g.env.etcd, after: func() {
		h2.until("web-node-2 MASTER", 5*time.Second, func() bool { return h2.g.currentState() == election.StateMaster })
		both = h1.g.currentState() == election.StateMaster
	}}
	h1.g.shutdown(h1.ctx)
	if both {
		t.Errorf("web-node-2 reported MASTER while web-node-1, stopping, was still MASTER")
	}
}

// keysExpiredUnderFailsafe: holding under the failsafe, etcd is back, the
// view shows the claim's keys gone with the expired lease, the session has
// no new lease yet (decide's "keys expired with the lease during a
// failsafe hold" branch).
func keysExpiredUnderFailsafe() Inputs {
	in := holding(base())
	in.View.Leader = election.LeaderInfo{}
	in.View.Addresses = map[netip.Addr]election.AddressClaim{}
	in.Session = election.Lease{ID: lease, Deadline: t0.Add(-5 * time.Second)}
	in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
	return in
}

// A reload that leaves the group without addresses, in that window: the
// branch returns Hold before the reload's address check (Covers), so bind
// runs with the new config: it takes the VIP off and sets empty: the
// group without addresses is then MASTER (failsafe) on promises, which
// §2.1/§2.9 say it never is.
func TestReview15bKeysExpiredFailsafeHoldHonoursReloadToNoAddresses(t *testing.T) {
	in := keysExpiredUnderFailsafe()
	in.Addrs = nil // reloaded: no addresses
	d, _ := Decide(in)
	if d.Action == Hold {
		t.Errorf("Decide = %v %s %q: a group reloaded to no addresses holds on failsafe promises", d.Action, d.State, d.Reason)
	}
	// What apply's Hold then does with such a config.
	h := newHarness(t, nil, "web-node-1", noAddrGroup)
	fl := election.Lease{ID: h.lease.Current().ID, Deadline: h.clk.Now().Add(1500 * time.Millisecond),
		ServerExpiry: h.clk.Now().Add(2 * time.Second), Failsafe: true}
	h.g.vips.bind(h.ctx, h.g.config(), fl, false)
	st := ReportedState(d.State, h.g.vips.bound(), true)
	if st == election.StateMaster && HolderMode(st, fl, election.Lease{}) == "failsafe" {
		t.Errorf("a group without addresses reports MASTER (failsafe)")
	}
}

// The same branch after a reload that adds an address (pre-existing: the
// branch predates 9b910e7): bind puts an address on the host that this
// node holds no claim on, and that another node's group may hold.
func TestReview15bKeysExpiredFailsafeHoldNeverBindsUnclaimedAddress(t *testing.T) {
	in := keysExpiredUnderFailsafe()
	other := netip.MustParseAddr("192.168.20.99")
	in.Addrs = []netip.Addr{vip, other} // reloaded: another address added
	d, _ := Decide(in)
	if d.Action == Hold {
		t.Errorf("Decide = %v %s %q: Hold with configured addresses %v and a claim on %v: bind would put %v on the host without a claim",
			d.Action, d.State, d.Reason, in.Addrs, in.Held.Claim.Addrs, other)
	}
}

// Go-built configs: Links shorter than Prefixes (the orphan-keys sweep as
// committed in 9b910e7 built one; 7e0a207 fills Links with ""). Latent:
// a retiring loop never reaches Idle or Hold, so the sweep's loop never
// called this; but bind, placedAs, removeStray, probe, startAnnouncing
// and placed() all index cfg.Links[i] unguarded, and a panic there kills
// the daemon.
func TestReview15bShortLinksDoNotPanic(t *testing.T) {
	v := &vips{clk: clock.NewFake(h0), log: testLog(t), obs: nopObserver{}, nl: fakenet.NewHostAt("n", nil, clock.NewFake(h0))}
	gc := config.Group{Name: "orphan", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.20.15/32")}}
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("removeStray with Prefixes but no Links panics: %v", r)
		}
	}()
	v.removeStray(gc)
}

// 7e0a207's sweep gives an orphan group Links [""]: Interfaces() then
// lists "" and health reports the orphan loop in FAULT ("interface "),
// not ready: it logs and exports FAULT for a group the node does not run.
func TestReview15bSweepLinksEmptyNameIsNoFault(t *testing.T) {
	hl := newHealth(clock.NewFake(h0), testLog(t), nopObserver{}, nil, nil)
	gc := config.Group{Name: "orphan", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.20.15/32")}, Links: []string{""}}
	if got := hl.Of(gc); got.Fault || !got.Ready {
		t.Errorf("orphan group with Links [\"\"]: Interfaces() = %q, health %+v", gc.Interfaces(), got)
	}
}
