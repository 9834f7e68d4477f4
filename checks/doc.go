// Package checks owns node health: running health checks, turning raw results
// into up/down with rise/fall hysteresis, and folding tracked checks into a
// group's effective priority the way keepalived does.
//
// The package has three layers:
//
//   - Pure decisions: State.Observe (rise/fall hysteresis of one check;
//     NewState for init_fail) and EffectivePriority (base priority plus
//     tracked weights, reverse, file values, FAULT and clamping, as
//     keepalived's track_script and track_file). Both are table-tested and
//     know nothing about time or I/O.
//   - Probes: a Probe is one run of a check. NewProbe builds one from a
//     config.Check of any type: http (NewHTTPWith: status list, body
//     substring, HTTPS with a CA file), tcp (NewTCP), process (NewPidfile,
//     NewProcessName), exec (NewExec: argv, process-group timeout, runs as
//     nobody unless told otherwise), file (NewFile: keepalived track_file,
//     its value reported with ReportValue) and interface (NewInterface:
//     netlink link state). NewTrigger gives the event source of the types
//     that have one (inotify for file, a netlink subscription for
//     interface); Runner.Kick lets the daemon push events it already has.
//   - Runner: runs every named check on its own interval in its own
//     goroutine (and at once on a Trigger's or Kick's request), applies
//     State.Observe to each result, reports changes, and reports every run
//     to OnRun.
//
// Time: the Runner schedules runs only with the injected clock.Clock, so
// tests drive it in virtual time with clock.Fake. The one use of real time
// is the per-run timeout, which the Runner passes to the probe as a
// context.WithTimeout deadline: it bounds real I/O (a socket that does not
// answer), and the net/http stack can only be bounded by a real deadline.
// Under a fake clock the timeout therefore still elapses in real time.
package checks
