package keeper

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
)

// A re-execution in place (`systemctl reload vipd`, docs/design.md §2.10)
// replaces the vipd image without stopping the node: the running image
// detaches (every group loop ends without removing its VIPs or resigning,
// the lease is not revoked) and hands the next image a Handoff. The next
// image trusts it only as far as etcd confirms it: it renews the lease
// itself before any group loop runs, and re-reads every claim (a handed-
// over claim is "lapsed": Inspect, then Hold). Until then the VIPs stay
// on the host under the kernel lifetimes the previous image set, which end
// before its last renewal's server expiry: nothing rests on the handoff
// that the kernel does not bound.

// Handoff is what one vipd image leaves the next.
type Handoff struct {
	Node  string `json:"node"`
	Lease int64  `json:"lease"`
	// Prefix and TTL are the etcd prefix and lease TTL the lease and keys
	// were made with: the next image adopts nothing made with others.
	Prefix string        `json:"prefix"`
	TTL    time.Duration `json:"ttl"`
	// Failsafe: the membership records were kept for failsafe holds
	// (§2.9); a next image without the failsafe adopts none of it.
	Failsafe bool `json:"failsafe"`
	// MonoAt is CLOCK_MONOTONIC when it was made; the durations below
	// count from then. The next image subtracts the time since: one older
	// than the lease TTL describes a lease that has expired.
	MonoAt time.Duration `json:"mono_at"`
	// FenceIn is how long the lease's fence had left (the next image
	// waits for its own renewal no longer than that).
	FenceIn time.Duration `json:"fence_in"`
	// StartWaitIn is how long the start-up wait had left (§2.9: nothing
	// claimed for a lease TTL after a start), so that the next image goes
	// on with it instead of starting a new one. nil (an image without the
	// peer channel, or one older than the field): the next image waits a
	// TTL, as after any start.
	StartWaitIn *time.Duration `json:"start_wait_in,omitempty"`
	// Made is the wall-clock time it was made, for the log.
	Made time.Time `json:"made"`
	// Checks are the check states, so the next image's checks start where
	// these left off (checks.WithKnown).
	Checks map[string]HandoffCheck `json:"checks,omitempty"`
	Groups []HandoffGroup          `json:"groups"`
}

// HandoffCheck is one check's state.
type HandoffCheck struct {
	Up     bool `json:"up"`
	Value  int  `json:"value,omitempty"`
	Valued bool `json:"valued,omitempty"`
}

// HandoffGroup is one group's part of a Handoff.
type HandoffGroup struct {
	Name string `json:"name"`
	// State and Mode are the last reported (so the next image runs no
	// notify hook for a state that did not change).
	State string `json:"state,omitempty"`
	Mode  string `json:"mode,omitempty"`
	// The claim held, if any (Rev 0: none).
	Rev   int64        `json:"rev,omitempty"`
	Lease int64        `json:"lease,omitempty"`
	Addrs []netip.Addr `json:"addrs,omitempty"`
	// Bound: the claim's VIPs were bound under it (its wait for the
	// vacancy it replaced was over), and it was not being released.
	Bound bool `json:"bound,omitempty"`
	// Resigning: a resign of the claim was sent and may still land; the
	// claim must never be held again.
	Resigning bool `json:"resigning,omitempty"`
	// Present is every address of the group that may be on the host;
	// GoneByIn, if positive, is how long they may stay there at most (the
	// kernel lifetime set last, with its lag), from Handoff.MonoAt.
	Present  []PlacedAddr  `json:"present,omitempty"`
	GoneByIn time.Duration `json:"gone_by_in,omitempty"`
	// Members is the claim's membership record as the loop knew it,
	// writes whose outcome is unknown included (docs/design.md §2.9).
	Members *HandoffMembers `json:"members,omitempty"`
	// Notify are the group's hooks, for a group the next configuration
	// no longer has (it runs them as it retires).
	Notify config.Notify `json:"notify"`
}

// HandoffMembers is a membersState.
type HandoffMembers struct {
	ClaimRev int64             `json:"claim_rev"`
	Base     map[string]string `json:"base,omitempty"`
	BaseRev  int64             `json:"base_rev"`
	OK       bool              `json:"ok"`
	Sent     []HandoffSent     `json:"sent,omitempty"`
}

// HandoffSent is a membership write whose outcome is unknown.
type HandoffSent struct {
	Nodes map[string]string `json:"nodes"` // nil: the record deleted
	Guard int64             `json:"guard"`
}

// PlacedAddr is an address and the interface it was bound on.
type PlacedAddr struct {
	Prefix netip.Prefix `json:"prefix"`
	Link   string       `json:"link"`
}

// ErrCannotDetach is returned by Keeper.CanDetach when handing over now
// could not keep the VIPs.
var ErrCannotDetach = errors.New("keeper: cannot re-execute in place now")

// usable reports whether h may be adopted by node, with keys under prefix
// and leases of ttl, mono (CLOCK_MONOTONIC) being now: it names the node,
// a lease made with the same prefix and TTL, and is young enough for that
// lease to be alive.
func (h *Handoff) usable(node, prefix string, ttl time.Duration, failsafe bool, mono time.Duration) error {
	switch {
	case h == nil:
		return errors.New("none")
	case h.Node != node:
		return fmt.Errorf("made by node %q, this is %q", h.Node, node)
	case h.Lease == 0:
		return errors.New("no lease")
	case h.Prefix != prefix || h.TTL != ttl:
		return fmt.Errorf("made with etcd.prefix %q and etcd.lease_ttl %v, this configuration has %q and %v", h.Prefix, h.TTL, prefix, ttl)
	case h.Failsafe != failsafe:
		return fmt.Errorf("made with the failsafe %v, this configuration has it %v", onOff(h.Failsafe), onOff(failsafe))
	case mono <= 0 || h.MonoAt <= 0:
		return errors.New("no monotonic clock to tell its age")
	case mono < h.MonoAt || mono-h.MonoAt > ttl:
		return fmt.Errorf("made %v ago, more than a lease TTL (%v)", (mono - h.MonoAt).Round(time.Millisecond), ttl)
	}
	return nil
}

// aged returns h with its durations counted from now: elapsed since it
// was made is subtracted.
func (h Handoff) aged(elapsed time.Duration) *Handoff {
	h.FenceIn -= elapsed
	if h.StartWaitIn != nil {
		w := *h.StartWaitIn - elapsed
		h.StartWaitIn = &w
	}
	h.Groups = slices.Clone(h.Groups)
	for i := range h.Groups {
		if h.Groups[i].GoneByIn > 0 {
			h.Groups[i].GoneByIn = max(h.Groups[i].GoneByIn-elapsed, time.Nanosecond)
		}
	}
	return &h
}

// group returns the part of h for group name.
func (h *Handoff) group(name string) (HandoffGroup, bool) {
	if h == nil {
		return HandoffGroup{}, false
	}
	i := slices.IndexFunc(h.Groups, func(g HandoffGroup) bool { return g.Name == name })
	if i < 0 {
		return HandoffGroup{}, false
	}
	return h.Groups[i], true
}

// detach ends the group's part in this image without releasing anything:
// announcements stop (no frame leaves after this), the VIPs stay on the
// host under their kernel lifetimes, the keys on the lease. It returns
// what the next image needs.
func (g *group) detach() HandoffGroup {
	g.vips.gate.Store(nil)
	g.vips.ann.stop()
	g.vips.mv.stop()
	state, mode := g.stateAndMode()
	hg := HandoffGroup{Name: g.name, State: string(state), Mode: mode}
	if c := g.held.Claim; c != nil {
		hg.Rev, hg.Lease, hg.Addrs = c.CreateRev, int64(c.Lease), slices.Clone(c.Addrs)
		hg.Resigning = g.held.Resigning
		hg.Bound = g.vips.bound() && g.held.settled()
	}
	for _, p := range g.vips.prefixes() {
		hg.Present = append(hg.Present, PlacedAddr{Prefix: p, Link: g.vips.links[p]})
	}
	if until := g.vips.certainlyGoneBy(); len(hg.Present) > 0 && !until.IsZero() {
		hg.GoneByIn = max(until.Sub(g.env.clk.Now()), time.Nanosecond)
	}
	if c := g.held.Claim; c != nil && g.ms.claimRev == c.CreateRev {
		m := &HandoffMembers{ClaimRev: g.ms.claimRev, Base: g.ms.base, BaseRev: g.ms.baseRev, OK: g.ms.ok}
		for _, w := range g.ms.sent {
			m.Sent = append(m.Sent, HandoffSent{Nodes: w.nodes, Guard: w.guard})
		}
		hg.Members = m
	}
	hg.Notify = g.cfg.Notify
	g.log.Info("handed over to the next vipd image", "claim", hg.Rev, "bound", hg.Bound, "resigning", hg.Resigning, "present", len(hg.Present))
	return hg
}

// adopt starts the group from what the previous image handed over, before
// its loop runs. Addresses that may be on the host are known but not
// trusted (maybe: only a confirmed removal or a bind clears them). A claim
// whose VIPs were bound is lapsed: the loop re-reads it (Inspect) before
// binding again, and binds without a fresh wait only if etcd still shows
// it, on the lease this image has renewed. A claim with a resign in flight
// is only ever released. A claim never bound is fresh again, from now.
func (g *group) adopt(hg HandoffGroup, now time.Time) {
	for _, pa := range hg.Present {
		if g.vips.maybe == nil {
			g.vips.maybe = map[netip.Prefix]struct{}{}
		}
		g.vips.maybe[pa.Prefix] = struct{}{}
		g.vips.placeOn(pa.Prefix, pa.Link)
	}
	g.vips.adopted = len(hg.Present) > 0
	if hg.GoneByIn > 0 {
		g.vips.maybeUntil = now.Add(hg.GoneByIn)
	}
	if hg.State != "" {
		g.state, g.mode = election.State(hg.State), hg.Mode
		g.adopting, g.adoptedAt = true, now
	}
	if hg.Rev == 0 {
		return
	}
	c := election.Claim{Group: g.name, CreateRev: hg.Rev, Lease: clientv3.LeaseID(hg.Lease), Addrs: slices.Clone(hg.Addrs)}
	if m := hg.Members; m != nil && m.ClaimRev == hg.Rev {
		// The writes the previous image sent may still land: a failsafe
		// hold asks their members too (§2.9 rule 3).
		g.ms = membersState{claimRev: m.ClaimRev, base: m.Base, baseRev: m.BaseRev, ok: m.OK}
		for _, w := range m.Sent {
			g.ms.sent = append(g.ms.sent, sentMembers{nodes: w.Nodes, guard: w.Guard})
		}
	}
	switch {
	case hg.Resigning:
		g.held = Held{Claim: &c, Resigning: true}
	case hg.Bound:
		g.held = Held{Claim: &c, Lapsed: true}
	default:
		g.held = Held{Claim: &c, Lapsed: true, Fresh: true, FreshSince: now}
	}
}

// adoptedBound lists the addresses of handed-over claims that were bound
// and whose group is still configured: the startup cleanup spares them.
func (k *Keeper) adoptedBound() []netip.Addr {
	if k.adopt == nil {
		return nil
	}
	var out []netip.Addr
	for _, hg := range k.adopt.Groups {
		if !hg.Bound || !slices.ContainsFunc(k.cfg.Groups, func(gc config.Group) bool { return gc.Name == hg.Name }) {
			continue
		}
		for _, pa := range hg.Present {
			out = append(out, pa.Prefix.Addr())
		}
	}
	return out
}

// awaitAdoption waits, before any group loop runs, until the session's
// first renewal of the adopted lease has succeeded (or the lease was
// replaced: it was gone) and every check a handed-over claim's group
// tracks has a first result, at most a lease TTL. A group loop started
// earlier would see a lease without a fence and drop the VIPs, or checks
// not yet known (counted as down) and release. Meanwhile the VIPs are on
// the host under the previous image's kernel lifetimes.
func (k *Keeper) awaitAdoption(ctx context.Context) {
	// No longer than the previous image's fence: past it the VIPs are on
	// their way out (their lifetimes end before it), and a group without
	// addresses must leave MASTER (its loop drops it at once).
	deadline := k.clk.Now().Add(max(k.adopt.FenceIn, 0))
	for {
		l := k.session.Current()
		leaseDone := l.ID != clientv3.LeaseID(k.adopt.Lease) || l.Live(k.clk.Now())
		waiting := ""
		if !leaseDone {
			waiting = "the adopted lease's first renewal"
		}
		for _, gc := range k.cfg.Groups {
			if hg, ok := k.adopt.group(gc.Name); ok && hg.Rev != 0 && !k.health.Of(gc).Ready {
				waiting = "the first results of group " + gc.Name + "'s checks"
			}
		}
		if waiting == "" {
			return
		}
		if !k.clk.Now().Before(deadline) {
			k.log.Warn("adopting the previous vipd image's claims: not ready within the lease TTL; going on", "waiting_for", waiting)
			return
		}
		t := k.clk.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// startUnconfiguredLocked starts, retiring, the handed-over groups the new
// configuration no longer has, so they release what they hold (VIPs first,
// then their keys). k.mu must be held.
func (k *Keeper) startUnconfiguredLocked() {
	if k.adopt == nil {
		return
	}
	for _, hg := range k.adopt.Groups {
		if _, running := k.groups[hg.Name]; running {
			continue
		}
		gc := config.Group{Name: hg.Name, Notify: hg.Notify}
		for _, pa := range hg.Present {
			gc.Prefixes = append(gc.Prefixes, pa.Prefix)
			gc.Links = append(gc.Links, pa.Link)
			gc.Addresses = append(gc.Addresses, config.Address{CIDR: pa.Prefix.String(), Interface: pa.Link})
		}
		k.startGroupLocked(gc, "no longer configured (after a re-execution in place)")
	}
}

// CanDetach reports whether handing over now would keep the VIPs: the
// lease is renewed directly (not through a peer, not on failsafe
// promises, which the next image could not have), with time to spare.
func (k *Keeper) CanDetach() error {
	l := k.session.Current()
	now := k.clk.Now()
	if !l.Live(now) || l.Relayed {
		return fmt.Errorf("%w: the lease is not renewed directly by etcd", ErrCannotDetach)
	}
	if !k.loopsStarted() {
		return fmt.Errorf("%w: still starting", ErrCannotDetach)
	}
	for _, g := range k.groupList() {
		if _, mode := g.stateAndMode(); mode != "" {
			return fmt.Errorf("%w: group %s holds in %s mode", ErrCannotDetach, g.name, mode)
		}
		if g.isAdopting() {
			// Its claim is not re-read yet: handed over now, it would
			// go as not bound, and the next image would drop its VIPs.
			return fmt.Errorf("%w: group %s is still taking over from the previous vipd image", ErrCannotDetach, g.name)
		}
	}
	return nil
}

// HooksRunning is how many notify hooks run now: a re-execution waits for
// them (a hook running across it would lose its supervision: its timeout,
// its output).
func (k *Keeper) HooksRunning() int {
	k.mu.Lock()
	n := k.notify
	k.mu.Unlock()
	if n == nil {
		return 0
	}
	return int(n.running.Load())
}

// Detach makes Run hand over instead of stopping when its context ends:
// every group loop ends keeping its VIPs and keys, and the lease is not
// revoked. After Run has returned, Handoff says what was handed over.
func (k *Keeper) Detach() { k.detaching.Store(true) }

// detachingNow reports whether Run is handing over (group loops ask).
func (k *Keeper) detachingNow() bool { return k.detaching.Load() }

// Handoff returns what Run handed over (after Detach, once Run returned).
func (k *Keeper) Handoff() Handoff { return k.handedOff }

// collectHandoff gathers every group's part, after their loops ended.
func (k *Keeper) collectHandoff(checkStates map[string]checks.Status) {
	l := k.session.Current()
	mono, _ := clock.SystemMonotonic()
	h := Handoff{Node: k.node, Lease: int64(l.ID), Prefix: k.cfg.Etcd.Prefix, TTL: k.cfg.Etcd.LeaseTTL, Failsafe: k.fs != nil && k.fs.holds,
		MonoAt: mono, FenceIn: l.Deadline.Sub(k.clk.Now()), Made: k.clk.Now(), Checks: map[string]HandoffCheck{}}
	if k.fs != nil {
		k.fs.mu.Lock()
		w := k.fs.startedUntil.Sub(k.clk.Now())
		k.fs.mu.Unlock()
		h.StartWaitIn = &w
	}
	for name, st := range checkStates {
		h.Checks[name] = HandoffCheck{Up: st.Up, Value: st.Value, Valued: st.Valued}
	}
	for _, g := range k.groupList() {
		if g.handedOver != nil {
			h.Groups = append(h.Groups, *g.handedOver)
		}
	}
	k.handedOff = h
}

// seedChecks turns the handed-over check states into the health part's
// seed.
func seedChecks(hc map[string]HandoffCheck) map[string]checks.Status {
	out := make(map[string]checks.Status, len(hc))
	for name, c := range hc {
		out[name] = checks.Status{Name: name, Up: c.Up, Value: c.Value, Valued: c.Valued}
	}
	return out
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
