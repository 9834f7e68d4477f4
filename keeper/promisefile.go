package keeper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// promiseFile remembers, across restarts within one boot, until when this
// node promised a peer's failsafe hold not to claim (docs/design.md §2.9),
// on CLOCK_BOOTTIME, which keeps counting across processes (and suspends).
// A node restarted with the peer channel off, or with a shorter lease_ttl,
// then still waits its promises out. "" keeps nothing.
type promiseFile string

// bootID names this boot: a file left from an earlier one means nothing.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

func bootNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

func bootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	return strings.TrimSpace(string(b)), err
}

// save records that no promise given so far lasts past for from now. It
// writes a temporary file and renames it, so a crash leaves the old record
// or the new one.
func (p promiseFile) save(forAtLeast time.Duration) error {
	if p == "" {
		return nil
	}
	now, err := bootNow()
	if err != nil {
		return fmt.Errorf("keeper: promise record: %w", err)
	}
	id, err := bootID()
	if err != nil {
		return fmt.Errorf("keeper: promise record: %w", err)
	}
	end := now + forAtLeast
	if old, _ := p.read(id); old > end {
		end = old
	}
	tmp := string(p) + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%s %d\n", id, int64(end))), 0o600); err != nil {
		return fmt.Errorf("keeper: promise record: %w", err)
	}
	if err := os.Rename(tmp, string(p)); err != nil {
		return fmt.Errorf("keeper: promise record: %w", err)
	}
	return nil
}

// read returns the recorded end (CLOCK_BOOTTIME) if the record is of boot
// id; 0 if there is none.
func (p promiseFile) read(id string) (time.Duration, error) {
	b, err := os.ReadFile(string(p))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("keeper: promise record %s: malformed", filepath.Base(string(p)))
	}
	if f[0] != id {
		return 0, nil
	}
	end, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("keeper: promise record %s: %w", filepath.Base(string(p)), err)
	}
	return time.Duration(end), nil
}

// remaining is how long a promise given by an earlier run of this boot may
// still last (0: none).
func (p promiseFile) remaining() (time.Duration, error) {
	if p == "" {
		return 0, nil
	}
	id, err := bootID()
	if err != nil {
		return 0, fmt.Errorf("keeper: promise record: %w", err)
	}
	end, err := p.read(id)
	if err != nil {
		return 0, err
	}
	now, err := bootNow()
	if err != nil {
		return 0, fmt.Errorf("keeper: promise record: %w", err)
	}
	return max(end-now, 0), nil
}
