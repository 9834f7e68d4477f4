//go:build !linux

package clock

import "time"

// BootSuspend returns a SuspendMeter that always reads 0: only Linux has
// CLOCK_BOOTTIME, so elsewhere suspends are not detected.
func BootSuspend() SuspendMeter {
	return func() time.Duration { return 0 }
}
