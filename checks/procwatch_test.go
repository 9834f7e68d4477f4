package checks

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// These tests watch real processes (copies of sleep) on a fake clock whose
// interval never elapses: every run after the first is one a process
// event asked for.

// sleeper starts the executable at path with a long sleep and returns it;
// the cleanup kills and reaps it.
func sleeper(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// namedSleep copies sleep under a name unique to the test, so that no
// other process on the machine matches it.
func namedSleep(t *testing.T) (path, name string) {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("process tests need sleep: %v", err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	name = fmt.Sprintf("vt%d", os.Getpid()%1_000_000_000)
	path = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, name
}

func writePidfile(t *testing.T, path string, pid int) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// watched runs one process check with its trigger and reports its
// changes and the real time each run started.
type watched struct {
	changes chan Status
	mu      sync.Mutex
	starts  []time.Time
	source  atomic.Value
}

func runProcessCheck(t *testing.T, c config.Check) *watched {
	t.Helper()
	return runProcessCheckOn(t, c, clock.NewFake(t0))
}

// runProcessCheckOn is runProcessCheck on clk (a real clock lets the fast
// interval elapse).
func runProcessCheckOn(t *testing.T, c config.Check, clk clock.Clock) *watched {
	t.Helper()
	p, err := NewProbe(c)
	if err != nil {
		t.Fatal(err)
	}
	w := &watched{changes: make(chan Status, 16)}
	probe := func(ctx context.Context) error {
		w.mu.Lock()
		w.starts = append(w.starts, time.Now())
		w.mu.Unlock()
		return p(ctx)
	}
	r := NewRunner(clk, testLogger(t))
	c.Interval = time.Hour
	r.Add("p", c, probe, WithTrigger(NewTrigger(c)))
	r.OnSource(func(_, s string) { w.source.Store(s) })
	start(t, r, func(s Status) { w.changes <- s })
	return w
}

// ranAfter waits until a run starts after at.
func (w *watched) ranAfter(t *testing.T, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(realWait)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := len(w.starts)
		last := time.Time{}
		if n > 0 {
			last = w.starts[n-1]
		}
		w.mu.Unlock()
		if last.After(at) {
			return
		}
		time.Sleep(5 * ms)
	}
	t.Fatalf("no run after %v: the process event was not seen", at.Format(time.StampMicro))
}

func (w *watched) expect(t *testing.T, up bool) {
	t.Helper()
	if s := recv(t, w.changes, fmt.Sprintf("check up=%v", up)); s.Up != up {
		t.Fatalf("check went up=%v (err %v), want up=%v", s.Up, s.Err, up)
	}
}

func (w *watched) noChange(t *testing.T) {
	t.Helper()
	select {
	case s := <-w.changes:
		t.Fatalf("check changed to up=%v (err %v), want no change", s.Up, s.Err)
	default:
	}
}

// A killed process takes its pidfile check down at once, zombie or not.
func TestPidfileTriggerExit(t *testing.T) {
	for _, reap := range []bool{false, true} {
		t.Run(fmt.Sprintf("reaped=%v", reap), func(t *testing.T) {
			pf := filepath.Join(t.TempDir(), "haproxy.pid")
			cmd := sleeper(t, "sleep")
			writePidfile(t, pf, cmd.Process.Pid)
			w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf})
			w.expect(t, true)
			if s := w.source.Load(); s != SourcePidfd {
				t.Errorf("source %v, want %s", s, SourcePidfd)
			}
			cmd.Process.Signal(unix.SIGKILL)
			if reap {
				cmd.Wait()
			}
			w.expect(t, false)
		})
	}
}

// A reload that writes a new PID to the pidfile before the old process
// exits keeps the check up, and the new process is watched from then on.
func TestPidfileTriggerReload(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "haproxy.pid")
	old := sleeper(t, "sleep")
	writePidfile(t, pf, old.Process.Pid)
	w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf})
	w.expect(t, true)

	next := sleeper(t, "sleep")
	wrote := time.Now()
	writePidfile(t, pf, next.Process.Pid)
	w.ranAfter(t, wrote) // the inotify event: the new PID is watched now
	old.Process.Kill()
	old.Wait()
	time.Sleep(50 * ms)
	w.noChange(t)

	next.Process.Kill()
	w.expect(t, false)
}

// The name form watches every matching process: one of two exiting keeps
// the check up (a reload's overlap), the last one takes it down.
func TestProcessNameTrigger(t *testing.T) {
	path, name := namedSleep(t)
	a := sleeper(t, path)
	w := runProcessCheck(t, config.Check{Type: "process", Name: name})
	w.expect(t, true)
	b := sleeper(t, path) // started after the first scan

	killed := time.Now()
	a.Process.Kill()
	a.Wait()
	w.ranAfter(t, killed)
	w.noChange(t)

	b.Process.Kill() // not reaped: a zombie counts as gone
	w.expect(t, false)

}

// Without pidfd_open (Linux < 5.3, a seccomp filter) the trigger fails at
// once and the Runner reports the interval as the source.
func TestProcessTriggerWithoutPidfd(t *testing.T) {
	trig := procTrigger{what: "process x", still: func(int) bool { return true },
		open: func(int, int) (int, error) { return -1, unix.ENOSYS }}.run
	r := NewRunner(clock.NewFake(t0), testLogger(t))
	r.Add("p", config.Check{Interval: time.Hour}, func(context.Context) error { return nil }, WithTrigger(trig, SourcePidfd))
	src := make(chan string, 4)
	r.OnSource(func(_, s string) { src <- s })
	start(t, r, nil)
	if s := recv(t, src, "source"); s != SourcePidfd {
		t.Fatalf("first source %q, want %q", s, SourcePidfd)
	}
	if s := recv(t, src, "fallback source"); s != SourceInterval {
		t.Fatalf("after the failure source %q, want %q", s, SourceInterval)
	}
}

// A trigger stops when its context ends, whatever it watches.
func TestProcessTriggerStops(t *testing.T) {
	path, name := namedSleep(t)
	sleeper(t, path)
	for _, c := range []config.Check{
		{Type: "process", Name: name}, {Type: "process", Name: name + "-none"},
		{Type: "process", Pidfile: filepath.Join(t.TempDir(), "x.pid")},
	} {
		p, _ := NewProbe(c)
		trig, _ := NewTrigger(c)
		r := NewRunner(clock.NewFake(t0), testLogger(t))
		c.Interval = time.Hour
		r.Add("p", c, p, WithTrigger(trig, SourcePidfd))
		src := make(chan string, 4)
		r.OnSource(func(_, s string) { src <- s })
		stop := start(t, r, nil)
		recv(t, src, "source")
		time.Sleep(20 * ms)
		stop() // fails the test unless Run, and so the trigger, returns
		select {
		case s := <-src:
			t.Errorf("%+v: trigger failed (source %s)", c, s)
		default:
		}
	}
}

// Outside a Runner there is nothing to watch: the trigger says so.
func TestProcessTriggerNeedsRunner(t *testing.T) {
	if err := NewProcessNameTrigger("x")(t.Context(), func() {}); err == nil {
		t.Fatal("trigger outside a Runner returned nil, want an error")
	}
}

// With fall 2 on a real clock the death is confirmed one fast interval
// after the exit: the pacing of a falling check never hides a death.
func TestPidfileTriggerExitFall2(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "haproxy.pid")
	cmd := sleeper(t, "sleep")
	writePidfile(t, pf, cmd.Process.Pid)
	w := runProcessCheckOn(t, config.Check{Type: "process", Pidfile: pf, Fall: 2, FastInterval: 10 * ms}, clock.Real{})
	w.expect(t, true)
	cmd.Process.Kill()
	w.expect(t, false)
}

// A pidfile removed while its process lives: the check stays up on the
// process it last named, and the watch agrees with it (no run after run
// of "vanished").
func TestPidfileRemovedProcessAlive(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "haproxy.pid")
	cmd := sleeper(t, "sleep")
	writePidfile(t, pf, cmd.Process.Pid)
	w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf})
	w.expect(t, true)
	removed := time.Now()
	os.Remove(pf)
	w.ranAfter(t, removed) // the inotify event
	time.Sleep(350 * ms)
	w.mu.Lock()
	n := 0
	for _, s := range w.starts {
		if s.After(removed) {
			n++
		}
	}
	w.mu.Unlock()
	if n > 2 {
		t.Errorf("%d runs in 350ms after the pidfile went (interval 1h): the watch and the check disagree", n)
	}
	w.noChange(t)
	cmd.Process.Kill()
	w.expect(t, false)
}
