package keeper

import (
	"fmt"
	"hash/fnv"
	"time"

	"github.com/vipd/vipd/election"
)

// Action is what a group loop must do next.
type Action int

// Actions, in the order a loop may take them.
const (
	// Idle: nothing to do; make sure no VIP is bound.
	Idle Action = iota
	// Acquire: try to create the leader key.
	Acquire
	// Verify: re-read the leader key before trusting a claim again (after
	// a stall or an acquire whose answer was lost).
	Verify
	// Hold: keep the VIPs bound and their kernel lifetime refreshed.
	Hold
	// Drop: remove the VIPs at once; the claim cannot be used now (fence
	// passed) but the key may still be ours.
	Drop
	// Lost: remove the VIPs and forget the claim; the key is gone or not ours.
	Lost
	// Release: remove the VIPs, then delete our leader key.
	Release
)

func (a Action) String() string {
	return [...]string{"idle", "acquire", "verify", "hold", "drop", "lost", "release"}[a]
}

// Inputs is everything a group's decision depends on, gathered by the loop.
type Inputs struct {
	Now   time.Time
	Lease election.Lease
	// Self is this node's candidacy as it would be published now.
	Self election.Candidate
	// Ready is false until every tracked check has a first result and the
	// interface state is known; a node that is not ready does not campaign.
	Ready bool
	// View is the group's leader key and candidate records as last seen.
	View election.GroupState
	// Claim is our claim on the leader key, nil if none.
	Claim *election.Claim
	// Lapsed is true when the claim was dropped by the fence and must be
	// verified before the VIPs are bound again.
	Lapsed bool
	// VacantSince is when the loop first saw the leader key absent (zero
	// when it is present).
	VacantSince time.Time
	// ChallengerSince is when the current challenger (if any) was first seen.
	ChallengerSince time.Time
	// SelfVisible is true once the view holds this node's own candidate
	// record on its current lease: peers can rank against it.
	SelfVisible bool
	// BetterWonAt is when a candidate ranked ahead of this node last took
	// any group (zero if not seen): while it is still taking groups, this
	// node's backoff for a vacancy counts from then (election.VacancyDue).
	BetterWonAt time.Time
	BackoffStep time.Duration
	// Snubbed names a node not to yield to: we yielded to it and it did
	// not take over (a stale record of a dead or cut-off node), so yielding
	// again would only flap the VIP until its lease expires.
	Snubbed string
}

// Decision is what to do and why. Wake, when positive, asks the loop to
// decide again after that long even if nothing else changes.
type Decision struct {
	Action Action
	// State is the state to report: MASTER, BACKUP or FAULT.
	State  string
	Reason string
	Wake   time.Duration
	// YieldTo names the node a preemption release yields to.
	YieldTo string
}

// Decide is the whole group policy as a pure function.
func Decide(in Inputs) Decision {
	self := in.Self
	state := election.StateBackup
	if !self.Eligible() && self.State == election.StateFault {
		state = election.StateFault
	}

	if c := in.Claim; c != nil {
		// 1. Safety first: the fence and the lease identity.
		if in.Lease.ID != c.Lease {
			return Decision{Action: Lost, State: state, Reason: "lease changed: the old lease expired at the server"}
		}
		if !in.Lease.Live(in.Now) {
			return Decision{Action: Drop, State: state, Reason: "fence deadline passed without a lease renewal"}
		}
		// 2. What etcd says, once the view has caught up with the claim.
		if in.View.Synced && in.View.Rev >= c.CreateRev &&
			(!in.View.Leader.Present || in.View.Leader.CreateRev != c.CreateRev) {
			return Decision{Action: Lost, State: state, Reason: "leader key deleted or replaced"}
		}
		if in.Lapsed {
			return Decision{Action: Verify, State: state, Reason: "lease renewed after a lapse; re-reading the leader key"}
		}
		// 3. Policy: fault, drain, preemption.
		if !self.Eligible() {
			reason := "fault: " + fmt.Sprint(self.Failing)
			if self.Drained {
				reason = "drained by operator"
			}
			return Decision{Action: Release, State: state, Reason: reason}
		}
		if h := in.View.Handover; h != nil && h.From == self.Node {
			if target, ok := handoverTarget(h, self, in.View.Candidates); ok {
				return Decision{Action: Release, State: election.StateBackup, Reason: "planned handover to " + target}
			}
		}
		if ch, ok := election.Challenger(self, challengers(in.View, in.Snubbed)); ok {
			// keepalived applies preempt_delay on the node taking over,
			// so the challenger's setting counts.
			yield, wait := election.ShouldPreempt(in.Now, in.ChallengerSince, ch.PreemptDelay)
			if yield {
				return Decision{Action: Release, State: election.StateBackup, YieldTo: ch.Node,
					Reason: fmt.Sprintf("preempted by %s (priority %d > %d)", ch.Node, ch.Priority, self.Priority)}
			}
			return Decision{Action: Hold, State: election.StateMaster, Reason: "holder; preempt delay running", Wake: min(wait, in.Lease.Deadline.Sub(in.Now))}
		}
		return Decision{Action: Hold, State: election.StateMaster, Reason: "holder", Wake: in.Lease.Deadline.Sub(in.Now)}
	}

	if !in.Ready || !self.Eligible() || !in.Lease.Live(in.Now) || !in.View.Synced {
		return Decision{Action: Idle, State: state, Reason: notCampaigning(in)}
	}
	if l := in.View.Leader; l.Present {
		if l.Node == self.Node && l.Lease == in.Lease.ID {
			// An acquire whose answer we lost, or a key we created but
			// forgot: confirm it before using it.
			return Decision{Action: Verify, State: state, Reason: "leader key names this node on its own lease"}
		}
		return Decision{Action: Idle, State: state, Reason: "standby for " + l.Node}
	}
	if !in.SelfVisible {
		// Campaign only once peers can see this candidacy: nodes started
		// together then rank against each other instead of all claiming
		// at rank 0 and preempting one another.
		return Decision{Action: Idle, State: state, Reason: "vacant; waiting for this node's candidate record to be visible"}
	}
	rank := election.RankWithHandover(self, in.View.Candidates, in.View.Handover)
	due := election.VacancyDue(in.VacantSince, in.BetterWonAt, rank, in.BackoffStep)
	if in.Now.Before(due) {
		return Decision{Action: Idle, State: state, Reason: fmt.Sprintf("vacant; rank %d backing off", rank), Wake: due.Sub(in.Now)}
	}
	return Decision{Action: Acquire, State: state, Reason: fmt.Sprintf("vacant; rank %d", rank)}
}

// refreshAhead is how long before the kernel lifetime set last runs out a
// holder refreshes it if no renewal came to do so.
const refreshAhead = 300 * time.Millisecond

// NextRefresh is how long a holder may wait for the next lease renewal
// before refreshing its VIPs' kernel lifetime by itself: until shortly
// before the lifetime set last (ending at kernelUntil) runs out, and no
// later than the last moment a safe lifetime can still be set
// (election.LastRefresh). A renewal may be skipped as not extending the
// lifetime enough and the next one come late (an etcd election), so
// waiting only for LastRefresh could let the kernel remove a VIP whose
// lease is live. Zero or less means no refresh is due or possible.
func NextRefresh(now, serverExpiry, kernelUntil time.Time) time.Duration {
	last := election.LastRefresh(serverExpiry).Sub(now)
	if !kernelUntil.IsZero() {
		if before := kernelUntil.Add(-refreshAhead).Sub(now); before > 0 && (last <= 0 || before < last) {
			return before
		}
	}
	return last
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

// handoverTarget names who a handover from self would go to, and whether
// that node is an eligible candidate now; a handover to nobody is not
// carried out (it would only cause an outage).
func handoverTarget(h *election.Handover, self election.Candidate, cands []election.Candidate) (string, bool) {
	best := ""
	for _, c := range election.Sorted(cands) {
		if c.Node == self.Node || !c.Eligible() {
			continue
		}
		if h.To == "" || c.Node == h.To {
			best = c.Node
			break
		}
	}
	return best, best != ""
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

// RetryBackoff is the wait before retrying a failed etcd write of a
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
