package checks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

const ms = time.Millisecond

// realWait bounds every wait on the code under test, in real time.
const realWait = 5 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// script is a Probe that returns results from a list ('+' pass, '-' fail)
// and records the virtual time each run started. After the list it fails.
type script struct {
	clk     *clock.Fake
	mu      sync.Mutex
	results []bool
	starts  []time.Duration // since t0
}

func newScript(t *testing.T, clk *clock.Fake, s string) *script {
	return &script{clk: clk, results: results(t, s)}
}

func (s *script) probe(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := len(s.starts)
	s.starts = append(s.starts, s.clk.Now().Sub(t0))
	if i < len(s.results) && s.results[i] {
		return nil
	}
	return fmt.Errorf("scripted failure %d", i)
}

func (s *script) runs() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.starts)
}

// event is one onChange call and the virtual time it happened.
type event struct {
	At   time.Duration // since t0
	Name string
	Up   bool
}

type recorder struct {
	clk    clock.Clock
	mu     sync.Mutex
	events []event
	last   map[string]Status
}

func (r *recorder) onChange(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{At: r.clk.Now().Sub(t0), Name: s.Name, Up: s.Up})
	if r.last == nil {
		r.last = make(map[string]Status)
	}
	r.last[s.Name] = s
}

func (r *recorder) get() ([]event, map[string]Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.last
}

// start runs r in the background and returns a stop function that cancels
// it and fails the test unless Run returns within realWait.
func start(t *testing.T, r *Runner, onChange func(Status)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, onChange)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(realWait):
				t.Errorf("Run did not return within %v of cancel", realWait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	if !clk.WaitForTimers(n, realWait) {
		t.Fatalf("at %v: %d timers armed, want %d", clk.Now().Sub(t0), clk.Timers(), n)
	}
}

// recv receives from ch, failing the test (instead of hanging) after realWait.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(realWait):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestRunnerRiseFallVirtualTime(t *testing.T) {
	clk := clock.NewFake(t0)
	// Runs at 0, 200, ..., 1800 ms.
	sc := newScript(t, clk, "- + + + - + - - + +")
	r := NewRunner(clk, testLogger(t))
	r.Add("haproxy", config.Check{Type: "http", Interval: 200 * ms, Timeout: 150 * ms, Rise: 2, Fall: 2}, sc.probe)
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)

	waitTimers(t, clk, 1) // first run done at t0
	for range 9 {
		clk.Advance(200 * ms)
		waitTimers(t, clk, 1)
	}
	snap := r.Snapshot()
	stop()

	wantRuns := []time.Duration{0, 200 * ms, 400 * ms, 600 * ms, 800 * ms, 1000 * ms, 1200 * ms, 1400 * ms, 1600 * ms, 1800 * ms}
	if got := sc.runs(); !slices.Equal(got, wantRuns) {
		t.Fatalf("runs at %v, want %v", got, wantRuns)
	}
	events, last := rec.get()
	want := []event{
		{0, "haproxy", false},         // first result decides at once
		{400 * ms, "haproxy", true},   // second success in a row (200, 400)
		{1400 * ms, "haproxy", false}, // 800 fails, 1000 passes (resets), 1200 and 1400 fail
		{1800 * ms, "haproxy", true},  // 1600 and 1800 pass
	}
	if !slices.Equal(events, want) {
		t.Fatalf("transitions\n got  %+v\n want %+v", events, want)
	}
	if s := snap["haproxy"]; !s.Up || s.Err != nil || s.Name != "haproxy" {
		t.Errorf("final Snapshot = %+v, want haproxy up without error", s)
	}
	if last["haproxy"].Err != nil {
		t.Errorf("last up event carries err %v", last["haproxy"].Err)
	}
}

func TestRunnerDownEventCarriesFailure(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "+ -")
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 100 * ms, Rise: 1, Fall: 1}, sc.probe)
	var mu sync.Mutex
	var got []Status
	stop := start(t, r, func(s Status) { mu.Lock(); got = append(got, s); mu.Unlock() })
	waitTimers(t, clk, 1)
	clk.Advance(100 * ms)
	waitTimers(t, clk, 1)
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0].Up || got[0].Err != nil || got[1].Up || got[1].Err == nil ||
		got[1].Err.Error() != "scripted failure 1" {
		t.Fatalf("events = %+v, want up (no err) then down with scripted failure 1", got)
	}
}

func TestRunnerZeroValueDefaults(t *testing.T) {
	clk := clock.NewFake(t0)
	var mu sync.Mutex
	var runs []time.Duration
	var budgets []time.Duration
	results := []bool{true, false, true}
	p := func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		dl, ok := ctx.Deadline()
		if !ok {
			t.Error("run ctx has no deadline")
		}
		budgets = append(budgets, time.Until(dl))
		i := len(runs)
		runs = append(runs, clk.Now().Sub(t0))
		if results[i] {
			return nil
		}
		return errors.New("fail")
	}
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Type: "http"}, p)
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)

	waitTimers(t, clk, 1)
	clk.Advance(999 * ms) // interval defaults to 1s: not due yet
	if n := clk.Timers(); n != 1 {
		t.Fatalf("timer fired before 1s (timers = %d)", n)
	}
	clk.Advance(1 * ms)
	waitTimers(t, clk, 1)
	clk.Advance(time.Second)
	waitTimers(t, clk, 1)
	stop()

	mu.Lock()
	defer mu.Unlock()
	if want := []time.Duration{0, time.Second, 2 * time.Second}; !slices.Equal(runs, want) {
		t.Errorf("runs at %v, want %v", runs, want)
	}
	// Timeout defaults to Interval (real time, so only roughly).
	for i, b := range budgets {
		if b > time.Second || b < 200*ms {
			t.Errorf("run %d timeout budget %v, want about 1s", i, b)
		}
	}
	// Rise 1 / Fall 1: every flip is reported at once.
	events, _ := rec.get()
	want := []event{{0, "c", true}, {time.Second, "c", false}, {2 * time.Second, "c", true}}
	if !slices.Equal(events, want) {
		t.Errorf("transitions %+v, want %+v", events, want)
	}
}

func TestRunnerTimeoutIsPassedToProbe(t *testing.T) {
	clk := clock.NewFake(t0)
	budget := make(chan time.Duration, 1)
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 200 * ms, Timeout: 150 * ms}, func(ctx context.Context) error {
		dl, _ := ctx.Deadline()
		select {
		case budget <- time.Until(dl):
		default:
		}
		<-ctx.Done() // a hung service: only the timeout ends the run
		return ctx.Err()
	})
	rec := &recorder{clk: clk}
	start(t, r, rec.onChange)
	b := recv(t, budget, "the run")
	if b > 150*ms || b <= 0 {
		t.Errorf("timeout budget %v, want about 150ms", b)
	}
	waitTimers(t, clk, 1) // the run timed out in real time and was counted
	events, last := rec.get()
	if len(events) != 1 || events[0].Up || !errors.Is(last["c"].Err, context.DeadlineExceeded) {
		t.Errorf("events %+v last %+v, want one down event with DeadlineExceeded", events, last)
	}
}

func TestRunnerIndependentSchedules(t *testing.T) {
	clk := clock.NewFake(t0)
	a := newScript(t, clk, "+ + + + + + +")
	b := newScript(t, clk, "- - - - - -")
	r := NewRunner(clk, testLogger(t))
	r.Add("a", config.Check{Interval: 200 * ms}, a.probe)
	r.Add("b", config.Check{Interval: 300 * ms}, b.probe)
	start(t, r, nil) // nil onChange is allowed
	waitTimers(t, clk, 2)
	for range 6 {
		clk.Advance(100 * ms)
		waitTimers(t, clk, 2)
	}
	if got, want := a.runs(), []time.Duration{0, 200 * ms, 400 * ms, 600 * ms}; !slices.Equal(got, want) {
		t.Errorf("a runs %v, want %v", got, want)
	}
	if got, want := b.runs(), []time.Duration{0, 300 * ms, 600 * ms}; !slices.Equal(got, want) {
		t.Errorf("b runs %v, want %v", got, want)
	}
	snap := r.Snapshot()
	if len(snap) != 2 || !snap["a"].Up || snap["b"].Up || snap["b"].Err == nil {
		t.Errorf("Snapshot = %+v, want a up, b down with an error", snap)
	}
}

// A run that overruns its interval is never stacked: the next run starts at
// the first interval boundary at or after the overrun ends.
func TestRunnerNoStacking(t *testing.T) {
	tests := []struct {
		name     string
		blockFor time.Duration // virtual time the run at 200ms takes
		nextRun  time.Duration
	}{
		{"no overrun", 50 * ms, 400 * ms},
		{"ends exactly on a boundary", 400 * ms, 600 * ms},
		{"overruns two boundaries", 450 * ms, 800 * ms},
		{"overruns many boundaries", 2030 * ms, 2400 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			var (
				mu       sync.Mutex
				starts   []time.Duration
				inFlight atomic.Int32
				maxIn    atomic.Int32
			)
			started := make(chan struct{}, 10)
			release := make(chan struct{})
			p := func(ctx context.Context) error {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for {
					m := maxIn.Load()
					if n <= m || maxIn.CompareAndSwap(m, n) {
						break
					}
				}
				mu.Lock()
				i := len(starts)
				starts = append(starts, clk.Now().Sub(t0))
				mu.Unlock()
				started <- struct{}{}
				if i == 1 {
					select {
					case <-release:
					case <-ctx.Done():
					}
				}
				return nil
			}
			r := NewRunner(clk, testLogger(t))
			// Timeout far above the test's real duration, so only the
			// script decides when the blocked run ends.
			r.Add("slow", config.Check{Interval: 200 * ms, Timeout: time.Hour, Rise: 1, Fall: 1}, p)
			stop := start(t, r, nil)

			recv(t, started, "run 0") // at t0
			waitTimers(t, clk, 1)
			clk.Advance(200 * ms)
			recv(t, started, "run 1") // at 200ms, now blocked
			clk.Advance(tt.blockFor)
			if n := clk.Timers(); n != 0 {
				t.Fatalf("a timer is armed while a run is in flight (%d)", n)
			}
			close(release)
			if tt.nextRun == 200*ms+tt.blockFor {
				// Finished exactly on a boundary: runs again at once.
				recv(t, started, "run 2")
			} else {
				waitTimers(t, clk, 1)
				gap := tt.nextRun - (200*ms + tt.blockFor)
				clk.Advance(gap - ms)
				if n := clk.Timers(); n != 1 {
					t.Fatalf("next run fired %v early", ms)
				}
				clk.Advance(ms)
				recv(t, started, "run 2")
			}
			waitTimers(t, clk, 1)
			stop()

			mu.Lock()
			defer mu.Unlock()
			if want := []time.Duration{0, 200 * ms, tt.nextRun}; !slices.Equal(starts, want) {
				t.Errorf("runs started at %v, want %v", starts, want)
			}
			if m := maxIn.Load(); m != 1 {
				t.Errorf("%d runs in flight at once, want 1", m)
			}
		})
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	clk := clock.NewFake(t0)
	blockedStarted := make(chan struct{})
	blockedErr := make(chan error, 1)
	var changes atomic.Int32
	r := NewRunner(clk, testLogger(t))
	r.Add("idle", config.Check{Interval: 200 * ms}, newScript(t, clk, "+ + +").probe)
	r.Add("idle2", config.Check{Interval: 300 * ms}, newScript(t, clk, "- - -").probe)
	r.Add("hung", config.Check{Interval: 200 * ms, Timeout: time.Hour}, func(ctx context.Context) error {
		close(blockedStarted)
		<-ctx.Done()
		blockedErr <- ctx.Err()
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(Status) { changes.Add(1) })
	}()
	recv(t, blockedStarted, "the hung run")
	waitTimers(t, clk, 2) // idle and idle2 wait on timers, hung is in its probe
	select {
	case <-done:
		t.Fatal("Run returned before cancel")
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(realWait):
		t.Fatal("Run did not return after cancel")
	}
	if err := recv(t, blockedErr, "the hung probe to return"); !errors.Is(err, context.Canceled) {
		t.Errorf("hung probe saw %v, want context.Canceled", err)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers still armed after Run returned", n)
	}
	n := changes.Load()
	if n != 2 {
		t.Errorf("%d changes reported, want 2 (idle up, idle2 down)", n)
	}
	// The run cut short by cancel is not counted: hung never became known.
	snap := r.Snapshot()
	if _, ok := snap["hung"]; ok || len(snap) != 2 {
		t.Errorf("Snapshot after cancel = %+v, want idle and idle2 only", snap)
	}
	clk.Advance(time.Hour)
	if changes.Load() != n {
		t.Error("onChange called after Run returned")
	}
}

func TestRunnerNoChecksRunsUntilCancel(t *testing.T) {
	r := NewRunner(nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, nil) }()
	select {
	case <-done:
		t.Fatal("Run with no checks returned before cancel")
	case <-time.After(20 * ms):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(realWait):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunnerMisuse(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	ok := func(context.Context) error { return nil }
	r := NewRunner(clock.NewFake(t0), nil)
	r.Add("a", config.Check{}, ok)
	mustPanic("duplicate Add", func() { r.Add("a", config.Check{}, ok) })
	mustPanic("nil probe", func() { r.Add("b", config.Check{}, nil) })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r.Run(ctx, nil)
	mustPanic("Add after Run", func() { r.Add("c", config.Check{}, ok) })
	mustPanic("second Run", func() { r.Run(ctx, nil) })
}

// Real clock, real HTTP: the server turns from 200 to 503 and the Runner
// reports the check down. No timing assertions.
func TestRunnerRealClockHTTPDown(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	p, err := NewProbe(config.Check{Type: "http", URL: srv.URL + "/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(clock.Real{}, testLogger(t))
	// A timeout above the interval (the validator would refuse it) keeps a
	// loaded, race-enabled box from timing runs out; no stacking still holds.
	r.Add("haproxy", config.Check{Type: "http", Interval: 20 * ms, Timeout: 2 * time.Second, Rise: 2, Fall: 2}, p)
	changes := make(chan Status, 16)
	start(t, r, func(s Status) { changes <- s })

	next := func() Status {
		t.Helper()
		select {
		case s := <-changes:
			return s
		case <-time.After(30 * time.Second):
			t.Fatal("no state change within 30s")
			return Status{}
		}
	}
	// A slow (race-enabled, loaded) box may time a run out; wait for up.
	for s := next(); !s.Up; s = next() {
	}
	healthy.Store(false)
	// Wait for the down transition caused by the 503 (a stray timeout could
	// report another one first on a very slow box).
	var se *StatusError
	for s := next(); s.Up || !errors.As(s.Err, &se); s = next() {
		t.Logf("change while waiting for 503: %+v", s)
	}
	if se.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("down with status %d, want 503", se.StatusCode)
	}
	if snap := r.Snapshot()["haproxy"]; snap.Up {
		t.Errorf("Snapshot still up after the down transition: %+v", snap)
	}
}

// Issue 17: a check handed over by the previous vipd image starts in that
// state, reported at once, and goes on through rise/fall from there: one
// failed first run of a check seeded up (fall 2) changes nothing, and
// init_fail does not start it down.
func TestRunnerWithKnown(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "- + - -")
	r := NewRunner(clk, testLogger(t))
	r.Add("haproxy", config.Check{Type: "http", Interval: 200 * ms, Timeout: 150 * ms, Rise: 2, Fall: 2, InitFail: true}, sc.probe,
		WithKnown(Status{Up: true, Since: t0.Add(-time.Hour)}))
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)
	waitTimers(t, clk, 1)
	for range 3 {
		clk.Advance(200 * ms)
		waitTimers(t, clk, 1)
	}
	stop()
	events, _ := rec.get()
	want := []event{
		{0, "haproxy", true},         // the handed-over state, reported at once
		{600 * ms, "haproxy", false}, // 400 and 600 fail: fall 2
	}
	if !slices.Equal(events, want) {
		t.Fatalf("transitions\n got  %+v\n want %+v", events, want)
	}
}
