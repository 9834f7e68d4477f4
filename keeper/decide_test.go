package keeper

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/netif"
)

var t0 = time.Unix(1_700_000_000, 0)

const lease = clientv3.LeaseID(0x42)

var vip = netip.MustParseAddr("192.168.20.15")

// base returns inputs for web-node-2 as a healthy standby with a live lease
// and an empty, synced view.
func base() Inputs {
	return Inputs{
		Now:   t0,
		Group: "VI_1",
		Lease: election.Lease{ID: lease, Renewed: t0.Add(-500 * time.Millisecond), Deadline: t0.Add(2 * time.Second), ServerExpiry: t0.Add(2500 * time.Millisecond)},
		Self:  election.Candidate{Node: "web-node-2", Priority: 102, State: election.StateBackup, Preempt: true},
		Ready: true,
		View:  election.GroupState{Synced: true, Rev: 100, Addresses: map[netip.Addr]election.AddressClaim{}},
		Addrs: []netip.Addr{vip},
		// vacancy seen just now; our own record is visible
		Mem:         Memory{VacantSince: t0},
		SelfVisible: true,
		BackoffStep: 100 * time.Millisecond,
		TTL:         3 * time.Second,
	}
}

func holding(in Inputs) Inputs {
	in.Held.Claim = &election.Claim{Group: "VI_1", CreateRev: 90, Lease: lease, Addrs: []netip.Addr{vip}}
	in.View.Leader = election.LeaderInfo{Present: true, Node: in.Self.Node, CreateRev: 90, Lease: lease}
	in.View.Addresses = map[netip.Addr]election.AddressClaim{vip: {Node: in.Self.Node, Group: "VI_1", CreateRev: 90, Lease: lease}}
	in.Mem.VacantSince = time.Time{}
	in.Self.State = election.StateMaster
	return in
}

type decideCase struct {
	name   string
	in     func() Inputs
	action Action
	state  election.State
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
		{"holder, a better node that may not claim yet: hold", func() Inputs {
			in := holding(base())
			w := n1
			w.Waiting = true
			in.View.Candidates = []election.Candidate{w}
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"standby waiting out its promise looks again when it ends (to say it may claim)", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 5, Lease: 7}
			in.Self.Waiting, in.PromisedUntil = true, t0.Add(700*time.Millisecond)
			return in
		}, Idle, election.StateBackup, 700 * time.Millisecond, "standby"},
		{"vacant, second candidate counts its backoff from the end of its own promise", func() Inputs {
			// Restarted together, both nodes wait out the promise they may
			// have given before (a lease TTL from their start); the worse
			// one's ended a few ms earlier. Counted from the vacancy, its
			// backoff would be over and it would claim ahead of the better
			// node, whose own wait has not quite ended (e2e
			// TestPriorityOrder, seen in CI).
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			in.Mem.VacantSince = t0.Add(-time.Second)
			in.PromisedUntil = t0.Add(-10 * time.Millisecond)
			return in
		}, Idle, election.StateBackup, 90 * time.Millisecond, "rank 1 backing off"},
		{"vacant, second candidate after its backoff from its promise's end", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1}
			in.Mem.VacantSince = t0.Add(-time.Second)
			in.PromisedUntil = t0.Add(-100 * time.Millisecond)
			return in
		}, Acquire, election.StateBackup, 0, "rank 1"},
		{"fresh claim, the view not caught up with it yet: await", func() Inputs {
			in := holding(base())
			in.Held.Fresh, in.Held.FreshSince = true, t0.Add(-time.Second)
			in.View.Rev = 89
			return in
		}, Await, election.StateBackup, awaitViewMax - time.Second, "view to catch up"},
		{"fresh claim, the view never caught up: give it up", func() Inputs {
			in := holding(base())
			in.Held.Fresh, in.Held.FreshSince = true, t0.Add(-awaitViewMax)
			in.View.Rev = 89
			return in
		}, Release, election.StateBackup, 0, "did not catch up"},
		{"fresh claim after an expiry seen 0.5s ago: await the rest of the grace", func() Inputs {
			in := holding(base())
			in.Held.Fresh = true
			in.View.Prior = election.Vacancy{At: t0.Add(-500 * time.Millisecond)}
			return in
		}, Await, election.StateBackup, ExpiryGrace - 500*time.Millisecond, "kernel expiry lag"},
		{"fresh claim after an expiry older than the grace: hold", func() Inputs {
			in := holding(base())
			in.Held.Fresh = true
			in.View.Prior = election.Vacancy{At: t0.Add(-ExpiryGrace)}
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"fresh claim after a graceful release: hold at once", func() Inputs {
			in := holding(base())
			in.Held.Fresh = true
			in.View.Prior = election.Vacancy{At: t0, Graceful: true}
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"a claim whose resign was sent is never held again", func() Inputs {
			in := holding(base())
			in.Held.Resigning = true
			return in
		}, Release, election.StateBackup, 0, "finishing a release"},
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
		{"leader key names us on our lease: inspect", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-2", CreateRev: 99, Lease: lease}
			return in
		}, Inspect, election.StateBackup, 0, "keys of this node"},
		{"leader key of ours while in fault: inspect all the same (then release)", func() Inputs {
			in := base()
			in.Self.State = election.StateFault
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-2", CreateRev: 99, Lease: lease}
			return in
		}, Inspect, election.StateFault, 0, "keys of this node"},
		{"an address claim of ours left without its leader key: inspect", func() Inputs {
			in := base()
			in.View.Addresses = map[netip.Addr]election.AddressClaim{vip: {Node: "web-node-2", Group: "VI_1", CreateRev: 99, Lease: lease}}
			return in
		}, Inspect, election.StateBackup, 0, "keys of this node"},
		{"the key just resigned, not yet gone from the view: no inspect", func() Inputs {
			in := base()
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-2", CreateRev: 99, Lease: lease}
			in.Held.Resigned = 99
			return in
		}, Idle, election.StateBackup, 0, "standby"},
		{"an acquire's answer was lost: inspect before anything", func() Inputs {
			in := base()
			in.Held.Unsure = true
			return in
		}, Inspect, election.StateBackup, 0, "lost"},
		{"vacant leader key, but an address claimed by another group: wait", func() Inputs {
			in := base()
			in.View.Addresses = map[netip.Addr]election.AddressClaim{vip: {Node: "web-node-1", Group: "VI_9", CreateRev: 80, Lease: 7}}
			return in
		}, Idle, election.StateBackup, blockedRecheck, "address 192.168.20.15 claimed by web-node-1 for group VI_9"},
		{"retiring without a claim: leave", func() Inputs {
			in := base()
			in.Retiring = "group removed by reload"
			return in
		}, Leave, election.StateBackup, 0, "removed by reload"},
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
		}, Forget, election.StateBackup, 0, "lease changed"},
		{"lapsed claim is inspected before binding again", func() Inputs {
			in := holding(base())
			in.Held.Lapsed = true
			return in
		}, Inspect, election.StateBackup, 0, "lapse"},
		{"key deleted: release what is left", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{}
			return in
		}, Release, election.StateBackup, 0, "deleted"},
		{"key replaced by another node: release", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 120, Lease: 9}
			in.View.Rev = 120
			return in
		}, Release, election.StateBackup, 0, "deleted or replaced"},
		{"address claim deleted by hand: release", func() Inputs {
			in := holding(base())
			in.View.Addresses = map[netip.Addr]election.AddressClaim{}
			return in
		}, Release, election.StateBackup, 0, "claim of address 192.168.20.15 deleted or replaced"},
		{"incomplete claim found by inspect: release", func() Inputs {
			in := holding(base())
			in.Held.Partial = true
			return in
		}, Release, election.StateBackup, 0, "incomplete"},
		{"retiring holder releases", func() Inputs {
			in := holding(base())
			in.Retiring = "group removed by reload"
			return in
		}, Release, election.StateBackup, 0, "removed by reload"},
		{"addresses changed by a reload: release, campaign anew", func() Inputs {
			in := holding(base())
			in.Addrs = []netip.Addr{netip.MustParseAddr("192.168.20.16")}
			return in
		}, Release, election.StateBackup, 0, "addresses changed"},
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
			in.Mem.Challenger, in.Mem.ChallengerSince = "web-node-2", t0
			return in
		}, Release, election.StateBackup, 0, "preempted by web-node-2"},
		{"the challenger's preempt_delay holds until it passes", func() Inputs {
			in := holding(base())
			c := n1
			c.PreemptDelay = 1500 * time.Millisecond
			in.View.Candidates = []election.Candidate{c}
			in.Mem.Challenger, in.Mem.ChallengerSince = "web-node-1", t0.Add(-time.Second)
			in.Self.PreemptDelay = 0 // the holder's own setting does not matter (keepalived semantics)
			return in
		}, Hold, election.StateMaster, 500 * time.Millisecond, "preempt delay"},
		{"the challenger's preempt_delay passed", func() Inputs {
			in := holding(base())
			c := n1
			c.PreemptDelay = 1500 * time.Millisecond
			in.View.Candidates = []election.Candidate{c}
			in.Mem.Challenger, in.Mem.ChallengerSince = "web-node-1", t0.Add(-1500*time.Millisecond)
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
	handover := func(from, to string) *election.Handover { return &election.Handover{From: from, To: to, Rev: 95} }
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
		}, Idle, election.StateBackup, 200 * time.Millisecond, "rank 2"},
		{"vacancy, two nodes, no --to: the target claims at rank 0", func() Inputs {
			in := base()
			in.View.Candidates = []election.Candidate{n1, in.Self}
			in.View.Handover = handover("web-node-1", "")
			return in
		}, Acquire, election.StateBackup, 0, "rank 0"},
		{"a handover request already carried out is not carried out again", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n3}
			in.View.Handover = handover("web-node-2", "web-node-3")
			in.Mem.HandoverDone = 95
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"a snubbed challenger does not preempt", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1}
			in.Mem.Snubbed, in.Mem.SnubUntil = "web-node-1", t0.Add(time.Second)
			return in
		}, Hold, election.StateMaster, 2 * time.Second, "holder"},
		{"another challenger still preempts while one is snubbed", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1, {Node: "web-node-0", Priority: 110, State: election.StateBackup, Preempt: true}}
			in.Mem.Snubbed, in.Mem.SnubUntil = "web-node-1", t0.Add(time.Second)
			return in
		}, Release, election.StateBackup, 0, "preempted by web-node-0"},

		// The failsafe (docs/design.md §2.9).
		{"vacant, but promised a peer's failsafe not to claim yet", func() Inputs {
			in := base()
			in.PromisedUntil = t0.Add(1200 * time.Millisecond)
			return in
		}, Idle, election.StateBackup, 1200 * time.Millisecond, "promised"},
		{"vacant, the promise has ended", func() Inputs {
			in := base()
			in.PromisedUntil = t0
			return in
		}, Acquire, election.StateBackup, 0, "rank 0"},
		{"vacant, the address's membership record does not list this node", func() Inputs {
			in := base()
			in.View.Members = map[netip.Addr]election.Members{vip: {Nodes: map[string]string{"web-node-1": "10.0.0.1:9843", "web-node-3": ""}, ModRev: 80}}
			return in
		}, Idle, election.StateBackup, blockedRecheck, "its last holder's recorded members"},
		{"vacant, the membership record lists this node", func() Inputs {
			in := base()
			in.View.Members = map[netip.Addr]election.Members{vip: {Nodes: map[string]string{"web-node-1": "", "web-node-2": ""}, ModRev: 80}}
			return in
		}, Acquire, election.StateBackup, 0, "rank 0"},
		{"holding under the failsafe: the session's fence passed, the promises' has not", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{ID: lease, Deadline: t0.Add(-time.Second), ServerExpiry: t0.Add(-500 * time.Millisecond)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Hold, election.StateMaster, 1500 * time.Millisecond, "holder"},
		{"under the failsafe, etcd back, the claim's lease gone: claim anew, VIPs kept", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond), ServerExpiry: t0.Add(3 * time.Second)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Reclaim, election.StateMaster, 1500 * time.Millisecond, "claiming anew"},
		{"under the failsafe, etcd back but the view not synced yet: hold", func() Inputs {
			in := holding(base())
			in.View.Synced = false
			in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond), ServerExpiry: t0.Add(3 * time.Second)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Hold, election.StateMaster, 1500 * time.Millisecond, "holder"},
		{"under the failsafe, a tracked check down (a weight, not a FAULT): release", func() Inputs {
			in := holding(base())
			in.Self.Failing = []string{"haproxy"}
			in.View.Candidates = []election.Candidate{n1}
			in.Session = election.Lease{}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Release, election.StateBackup, 0, "check down during a failsafe hold"},
		{"under the failsafe, a tracked check down, the better node seen waiting: release all the same", func() Inputs {
			// Nobody claims before etcd is back: its wait means nothing
			// here, and its record is from before etcd went away.
			in := holding(base())
			in.Self.Failing = []string{"haproxy"}
			w := n1
			w.Waiting = true
			in.View.Candidates = []election.Candidate{w}
			in.Session = election.Lease{}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Release, election.StateBackup, 0, "check down during a failsafe hold"},
		{"under the failsafe, a better challenger seen before the outage: hold", func() Inputs {
			in := holding(base())
			in.View.Candidates = []election.Candidate{n1}
			in.Session = election.Lease{}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Hold, election.StateMaster, 1500 * time.Millisecond, "failsafe"},
		{"under the failsafe, the view shows the keys gone with the expired lease: hold, to claim anew", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{}
			in.View.Addresses = map[netip.Addr]election.AddressClaim{}
			in.Session = election.Lease{ID: lease, Deadline: t0.Add(-5 * time.Second)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Hold, election.StateMaster, 1500 * time.Millisecond, "claiming anew"},
		{"under the failsafe, the view shows the address claimed by another: release at once", func() Inputs {
			in := holding(base())
			in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-3", CreateRev: 120}
			in.View.Addresses = map[netip.Addr]election.AddressClaim{vip: {Node: "web-node-3", Group: "VI_1", CreateRev: 120, Lease: 9}}
			in.Session = election.Lease{ID: lease, Deadline: t0.Add(-5 * time.Second)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Release, election.StateBackup, 0, "leader key deleted or replaced"},
		{"under the failsafe, no new lease yet: hold", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Hold, election.StateMaster, 1500 * time.Millisecond, "holder"},
		{"etcd back, but the promises' fence passed: no reclaim, the claim is gone", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond), ServerExpiry: t0.Add(3 * time.Second)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(-time.Millisecond), ServerExpiry: t0.Add(500 * time.Millisecond), Failsafe: true}
			return in
		}, Drop, election.StateBackup, 0, "fence deadline passed"},
		{"the promises' fence passed too: drop", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(-time.Millisecond), ServerExpiry: t0.Add(500 * time.Millisecond), Failsafe: true}
			return in
		}, Drop, election.StateBackup, 0, "fence deadline passed"},
		{"lease changed without a failsafe: forget", func() Inputs {
			in := holding(base())
			in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond)}
			in.Lease = in.Session
			return in
		}, Forget, election.StateBackup, 0, "lease changed"},
		{"a claim being resigned is not claimed anew", func() Inputs {
			in := holding(base())
			in.Held.Resigning = true
			in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond)}
			in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
			return in
		}, Release, election.StateBackup, 0, "finishing a release"},
		{"won after a vacancy by expiry: the grace counts from the end of this node's promise", func() Inputs {
			in := holding(base())
			in.Held.Fresh, in.Held.FreshSince = true, t0
			in.View.Prior = election.Vacancy{At: t0.Add(-5 * time.Second)}
			in.PromisedUntil = t0.Add(-time.Second)
			return in
		}, Await, election.StateBackup, 450 * time.Millisecond, "kernel expiry lag"},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _ := Decide(c.in())
			if d.Action != c.action || d.State != c.state || d.Wake != c.wake {
				t.Errorf("Decide = {%v %s wake %v %q}, want {%v %s wake %v}", d.Action, d.State, d.Wake, d.Reason, c.action, c.state, c.wake)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason %q does not mention %q", d.Reason, c.reason)
			}
		})
	}
}

// TestDecideInvariants checks the safety invariants over a grid of
// inputs: whatever the view, health and policy say,
//   - Hold only while the lease is live, the claim is on it, not lapsed,
//     not partial, and the view does not contradict it;
//   - with a claim, never Idle, Acquire or Leave: keys of ours are held or
//     released, never abandoned on a live lease;
//   - nothing but Inspect while an acquire's outcome is unknown;
//   - never Acquire while keys of ours are visible;
//   - never Hold a claim whose resign was sent, nor a fresh claim whose
//     predecessor ended without a graceful release less than ExpiryGrace
//     ago (or that the view has not caught up with).
func TestDecideInvariants(t *testing.T) {
	n1 := election.Candidate{Node: "web-node-1", Priority: 103, State: election.StateBackup, Preempt: true}
	for _, now := range []time.Duration{0, 1999 * time.Millisecond, 2 * time.Second, time.Hour} {
		for _, leaseID := range []clientv3.LeaseID{0, lease, 0x43} {
			for _, claim := range []bool{false, true} {
				for _, flags := range []int{0, 1, 2, 4, 8, 16, 32} { // none, lapsed, partial, unsure, retiring, fresh, resigning
					for _, present := range []bool{false, true} {
						for _, fault := range []bool{false, true} {
							in := base()
							if claim {
								in = holding(in)
							}
							in.View.Candidates = []election.Candidate{n1}
							in.Now = t0.Add(now)
							in.Lease.ID = leaseID
							in.Held.Lapsed = flags == 1
							in.Held.Partial = flags == 2 && claim
							in.Held.Unsure = flags == 4
							if flags == 8 {
								in.Retiring = "removed"
							}
							in.Held.Fresh = flags == 16 && claim
							in.Held.Resigning = flags == 32 && claim
							in.View.Prior = election.Vacancy{At: in.Now.Add(-time.Second)} // not graceful, 1 s ago
							if claim != present {
								in.View.Leader.Present = present
								in.View.Leader.Node, in.View.Leader.Lease, in.View.Leader.CreateRev = "web-node-2", lease, 90
							}
							if fault {
								in.Self.State = election.StateFault
							}
							d, _ := Decide(in)
							name := fmt.Sprintf("now=+%v lease=%x claim=%v flags=%d present=%v fault=%v: %v (%s)", now, leaseID, claim, flags, present, fault, d.Action, d.Reason)
							if in.Held.Unsure && d.Action != Inspect {
								t.Errorf("%s: want inspect while an acquire's outcome is unknown", name)
							}
							if d.Action == Hold && (!claim || !in.Lease.Live(in.Now) || in.Lease.ID != lease || in.Held.Lapsed || in.Held.Partial || !in.View.Leader.Present || in.Retiring != "" || fault) {
								t.Errorf("%s: Hold", name)
							}
							if claim && (d.Action == Idle || d.Action == Acquire || d.Action == Leave) {
								t.Errorf("%s: a claim abandoned", name)
							}
							if d.Action == Acquire && ownKeysVisible(in) {
								t.Errorf("%s: Acquire with keys of ours visible", name)
							}
							if d.Action == Hold && (in.Held.Resigning || in.Held.Fresh) {
								t.Errorf("%s: Hold of a claim that is being resigned or is fresh within the grace", name)
							}
						}
					}
				}
			}
		}
	}
}

// TestDecideMemory: what the loop remembers from pass to pass.
func TestDecideMemory(t *testing.T) {
	n1 := election.Candidate{Node: "web-node-1", Priority: 103, State: election.StateBackup, Preempt: true}

	t.Run("vacancy starts when first seen and ends with a leader", func(t *testing.T) {
		in := base()
		in.Mem = Memory{}
		_, m := Decide(in)
		if !m.VacantSince.Equal(t0) {
			t.Fatalf("VacantSince = %v, want %v", m.VacantSince, t0)
		}
		in.Mem, in.Now = m, t0.Add(time.Second)
		if _, m2 := Decide(in); !m2.VacantSince.Equal(t0) {
			t.Errorf("VacantSince moved to %v", m2.VacantSince)
		}
		in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 5, Lease: 7}
		if _, m3 := Decide(in); !m3.VacantSince.IsZero() {
			t.Errorf("VacantSince = %v with a leader", m3.VacantSince)
		}
	})
	t.Run("an address claimed elsewhere is no vacancy", func(t *testing.T) {
		in := base()
		in.Mem = Memory{}
		in.View.Addresses = map[netip.Addr]election.AddressClaim{vip: {Node: "web-node-1", Group: "VI_9", CreateRev: 5, Lease: 7}}
		if _, m := Decide(in); !m.VacantSince.IsZero() {
			t.Errorf("VacantSince = %v while an address is claimed", m.VacantSince)
		}
	})
	t.Run("challenger first seen", func(t *testing.T) {
		in := holding(base())
		in.View.Candidates = []election.Candidate{n1}
		c := n1
		c.PreemptDelay = time.Second
		in.View.Candidates = []election.Candidate{c}
		d, m := Decide(in)
		if m.Challenger != "web-node-1" || !m.ChallengerSince.Equal(t0) || d.Action != Hold {
			t.Fatalf("memory %+v, action %v; want challenger since now and hold", m, d.Action)
		}
		in.Mem, in.Now = m, t0.Add(time.Second)
		d, m = Decide(in)
		if d.Action != Release || m.YieldedTo != "web-node-1" || !m.YieldedAt.Equal(in.Now) {
			t.Fatalf("after the delay: %v, memory %+v; want release and YieldedTo", d.Action, m)
		}
	})
	t.Run("a node yielded to that did not take over is snubbed when we claim again", func(t *testing.T) {
		in := base()
		in.Mem.YieldedTo, in.Mem.YieldedAt = "web-node-1", t0.Add(-time.Second)
		d, m := Decide(in)
		if d.Action != Acquire || m.Snubbed != "web-node-1" || !m.SnubUntil.Equal(t0.Add(3*time.Second)) || m.YieldedTo != "" {
			t.Fatalf("%v, memory %+v; want acquire and web-node-1 snubbed for a TTL", d.Action, m)
		}
		in.Mem, in.Now = m, t0.Add(3*time.Second)
		if _, m := Decide(in); m.Snubbed != "" {
			t.Errorf("snub outlived its TTL: %+v", m)
		}
	})
	t.Run("a vacancy counts from the end of this node's own claim", func(t *testing.T) {
		// A worse node claimed, then yielded to a better challenger
		// before its view ever showed its own claim: the vacancy it saw
		// before its claim is over. Were it kept, the backoff would have
		// run out already and the node would claim again at once, then
		// snub the better node as one that "did not take over" (e2e
		// TestPriorityOrder, seen in CI).
		in := holding(base())
		in.Held.Fresh, in.Held.FreshSince = true, t0
		in.View.Leader = election.LeaderInfo{} // the view lags the claim
		in.View.Addresses = map[netip.Addr]election.AddressClaim{}
		in.View.Rev = 89
		in.Mem.VacantSince = t0.Add(-time.Second)
		in.View.Candidates = []election.Candidate{n1}
		d, m := Decide(in)
		if d.Action != Release || m.YieldedTo != "web-node-1" {
			t.Fatalf("%v, memory %+v; want a release to web-node-1", d.Action, m)
		}
		if !m.VacantSince.IsZero() {
			t.Fatalf("VacantSince = %v while this node held a claim, want zero", m.VacantSince)
		}
		// The claim is resigned; the view still shows no leader.
		in = base()
		in.View.Candidates = []election.Candidate{n1}
		in.Mem, in.Now = m, t0.Add(5*time.Millisecond)
		d, m = Decide(in)
		if d.Action != Idle || !m.VacantSince.Equal(in.Now) || m.Snubbed != "" {
			t.Fatalf("%v (%s), memory %+v; want a rank-1 backoff from now, nobody snubbed", d.Action, d.Reason, m)
		}
		in.Mem, in.Now = m, in.Now.Add(100*time.Millisecond)
		if d, m = Decide(in); d.Action != Acquire || m.Snubbed != "web-node-1" {
			t.Fatalf("%v, memory %+v; want an acquire after the backoff, snubbing the node that did not take over", d.Action, m)
		}
	})
	t.Run("a challenger's delay counts from when it is seen better, the yield waits until it may claim", func(t *testing.T) {
		// As keepalived, preempt_delay runs from when the better node
		// appears; a holder that yielded before it may claim would leave
		// the group vacant, and one that counted from the end of its wait
		// would yield later than the delay says.
		in := holding(base())
		in.Lease.Deadline, in.Lease.ServerExpiry = t0.Add(10*time.Second), t0.Add(11*time.Second)
		c := n1
		c.PreemptDelay = time.Second
		w := c
		w.Waiting = true
		in.View.Candidates = []election.Candidate{w}
		d, m := Decide(in)
		if d.Action != Hold || m.Challenger != "web-node-1" || !m.ChallengerSince.Equal(t0) {
			t.Fatalf("%v, memory %+v; want hold, the challenger counted from now", d.Action, m)
		}
		in.Mem, in.Now = m, t0.Add(1500*time.Millisecond) // the delay is over; still waiting
		if d, m = Decide(in); d.Action != Hold || !strings.Contains(d.Reason, "may not claim yet") || !m.ChallengerSince.Equal(t0) {
			t.Fatalf("%v (%s), memory %+v; want hold until it may claim", d.Action, d.Reason, m)
		}
		in.View.Candidates = []election.Candidate{c} // its wait ends
		in.Mem, in.Now = m, t0.Add(1600*time.Millisecond)
		if d, m = Decide(in); d.Action != Release || m.YieldedTo != "web-node-1" {
			t.Fatalf("%v, memory %+v; want a yield to web-node-1 at once", d.Action, m)
		}
	})
	t.Run("a challenger seen while it waits, its delay longer than the wait", func(t *testing.T) {
		in := holding(base())
		in.Lease.Deadline, in.Lease.ServerExpiry = t0.Add(10*time.Second), t0.Add(11*time.Second)
		c := n1
		c.PreemptDelay = 3 * time.Second
		w := c
		w.Waiting = true
		in.View.Candidates = []election.Candidate{w}
		_, m := Decide(in)
		in.View.Candidates = []election.Candidate{c}
		in.Mem, in.Now = m, t0.Add(time.Second)
		d, m := Decide(in)
		if d.Action != Hold || d.Wake != 2*time.Second {
			t.Fatalf("%v (wake %v); want hold for the rest of the delay (2s)", d.Action, d.Wake)
		}
		in.Mem, in.Now = m, t0.Add(3*time.Second)
		if d, _ = Decide(in); d.Action != Release {
			t.Fatalf("%v; want a yield once the delay from first sight is over", d.Action)
		}
	})
	t.Run("an unsure acquire does not restart the vacancy", func(t *testing.T) {
		// Its answer was lost: if it landed, the claim found resets the
		// vacancy; if not, the node never held one, and the vacancy it
		// saw still counts (no second backoff after a slow etcd).
		in := base()
		in.View.Candidates = []election.Candidate{n1}
		in.Mem.VacantSince = t0.Add(-time.Second)
		in.Held.Unsure = true
		d, m := Decide(in)
		if d.Action != Inspect || !m.VacantSince.Equal(t0.Add(-time.Second)) {
			t.Fatalf("%v, memory %+v; want inspect, the vacancy kept", d.Action, m)
		}
		in.Held.Unsure = false
		in.Mem, in.Now = m, t0.Add(10*time.Millisecond)
		if d, _ := Decide(in); d.Action != Acquire {
			t.Fatalf("%v (%s); want acquire at once: the backoff ran out", d.Action, d.Reason)
		}
	})
	t.Run("the yielded-to node took over", func(t *testing.T) {
		in := base()
		in.Mem.YieldedTo, in.Mem.YieldedAt = "web-node-1", t0
		in.View.Leader = election.LeaderInfo{Present: true, Node: "web-node-1", CreateRev: 5, Lease: 7}
		if _, m := Decide(in); m.YieldedTo != "" {
			t.Errorf("YieldedTo = %q after it took over", m.YieldedTo)
		}
	})
	t.Run("a handover is carried out once per request", func(t *testing.T) {
		in := holding(base())
		in.View.Candidates = []election.Candidate{{Node: "web-node-3", Priority: 90, State: election.StateBackup, Preempt: true}}
		in.View.Handover = &election.Handover{From: "web-node-2", Rev: 95}
		d, m := Decide(in)
		if d.Action != Release || d.Handover != 95 {
			t.Fatalf("%v (handover %d); want a release carrying out request 95", d.Action, d.Handover)
		}
		if d2, _ := Decide(in); d2.Action != Release {
			t.Fatalf("before the resign was sent, the request is still to be carried out: %v", d2.Action)
		}
		m.HandoverDone = d.Handover // the loop, once the resign is sent
		in.Mem = m
		if d, _ := Decide(in); d.Action != Hold {
			t.Errorf("reclaimed holder decided %v for the same request, want hold", d.Action)
		}
		in.View.Handover = nil
		if _, m := Decide(in); m.HandoverDone != 0 {
			t.Errorf("HandoverDone = %d after the request went away", m.HandoverDone)
		}
	})
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
	// The last safe refresh leaves a 1 s lifetime plus the kernel slack
	// before the lease can expire at the server.
	se := t0.Add(3 * time.Second)
	if got := LastRefresh(se); !got.Equal(se.Add(-LifetimeSlack - netif.AckAllowance - 1100*time.Millisecond)) {
		t.Errorf("LastRefresh = %v", got.Sub(t0))
	}
	end := LifetimeEnd(se).Add(-netif.AckAllowance) // as netif.Bind computes it
	if lt, ok := netif.LifetimeUntil(LastRefresh(se), end); !ok || lt != time.Second {
		t.Errorf("at LastRefresh: lifetime %v, %v; want 1s", lt, ok)
	}
	if lt, ok := netif.LifetimeUntil(LastRefresh(se).Add(100*time.Millisecond), end); !ok || lt != time.Second {
		t.Errorf("100ms after LastRefresh: lifetime %v, %v; want still 1s", lt, ok)
	}
	if _, ok := netif.LifetimeUntil(LastRefresh(se).Add(101*time.Millisecond), end); ok {
		t.Error("101ms after LastRefresh: a lifetime was still given")
	}
	// Right after a renewal of a 3 s lease (sent 5 ms ago), a 1 s lifetime
	// fits: the TTL 3 s minimum stays usable.
	if lt, ok := netif.LifetimeUntil(se.Add(-3*time.Second+5*time.Millisecond), end); !ok || lt != time.Second {
		t.Errorf("right after a renewal: lifetime %v, %v; want 1s", lt, ok)
	}
	renewed := t0
	expiry := renewed.Add(3 * time.Second) // last safe refresh at +0.8s
	cases := []struct {
		name  string
		now   time.Duration
		until time.Duration // kernel lifetime end, after t0; 0 = none
		want  time.Duration
	}{
		{"lifetime outlasts the last safe refresh: wait for that", 0, 1500 * time.Millisecond, 800 * time.Millisecond},
		{"lifetime ends first: refresh 300ms before it", 0, time.Second, 700 * time.Millisecond},
		{"a skipped renewal left the lifetime at +1.05s: refresh at +0.75s", 600 * time.Millisecond, 1050 * time.Millisecond, 150 * time.Millisecond},
		{"no lifetime set yet", 0, 0, 800 * time.Millisecond},
		{"too late to refresh before the lifetime ends: the last safe refresh", 750 * time.Millisecond, 1050 * time.Millisecond, 50 * time.Millisecond},
		{"past both: nothing due", time.Second, 1100 * time.Millisecond, -200 * time.Millisecond},
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

func TestRefreshNeeded(t *testing.T) {
	const ms = time.Millisecond
	expiry := t0.Add(3 * time.Second) // renewal sent at t0: LastRefresh at +0.8s
	early := netif.KernelEarlyExpiry
	cases := []struct {
		name         string
		now, expires time.Duration // after t0
		newEnd       time.Duration // after t0; 0 = no safe lifetime
		want         bool
	}{
		{"a renewal that moves the end by 500ms", 0, 500*ms - early, 1000 * ms, true},
		{"a renewal that moves the end by 200ms", 0, 800*ms - early, 1000 * ms, false},
		{"expiring within 300ms", 600 * ms, 900*ms - early, 1600 * ms, true},
		{"expiring within 300ms, no safe lifetime", 600 * ms, 900*ms - early, 0, true},
		{"the last safe refresh, a 36ms gain", 800 * ms, 1764*ms - early, 1800 * ms, true},
		{"just before the last safe refresh, a 36ms gain", 799 * ms, 1764*ms - early, 1799 * ms, false},
		{"the last safe refresh, no gain", 800 * ms, 1800*ms - early, 1800 * ms, false},
		{"the last safe refresh would shorten the lifetime", 850 * ms, 1900*ms - early, 1850 * ms, false},
		{"past the last safe refresh, no safe lifetime", 950 * ms, 1800*ms - early, 0, false},
		{"already refreshed at the last safe refresh: no repeat 10ms later", 810 * ms, 1800*ms - early, 1810 * ms, false},
		{"already refreshed at the last safe refresh: no repeat 90ms later", 890 * ms, 1800*ms - early, 1890 * ms, false},
	}
	for _, c := range cases {
		var newEnd time.Time
		if c.newEnd > 0 {
			newEnd = t0.Add(c.newEnd)
		}
		if got := RefreshNeeded(t0.Add(c.now), t0.Add(c.expires), newEnd, expiry); got != c.want {
			t.Errorf("%s: RefreshNeeded = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestReportedState(t *testing.T) {
	M, B, F := election.StateMaster, election.StateBackup, election.StateFault
	cases := []struct {
		decided        election.State
		bound, claimed bool
		want           election.State
	}{
		{M, true, true, M},
		{M, false, true, B}, // won, bind failed or pending
		{M, true, false, B}, // leftovers being removed, no claim
		{B, true, true, M},  // bound under a claim is MASTER, whatever was hoped for
		{F, false, false, F},
		{F, true, true, M},
		{B, false, false, B},
	}
	for _, c := range cases {
		if got := ReportedState(c.decided, c.bound, c.claimed); got != c.want {
			t.Errorf("ReportedState(%s, bound %v, claimed %v) = %s, want %s", c.decided, c.bound, c.claimed, got, c.want)
		}
	}
}

func TestFailsafeLease(t *testing.T) {
	const old, fresh = clientv3.LeaseID(7), clientv3.LeaseID(8)
	margin := 500 * time.Millisecond
	live := election.Lease{ID: old, Renewed: t0, Deadline: t0.Add(2500 * time.Millisecond), ServerExpiry: t0.Add(3 * time.Second)}
	cases := []struct {
		name     string
		session  election.Lease
		horizon  time.Time
		failsafe bool
		deadline time.Time
	}{
		{"no promises: the session's", live, time.Time{}, false, live.Deadline},
		{"the lease covers longer: the session's", live, t0.Add(2 * time.Second), false, live.Deadline},
		{"the lease covers exactly as long: the session's", live, t0.Add(3 * time.Second), false, live.Deadline},
		{"the promises cover longer: failsafe", live, t0.Add(4 * time.Second), true, t0.Add(3500 * time.Millisecond)},
		{"the lease is gone (new one): failsafe on the claim's lease", election.Lease{ID: fresh, Deadline: t0.Add(9 * time.Second), ServerExpiry: t0.Add(10 * time.Second)},
			t0.Add(time.Second), true, t0.Add(500 * time.Millisecond)},
		{"no lease at all: failsafe", election.Lease{}, t0.Add(time.Second), true, t0.Add(500 * time.Millisecond)},
	}
	for _, c := range cases {
		l := failsafeLease(c.session, old, c.horizon, margin)
		if l.Failsafe != c.failsafe || !l.Deadline.Equal(c.deadline) {
			t.Errorf("%s: %+v, want failsafe %v deadline %v", c.name, l, c.failsafe, c.deadline)
		}
		if c.failsafe && (l.ID != old || !l.ServerExpiry.Equal(c.horizon)) {
			t.Errorf("%s: %+v, want the claim's lease %v and the horizon as server expiry", c.name, l, old)
		}
	}
}

func TestHorizon(t *testing.T) {
	covered := map[netip.Addr]bool{vip: true}
	p := func(s int, susp time.Duration) promise {
		return promise{Until: t0.Add(time.Duration(s) * time.Second), Suspended: susp, Addrs: covered}
	}
	both := map[string]string{"n1": "a", "n2": "b", "n3": "c"}
	cases := []struct {
		name    string
		members map[string]string
		got     map[string]promise
		meter   time.Duration
		want    time.Time
	}{
		{"every other member promised: the earliest end", both, map[string]promise{"n2": p(3, 0), "n3": p(2, 0)}, 0, t0.Add(2 * time.Second)},
		{"our own promise is not needed", both, map[string]promise{"n1": p(1, 0), "n2": p(3, 0), "n3": p(4, 0)}, 0, t0.Add(3 * time.Second)},
		{"one member missing: none", both, map[string]promise{"n2": p(3, 0)}, 0, time.Time{}},
		{"no other member: none", map[string]string{"n1": "a"}, map[string]promise{}, 0, time.Time{}},
		{"no members at all: none", nil, nil, 0, time.Time{}},
		{"a suspend since a promise was asked voids it", both, map[string]promise{"n2": p(3, 0), "n3": p(4, time.Second)}, 2 * time.Second, time.Time{}},
		{"suspend readings that did not move count", both, map[string]promise{"n2": p(3, time.Second), "n3": p(4, time.Second)}, time.Second + 5*time.Millisecond, t0.Add(3 * time.Second)},
		{"a promise that does not cover the claim's address: none", both, map[string]promise{"n2": p(3, 0),
			"n3": {Until: t0.Add(4 * time.Second), Addrs: map[netip.Addr]bool{netip.MustParseAddr("192.168.20.16"): true}}}, 0, time.Time{}},
	}
	for _, c := range cases {
		if got := horizon("n1", c.members, []netip.Addr{vip}, c.got, c.meter); !got.Equal(c.want) {
			t.Errorf("%s: horizon %v, want %v", c.name, got, c.want)
		}
	}
}

func TestHolderMode(t *testing.T) {
	fs, relayed := election.Lease{Failsafe: true}, election.Lease{Relayed: true}
	cases := []struct {
		state          election.State
		lease, session election.Lease
		want           string
	}{
		{election.StateMaster, election.Lease{}, election.Lease{}, ""},
		{election.StateMaster, election.Lease{}, relayed, "relay"},
		{election.StateMaster, fs, relayed, "failsafe"},
		{election.StateBackup, fs, relayed, ""},
	}
	for _, c := range cases {
		if got := HolderMode(c.state, c.lease, c.session); got != c.want {
			t.Errorf("HolderMode(%v, %+v, %+v) = %q, want %q", c.state, c.lease, c.session, got, c.want)
		}
	}
}

func TestMayRelease(t *testing.T) {
	const old, cur = clientv3.LeaseID(7), clientv3.LeaseID(8)
	got := map[string]promise{"n2": {Until: t0.Add(3 * time.Second)}}
	covering := election.Lease{ID: cur, ServerExpiry: t0.Add(3 * time.Second)}
	short := election.Lease{ID: cur, ServerExpiry: t0.Add(2 * time.Second)}
	cases := []struct {
		name      string
		got       map[string]promise
		claims    map[string]clientv3.LeaseID
		lingering bool
		l         election.Lease
		want      bool
	}{
		{"no promises: nothing to release", nil, nil, false, covering, false},
		{"no claim, no VIP left: release", got, nil, false, short, true},
		{"no claim, but a VIP may linger: keep", got, nil, true, covering, false},
		{"claims on the lease, which covers the promises: release", got, map[string]clientv3.LeaseID{"VI_1": cur}, false, covering, true},
		{"claims on the lease, which ends before the promises: keep", got, map[string]clientv3.LeaseID{"VI_1": cur}, false, short, false},
		{"a claim on a lost lease (to be claimed anew): keep", got, map[string]clientv3.LeaseID{"VI_1": old}, false, covering, false},
	}
	for _, c := range cases {
		if r := mayRelease(c.got, c.claims, c.lingering, c.l); r != c.want {
			t.Errorf("%s: %v, want %v", c.name, r, c.want)
		}
	}
}
