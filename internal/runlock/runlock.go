package runlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is the runtime directory when neither --runtime-dir nor
// $RUNTIME_DIRECTORY names one.
const DefaultDir = "/run/vipd"

// FileName is the lock file's name inside the runtime directory.
const FileName = "vipd.lock"

// ErrLocked means another process holds the lock. Acquire returns it
// wrapped in a *HeldError that names the holder.
var ErrLocked = errors.New("runlock: locked by another process")

// HeldError is Acquire's error when another process holds the lock.
// errors.Is(err, ErrLocked) is true for it.
type HeldError struct {
	Path string // the lock file
	PID  int    // the holder's PID, 0 if the file did not name one
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("runlock: %s is locked by another process", e.Path)
	}
	return fmt.Sprintf("runlock: %s is locked by pid %d", e.Path, e.PID)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *HeldError) Unwrap() error { return ErrLocked }

// Dir is the runtime directory: explicit (the --runtime-dir flag) if set,
// else the first entry of env ($RUNTIME_DIRECTORY, which systemd sets from
// RuntimeDirectory= as a colon-separated list), else DefaultDir.
func Dir(explicit, env string) string {
	if explicit != "" {
		return explicit
	}
	if first, _, _ := strings.Cut(env, ":"); first != "" {
		return first
	}
	return DefaultDir
}

// Lock is a held lock. Close releases it.
type Lock struct {
	f *os.File
}

// Acquire creates dir (0755) if it is missing, opens dir/vipd.lock and
// takes an exclusive flock on it without waiting, then replaces the file's
// content with this process's PID. If another process holds the lock it
// returns a *HeldError (errors.Is(err, ErrLocked)) and changes nothing.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// No O_TRUNC: the file may hold the current holder's PID. os.OpenFile
	// sets O_CLOEXEC; O_NOFOLLOW keeps a planted symlink from making us
	// truncate another file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: holder(path)}
		}
		return nil, fmt.Errorf("runlock: flock %s: %w", path, err)
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("runlock: %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Path is the lock file.
func (l *Lock) Path() string { return l.f.Name() }

// Close empties the file (the PID it names is about to stop holding it) and
// releases the lock. A Lock must not be used after Close.
func (l *Lock) Close() error {
	terr := l.f.Truncate(0)
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("runlock: %w", err)
	}
	if terr != nil {
		return fmt.Errorf("runlock: %w", terr)
	}
	return nil
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if !errors.Is(ferr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// holder reads the PID from a locked file. The holder writes it right after
// locking, so an empty file is read again for a moment before giving up.
func holder(path string) int {
	for i := 0; ; i++ {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid
			}
		}
		if i == 10 {
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Fd returns the lock file's descriptor, to hand the lock to the next
// vipd image across an exec (see Inherit): the descriptor must then be
// kept open across it (its close-on-exec flag cleared).
func (l *Lock) Fd() uintptr { return l.f.Fd() }

// Inherit takes over a lock held through descriptor fd, inherited from the
// vipd image this process replaced by exec (same process, same open file
// description, so the flock is already ours). It fails, changing nothing,
// unless fd is dir's lock file (same device and inode) and this process
// holds its lock; on failure the descriptor is closed (it is not for hooks
// and checks to inherit).
func Inherit(fd uintptr, dir string) (*Lock, error) {
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(fd), &fst); err != nil {
		return nil, fmt.Errorf("runlock: inherited descriptor %d: %w", fd, err)
	}
	path := filepath.Join(dir, FileName)
	if err := unix.Stat(path, &pst); err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("runlock: %w", err)
	}
	if fst.Dev != pst.Dev || fst.Ino != pst.Ino {
		unix.Close(int(fd))
		return nil, fmt.Errorf("runlock: inherited descriptor %d is not %s", fd, path)
	}
	f := os.NewFile(fd, path)
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("runlock: inherited descriptor %d: %w", fd, err)
	}
	// Close-on-exec again: a hook or check must not inherit it.
	if _, err := unix.FcntlInt(fd, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		f.Close()
		return nil, fmt.Errorf("runlock: inherited descriptor %d: %w", fd, err)
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("runlock: %w", err)
	}
	return &Lock{f: f}, nil
}
