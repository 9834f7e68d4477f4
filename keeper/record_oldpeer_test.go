package keeper

import (
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
)

// oldCandidate is election.Candidate as a vipd before 7825ff5 decodes it.
type oldCandidate struct {
	Node         string         `json:"node"`
	Priority     int            `json:"priority"`
	State        election.State `json:"state"`
	Mode         string         `json:"mode,omitempty"`
	Preempt      bool           `json:"preempt"`
	PreemptDelay time.Duration  `json:"preempt_delay,omitempty"`
	Failing      []string       `json:"failing,omitempty"`
	Drained      bool           `json:"drained,omitempty"`
	Peer         string         `json:"peer,omitempty"`
}

// Review of the status fields (7825ff5): a new node whose publish goes through
// re-marshals the decoded Candidate) never settles once its view is synced.
func TestPublishSettlesAfterAnOldPeerRelayedIt(t *testing.T) {
	const lease = clientv3.LeaseID(7)
	want := election.Candidate{Node: "n1", Priority: 100, State: election.StateBackup, Preempt: true,
		Peer: "10.0.0.1:7000", Interface: "eth0", Addresses: []string{"192.168.20.15/24"}}
	rs := recordState{Written: want, Lease: lease}
	rev := int64(40)
	for i := 0; i < 5; i++ {
		// old peer: decode into its struct, encode, write
		b, _ := json.Marshal(want)
		var o oldCandidate
		_ = json.Unmarshal(b, &o)
		stored, _ := json.Marshal(o)
		var inEtcd election.Candidate
		_ = json.Unmarshal(stored, &inEtcd)
		rev++
		inEtcd.Lease, inEtcd.ModRev = int64(lease), rev
		rs.ModRev = rev
		p := planPublish(want, lease, true, rs, election.GroupState{Synced: true, Rev: rev, Candidates: []election.Candidate{inEtcd}})
		if p.Write {
			t.Errorf("pass %d: rewrites the record (%s) after an old peer relayed it", i, p.Reason)
		}
	}
}
