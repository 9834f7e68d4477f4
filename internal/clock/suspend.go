package clock

import "time"

// SuspendMeter returns the total time the system has spent suspended (since
// boot, or since any fixed origin: only differences between readings mean
// anything). Readings never decrease.
//
// A suspend stops CLOCK_MONOTONIC, which Go's monotonic clock and so every
// Clock deadline use, while the rest of the world (an etcd server's lease
// timers) runs on. Code whose safety rests on monotonic deadlines compares
// two readings to learn that its deadlines slipped by the suspended time.
//
// It is a function, not a Clock method, so Clock implementations need not
// know about it. BootSuspend returns the real one; (*Fake).Suspended is the
// one for tests.
type SuspendMeter func() time.Duration
