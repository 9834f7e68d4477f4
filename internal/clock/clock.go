package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers. It is the only way vipd code reads
// time, so tests can drive every schedule in virtual time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends the current time on its channel
	// once d has passed.
	NewTimer(d time.Duration) Timer
}

// Timer is the subset of *time.Timer that vipd uses.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was active.
	Stop() bool
	// Reset re-arms the timer to fire after d.
	Reset(d time.Duration)
}

// Since returns c.Now() - t.
func Since(c Clock, t time.Time) time.Duration { return c.Now().Sub(t) }

// Real is the system clock.
type Real struct{}

// Now returns time.Now(), which carries a monotonic reading.
func (Real) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Stop() bool            { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }

// Fake is a clock that only moves when Advance or Set is called. It is safe
// for concurrent use. Suspend and Suspended simulate a system suspend.
type Fake struct {
	mu        sync.Mutex
	now       time.Time
	suspended time.Duration
	timers    []*fakeTimer
	// changed is closed and replaced whenever a timer is created, so tests
	// can wait until the code under test is blocked on a timer.
	changed chan struct{}
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake time reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clock: f, c: make(chan time.Time, 1)}
	t.arm(f.now.Add(d))
	return t
}

// Advance moves the fake time forward by d, firing every timer due on the way
// in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	target := f.now.Add(d)
	f.mu.Unlock()
	f.Set(target)
}

// Set moves the fake time to t (never backwards), firing due timers in order.
func (f *Fake) Set(t time.Time) {
	for {
		f.mu.Lock()
		due := f.nextDueLocked(t)
		if due == nil {
			if t.After(f.now) {
				f.now = t
			}
			f.mu.Unlock()
			return
		}
		if due.when.After(f.now) {
			f.now = due.when
		}
		f.removeLocked(due)
		due.active = false
		now := f.now
		f.mu.Unlock()
		select {
		case due.c <- now:
		default:
		}
	}
}

// Suspend simulates a system suspend of d: the suspended total reported by
// Suspended grows by d, while Now stands still and no timer fires, as
// CLOCK_MONOTONIC (and so Go's monotonic clock) stops during a real
// suspend. d <= 0 does nothing.
func (f *Fake) Suspend(d time.Duration) {
	if d <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspended += d
}

// Suspended returns the total time simulated by Suspend. The method value
// f.Suspended is a SuspendMeter.
func (f *Fake) Suspended() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.suspended
}

// Timers reports how many timers are armed. Tests use it with WaitForTimers
// to know the code under test is waiting.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitForTimers blocks until at least n timers are armed or the deadline
// (in real time) passes; it reports whether n were reached.
func (f *Fake) WaitForTimers(n int, realTimeout time.Duration) bool {
	deadline := time.Now().Add(realTimeout)
	for {
		f.mu.Lock()
		count, ch := len(f.timers), f.changed
		f.mu.Unlock()
		if count >= n {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		select {
		case <-ch:
		case <-time.After(left):
		}
	}
}

func (f *Fake) nextDueLocked(limit time.Time) *fakeTimer {
	sort.SliceStable(f.timers, func(i, j int) bool { return f.timers[i].when.Before(f.timers[j].when) })
	if len(f.timers) > 0 && !f.timers[0].when.After(limit) {
		return f.timers[0]
	}
	return nil
}

func (f *Fake) removeLocked(t *fakeTimer) {
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return
		}
	}
}

type fakeTimer struct {
	clock  *Fake
	c      chan time.Time
	when   time.Time
	active bool
}

// arm must be called with clock.mu held.
func (t *fakeTimer) arm(when time.Time) {
	t.when = when
	if !t.active {
		t.active = true
		t.clock.timers = append(t.clock.timers, t)
	}
	close(t.clock.changed)
	t.clock.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.active
	if was {
		t.clock.removeLocked(t)
		t.active = false
	}
	return was
}

func (t *fakeTimer) Reset(d time.Duration) {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	// Drain a stale tick so a Reset timer never delivers the old firing,
	// matching Go 1.23+ time.Timer semantics.
	select {
	case <-t.c:
	default:
	}
	t.arm(t.clock.now.Add(d))
}
