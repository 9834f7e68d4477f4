// Package runlock owns vipd's one-daemon-per-host guard: an exclusive,
// non-blocking flock on <runtime dir>/vipd.lock, which holds the PID of the
// process that has it.
//
// Two vipd processes on one host would fight over the same VIPs, so `vipd
// run` takes the lock before it touches etcd or any interface and keeps it
// until it exits; `vipd cleanup` takes it only to prove that no vipd is
// running (it would strip a running daemon's VIPs). The kernel releases a
// flock when the last descriptor of its open file description closes, so a
// crashed or killed vipd never leaves a stale lock; the descriptor is
// close-on-exec, so a check or hook that vipd spawns cannot keep it.
//
// The file is never removed: unlinking a lock file lets two processes lock
// two different inodes under the same name.
package runlock
