// Package clock owns vipd's notion of time: a small interface over the
// wall/monotonic clock so that fence deadlines, rise/fall counters, GARP
// bursts and backoff can be tested in virtual time.
//
// Real is the production clock. Fake is a manually advanced clock for tests;
// timers created from it fire when Advance moves time past their deadline.
//
// A SuspendMeter reports how long the system has been suspended, which the
// monotonic clock does not count: BootSuspend is the real one (Linux
// CLOCK_BOOTTIME − CLOCK_MONOTONIC), and Fake.Suspend simulates a suspend.
package clock
