package keeper

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/netif"
)

// Action is what a group loop must do next.
type Action int

// Actions.
const (
	// Idle: nothing to do; make sure no VIP is bound.
	Idle Action = iota
	// Acquire: create the leader key and the address claims, if all are
	// absent.
	Acquire
	// Inspect: read the leader key and the address claims before trusting
	// a claim again (after a lapse) or to find out what a lost answer or a
	// late write left (keys of this node's on its lease).
	Inspect
	// Hold: keep the VIPs bound and their kernel lifetime refreshed.
	Hold
	// Drop: remove the VIPs at once; the fence passed, but the keys may
	// still be ours (the lease may yet be renewed): keep the claim, lapsed.
	Drop
	// Forget: remove the VIPs and forget the claim: its lease expired at
	// the server, and its keys with it.
	Forget
	// Release: remove the VIPs and, once they are provably gone, delete
	// the claim's keys, retrying until they are gone.
	Release
	// Await: a claim just won (or found) is held without binding until
	// the view has caught up with it and the vacancy it replaced is
	// known to be safe: a graceful release, or an end older than
	// ExpiryGrace.
	Await
	// Leave: a group removed by a reload that holds nothing: delete its
	// candidate record, then stop.
	Leave
	// Reclaim: a claim held under a failsafe whose lease expired at the
	// server, with etcd reachable again: claim the keys anew on the new
	// lease while the VIPs stay bound (docs/design.md §2.9).
	Reclaim
)

func (a Action) String() string {
	return [...]string{"idle", "acquire", "inspect", "hold", "drop", "forget", "release", "await", "leave", "reclaim"}[a]
}

// Held is what a group loop holds in etcd, as far as it knows.
type Held struct {
	// Claim is our claim on the leader key and the address keys; nil if
	// none.
	Claim *election.Claim
	// Lapsed: the fence passed while holding; the claim must be inspected
	// before the VIPs are bound again.
	Lapsed bool
	// Unsure: an Acquire's answer was lost, so the keys may exist. Nothing
	// else happens until Inspect says. UnsureAddrs are the addresses it
	// was sent with.
	Unsure      bool
	UnsureAddrs []netip.Addr
	// Partial: Inspect found keys of this node's that do not make a whole
	// claim (one deleted by hand, say); they must be deleted.
	Partial bool
	// Fresh: the claim was won or found and its VIPs never bound yet:
	// they may be bound only once the vacancy it replaced is safe (Await).
	// FreshSince is when.
	Fresh      bool
	FreshSince time.Time
	// Resigning: a resign of the claim was sent (its answer may have been
	// lost and it may land late): the claim is never held again, only
	// released.
	Resigning bool
	// Resigned is the CreateRev of the last claim this loop deleted, so a
	// view that has not caught up with the delete is not taken for keys
	// of ours left behind.
	Resigned int64
}

// settled reports whether the claim held is one this loop has confirmed
// and goes on holding: not fresh, lapsed, partial, unsure or being
// released. A failsafe hold rests only on such a claim, and only such a
// claim is handed over as bound.
func (h Held) settled() bool {
	return h.Claim != nil && !h.Fresh && !h.Resigning && !h.Lapsed && !h.Partial && !h.Unsure
}

// Memory is what a group's decisions remember from one pass to the next.
// Decide returns it updated; the loop keeps it.
type Memory struct {
	// VacantSince is when the loop first saw the group vacant (no leader
	// key, no address claimed by others); zero while it is not.
	VacantSince time.Time
	// Challenger is the best candidate that may preempt this node, and
	// when it was first seen.
	Challenger      string
	ChallengerSince time.Time
	// YieldedTo is the node this holder last yielded to by preemption,
	// and when; cleared once that node takes over.
	YieldedTo string
	YieldedAt time.Time
	// Snubbed is a node not to yield to before SnubUntil: this node
	// yielded to it and it did not take over (a stale record of a dead or
	// cut-off node), so yielding again would only flap the VIP until its
	// lease expires.
	Snubbed   string
	SnubUntil time.Time
	// HandoverDone is the Rev of the handover request this node has
	// carried out (its resign sent): it releases once per request, and
	// reclaims (if the target never claims) without releasing again.
	HandoverDone int64
}

// Inputs is everything a group's decision depends on, gathered by the loop.
type Inputs struct {
	Now   time.Time
	Group string
	// Lease is the lease the held claim may be relied on under: the
	// session's, or, while peers' promises cover the claim for longer, a
	// failsafe one (Failsafe set, the claim's lease ID, the promises'
	// horizon as fence). Session is the session's own lease.
	Lease   election.Lease
	Session election.Lease
	// PromisedUntil is when this node's latest promise not to claim
	// (given to a peer's failsafe, or assumed after a start) ends.
	PromisedUntil time.Time

	// Self is this node's candidacy as it would be published now.
	Self election.Candidate
	// Ready is false until every tracked check has a first result and the
	// interface state is known; a node that is not ready does not campaign.
	Ready bool
	// View is the group's keys as last seen. Its Addresses cover the
	// configured addresses, the held claim's, and every address claimed
	// for this group by this node on its lease (Watched).
	View election.GroupState
	// Addrs are the group's configured addresses: what a claim must cover.
	Addrs []netip.Addr
	Held  Held
	// Retiring, when set, says why the group is going away (removed by a
	// reload): release what it holds, unpublish, stop.
	Retiring string
	// SelfVisible is true once the view holds this node's own candidate
	// record on its current lease: peers can rank against it.
	SelfVisible bool
	// BetterWonAt is when a candidate ranked ahead of this node last took
	// any group (zero if not seen): while it is still taking groups, this
	// node's backoff for a vacancy counts from then (election.VacancyDue).
	BetterWonAt time.Time
	// DownSince is Health.DownSince as this pass saw it. Decide does not
	// read it: the check-to-release timer does, against the same health
	// the decision was made on.
	DownSince   time.Time
	BackoffStep time.Duration
	// TTL is the lease TTL: how long a snub lasts.
	TTL time.Duration
	Mem Memory
}

// Decision is what to do and why. Wake, when positive, asks the loop to
// decide again after that long even if nothing else changes.
type Decision struct {
	Action Action
	// State is the state to report: MASTER, BACKUP or FAULT.
	State  election.State
	Reason string
	Wake   time.Duration
	// Handover is the Rev of the handover request a Release carries out:
	// once the resign is sent, the loop remembers it (Memory.HandoverDone).
	Handover int64
}

// Decide is the whole group policy as a pure function: what to do now,
// and the memory to keep for the next pass.
func Decide(in Inputs) (Decision, Memory) {
	mem := observe(in)
	d := decide(in, &mem)
	if w := in.PromisedUntil.Sub(in.Now); in.Self.Waiting && w > 0 && (d.Wake <= 0 || w < d.Wake) {
		// Its record says so until the loop looks again: then holders may
		// yield to it.
		d.Wake = w
	}
	return d, mem
}

// observe updates what the loop remembers from what it sees now.
func observe(in Inputs) Memory {
	m, v := in.Mem, in.View
	if v.Leader.Present && v.Leader.Node == m.YieldedTo {
		m.YieldedTo = "" // it took over, as it should
	}
	switch {
	case in.Held.Claim != nil:
		// A vacancy seen while this node claims is only its view lagging
		// the claim; the one it competes in begins once the claim ends.
		// Kept, a claim given up before the view showed it (a yield to a
		// better challenger) would find its backoff long run out and
		// claim again at once, ahead of the node it yielded to.
		m.VacantSince = time.Time{}
	case v.Synced && !v.Leader.Present && blockingClaim(in) == "":
		if m.VacantSince.IsZero() {
			m.VacantSince = in.Now
		}
	default:
		m.VacantSince = time.Time{}
	}
	// A challenger's preempt_delay counts from when it is first seen
	// better, as keepalived's does, even while it may not claim yet
	// (Waiting): the holder yields once both are over.
	if ch, ok := election.Challenger(in.Self, notWaiting(v.Candidates)); ok {
		if ch.Node != m.Challenger {
			m.Challenger, m.ChallengerSince = ch.Node, in.Now
		}
	} else {
		m.Challenger, m.ChallengerSince = "", time.Time{}
	}
	if !in.Now.Before(m.SnubUntil) {
		m.Snubbed, m.SnubUntil = "", time.Time{}
	}
	if v.Synced && m.HandoverDone != 0 && (v.Handover == nil || v.Handover.Rev != m.HandoverDone) {
		m.HandoverDone = 0 // the request is gone (its hold time ended)
	}
	return m
}

func decide(in Inputs, mem *Memory) Decision {
	self := in.Self
	state := election.StateBackup
	if !self.Eligible() && self.State == election.StateFault {
		state = election.StateFault
	}
	h := in.Held
	if h.Unsure {
		return Decision{Action: Inspect, State: state, Reason: "the answer to an acquire was lost; reading what etcd holds"}
	}

	if c := h.Claim; c != nil {
		// 1. Safety first: the lease identity and the fence.
		if in.Lease.Failsafe && in.Lease.Live(in.Now) && in.Session.ID != c.Lease && in.Session.Live(in.Now) && in.View.Synced && !h.Resigning &&
			in.Retiring == "" && c.Covers(in.Addrs) {
			// etcd is back, the claim's lease is gone, and the peers'
			// promises still cover it: nobody else can have claimed.
			return Decision{Action: Reclaim, State: election.StateMaster, Reason: "etcd reachable again, lease expired during a failsafe hold: claiming anew",
				Wake: in.Lease.Deadline.Sub(in.Now)}
		}
		if in.Lease.ID != c.Lease {
			return Decision{Action: Forget, State: state, Reason: "lease changed: the old lease expired at the server"}
		}
		if !in.Lease.Live(in.Now) {
			return Decision{Action: Drop, State: state, Reason: "fence deadline passed without a lease renewal"}
		}
		if h.Resigning {
			// A resign was sent: it may land any time, so the claim is
			// never held again.
			return Decision{Action: Release, State: state, Reason: "finishing a release"}
		}
		// 2. What etcd says.
		if h.Partial {
			return Decision{Action: Release, State: state, Reason: "keys of an incomplete claim found; deleting them"}
		}
		if lost, why := claimLost(in.View, *c); lost {
			if in.Lease.Failsafe && in.Lease.Live(in.Now) && !claimTaken(in.View, *c) && in.Retiring == "" && c.Covers(in.Addrs) {
				// (Only for the claim as configured: a reload that changed
				// its addresses, or retired the group, releases below, so
				// an address is never bound without a claim of its own.)
				// The keys went with the lease, which expired while etcd
				// was away (a frozen cluster resumes with it expired);
				// nobody has claimed since, and the promises still cover
				// the claim: claim anew once the session has a new lease.
				return Decision{Action: Hold, State: election.StateMaster, Wake: in.Lease.Deadline.Sub(in.Now),
					Reason: "keys expired with the lease during a failsafe hold; claiming anew on a new lease"}
			}
			return Decision{Action: Release, State: state, Reason: why}
		}
		if h.Lapsed {
			return Decision{Action: Inspect, State: state, Reason: "lease renewed after a lapse; re-reading the keys"}
		}
		// 3. Policy: going away, new addresses, fault, drain, handover,
		// preemption.
		if in.Retiring != "" {
			return Decision{Action: Release, State: state, Reason: in.Retiring}
		}
		if !c.Covers(in.Addrs) {
			return Decision{Action: Release, State: state, Reason: "addresses changed by a reload"}
		}
		if !self.Eligible() {
			reason := "fault: " + fmt.Sprint(self.Failing)
			if self.Drained {
				reason = "drained by operator"
			}
			return Decision{Action: Release, State: state, Reason: reason}
		}
		if in.Lease.Failsafe {
			// Nobody can claim while the members' promises stand, and the
			// view is what it was before etcd went away: a handover or a
			// preemption by another's priority now would only take the VIP
			// down until etcd is back. This node's own health still rules:
			// a tracked check that is down (a weight, not only a FAULT)
			// releases where, with etcd, a better candidate would take
			// over (as HAProxy failing does in the seed pair), though
			// nobody can until etcd is back.
			// (Waiting means nothing here: nobody claims before etcd is
			// back, and the view is the one from before it went away.)
			if _, better := election.Challenger(self, notWaiting(in.View.Candidates)); better && len(self.Failing) > 0 {
				return Decision{Action: Release, State: state, Reason: fmt.Sprintf("check down during a failsafe hold: %v", self.Failing)}
			}
			if d, await := awaitFresh(in); await {
				return d
			}
			return Decision{Action: Hold, State: election.StateMaster, Reason: "holder on its members' failsafe promises", Wake: in.Lease.Deadline.Sub(in.Now)}
		}
		if hv := in.View.Handover; hv != nil && hv.From == self.Node && hv.Rev != mem.HandoverDone {
			if target, ok := election.HandoverTarget(hv, in.View.Candidates); ok {
				return Decision{Action: Release, State: election.StateBackup, Reason: "planned handover to " + target, Handover: hv.Rev}
			}
		}
		if ch, ok := election.Challenger(self, notWaiting(challengers(in.View, mem.Snubbed))); ok {
			// keepalived applies preempt_delay on the node taking over,
			// so the challenger's setting counts. A challenger that may
			// not claim yet is waited for (its record changes when it
			// may, which wakes the loop): yielding now would leave the
			// group vacant.
			yield, wait := election.ShouldPreempt(in.Now, mem.ChallengerSince, ch.PreemptDelay)
			waiting := waitingIn(in.View.Candidates, ch.Node)
			if yield && !waiting {
				mem.YieldedTo, mem.YieldedAt = ch.Node, in.Now
				return Decision{Action: Release, State: election.StateBackup,
					Reason: fmt.Sprintf("preempted by %s (priority %d > %d)", ch.Node, ch.Priority, self.Priority)}
			}
			if d, await := awaitFresh(in); await {
				return d
			}
			reason, wake := "holder; preempt delay running", min(wait, in.Lease.Deadline.Sub(in.Now))
			if waiting && yield {
				reason, wake = "holder; "+ch.Node+" may not claim yet", in.Lease.Deadline.Sub(in.Now)
			}
			return Decision{Action: Hold, State: election.StateMaster, Reason: reason, Wake: wake}
		}
		if d, await := awaitFresh(in); await {
			return d
		}
		return Decision{Action: Hold, State: election.StateMaster, Reason: "holder", Wake: in.Lease.Deadline.Sub(in.Now)}
	}

	if ownKeysVisible(in) {
		// An acquire that landed after its answer was lost, or keys left
		// by a failed resign: find out, then hold or delete them. A node
		// never leaves keys of its own on a live lease unused.
		return Decision{Action: Inspect, State: state, Reason: "keys of this node on its own lease in etcd"}
	}
	if in.Retiring != "" {
		return Decision{Action: Leave, State: state, Reason: in.Retiring}
	}
	if !in.Ready || !self.Eligible() || !in.Lease.Live(in.Now) || !in.View.Synced {
		return Decision{Action: Idle, State: state, Reason: notCampaigning(in)}
	}
	if l := in.View.Leader; l.Present {
		return Decision{Action: Idle, State: state, Reason: "standby for " + l.Node}
	}
	if in.Now.Before(in.PromisedUntil) {
		// A peer holding under a failsafe relies on this node not claiming
		// anything until then (or this node restarted and cannot know).
		return Decision{Action: Idle, State: state, Reason: "vacant; promised a peer's failsafe not to claim yet",
			Wake: in.PromisedUntil.Sub(in.Now)}
	}
	if a, m, ok := notAMember(in); ok {
		return Decision{Action: Idle, State: state, Wake: blockedRecheck,
			Reason: fmt.Sprintf("address %s may be claimed only by %v, its last holder's recorded members", a, m.Names())}
	}
	if b := blockingClaim(in); b != "" {
		// Another group (a rename during a rolling reload, or the same
		// VIP configured twice) holds an address: wait for it. Its
		// release wakes the groups with that address; look again now and
		// then all the same (a watch may have been re-listed meanwhile).
		return Decision{Action: Idle, State: state, Reason: b, Wake: blockedRecheck}
	}
	if !in.SelfVisible {
		// Campaign only once peers can see this candidacy: nodes started
		// together then rank against each other instead of all claiming
		// at rank 0 and preempting one another.
		return Decision{Action: Idle, State: state, Reason: "vacant; waiting for this node's candidate record to be visible"}
	}
	rank := election.RankWithHandover(self, in.View.Candidates, in.View.Handover)
	// The backoff counts from when this node could first claim: nodes
	// restarted together each wait out a promise (a lease TTL from their
	// own start), and a worse one whose wait ends a little earlier must
	// still leave the better one its head start.
	due := election.VacancyDue(later(mem.VacantSince, in.PromisedUntil), in.BetterWonAt, rank, in.BackoffStep)
	if in.Now.Before(due) {
		return Decision{Action: Idle, State: state, Reason: fmt.Sprintf("vacant; rank %d backing off", rank), Wake: due.Sub(in.Now)}
	}
	if mem.YieldedTo != "" && in.Now.Sub(mem.YieldedAt) < in.TTL {
		// We yielded to a node that then did not take over: its record is
		// stale (dead or cut off). Do not yield to it again until its
		// lease must have expired.
		mem.Snubbed, mem.SnubUntil = mem.YieldedTo, in.Now.Add(in.TTL)
	}
	mem.YieldedTo = ""
	return Decision{Action: Acquire, State: state, Reason: fmt.Sprintf("vacant; rank %d", rank)}
}

// waitingIn reports whether node's record in cands says it may not claim
// yet.
func waitingIn(cands []election.Candidate, node string) bool {
	for _, c := range cands {
		if c.Node == node {
			return c.Waiting
		}
	}
	return false
}

// notWaiting returns cands as if none were Waiting.
func notWaiting(cands []election.Candidate) []election.Candidate {
	out := slices.Clone(cands)
	for i := range out {
		out[i].Waiting = false
	}
	return out
}

// ReportedState is the state a group reports after a pass: MASTER exactly
// while it holds a claim and its VIPs are bound (whatever the decision
// hoped for: a bind may have failed, a removal may still be pending),
// else what Decide said, but never MASTER.
func ReportedState(decided election.State, bound, claimed bool) election.State {
	switch {
	case bound && claimed:
		return election.StateMaster
	case decided == election.StateMaster:
		return election.StateBackup // won, but not bound yet
	}
	return decided
}

// awaitFresh says whether a fresh claim must wait before its VIPs are
// bound: until the view has caught up with the claim (it then knows the
// vacancy the claim replaced, whatever the view showed when the loop
// decided to acquire: a stale view may have shown an older vacancy), and,
// unless that vacancy was a graceful release, until ExpiryGrace after the
// view saw it, by which time the previous holder's kernel has removed its
// VIP (docs/design.md §2.3).
func awaitFresh(in Inputs) (Decision, bool) {
	c := in.Held.Claim
	if !in.Held.Fresh {
		return Decision{}, false
	}
	if !in.View.Synced || in.View.Rev < c.CreateRev {
		if in.Now.Sub(in.Held.FreshSince) >= awaitViewMax {
			// The watch does not deliver (it re-lists when it stalls, so
			// this is rare): a claim this node cannot confirm helps nobody.
			return Decision{Action: Release, State: election.StateBackup, Reason: "won, but the view did not catch up with the claim"}, true
		}
		return Decision{Action: Await, State: election.StateBackup, Reason: "won; waiting for the view to catch up with the claim",
			Wake: awaitViewMax - in.Now.Sub(in.Held.FreshSince)}, true
	}
	if p := in.View.Prior; !p.Graceful {
		// A failsafe holder's VIP may outlive its promises' horizon as an
		// expiring lease's does its server expiry: this node's promise
		// ended no earlier than that horizon, so count from it too.
		if open := later(p.At, in.PromisedUntil).Add(ExpiryGrace); in.Now.Before(open) {
			return Decision{Action: Await, State: election.StateBackup, Wake: open.Sub(in.Now),
				Reason: "won a group vacated without a graceful release; waiting out the previous holder's kernel expiry lag"}, true
		}
	}
	return Decision{}, false
}

// awaitViewMax bounds how long a fresh claim waits for the view to catch
// up with it before it is given up.
const awaitViewMax = 10 * time.Second

// blockedRecheck is how often a group waiting for an address claimed by
// another group looks again.
const blockedRecheck = time.Second

// claimLost reports whether the view, once it has caught up with the
// claim, shows any of its keys deleted or replaced.
func claimLost(v election.GroupState, c election.Claim) (bool, string) {
	if !v.Synced || v.Rev < c.CreateRev {
		return false, ""
	}
	if !v.Leader.Present || v.Leader.CreateRev != c.CreateRev {
		return true, "leader key deleted or replaced"
	}
	for _, a := range c.Addrs {
		if v.Addresses[a].CreateRev != c.CreateRev {
			return true, fmt.Sprintf("claim of address %v deleted or replaced", a)
		}
	}
	return false, ""
}

// claimTaken reports whether the view shows any key of c held by another
// claim (the leader key, or an address claimed with another revision).
func claimTaken(v election.GroupState, c election.Claim) bool {
	if v.Leader.Present && v.Leader.CreateRev != c.CreateRev {
		return true
	}
	for _, a := range c.Addrs {
		if ac := v.Addresses[a]; ac.Present() && ac.CreateRev != c.CreateRev {
			return true
		}
	}
	return false
}

// ownKeysVisible reports whether the view shows a leader key or an address
// claim of this group created by this node on its current lease, other
// than one the loop has just deleted.
func ownKeysVisible(in Inputs) bool {
	if !in.Lease.Live(in.Now) || !in.View.Synced {
		return false
	}
	l, node, id := in.View.Leader, in.Self.Node, in.Lease.ID
	if l.Present && l.Node == node && l.Lease == id && l.CreateRev != in.Held.Resigned {
		return true
	}
	for _, a := range in.View.Addresses {
		if a.Present() && a.Node == node && a.Group == in.Group && a.Lease == id && a.CreateRev != in.Held.Resigned {
			return true
		}
	}
	return false
}

// notAMember returns a configured address whose membership record (its
// last holder's, docs/design.md §2.9) does not admit this node.
func notAMember(in Inputs) (netip.Addr, election.Members, bool) {
	for _, ip := range in.Addrs {
		if m := in.View.Members[ip]; !m.Admits(in.Self.Node) {
			return ip, m, true
		}
	}
	return netip.Addr{}, election.Members{}, false
}

// blockingClaim describes a configured address of the group claimed by
// another group or node, or returns "".
func blockingClaim(in Inputs) string {
	for _, ip := range in.Addrs {
		a, ok := in.View.Addresses[ip]
		if !ok || !a.Present() || (a.Node == in.Self.Node && a.Group == in.Group) {
			continue
		}
		return fmt.Sprintf("address %s claimed by %s for group %s", ip, a.Node, a.Group)
	}
	return ""
}

func notCampaigning(in Inputs) string {
	switch {
	case in.Self.Drained:
		return "drained by operator"
	case in.Self.State == election.StateFault:
		return fmt.Sprintf("fault: %v", in.Self.Failing)
	case !in.Ready:
		return "waiting for first check results"
	case !in.Lease.Live(in.Now):
		return "no live etcd lease"
	default:
		return "waiting for the group view"
	}
}

// challengers are the candidates that may preempt the holder: all but the
// node that handed the group over while its handover request stands, and
// a snubbed node.
func challengers(v election.GroupState, snubbed string) []election.Candidate {
	out := make([]election.Candidate, 0, len(v.Candidates))
	for _, c := range v.Candidates {
		if (v.Handover != nil && c.Node == v.Handover.From) || (snubbed != "" && c.Node == snubbed) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// The kernel lifetime is the dead-man's switch of a holder that can no
// longer remove its VIPs itself (killed, frozen): the kernel removes them
// when it runs out, but up to netif.KernelExpiryLag late. The holder and
// its peers split that lag between them:
//
//   - a holder ends its VIPs' lifetime LifetimeSlack before the lease can
//     expire at the server (LifetimeEnd);
//   - a peer that wins a group whose previous claim did not end in a
//     graceful release (the lease expired, or was revoked without a
//     resign) binds its VIPs only ExpiryGrace after its view saw that
//     claim end (Await).
//
// A claim ending by expiry is seen no earlier than the server expiry, so a
// peer binds no earlier than serverExpiry + ExpiryGrace, by which time the
// old holder's VIP is gone: its lifetime ended by serverExpiry −
// LifetimeSlack and the kernel removed it at most KernelExpiryLag later.
// With lease_ttl 3 s and renewals every 0.5 s, LifetimeSlack = 1.05 s
// still leaves room for a 1 s lifetime at every renewal.
const (
	LifetimeSlack = 1050 * time.Millisecond
	ExpiryGrace   = netif.KernelExpiryLag - LifetimeSlack
)

// LifetimeEnd is when a VIP's kernel lifetime must have run out, for a
// lease that may expire at the server from serverExpiry on.
func LifetimeEnd(serverExpiry time.Time) time.Time { return serverExpiry.Add(-LifetimeSlack) }

// refreshAhead is how long before the kernel may first remove a VIP a
// holder refreshes its lifetime if no renewal came to do so.
const refreshAhead = 300 * time.Millisecond

// LastRefresh is shortly before the latest time a one-second lifetime can
// still be set (100ms early, for timer latency): refreshing then, rather
// than only at renewals, keeps a VIP bound as long as safely possible
// while renewals fail (an etcd leader election, say).
func LastRefresh(serverExpiry time.Time) time.Time {
	return LifetimeEnd(serverExpiry).Add(-netif.AckAllowance - time.Second - 100*time.Millisecond)
}

// NextRefresh is how long a holder may wait for the next lease renewal
// before refreshing its VIPs' kernel lifetime by itself: until shortly
// before the kernel may remove them (expiresFrom, from the last bind), and
// no later than the last moment a safe lifetime can still be set
// (LastRefresh). A renewal may be skipped as not extending the lifetime
// enough and the next one come late (an etcd election), so waiting only
// for LastRefresh could let the kernel remove a VIP whose lease is live.
// Zero or less means no refresh is due or possible.
func NextRefresh(now, serverExpiry, expiresFrom time.Time) time.Duration {
	last := LastRefresh(serverExpiry).Sub(now)
	if !expiresFrom.IsZero() {
		if before := expiresFrom.Add(-refreshAhead).Sub(now); before > 0 && (last <= 0 || before < last) {
			return before
		}
	}
	return last
}

// refreshMinGain is how much later a lifetime refresh must end than the
// current lifetime to be worth a netlink request per VIP at a renewal.
const refreshMinGain = 250 * time.Millisecond

// RefreshNeeded reports whether a holder whose bound VIPs may be removed
// by the kernel from expiresFrom (their lifetime's end less
// netif.KernelEarlyExpiry) should refresh their lifetime now, given
// the lifetime a refresh would set (ending at newEnd; zero if none is
// safe) and the lease's serverExpiry:
//   - the VIPs expire soon (within refreshAhead): always;
//   - the refresh moves the end by more than refreshMinGain: yes, so
//     renewals every 0.5 s do not each cost a request when the end barely
//     moves;
//   - LastRefresh has come and the current lifetime was set before it:
//     yes, for any gain. Later refreshes can add at most LastRefresh's
//     timer margin, so skipping a small gain here would let the kernel
//     remove a VIP that the lease still covers during an etcd election.
//     Once made, this last refresh is not repeated at every pass.
func RefreshNeeded(now, expiresFrom, newEnd, serverExpiry time.Time) bool {
	if !now.Before(expiresFrom.Add(-refreshAhead)) {
		return true
	}
	if newEnd.IsZero() {
		return false
	}
	if newEnd.After(expiresFrom.Add(refreshMinGain)) {
		return true
	}
	last := LastRefresh(serverExpiry)
	end := expiresFrom.Add(netif.KernelEarlyExpiry)
	return !now.Before(last) && end.Before(last.Add(time.Second)) && newEnd.After(end)
}

// RetryBackoff is the wait before retrying a failed etcd request of a
// group's for the failures-th time in a row: 100ms doubling up to 3.2s,
// plus up to 100ms spread by the group's name, so a thousand groups that
// failed together (etcd overloaded at startup) do not retry in lockstep.
func RetryBackoff(failures int, group string) time.Duration {
	d := retryBase << min(max(failures-1, 0), 5)
	h := fnv.New32a()
	h.Write([]byte(group))
	return d + time.Duration(h.Sum32()%100)*time.Millisecond
}

const retryBase = 100 * time.Millisecond
