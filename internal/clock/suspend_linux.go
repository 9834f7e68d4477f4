package clock

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// BootSuspend returns a SuspendMeter reading CLOCK_BOOTTIME − CLOCK_MONOTONIC:
// both clocks count the same ticks, but BOOTTIME includes suspended time
// and MONOTONIC does not, so their difference grows by exactly the time
// spent in each suspend and by nothing else (clock_settime and NTP slewing
// move both or neither). A paused VM whose guest clocks all stop is not
// seen: nothing inside the guest can tell.
//
// The two clocks are read one after the other, BOOTTIME first, so a
// reading falls short of the true difference by the time between the two
// reads (under a microsecond), never exceeds it. A read that took longer
// than bootReadTight (the thread was preempted between the two calls) is
// tried again, up to bootReadTries times, keeping the best. The meter
// returns the highest reading it has produced, so its readings never
// decrease and a late, short-falling read cannot make a later good one look
// like growth. Each call of BootSuspend returns a meter with its own
// memory; use one per consumer.
//
// If CLOCK_BOOTTIME cannot be read (Linux before 2.6.39) the meter reports
// 0 on every call: it then never detects a suspend, and never a false one.
func BootSuspend() SuspendMeter {
	var high atomic.Int64
	return func() time.Duration {
		var best int64
		read := false
		for range bootReadTries {
			start := time.Now()
			v, ok := bootMinusMono()
			if !ok {
				break
			}
			if !read || v > best {
				best, read = v, true
			}
			if time.Since(start) <= bootReadTight {
				break
			}
		}
		for {
			h := high.Load()
			if !read || best <= h {
				return time.Duration(h)
			}
			if high.CompareAndSwap(h, best) {
				return time.Duration(best)
			}
		}
	}
}

const (
	// bootReadTight bounds how far a reading that is kept at once may fall
	// short of the truth.
	bootReadTight = 100 * time.Microsecond
	bootReadTries = 3
)

func bootMinusMono() (int64, bool) {
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil {
		return 0, false
	}
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil {
		return 0, false
	}
	return max(boot.Nano()-mono.Nano(), 0), true
}
