package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File check bounds, as keepalived's track_file.
const (
	// maxFileRead is how much of a file check's file is read.
	maxFileRead = 128
	// MaxFileValue bounds a file check's value (keepalived clamps to
	// ±254): larger values are clamped, so any value times any weight
	// stays in int range.
	MaxFileValue = 254
)

// NewFile returns a Probe for keepalived's track_file idea: the file at
// path holds an integer (decimal, or 0x… hex / 0… octal as C's strtol; the
// first word of the file counts, surrounding blanks are ignored), which the
// Probe reports with ReportValue, clamped to ±254. A tracked file check
// that is up adds value × weight to the priority (see EffectivePriority);
// with weight 0 a non-zero value is FAULT. So `echo 0 > FILE` is "normal",
// and e.g. weight -50 with `echo 1 > FILE` drains a node.
//
// A missing file fails the run (the check goes down) unless missingZero,
// in which case it reads as 0 as in keepalived. An empty file or one that
// does not start with an integer fails the run (keepalived would read 0);
// a typo in a maintenance file should be seen, not ignored.
//
// The Probe only reads the file; NewFileTrigger makes changes take effect
// at once instead of at the next interval.
func NewFile(path string, missingZero bool) Probe {
	return func(ctx context.Context) error {
		v, err := readFileValue(path)
		if errors.Is(err, fs.ErrNotExist) && missingZero {
			ReportValue(ctx, 0)
			return nil
		}
		if err != nil {
			return err
		}
		ReportValue(ctx, v)
		return nil
	}
}

func readFileValue(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("checks: file %s: missing: %w", path, fs.ErrNotExist)
		}
		return 0, fmt.Errorf("checks: file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileRead))
	if err != nil {
		return 0, fmt.Errorf("checks: file: %w", err)
	}
	return parseFileValue(path, string(b))
}

// parseFileValue parses a file check's content.
func parseFileValue(path, content string) (int, error) {
	fields := strings.Fields(content)
	if len(fields) == 0 {
		return 0, fmt.Errorf("checks: file %s: empty, want an integer", path)
	}
	v, err := strconv.ParseInt(fields[0], 0, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			if strings.HasPrefix(fields[0], "-") {
				return -MaxFileValue, nil
			}
			return MaxFileValue, nil
		}
		return 0, fmt.Errorf("checks: file %s: %q is not an integer", path, truncate(fields[0], 32))
	}
	return int(min(max(v, -MaxFileValue), MaxFileValue)), nil
}

// inotifyMask watches the file's directory for what can change the file:
// a write that is closed, a create, a delete, a rename in or out, and
// attribute changes (a chmod that makes it unreadable). The directory's
// own removal ends the watch.
const inotifyMask = unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM |
	unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// NewFileTrigger returns a Trigger that kicks when the file at path may
// have changed, from inotify events on its directory (so creating,
// replacing by rename, and deleting the file are seen, as keepalived's
// track_file). It fails if the directory cannot be watched (it must exist
// when vipd starts) and returns when the directory is removed or moved;
// the check then runs on its interval only.
func NewFileTrigger(path string) Trigger {
	dir, base := filepath.Split(filepath.Clean(path))
	if dir == "" {
		dir = "."
	}
	return func(ctx context.Context, kick func()) error {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return fmt.Errorf("checks: file %s: inotify: %w", path, err)
		}
		// A non-blocking fd in an *os.File uses the runtime poller, so
		// Close (on ctx done) unblocks the Read below.
		f := os.NewFile(uintptr(fd), "inotify")
		defer f.Close()
		if _, err := unix.InotifyAddWatch(fd, dir, inotifyMask); err != nil {
			return fmt.Errorf("checks: file %s: watch %s: %w", path, dir, err)
		}
		stop := context.AfterFunc(ctx, func() { f.Close() })
		defer stop()
		// The file may have changed between the Runner's first run and
		// the watch: look once more.
		kick()
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			n, err := f.Read(buf)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return fmt.Errorf("checks: file %s: inotify read: %w", path, err)
			}
			hit, gone := scanInotify(buf[:n], base)
			if hit || gone {
				kick()
			}
			if gone {
				return fmt.Errorf("checks: file %s: directory %s was removed or moved", path, dir)
			}
		}
	}
}

// scanInotify reports whether events in buf concern the entry base, and
// whether the watched directory itself went away.
func scanInotify(buf []byte, base string) (hit, gone bool) {
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		end := off + unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			break
		}
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
		switch {
		case ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0:
			gone = true
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			hit = true // lost events: look anyway
		case name == base:
			hit = true
		}
		off = end
	}
	return hit, gone
}
