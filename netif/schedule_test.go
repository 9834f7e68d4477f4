package netif

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

// sendLog records the virtual time of every send.
type sendLog struct {
	mu    sync.Mutex
	start time.Time
	clk   *clock.Fake
	at    []time.Duration
	errs  []error // returned by the i-th send when set
}

func (l *sendLog) send() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := len(l.at)
	l.at = append(l.at, l.clk.Now().Sub(l.start))
	if i < len(l.errs) {
		return l.errs[i]
	}
	return nil
}

func (l *sendLog) times() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at)
}

// waitSends waits (in real time) until n sends happened.
func (l *sendLog) waitSends(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(l.times()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sends after 5 s, want %d (at %v)", len(l.times()), n, l.times())
		}
		time.Sleep(time.Millisecond)
	}
}

type schedResult struct {
	n   int
	err error
}

func startSchedule(ctx context.Context, clk *clock.Fake, l *sendLog, count int, interval, refresh time.Duration) <-chan schedResult {
	done := make(chan schedResult, 1)
	go func() {
		n, err := Schedule(ctx, clk, count, interval, refresh, l.send)
		done <- schedResult{n, err}
	}()
	return done
}

// step advances the fake clock to each of the wanted send times in turn,
// checking that no send happens a millisecond early and that exactly one
// happens on time.
func step(t *testing.T, clk *clock.Fake, l *sendLog, start time.Time, want []time.Duration) {
	t.Helper()
	for i, at := range want {
		if i == 0 && at == 0 {
			l.waitSends(t, 1)
			continue
		}
		if !clk.WaitForTimers(1, 5*time.Second) {
			t.Fatalf("send %d: Schedule is not waiting on a timer", i)
		}
		clk.Set(start.Add(at - time.Millisecond))
		if got := len(l.times()); got != i {
			t.Fatalf("at %v: %d sends, want %d (times %v)", at-time.Millisecond, got, i, l.times())
		}
		clk.Set(start.Add(at))
		l.waitSends(t, i+1)
	}
	if got := l.times(); !slices.Equal(got, want) {
		t.Fatalf("sent at %v, want %v", got, want)
	}
}

func TestScheduleBurstThenRefresh(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	l := &sendLog{start: start, clk: clk}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startSchedule(ctx, clk, l, 3, 100*time.Millisecond, time.Second)

	ms := time.Millisecond
	step(t, clk, l, start, []time.Duration{0, 100 * ms, 200 * ms, 1200 * ms, 2200 * ms, 3200 * ms})

	// Still refreshing: waiting on the next one.
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("Schedule not waiting for the next refresh")
	}
	select {
	case r := <-done:
		t.Fatalf("Schedule returned %v while ctx lives", r)
	default:
	}
	cancel()
	var r schedResult
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Schedule did not return after cancel")
	}
	clk.Advance(time.Hour)
	if r.n != 6 || r.err != nil || len(l.times()) != 6 {
		t.Fatalf("Schedule = %d, %v after %d sends; want 6, nil, 6", r.n, r.err, len(l.times()))
	}
	if clk.Timers() != 0 {
		t.Errorf("%d timers left armed", clk.Timers())
	}
}

func TestScheduleNoRefreshEndsAfterBurst(t *testing.T) {
	start := time.Unix(1000, 0)
	clk := clock.NewFake(start)
	l := &sendLog{start: start, clk: clk}
	done := startSchedule(context.Background(), clk, l, 5, time.Second, 0)
	step(t, clk, l, start, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second})
	select {
	case r := <-done:
		if r.n != 5 || r.err != nil {
			t.Fatalf("Schedule = %d, %v; want 5, nil", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Schedule with refresh 0 did not return after the burst")
	}
	if clk.Timers() != 0 {
		t.Errorf("%d timers left armed", clk.Timers())
	}
}

func TestScheduleRefreshOnlyAndErrors(t *testing.T) {
	start := time.Unix(0, 0)
	clk := clock.NewFake(start)
	e1 := errors.New("link down")
	// count 0: no burst, first round one refresh after the start. The
	// first refresh fails; the schedule keeps going.
	l := &sendLog{start: start, clk: clk, errs: []error{e1}}
	ctx, cancel := context.WithCancel(context.Background())
	done := startSchedule(ctx, clk, l, 0, time.Second, 30*time.Second)
	step(t, clk, l, start, []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second})
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("not waiting")
	}
	cancel()
	r := <-done
	if r.n != 2 || !errors.Is(r.err, e1) {
		t.Fatalf("Schedule = %d, %v; want 2, %v", r.n, r.err, e1)
	}

	// Cancelled before it starts: nothing is sent, nothing armed.
	clk2 := clock.NewFake(start)
	l2 := &sendLog{start: start, clk: clk2}
	n, err := Schedule(ctx, clk2, 3, time.Second, time.Second, l2.send)
	if n != 0 || err != nil || len(l2.times()) != 0 || clk2.Timers() != 0 {
		t.Fatalf("cancelled Schedule = %d, %v with %d sends, %d timers", n, err, len(l2.times()), clk2.Timers())
	}
}

// TestScheduleCancelDuringBurst: a cancel between burst rounds stops the
// burst and never enters the refresh phase.
func TestScheduleCancelDuringBurst(t *testing.T) {
	start := time.Unix(0, 0)
	clk := clock.NewFake(start)
	l := &sendLog{start: start, clk: clk}
	ctx, cancel := context.WithCancel(context.Background())
	done := startSchedule(ctx, clk, l, 5, time.Second, time.Second)
	step(t, clk, l, start, []time.Duration{0, time.Second})
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("not waiting")
	}
	cancel()
	r := <-done
	clk.Advance(time.Minute)
	if r.n != 2 || r.err != nil || len(l.times()) != 2 || clk.Timers() != 0 {
		t.Fatalf("Schedule = %d, %v, %d sends, %d timers; want 2, nil, 2, 0", r.n, r.err, len(l.times()), clk.Timers())
	}
}
