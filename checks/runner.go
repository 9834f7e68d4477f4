package checks

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// Zero-value defaults of config.Check, applied by Runner.Add.
const (
	DefaultInterval = time.Second
	DefaultRise     = 1
	DefaultFall     = 1
)

// Status is the debounced state of one check and what its last run saw.
type Status struct {
	// Name of the check.
	Name string
	// Up is the debounced (rise/fall) state.
	Up bool
	// Err is the error of the most recent run, nil if that run passed.
	// When a check goes down, it is the failure that took it down.
	Err error
	// Duration is how long the most recent run took (on the Runner's
	// clock).
	Duration time.Duration
}

// Runner runs named checks on their intervals with their timeouts, applies
// State.Observe to every result, and reports changes.
//
// Scheduling uses only the injected clock: a check first runs when Run
// starts, then on the boundaries start + k×interval. A run that is still
// going when the next boundary passes is not stacked: the next run starts
// at the first boundary at or after the moment it finished (keepalived
// likewise skips a script run while the previous one is still going). The
// per-run timeout is a real-time context deadline (see the package doc).
type Runner struct {
	clk clock.Clock
	log *slog.Logger

	mu      sync.Mutex
	checks  []*check
	byName  map[string]*check
	started bool
}

type check struct {
	name     string
	interval time.Duration
	timeout  time.Duration
	rise     int
	fall     int
	probe    Probe

	// Guarded by Runner.mu.
	state  State
	status Status
}

// NewRunner returns an empty Runner. A nil clk means clock.Real{}; a nil log
// discards log records.
func NewRunner(clk clock.Clock, log *slog.Logger) *Runner {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{clk: clk, log: log, byName: make(map[string]*check)}
}

// Add registers the check name, run by p with c's interval, timeout, rise
// and fall (c.Type and c.URL are not used; p is the run). Zero values follow
// the config.Check docs: Interval 1s, Timeout = Interval, Rise 1, Fall 1.
// Range checks (Timeout ≤ Interval, Interval ≥ 10ms) are the config
// validator's job; the Runner runs what it is given.
//
// Add must be called before Run. Adding after Run has started, adding a
// name twice, or a nil p is a programming error and panics.
func (r *Runner) Add(name string, c config.Check, p Probe) {
	if p == nil {
		panic(fmt.Sprintf("checks: Add(%q) with a nil Probe", name))
	}
	ck := &check{
		name:     name,
		interval: c.Interval,
		timeout:  c.Timeout,
		rise:     c.Rise,
		fall:     c.Fall,
		probe:    p,
	}
	if ck.interval <= 0 {
		ck.interval = DefaultInterval
	}
	if ck.timeout <= 0 {
		ck.timeout = ck.interval
	}
	if ck.rise <= 0 {
		ck.rise = DefaultRise
	}
	if ck.fall <= 0 {
		ck.fall = DefaultFall
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		panic(fmt.Sprintf("checks: Add(%q) after Run started", name))
	}
	if _, dup := r.byName[name]; dup {
		panic(fmt.Sprintf("checks: Add(%q) twice", name))
	}
	r.byName[name] = ck
	r.checks = append(r.checks, ck)
}

// Run runs every added check until ctx is done, one goroutine per check, and
// returns only after all of them have stopped. Each state change (including
// the first result, which turns an unknown check up or down) calls onChange
// from that check's goroutine, outside the Runner's lock; it must not block
// long, since the check does not run again until it returns. onChange may
// be nil. A run cut short by ctx's cancellation is not counted.
//
// Run may be called once per Runner; a second call panics.
func (r *Runner) Run(ctx context.Context, onChange func(Status)) {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		panic("checks: Runner.Run called twice")
	}
	r.started = true
	checks := slices.Clone(r.checks)
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() { r.loop(ctx, c, onChange) })
	}
	<-ctx.Done()
	wg.Wait()
}

// Snapshot returns the status of every check that has produced a result,
// keyed by name. A check missing from the map is not known yet (and counts
// as down for EffectivePriority; see TrackedChecks).
func (r *Runner) Snapshot() map[string]Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Status, len(r.checks))
	for _, c := range r.checks {
		if c.state.Known {
			out[c.name] = c.status
		}
	}
	return out
}

func (r *Runner) loop(ctx context.Context, c *check, onChange func(Status)) {
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	due := r.clk.Now()
	for {
		if ctx.Err() != nil {
			return
		}
		r.runOnce(ctx, c, onChange)
		now := r.clk.Now()
		due = nextBoundary(due, now, c.interval)
		wait := due.Sub(now)
		if wait <= 0 {
			continue // finished exactly on a boundary: that run is due now
		}
		if timer == nil {
			timer = r.clk.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
	}
}

// nextBoundary returns the first last + k×interval (k ≥ 1) not before now:
// the next run's start, skipping the boundaries a long run overran.
func nextBoundary(last, now time.Time, interval time.Duration) time.Time {
	next := last.Add(interval)
	if next.Before(now) {
		k := (now.Sub(next) + interval - 1) / interval
		next = next.Add(k * interval)
	}
	return next
}

func (r *Runner) runOnce(ctx context.Context, c *check, onChange func(Status)) {
	// The timeout is real time on purpose: it bounds real I/O (see doc.go).
	runCtx, cancel := context.WithTimeout(ctx, c.timeout)
	begin := r.clk.Now()
	err := c.probe(runCtx)
	took := r.clk.Now().Sub(begin)
	cancel()
	if ctx.Err() != nil {
		// Shutting down: the failure says nothing about the service.
		return
	}

	r.mu.Lock()
	next, changed := c.state.Observe(err == nil, c.rise, c.fall)
	c.state = next
	c.status = Status{Name: c.name, Up: next.Up, Err: err, Duration: took}
	st := c.status
	r.mu.Unlock()

	if err != nil {
		r.log.Debug("check failed", "check", c.name, "err", err, "duration", took)
	}
	if !changed {
		return
	}
	if st.Up {
		r.log.Info("check up", "check", c.name, "duration", took)
	} else {
		r.log.Warn("check down", "check", c.name, "err", err, "duration", took)
	}
	if onChange != nil {
		onChange(st)
	}
}
