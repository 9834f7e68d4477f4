package checks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Event sources of a check, as Runner.OnSource reports them (the source
// label of vipd_check_events).
const (
	// SourceInterval: the check runs on its interval only.
	SourceInterval = "interval"
	// SourceInotify: also at once on inotify events (file checks, and the
	// pidfile of a process check besides its pidfd).
	SourceInotify = "inotify"
	// SourceNetlink: also at once on netlink link events (interface).
	SourceNetlink = "netlink"
	// SourcePidfd: also at once when a watched process exits (process
	// checks, pidfd_open(2) and poll(2), Linux ≥ 5.3).
	SourcePidfd = "pidfd"
)

// Sources lists every event source, for a metric that exports each.
func Sources() []string {
	return []string{SourceInterval, SourceInotify, SourceNetlink, SourcePidfd}
}

// NewPidfileTrigger returns a Trigger that kicks the moment the process
// the check's last run found through pidfile exits (a pidfd, readable
// once the process has exited), and whenever the pidfile is written,
// replaced or removed (inotify on its directory), so that a reload
// writing a new PID is looked at at once.
//
// It watches what the runs report (ReportPids), so it works only under a
// Runner. It fails at once if this kernel has no pidfd_open (Linux < 5.3)
// or a seccomp filter refuses it; the check then runs on its interval
// only.
func NewPidfileTrigger(pidfile string) Trigger {
	return procTrigger{pidfile: pidfile, what: "pidfile " + pidfile,
		// The run may report the process the pidfile last named while the
		// file is being rewritten: alive is what counts.
		still: func(pid int) bool { return liveProc(ProcRoot, pid) }}.run
}

// NewProcessNameTrigger returns a Trigger that kicks the moment any of the
// processes called name that the check's last run found exits. The run
// it asks for finds every live match again (a reload that starts new
// processes before the old ones exit, as HAProxy's master-worker reload
// or `-sf`, thus keeps the check up), and those are watched from then on.
//
// It works only under a Runner, and fails at once if this kernel has no
// pidfd_open; the check then runs on its interval only.
func NewProcessNameTrigger(name string) Trigger {
	return procTrigger{what: fmt.Sprintf("process %q", name),
		still: func(pid int) bool { return liveNamed(ProcRoot, pid, name) }}.run
}

// procTrigger watches, with pidfds, the exit of the processes the check's
// last run reported. Watching exactly those (and not a list of its own)
// leaves no gap: a process the verdict rests on either is watched, or
// had already exited when its pidfd was opened, which kicks too.
type procTrigger struct {
	what    string // for errors
	pidfile string // watched with inotify if set
	// still reports whether pid is still what the run found: checked once
	// its pidfd is open, so that a PID reused since the run is not
	// watched in place of the process that exited.
	still func(pid int) bool
	// open is pidfd_open(2); nil means unix.PidfdOpen.
	open func(pid, flags int) (int, error)
}

// Limits of the process trigger's own pace.
const (
	// rewatchEvery is how often a pidfile directory that cannot be
	// watched (not created yet, removed by a stop) is tried again. The
	// pidfds work meanwhile; only a new PID is seen on a run instead.
	rewatchEvery = time.Second
	// vanishedEvery bounds the runs asked for by processes found gone
	// when their pidfd is opened: a run that keeps reporting a PID that
	// pidfd_open cannot open (another PID namespace's /proc, EMFILE) must
	// not spin.
	vanishedEvery = 100 * time.Millisecond
)

func (t procTrigger) run(ctx context.Context, kick func()) error {
	if t.open == nil {
		t.open = unix.PidfdOpen
	}
	reports, ok := ctx.Value(reportKey{}).(*reported)
	if !ok {
		return fmt.Errorf("checks: %s: the process trigger runs only under a Runner", t.what)
	}
	// pidfd support, tried on ourselves: a kernel or sandbox without it
	// fails here, before anything is relied on.
	self, err := t.open(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("checks: %s: pidfd_open: %w", t.what, err)
	}
	unix.Close(self)

	// Two eventfds wake the poll: ctx's end, and a new report. Both are
	// signalled from other goroutines, so they are closed only under
	// their lock (a late signal must not write to a reused fd number).
	cancelFD, err := newEventFD()
	if err != nil {
		return fmt.Errorf("checks: %s: %w", t.what, err)
	}
	defer cancelFD.close()
	reportFD, err := newEventFD()
	if err != nil {
		return fmt.Errorf("checks: %s: %w", t.what, err)
	}
	defer reportFD.close()
	stop := context.AfterFunc(ctx, cancelFD.signal)
	defer stop()
	reports.onReport(reportFD.signal)
	defer reports.onReport(nil)

	pw := pidfileWatch{path: t.pidfile, fd: -1}
	defer pw.close()
	if t.pidfile != "" && pw.watch() {
		// The pidfile may have changed before the watch: look again.
		kick()
	}

	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	var counter [8]byte
	var lastVanished time.Time
	for {
		timeout := -1
		if t.pidfile != "" && pw.fd < 0 {
			if pw.watch() {
				kick() // the directory is back: the pidfile may be new
			} else {
				timeout = int(rewatchEvery / time.Millisecond)
			}
		}
		pidfds, vanished := openPidfds(t.open, reports.latest(), t.still)
		if vanished {
			// A process the last verdict rests on exited before it was
			// watched (or cannot be watched): an event like any other,
			// at a bounded pace. The run reports anew.
			if wait := vanishedEvery - time.Since(lastVanished); wait > 0 {
				timeout = pollTimeout(timeout, wait)
			} else {
				lastVanished = time.Now()
				kick()
			}
		}
		fds := make([]unix.PollFd, 0, 3+len(pidfds))
		fds = append(fds, unix.PollFd{Fd: int32(cancelFD.fd), Events: unix.POLLIN}, unix.PollFd{Fd: int32(reportFD.fd), Events: unix.POLLIN})
		inotifyAt := -1
		if pw.fd >= 0 {
			inotifyAt = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(pw.fd), Events: unix.POLLIN})
		}
		first := len(fds)
		for _, fd := range pidfds {
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		_, err := pollRetry(fds, timeout)
		for _, fd := range pidfds {
			unix.Close(fd)
		}
		if ctx.Err() != nil || fds[0].Revents != 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checks: %s: poll: %w", t.what, err)
		}
		if fds[1].Revents != 0 {
			unix.Read(reportFD.fd, counter[:]) // a new report: watch it (loop)
		}
		event := false
		if inotifyAt >= 0 && fds[inotifyAt].Revents != 0 {
			hit, gone, err := drainInotify(pw.fd, buf, pw.base())
			if err != nil || gone {
				// Removed with its directory (systemd's RuntimeDirectory=
				// on a stop): watched again once it is back.
				pw.close()
				hit = true
			}
			event = event || hit
		}
		for _, p := range fds[first:] {
			event = event || p.Revents != 0
		}
		if event {
			kick()
		}
	}
}

// pollTimeout is the shorter of a poll(2) timeout in ms (-1: none) and d.
func pollTimeout(ms int, d time.Duration) int {
	dm := max(int((d+time.Millisecond-1)/time.Millisecond), 1)
	if ms < 0 || dm < ms {
		return dm
	}
	return ms
}

// pidfileWatch is the inotify watch of a pidfile's directory; fd < 0
// while there is none.
type pidfileWatch struct {
	path string
	fd   int
}

func (w *pidfileWatch) base() string { return filepath.Base(filepath.Clean(w.path)) }

// watch tries to watch the directory and reports whether it does now.
func (w *pidfileWatch) watch() bool {
	dir := filepath.Dir(filepath.Clean(w.path))
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return false
	}
	if _, err := unix.InotifyAddWatch(fd, dir, inotifyMask); err != nil {
		unix.Close(fd)
		return false
	}
	w.fd = fd
	return true
}

func (w *pidfileWatch) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// eventFD is an eventfd that other goroutines may signal at any time, up
// to and during close.
type eventFD struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

func newEventFD() (*eventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &eventFD{fd: fd}, nil
}

// signal adds 1 to the counter, unless the eventfd is closed.
func (e *eventFD) signal() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(e.fd, one[:])
	}
}

func (e *eventFD) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.closed = true
		unix.Close(e.fd)
	}
}

// pollRetry is poll(2), retried on EINTR (the Go runtime's preemption
// signals interrupt it).
func pollRetry(fds []unix.PollFd, timeout int) (int, error) {
	for {
		n, err := unix.Poll(fds, timeout)
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

// drainInotify reads every queued event and reports whether one concerns
// base and whether the directory went away.
func drainInotify(fd int, buf []byte, base string) (hit, gone bool, err error) {
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return hit, gone, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return hit, gone, err
		}
		h, g := scanInotify(buf[:n], base)
		hit, gone = hit || h, gone || g
	}
}

// openPidfds opens a pidfd for each PID that still is a target once its
// pidfd is open. vanished reports a PID that is not watched: it exited
// after it was listed, or pidfd_open failed for it (EMFILE, a PID of
// another namespace) and only runs can see it.
func openPidfds(open func(int, int) (int, error), pids []int, still func(int) bool) (fds []int, vanished bool) {
	for _, pid := range pids {
		fd, err := open(pid, 0)
		if err != nil {
			vanished = true
			continue
		}
		if !still(pid) {
			unix.Close(fd)
			vanished = true
			continue
		}
		fds = append(fds, fd)
	}
	return fds, vanished
}

// liveNamed reports whether pid is a live process called name.
func liveNamed(procRoot string, pid int, name string) bool {
	return procNamed(procRoot, pid, name) && liveProc(procRoot, pid)
}
