package election

import (
	"testing"
	"time"
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

func TestKernelLifetime(t *testing.T) {
	// serverExpiry - now: the kernel must remove the address (lifetime plus
	// up to KernelExpirySlack) before the server may expire the lease.
	cases := []struct {
		left time.Duration
		want time.Duration
		ok   bool
	}{
		{4 * time.Second, 2 * time.Second, true},
		{3 * time.Second, time.Second, true},
		{2990 * time.Millisecond, time.Second, true},
		{2050 * time.Millisecond, time.Second, true},
		{2049 * time.Millisecond, 0, false},
		{time.Second, 0, false},
		{0, 0, false},
		{-time.Second, 0, false},
	}
	for _, c := range cases {
		got, ok := KernelLifetime(t0, t0.Add(c.left))
		if got != c.want || ok != c.ok {
			t.Errorf("left %v: got (%v, %v), want (%v, %v)", c.left, got, ok, c.want, c.ok)
		}
		if ok && t0.Add(got+KernelExpirySlack).After(t0.Add(c.left)) {
			t.Errorf("left %v: lifetime %v plus kernel slack outlives the server expiry", c.left, got)
		}
	}
	se := t0.Add(3 * time.Second)
	if lt, ok := KernelLifetime(LastRefresh(se), se); !ok || lt != time.Second {
		t.Errorf("at LastRefresh the lifetime is (%v, %v), want (1s, true)", lt, ok)
	}
	if lt, ok := KernelLifetime(LastRefresh(se).Add(100*time.Millisecond), se); !ok || lt != time.Second {
		t.Error("LastRefresh leaves no room for timer latency")
	}
	if _, ok := KernelLifetime(LastRefresh(se).Add(101*time.Millisecond), se); ok {
		t.Error("a lifetime can still be set more than 100ms after LastRefresh")
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
