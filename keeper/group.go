package keeper

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
)

// leaseSource is the node lease as the group loops see it.
type leaseSource interface {
	Current() election.Lease
	// Changed is closed at the next change of the lease.
	Changed() <-chan struct{}
}

// groupView is the part of election.View a group loop reads.
type groupView interface {
	Group(name string, addrs []netip.Addr) election.GroupState
	// Claims lists the addresses claimed for group by node on lease.
	Claims(group, node string, lease clientv3.LeaseID) []netip.Addr
	Drained(node string) bool
	LastWin(node string) time.Time
}

// leadership is the part of election.Leadership a group loop uses.
type leadership interface {
	Acquire(ctx context.Context, group string, addrs []netip.Addr, lease clientv3.LeaseID, members map[string]string, seen map[netip.Addr]int64) (election.AcquireResult, error)
	WriteMembers(ctx context.Context, c election.Claim, want map[string]string, seen map[netip.Addr]int64) (written bool, rev int64, err error)
	Resign(ctx context.Context, c election.Claim, graceful bool) error
	Inspect(ctx context.Context, group string, addrs []netip.Addr) (election.Ownership, error)
	Publish(ctx context.Context, group string, c election.Candidate, lease clientv3.LeaseID, expectModRev int64) (election.PublishResult, error)
	Unpublish(ctx context.Context, group string, lease clientv3.LeaseID) error
}

// groupEnv is what every group loop of a node shares: the small set of
// things a loop needs, not the Keeper.
type groupEnv struct {
	node     string
	clk      clock.Clock
	log      *slog.Logger
	obs      Observer
	lease    leaseSource
	ttl      time.Duration // the lease TTL
	view     groupView
	etcd     leadership
	links    VIPLinks
	announce AnnounceFunc
	health   func(config.Group) Health
	hooks    hookRunner
	// timeout bounds the etcd requests of a stopping group.
	timeout time.Duration
	// leave is asked by a retiring group that has released everything:
	// true means it is gone from the keeper and its loop ends.
	leave func(*group) bool
	// peerEndpoint is this node's peer channel endpoint, published in its
	// candidate records ("" when the channel is off).
	peerEndpoint string
	// fs is the node's failsafe part; nil when the peer channel is off.
	fs *failsafe
	// detaching, if set, reports whether a loop whose context ended hands
	// over to the next vipd image instead of stopping (Keeper.Detach).
	detaching func() bool
	// movers makes a group's cloud mover (nil: none configured anywhere).
	movers MoverFactory
}

// hookRunner runs notify hooks in the background.
type hookRunner interface {
	run(argv []string, timeout time.Duration, env hookEnv)
}

// group is one group's reconcile loop: each pass reads its inputs, asks
// the pure Decide what to do, and applies the answer. Fields after the
// blank line are owned by the loop goroutine.
type group struct {
	env    *groupEnv
	name   string
	log    *slog.Logger
	wake   chan struct{}
	dirty  atomic.Bool // an address event touched our VIPs: re-check them
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	shared    config.Group // latest config, set by update
	updates   int          // counts updates of shared
	retiring  string       // why the group is going away; "" while it is wanted
	state     election.State
	prio      int // the priority reported with state, for the STOP hook
	heartbeat time.Time

	cfg   config.Group // the loop's copy of shared
	held  Held
	mem   Memory
	vips  vips
	rec   recordState
	retry etcdRetry
	// vacantAtWin is when the group won was seen vacant, for the
	// vacancy-to-bound metric; zero once reported.
	vacantAtWin time.Time
	bindFault   bindFault
	// relTimer times a check going down to the VIPs coming off.
	relTimer    releaseTimer
	seenUpdates int // g.updates as the loop last took the config
	// ms tracks the membership records of the held claim.
	ms membersState
	// fsClaim is the held claim and the member set its failsafe hold
	// needs (nil members: none), for groupLease, which the announcer
	// reads too.
	fsClaim atomic.Pointer[fsClaim]
	// mode is the holder mode last reported ("", "relay", "failsafe").
	mode string

	// adopting: the state was handed over by the previous vipd image and
	// the handed-over claim is being re-read: no state is reported (and
	// no hook run) until the loop holds or lets go.
	adopting  bool
	adoptedAt time.Time
	// handedOver is what the loop handed over when it detached.
	handedOver *HandoffGroup
	// moverFailed is the mover config the factory refused (logged once).
	moverFailed *config.Mover
}

// membersState is what the loop knows of its claim's membership records
// (docs/design.md §2.9): base, the set etcd had under the claim when last
// known, as of baseRev (ok false: no record under the claim known, so no
// failsafe hold), and sent, the writes sent since whose outcome is
// unknown, each with the record ModRevision it was guarded by. etcd holds
// base or one of sent: a failsafe hold asks their union, and none if any of
// them deletes the record (then any node may claim).
type membersState struct {
	claimRev int64
	base     map[string]string
	baseRev  int64
	ok       bool
	sent     []sentMembers
}

type sentMembers struct {
	nodes map[string]string // nil: the record deleted
	guard int64
}

func (m membersState) union() map[string]string {
	if !m.ok {
		return nil
	}
	sets := []map[string]string{m.base}
	for _, s := range m.sent {
		if s.nodes == nil {
			return nil
		}
		sets = append(sets, s.nodes)
	}
	return unionMembers(sets...)
}

// maxGuard is the latest ModRevision a pending write was guarded by.
func (m membersState) maxGuard() int64 {
	var g int64
	for _, s := range m.sent {
		g = max(g, s.guard)
	}
	return g
}

type fsClaim struct {
	claim   election.Claim
	members map[string]string
}

// groupLease is the lease a group's claim may be relied on under (see
// Inputs.Lease): the session's, or a failsafe one while the peers'
// promises cover the held claim for longer.
type groupLease struct {
	env *groupEnv
	g   *group
}

func (gl groupLease) Changed() <-chan struct{} { return gl.env.lease.Changed() }

func (gl groupLease) Current() election.Lease {
	l := gl.env.lease.Current()
	fc := gl.g.fsClaim.Load()
	if fc == nil || fc.members == nil || gl.env.fs == nil {
		return l
	}
	return failsafeLease(l, fc.claim.Lease, gl.env.fs.Horizon(fc.members, fc.claim.Addrs), gl.env.fs.margin)
}

// failsafeLease is the lease a claim on lease claimLease may be held
// under, given the session's lease l and the horizon of the peers'
// promises (zero: none): l when it is the claim's and covers at least as
// long, else a failsafe lease on the claim's lease ID with the horizon as
// its server expiry and the horizon less margin as its fence.
func failsafeLease(l election.Lease, claimLease clientv3.LeaseID, horizon time.Time, margin time.Duration) election.Lease {
	if horizon.IsZero() || (l.ID == claimLease && !l.ServerExpiry.Before(horizon)) {
		return l
	}
	return election.Lease{ID: claimLease, Deadline: horizon.Add(-margin), Renewed: l.Renewed, ServerExpiry: horizon, Failsafe: true}
}

// bindFault stands a node down when it cannot bind its VIPs (a netlink
// error that persists: a missing or misconfigured interface): holding the
// keys without the address would keep every peer in standby.
type bindFault struct {
	failures int           // consecutive failed binds
	since    time.Time     // the first of them
	holdOff  time.Duration // the last stand-down; doubles while it recurs
	until    time.Time     // FAULT until then
}

// Binds that keep failing for bindFailingFor (at least maxBindFailures
// attempts) put the group in FAULT for a hold-off, first bindHoldOffMin,
// doubling up to bindHoldOffMax while it recurs, if another candidate can
// take the group; a bind that succeeds, or a reload, resets it. A passing
// error (a netlink buffer overrun) does not stand a node down.
const (
	maxBindFailures = 3
	bindFailingFor  = 2 * time.Second
	bindHoldOffMin  = 30 * time.Second
	bindHoldOffMax  = 10 * time.Minute
)

// failed records a failed bind at now; true when the group stands down.
// others says whether another eligible candidate could take the group.
func (b *bindFault) failed(now time.Time, others bool) bool {
	if b.failures == 0 {
		b.since = now
	}
	b.failures++
	if b.failures < maxBindFailures || now.Sub(b.since) < bindFailingFor || !others {
		return false
	}
	b.failures = 0
	b.holdOff = min(max(2*b.holdOff, bindHoldOffMin), bindHoldOffMax)
	b.until = now.Add(b.holdOff)
	return true
}

func (b *bindFault) ok() { *b = bindFault{} }

// othersEligible reports whether a candidate other than this node could
// take the group.
func othersEligible(in Inputs) bool {
	for _, c := range in.View.Candidates {
		if c.Node != in.Self.Node && c.Eligible() {
			return true
		}
	}
	return false
}

func newGroup(env *groupEnv, gc config.Group, cancel context.CancelFunc) *group {
	log := env.log.With("group", gc.Name)
	g := &group{
		env: env, name: gc.Name, log: log,
		wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		shared: gc, cfg: gc, state: election.StateInit, heartbeat: env.clk.Now(),
	}
	g.vips = vips{clk: env.clk, log: log, obs: env.obs, nl: env.links, announce: env.announce, lease: groupLease{env: env, g: g}}
	return g
}

// update hands the loop a new configuration, and takes back a retirement
// (a group removed and added again by reloads before it had left).
func (g *group) update(gc config.Group) {
	g.mu.Lock()
	g.shared, g.retiring = gc, ""
	g.updates++
	g.mu.Unlock()
	g.poke()
}

// retire asks the loop to release everything and leave.
func (g *group) retire(reason string) {
	g.mu.Lock()
	g.retiring = reason
	g.mu.Unlock()
	g.poke()
}

func (g *group) config() config.Group {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shared
}

// iface, ownsAddr and tracks are asked for every group on every event:
// they read the shared config in place instead of copying it.
// usesLink reports whether the group binds on, or depends on, interface
// name.
func (g *group) usesLink(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.shared.Interfaces(), name)
}

func (g *group) ownsAddr(a netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.shared.Prefixes, func(p netip.Prefix) bool { return p.Addr() == a })
}

func (g *group) tracks(check string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.shared.Track, func(t config.Track) bool { return t.Check == check })
}

func (g *group) currentState() election.State {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// isAdopting reports whether the loop is still taking over what the
// previous vipd image handed over.
func (g *group) isAdopting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.adopting
}

func (g *group) isRetiring() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.retiring != ""
}

func (g *group) lastLoop() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heartbeat
}

func (g *group) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *group) markDirty() { g.dirty.Store(true) }

// maxSleep bounds how long a loop sleeps, so its heartbeat (watched by
// the systemd watchdog, which allows WatchdogSec/2) stays fresh.
const maxSleep = 2 * time.Second

// passesPerWake bounds the passes of one wake-up: a decision whose apply
// changed something is followed at once by another (won the key: bind).
const passesPerWake = 4

func (g *group) run(ctx context.Context) {
	timer := g.env.clk.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		// Take the change channel before reading the lease, so a renewal
		// that lands in between still wakes us.
		leaseChanged := g.env.lease.Changed()
		g.mu.Lock()
		g.cfg = g.shared
		if g.updates != g.seenUpdates {
			g.seenUpdates = g.updates
			g.bindFault = bindFault{} // a reload may have fixed what failed
		}
		retiring := g.retiring
		g.heartbeat = g.env.clk.Now()
		g.mu.Unlock()
		wake, left := g.reconcile(ctx, retiring)
		if left {
			return
		}
		if wake <= 0 || wake > maxSleep {
			wake = maxSleep
		}
		timer.Reset(wake)
		if !g.caresAboutRenewals() {
			leaseChanged = nil // a standby on a live lease: renewals change nothing
		}
		select {
		case <-ctx.Done():
			if g.env.detaching != nil && g.env.detaching() {
				hg := g.detach()
				g.handedOver = &hg
				return
			}
			g.shutdown(ctx)
			return
		case <-g.wake:
		case <-leaseChanged:
		case <-timer.C():
		}
	}
}

// minWriteTime is the least time a pass gives its bookkeeping writes.
const minWriteTime = 100 * time.Millisecond

// caresAboutRenewals reports whether a lease renewal can change what this
// loop does: a holder refreshes lifetimes and moves its fence; a group
// without a live lease, or whose candidate record is on another lease,
// waits for one. A standby on a live, published lease does not, and with
// many groups waking every standby on every renewal is most of the work.
func (g *group) caresAboutRenewals() bool {
	l := g.env.lease.Current()
	return g.held.Claim != nil || g.vips.present() || !l.Live(g.env.clk.Now()) || l.ID != g.rec.Lease
}

// reconcile decides and applies until the decision is stable, and returns
// when to look again; left is true when a retiring group is gone.
func (g *group) reconcile(ctx context.Context, retiring string) (wake time.Duration, left bool) {
	for range passesPerWake {
		in := g.inputs(retiring)
		d, mem := Decide(in)
		g.mem = mem
		wasBound := g.vips.bound()
		again, w, left := g.apply(ctx, in, d)
		g.observeRelease(in, wasBound, d)
		g.trackClaim()
		g.syncMover()
		if left {
			return 0, true
		}
		g.report(d, in)
		// The writes below may take a request timeout; the wake-up asked
		// for (a lifetime refresh, say) counts from now, not from after
		// them.
		// They are bookkeeping: bounded by that wake-up, so that a slow
		// etcd cannot make a holder miss its lifetime refresh (a write cut
		// short is retried later; its guard makes a late landing harmless).
		var due time.Time
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if w > 0 {
			due = g.env.clk.Now().Add(w)
			// At least minWriteTime, or a wake-up due at once would cut
			// every write short; refreshes are made refreshAhead early.
			wctx, cancel = context.WithTimeout(ctx, max(w, minWriteTime))
		}
		if pw := g.publish(wctx, in); pw > 0 && (w <= 0 || pw < w) {
			w, due = pw, time.Time{}
		}
		if d.Action == Hold && g.vips.bound() {
			g.updateMembers(wctx, in)
		}
		cancel()
		if !due.IsZero() {
			w = max(due.Sub(g.env.clk.Now()), time.Millisecond)
		}
		if !again {
			return w, false
		}
	}
	return retryBase, false
}

// observeRelease feeds one pass to the check-to-release timer.
func (g *group) observeRelease(in Inputs, wasBound bool, d Decision) {
	var d2 time.Duration
	var ok bool
	g.relTimer, d2, ok = g.relTimer.next(releasePass{
		Now: g.env.clk.Now(), DownSince: in.DownSince,
		WasBound: wasBound, Present: g.vips.present(), Hold: d.Action == Hold,
	})
	if ok {
		g.env.obs.CheckToRelease(g.name, d2)
	}
}

// inputs gathers everything Decide needs. It changes nothing.
func (g *group) inputs(retiring string) Inputs {
	env := g.env
	now := env.clk.Now()
	hl := env.health(g.cfg)
	if now.Before(g.bindFault.until) {
		hl.Fault = true
		hl.Failing = append(hl.Failing, "binding the VIPs failed")
	}
	self := election.Candidate{Node: env.node, Priority: hl.Priority, Preempt: g.cfg.Preempt, PreemptDelay: g.cfg.PreemptDelay,
		Failing: hl.Failing, State: election.StateBackup, Drained: env.view.Drained(env.node), Peer: env.peerEndpoint,
		Interface: strings.Join(g.cfg.Interfaces(), ","), Addresses: prefixStrings(g.cfg.Prefixes)}
	switch {
	case hl.Fault:
		self.State = election.StateFault
	case g.vips.bound():
		self.State = election.StateMaster
	}
	addrs := groupAddrs(g.cfg)
	promisedUntil := env.fs.PromisedUntil(addrs)
	// A node that may not claim yet says so, so that a holder does not
	// yield to it only to leave the group vacant (a holder's claim has no
	// promise over it: it never promises its own addresses).
	self.Waiting = g.held.Claim == nil && now.Before(promisedUntil)
	session := env.lease.Current()
	lease := groupLease{env: env, g: g}.Current()
	view := env.view.Group(g.cfg.Name, g.watched(session.ID))
	var betterWonAt time.Time
	selfVisible := false
	for _, c := range view.Candidates {
		if c.Node == self.Node && clientv3.LeaseID(c.Lease) == session.ID {
			selfVisible = true
		}
		if c.Node != self.Node && c.Eligible() && election.Better(c, self) {
			if t := env.view.LastWin(c.Node); t.After(betterWonAt) {
				betterWonAt = t
			}
		}
	}
	return Inputs{
		Now: now, Group: g.cfg.Name, Lease: lease, Session: session, PromisedUntil: promisedUntil,
		Self: self, Ready: hl.Ready, View: view,
		Addrs: addrs, Held: g.held, Retiring: retiring, SelfVisible: selfVisible, BetterWonAt: betterWonAt, DownSince: hl.DownSince,
		BackoffStep: g.cfg.BackoffStep, TTL: env.ttl, Mem: g.mem,
	}
}

// watched is every address whose claim matters to the loop: the
// configured ones, the held claim's, those an acquire with a lost answer
// was sent with, and any claimed for this group by this node on lease (a
// late acquire for addresses a reload has since changed).
func (g *group) watched(lease clientv3.LeaseID) []netip.Addr {
	out := groupAddrs(g.cfg)
	if c := g.held.Claim; c != nil {
		out = append(out, c.Addrs...)
	}
	out = append(out, g.held.UnsureAddrs...)
	out = append(out, g.env.view.Claims(g.cfg.Name, g.env.node, lease)...)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func groupAddrs(gc config.Group) []netip.Addr {
	out := make([]netip.Addr, len(gc.Prefixes))
	for i, p := range gc.Prefixes {
		out[i] = p.Addr()
	}
	return out
}

// apply carries out d. again asks for an immediate new decision; wake for
// one after that long; left says a retiring group is gone.
func (g *group) apply(ctx context.Context, in Inputs, d Decision) (again bool, wake time.Duration, left bool) {
	switch d.Action {
	case Idle:
		if !g.vips.unbind(d.Reason) {
			return false, g.vips.removalWait(retryBase), false
		}
		if g.dirty.Swap(false) && !g.vips.removeStray(g.cfg) {
			g.markDirty()
			return false, retryBase, false
		}
		return false, d.Wake, false

	case Acquire, Reclaim:
		lease, addrs := in.Session.ID, in.Addrs
		if d.Action == Reclaim {
			addrs = g.held.Claim.Addrs
		}
		if !g.env.fs.beginAcquire(g.name, addrs) {
			// A promise given since Decide read its inputs.
			return false, max(g.env.fs.PromisedUntil(addrs).Sub(g.env.clk.Now()), retryBase), false
		}
		members := g.wantMembers(in)
		seen := map[netip.Addr]int64{}
		for _, a := range addrs {
			seen[a] = in.View.Members[a].ModRev
		}
		var res election.AcquireResult
		sent := false
		w, ok := g.retry.call(g, in.Now, d.Action.String(), func() (err error) {
			sent = true
			res, err = g.env.etcd.Acquire(ctx, g.cfg.Name, addrs, lease, members, seen)
			return err
		})
		if !ok {
			// A failed request may have committed with its answer lost:
			// nothing else until Inspect says what etcd holds, for these
			// addresses (a reload may change the configured ones).
			if sent {
				g.held.Unsure = true
				g.held.UnsureAddrs = slices.Clone(addrs)
			} else {
				g.env.fs.endAcquire(g.name)
			}
			return false, w, false
		}
		g.env.fs.endAcquire(g.name)
		if d.Action == Reclaim {
			if !res.Won && res.Holder == "" {
				// Only a membership record's guard failed: the view had
				// not seen its latest version. Look again once it has.
				return false, retryBase, false
			}
			if !res.Won {
				// Someone holds it: that cannot be while the promises
				// stand, unless the membership was not what this node
				// believed. The VIPs come off at once.
				g.log.Error("reclaim after a failsafe hold lost; removing the VIPs", "holder", res.Holder)
				g.held = Held{}
				g.vips.unbind("reclaim after a failsafe hold lost to " + res.Holder)
				return true, 0, false
			}
			g.held = Held{Claim: &res.Claim}
			g.ms = membersState{claimRev: res.Claim.CreateRev, base: members, baseRev: res.Claim.CreateRev, ok: members != nil}
			g.markDirty() // rebind under the new lease
			g.log.Info("claimed anew after a failsafe hold; the VIPs stayed bound", "rev", res.Claim.CreateRev)
			return true, 0, false
		}
		if !res.Won {
			g.log.Debug("acquire lost the race", "holder", res.Holder)
			return false, retryBase, false
		}
		g.held = Held{Claim: &res.Claim, Fresh: true, FreshSince: in.Now}
		g.ms = membersState{claimRev: res.Claim.CreateRev, base: members, baseRev: res.Claim.CreateRev, ok: members != nil}
		g.vacantAtWin = g.mem.VacantSince // (this pass's: in.Mem is the last pass's)
		g.log.Info("won leadership", "rev", res.Claim.CreateRev, "reason", d.Reason)
		return true, 0, false

	case Inspect:
		var o election.Ownership
		addrs := g.watched(in.Session.ID)
		w, ok := g.retry.call(g, in.Now, "inspect", func() (err error) {
			o, err = g.env.etcd.Inspect(ctx, g.cfg.Name, addrs)
			return err
		})
		if !ok {
			return false, w, false
		}
		g.env.fs.endAcquire(g.name)
		c, complete, found := o.ClaimOf(g.cfg.Name, g.env.node, in.Session.ID, addrs)
		if g.held.Claim != nil && found && c.CreateRev != g.held.Claim.CreateRev {
			// Keys of ours, but from another claim than the lapsed one:
			// the lapsed one is gone; delete what is there.
			complete = false
		}
		switch {
		case found:
			// The claim held before (lapsed, and confirmed when it was
			// first bound) stays confirmed; any other is fresh.
			fresh := g.held.Claim == nil || g.held.Claim.CreateRev != c.CreateRev || g.held.Fresh
			since := in.Now
			if g.held.Fresh && g.held.Claim != nil && g.held.Claim.CreateRev == c.CreateRev {
				since = g.held.FreshSince
			}
			g.held = Held{Claim: &c, Partial: !complete, Fresh: fresh, FreshSince: since, Resigned: g.held.Resigned}
			g.log.Info("found this node's keys in etcd", "rev", c.CreateRev, "complete", complete, "reason", d.Reason)
		default:
			g.held = Held{Resigned: g.held.Resigned}
		}
		return true, 0, false

	case Hold:
		g.held.Fresh = false // Decide found the vacancy it replaced safe
		wasBound := g.vips.bound()
		switch g.vips.bind(ctx, g.cfg, in.Lease, g.dirty.Swap(false)) {
		case bindFenced:
			g.held.Lapsed = true
			return true, 0, false
		case bindFailed:
			g.markDirty()
			if g.bindFault.failed(in.Now, othersEligible(in)) {
				g.log.Error("cannot bind the VIPs; standing down (FAULT) so that a peer can hold the group",
					"failing_for", bindFailingFor, "for", g.bindFault.holdOff)
				return true, 0, false
			}
			return false, retryBase, false
		case bindOK:
			g.bindFault.ok()
		}
		if !wasBound && g.vips.bound() && !g.vacantAtWin.IsZero() {
			g.env.obs.Acquired(g.cfg.Name, g.env.clk.Now().Sub(g.vacantAtWin))
			g.vacantAtWin = time.Time{}
		}
		// Come back before the lifetime set last runs out, or for the last
		// safe refresh, in case the next renewal is late.
		if next := NextRefresh(g.env.clk.Now(), in.Lease.ServerExpiry, g.vips.expiresFrom()); next > 0 && (d.Wake <= 0 || next < d.Wake) {
			return false, next, false
		}
		return false, d.Wake, false

	case Drop:
		g.held.Lapsed = true
		if !g.vips.unbind(d.Reason) {
			return false, g.vips.removalWait(retryBase), false
		}
		return false, 0, false // the next renewal wakes the loop

	case Forget:
		g.held = Held{}
		if !g.vips.unbind(d.Reason) {
			return false, g.vips.removalWait(retryBase), false
		}
		return true, 0, false

	case Release:
		if !g.vips.unbind(d.Reason) {
			// The keys stay until the VIPs are provably gone: a peer must
			// not bind while the address may still be up here.
			return false, g.vips.removalWait(RetryBackoff(1, g.name)), false
		}
		// MASTER ends here, before the resign lets a peer take over: what
		// a group without addresses holds is its state (and hooks).
		g.report(d, in)
		c := *g.held.Claim
		// Graceful for a claim whose VIPs were bound, or a fresh one (never
		// bound) whose predecessor ended gracefully; otherwise the
		// predecessor's VIP may still be on its way out (Leadership.Resign).
		graceful := !g.held.Fresh || (in.View.Leader.CreateRev == c.CreateRev && in.View.Prior.Graceful)
		w, ok := g.retry.call(g, in.Now, "resign", func() error {
			// From here the resign may land whatever its answer says:
			// the claim is only ever released again, and a handover it
			// carries out is done.
			g.held.Resigning = true
			if d.Handover != 0 {
				g.mem.HandoverDone = d.Handover
			}
			return g.env.etcd.Resign(ctx, c, graceful)
		})
		if !ok {
			return false, w, false // retried until the keys are gone
		}
		g.held = Held{Resigned: c.CreateRev}
		return true, 0, false

	case Await:
		// A fresh claim: nothing bound yet; look again when told.
		if !g.vips.unbind(d.Reason) {
			return false, g.vips.removalWait(retryBase), false
		}
		return false, d.Wake, false

	case Leave:
		if !g.vips.unbind(d.Reason) {
			return false, g.vips.removalWait(retryBase), false
		}
		if in.Session.Live(in.Now) {
			// A record on our lease would stand (and be yielded to) until
			// the node stops; delete it whatever the loop last wrote (a
			// write whose answer was lost may have landed). Guarded by the
			// lease: nothing else is touched. Without a live lease the
			// keeper's sweep deletes it once there is one again.
			w, ok := g.retry.call(g, in.Now, "unpublish", func() error { return g.env.etcd.Unpublish(ctx, g.cfg.Name, in.Session.ID) })
			if !ok {
				return false, w, false
			}
		}
		g.rec = recordState{}
		if !g.env.leave(g) {
			return true, 0, false // added back meanwhile
		}
		g.stopped(d.Reason)
		return false, 0, true
	}
	return false, 0, false
}

// report logs and exports the state, and runs its notify hook on a change.
func (g *group) report(d Decision, in Inputs) {
	if g.isAdopting() {
		settling := d.Action == Inspect || (d.Action == Hold && !g.vips.bound())
		if settling && g.env.clk.Now().Sub(g.adoptedAt) < g.env.ttl {
			return // re-reading the handed-over claim: the state stands
		}
		g.mu.Lock()
		g.adopting = false
		g.mu.Unlock()
	}
	prio := in.Self.Priority
	state := ReportedState(d.State, g.vips.bound(), g.held.Claim != nil)
	mode := HolderMode(state, in.Lease, in.Session)
	g.env.obs.GroupState(g.cfg.Name, state, prio, g.vips.present())
	g.env.obs.HolderMode(g.cfg.Name, mode)
	g.mu.Lock()
	from, fromMode := g.state, g.mode
	g.state, g.mode = state, mode
	g.prio = prio
	g.mu.Unlock()
	if state == from {
		if mode != fromMode {
			// Same state, new footing: logged like a state change, as
			// keepalived's operators read MASTER lines.
			g.log.Warn("state change", "from", withMode(from, fromMode), "to", withMode(state, mode), "reason", d.Reason, "priority", prio)
		}
		return
	}
	g.log.Info("state change", "from", withMode(from, fromMode), "to", withMode(state, mode), "reason", d.Reason, "priority", prio)
	g.env.obs.Transition(g.cfg.Name, state)
	hook := map[election.State][]string{
		election.StateMaster: g.cfg.Notify.Master,
		election.StateBackup: g.cfg.Notify.Backup,
		election.StateFault:  g.cfg.Notify.Fault,
	}[state]
	env := g.hookEnv(state, from, prio)
	g.env.hooks.run(hook, g.cfg.Notify.Timeout, env)
	g.env.hooks.run(anyHookArgv(g.cfg.Notify.Any, g.cfg.Name, state, prio), g.cfg.Notify.Timeout, env)
}

// HolderMode is what a holder's claim rests on, beyond its own renewals:
// "relay" (its lease renewed by peers: this node cannot reach etcd),
// "failsafe" (peers' promises: nobody can renew it), or "".
func HolderMode(state election.State, lease, session election.Lease) string {
	switch {
	case state != election.StateMaster:
		return ""
	case lease.Failsafe:
		return "failsafe"
	case session.Relayed:
		return "relay"
	}
	return ""
}

// withMode is a state as logs and status show it: MASTER (relay).
func withMode(s election.State, mode string) string {
	if mode == "" {
		return string(s)
	}
	return string(s) + " (" + mode + ")"
}

// stateAndMode returns the state last reported and its holder mode.
func (g *group) stateAndMode() (election.State, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state, g.mode
}

func (g *group) hookEnv(state, from election.State, prio int) hookEnv {
	return hookEnv{Group: g.cfg.Name, Node: g.env.node, State: string(state), From: string(from),
		Interfaces: g.cfg.Interfaces(), Addresses: g.cfg.AddressStrings(), Priority: prio}
}

// publish writes the candidate record when etcd does not have the one
// this node wants (planPublish). It returns a wait when it must try again.
func (g *group) publish(ctx context.Context, in Inputs) time.Duration {
	if in.Retiring != "" || !in.Session.Live(in.Now) {
		return 0
	}
	want := in.Self
	want.State, want.Mode = g.stateAndMode()
	if want.State == election.StateInit {
		want.State = election.StateBackup
	}
	plan := planPublish(want, in.Session.ID, in.Session.Relayed, g.rec, in.View)
	if !plan.Write {
		return 0
	}
	if plan.Contested {
		g.log.Error("another process writes this node's candidate record: two vipd share the node name " + g.env.node)
		g.retry.failed(g, in.Now)
	}
	var res election.PublishResult
	w, ok := g.retry.call(g, in.Now, "publish", func() (err error) {
		res, err = g.env.etcd.Publish(ctx, g.cfg.Name, want, in.Session.ID, plan.Expect)
		return err
	})
	if !ok {
		return w
	}
	if !res.Written {
		// The record changed under us: try again against what is there.
		g.log.Debug("candidate record changed in etcd; writing it again", "reason", plan.Reason)
		g.rec.ModRev = res.ModRev
		return retryBase
	}
	g.rec = recordState{Written: want, Lease: in.Session.ID, ModRev: res.ModRev}
	return 0
}

// shutdown runs once ctx is cancelled: VIPs off first (confirmed, or their
// kernel lifetime waited out), then the keys, each tried within the stop
// budget; the lease revoke that follows deletes whatever is left.
func (g *group) shutdown(ctx context.Context) {
	for !g.vips.unbind("group stopping") {
		t := g.env.clk.NewTimer(g.vips.removalWait(retryBase))
		<-t.C()
	}
	// STOP before the resign lets a peer take over (as the VIPs came off
	// before it): a group without addresses holds its MASTER state.
	g.stopped("group stopping")
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.env.timeout)
	defer cancel()
	if c := g.held.Claim; c != nil {
		if err := g.env.etcd.Resign(rctx, *c, !g.held.Fresh); err != nil {
			g.log.Warn("resign on stop failed; the lease revoke or expiry removes the keys", "err", err)
		}
	}
	if g.rec.Lease != 0 {
		if err := g.env.etcd.Unpublish(rctx, g.cfg.Name, g.rec.Lease); err != nil {
			g.log.Warn("candidate record not deleted on stop; it goes with the lease", "err", err)
		}
	}
}

// stopped reports the STOP state and runs the stop hook.
func (g *group) stopped(reason string) {
	g.mu.Lock()
	from, prio := g.state, g.prio
	g.state = election.StateStop
	g.mu.Unlock()
	g.log.Info("state change", "from", from, "to", election.StateStop, "reason", reason)
	g.env.obs.GroupState(g.cfg.Name, election.StateStop, 0, false)
	// keepalived passes the instance's last priority with STOP; the
	// environment says the same as the arguments.
	env := g.hookEnv(election.StateStop, from, prio)
	g.env.hooks.run(g.cfg.Notify.Stop, g.cfg.Notify.Timeout, env)
	g.env.hooks.run(anyHookArgv(g.cfg.Notify.Any, g.cfg.Name, election.StateStop, prio), g.cfg.Notify.Timeout, env)
}

// etcdRetry paces a loop's etcd requests: after a failure, none before
// the backoff (RetryBackoff) has passed, so a thousand groups facing an
// overloaded etcd back off instead of retrying in lockstep.
type etcdRetry struct {
	failures int
	after    time.Time
}

// call runs req unless the loop is backing off. ok is true when req ran
// and succeeded; otherwise wait says when to try again.
func (r *etcdRetry) call(g *group, now time.Time, what string, req func() error) (wait time.Duration, ok bool) {
	if w := r.after.Sub(now); w > 0 {
		return w, false
	}
	if err := req(); err != nil {
		w := r.failed(g, now)
		g.log.Warn(what+" failed", "err", err, "retry_in", w)
		return w, false
	}
	r.failures, r.after = 0, time.Time{}
	return 0, true
}

// failed records a failure and returns the backoff.
func (r *etcdRetry) failed(g *group, now time.Time) time.Duration {
	r.failures++
	w := RetryBackoff(r.failures, g.name)
	r.after = now.Add(w)
	return w
}

// wantMembers is the membership record a claim of this node writes: every
// candidate in the view and this node, with their endpoints. nil (no
// record: a claim deletes the one it finds) when this node does not hold
// under a failsafe, or when no other member has a peer endpoint: such a
// record could never support a failsafe hold (no promise can be had), and
// it would keep out a node that comes back or is added later, were this
// node to die. A group without addresses has no record to write, and so
// no failsafe.
func (g *group) wantMembers(in Inputs) map[string]string {
	if g.env.fs == nil || !g.env.fs.holds || len(in.Addrs) == 0 {
		return nil
	}
	m := membersOf(g.env.node, g.env.peerEndpoint, in.View.Candidates)
	for n, ep := range m {
		if n != g.env.node && ep != "" {
			return m
		}
	}
	return nil
}

// updateMembers keeps the held claim's membership records what this node
// wants (candidates come and go), and learns from the view what etcd holds.
func (g *group) updateMembers(ctx context.Context, in Inputs) {
	c := g.held.Claim
	if g.env.fs == nil || !g.env.fs.holds || c == nil || len(c.Addrs) == 0 || !in.View.Synced || in.View.Rev < c.CreateRev {
		return // (a claim without addresses has no record)
	}
	want := g.wantMembers(in)
	// What the view shows: one record per address, all written together.
	var shown map[string]string
	var shownRev int64
	present, consistent := false, true
	seen := map[netip.Addr]int64{}
	for i, a := range c.Addrs {
		m := in.View.Members[a]
		seen[a] = m.ModRev
		switch {
		case i == 0:
			shown, shownRev, present = m.Nodes, m.ModRev, m.Present()
		case m.ModRev != shownRev || !election.SameNodes(shown, m.Nodes):
			consistent = false
		}
	}
	underClaim := consistent && present && shownRev >= c.CreateRev
	// The view is at least as new as everything this loop knows when it
	// has caught up with the last confirmed write and no pending write can
	// still land (each is guarded by an older ModRevision than the record
	// now has, or none is pending).
	if in.View.Rev >= g.ms.baseRev && (len(g.ms.sent) == 0 || (present && shownRev > g.ms.maxGuard())) {
		g.ms.sent = nil
		if underClaim {
			g.ms.base, g.ms.baseRev, g.ms.ok = shown, shownRev, true
		} else {
			// No record under this claim (deleted, or never written):
			// any node may claim, so no failsafe until one is written.
			g.ms.base, g.ms.baseRev, g.ms.ok = nil, in.View.Rev, false
		}
	}
	if in.Lease.Failsafe {
		// The hold rests on the promises of the set this loop knows; a
		// new record (a member added, or the record deleted) would admit
		// nodes that never promised. Learn only, write once renewals
		// carry the claim again.
		return
	}
	if want == nil && !present && consistent {
		return
	}
	if want != nil && underClaim && election.SameNodes(shown, want) {
		return
	}
	var guard int64
	for _, r := range seen {
		guard = max(guard, r)
	}
	g.ms.sent = append(g.ms.sent, sentMembers{nodes: want, guard: guard})
	// The set a failsafe hold would ask includes this write before it
	// leaves: it may land at any time.
	g.trackClaim()
	written, rev, err := g.env.etcd.WriteMembers(ctx, *c, want, seen)
	switch {
	case err != nil:
		g.log.Debug("membership record not written; the outcome is unknown", "err", err)
	case written:
		g.ms.sent = nil
		g.ms.base, g.ms.baseRev, g.ms.ok = want, rev, want != nil
		g.log.Debug("membership record written", "members", memberNames(want))
	default:
		g.ms.sent = g.ms.sent[:len(g.ms.sent)-1] // not written: etcd's record changed meanwhile
	}
}

// trackClaim shares the held claim, and the member set its failsafe hold
// needs, with groupLease and the node's failsafe part.
func (g *group) trackClaim() {
	c := g.held.Claim
	if c == nil {
		g.ms = membersState{}
		g.fsClaim.Store(nil)
		g.env.fs.setClaim(g.name, nil, 0, nil, g.vips.present())
		return
	}
	if g.ms.claimRev != c.CreateRev {
		g.ms = membersState{claimRev: c.CreateRev}
	}
	var members map[string]string
	if g.held.settled() {
		members = g.ms.union()
	}
	g.fsClaim.Store(&fsClaim{claim: *c, members: members})
	g.env.fs.setClaim(g.name, c.Addrs, c.Lease, members, false)
}
