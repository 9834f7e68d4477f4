package runlock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the other process of the cross-process tests:
// with helperEnv set it runs helper instead of the tests.
const helperEnv = "RUNLOCK_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper "hold:DIR" takes the lock in DIR; "wait" takes nothing. Either way
// it prints "ready" and then waits for stdin to close (the parent closing
// the pipe, or dying), so it never outlives the test.
func helper(mode string) int {
	if dir, ok := strings.CutPrefix(mode, "hold:"); ok {
		l, err := Acquire(dir)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		defer l.Close()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startHelper runs the test binary in helper mode and waits for "ready".
// Closing the returned stdin ends it; it is also killed at cleanup.
func startHelper(t *testing.T, mode string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case s := <-line:
		if s != "ready" {
			t.Fatalf("helper %s: %q", mode, s)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %s: not ready within 10 s", mode)
	}
	return cmd, stdin
}

func mustAcquire(t *testing.T, dir string) *Lock {
	t.Helper()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", dir, err)
	}
	return l
}

// wantHeld checks that Acquire(dir) fails with ErrLocked naming pid.
func wantHeld(t *testing.T, dir string, pid int) {
	t.Helper()
	l, err := Acquire(dir)
	if err == nil {
		l.Close()
		t.Fatalf("second Acquire(%s) succeeded while pid %d holds the lock", dir, pid)
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Acquire: %v, want ErrLocked", err)
	}
	var he *HeldError
	if !errors.As(err, &he) {
		t.Fatalf("second Acquire: %T %v, want *HeldError", err, err)
	}
	if he.PID != pid || he.Path != filepath.Join(dir, FileName) {
		t.Errorf("HeldError{Path: %q, PID: %d}, want {%q, %d}", he.Path, he.PID, filepath.Join(dir, FileName), pid)
	}
	if want := fmt.Sprintf("runlock: %s is locked by pid %d", filepath.Join(dir, FileName), pid); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func readPID(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSecondAcquireFailsUntilClose(t *testing.T) {
	dir := t.TempDir()
	l := mustAcquire(t, dir)
	if got, want := readPID(t, dir), fmt.Sprintf("%d\n", os.Getpid()); got != want {
		t.Errorf("lock file holds %q, want %q", got, want)
	}
	// flock locks belong to the open file description: a second open in
	// the same process conflicts like another process would.
	wantHeld(t, dir, os.Getpid())
	// The failed attempt left the holder's PID in place.
	if got, want := readPID(t, dir), fmt.Sprintf("%d\n", os.Getpid()); got != want {
		t.Errorf("after a failed Acquire the file holds %q, want %q", got, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readPID(t, dir); got != "" {
		t.Errorf("after Close the file holds %q, want it empty", got)
	}
	l2 := mustAcquire(t, dir)
	defer l2.Close()
	if l2.Path() != filepath.Join(dir, FileName) {
		t.Errorf("Path() = %q", l2.Path())
	}
}

func TestAcquireCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "vipd")
	l := mustAcquire(t, dir)
	defer l.Close()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDir() {
		t.Fatalf("%s is not a directory", dir)
	}
}

func TestAcquireBadDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Acquire(filepath.Join(file, "sub"))
	if err == nil || errors.Is(err, ErrLocked) || !strings.HasPrefix(err.Error(), "runlock: ") {
		t.Fatalf("Acquire under a regular file: %v", err)
	}
}

// A lock held by another process is detected and names that process; it
// is free again once the process exits.
func TestHeldByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd, stdin := startHelper(t, "hold:"+dir)
	if got, want := readPID(t, dir), fmt.Sprintf("%d\n", cmd.Process.Pid); got != want {
		t.Errorf("lock file holds %q, want the helper's pid %q", got, want)
	}
	wantHeld(t, dir, cmd.Process.Pid)

	stdin.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := Acquire(dir)
		if err == nil {
			if got, want := readPID(t, dir), strconv.Itoa(os.Getpid())+"\n"; got != want {
				t.Errorf("lock file holds %q, want %q", got, want)
			}
			l.Close()
			return
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("Acquire after the holder exited: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A holder that has not written its PID yet (or a foreign flock on the
// file) is still reported as locked, without a PID.
func TestHeldWithoutPID(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var he *HeldError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &he) || he.PID != 0 {
		t.Fatalf("Acquire on a PID-less locked file: %v", err)
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("error %q", err)
	}
}

// A child vipd spawns (exec check, notify hook) must not inherit the lock:
// the descriptor is close-on-exec, so the lock goes with Close even while
// the child lives on.
func TestChildDoesNotInheritLock(t *testing.T) {
	dir := t.TempDir()
	l := mustAcquire(t, dir)
	fdflags, err := unix.FcntlInt(l.f.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fdflags&unix.FD_CLOEXEC == 0 {
		t.Errorf("lock descriptor lacks FD_CLOEXEC")
	}
	startHelper(t, "wait") // lives until cleanup
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Close, with a child spawned while locked still running: %v", err)
	}
	l2.Close()
}

func TestDir(t *testing.T) {
	for _, c := range []struct{ explicit, env, want string }{
		{"", "", DefaultDir},
		{"/tmp/x", "/run/y", "/tmp/x"},
		{"", "/run/vipd", "/run/vipd"},
		{"", "/run/vipd:/run/other", "/run/vipd"},
		{"", ":/run/other", DefaultDir},
	} {
		if got := Dir(c.explicit, c.env); got != c.want {
			t.Errorf("Dir(%q, %q) = %q, want %q", c.explicit, c.env, got, c.want)
		}
	}
}

// Issue 17: the lock passes to the next vipd image across an exec as an
// inherited descriptor (modelled by a dup: the same open file
// description). The inherited lock is held: another Acquire fails.
func TestInherit(t *testing.T) {
	dir := t.TempDir()
	l := mustAcquire(t, dir)
	fd, err := unix.Dup(int(l.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Inherit(uintptr(fd), dir)
	if err != nil {
		t.Fatalf("Inherit: %v", err)
	}
	defer l2.Close()
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("inherited descriptor flags %#x (%v), want close-on-exec set again", flags, err)
	}
	// The old image's descriptor goes away with the exec; the lock stays.
	l.f.Close()
	wantHeld(t, dir, os.Getpid())
	if _, err := Inherit(uintptr(fd)+1000, dir); err == nil {
		t.Error("Inherit of a descriptor that is not open succeeded")
	}
	other, err := os.CreateTemp(t.TempDir(), "not-the-lock")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := Inherit(other.Fd(), dir); err == nil {
		t.Error("Inherit of another file than the lock succeeded")
	}
}
