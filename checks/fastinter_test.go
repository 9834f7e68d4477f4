package checks

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// An up check that fails is re-checked at its fast interval until it has
// failed fall times (down) or passes; rise is counted on the interval, and
// the interval grid of the first run is kept.
func TestRunnerFastInterval(t *testing.T) {
	clk := clock.NewFake(t0)
	// Runs: 0 +, 1000 -, 1100 +, 2000 -, 2100 -, 2200 - (down, fall 3),
	// 3000 +, 4000 + (up, rise 2), 5000 +.
	sc := newScript(t, clk, "+ - + - - - + + +")
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: time.Second, FastInterval: 100 * ms, Rise: 2, Fall: 3}, sc.probe)
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)
	waitTimers(t, clk, 1)
	for _, step := range []time.Duration{1000, 100, 900, 100, 100, 800, 1000, 1000} {
		clk.Advance(step * ms)
		waitTimers(t, clk, 1)
	}
	stop()
	want := []time.Duration{0, 1000 * ms, 1100 * ms, 2000 * ms, 2100 * ms, 2200 * ms, 3000 * ms, 4000 * ms, 5000 * ms}
	if got := sc.runs(); !slices.Equal(got, want) {
		t.Fatalf("runs at %v, want %v", got, want)
	}
	events, last := rec.get()
	wantEv := []event{{0, "c", true}, {2200 * ms, "c", false}, {4000 * ms, "c", true}}
	if !slices.Equal(events, wantEv) {
		t.Fatalf("transitions %+v, want %+v", events, wantEv)
	}
	if got := last["c"].Since; !got.Equal(t0.Add(4000 * ms)) {
		t.Errorf("Since = %v, want the end of the run that brought it up (t0+4s)", got.Sub(t0))
	}
}

// Without fast_interval (or with one longer than the interval) failures
// are re-checked on the interval, as keepalived does.
func TestRunnerFastIntervalZeroIsInterval(t *testing.T) {
	for _, fast := range []time.Duration{0, 5 * time.Second} {
		clk := clock.NewFake(t0)
		sc := newScript(t, clk, "+ - - +")
		r := NewRunner(clk, testLogger(t))
		r.Add("c", config.Check{Interval: time.Second, FastInterval: fast, Fall: 2}, sc.probe)
		rec := &recorder{clk: clk}
		stop := start(t, r, rec.onChange)
		waitTimers(t, clk, 1)
		for range 3 {
			clk.Advance(time.Second)
			waitTimers(t, clk, 1)
		}
		stop()
		want := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second}
		if got := sc.runs(); !slices.Equal(got, want) {
			t.Fatalf("fast %v: runs at %v, want %v", fast, got, want)
		}
	}
}

// OnSource reports each check's event source when Run starts, and the
// interval when its Trigger fails.
func TestRunnerOnSource(t *testing.T) {
	clk := clock.NewFake(t0)
	r := NewRunner(clk, testLogger(t))
	r.Add("polled", config.Check{Interval: time.Second}, newScript(t, clk, "+").probe)
	r.Add("broken", config.Check{Interval: time.Second}, newScript(t, clk, "+").probe,
		WithTrigger(func(ctx context.Context, kick func()) error { return errors.New("no pidfd") }, SourcePidfd))
	got := make(chan [2]string, 4)
	r.OnSource(func(name, source string) { got <- [2]string{name, source} })
	start(t, r, nil)
	seen := map[[2]string]bool{}
	for range 3 {
		seen[recv(t, got, "OnSource")] = true
	}
	for _, w := range [][2]string{{"polled", SourceInterval}, {"broken", SourcePidfd}, {"broken", SourceInterval}} {
		if !seen[w] {
			t.Errorf("OnSource calls %v lack %v", seen, w)
		}
	}
}

// While a check is falling, kicks do not hurry the next failure: the
// failures that take it down are fast_interval apart, so (fall − 1) fast
// intervals are a real grace even when events fire in a burst.
func TestRunnerFallingIgnoresKicks(t *testing.T) {
	clk := clock.NewFake(t0)
	sc := newScript(t, clk, "+ - - +")
	r := NewRunner(clk, testLogger(t))
	r.Add("c", config.Check{Interval: time.Second, FastInterval: 100 * ms, Fall: 2}, sc.probe)
	rec := &recorder{clk: clk}
	stop := start(t, r, rec.onChange)
	waitTimers(t, clk, 1)
	clk.Advance(time.Second) // fails: falling
	waitTimers(t, clk, 1)
	r.Kick("c")
	r.Kick("c")
	time.Sleep(50 * ms) // a kick that ran now would show below
	if got := len(sc.runs()); got != 2 {
		t.Fatalf("%d runs after kicks while falling, want 2 (kicks wait for the fast interval)", got)
	}
	clk.Advance(100 * ms) // second failure: down
	waitTimers(t, clk, 1)
	r.Kick("c") // down, not falling: a kick runs at once
	waitTimers(t, clk, 1)
	deadline := time.Now().Add(realWait)
	for len(sc.runs()) < 4 && time.Now().Before(deadline) {
		time.Sleep(ms)
	}
	stop()
	want := []time.Duration{0, time.Second, 1100 * ms, 1100 * ms}
	if got := sc.runs(); !slices.Equal(got, want) {
		t.Fatalf("runs at %v, want %v", got, want)
	}
	events, _ := rec.get()
	wantEv := []event{{0, "c", true}, {1100 * ms, "c", false}, {1100 * ms, "c", true}}
	if !slices.Equal(events, wantEv) {
		t.Fatalf("transitions %+v, want %+v", events, wantEv)
	}
}
