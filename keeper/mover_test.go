package keeper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
)

func TestNextMoverCall(t *testing.T) {
	const iv = 10 * time.Second
	now := h0
	cases := []struct {
		name        string
		p           moverPlan
		op, outcome string
		want        moverPlan
	}{
		{"assert ok: check after 1s (a late request of the previous holder may land)", moverPlan{failures: 2}, MoverAssertOp, MoverOK, moverPlan{asserted: true, settle: time.Second, next: now.Add(time.Second)}},
		{"check ok: check again after twice as long", moverPlan{asserted: true, settle: time.Second}, MoverCheckOp, MoverOK, moverPlan{asserted: true, settle: 2 * time.Second, next: now.Add(2 * time.Second)}},
		{"check ok: at most the interval", moverPlan{asserted: true, settle: 8 * time.Second}, MoverCheckOp, MoverOK, moverPlan{asserted: true, settle: iv, next: now.Add(iv)}},
		{"drift: assert at once", moverPlan{asserted: true, settle: iv}, MoverCheckOp, MoverDrift, moverPlan{next: now}},
		{"first failure: 250ms", moverPlan{}, MoverAssertOp, MoverError, moverPlan{failures: 1, next: now.Add(250 * time.Millisecond)}},
		{"third failure: 1s", moverPlan{failures: 2}, MoverAssertOp, MoverTimeout, moverPlan{failures: 3, next: now.Add(time.Second)}},
		{"many failures: at most the interval", moverPlan{failures: 20}, MoverAssertOp, MoverFenced, moverPlan{failures: 21, next: now.Add(iv)}},
		{"a failed check keeps the assert done", moverPlan{asserted: true, settle: iv}, MoverCheckOp, MoverError, moverPlan{asserted: true, settle: iv, failures: 1, next: now.Add(250 * time.Millisecond)}},
	}
	for _, c := range cases {
		if got := nextMoverCall(c.p, c.op, c.outcome, now, iv); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestMayCall(t *testing.T) {
	now := h0
	cases := []struct {
		name    string
		fence   time.Time
		open    bool
		timeout time.Duration
		until   time.Time
		ok      bool
	}{
		{"well inside the fence: the timeout bounds it", now.Add(2 * time.Second), true, time.Second, now.Add(time.Second), true},
		{"the fence comes first: the gate cuts it (renewals move it on)", now.Add(2 * time.Second), true, 5 * time.Second, now.Add(5 * time.Second), true},
		{"not held", now.Add(2 * time.Second), false, time.Second, time.Time{}, false},
		{"too close to the fence", now.Add(minMoverCall - time.Millisecond), true, time.Second, time.Time{}, false},
		{"past the fence (a stall)", now.Add(-time.Second), true, time.Second, time.Time{}, false},
	}
	for _, c := range cases {
		until, ok := mayCall(now, c.fence, c.open, c.timeout)
		if ok != c.ok || !until.Equal(c.until) {
			t.Errorf("%s: %v %v, want %v %v", c.name, until, ok, c.until, c.ok)
		}
	}
}

// fakeMover plays the provider: it records every call with its start and
// end on the clock, and can hold an assert until its context ends.
type fakeMover struct {
	clk clock.Clock
	mu  sync.Mutex
	// calls are the recorded calls; block holds asserts until their
	// context ends; here is what a check answers; fail fails the next
	// calls.
	calls    []moverCallRec
	block    bool
	here     bool
	fail     int
	inFlight int
}

type moverCallRec struct {
	op         string
	node       string
	start, end time.Time
	deadline   time.Time // Move.Deadline
}

func (f *fakeMover) begin(op string, m Move) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, moverCallRec{op: op, node: m.Node, start: f.clk.Now(), deadline: m.Deadline})
	f.inFlight++
	return len(f.calls) - 1
}

func (f *fakeMover) finish(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[i].end = f.clk.Now()
	f.inFlight--
}

func (f *fakeMover) Assert(ctx context.Context, m Move) error {
	i := f.begin(MoverAssertOp, m)
	defer f.finish(i)
	f.mu.Lock()
	block, fail := f.block, f.fail > 0
	if fail {
		f.fail--
	}
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if fail {
		return errors.New("provider says no")
	}
	f.mu.Lock()
	f.here = true
	f.mu.Unlock()
	return nil
}

func (f *fakeMover) Check(ctx context.Context, m Move) (bool, error) {
	i := f.begin(MoverCheckOp, m)
	defer f.finish(i)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.here, nil
}

func (f *fakeMover) snapshot() ([]moverCallRec, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]moverCallRec(nil), f.calls...), f.inFlight
}

func (f *fakeMover) set(fn func(f *fakeMover)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// eventually polls cond in real time (the mover loop runs on its own
// goroutine, on the fake clock).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 5 s", what)
		}
	}
}

// settle gives the mover goroutine time to act on the clock as it is.
func settle() { time.Sleep(20 * time.Millisecond) }

// advanceUntil moves clk on by step, giving the goroutines under test a
// moment after each, until cond holds: it never gets ahead of a timer
// the code under test had yet to arm.
func advanceUntil(t *testing.T, clk *clock.Fake, step time.Duration, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i > 400 {
			t.Fatalf("%s: not after %v of virtual time", what, time.Duration(i)*step)
		}
		clk.Advance(step)
		time.Sleep(2 * time.Millisecond)
	}
}

// The fence rule in virtual time: a call's context ends at the fence; no
// call starts past it (after the fence passed, after a stall); a renewal
// opens the gate again; and after an assert the holder checks every
// interval and asserts again on drift.
func TestMoverRunFenceRule(t *testing.T) {
	clk := clock.NewFake(h0)
	fm := &fakeMover{clk: clk, block: true}
	var mu sync.Mutex
	fence, open := h0.Add(2*time.Second+25*time.Millisecond), true // between two gate polls
	gate := func() (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		return fence, open && clk.Now().Before(fence)
	}
	renew := func(d time.Duration) {
		mu.Lock()
		fence = clk.Now().Add(d)
		mu.Unlock()
	}
	r := &moverRun{mover: fm, clk: clk, log: testLog(t), obs: nopObserver{}, group: "VI_1", interval: time.Second, timeout: 5 * time.Second}
	r.start(1, Move{Group: "VI_1", Node: "n1"}, gate)
	defer r.stop()

	// A slow provider: the assert runs into the fence and is cut there.
	eventually(t, "first assert in flight", func() bool { _, n := fm.snapshot(); return n == 1 })
	// In 10 ms steps: the fence falls between two gate polls, and the
	// call must end at it (within a step), not at the next poll.
	advanceUntil(t, clk, 10*time.Millisecond, "assert cut at the fence", func() bool { _, n := fm.snapshot(); return n == 0 })
	calls, _ := fm.snapshot()
	if c := calls[0]; !c.start.Equal(h0) || !c.deadline.Equal(h0.Add(2*time.Second+25*time.Millisecond)) || c.end.After(c.deadline.Add(10*time.Millisecond)) {
		t.Fatalf("first call %+v: want it started at once, told the fence, and cut by it", c)
	}
	// The fence passed: nothing is called, however long.
	fm.set(func(f *fakeMover) { f.block = false })
	for range 20 {
		clk.Advance(500 * time.Millisecond)
		settle()
	}
	if calls, _ := fm.snapshot(); len(calls) != 1 {
		t.Fatalf("%d calls after the fence passed, want none: %+v", len(calls)-1, calls[1:])
	}
	// A renewal opens the gate: the assert goes out, then checks follow
	// every interval.
	renew(2 * time.Second)
	renewedAt := clk.Now()
	r.start(1, Move{Group: "VI_1", Node: "n1"}, gate) // the group wakes it
	eventually(t, "assert after the renewal", func() bool { c, _ := fm.snapshot(); return len(c) == 2 && !c[1].end.IsZero() })
	advanceUntil(t, clk, 50*time.Millisecond, "a check an interval later", func() bool { c, _ := fm.snapshot(); return len(c) == 3 && c[2].op == MoverCheckOp })
	// Drift: someone moved the address; the next check asserts again.
	renew(5 * time.Second)
	fm.set(func(f *fakeMover) { f.here = false })
	advanceUntil(t, clk, 50*time.Millisecond, "re-assert after a drift", func() bool { c, _ := fm.snapshot(); return len(c) == 5 && c[4].op == MoverAssertOp })
	// A suspend: the fence ends (the gate closes) with the clock's timers
	// far from firing; the call in flight is cut at the next look.
	renew(time.Minute)
	fm.set(func(f *fakeMover) { f.block, f.here = true, false })
	// the next check finds a drift and asserts
	advanceUntil(t, clk, 50*time.Millisecond, "an assert in flight", func() bool { _, n := fm.snapshot(); return n == 1 })
	mu.Lock()
	open = false
	mu.Unlock()
	closedAt := clk.Now()
	advanceUntil(t, clk, 10*time.Millisecond, "the assert cut when the gate closed", func() bool { _, n := fm.snapshot(); return n == 0 })
	mu.Lock()
	open = true
	mu.Unlock()
	fm.set(func(f *fakeMover) { f.block = false })
	renew(5 * time.Second)
	cut, _ := fm.snapshot()
	advanceUntil(t, clk, 50*time.Millisecond, "assert after the fence holds again (the retry's backoff)", func() bool {
		c, _ := fm.snapshot()
		return len(c) > len(cut) && c[len(c)-1].op == MoverAssertOp && !c[len(c)-1].end.IsZero()
	})
	if c := cut[len(cut)-1]; c.op != MoverAssertOp || c.end.After(closedAt.Add(gatePoll+10*time.Millisecond)) {
		t.Fatalf("the call in flight when the gate closed (at %v): %+v; want it cut within %v", closedAt, c, gatePoll)
	}
	beforeStall, _ := fm.snapshot()
	// A stall: the clock jumps past the fence while the loop waits for
	// its next check; it wakes and calls nothing.
	clk.Advance(10 * time.Second)
	settle()
	clk.Advance(time.Second)
	settle()
	calls, _ = fm.snapshot()
	for _, c := range calls {
		if !c.start.Before(c.deadline.Add(-minMoverCall+time.Nanosecond)) && c.start.After(renewedAt) {
			t.Errorf("call %+v started at or past its fence", c)
		}
	}
	// (The fake clock walks through the jump timer by timer, so checks
	// due before the fence may still run in it; none at or past it.)
	for _, c := range calls[len(beforeStall):] {
		if !c.start.Before(c.deadline) {
			t.Errorf("call %+v after the stall started at or past the fence", c)
		}
	}
}

// With the real group loop (harness: etcd keys, lease fence on the fake
// clock): only the holder's mover is called, only after its VIPs are
// bound, never past its fence when it stalls, and a release stops a call
// in flight before the resign goes out.
func TestMoverOnlyHolderInsideFence(t *testing.T) {
	m := etcdtest.Start(t)
	group := harnessGroup + "mover: {type: exec, command: [/bin/true], interval: 1s, timeout: 500ms}\n"
	a := newHarness(t, m, "web-node-1", group)
	b := newHarness(t, m, "web-node-2", strings.Replace(group, "priority: 101", "priority: 100", 1))
	fa, fb := &fakeMover{clk: a.clk}, &fakeMover{clk: b.clk}
	for _, x := range []struct {
		h *harness
		f *fakeMover
	}{{a, fa}, {b, fb}} {
		f := x.f
		x.h.g.env.movers = func(g config.Group) (Mover, error) {
			if g.Mover.Type != "exec" {
				return nil, fmt.Errorf("mover %q", g.Mover.Type)
			}
			return f, nil
		}
	}
	a.hold()
	for range 10 {
		b.step()
		b.clk.Advance(100 * time.Millisecond)
		b.lease.renew()
	}
	eventually(t, "the holder asserts", func() bool { c, _ := fa.snapshot(); return len(c) > 0 && !c[0].end.IsZero() })
	if c, _ := fb.snapshot(); len(c) != 0 {
		t.Fatalf("the standby called its mover: %+v", c)
	}
	calls, _ := fa.snapshot()
	if calls[0].op != MoverAssertOp || calls[0].node != "web-node-1" {
		t.Fatalf("first call %+v, want an assert by web-node-1", calls[0])
	}

	// A stalls: no renewal; the clock runs past its fence.
	fence := a.lease.Current().Deadline
	a.noRenew = true
	for range 40 {
		a.clk.Advance(100 * time.Millisecond)
		settle()
	}
	a.step()
	settle()
	calls, _ = fa.snapshot()
	for _, c := range calls {
		if !c.start.Before(fence) {
			t.Errorf("call %+v started past the fence %v", c, fence.Format("15:04:05.000"))
		}
	}
	if a.host.Has(hvip) {
		t.Fatal("VIP still bound past the fence")
	}

	// Renewals again: A holds anew (its claim is still there) and asserts.
	a.noRenew = false
	a.lease.renew()
	a.hold()
	n := len(calls)
	eventually(t, "assert after holding again", func() bool {
		c, _ := fa.snapshot()
		return len(c) > n && c[len(c)-1].start.After(fence)
	})

	// A release with an assert in flight: the call ends before the
	// resign is sent.
	fa.set(func(f *fakeMover) { f.block, f.here = true, false })
	for range 12 { // the next check finds a drift and asserts
		a.clk.Advance(100 * time.Millisecond)
		a.lease.renew()
		a.step()
		settle()
	}
	eventually(t, "an assert in flight", func() bool { _, n := fa.snapshot(); return n == 1 })
	inFlightAtResign := -1
	a.kv.add(&faultRule{match: "/leader", mode: "observe", times: -1, observe: func() {
		_, n := fa.snapshot()
		inFlightAtResign = n
	}})
	a.health.set(true) // HAProxy down: A releases
	a.until("A released", 5*time.Second, func() bool { n, _ := a.leader(); return n != "web-node-1" })
	if inFlightAtResign != 0 {
		t.Errorf("%d mover calls in flight when the resign went out, want 0", inFlightAtResign)
	}
}

// fence is the mover's gate: closed without a bind, on another lease, or
// once the lease's fence passed; the kernel lifetime bounds it when it
// ends first.
func TestVipsFence(t *testing.T) {
	clk := clock.NewFake(h0)
	l := &testLease{clk: clk, ttl: 3 * time.Second, changed: make(chan struct{}), cur: election.Lease{ID: 7}}
	l.renew() // fence at h0 + 2.5s
	v := &vips{clk: clk, lease: l}
	if _, open := v.fence(); open {
		t.Fatal("open before any bind")
	}
	v.gate.Store(&gateState{lease: 7, until: h0.Add(4 * time.Second)})
	if d, open := v.fence(); !open || !d.Equal(h0.Add(2500*time.Millisecond)) {
		t.Fatalf("bound: %v %v, want open until the lease's fence", d, open)
	}
	v.gate.Store(&gateState{lease: 7, until: h0.Add(time.Second)})
	if d, open := v.fence(); !open || !d.Equal(h0.Add(time.Second)) {
		t.Fatalf("short lifetime: %v %v, want open until the lifetime's end", d, open)
	}
	v.gate.Store(&gateState{lease: 7}) // a group without addresses
	if d, open := v.fence(); !open || !d.Equal(h0.Add(2500*time.Millisecond)) {
		t.Fatalf("no addresses: %v %v, want the lease's fence", d, open)
	}
	v.gate.Store(&gateState{lease: 9})
	if _, open := v.fence(); open {
		t.Fatal("open for a bind on another lease")
	}
	v.gate.Store(&gateState{lease: 7})
	clk.Advance(2500 * time.Millisecond)
	if _, open := v.fence(); open {
		t.Fatal("open at the lease's fence")
	}
}

// A detach (re-execution in place) ends the mover's call in flight: the
// next image's mover takes over, and none of this one's calls is left.
func TestMoverStoppedByDetach(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", harnessGroup+"mover: {type: exec, command: [/bin/true], interval: 1s, timeout: 500ms}\n")
	fm := &fakeMover{clk: h.clk, block: true}
	h.g.env.movers = func(config.Group) (Mover, error) { return fm, nil }
	h.hold()
	eventually(t, "an assert in flight", func() bool { _, n := fm.snapshot(); return n == 1 })
	h.g.detach()
	if _, n := fm.snapshot(); n != 0 {
		t.Fatalf("%d mover calls in flight after the detach", n)
	}
	if !h.host.Has(hvip) {
		t.Fatal("the detach removed the VIP")
	}
}

// A reload that changes the mover stops the old one and asserts with the
// new one; one that changes nothing of it keeps it.
func TestMoverFollowsAReload(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", harnessGroup+"mover: {type: exec, command: [/bin/one], interval: 1s, timeout: 500ms}\n")
	var mu sync.Mutex
	made := map[string]*fakeMover{}
	factoryCalls := 0
	h.g.env.movers = func(g config.Group) (Mover, error) {
		mu.Lock()
		defer mu.Unlock()
		factoryCalls++
		f := &fakeMover{clk: h.clk}
		made[g.Mover.Command[0]] = f
		return f, nil
	}
	get := func(cmd string) *fakeMover { mu.Lock(); defer mu.Unlock(); return made[cmd] }
	h.hold()
	eventually(t, "the first mover asserts", func() bool {
		f := get("/bin/one")
		if f == nil {
			return false
		}
		c, _ := f.snapshot()
		return len(c) > 0
	})
	gc := h.g.config()
	gc.GARP.Count = 3 // not the mover
	h.g.update(gc)
	h.step()
	mu.Lock()
	calls := factoryCalls
	mu.Unlock()
	if calls != 1 {
		t.Fatalf("a reload that left the mover alone made another (%d made)", calls)
	}
	gc.Mover.Command = []string{"/bin/two"}
	h.g.update(gc)
	h.step()
	eventually(t, "the new mover asserts", func() bool {
		f := get("/bin/two")
		if f == nil {
			return false
		}
		c, _ := f.snapshot()
		return len(c) > 0
	})
	n, _ := get("/bin/one").snapshot()
	settle()
	h.clk.Advance(2 * time.Second)
	h.lease.renew()
	h.step()
	settle()
	if m, _ := get("/bin/one").snapshot(); len(m) != len(n) {
		t.Errorf("the old mover was called after the reload: %+v", m[len(n):])
	}
}
