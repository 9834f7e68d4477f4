package clock

import (
	"time"

	"golang.org/x/sys/unix"
)

// SystemMonotonic reads CLOCK_MONOTONIC: one clock for the whole system,
// unlike Go's monotonic readings, which count from the process start. It
// measures time across an exec (a vipd image handing over to the next).
// ok is false if it cannot be read.
func SystemMonotonic() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
