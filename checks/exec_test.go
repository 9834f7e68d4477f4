package checks

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/prereq"
)

// me is the user the test runs as, so exec tests can run without root.
func me(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Skipf("current user: %v", err)
	}
	return u.Username
}

func TestExecExitStatus(t *testing.T) {
	tests := []struct {
		name     string
		argv     []string
		wantCode int // -2: pass
		wantOut  string
	}{
		{"exit 0 passes", []string{"/bin/sh", "-c", "exit 0"}, -2, ""},
		{"exit 3 fails", []string{"/bin/sh", "-c", "echo not ready >&2; exit 3"}, 3, "not ready"},
		{"no shell: argv is passed as is", []string{"/bin/echo", "$HOME", ";", "exit", "1"}, -2, ""},
		{"only PATH in the environment", []string{"/bin/sh", "-c", `[ -z "$HOME" ] && [ -n "$PATH" ] && [ "$(pwd)" = / ]`}, -2, ""},
		{"long output is cut in the error", []string{"/bin/sh", "-c", "head -c 5000 /dev/zero | tr '\\0' y; exit 1"}, 1, "yyyy…(truncated)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewExec(tt.argv, me(t))
			if err != nil {
				t.Fatal(err)
			}
			err = runProbe(t, p, 10*time.Second)
			if tt.wantCode == -2 {
				if err != nil {
					t.Fatalf("err = %v, want pass", err)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != tt.wantCode || !strings.Contains(err.Error(), tt.wantOut) {
				t.Fatalf("err = %v (%T), want *ExitError code %d containing %q", err, err, tt.wantCode, tt.wantOut)
			}
			if len(ee.Output) > maxExecErrOutput+len("…(truncated)") {
				t.Errorf("error output is %d bytes, want it truncated to %d", len(ee.Output), maxExecErrOutput)
			}
			if !strings.HasPrefix(err.Error(), "checks: exec "+tt.argv[0]) {
				t.Errorf("err %q does not start with checks: exec %s", err, tt.argv[0])
			}
		})
	}
	p, err := NewExec([]string{"/nonexistent/check"}, me(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := runProbe(t, p, 5*time.Second); err == nil || !strings.HasPrefix(err.Error(), "checks: exec /nonexistent/check") {
		t.Fatalf("missing program: err = %v", err)
	}
}

func alive(pid int) bool {
	st, err := procState(ProcRoot, pid)
	return err == nil && aliveState(st)
}

// The timeout kills the whole process group: the shell and the background
// child it started.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidf := filepath.Join(dir, "child.pid")
	p, err := NewExec([]string{"/bin/sh", "-c", "sleep 60 & echo $! > " + pidf + "; wait"}, me(t))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = runProbe(t, p, 300*time.Millisecond)
	took := time.Since(begin)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed the process group") {
		t.Fatalf("err = %v, want a timeout that names the killed process group", err)
	}
	if took > 300*time.Millisecond+execWaitDelay+2*time.Second {
		t.Errorf("run took %v after a 300ms timeout", took)
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatalf("the script did not record its child: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(realWait)
	for alive(child) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("background child %d survived the timeout", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The default user is nobody, never silently root; root must be named.
func TestExecUser(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		prereq.Missing(t, "no nobody user: %v", err)
	}
	if os.Geteuid() != 0 {
		_, err := NewExec([]string{"/bin/true"}, "")
		if strconv.Itoa(os.Geteuid()) == nobody.Uid {
			if err != nil {
				t.Fatalf("running as nobody, default user: %v", err)
			}
		} else if err == nil || !strings.Contains(err.Error(), `user "nobody"`) || !strings.Contains(err.Error(), "cannot switch users") {
			t.Fatalf("non-root vipd, default user: err = %v, want one naming nobody and that it cannot switch", err)
		}
		_, err = NewExec([]string{"/bin/true"}, "root")
		if err == nil || !strings.Contains(err.Error(), `user "root"`) {
			t.Fatalf("non-root vipd, user root: err = %v, want an error", err)
		}
		return
	}
	for _, tc := range []struct{ user, uid string }{{"", nobody.Uid}, {"nobody", nobody.Uid}, {"root", "0"}} {
		p, err := NewExec([]string{"/bin/sh", "-c", `[ "$(id -u)" = "` + tc.uid + `" ] && [ "$(id -g)" != 0 -o "` + tc.uid + `" = 0 ]`}, tc.user)
		if err != nil {
			t.Fatalf("user %q: %v", tc.user, err)
		}
		if err := runProbe(t, p, 10*time.Second); err != nil {
			t.Errorf("user %q: want uid %s: %v", tc.user, tc.uid, err)
		}
	}
	if _, err := NewExec([]string{"/bin/true"}, "no-such-user-vipd"); err == nil || !strings.Contains(err.Error(), `"no-such-user-vipd"`) {
		t.Errorf("unknown user: err = %v", err)
	}
	// The config default is the same user.
	if config.DefaultExecUser != "nobody" {
		t.Errorf("config.DefaultExecUser = %q", config.DefaultExecUser)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Output goes to the Runner's log at debug level, tagged with the check,
// truncated to 4 KiB.
func TestExecOutputLoggedAtDebug(t *testing.T) {
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := NewExec([]string{"/bin/sh", "-c", "echo hello-from-check; head -c 10000 /dev/zero | tr '\\0' z"}, me(t))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(clock.NewFake(t0), log)
	r.Add("script", config.Check{Interval: time.Hour, Timeout: 10 * time.Second}, p)
	done := make(chan struct{})
	r.OnRun(func(string, bool, time.Duration) { close(done) })
	start(t, r, nil)
	recv(t, done, "the run")
	out := logBuf.String()
	for _, want := range []string{"exec check ran", "check=script", "hello-from-check", "exit=0", "more bytes dropped"} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not contain %q:\n%.600s", want, out)
		}
	}
	if strings.Count(out, "z") > maxExecOutput+100 {
		t.Errorf("log holds %d bytes of output, want ≤ %d", strings.Count(out, "z"), maxExecOutput)
	}
}

func TestLimitedBuffer(t *testing.T) {
	b := &limitedBuffer{max: 5}
	n, err := b.Write([]byte("abc"))
	if n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if n, _ := b.Write([]byte("defgh")); n != 5 {
		t.Fatalf("Write reported %d, want all 5 accepted", n)
	}
	b.Write([]byte("ij"))
	if got, want := b.String(), "abcde…(5 more bytes dropped)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
