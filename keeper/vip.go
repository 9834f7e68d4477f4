package keeper

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

// VIPLinks is what a group needs of netif.Handle to put its VIPs on the
// wire and take them off.
type VIPLinks interface {
	Bind(ifname string, p netip.Prefix, goneBy time.Time, o netif.AddrOptions) (netif.Binding, error)
	Extend(ifname string, p netip.Prefix, goneBy time.Time, o netif.AddrOptions) (netif.Binding, error)
	Unbind(ifname string, p netip.Prefix) (removed int, err error)
	ProbeARP(ctx context.Context, ifname string, ips []netip.Addr, wait time.Duration) ([]netif.Conflict, error)
}

// AnnounceFunc sends one announcement round (GARP request + reply, or NA)
// for ip on ifname, each frame only while gate is open.
type AnnounceFunc func(ifname string, ip netip.Addr, gate netif.Gate) error

// vips is one group's VIPs on this host: what is bound, under which lease,
// until when the kernel may keep it, and the announcements. Owned by the
// group loop; only the gate is read by the announcer goroutine.
type vips struct {
	clk      clock.Clock
	log      *slog.Logger
	obs      Observer
	nl       VIPLinks
	announce AnnounceFunc
	lease    leaseSource

	// What may be on the host: bound, or being removed after a failed
	// removal. Empty: provably nothing of ours.
	set map[netip.Prefix]netif.Binding // each address's last bind
	// links is the interface each address of set and maybe was bound on.
	links map[netip.Prefix]string
	// maybe holds addresses a failed bind may have left on the host (or
	// found there: EEXIST, then a failed refresh), with no lifetime known:
	// only a confirmed removal clears them.
	maybe map[netip.Prefix]struct{}
	on    clientv3.LeaseID // the lease whose fence the lifetimes are under
	// removing: a removal failed; the VIPs count as present until removed
	// or until their kernel lifetime has run out.
	removing bool
	// empty: a group without addresses holds, under lease on's fence. It
	// has nothing to put on the host; what it holds is its MASTER state
	// (its notify hooks), which ends with the fence all the same.
	empty bool
	// adopted: the addresses in maybe were handed over by the previous
	// vipd image; the first bind that takes them over announces them.
	adopted bool
	// maybeUntil, if set, is when every address in maybe is certainly
	// gone (their kernel lifetime, with its lag, known from the previous
	// image); zero: unknown, only a confirmed removal clears them.
	maybeUntil time.Time

	// gate is open while the VIPs are bound under a live fence; the
	// announcer checks it before every frame.
	gate atomic.Pointer[gateState]
	ann  announcer
	// mv runs the group's mover while it holds (nil: none). Stopped with
	// the announcements: no provider call outlives the VIPs' hold.
	mv *moverRun
}

type gateState struct {
	lease clientv3.LeaseID
	// until is when the kernel may start removing a VIP (zero for a
	// group without addresses: the lease's fence alone bounds it).
	until time.Time
}

// fence is the mover's gate: while the VIPs are bound (or a group without
// addresses holds) under a live lease, the time by which that hold ends
// unless the lease is renewed: the lease's fence, or the kernel lifetime's
// end if that comes first. open is false otherwise.
func (v *vips) fence() (deadline time.Time, open bool) {
	g := v.gate.Load()
	if g == nil {
		return time.Time{}, false
	}
	l := v.lease.Current()
	now := v.clk.Now()
	if l.ID != g.lease || !l.Live(now) {
		return time.Time{}, false
	}
	deadline = l.Deadline
	if !g.until.IsZero() && g.until.Before(deadline) {
		deadline = g.until
	}
	return deadline, now.Before(deadline)
}

// present reports whether a VIP of ours may be on the host.
func (v *vips) present() bool { return len(v.set) > 0 || len(v.maybe) > 0 }

// bound reports whether VIPs are bound as a holder's (not leftovers being
// removed, nor only addresses a failed bind may have left), or a group
// without addresses holds.
func (v *vips) bound() bool { return (len(v.set) > 0 || v.empty) && !v.removing }

// ends is the latest time a lifetime set runs out.
func (v *vips) ends() time.Time {
	var t time.Time
	for _, b := range v.set {
		t = later(t, b.Ends())
	}
	return t
}

// goneBy is the latest time the kernel may still hold any of the VIPs
// without a refresh.
func (v *vips) goneBy() time.Time {
	var t time.Time
	for _, b := range v.set {
		t = later(t, b.GoneBy())
	}
	return t
}

// expiresFrom is the earliest time the kernel may remove one of the VIPs
// unless refreshed before.
func (v *vips) expiresFrom() time.Time {
	var t time.Time
	for _, b := range v.set {
		if e := b.ExpiresFrom(); t.IsZero() || e.Before(t) {
			t = e
		}
	}
	return t
}

func (v *vips) prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(v.set)+len(v.maybe))
	for p := range v.set {
		out = append(out, p)
	}
	for p := range v.maybe {
		if _, ok := v.set[p]; !ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// open reports whether an announcement frame may leave now: the VIPs are
// bound, the kernel has not begun to remove them, and the fence of the
// lease they are bound under is live. It is the announcer's gate.
func (v *vips) open() bool {
	g := v.gate.Load()
	if g == nil {
		return false
	}
	l := v.lease.Current()
	now := v.clk.Now()
	return l.ID == g.lease && l.Live(now) && now.Before(g.until)
}

// bindOutcome is what bind did.
type bindOutcome int

const (
	bindOK bindOutcome = iota
	// bindTooLate: no safe lifetime is left; nothing new was bound (bound
	// VIPs keep their earlier, still safe, lifetime).
	bindTooLate
	// bindFenced: the fence passed before or during the call; the VIPs
	// were taken off (or are being).
	bindFenced
	// bindFailed: a VIP could not be bound, or old ones removed (netlink
	// error); the loop retries.
	bindFailed
)

// bind makes sure cfg's VIPs are on cfg's interface under lease, with a
// kernel lifetime that ends before the lease can expire at the server.
// dirty forces the full path (an address event touched the VIPs).
func (v *vips) bind(ctx context.Context, cfg config.Group, lease election.Lease, dirty bool) bindOutcome {
	now := v.clk.Now()
	if !lease.Live(now) {
		v.unbind("fence deadline passed before binding")
		return bindFenced
	}
	if v.present() && !v.placedAs(cfg) {
		// A reload changed an interface or a prefix length: the old
		// addresses go first.
		if !v.unbind("interface or prefixes changed by a reload") {
			return bindFailed
		}
	}
	if len(cfg.Prefixes) == 0 {
		if lease.Failsafe {
			// Promises cover addresses; with none, nothing covers this
			// hold (docs/design.md §2.1): no MASTER on them.
			v.unbind("a group without addresses has no failsafe hold")
			return bindFenced
		}
		// Nothing to bind: the claim under a live fence is all there is.
		v.empty, v.on = true, lease.ID
		v.gate.Store(&gateState{lease: lease.ID})
		return bindOK
	}
	v.empty = false
	if v.removing {
		// A removal was pending and the group holds again: bind anew.
		v.removing, dirty = false, true
	}
	end := LifetimeEnd(lease.ServerExpiry)
	lifetime, ok := netif.LifetimeUntil(now, end.Add(-netif.AckAllowance))
	if v.present() && len(v.maybe) == 0 && !dirty && v.on == lease.ID {
		var newEnd time.Time
		if ok {
			newEnd = now.Add(lifetime)
		}
		if !RefreshNeeded(now, v.expiresFrom(), newEnd, lease.ServerExpiry) {
			return bindOK
		}
	}
	if !ok {
		// The renewal came back too late to give the kernel a safe
		// lifetime. Bound addresses keep their earlier (safe) one; new
		// ones wait for the next renewal.
		v.log.Debug("renewal too late for a safe kernel lifetime; not refreshing", "server_expiry_in", lease.ServerExpiry.Sub(now))
		return bindTooLate
	}
	fresh := !v.present()
	if fresh && cfg.GARP.Probe && cfg.Prefixes[0].Addr().Is4() {
		v.probe(ctx, cfg)
		if ctx.Err() != nil {
			return bindTooLate // stopping: do not add a VIP only to remove it
		}
	}
	scope, err := netif.ParseScope(cfg.Scope)
	if err != nil {
		v.log.Error("bad scope; binding with the default", "err", err)
	}
	opts := netif.AddrOptions{Label: cfg.Label, Scope: scope}
	refresh := len(v.set) > 0 && len(v.maybe) == 0 && !dirty && v.on == lease.ID
	out, added := bindOK, false
	for i, p := range cfg.Prefixes {
		link := linkOf(cfg, i)
		var b netif.Binding
		var err error
		if refresh {
			// A lifetime refresh of addresses we know are bound: one
			// request each. Had the kernel dropped one, its address
			// event marks the group dirty and the full path runs.
			b, err = v.nl.Extend(link, p, end, opts)
		} else {
			b, err = v.nl.Bind(link, p, end, opts)
		}
		switch {
		case errors.Is(err, netif.ErrLifetimeTooShort):
			// A stall between the check above and the request: no safe
			// lifetime left now.
			out = max(out, bindTooLate)
			continue
		case err != nil:
			v.log.Error("cannot bind VIP", "address", p, "interface", link, "err", err)
			out = bindFailed
			// It may be on the host all the same: removing it must be
			// confirmed before anything counts as released.
			if _, known := v.set[p]; !known {
				if v.maybe == nil {
					v.maybe = map[netip.Prefix]struct{}{}
				}
				v.maybe[p] = struct{}{}
				v.maybeUntil = time.Time{} // this one's lifetime is unknown
				v.placeOn(p, link)
			}
			continue
		}
		// Record what is on the host at once, so whatever happens next
		// still removes it.
		if v.set == nil {
			v.set = map[netip.Prefix]netif.Binding{}
		}
		v.on, v.set[p] = lease.ID, b
		v.placeOn(p, link)
		delete(v.maybe, p)
		added = added || b.Added || v.adopted
	}
	if fc := v.fenceCheck(); fc != bindOK {
		return fc
	}
	if !v.present() {
		return out
	}
	if fresh || added {
		v.log.Info("VIP bound", "addresses", placed(cfg.Prefixes, linksOfCfg(cfg)), "lifetime", lifetime)
	}
	v.gate.Store(&gateState{lease: v.on, until: v.expiresFrom()})
	if added {
		v.startAnnouncing(cfg)
	}
	if len(v.maybe) == 0 {
		v.adopted = false
	}
	return out
}

// fenceCheck runs after the netlink requests return: a stall inside them
// may have let the fence pass, or set a lifetime that runs past
// LifetimeEnd (counted from the request's end, it outlasts what peers
// allow for). Either way the VIPs come off at once.
func (v *vips) fenceCheck() bindOutcome {
	// (A group without addresses makes no request: bind's own check at
	// its start is the last word.)
	if len(v.set) == 0 {
		return bindOK // nothing bound under a known lifetime
	}
	now := v.clk.Now()
	l := v.lease.Current()
	switch {
	case l.ID != v.on || !l.Live(now):
		v.unbind("fence deadline passed during the bind")
		return bindFenced
	case v.ends().After(LifetimeEnd(l.ServerExpiry)):
		v.unbind("the kernel lifetime set runs too long (the bind stalled)")
		return bindFenced
	}
	return bindOK
}

// unbind takes every VIP off the host: announcements stop, then each
// address is removed and confirmed gone (netif's Unbind looks on every
// link). It reports true once nothing of ours can be left: every removal
// confirmed, or the kernel lifetime set last certainly run out. Until
// then the VIPs count as present and the group must not delete its keys.
func (v *vips) unbind(reason string) bool {
	v.gate.Store(nil)
	v.ann.stop()
	// The mover's call in flight is cut now, and waited for once the
	// addresses are off: none is left when unbind returns (the resign,
	// which lets the next holder assert, comes after).
	v.mv.halt()
	defer v.mv.stop()
	if v.empty {
		v.empty, v.on = false, 0
	}
	if !v.present() {
		return true
	}
	ps := v.prefixes()
	links := v.linksOf(ps)
	removed := 0
	for i, p := range ps {
		n, err := v.nl.Unbind(links[i], p)
		if err != nil {
			v.log.Error("cannot remove VIP", "address", p, "interface", links[i], "err", err)
			continue
		}
		removed += n
		delete(v.set, p)
		delete(v.maybe, p)
		delete(v.links, p)
	}
	switch {
	case !v.present():
		v.log.Info("VIP removed", "addresses", placed(ps, links), "reason", reason, "removed", removed)
	case !v.certainlyGoneBy().IsZero() && !v.clk.Now().Before(v.certainlyGoneBy()):
		left := v.prefixes()
		v.log.Warn("VIP removal not confirmed, but its kernel lifetime has run out: it is gone", "addresses", placed(left, v.linksOf(left)))
		clear(v.set)
		clear(v.maybe)
		clear(v.links)
		v.maybeUntil = time.Time{}
	default:
		v.removing = true
		return false
	}
	v.on, v.removing = 0, false
	return true
}

// placeOn records that p was (or may have been) bound on link.
func (v *vips) placeOn(p netip.Prefix, link string) {
	if v.links == nil {
		v.links = map[netip.Prefix]string{}
	}
	v.links[p] = link
}

// linksOf returns the interface each of ps was bound on.
func (v *vips) linksOf(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = v.links[p]
	}
	return out
}

// placedAs reports whether what may be on the host is exactly cfg's
// addresses, each on its configured interface.
func (v *vips) placedAs(cfg config.Group) bool {
	ps := v.prefixes()
	if len(ps) != len(cfg.Prefixes) {
		return false
	}
	for i, p := range cfg.Prefixes {
		if !slices.Contains(ps, p) || v.links[p] != linkOf(cfg, i) {
			return false
		}
	}
	return true
}

// removeStray removes cfg's VIPs from the host where the group holds
// nothing: an address added by hand, or left by a crash. It reports
// whether they are provably gone; a failure is retried by the caller.
func (v *vips) removeStray(cfg config.Group) bool {
	ok := true
	for i, p := range cfg.Prefixes {
		if n, err := v.nl.Unbind(linkOf(cfg, i), p); err != nil {
			v.log.Error("cannot remove a VIP this node does not hold", "address", p, "interface", linkOf(cfg, i), "err", err)
			ok = false
		} else if n > 0 {
			v.log.Warn("removed a VIP this node does not hold", "address", p, "interface", linkOf(cfg, i))
		}
	}
	return ok
}

// certainlyGoneBy is when everything that may be on the host is certainly
// gone by its kernel lifetime; zero if that is unknown (an address a
// failed bind may have left).
func (v *vips) certainlyGoneBy() time.Time {
	if len(v.maybe) > 0 {
		if v.maybeUntil.IsZero() {
			return time.Time{}
		}
		return later(v.goneBy(), v.maybeUntil)
	}
	return v.goneBy()
}

// removalWait is how long to wait before retrying a failed removal: the
// backoff, but never past the moment the kernel lifetime runs out (then
// the VIP is gone by itself).
func (v *vips) removalWait(backoff time.Duration) time.Duration {
	if left := v.certainlyGoneBy().Sub(v.clk.Now()); left > 0 && left < backoff {
		return left
	}
	return backoff
}

// probe sends RFC 5227 ARP probes for the group's VIPs before the first
// bind (garp.probe). A conflict is logged and counted, and the VIP is
// bound anyway: etcd made this node the holder, and refusing would turn a
// stray host into an outage (netif's doc.go has the policy).
func (v *vips) probe(ctx context.Context, cfg config.Group) {
	// One probe per interface, for the addresses on it, all at once: the
	// wait counts against the failover time and against the lifetime the
	// bind that follows can still set, so probing interface after
	// interface would add up (and could leave no lifetime at all).
	var wg sync.WaitGroup
	for _, link := range cfg.Interfaces() {
		var ips []netip.Addr
		for i, p := range cfg.Prefixes {
			if linkOf(cfg, i) == link {
				ips = append(ips, p.Addr())
			}
		}
		if len(ips) == 0 {
			continue
		}
		wg.Go(func() {
			conflicts, err := v.nl.ProbeARP(ctx, link, ips, cfg.GARP.ProbeWait)
			if err != nil {
				v.log.Warn("ARP probe failed; binding without it", "interface", link, "err", err)
			}
			for _, c := range conflicts {
				v.log.Warn("address conflict: another host answers for a VIP; binding it anyway because etcd made this node the holder, remove the stray address",
					"address", c.IP, "other_mac", c.MAC.String(), "other_probing", c.Probing, "interface", link)
				v.obs.Conflict(cfg.Name)
			}
		})
	}
	wg.Wait()
}

// startAnnouncing starts the group's GARP/NA schedule, replacing a running
// one: the burst, then the refresh while the group holds.
func (v *vips) startAnnouncing(cfg config.Group) {
	if v.announce == nil {
		return
	}
	v.ann.start(func(ctx context.Context) {
		// One round: every VIP of the group; the metric counts each
		// successful per-address send. A closed gate ends the round
		// quietly: the loop is about to stop the schedule.
		round := func() error {
			var first error
			for i, p := range cfg.Prefixes {
				err := v.announce(linkOf(cfg, i), p.Addr(), v.open)
				switch {
				case errors.Is(err, netif.ErrGateClosed):
					return err
				case err != nil:
					first = cmpOr(first, err)
				default:
					v.obs.Announced(cfg.Name, p.Addr())
				}
			}
			if first != nil && ctx.Err() == nil {
				v.log.Warn("announcement failed", "err", first)
			}
			return first
		}
		_, _ = netif.Schedule(ctx, v.clk, cfg.GARP.Count, cfg.GARP.Interval, cfg.GARP.Refresh, round)
	})
}

// announcer runs one announcement schedule at a time.
type announcer struct {
	cancel context.CancelFunc
	wg     *sync.WaitGroup
}

func (a *announcer) start(run func(ctx context.Context)) {
	a.stop()
	ctx, cancel := context.WithCancel(context.Background())
	wg := &sync.WaitGroup{}
	a.cancel, a.wg = cancel, wg
	wg.Go(func() { run(ctx) })
}

// stop ends the running schedule and waits for it.
func (a *announcer) stop() {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
		a.cancel, a.wg = nil, nil
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// linksOfCfg is linkOf for every address of cfg.
func linksOfCfg(cfg config.Group) []string {
	out := make([]string, len(cfg.Prefixes))
	for i := range cfg.Prefixes {
		out[i] = linkOf(cfg, i)
	}
	return out
}

// linkOf is the interface of cfg's i-th address: Links[i], or the group's
// interface for a config built without Links (Validate fills them; a
// config made in code may not).
func linkOf(cfg config.Group, i int) string {
	if i < len(cfg.Links) {
		return cfg.Links[i]
	}
	return cfg.Interface
}

// placed renders addresses with their interfaces for the log:
// "192.168.20.15/24 on eth0".
func placed(ps []netip.Prefix, links []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String() + " on " + links[i]
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
