package election

import (
	"sort"
	"time"
)

// FenceDeadline is the time by which a holder must have removed its VIPs
// unless the lease is renewed again. sent is when the successful renewal
// was sent (not when its answer came back); ttl is the TTL the server
// granted; margin absorbs clock-rate differences and the time to remove an
// address.
func FenceDeadline(sent time.Time, ttl, margin time.Duration) time.Time {
	return sent.Add(ttl - margin)
}

// Candidate is a node's published candidacy for one group.
type Candidate struct {
	Node     string `json:"node"`
	Priority int    `json:"priority"` // effective priority
	State    State  `json:"state"`    // MASTER, BACKUP or FAULT
	// Mode is what a MASTER's hold rests on beyond its own lease renewals:
	// "relay" (peers renew its lease) or "" (keeper.HolderMode).
	Mode    string `json:"mode,omitempty"`
	Preempt bool   `json:"preempt"` // may this node take over from a worse holder
	// PreemptDelay is how long this node must have been a better candidate
	// before the holder yields to it (keepalived applies preempt_delay on
	// the node taking over). Nanoseconds in JSON.
	PreemptDelay time.Duration `json:"preempt_delay,omitempty"`
	// Failing names the tracked checks that are down, for vipctl status.
	Failing []string `json:"failing,omitempty"`
	// Drained means the operator asked this node not to stand.
	Drained bool `json:"drained,omitempty"`
	// Waiting means the node may not claim yet: it is waiting out a
	// promise not to (a lease TTL after its start, docs/design.md §2.9).
	// It ranks for a vacancy as any candidate, but a holder does not
	// yield to it, nor hand over to it, until it may claim: yielding
	// earlier would only leave the group vacant.
	Waiting bool `json:"waiting,omitempty"`
	// Peer is the node's peer channel endpoint (host:port), where peers
	// ask it to relay their lease renewals and writes; empty when the
	// channel is off (docs/design.md §2.8).
	Peer string `json:"peer,omitempty"`
	// Interface and Addresses are the group as this node's config has it:
	// the interface it binds the VIPs on and the VIPs in CIDR form. They
	// are for vipctl status; no decision reads them.
	Interface string   `json:"interface,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	// Lease is the node's lease ID and ModRev the record's ModRevision,
	// filled from the key's metadata.
	Lease  int64 `json:"-"`
	ModRev int64 `json:"-"`
}

// Handover is a planned switchover request written by vipctl: the holder
// From releases, and To (or, if empty, the best other candidate) takes
// over. While the request exists (its lease is the hold time) From neither
// reclaims a vacancy ahead of others nor preempts back.
type Handover struct {
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	// Rev identifies the request: the key's ModRevision (a new request
	// rewrites the key, keeping its CreateRevision). The holder carries
	// out each request once.
	Rev int64 `json:"-"`
}

// Eligible reports whether c may stand for leadership.
func (c Candidate) Eligible() bool { return c.State != StateFault && !c.Drained }

// Better reports whether a ranks ahead of b: higher effective priority, then
// the lexically smaller node name (a deterministic tie-break every node
// computes the same way).
func Better(a, b Candidate) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Node < b.Node
}

// Rank is self's position among the eligible candidates (0 = best). self is
// counted even if its own record is not in cands yet; a record of self's
// node in cands is ignored in favour of self.
func Rank(self Candidate, cands []Candidate) int {
	rank := 0
	for _, c := range cands {
		if c.Node == self.Node || !c.Eligible() {
			continue
		}
		if Better(c, self) {
			rank++
		}
	}
	return rank
}

// RankWithHandover adjusts Rank for a pending handover: the target (see
// HandoverTarget) ranks first and everyone else one step later; the node
// handing over ranks after every other eligible candidate, so it only
// reclaims if nobody else does.
func RankWithHandover(self Candidate, cands []Candidate, h *Handover) int {
	rank := Rank(self, cands)
	if h == nil {
		return rank
	}
	if target, ok := HandoverTarget(h, cands); ok {
		if self.Node == target {
			return 0
		}
		rank++
	}
	if self.Node == h.From {
		for _, c := range cands {
			if c.Node != self.Node && c.Eligible() {
				rank++
			}
		}
	}
	return rank
}

// HandoverTarget names the node a handover goes to: h.To if it is an
// eligible candidate, or with no To the best eligible candidate other than
// h.From. ok is false when there is none, or when that node may not claim
// yet (Waiting): a handover to nobody is not carried out (it would only
// cause an outage), and one to a node still waiting is carried out once
// it may claim (not to the next best meanwhile, which the waiting node
// would preempt: two moves where one is asked for).
func HandoverTarget(h *Handover, cands []Candidate) (string, bool) {
	for _, c := range Sorted(cands) {
		if c.Node == h.From || !c.Eligible() {
			continue
		}
		if h.To == "" || c.Node == h.To {
			return c.Node, !c.Waiting
		}
	}
	return "", false
}

// Backoff is how long a candidate of the given rank waits after seeing a
// vacancy before trying to create the leader key.
func Backoff(rank int, step time.Duration) time.Duration {
	return time.Duration(rank) * step
}

// VacancyDue is when a candidate of the given rank claims a vacant group:
// its backoff counted from the vacancy, or from when it last saw a
// better-ranked candidate win any group, whichever is later. A better node
// taking over a thousand groups needs longer than one backoff step to
// reach them all; while it is visibly making progress, a worse node waits
// instead of grabbing groups it would only be preempted from. Once the
// better node stops winning, the worse one claims what is left one
// backoff later.
func VacancyDue(vacantSince, betterWonAt time.Time, rank int, step time.Duration) time.Time {
	from := vacantSince
	if rank > 0 && betterWonAt.After(from) {
		from = betterWonAt
	}
	return from.Add(Backoff(rank, step))
}

// Sorted returns cands ordered best first (for display).
func Sorted(cands []Candidate) []Candidate {
	out := append([]Candidate(nil), cands...)
	sort.Slice(out, func(i, j int) bool { return Better(out[i], out[j]) })
	return out
}

// Challenger returns the best eligible candidate that may preempt holder:
// strictly higher effective priority, preemption enabled on its side
// (keepalived's nopreempt is a property of the would-be preemptor), and
// free to claim now (not Waiting).
func Challenger(holder Candidate, cands []Candidate) (Candidate, bool) {
	var best Candidate
	found := false
	for _, c := range cands {
		if c.Node == holder.Node || !c.Eligible() || c.Waiting || !c.Preempt || c.Priority <= holder.Priority {
			continue
		}
		if !found || Better(c, best) {
			best, found = c, true
		}
	}
	return best, found
}

// ShouldPreempt decides whether a holder yields to a challenger that has
// been continuously present since challengerSince. It returns wait > 0
// when the challenger is present but preempt_delay has not yet passed.
func ShouldPreempt(now, challengerSince time.Time, delay time.Duration) (yield bool, wait time.Duration) {
	due := challengerSince.Add(delay)
	if !now.Before(due) {
		return true, 0
	}
	return false, due.Sub(now)
}
