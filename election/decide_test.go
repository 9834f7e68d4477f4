package election

import (
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var t0 = time.Unix(1_700_000_000, 0)

func TestFenceDeadlineCountsFromSendTime(t *testing.T) {
	// A renewal sent at t0 whose answer arrives 1.9 s late still yields a
	// deadline relative to t0: the server renewed at or after t0, so its
	// expiry is no earlier than t0+TTL, but may be that early.
	sent := t0
	answered := t0.Add(1900 * time.Millisecond)
	d := FenceDeadline(sent, 3*time.Second, 500*time.Millisecond)
	if want := t0.Add(2500 * time.Millisecond); !d.Equal(want) {
		t.Fatalf("deadline = %v, want %v", d, want)
	}
	if left := d.Sub(answered); left != 600*time.Millisecond {
		t.Fatalf("time left after the late answer = %v, want 600ms", left)
	}
}

func cand(node string, prio int) Candidate {
	return Candidate{Node: node, Priority: prio, State: StateBackup, Preempt: true}
}

func TestRankAndBackoff(t *testing.T) {
	n1, n2, n3 := cand("web-node-1", 103), cand("web-node-2", 102), cand("web-node-3", 101)
	fault := cand("web-node-0", 200)
	fault.State = StateFault
	drained := cand("web-node-9", 250)
	drained.Drained = true
	cases := []struct {
		name  string
		self  Candidate
		cands []Candidate
		want  int
	}{
		{"best", n1, []Candidate{n1, n2, n3}, 0},
		{"second", n2, []Candidate{n1, n2, n3}, 1},
		{"third", n3, []Candidate{n1, n2, n3}, 2},
		{"own record missing", n2, []Candidate{n1, n3}, 1},
		{"stale own record ignored", cand("web-node-2", 104), []Candidate{n1, n2, n3}, 0},
		{"fault and drained not counted", n3, []Candidate{fault, drained, n3}, 0},
		{"tie broken by name", cand("web-node-2", 103), []Candidate{n1}, 1},
		{"tie won by name", cand("web-node-0", 103), []Candidate{n1}, 0},
		{"alone", n3, nil, 0},
	}
	for _, c := range cases {
		if got := Rank(c.self, c.cands); got != c.want {
			t.Errorf("%s: Rank = %d, want %d", c.name, got, c.want)
		}
	}
	if got := Backoff(2, 100*time.Millisecond); got != 200*time.Millisecond {
		t.Errorf("Backoff(2, 100ms) = %v", got)
	}
	if got := Backoff(0, 100*time.Millisecond); got != 0 {
		t.Errorf("Backoff(0, 100ms) = %v, want 0 (the best node claims at once)", got)
	}
}

func TestChallenger(t *testing.T) {
	holder := cand("web-node-1", 101) // HAProxy down: 101 + 0
	better := cand("web-node-2", 102)
	noPreempt := better
	noPreempt.Preempt = false
	faulty := cand("web-node-3", 200)
	faulty.State = StateFault
	equal := cand("web-node-0", 101)
	waiting := cand("web-node-5", 150)
	waiting.Waiting = true
	cases := []struct {
		name  string
		cands []Candidate
		want  string
	}{
		{"seed: 102 beats 101", []Candidate{holder, better}, "web-node-2"},
		{"nopreempt on the challenger", []Candidate{holder, noPreempt}, ""},
		{"fault cannot challenge", []Candidate{holder, faulty}, ""},
		{"equal priority never preempts", []Candidate{holder, equal}, ""},
		{"best of several", []Candidate{holder, better, cand("web-node-4", 150)}, "web-node-4"},
		{"own record ignored", []Candidate{cand("web-node-1", 200)}, ""},
		{"a node that may not claim yet cannot challenge", []Candidate{holder, waiting}, ""},
		{"the best free to claim", []Candidate{holder, waiting, better}, "web-node-2"},
	}
	for _, c := range cases {
		got, ok := Challenger(holder, c.cands)
		if (c.want == "") == ok || (ok && got.Node != c.want) {
			t.Errorf("%s: Challenger = %v/%v, want %q", c.name, got.Node, ok, c.want)
		}
	}
}

func TestShouldPreempt(t *testing.T) {
	cases := []struct {
		since, delay time.Duration // since = how long the challenger has been present
		yield        bool
		wait         time.Duration
	}{
		{0, 0, true, 0},
		{0, 5 * time.Second, false, 5 * time.Second},
		{3 * time.Second, 5 * time.Second, false, 2 * time.Second},
		{5 * time.Second, 5 * time.Second, true, 0},
		{9 * time.Second, 5 * time.Second, true, 0},
	}
	for _, c := range cases {
		yield, wait := ShouldPreempt(t0, t0.Add(-c.since), c.delay)
		if yield != c.yield || wait != c.wait {
			t.Errorf("present %v, delay %v: got (%v, %v), want (%v, %v)", c.since, c.delay, yield, wait, c.yield, c.wait)
		}
	}
}

func TestKeys(t *testing.T) {
	k := Keys{Prefix: "/vipd"}
	if got := k.Leader("VI_1"); got != "/vipd/groups/VI_1/leader" {
		t.Errorf("Leader = %q", got)
	}
	cases := []struct {
		key   string
		group string
		kind  KeyKind
		node  string
	}{
		{"/vipd/groups/VI_1/leader", "VI_1", KeyLeader, ""},
		{"/vipd/groups/VI_1/candidates/web-node-2", "VI_1", KeyCandidate, "web-node-2"},
		{"/vipd/groups/VI_1/candidates/", "", KeyUnknown, ""},
		{"/vipd/groups//leader", "", KeyUnknown, ""},
		{"/vipd/groups/VI_1/junk", "", KeyUnknown, ""},
		{"/other/groups/VI_1/leader", "", KeyUnknown, ""},
	}
	for _, c := range cases {
		g, kind, n := k.Parse(c.key)
		if g != c.group || kind != c.kind || n != c.node {
			t.Errorf("Parse(%q) = %q %v %q", c.key, g, kind, n)
		}
	}
}

func TestVacancyDue(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	step := 100 * time.Millisecond
	cases := []struct {
		name    string
		wonAt   time.Time
		rank    int
		wantOff time.Duration // after t0
	}{
		{"best candidate claims at the vacancy", time.Time{}, 0, 0},
		{"best candidate ignores wins (there is no better node)", t0.Add(time.Second), 0, 0},
		{"second waits one step from the vacancy", time.Time{}, 1, step},
		{"a win before the vacancy changes nothing", t0.Add(-time.Second), 1, step},
		{"a better node's later win restarts the backoff", t0.Add(250 * time.Millisecond), 1, 350 * time.Millisecond},
		{"third waits two steps from that win", t0.Add(250 * time.Millisecond), 2, 450 * time.Millisecond},
	}
	for _, c := range cases {
		got := VacancyDue(t0, c.wonAt, c.rank, step)
		if want := t0.Add(c.wantOff); !got.Equal(want) {
			t.Errorf("%s: due at +%v, want +%v", c.name, got.Sub(t0), c.wantOff)
		}
	}
}

// The chosen target of a handover claims at rank 0 whether or not the
// request names it: without --to, a two-node group used to give both nodes
// rank 1, so the target waited a backoff step (110–210 ms outage).
func TestRankWithHandover(t *testing.T) {
	n1, n2, n3 := cand("web-node-1", 103), cand("web-node-2", 102), cand("web-node-3", 101)
	fault := cand("web-node-0", 250)
	fault.State = StateFault
	two := []Candidate{n1, n2}
	three := []Candidate{n1, n2, n3}
	cases := []struct {
		name  string
		self  Candidate
		cands []Candidate
		h     *Handover
		want  int
	}{
		{"no handover", n2, two, nil, 1},
		{"two nodes, no --to: the other node is the target", n2, two, &Handover{From: "web-node-1"}, 0},
		{"two nodes, no --to: the holder ranks last", n1, two, &Handover{From: "web-node-1"}, 2},
		{"two nodes, --to", n2, two, &Handover{From: "web-node-1", To: "web-node-2"}, 0},
		{"three nodes, no --to: best other is the target", n2, three, &Handover{From: "web-node-1"}, 0},
		{"three nodes, no --to: the rest one step later", n3, three, &Handover{From: "web-node-1"}, 3},
		{"three nodes, --to the worst", n3, three, &Handover{From: "web-node-1", To: "web-node-3"}, 0},
		{"three nodes, --to the worst: the better one waits", n2, three, &Handover{From: "web-node-1", To: "web-node-3"}, 2},
		{"a faulty node is never the target", n2, []Candidate{n1, n2, fault}, &Handover{From: "web-node-1"}, 0},
		{"--to a faulty node: no target, plain ranks", n2, []Candidate{n1, n2, fault}, &Handover{From: "web-node-1", To: "web-node-0"}, 1},
	}
	for _, c := range cases {
		if got := RankWithHandover(c.self, c.cands, c.h); got != c.want {
			t.Errorf("%s: RankWithHandover = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestHandoverTarget(t *testing.T) {
	n1, n2, n3 := cand("web-node-1", 103), cand("web-node-2", 102), cand("web-node-3", 101)
	drained := cand("web-node-0", 250)
	drained.Drained = true
	waiting := cand("web-node-9", 250)
	waiting.Waiting = true
	cases := []struct {
		name   string
		h      Handover
		cands  []Candidate
		want   string
		wantOK bool
	}{
		{"best other", Handover{From: "web-node-1"}, []Candidate{n1, n2, n3}, "web-node-2", true},
		{"named", Handover{From: "web-node-1", To: "web-node-3"}, []Candidate{n1, n2, n3}, "web-node-3", true},
		{"named but absent", Handover{From: "web-node-1", To: "web-node-7"}, []Candidate{n1, n2}, "", false},
		{"drained is skipped", Handover{From: "web-node-1"}, []Candidate{n1, drained, n3}, "web-node-3", true},
		{"nobody else", Handover{From: "web-node-1"}, []Candidate{n1}, "", false},
		{"the best may not claim yet: not yet (not to the next best, which it would preempt)", Handover{From: "web-node-1"}, []Candidate{n1, waiting, n3}, "web-node-9", false},
		{"named but waiting: not yet", Handover{From: "web-node-1", To: "web-node-9"}, []Candidate{n1, waiting, n3}, "web-node-9", false},
		{"named, another waiting", Handover{From: "web-node-1", To: "web-node-3"}, []Candidate{n1, waiting, n3}, "web-node-3", true},
	}
	for _, c := range cases {
		got, ok := HandoverTarget(&c.h, c.cands)
		if got != c.want || ok != c.wantOK {
			t.Errorf("%s: HandoverTarget = %q, %v; want %q, %v", c.name, got, ok, c.want, c.wantOK)
		}
	}
}

func TestClaimOf(t *testing.T) {
	const lease, other = clientv3.LeaseID(7), clientv3.LeaseID(9)
	a1, a2 := netip.MustParseAddr("192.168.20.15"), netip.MustParseAddr("192.168.20.16")
	addrs := []netip.Addr{a1, a2}
	mine := func(rev int64) AddressClaim {
		return AddressClaim{Node: "n1", Group: "VI_1", CreateRev: rev, Lease: lease}
	}
	leader := LeaderInfo{Present: true, Node: "n1", CreateRev: 40, Lease: lease}
	cases := []struct {
		name               string
		o                  Ownership
		wantRev            int64
		complete, wantFind bool
	}{
		{"all ours", Ownership{Leader: leader, Addrs: []AddressClaim{mine(40), mine(40)}}, 40, true, true},
		{"nothing", Ownership{Addrs: make([]AddressClaim, 2)}, 0, false, false},
		{"leader ours, one address key deleted", Ownership{Leader: leader, Addrs: []AddressClaim{mine(40), {}}}, 40, false, true},
		{"leader ours, address from another claim of ours", Ownership{Leader: leader, Addrs: []AddressClaim{mine(40), mine(12)}}, 40, false, true},
		{"leader gone, an address key of ours left", Ownership{Addrs: []AddressClaim{{}, mine(40)}}, 40, false, true},
		{"leader ours on another lease", Ownership{Leader: LeaderInfo{Present: true, Node: "n1", CreateRev: 40, Lease: other}, Addrs: make([]AddressClaim, 2)}, 0, false, false},
		{"leader another node's", Ownership{Leader: LeaderInfo{Present: true, Node: "n2", CreateRev: 40, Lease: other}, Addrs: []AddressClaim{{Node: "n2", Group: "VI_1", CreateRev: 40, Lease: other}, {}}}, 0, false, false},
		{"our address key for another group is not this group's", Ownership{Addrs: []AddressClaim{{Node: "n1", Group: "VI_2", CreateRev: 30, Lease: lease}, {}}}, 0, false, false},
	}
	for _, c := range cases {
		got, complete, found := c.o.ClaimOf("VI_1", "n1", lease, addrs)
		if found != c.wantFind || complete != c.complete || (found && (got.CreateRev != c.wantRev || got.Lease != lease || !got.Covers(addrs))) {
			t.Errorf("%s: ClaimOf = %+v complete=%v found=%v; want rev %d complete=%v found=%v", c.name, got, complete, found, c.wantRev, c.complete, c.wantFind)
		}
	}
}

func TestAddressKeys(t *testing.T) {
	k := Keys{Prefix: "/vipd"}
	for _, s := range []string{"192.168.20.15", "2001:db8::15"} {
		ip := netip.MustParseAddr(s)
		key := k.Address(ip)
		if key != "/vipd/addresses/"+s {
			t.Errorf("Address(%s) = %q", s, key)
		}
		got, ok := k.ParseAddress(key)
		if !ok || got != ip {
			t.Errorf("ParseAddress(%q) = %v, %v", key, got, ok)
		}
		if _, kind, _ := k.Parse(key); kind != KeyAddress {
			t.Errorf("Parse(%q) kind = %v, want KeyAddress", key, kind)
		}
	}
	for _, bad := range []string{"/vipd/addresses/", "/vipd/addresses/x", "/vipd/addresses/192.168.020.15", "/vipd/addresses/fe80::1%eth0", "/vipd/addresses/2001:DB8::15"} {
		if _, ok := k.ParseAddress(bad); ok {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
	if got := k.Address(netip.MustParseAddr("::ffff:192.168.20.15")); got != "/vipd/addresses/192.168.20.15" {
		t.Errorf("a v4-mapped address maps to %q, want its IPv4 form", got)
	}
}
