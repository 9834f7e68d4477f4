package keeper

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/netif"
)

// retryDelay paces retries of failed etcd writes inside a group loop.
const retryDelay = 100 * time.Millisecond

// group is one group's reconcile loop. Fields after the blank line are
// owned by the loop goroutine.
type group struct {
	k      *Keeper
	name   string
	log    *slog.Logger
	wake   chan struct{}
	dirty  atomic.Bool // an address event touched our VIPs: re-check them
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	shared    config.Group // latest config, set by update
	state     string       // last reported state, read by Ready/Summary
	heartbeat time.Time

	cfg             config.Group // the loop's copy of shared
	claim           *election.Claim
	lapsed          bool
	bound           bool
	boundRenewal    time.Time // lease renewal the bound lifetime was computed from
	kernelUntil     time.Time // when the kernel lifetime set last ends
	acquireVacancy  time.Time // vacancy start of an acquire in progress, for the metric
	vacantSince     time.Time
	challenger      string
	challengerSince time.Time
	yieldedTo       string    // node we last yielded to by preemption
	yieldedAt       time.Time // when
	snubbed         string    // node not to yield to again until snubUntil
	snubUntil       time.Time
	published       election.Candidate
	publishedLease  int64
	publishRetry    bool
	etcdFailures    int       // consecutive failed etcd requests of this loop
	etcdAfter       time.Time // no etcd request before this (backoff)
	stopAnnounce    context.CancelFunc
	announceWG      sync.WaitGroup
}

func newGroup(k *Keeper, gc config.Group, cancel context.CancelFunc) *group {
	return &group{
		k: k, name: gc.Name, log: k.log.With("group", gc.Name),
		wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		shared: gc, cfg: gc, heartbeat: k.clk.Now(),
	}
}

// update hands the loop a new configuration with the same addresses.
func (g *group) update(gc config.Group) {
	g.mu.Lock()
	g.shared = gc
	g.mu.Unlock()
	g.poke()
}

func (g *group) config() config.Group {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shared
}

func (g *group) iface() string { return g.config().Interface }

func (g *group) ownsAddr(a netip.Addr) bool {
	return slices.ContainsFunc(g.config().Prefixes, func(p netip.Prefix) bool { return p.Addr() == a })
}

func (g *group) tracks(check string) bool {
	return slices.ContainsFunc(g.config().Track, func(t config.Track) bool { return t.Check == check })
}

func (g *group) currentState() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

func (g *group) lastLoop() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heartbeat
}

func (g *group) snubbedAt(now time.Time) string {
	if now.Before(g.snubUntil) {
		return g.snubbed
	}
	return ""
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

func (g *group) run(ctx context.Context) {
	timer := g.k.clk.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		// Take the change channel before reading the lease, so a renewal
		// that lands in between still wakes us.
		leaseChanged := g.k.session.Changed()
		g.mu.Lock()
		g.cfg = g.shared
		g.heartbeat = g.k.clk.Now()
		g.mu.Unlock()
		wake := g.reconcile(ctx)
		if wake <= 0 || wake > maxSleep {
			wake = maxSleep
		}
		timer.Reset(wake)
		if !g.caresAboutRenewals() {
			leaseChanged = nil // a standby on a live lease: renewals change nothing
		}
		select {
		case <-ctx.Done():
			g.shutdown(ctx)
			return
		case <-g.wake:
		case <-leaseChanged:
		case <-timer.C():
		}
	}
}

// caresAboutRenewals reports whether a lease renewal can change what this
// loop does: a holder refreshes lifetimes and moves its fence; a group
// without a live lease, or whose candidate record is on another lease,
// waits for one. A standby on a live, published lease does not, and with
// many groups waking every standby on every renewal is most of the work.
func (g *group) caresAboutRenewals() bool {
	l := g.k.session.Current()
	return g.claim != nil || g.bound || !l.Live(g.k.clk.Now()) || int64(l.ID) != g.publishedLease
}

// inputs gathers everything Decide needs.
func (g *group) inputs() Inputs {
	now := g.k.clk.Now()
	prio, fault, failing, ready := g.k.health(g.cfg)
	self := election.Candidate{Node: g.k.node, Priority: prio, Preempt: g.cfg.Preempt, PreemptDelay: g.cfg.PreemptDelay,
		Failing: failing, State: election.StateBackup,
		Drained: g.k.view.Drained(g.k.node)}
	switch {
	case fault:
		self.State = election.StateFault
	case g.bound:
		self.State = election.StateMaster
	}
	view := g.k.view.Group(g.cfg.Name)

	if view.Leader.Present && view.Leader.Node == g.yieldedTo {
		g.yieldedTo = "" // it took over, as it should
	}
	if view.Synced && !view.Leader.Present {
		if g.vacantSince.IsZero() {
			g.vacantSince = now
		}
	} else {
		g.vacantSince = time.Time{}
	}
	if ch, ok := election.Challenger(self, view.Candidates); ok {
		if ch.Node != g.challenger {
			g.challenger, g.challengerSince = ch.Node, now
		}
	} else {
		g.challenger, g.challengerSince = "", time.Time{}
	}

	lease := g.k.session.Current()
	var betterWonAt time.Time
	selfVisible := false
	for _, c := range view.Candidates {
		if c.Node == self.Node && c.Lease == int64(lease.ID) {
			selfVisible = true
		}
		if c.Node != self.Node && c.Eligible() && election.Better(c, self) {
			if t := g.k.view.LastWin(c.Node); t.After(betterWonAt) {
				betterWonAt = t
			}
		}
	}

	return Inputs{
		Now:             now,
		BetterWonAt:     betterWonAt,
		SelfVisible:     selfVisible,
		Lease:           lease,
		Self:            self,
		Ready:           ready,
		View:            view,
		Claim:           g.claim,
		Lapsed:          g.lapsed,
		VacantSince:     g.vacantSince,
		ChallengerSince: g.challengerSince,
		Snubbed:         g.snubbedAt(now),
		BackoffStep:     g.cfg.BackoffStep,
	}
}

// reconcile decides and applies until the decision is stable, and returns
// when to look again.
func (g *group) reconcile(ctx context.Context) time.Duration {
	for range 4 {
		in := g.inputs()
		d := Decide(in)
		again, wake := g.apply(ctx, in, d)
		g.transition(d, in.Self.Priority)
		if wake2 := g.publish(ctx, in); wake2 > 0 && (wake <= 0 || wake2 < wake) {
			wake = wake2
		}
		if !again {
			return wake
		}
	}
	return retryDelay
}

// apply carries out d. again asks for an immediate new decision.
func (g *group) apply(ctx context.Context, in Inputs, d Decision) (again bool, wake time.Duration) {
	switch d.Action {
	case Idle:
		g.unbind(d.Reason)
		return false, d.Wake
	case Acquire:
		if wait := g.etcdAfter.Sub(in.Now); wait > 0 {
			return false, wait
		}
		claim, won, holder, err := g.k.lead.Acquire(ctx, g.cfg.Name, in.Lease.ID)
		if err != nil {
			wait := g.etcdFailed(in.Now)
			g.log.Warn("acquire failed", "err", err, "retry_in", wait)
			return false, wait
		}
		g.etcdFailures = 0
		if !won {
			g.log.Debug("acquire lost the race", "holder", holder)
			return false, retryDelay
		}
		g.claim, g.lapsed = &claim, false
		g.acquireVacancy = in.VacantSince
		// We yielded to a node that then did not take over: its record is
		// stale (dead or cut off). Do not yield to it again until its
		// lease must have expired.
		if g.yieldedTo != "" && in.Now.Sub(g.yieldedAt) < g.k.session.Config().TTL {
			g.snubbed, g.snubUntil = g.yieldedTo, in.Now.Add(g.k.session.Config().TTL)
			g.log.Warn("node we yielded to did not take over; not yielding to it again for a lease TTL", "node", g.yieldedTo)
		}
		g.yieldedTo = ""
		g.log.Info("won leadership", "rev", claim.CreateRev, "reason", d.Reason)
		return true, 0
	case Verify:
		c := election.Claim{Group: g.cfg.Name, CreateRev: in.View.Leader.CreateRev, Lease: in.Lease.ID}
		if g.claim != nil {
			c = *g.claim
		}
		if wait := g.etcdAfter.Sub(in.Now); wait > 0 {
			return false, wait
		}
		ok, err := g.k.lead.Verify(ctx, c)
		if err != nil {
			wait := g.etcdFailed(in.Now)
			g.log.Warn("verify failed", "err", err, "retry_in", wait)
			return false, wait
		}
		g.etcdFailures = 0
		if !ok {
			g.claim, g.lapsed = nil, false
			return true, 0
		}
		g.claim, g.lapsed = &c, false
		return true, 0
	case Hold:
		if !g.bind(ctx, in) {
			return true, 0 // the fence is too close: decide again (drops)
		}
		// Come back before the lifetime set last runs out, or for the last
		// safe refresh, in case the next renewal is late.
		if next := NextRefresh(g.k.clk.Now(), in.Lease.ServerExpiry, g.kernelUntil); next > 0 && next < d.Wake {
			return false, next
		}
		return false, d.Wake
	case Drop:
		g.unbind(d.Reason)
		g.lapsed = true
		return false, retryDelay
	case Lost:
		g.unbind(d.Reason)
		g.claim, g.lapsed = nil, false
		return true, 0
	case Release:
		g.unbind(d.Reason)
		g.resign(ctx)
		if d.YieldTo != "" {
			g.yieldedTo, g.yieldedAt = d.YieldTo, in.Now
		}
		return true, 0
	}
	return false, 0
}

// bind makes sure every VIP is on the interface with a kernel lifetime that
// ends before the fence. It reports false if the fence is too close to bind.
func (g *group) bind(ctx context.Context, in Inputs) bool {
	// Re-read the clock: a stall between deciding and binding must not
	// let a stale decision add an address after the fence.
	now := g.k.clk.Now()
	lifetime, lifetimeOK := election.KernelLifetime(now, in.Lease.ServerExpiry)
	extends := lifetimeOK && now.Add(lifetime).After(g.kernelUntil.Add(250*time.Millisecond))
	if g.bound && !g.dirty.Load() && (in.Lease.Renewed.Equal(g.boundRenewal) && !extends) {
		return true
	}
	dirty := g.dirty.Swap(false)
	if !in.Lease.Live(now) {
		g.unbind("fence deadline passed while binding")
		g.lapsed = true
		return false
	}
	if !g.bound && g.cfg.GARP.Probe && len(g.cfg.Prefixes) > 0 && g.cfg.Prefixes[0].Addr().Is4() {
		g.probe(ctx)
		if ctx.Err() != nil {
			return true // stopping: do not add a VIP only to remove it
		}
		// The probe took time: the fence may have come closer.
		now = g.k.clk.Now()
		lifetime, lifetimeOK = election.KernelLifetime(now, in.Lease.ServerExpiry)
		if !in.Lease.Live(now) {
			g.unbind("fence deadline passed while probing")
			g.lapsed = true
			return false
		}
	}
	if !lifetimeOK {
		// The renewal came back too late to give the kernel a safe
		// lifetime. Bound addresses keep their earlier (safe) one; new
		// ones wait for the next renewal.
		g.log.Debug("renewal too late for a safe kernel lifetime; not refreshing", "server_expiry_in", in.Lease.ServerExpiry.Sub(now))
		return true
	}
	// Label and scope: IPv4 groups only (config validation enforces it).
	scope, err := netif.ParseScope(g.cfg.Scope)
	if err != nil {
		g.log.Error("bad scope; binding with the default", "err", err)
	}
	opts := netif.AddrOptions{Label: g.cfg.Label, Scope: scope}
	if g.bound && !dirty {
		// A lifetime refresh of addresses we know are bound: one request
		// each. Had the kernel dropped one, its address event marks the
		// group dirty and the full path below runs.
		for _, p := range g.cfg.Prefixes {
			if err := g.k.opt.Ifaces.Refresh(g.cfg.Interface, p, lifetime, opts); err != nil {
				g.log.Error("cannot refresh VIP", "address", p, "interface", g.cfg.Interface, "err", err)
				g.dirty.Store(true)
			}
		}
		g.boundRenewal, g.kernelUntil = in.Lease.Renewed, now.Add(lifetime)
		return true
	}
	added := false
	for _, p := range g.cfg.Prefixes {
		a, err := g.k.opt.Ifaces.ReplaceWith(g.cfg.Interface, p, lifetime, opts)
		if err != nil {
			g.log.Error("cannot bind VIP", "address", p, "interface", g.cfg.Interface, "err", err)
			continue
		}
		added = added || a
	}
	if !g.bound || added {
		g.log.Info("VIP bound", "addresses", g.cfg.Addresses, "interface", g.cfg.Interface, "lifetime", lifetime)
	}
	g.bound, g.boundRenewal, g.kernelUntil = true, in.Lease.Renewed, now.Add(lifetime)
	if added {
		if !g.acquireVacancy.IsZero() {
			g.k.obs.Acquired(g.cfg.Name, g.k.clk.Now().Sub(g.acquireVacancy))
			g.acquireVacancy = time.Time{}
		}
		g.announce()
	}
	return true
}

// probe sends RFC 5227 ARP probes for the group's VIPs before the first
// bind (garp.probe). A conflict is logged and counted, and the VIP is
// bound anyway: etcd made this node the holder, and refusing would turn a
// stray host into an outage (netif's doc.go has the policy).
func (g *group) probe(ctx context.Context) {
	ips := make([]netip.Addr, 0, len(g.cfg.Prefixes))
	for _, p := range g.cfg.Prefixes {
		ips = append(ips, p.Addr())
	}
	conflicts, err := g.k.opt.Ifaces.ProbeARP(ctx, g.cfg.Interface, ips, g.cfg.GARP.ProbeWait)
	if err != nil {
		g.log.Warn("ARP probe failed; binding without it", "interface", g.cfg.Interface, "err", err)
	}
	for _, c := range conflicts {
		g.log.Warn("address conflict: another host answers for a VIP; binding it anyway because etcd made this node the holder, remove the stray address",
			"address", c.IP, "other_mac", c.MAC.String(), "other_probing", c.Probing, "interface", g.cfg.Interface)
		g.k.obs.Conflict(g.cfg.Name)
	}
}

// unbind removes every VIP of the group if it may be bound.
func (g *group) unbind(reason string) {
	if !g.bound && !g.dirty.Load() {
		return
	}
	g.dirty.Store(false)
	g.cancelAnnounce()
	removed := 0
	for _, p := range g.cfg.Prefixes {
		ok, err := g.k.opt.Ifaces.Remove(g.cfg.Interface, p)
		if err != nil {
			g.log.Error("cannot remove VIP", "address", p, "err", err)
			g.dirty.Store(true) // try again next pass
			continue
		}
		if ok {
			removed++
		}
	}
	if g.bound || removed > 0 {
		g.log.Info("VIP removed", "addresses", g.cfg.Addresses, "interface", g.cfg.Interface, "reason", reason)
	}
	g.bound = false
}

func (g *group) resign(ctx context.Context) {
	if g.claim == nil {
		return
	}
	c := *g.claim
	g.claim, g.lapsed = nil, false
	if err := g.k.lead.Resign(ctx, c); err != nil {
		g.log.Warn("resign failed; the key expires with the lease", "err", err)
	}
}

// announce starts a GARP/NA burst (and the optional refresh) for the
// group's VIPs, replacing any running one.
func (g *group) announce() {
	if g.k.opt.Announce == nil {
		return
	}
	g.cancelAnnounce()
	cfg := g.cfg // the goroutine must not read the loop's fields
	ctx, cancel := context.WithCancel(context.Background())
	g.stopAnnounce = cancel
	g.announceWG.Add(1)
	go func() {
		defer g.announceWG.Done()
		// One round: every VIP of the group; the metric counts each
		// successful per-address send. A failing round is logged and the
		// schedule keeps going.
		round := func() error {
			var first error
			for _, p := range cfg.Prefixes {
				if err := g.k.opt.Announce(cfg.Interface, p.Addr()); err != nil {
					if first == nil {
						first = err
					}
					continue
				}
				g.k.obs.Announced(cfg.Name, p.Addr())
			}
			if first != nil && ctx.Err() == nil {
				g.log.Warn("announcement failed", "err", first)
			}
			return first
		}
		// The burst, then the refresh while we hold (until cancelAnnounce).
		_, _ = netif.Schedule(ctx, g.k.clk, cfg.GARP.Count, cfg.GARP.Interval, cfg.GARP.Refresh, round)
	}()
}

func (g *group) cancelAnnounce() {
	if g.stopAnnounce != nil {
		g.stopAnnounce()
		g.stopAnnounce = nil
		g.announceWG.Wait()
	}
}

// transition logs and reports a state change, and runs its notify hook.
func (g *group) transition(d Decision, prio int) {
	state := d.State
	switch {
	case g.bound:
		state = election.StateMaster
	case state == election.StateMaster:
		state = election.StateBackup // won, but not bound yet
	}
	g.k.obs.GroupState(g.cfg.Name, state, prio, g.bound)
	g.mu.Lock()
	from := g.state
	g.state = state
	g.mu.Unlock()
	if state == from {
		return
	}
	g.log.Info("state change", "from", orInit(from), "to", state, "reason", d.Reason, "priority", prio)
	g.k.obs.Transition(g.cfg.Name, state)
	hook := map[string][]string{
		election.StateMaster: g.cfg.Notify.Master,
		election.StateBackup: g.cfg.Notify.Backup,
		election.StateFault:  g.cfg.Notify.Fault,
	}[state]
	g.k.notify.run(hook, g.cfg.Notify.Timeout, g.hookEnv(state, orInit(from), prio))
}

func (g *group) hookEnv(state, from string, prio int) hookEnv {
	return hookEnv{Group: g.cfg.Name, Node: g.k.node, State: state, From: from,
		Interface: g.cfg.Interface, Addresses: g.cfg.Addresses, Priority: prio}
}

func orInit(s string) string {
	if s == "" {
		return "INIT"
	}
	return s
}

// publish writes the candidate record when it changed. It returns a retry
// delay if the write failed.
func (g *group) publish(ctx context.Context, in Inputs) time.Duration {
	if !in.Lease.Live(in.Now) {
		return 0
	}
	c := in.Self
	c.State = g.currentState()
	if c.State == "" {
		c.State = election.StateBackup
	}
	if !g.publishRetry && int64(in.Lease.ID) == g.publishedLease && candidateEqual(c, g.published) {
		return 0
	}
	if wait := g.etcdAfter.Sub(in.Now); wait > 0 {
		return wait // backing off after failures
	}
	if err := g.k.lead.Publish(ctx, g.cfg.Name, c, in.Lease.ID); err != nil {
		wait := g.etcdFailed(in.Now)
		g.publishRetry = true
		g.log.Warn("candidate record not published", "err", err, "retry_in", wait)
		return wait
	}
	g.published, g.publishedLease, g.publishRetry = c, int64(in.Lease.ID), false
	g.etcdFailures = 0
	return 0
}

// etcdFailed records a failed etcd request and returns how long this
// loop waits before its next one (RetryBackoff), so a thousand groups
// facing an overloaded etcd back off instead of retrying in lockstep.
func (g *group) etcdFailed(now time.Time) time.Duration {
	g.etcdFailures++
	wait := RetryBackoff(g.etcdFailures, g.cfg.Name)
	g.etcdAfter = now.Add(wait)
	return wait
}

func candidateEqual(a, b election.Candidate) bool {
	return a.Node == b.Node && a.Priority == b.Priority && a.State == b.State && a.Preempt == b.Preempt &&
		a.PreemptDelay == b.PreemptDelay && a.Drained == b.Drained && slices.Equal(a.Failing, b.Failing)
}

// shutdown runs once ctx is cancelled: VIPs off first, then the key.
func (g *group) shutdown(ctx context.Context) {
	g.unbind("group stopping")
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.k.lead.RequestTimeout)
	defer cancel()
	g.resign(rctx)
	from := g.currentState()
	g.log.Info("state change", "from", orInit(from), "to", "STOP", "reason", "group stopping")
	g.k.obs.GroupState(g.cfg.Name, "STOP", 0, false)
	g.k.notify.run(g.cfg.Notify.Stop, g.cfg.Notify.Timeout, g.hookEnv("STOP", orInit(from), 0))
}
