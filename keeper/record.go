package keeper

import (
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
)

// recordState is this node's candidate record of a group as the loop last
// wrote or learned it.
type recordState struct {
	// Written is the record last written, on Lease (0: none yet).
	Written election.Candidate
	Lease   clientv3.LeaseID
	// ModRev is the ModRevision the record has as far as the loop knows
	// (0: absent): the guard of the next write.
	ModRev int64
}

// publishPlan says whether to write the candidate record, with which
// guard, and why.
type publishPlan struct {
	Write bool
	// Expect is the ModRevision the record must still have (0: absent).
	Expect int64
	Reason string
	// Contested is true when another process wrote this node's record (a
	// second vipd with the same node name): the loop backs off and says so.
	Contested bool
}

// planPublish compares the record the loop wants in etcd with what etcd
// has: the view's copy once the view has caught up with the loop's last
// write, else the last write itself. So a record deleted behind the
// loop's back (etcdctl del, a second process with this node name exiting)
// is written again as soon as the view sees the delete, and a write is not
// repeated while its own watch event is on the way.
//
// While the view is not synced nothing is written, with one exception: a
// node whose lease is renewed only through peers (relayed; its own etcd
// requests fail, so its view cannot sync) still updates a record it wrote
// on that lease, guarded by the ModRevision of its own last write, so
// that peers see its health change (docs/design.md §2.8).
func planPublish(want election.Candidate, lease clientv3.LeaseID, relayed bool, rs recordState, v election.GroupState) publishPlan {
	if lease != 0 && !v.Synced && relayed && rs.Lease == lease && rs.ModRev != 0 {
		if !candidateEqual(rs.Written, want) {
			return publishPlan{Write: true, Expect: rs.ModRev, Reason: "record changed (relayed)"}
		}
		return publishPlan{}
	}
	if lease == 0 || !v.Synced {
		// Not while the view is not synced: a node that publishes a better
		// record before it can see the group would make the holder yield
		// to it and then win a claim it could not confirm (docs/design.md
		// §2.3): after a partition heals, say, its watch still re-listing.
		return publishPlan{}
	}
	if v.Rev < rs.ModRev {
		if rs.Lease != lease || !candidateEqual(rs.Written, want) {
			return publishPlan{Write: true, Expect: rs.ModRev, Reason: "record changed"}
		}
		return publishPlan{}
	}
	var rec *election.Candidate
	for i := range v.Candidates {
		if v.Candidates[i].Node == want.Node {
			rec = &v.Candidates[i]
			break
		}
	}
	switch {
	case rec == nil:
		return publishPlan{Write: true, Expect: 0, Reason: "record missing in etcd"}
	case clientv3.LeaseID(rec.Lease) != lease:
		// On another lease: our previous one (it expired and the record
		// with it is on its way out), or another process's.
		contested := rs.Lease != 0 && clientv3.LeaseID(rec.Lease) != rs.Lease && rec.ModRev > rs.ModRev
		return publishPlan{Write: true, Expect: rec.ModRev, Reason: "record on another lease", Contested: contested}
	case !storedMatches(*rec, want):
		return publishPlan{Write: true, Expect: rec.ModRev, Reason: "record changed"}
	}
	return publishPlan{}
}

func candidateEqual(a, b election.Candidate) bool {
	return decisionEqual(a, b) && a.Interface == b.Interface && slices.Equal(a.Addresses, b.Addresses)
}

// decisionEqual compares the fields elections read.
func decisionEqual(a, b election.Candidate) bool {
	return a.Node == b.Node && a.Priority == b.Priority && a.State == b.State && a.Preempt == b.Preempt &&
		a.PreemptDelay == b.PreemptDelay && a.Drained == b.Drained && a.Peer == b.Peer && a.Mode == b.Mode &&
		a.Waiting == b.Waiting && slices.Equal(a.Failing, b.Failing)
}

// storedMatches reports whether the record in etcd says what want says. A
// record without the informational interface and addresses matches on the
// rest: an older vipd relaying this node's publish writes it without them
// (it decodes into its own Candidate), and rewriting it would only loop.
func storedMatches(stored, want election.Candidate) bool {
	if stored.Interface == "" && len(stored.Addresses) == 0 {
		// Such a relay drops Waiting too. Missing, it only lets a holder
		// yield as early as before the field existed; but a record that
		// says Waiting when this node no longer is, is rewritten, or no
		// holder would ever yield to it.
		if want.Waiting {
			stored.Waiting = true
		}
		return decisionEqual(stored, want)
	}
	return candidateEqual(stored, want)
}
