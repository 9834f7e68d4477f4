// Package checks owns node health: running health checks, turning raw results
// into up/down with rise/fall hysteresis, and folding tracked checks into a
// group's effective priority the way keepalived does.
//
// The package has three layers:
//
//   - Pure decisions: State.Observe (rise/fall hysteresis of one check) and
//     EffectivePriority (base priority plus tracked weights, FAULT and
//     clamping, as keepalived's track_script). Both are table-tested and
//     know nothing about time or I/O.
//   - Probes: a Probe is one run of a check. NewHTTP builds the http check
//     (HAProxy's monitor-uri); NewProbe builds a Probe from a config.Check.
//   - Runner: runs every named check on its own interval in its own
//     goroutine, applies State.Observe to each result and reports changes.
//
// Time: the Runner schedules runs only with the injected clock.Clock, so
// tests drive it in virtual time with clock.Fake. The one use of real time
// is the per-run timeout, which the Runner passes to the probe as a
// context.WithTimeout deadline: it bounds real I/O (a socket that does not
// answer), and the net/http stack can only be bounded by a real deadline.
// Under a fake clock the timeout therefore still elapses in real time.
package checks
