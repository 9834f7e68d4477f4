package keeper

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// Mover makes a cloud provider deliver a group's addresses to this node,
// where a gratuitous ARP moves nothing (docs/cloud.md). The keeper calls it
// from the holder only, after the VIPs are bound, and never past the fence:
// every call's context ends at the fence, and no call starts after it.
type Mover interface {
	// Assert makes the provider deliver m's addresses to this node. It is
	// idempotent: the holder asserts again after a drift or a failure.
	Assert(ctx context.Context, m Move) error
	// Check reports whether the provider delivers them to this node now.
	Check(ctx context.Context, m Move) (here bool, err error)
}

// Move is what one mover call is about.
type Move struct {
	Group     string
	Node      string
	Addresses []netip.Prefix
	// Lease is the lease the group's claim is on.
	Lease int64
	// Deadline is the fence as the call starts. A renewal during the call
	// moves the fence on: Live says whether it still holds, and the
	// call's context ends as soon as it does not. A mover checks Live
	// before each request it sends; one that cannot (a command run on
	// its own) must not act after Deadline.
	Deadline time.Time
	Live     func() bool
}

// MoverFactory makes a group's mover from its config (nil, nil: none).
type MoverFactory func(g config.Group) (Mover, error)

// Mover call outcomes, for metrics (Observer.MoverCall).
const (
	MoverOK       = "ok"
	MoverDrift    = "drift" // a check found the addresses delivered elsewhere
	MoverError    = "error"
	MoverTimeout  = "timeout" // the call ran into its timeout
	MoverFenced   = "fenced"  // the call ran into the fence and was cut short
	MoverAssertOp = "assert"
	MoverCheckOp  = "check"
)

// moverPlan is what the mover loop knows between calls.
type moverPlan struct {
	// asserted: an assert succeeded in this hold (later calls check).
	asserted bool
	failures int
	// settle is the wait before the next check: 1 s after an assert,
	// doubling up to the interval. A request of the previous holder
	// still on its way may land after this holder's assert; the early
	// checks find it.
	settle time.Duration
	// next is when to call again.
	next time.Time
}

// firstRecheck is how soon after an assert the holder checks it.
const firstRecheck = time.Second

// moverBackoff is the wait after the n-th failure in a row: 250 ms
// doubling, at most interval.
func moverBackoff(failures int, interval time.Duration) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < failures && d < interval; i++ {
		d *= 2
	}
	return min(d, interval)
}

// nextMoverCall is the mover loop's decision, pure: after a call (op, its
// outcome) at now, what it plans. A failure retries with backoff; a
// drift asserts at once; a success checks again after the interval.
func nextMoverCall(p moverPlan, op, outcome string, now time.Time, interval time.Duration) moverPlan {
	switch outcome {
	case MoverOK:
		if op == MoverAssertOp {
			p.asserted, p.settle = true, min(firstRecheck, interval)
		} else {
			p.settle = min(2*p.settle, interval)
		}
		p.failures, p.next = 0, now.Add(p.settle)
	case MoverDrift:
		p.asserted, p.failures, p.settle, p.next = false, 0, 0, now
	default:
		p.failures++
		p.next = now.Add(moverBackoff(p.failures, interval))
	}
	return p
}

// mayCall is the fence rule, pure: a call starts only while the VIPs are
// held under a live fence (open), and only if at least minMoverCall is
// left before it; it may run until timeout, and is cut short as soon as
// the fence passes without a renewal (moverRun.call watches the gate).
func mayCall(now, fence time.Time, open bool, timeout time.Duration) (until time.Time, ok bool) {
	if !open || fence.Sub(now) < minMoverCall {
		return time.Time{}, false
	}
	return now.Add(timeout), true
}

// gatePoll is how often a running call looks at the gate: a suspend or a
// stall ends the fence without the clock's timers noticing.
const gatePoll = 50 * time.Millisecond

// minMoverCall is the least time before the fence for a call to start: a
// provider API call takes longer, and one started later is cut short.
const minMoverCall = 50 * time.Millisecond

// moverGate reports the fence while the group holds its VIPs under a live
// lease: its deadline, and whether it is open.
type moverGate func() (fence time.Time, open bool)

// moverRun runs a group's mover while the group holds: asserts the
// addresses once the VIPs are bound, re-checks them every interval, and
// asserts again on drift or after a failure, every call inside the fence.
type moverRun struct {
	mover    Mover
	cfg      *config.Mover // what it was made from
	clk      clock.Clock
	log      *slog.Logger
	obs      Observer
	group    string
	interval time.Duration
	timeout  time.Duration

	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	holdOf int64 // the claim revision the running loop holds for
}

// start runs the loop for the hold of claim rev (move without Deadline),
// unless it already runs for it.
func (r *moverRun) start(rev int64, m Move, gate moverGate) {
	if r == nil || r.mover == nil {
		return
	}
	if r.cancel != nil && r.holdOf == rev {
		select {
		case r.wake <- struct{}{}: // a renewal may have opened the gate again
		default:
		}
		return
	}
	r.stop()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done, r.wake, r.holdOf = cancel, make(chan struct{}), make(chan struct{}, 1), rev
	go func() {
		defer close(r.done)
		r.loop(ctx, m, gate)
	}()
}

// stop ends the loop and waits for it: a call in flight is cancelled (an
// exec mover's command killed) and has returned once stop does.
func (r *moverRun) stop() {
	if r == nil || r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel, r.done, r.holdOf = nil, nil, 0
}

// halt cancels the loop and its call in flight without waiting (stop
// waits): unbind halts the mover first, removes the VIPs, then stops it,
// so a provider call slow to end cannot delay the removal, and none is
// left running once unbind returns.
func (r *moverRun) halt() {
	if r != nil && r.cancel != nil {
		r.cancel()
	}
}

func (r *moverRun) loop(ctx context.Context, m Move, gate moverGate) {
	var p moverPlan
	for ctx.Err() == nil {
		now := r.clk.Now()
		if wait := p.next.Sub(now); wait > 0 {
			r.sleep(ctx, wait)
			continue
		}
		fence, open := gate()
		until, ok := mayCall(now, fence, open, r.timeout)
		if !ok {
			// Not held under a live fence: no call. A renewal reopens it
			// (the group wakes this loop); a release stops it.
			r.sleep(ctx, 100*time.Millisecond)
			continue
		}
		op := MoverCheckOp
		if !p.asserted {
			op = MoverAssertOp
		}
		m.Deadline = fence
		m.Live = func() bool { _, open := gate(); return open }
		outcome, err := r.call(ctx, op, m, until, gate)
		if ctx.Err() != nil {
			return // stopped: the group released (or stops)
		}
		switch {
		case outcome == MoverDrift:
			r.log.Warn("the provider delivers the addresses elsewhere; asserting them again", "group", r.group)
		case err != nil:
			r.log.Warn("mover "+op+" failed", "group", r.group, "err", err, "outcome", outcome)
		case op == MoverAssertOp:
			r.log.Info("the provider delivers the addresses here", "group", r.group)
		}
		p = nextMoverCall(p, op, outcome, r.clk.Now(), r.interval)
	}
}

// call runs one call with its context ending at until or when the gate
// closes (virtual time), and reports its outcome.
func (r *moverRun) call(ctx context.Context, op string, m Move, until time.Time, gate moverGate) (string, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	defer func() { close(stopWatch); <-watched }()
	go func() {
		defer close(watched)
		for {
			fence, open := gate()
			if !open {
				cancel(errFenced)
				return
			}
			now := r.clk.Now()
			left := until.Sub(now)
			if left <= 0 {
				cancel(context.DeadlineExceeded)
				return
			}
			// Look again at the fence itself if it comes before the next
			// poll: unrenewed, the call ends there, not up to a poll later.
			t := r.clk.NewTimer(min(gatePoll, left, max(fence.Sub(now), time.Nanosecond)))
			select {
			case <-t.C():
			case <-stopWatch:
				t.Stop()
				return
			case <-cctx.Done():
				t.Stop()
				return
			}
		}
	}()
	start := r.clk.Now()
	var err error
	outcome := MoverOK
	switch op {
	case MoverAssertOp:
		err = r.mover.Assert(cctx, m)
	default:
		var here bool
		here, err = r.mover.Check(cctx, m)
		if err == nil && !here {
			outcome = MoverDrift
		}
	}
	if err != nil {
		switch cause := context.Cause(cctx); {
		case errors.Is(cause, errFenced):
			outcome = MoverFenced
		case errors.Is(cause, context.DeadlineExceeded):
			outcome = MoverTimeout
		default:
			outcome = MoverError
		}
	}
	if ctx.Err() == nil {
		r.obs.MoverCall(r.group, op, outcome, r.clk.Now().Sub(start))
	}
	return outcome, err
}

var errFenced = errors.New("keeper: mover call cut short at the fence")

// sleep waits d, or until woken or stopped.
func (r *moverRun) sleep(ctx context.Context, d time.Duration) {
	t := r.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-r.wake:
	case <-ctx.Done():
	}
}

// syncMover runs the group's mover while it holds with its VIPs bound,
// for that claim, with the config the loop has; it is stopped by unbind
// (with the announcements) and when the group lets go.
func (g *group) syncMover() {
	if g.env.movers == nil {
		return
	}
	if g.vips.mv != nil && g.vips.mv.cfg != nil && !reflect.DeepEqual(*g.vips.mv.cfg, g.cfg.Mover) {
		g.vips.mv.stop() // a reload changed it
		g.vips.mv = nil
	}
	c := g.held.Claim
	if c == nil || !g.vips.bound() || g.held.Resigning {
		g.vips.mv.stop()
		return
	}
	if g.vips.mv == nil {
		if g.cfg.Mover.Type == "" {
			return
		}
		if g.moverFailed != nil && reflect.DeepEqual(*g.moverFailed, g.cfg.Mover) {
			return // said once for this config
		}
		m, err := g.env.movers(g.cfg)
		if err != nil || m == nil {
			g.log.Error("cannot make the group's mover; the provider is not told of this holder", "err", err)
			failed := g.cfg.Mover
			g.moverFailed = &failed
			return
		}
		g.moverFailed = nil
		cfg := g.cfg.Mover
		g.vips.mv = &moverRun{mover: m, cfg: &cfg, clk: g.env.clk, log: g.log, obs: g.env.obs, group: g.name,
			interval: cfg.Interval, timeout: cfg.Timeout}
	}
	g.vips.mv.start(c.CreateRev, Move{Group: g.name, Node: g.env.node, Addresses: slices.Clone(g.cfg.Prefixes), Lease: int64(c.Lease)}, g.vips.fence)
}
