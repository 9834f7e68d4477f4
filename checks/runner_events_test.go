package checks

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

type runRec struct {
	At   time.Duration
	Name string
	OK   bool
	Took time.Duration
}

// OnRun sees every counted run, not only changes, with its virtual
// duration, before onChange.
func TestRunnerOnRunSeesEveryRun(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "+ + - + -")
	var (
		mu    sync.Mutex
		runs  []runRec
		order []string
	)
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 200 * ms, Rise: 2, Fall: 2}, func(ctx context.Context) error {
		err := sc.probe(ctx)
		clk.Advance(7 * ms) // the run takes 7ms of virtual time
		return err
	})
	r.OnRun(func(name string, ok bool, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, runRec{clk.Now().Sub(t0), name, ok, took})
		order = append(order, "run")
	})
	stop := start(t, r, func(Status) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, "change")
	})
	waitTimers(t, clk, 1)
	for range 4 {
		clk.Advance(200*ms - 7*ms)
		waitTimers(t, clk, 1)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	want := []runRec{
		{7 * ms, "c", true, 7 * ms},
		{207 * ms, "c", true, 7 * ms},
		{407 * ms, "c", false, 7 * ms},
		{607 * ms, "c", true, 7 * ms},
		{807 * ms, "c", false, 7 * ms},
	}
	if !slices.Equal(runs, want) {
		t.Errorf("OnRun calls\n got  %+v\n want %+v", runs, want)
	}
	// Rise 2 / fall 2: only the first result changed the state.
	if want := []string{"run", "change", "run", "run", "run", "run"}; !slices.Equal(order, want) {
		t.Errorf("call order %v, want %v", order, want)
	}
}

func TestRunnerOnRunAfterStartPanics(t *testing.T) {
	r := NewRunner(clock.NewFake(t0), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r.Run(ctx, nil)
	defer func() {
		if recover() == nil {
			t.Error("OnRun after Run did not panic")
		}
	}()
	r.OnRun(func(string, bool, time.Duration) {})
}

// A kick runs the check at once; the interval grid is kept; kicks during
// a run coalesce into one more run after it.
func TestRunnerKick(t *testing.T) {
	clk := clock.NewFake(t0)
	started := make(chan time.Duration, 10)
	release := make(chan struct{}, 10)
	var block sync.Map // run index -> blocks until released
	var n int
	var mu sync.Mutex
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: time.Second, Timeout: time.Hour}, func(ctx context.Context) error {
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		started <- clk.Now().Sub(t0)
		if _, ok := block.Load(i); ok {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	if r.Kick("nope") {
		t.Error("Kick of an unknown check reported true")
	}
	start(t, r, nil)
	if at := recv(t, started, "run 0"); at != 0 {
		t.Fatalf("run 0 at %v", at)
	}
	waitTimers(t, clk, 1)
	clk.Advance(300 * ms)
	block.Store(1, true)
	if !r.Kick("c") {
		t.Fatal("Kick reported no such check")
	}
	if at := recv(t, started, "kicked run 1"); at != 300*ms {
		t.Fatalf("kicked run at %v, want 300ms", at)
	}
	// Three kicks while run 1 is blocked: one more run, right after it.
	r.Kick("c")
	r.Kick("c")
	r.Kick("c")
	clk.Advance(100 * ms)
	release <- struct{}{}
	if at := recv(t, started, "run 2 after the coalesced kicks"); at != 400*ms {
		t.Fatalf("run after coalesced kicks at %v, want 400ms", at)
	}
	waitTimers(t, clk, 1)
	select {
	case at := <-started:
		t.Fatalf("extra run at %v: kicks were not coalesced", at)
	default:
	}
	// The grid is kept: the next scheduled run is at 1s, not 1.4s.
	clk.Advance(600*ms - ms)
	if n := clk.Timers(); n != 1 {
		t.Fatalf("run before 1s")
	}
	clk.Advance(ms)
	if at := recv(t, started, "scheduled run"); at != time.Second {
		t.Fatalf("scheduled run at %v, want 1s", at)
	}
}

// A Trigger's kicks run the check at once; the Trigger stops with Run.
func TestRunnerTrigger(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "+ - +")
	kicks := make(chan func(), 1)
	trigDone := make(chan struct{})
	trig := func(ctx context.Context, kick func()) error {
		defer close(trigDone)
		kicks <- kick
		<-ctx.Done()
		return nil
	}
	ran := make(chan struct{}, 10)
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 10 * time.Second}, func(ctx context.Context) error {
		defer func() { ran <- struct{}{} }()
		return sc.probe(ctx)
	}, WithTrigger(trig, "test"), WithTrigger(nil, ""))
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)
	kick := recv(t, kicks, "the trigger to start")
	recv(t, ran, "run 0")
	waitTimers(t, clk, 1)
	clk.Advance(50 * ms)
	kick()
	recv(t, ran, "kicked run 1")
	waitTimers(t, clk, 1)
	clk.Advance(50 * ms)
	kick()
	recv(t, ran, "kicked run 2")
	waitTimers(t, clk, 1)
	stop()
	recv(t, trigDone, "the trigger to return")
	if got, want := sc.runs(), []time.Duration{0, 50 * ms, 100 * ms}; !slices.Equal(got, want) {
		t.Errorf("runs at %v, want %v", got, want)
	}
	events, _ := rec.get()
	if want := []event{{0, "c", true}, {50 * ms, "c", false}, {100 * ms, "c", true}}; !slices.Equal(events, want) {
		t.Errorf("events %+v, want %+v", events, want)
	}
}

// WithTrigger(nil) is accepted (NewTrigger returns nil for polled types),
// and a failing Trigger leaves the check on its interval.
func TestRunnerTriggerFailureKeepsInterval(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "+ + +")
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 200 * ms}, sc.probe, WithTrigger(func(context.Context, func()) error {
		return errors.New("no inotify")
	}, SourceInotify))
	start(t, r, nil)
	waitTimers(t, clk, 1)
	clk.Advance(200 * ms)
	waitTimers(t, clk, 1)
	if got, want := sc.runs(), []time.Duration{0, 200 * ms}; !slices.Equal(got, want) {
		t.Errorf("runs at %v, want %v", got, want)
	}
}

// init_fail: the check is reported known-down when Run starts, before its
// first run, and needs rise successes to come up.
func TestRunnerInitFail(t *testing.T) {
	clk := clock.NewFake(t0)
	gate := make(chan struct{})
	sc := newScript(t, clk, "+ + +")
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: 200 * ms, Rise: 2, Fall: 1, InitFail: true}, func(ctx context.Context) error {
		<-gate
		return sc.probe(ctx)
	})
	if snap := r.Snapshot(); !snap["c"].Up && snap["c"].Name == "c" && errors.Is(snap["c"].Err, ErrInitFail) {
		// known-down even before Run
	} else {
		t.Errorf("Snapshot before Run = %+v, want c known and down with ErrInitFail", snap)
	}
	rec := &recorder{clk: clk}
	start(t, r, rec.onChange)
	deadline := time.Now().Add(realWait)
	for {
		if ev, _ := rec.get(); len(ev) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("init_fail check not reported at start")
		}
		time.Sleep(ms)
	}
	close(gate)
	waitTimers(t, clk, 1)
	clk.Advance(200 * ms)
	waitTimers(t, clk, 1)
	events, last := rec.get()
	want := []event{{0, "c", false}, {200 * ms, "c", true}}
	if !slices.Equal(events, want) {
		t.Errorf("events %+v, want %+v (down at start, up after rise 2)", events, want)
	}
	if last["c"].Err != nil {
		t.Errorf("last status %+v", last["c"])
	}
}

// A value reported by the probe is in the Status; a new value while up is
// reported as a change even though up/down did not change.
func TestRunnerValueChanges(t *testing.T) {
	clk := clock.NewFake(t0)
	values := []int{0, 0, 3, 3, -1}
	var i int
	var mu sync.Mutex
	r := NewRunner(clk, testLogger(t))
	r.Add("w", config.Check{Interval: 100 * ms}, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		ReportValue(ctx, values[min(i, len(values)-1)])
		i++
		return nil
	})
	var (
		cmu     sync.Mutex
		changes []Status
	)
	start(t, r, func(s Status) { cmu.Lock(); changes = append(changes, s); cmu.Unlock() })
	waitTimers(t, clk, 1)
	for range 4 {
		clk.Advance(100 * ms)
		waitTimers(t, clk, 1)
	}
	cmu.Lock()
	defer cmu.Unlock()
	var got []int
	for _, s := range changes {
		if !s.Up || !s.Valued {
			t.Errorf("change %+v, want up and valued", s)
		}
		got = append(got, s.Value)
	}
	if want := []int{0, 3, -1}; !slices.Equal(got, want) {
		t.Errorf("changes carried values %v, want %v", got, want)
	}
	if s := r.Snapshot()["w"]; s.Value != -1 || !s.Valued {
		t.Errorf("Snapshot = %+v", s)
	}
	// Outside a Runner, ReportValue does nothing (and does not panic).
	ReportValue(context.Background(), 5)
}
