package keeper

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
)

func TestPlanPublish(t *testing.T) {
	const ours, old, other = clientv3.LeaseID(7), clientv3.LeaseID(5), clientv3.LeaseID(9)
	want := election.Candidate{Node: "n1", Priority: 103, State: election.StateMaster, Preempt: true,
		Interface: "eth0", Addresses: []string{"192.168.20.15/24"}}
	rec := func(prio int, lease clientv3.LeaseID, modRev int64) election.Candidate {
		c := want
		c.Priority, c.Lease, c.ModRev = prio, int64(lease), modRev
		return c
	}
	view := func(rev int64, cands ...election.Candidate) election.GroupState {
		return election.GroupState{Synced: true, Rev: rev, Candidates: cands}
	}
	written := recordState{Written: want, Lease: ours, ModRev: 40}
	cases := []struct {
		name      string
		relayed   bool
		rs        recordState
		v         election.GroupState
		write     bool
		expect    int64
		contested bool
	}{
		{"in etcd as wanted", false, written, view(50, rec(103, ours, 40)), false, 0, false},
		{"deleted behind our back", false, written, view(50), true, 0, false},
		{"changed (priority)", false, written, view(50, rec(101, ours, 40)), true, 40, false},
		{"changed (interface, after a reload)", false, written, view(50, func() election.Candidate { c := rec(103, ours, 40); c.Interface = "eth1"; return c }()), true, 40, false},
		{"changed (addresses, after a reload)", false, written, view(50, func() election.Candidate {
			c := rec(103, ours, 40)
			c.Addresses = []string{"192.168.20.16/24"}
			return c
		}()), true, 40, false},
		{"view not caught up with our write: trust the write", false, written, view(39), false, 0, false},
		{"view not caught up, and we want another record", false, recordState{Written: rec(101, ours, 0), Lease: ours, ModRev: 40}, view(39), true, 40, false},
		{"after a lease change: the record is on the old lease", false, recordState{Written: want, Lease: old, ModRev: 30}, view(50, rec(103, old, 30)), true, 30, false},
		{"another process writes this node's record", false, written, view(50, rec(103, other, 45)), true, 45, true},
		{"view not synced: nothing (re-listing after a partition)", false, recordState{}, election.GroupState{Rev: 50}, false, 0, false},
		{"not synced, relayed, our record on this lease changed: write it guarded by our last write", true, recordState{Written: rec(101, ours, 0), Lease: ours, ModRev: 40}, election.GroupState{Rev: 50}, true, 40, false},
		{"not synced, relayed, nothing changed", true, written, election.GroupState{Rev: 50}, false, 0, false},
		{"not synced, relayed, never written on this lease: nothing", true, recordState{Written: want, Lease: old, ModRev: 30}, election.GroupState{Rev: 50}, false, 0, false},
		{"not synced, not relayed, record changed: nothing", false, recordState{Written: rec(101, ours, 0), Lease: ours, ModRev: 40}, election.GroupState{Rev: 50}, false, 0, false},
		{"changed (waiting)", false, written, view(50, func() election.Candidate { c := rec(103, ours, 40); c.Waiting = true; return c }()), true, 40, false},
	}
	for _, c := range cases {
		p := planPublish(want, ours, c.relayed, c.rs, c.v)
		if p.Write != c.write || (c.write && p.Expect != c.expect) || p.Contested != c.contested {
			t.Errorf("%s: plan %+v, want write %v expect %d contested %v", c.name, p, c.write, c.expect, c.contested)
		}
	}
	if p := planPublish(want, 0, false, written, view(50)); p.Write {
		t.Error("a plan to write without a lease")
	}
}

// An older vipd that relays this node's publish drops the fields it does
// not know: Interface, Addresses and Waiting. Without Waiting the record
// only lets holders yield as early as they used to, and is left alone (a
// rewrite would be relayed the same way, and loop); a record that still
// says Waiting when this node may claim is rewritten, or no holder would
// ever yield to it.
func TestStoredMatchesWaiting(t *testing.T) {
	want := election.Candidate{Node: "n1", Priority: 103, State: election.StateBackup, Preempt: true,
		Interface: "eth0", Addresses: []string{"192.168.20.15/24"}}
	waiting := want
	waiting.Waiting = true
	relayedByOld := func(c election.Candidate) election.Candidate {
		c.Interface, c.Addresses, c.Waiting = "", nil, false
		return c
	}
	noAddrs := func(c election.Candidate) election.Candidate { // a group without addresses
		c.Interface, c.Addresses = "", nil
		return c
	}
	cases := []struct {
		name         string
		stored, want election.Candidate
		match        bool
	}{
		{"as written", waiting, waiting, true},
		{"waiting ended", waiting, want, false},
		{"became waiting", want, waiting, false},
		{"relayed by an older vipd while waiting", relayedByOld(waiting), waiting, true},
		{"relayed by an older vipd, not waiting", relayedByOld(want), want, true},
		{"no addresses: waiting ended", noAddrs(waiting), noAddrs(want), false},
		{"no addresses: as written", noAddrs(waiting), noAddrs(waiting), true},
		// Indistinguishable from an older relay's record: left as it is,
		// which is how holders behaved before the field existed.
		{"no addresses: became waiting", noAddrs(want), noAddrs(waiting), true},
	}
	for _, c := range cases {
		if got := storedMatches(c.stored, c.want); got != c.match {
			t.Errorf("%s: storedMatches = %v, want %v", c.name, got, c.match)
		}
	}
}
