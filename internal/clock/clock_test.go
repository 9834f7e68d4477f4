package clock

import (
	"testing"
	"time"
)

func TestFakeTimersFireInOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimer(1 * time.Second)
	f.Advance(1500 * time.Millisecond)
	select {
	case got := <-b.C():
		if want := start.Add(time.Second); !got.Equal(want) {
			t.Fatalf("b fired at %v, want %v", got, want)
		}
	default:
		t.Fatal("b did not fire after 1.5s")
	}
	select {
	case <-a.C():
		t.Fatal("a fired early")
	default:
	}
	if got := f.Now(); !got.Equal(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("now = %v", got)
	}
	f.Advance(time.Second)
	select {
	case <-a.C():
	default:
		t.Fatal("a did not fire after 2.5s")
	}
}

func TestFakeStopAndReset(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop on an armed timer reported inactive")
	}
	f.Advance(2 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("stopped timer fired")
	default:
	}
	tm.Reset(time.Second)
	if f.Timers() != 1 {
		t.Fatalf("Timers() = %d after Reset, want 1", f.Timers())
	}
	f.Advance(time.Second)
	select {
	case <-tm.C():
	default:
		t.Fatal("reset timer did not fire")
	}
}

func TestWaitForTimers(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	go func() { time.Sleep(10 * time.Millisecond); f.NewTimer(time.Second) }()
	if !f.WaitForTimers(1, 5*time.Second) {
		t.Fatal("WaitForTimers did not see the timer")
	}
	if f.WaitForTimers(2, 20*time.Millisecond) {
		t.Fatal("WaitForTimers reported a timer that does not exist")
	}
}
