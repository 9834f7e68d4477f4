package checks

import (
	"context"
	"errors"
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
	// Value is the number the most recent run reported with ReportValue
	// (the file check's content); meaningful only when Valued.
	Value int
	// Valued reports whether the most recent run reported a value. For a
	// tracked check that is up, the value multiplies the track weight
	// (see EffectivePriority).
	Valued bool
	// Since is when Up last changed (or the check first became known): the
	// end of that run, on the Runner's clock. The daemon measures from it
	// how long a check going down took to remove a VIP.
	Since time.Time
}

// ErrInitFail is the Err of a check configured with init_fail until its
// first run: Run reports such a check down as soon as it starts.
var ErrInitFail = errors.New("checks: init_fail: down until the first runs succeed")

// Trigger is an event source that asks for an immediate run of a check:
// it calls kick whenever what the check looks at may have changed (the file
// check's inotify watch, the interface check's netlink subscription), and
// returns when ctx is done. Kicks coalesce, and a kick during a run causes
// one more run right after it (never a second run at once). A Trigger that
// fails returns its error early; the check then runs on its interval only,
// and the Runner logs the error.
type Trigger func(ctx context.Context, kick func()) error

// AddOption configures one check in Runner.Add.
type AddOption func(*check)

// WithTrigger runs the check at once whenever t kicks, besides its
// interval; source names the events (SourcePidfd, …) for OnSource. A nil
// t is ignored, so callers may pass NewTrigger(c) for every check type.
func WithTrigger(t Trigger, source string) AddOption {
	return func(c *check) {
		if t != nil {
			c.trigger, c.source = t, source
		}
	}
}

// WithKnown starts the check known, in the state st says (Up, and Value
// if Valued), as if its rise or fall were behind it: the next runs go
// through rise/fall as for a check that has been running. A vipd image
// that re-executes in place hands its checks' states to the next one,
// so that a reload neither waits for first results nor decides on one
// (init_fail would start down; one failed first run would decide down).
func WithKnown(st Status) AddOption {
	return func(c *check) {
		c.seed = &st
	}
}

// runKey is the context key under which the Runner passes a run's runInfo
// to its Probe.
type runKey struct{}

// runInfo is what a Probe may hand back besides its error, and the logger
// it may use.
type runInfo struct {
	log     *slog.Logger
	value   int
	set     bool
	pids    []int
	pidsSet bool
}

// ReportPids records the processes the current run found the service in
// (the process check): the check's Trigger watches exactly those, so
// that none the verdict rests on can exit unseen. ctx must be the context
// the Runner passed to the Probe; elsewhere ReportPids does nothing.
func ReportPids(ctx context.Context, pids []int) {
	if ri, ok := ctx.Value(runKey{}).(*runInfo); ok {
		ri.pids, ri.pidsSet = slices.Clone(pids), true
	}
}

// reportKey is the context key under which the Runner passes a check's
// *reported to its Trigger.
type reportKey struct{}

// reported is the latest set of PIDs a check's runs reported, handed from
// the check's goroutine to its Trigger.
type reported struct {
	mu   sync.Mutex
	pids []int
	wake func() // set by the Trigger; called on each report
}

func (r *reported) publish(pids []int) {
	r.mu.Lock()
	r.pids = pids
	wake := r.wake
	r.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// latest returns the last report.
func (r *reported) latest() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pids
}

func (r *reported) onReport(wake func()) {
	r.mu.Lock()
	r.wake = wake
	r.mu.Unlock()
}

// ReportValue records v as the number the current run read (the file
// check's content). ctx must be the context the Runner passed to the
// Probe; elsewhere ReportValue does nothing. The last call of a run wins.
func ReportValue(ctx context.Context, v int) {
	if ri, ok := ctx.Value(runKey{}).(*runInfo); ok {
		ri.value, ri.set = v, true
	}
}

// logFrom returns the logger the Runner passed with ctx (tagged with the
// check's name), or a discarding one.
func logFrom(ctx context.Context) *slog.Logger {
	if ri, ok := ctx.Value(runKey{}).(*runInfo); ok && ri.log != nil {
		return ri.log
	}
	return slog.New(slog.DiscardHandler)
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
	onRun   func(name string, ok bool, took time.Duration)
	onSrc   func(name, source string)
}

type check struct {
	name     string
	interval time.Duration
	fast     time.Duration // re-check interval while falling
	timeout  time.Duration
	rise     int
	fall     int
	initFail bool
	// seed, if set, is the state the check starts in (WithKnown).
	seed    *Status
	probe   Probe
	trigger Trigger
	source  string        // what trigger listens to
	log     *slog.Logger  // r.log with the check's name
	kick    chan struct{} // buffered 1: pending immediate run
	reports *reported     // what runs reported with ReportPids

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

// Add registers the check name, run by p with c's interval, timeout, rise,
// fall and init_fail (the type-specific keys are not used; p is the run).
// Zero values follow the config.Check docs: Interval 1s, Timeout =
// Interval, Rise 1, Fall 1. Range checks (Timeout ≤ Interval, Interval ≥
// 10ms) are the config validator's job; the Runner runs what it is given.
// opts add an event Trigger (WithTrigger).
//
// Add must be called before Run. Adding after Run has started, adding a
// name twice, or a nil p is a programming error and panics.
func (r *Runner) Add(name string, c config.Check, p Probe, opts ...AddOption) {
	if p == nil {
		panic(fmt.Sprintf("checks: Add(%q) with a nil Probe", name))
	}
	ck := &check{
		name:     name,
		interval: c.Interval,
		fast:     c.FastInterval,
		timeout:  c.Timeout,
		rise:     c.Rise,
		fall:     c.Fall,
		initFail: c.InitFail,
		probe:    p,
		kick:     make(chan struct{}, 1),
		reports:  &reported{},
		log:      r.log.With("check", name),
	}
	for _, o := range opts {
		o(ck)
	}
	ck.state = NewState(ck.initFail)
	if ck.initFail {
		ck.status = Status{Name: name, Err: ErrInitFail}
	}
	if ck.seed != nil {
		ck.state = State{Known: true, Up: ck.seed.Up}
		ck.status = *ck.seed
		ck.status.Name, ck.status.Err = name, nil
	}
	if ck.interval <= 0 {
		ck.interval = DefaultInterval
	}
	if ck.timeout <= 0 {
		ck.timeout = ck.interval
	}
	if ck.fast <= 0 || ck.fast > ck.interval {
		ck.fast = ck.interval
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

// OnRun sets f to be called after every counted run of every check (not
// only changes), with the check's name, whether the run passed and how
// long it took on the Runner's clock: the daemon's per-run histogram. f is
// called from the check's goroutine before onChange and must not block.
// OnRun must be called before Run; calling it later panics.
func (r *Runner) OnRun(f func(name string, ok bool, took time.Duration)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		panic("checks: OnRun after Run started")
	}
	r.onRun = f
}

// OnSource sets f to be called with each check's event source when Run
// starts (SourceInterval for a check without a Trigger) and again with
// SourceInterval when a Trigger fails: the daemon's log and its
// vipd_check_events metric. f must not block. OnSource must be called
// before Run; calling it later panics.
func (r *Runner) OnSource(f func(name, source string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		panic("checks: OnSource after Run started")
	}
	r.onSrc = f
}

// Kick asks for an immediate run of the named check, e.g. when the daemon
// sees a netlink link event for an interface check. It never blocks:
// kicks coalesce, and a kick during a run causes one more run after it.
// It reports whether the Runner has such a check. A kick before Run is
// covered by the check's first run.
func (r *Runner) Kick(name string) bool {
	r.mu.Lock()
	c := r.byName[name]
	r.mu.Unlock()
	if c == nil {
		return false
	}
	c.doKick()
	return true
}

func (c *check) doKick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run runs every added check until ctx is done, one goroutine per check, and
// returns only after all of them have stopped. Each state change (including
// the first result, which turns an unknown check up or down) calls onChange
// from that check's goroutine, outside the Runner's lock; it must not block
// long, since the check does not run again until it returns. onChange may
// be nil. A run cut short by ctx's cancellation is not counted.
//
// A check with init_fail is known and down from the start: Run reports it
// (Up false, Err ErrInitFail) through onChange before its first run.
// A check's Trigger runs in a goroutine of its own until ctx is done.
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
	onRun, onSrc := r.onRun, r.onSrc
	r.mu.Unlock()
	if onSrc == nil {
		onSrc = func(string, string) {}
	}

	var wg sync.WaitGroup
	for _, c := range checks {
		if c.trigger == nil {
			onSrc(c.name, SourceInterval)
		} else {
			onSrc(c.name, c.source)
			wg.Go(func() {
				tctx := context.WithValue(ctx, reportKey{}, c.reports)
				if err := c.trigger(tctx, c.doKick); err != nil && ctx.Err() == nil {
					r.log.Warn("check events unavailable; running on the interval only", "check", c.name, "source", c.source, "err", err)
					onSrc(c.name, SourceInterval)
				}
			})
		}
		wg.Go(func() { r.loop(ctx, c, onChange, onRun) })
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

func (r *Runner) loop(ctx context.Context, c *check, onChange func(Status), onRun func(string, bool, time.Duration)) {
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	if c.initFail || c.seed != nil {
		r.mu.Lock()
		if c.status.Since.IsZero() {
			c.status.Since = r.clk.Now()
		}
		st := c.status
		r.mu.Unlock()
		if onChange != nil {
			onChange(st)
		}
	}
	due := r.clk.Now()
	for {
		if ctx.Err() != nil {
			return
		}
		// This run covers any kick that came before it.
		select {
		case <-c.kick:
		default:
		}
		falling := r.runOnce(ctx, c, onChange, onRun)
		now := r.clk.Now()
		if !now.Before(due) {
			// The run that was due (or a kicked run that reached the
			// boundary): schedule the next boundary. A kicked run that
			// ended before the boundary leaves the schedule as it was.
			due = nextBoundary(due, now, c.interval)
		}
		wait := due.Sub(now)
		if falling && c.fast < wait {
			// An up check that failed: re-check soon (HAProxy's
			// fastinter), so that fall failures take fall-1 fast
			// intervals, not fall-1 intervals. The grid is kept.
			wait = c.fast
		}
		if wait <= 0 {
			continue // finished exactly on a boundary: that run is due now
		}
		if timer == nil {
			timer = r.clk.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		kick := c.kick
		if falling {
			// Falling: the failures that take the check down are
			// fast_interval apart, events or not, so that fall − 1 fast
			// intervals are a real grace (a reload rewriting its pidfile
			// fires several events within milliseconds). A kick now is
			// covered by the run the timer starts.
			kick = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-kick:
			// An event: run now. The interval grid is kept, so the next
			// scheduled run is still at a boundary of the first run.
			if !timer.Stop() {
				select {
				case <-timer.C():
				default:
				}
			}
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

// runOnce runs c once and folds the result in. falling reports an up
// check that has failed fewer than fall times in a row.
func (r *Runner) runOnce(ctx context.Context, c *check, onChange func(Status), onRun func(string, bool, time.Duration)) (falling bool) {
	// The timeout is real time on purpose: it bounds real I/O (see doc.go).
	sink := &runInfo{log: c.log}
	runCtx, cancel := context.WithTimeout(context.WithValue(ctx, runKey{}, sink), c.timeout)
	begin := r.clk.Now()
	err := c.probe(runCtx)
	took := r.clk.Now().Sub(begin)
	cancel()
	if ctx.Err() != nil {
		// Shutting down: the failure says nothing about the service.
		return false
	}
	if onRun != nil {
		onRun(c.name, err == nil, took)
	}

	r.mu.Lock()
	prev := c.status
	next, changed := c.state.Observe(err == nil, c.rise, c.fall)
	c.state = next
	since := prev.Since
	if changed {
		since = begin.Add(took)
	}
	c.status = Status{Name: c.name, Up: next.Up, Err: err, Duration: took, Value: sink.value, Valued: sink.set, Since: since}
	falling = next.Falling()
	st := c.status
	// A new value changes the priority even when up/down does not.
	valueChanged := next.Up && st.Valued && (!prev.Valued || prev.Value != st.Value)
	r.mu.Unlock()
	if sink.pidsSet {
		c.reports.publish(sink.pids)
	}

	if err != nil {
		r.log.Debug("check failed", "check", c.name, "err", err, "duration", took)
	}
	if !changed && valueChanged {
		r.log.Info("check value changed", "check", c.name, "value", st.Value, "previous", prev.Value, "previous_valued", prev.Valued)
		if onChange != nil {
			onChange(st)
		}
		return falling
	}
	if !changed {
		return falling
	}
	if st.Up {
		r.log.Info("check up", "check", c.name, "duration", took)
	} else {
		r.log.Warn("check down", "check", c.name, "err", err, "duration", took)
	}
	if onChange != nil {
		onChange(st)
	}
	return falling
}
