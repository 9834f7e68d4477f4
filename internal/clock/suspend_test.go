package clock

import (
	"sync"
	"testing"
	"time"
)

func TestFakeSuspend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		suspends []time.Duration
		want     time.Duration
	}{
		{"none", nil, 0},
		{"one", []time.Duration{5 * time.Second}, 5 * time.Second},
		{"adds up", []time.Duration{time.Second, 2500 * time.Millisecond}, 3500 * time.Millisecond},
		{"zero and negative do nothing", []time.Duration{0, -time.Second, time.Second}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			f := NewFake(start)
			tm := f.NewTimer(time.Second)
			var meter SuspendMeter = f.Suspended
			for _, d := range tc.suspends {
				f.Suspend(d)
			}
			if got := meter(); got != tc.want {
				t.Errorf("Suspended() = %v, want %v", got, tc.want)
			}
			if got := f.Now(); !got.Equal(start) {
				t.Errorf("Suspend moved Now to %v", got)
			}
			select {
			case <-tm.C():
				t.Error("Suspend fired a timer")
			default:
			}
			if f.Timers() != 1 {
				t.Errorf("Timers() = %d after Suspend, want 1", f.Timers())
			}
			// The timer still fires after its own duration of monotonic time.
			f.Advance(time.Second)
			select {
			case <-tm.C():
			default:
				t.Error("timer did not fire one second after it was set")
			}
		})
	}
}

func TestBootSuspendNonNegativeAndMonotone(t *testing.T) {
	meter := BootSuspend()
	first := meter()
	if first < 0 {
		t.Fatalf("first reading %v < 0", first)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := meter()
			for i := 0; i < 5000; i++ {
				got := meter()
				if got < prev {
					t.Errorf("reading went back: %v after %v", got, prev)
					return
				}
				prev = got
			}
		}()
	}
	wg.Wait()
	// Nothing suspends this machine during a test run: readings a moment
	// apart agree to better than election's detection threshold (10ms).
	if grown := meter() - first; grown > 10*time.Millisecond {
		t.Errorf("meter grew by %v without a suspend", grown)
	}
}

func TestBootSuspendMetersAgree(t *testing.T) {
	a, b := BootSuspend(), BootSuspend()
	x, y := a(), b()
	if d := (x - y).Abs(); d > 10*time.Millisecond {
		t.Errorf("two meters disagree by %v (%v vs %v)", d, x, y)
	}
}
