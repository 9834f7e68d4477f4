package keeper

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
)

var t0 = time.Unix(1_700_000_000, 0)

const lease = clientv3.LeaseID(0x42)

// base returns inputs for web-node-2 as a healthy standby with a live lease
// and an empty, synced view.
func base() Inputs {
	return Inputs{
		Now:   t0,
		Lease: election.Lease{ID: lease, Renewed: t0.Add(-500 * time.Millisecond), Deadline: t0.Add(2 * time.Second)},
		Self:  election.Candidate{Node: "web-node-2", Priority: 102, State: election.StateBackup, Preempt: true},
		Ready: true,
		View:  election.GroupState{Synced: true, Rev: 100},
		// vacancy seen just now; our own record is visible
		VacantSince: t0,
		SelfVisible: true,
		BackoffStep: 100 * time.Millisecond,
	}
}

func holding(in Inputs) Inputs {
	in.Claim = &election.Claim{Group: "VI_1", CreateRev: 90, Lease: lease}
	in.View.Leader = election.LeaderInfo{Present: true, Node: in.Self.Node, CreateRev: 90, Lease: lease}
	in.VacantSince = time.Time{}
	in.Self.State = election.StateMaster
	return in
}

type decideCase struct {
	name   string
	in     func() Inputs
	action Action
	state  string
	wake   time.Duration
	reason string
}

func TestDecide(t *testing.T) {
	n1 := election.Candidate{Node: "web-node-1", Priority: 103, State: election.StateBackup, Preempt: true}
	n1down := n1
	n1down.Priority = 101
	cases := []decideCase{
		{"vacant, best candidate claims at once", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1down}
			return in
		}, Acquire, election.StateBackup, 0, "rank 0"},
		{"vacant, second candidate backs off one step", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			return in
		}, Idle, election.StateBackup, 100 * time.Millisecond, "rank 1"},
		{"vacant, second candidate after its backoff", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			in.Now = t0.Add(100 * time.Millisecond)
			return in
		}, Acquire, election.StateBackup, 0, "rank 1"},
		{"vacant, second candidate waits while the better one is still taking groups", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			in.Now = t0.Add(150 * time.Millisecond)
			in.BetterWonAt = t0.Add(120 * time.Millisecond)
			return in
		}, Idle, election.StateBackup, 70 * time.Millisecond, "rank 1 backing off"},
		{"vacant, second candidate claims once the better one stopped taking groups", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			in.Now = t0.Add(220 * time.Millisecond)
			in.BetterWonAt = t0.Add(120 * time.Millisecond)
			return in
		}, Acquire, election.StateBackup, 0, "rank 1"},
		{"vacant, but our own record is not visible yet: no campaign", func() Inputs {
			in := base()
			in.SelfVisible = false
			return in
		}, Idle, election.StateBackup, 0, "candidate record to be visible"},
		{"standby while another holds", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 50, Lease: 7}
			return in
		}, Idle, election.StateBackup, 0, "standby for web-node-1"},
		{"no campaign without a live lease", func() Inputs {
			in := base()
			in.Lease.Deadline = t0
			return in
		}, Idle, election.StateBackup, 0, "no live etcd lease"},
		{"no campaign before first check results", func() Inputs {
			in := base()
			in.Ready = false
			return in
		}, Idle, election.StateBackup, 0, "first check results"},
		{"no campaign before the view is synced", func() Inputs {
			in := base()
			in.View.Synced = false
			return in
		}, Idle, election.StateBackup, 0, "view"},
		{"fault does not campaign", func() Inputs {
			in := base()
			in.Self.State = election.StateFault
			in.Self.Failing = []string{"haproxy"}
			return in
		}, Idle, election.StateFault, 0, "haproxy"},
		{"leader key names us on our lease: verify", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-2", CreateRev: 99, Lease: lease}
			return in
		}, Verify, election.StateBackup, 0, ""},
		{"leader key names us on an old lease: standby", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-2", CreateRev: 99, Lease: 1}
			return in
		}, Idle, election.StateBackup, 0, "standby"},

		{"holder keeps holding, wakes at the fence", func() Inputs { return holding(base()) }, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"holder drops at the fence deadline", func() Inputs {
			in := holding(base())
			in.Now = in.Lease.Deadline
			return in
		}, Drop, election.StateBackup, 0, "fence"},
		{"holder drops after a stall even if the view still says leader", func() Inputs {
			in := holding(base())
			in.Now = in.Lease.Deadline.Add(5 * time.Second)
			return in
		}, Drop, election.StateBackup, 0, "fence"},
		{"new lease voids the claim", func() Inputs {
			in := holding(base())
			in.Lease.ID = 0x43
			return in
		}, Lost, election.StateBackup, 0, "lease changed"},
		{"lapsed claim is verified before binding again", func() Inputs {
			in := holding(base())
			in.Lapsed = true
			return in
		}, Verify, election.StateBackup, 0, ""},
		{"key deleted: lost", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{}
			return in
		}, Lost, election.StateBackup, 0, "deleted"},
		{"key replaced by another node: lost", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 120, Lease: 9}
			in.View.Rev = 120
			return in
		}, Lost, election.StateBackup, 0, "deleted or replaced"},
		{"view older than the claim is not a contradiction", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{}
			in.View.Rev = 89
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"holder in fault releases", func() Inputs {
			in := holding(base())
			in.Self.State = election.StateFault
			in.Self.Failing = []string{"haproxy"}
			return in
		}, Release, election.StateFault, 0, "fault"},
		{"drained holder releases", func() Inputs {
			in := holding(base())
			in.Self.Drained = true
			return in
		}, Release, election.StateBackup, 0, "drained"},
		{"seed: HAProxy dies on holder (101 < 102): release at once", func() Inputs {
			in := holding(base())
			in.Self = n1down
			in.Self.State = election.StateMaster
			in.View.Leader.Node = "web-node-1"
			in.View.Candidates = []election.Candidate{{Node: "web-node-2", Priority: 102, State: election.StateBackup, Preempt: true}}
			in.ChallengerSince = t0
			return in
		}, Release, election.StateBackup, 0, "preempted by web-node-2"},
		{"the challenger's preempt_delay holds until it passes", func() Inputs {
			in := holding(base())
			c := n1
			c.PreemptDelay = 1500 * time.Millisecond
			in.View.Candidates = []election.Candidate{c}
			in.ChallengerSince = t0.Add(-time.Second)
			in.Self.PreemptDelay = 0 // the holder's own setting does not matter (keepalived semantics)
			return in
		}, Hold, election.StateMaster, 500 * time.Millisecond, "preempt delay"},
		{"the challenger's preempt_delay passed", func() Inputs {
			in := holding(base())
			c := n1
			c.PreemptDelay = 1500 * time.Millisecond
			in.View.Candidates = []election.Candidate{c}
			in.ChallengerSince = t0.Add(-1500 * time.Millisecond)
			in.Self.PreemptDelay = time.Hour
			return in
		}, Release, election.StateBackup, 0, "preempted by web-node-1"},
		{"nopreempt challenger does not move the VIP", func() Inputs {
			in := holding(base())
			c := n1
			c.Preempt = false
			in.View.Candidates = []election.Candidate{c}
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
	}
	handover := func(from, to string) *election.Handover { return &election.Handover{From: from, To: to} }
	n3 := election.Candidate{Node: "web-node-3", Priority: 90, State: election.StateBackup, Preempt: true}
	cases = append(cases, []decideCase{
		{"handover: holder releases to the named node", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1, n3}
			in.View.Handover = handover("web-node-2", "web-node-3")
			return in
		}, Release, election.StateBackup, 0, "handover to web-node-3"},
		{"handover without target goes to the best other node", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n3, n1}
			in.View.Handover = handover("web-node-2", "")
			return in
		}, Release, election.StateBackup, 0, "handover to web-node-1"},
		{"handover to a node in fault is not carried out", func() Inputs {
			in := holding(base())
			f := n3
			f.State = election.StateFault
			in.View.Candidates = []election.Candidate{f}
			in.View.Handover = handover("web-node-2", "web-node-3")
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"handover addressed to another holder is ignored", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n3}
			in.View.Handover = handover("web-node-1", "web-node-3")
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"new holder is not preempted back by the node that handed over", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1}
			in.View.Handover = handover("web-node-1", "web-node-2")
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"vacancy: handover target claims at once although it ranks lower", func() Inputs {
			in := base()
			in.Self = n3
			in.View.Candidates = []election.Candidate{n1, in.Self}
			in.View.Handover = handover("web-node-1", "web-node-3")
			return in
		}, Acquire, election.StateBackup, 0, "rank 0"},
		{"vacancy: the node that handed over waits behind the others", func() Inputs {
			in := base()
			in.Self = n1
			in.View.Candidates = []election.Candidate{n1, n3}
			in.View.Handover = handover("web-node-1", "")
			return in
		}, Idle, election.StateBackup, 100 * time.Millisecond, "rank 1"},
		{"a snubbed challenger does not preempt", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1}
			in.Snubbed = "web-node-1"
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"another challenger still preempts while one is snubbed", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1, {Node: "web-node-0", Priority: 110, State: election.StateBackup, Preempt: true}}
			in.Snubbed = "web-node-1"
			return in
		}, Release, election.StateBackup, 0, "preempted by web-node-0"},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.in())
			if d.Action != c.action || d.State != c.state || d.Wake != c.wake {
				t.Errorf("Decide = {%v %s wake %v %q}, want {%v %s wake %v}", d.Action, d.State, d.Wake, d.Reason, c.action, c.state, c.wake)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason %q does not mention %q", d.Reason, c.reason)
			}
		})
	}
}

// TestDecideNeverHoldsPastTheFence checks the safety invariant over a grid
// of inputs: whatever the view, health and policy say, Hold is only ever
// decided while the lease is live and the claim is on the current lease.
func TestDecideNeverHoldsPastTheFence(t *testing.T) {
	for _, now := range []time.Duration{0, 1999 * time.Millisecond, 2 * time.Second, time.Hour} {
		for _, leaseID := range []clientv3.LeaseID{0, lease, 0x43} {
			for _, lapsed := range []bool{false, true} {
				for _, present := range []bool{false, true} {
					in := holding(base())
					in.Now = t0.Add(now)
					in.Lease.ID = leaseID
					in.Lapsed = lapsed
					in.View.Leader.Present = present
					d := Decide(in)
					if d.Action != Hold {
						continue
					}
					if !in.Lease.Live(in.Now) || in.Lease.ID != in.Claim.Lease || lapsed || !present {
						t.Errorf("Hold decided for now=+%v lease=%x lapsed=%v present=%v", now, leaseID, lapsed, present)
					}
				}
			}
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	cases := []struct {
		failures int
		min, max time.Duration
	}{
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{2, 200 * time.Millisecond, 300 * time.Millisecond},
		{3, 400 * time.Millisecond, 500 * time.Millisecond},
		{6, 3200 * time.Millisecond, 3300 * time.Millisecond},
		{60, 3200 * time.Millisecond, 3300 * time.Millisecond},
	}
	for _, c := range cases {
		got := RetryBackoff(c.failures, "VI_1")
		if got < c.min || got >= c.max {
			t.Errorf("RetryBackoff(%d) = %v, want in [%v, %v)", c.failures, got, c.min, c.max)
		}
	}
	spread := map[time.Duration]bool{}
	for i := range 50 {
		spread[RetryBackoff(1, fmt.Sprintf("group-%d", i))] = true
	}
	if len(spread) < 20 {
		t.Errorf("50 groups retry at only %d distinct times; want them spread", len(spread))
	}
	if RetryBackoff(3, "VI_1") != RetryBackoff(3, "VI_1") {
		t.Error("RetryBackoff is not deterministic")
	}
}

func TestNextRefresh(t *testing.T) {
	renewed := t0
	expiry := renewed.Add(3 * time.Second) // last safe refresh at +0.85s
	cases := []struct {
		name  string
		now   time.Duration
		until time.Duration // kernel lifetime end, after t0; 0 = none
		want  time.Duration
	}{
		{"lifetime outlasts the last safe refresh: wait for that", 0, 1500 * time.Millisecond, 850 * time.Millisecond},
		{"lifetime ends first: refresh 300ms before it", 0, time.Second, 700 * time.Millisecond},
		{"a skipped renewal left the lifetime at +1.05s: refresh at +0.75s", 600 * time.Millisecond, 1050 * time.Millisecond, 150 * time.Millisecond},
		{"no lifetime set yet", 0, 0, 850 * time.Millisecond},
		{"too late to refresh before the lifetime ends: the last safe refresh", 800 * time.Millisecond, 1050 * time.Millisecond, 50 * time.Millisecond},
		{"past both: nothing due", time.Second, 1100 * time.Millisecond, -150 * time.Millisecond},
	}
	for _, c := range cases {
		var until time.Time
		if c.until > 0 {
			until = t0.Add(c.until)
		}
		if got := NextRefresh(t0.Add(c.now), expiry, until); got != c.want {
			t.Errorf("%s: NextRefresh = %v, want %v", c.name, got, c.want)
		}
	}
}
