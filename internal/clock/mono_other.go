//go:build !linux

package clock

import "time"

// SystemMonotonic is not available here: ok is false.
func SystemMonotonic() (time.Duration, bool) { return 0, false }
