package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ProcRoot is where the process check reads the process table.
const ProcRoot = "/proc"

// maxCommLen is TASK_COMM_LEN-1: the kernel truncates /proc/<pid>/comm.
const maxCommLen = 15

// NewPidfile returns a Probe that passes iff the pidfile holds the PID of
// a live process that is not a zombie (state Z or dead X in
// /proc/<pid>/stat). A missing or unparsable pidfile fails.
func NewPidfile(pidfile string) Probe { return newPidfile(ProcRoot, pidfile) }

// NewProcessName returns a Probe that passes iff some live, non-zombie
// process in vipd's PID namespace is called name: its /proc/<pid>/comm
// equals name (for names longer than 15 bytes, the kernel's truncated comm
// equals name's first 15 bytes), or the basename of its /proc/<pid>/exe
// link equals name.
//
// Unprivileged (the shipped systemd unit runs vipd without root), the exe
// link of another user's process cannot be read, so only comm matches
// there; and /proc mounted with hidepid hides other users' processes
// entirely. The pidfile form has neither limit as long as the pidfile is
// readable.
//
// This is what keepalived's `killall -0 NAME` checked, with its weakness:
// on a host running several HAProxy instances (or containers sharing the
// PID namespace) any one of them satisfies it. Prefer a pidfile, or better
// the http check of the instance that serves the VIP.
func NewProcessName(name string) Probe { return newProcessName(ProcRoot, name) }

func newPidfile(procRoot, pidfile string) Probe {
	// last is the process the pidfile named when the check last passed
	// (its PID and start time). HAProxy rewrites its pidfile by unlink,
	// create and write, and a master-worker reload does so with the same
	// PID: while the file is missing or empty, that process being alive
	// is the answer.
	var mu sync.Mutex
	var last procID
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		ReportPids(ctx, nil) // unless a live process is found below
		pid, ferr := readPidfile(pidfile)
		if ferr != nil {
			if last.pid > 0 && last.alive(procRoot) {
				logFrom(ctx).Debug("pidfile unreadable; the process it last named is alive", "pid", last.pid, "err", ferr)
				ReportPids(ctx, []int{last.pid})
				return nil
			}
			last = procID{}
			return ferr
		}
		id, state, err := procIdentity(procRoot, pid)
		if err != nil {
			return fmt.Errorf("checks: process %d from %s: %w", pid, pidfile, err)
		}
		if !aliveState(state) {
			return fmt.Errorf("checks: process %d from %s is a zombie or dead (state %c)", pid, pidfile, state)
		}
		last = id
		ReportPids(ctx, []int{pid})
		return nil
	}
}

// readPidfile returns the PID in pidfile's first field.
func readPidfile(pidfile string) (int, error) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return 0, fmt.Errorf("checks: process pidfile: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("checks: process pidfile %s is empty", pidfile)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("checks: process pidfile %s: %q is not a PID", pidfile, f[0])
	}
	return pid, nil
}

// procID names one process: a PID and the process's start time, so that
// a PID reused by another process is not taken for it.
type procID struct {
	pid   int
	start string // /proc/<pid>/stat field 22, clock ticks after boot
}

// alive reports whether the process is still running (not a zombie).
func (p procID) alive(procRoot string) bool {
	id, state, err := procIdentity(procRoot, p.pid)
	return err == nil && id == p && aliveState(state)
}

// procIdentity reads pid's start time and state from /proc/<pid>/stat.
func procIdentity(procRoot string, pid int) (procID, byte, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if errors.Is(err, fs.ErrNotExist) {
		return procID{}, 0, errors.New("no such process")
	}
	if err != nil {
		return procID{}, 0, err
	}
	state, err := parseStatState(b)
	if err != nil {
		return procID{}, 0, err
	}
	// Fields after the comm: state is field 3, starttime field 22 (a
	// short line, as some tests' fake /proc, identifies by PID alone).
	id := procID{pid: pid}
	if rest := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(rest) >= 20 {
		id.start = rest[19]
	}
	return id, state, nil
}

func newProcessName(procRoot, name string) Probe {
	return func(ctx context.Context) error {
		ReportPids(ctx, nil) // unless live processes are found below
		ents, err := os.ReadDir(procRoot)
		if err != nil {
			return fmt.Errorf("checks: process %q: %w", name, err)
		}
		// Every live match, not the first: the event source watches all
		// of them (a reload overlaps old and new processes).
		var live []int
		zombies := 0
		for _, e := range ents {
			if ctx.Err() != nil {
				return fmt.Errorf("checks: process %q: %w", name, ctx.Err())
			}
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid <= 0 {
				continue
			}
			if !procNamed(procRoot, pid, name) {
				continue
			}
			state, err := procState(procRoot, pid)
			if err != nil {
				continue // exited meanwhile
			}
			if aliveState(state) {
				live = append(live, pid)
			} else {
				zombies++
			}
		}
		if len(live) > 0 {
			ReportPids(ctx, live)
			return nil
		}
		if zombies > 0 {
			return fmt.Errorf("checks: process %q: only zombies (%d)", name, zombies)
		}
		return fmt.Errorf("checks: process %q: no such process", name)
	}
}

// procNamed reports whether pid's comm or executable basename is name.
func procNamed(procRoot string, pid int, name string) bool {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		comm := strings.TrimSuffix(string(b), "\n")
		if comm == name || (len(name) > maxCommLen && comm == name[:maxCommLen]) {
			return true
		}
	}
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		exe = strings.TrimSuffix(exe, " (deleted)") // replaced by a package upgrade
		if filepath.Base(exe) == name {
			return true
		}
	}
	return false
}

// procState returns the state letter of /proc/<pid>/stat: the first field
// after the last ')' (comm may itself contain ')' and spaces).
func procState(procRoot string, pid int) (byte, error) {
	_, state, err := procIdentity(procRoot, pid)
	return state, err
}

// liveProc reports whether pid is a live (not zombie, not dead) process.
func liveProc(procRoot string, pid int) bool {
	s, err := procState(procRoot, pid)
	return err == nil && aliveState(s)
}

func parseStatState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, fmt.Errorf("malformed stat %q", truncate(string(stat), 64))
	}
	return stat[i+2], nil
}

// aliveState reports whether a /proc stat state is a live process: not a
// zombie (Z) and not dead (X, or x on old kernels).
func aliveState(s byte) bool { return s != 'Z' && s != 'X' && s != 'x' }

// truncate shortens s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(truncated)"
}
