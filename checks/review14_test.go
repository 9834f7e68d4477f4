package checks

// The adversarial review of issue 14: each test failed on the first
// version of the process trigger (8a87919) and passes since.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// haproxyWritePidfile mimics HAProxy's pidfile handling (haproxy.c,
// every version: "open log & pid files before the chroot": unlink, then
// open O_CREAT|O_TRUNC, and the PID written later — in 2.x after
// binding and forking the workers; in 3.x handle_pidfile writes at once).
// A master-worker reload (SIGUSR2, `systemctl reload haproxy` with -Ws)
// re-executes the master, which runs this again with the same PID.
func haproxyWritePidfile(t *testing.T, path string, pid int, gap time.Duration) {
	t.Helper()
	os.Remove(path)
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(gap)
	unix.Write(fd, []byte(strconv.Itoa(pid)+"\n"))
	unix.Close(fd)
}

// R1: a master-worker reload (same PID, pidfile rewritten the way HAProxy
// does it) must not take the check down. The inotify kick lands the run
// exactly in the window where the pidfile is missing or empty.
func TestReviewPidfileReloadSamePID(t *testing.T) {
	for _, tc := range []struct {
		fall int
		gap  time.Duration
	}{{1, 20 * ms}, {2, 20 * ms}, {1, 0}, {2, 0}} {
		t.Run(fmt.Sprintf("fall=%d,gap=%v", tc.fall, tc.gap), func(t *testing.T) {
			pf := filepath.Join(t.TempDir(), "haproxy.pid")
			master := sleeper(t, "sleep")
			haproxyWritePidfile(t, pf, master.Process.Pid, 0)
			w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf, Fall: tc.fall})
			w.expect(t, true)
			time.Sleep(20 * ms) // the trigger's first kick has run
			downs := 0
			for i := range 10 {
				haproxyWritePidfile(t, pf, master.Process.Pid, tc.gap)
				time.Sleep(30 * ms)
				select {
				case s := <-w.changes:
					if !s.Up {
						downs++
						t.Logf("reload %d: check down: %v", i, s.Err)
						w.expect(t, true) // comes back on the write
					}
				default:
				}
			}
			if downs > 0 {
				t.Errorf("fall %d: %d of 10 reloads with the PID unchanged took the check down (the VIP moves)", tc.fall, downs)
			}
		})
	}
}

// R2: the pidfile's directory not existing when vipd starts (e.g.
// /run/haproxy from haproxy.service's RuntimeDirectory, vipd started
// first) makes the whole trigger fail: the pidfd is never used and
// HAProxy's death is seen only on the interval.
func TestReviewPidfileDirMissingDisablesPidfd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "haproxy")
	pf := filepath.Join(dir, "haproxy.pid")
	w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf})
	w.expect(t, false) // no HAProxy yet
	time.Sleep(50 * ms)
	if s := w.source.Load(); s != SourcePidfd {
		t.Logf("source is now %v: the pidfd watch is off for good", s)
	}
	// HAProxy starts: directory, process, pidfile.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := sleeper(t, "sleep")
	writePidfile(t, pf, p.Process.Pid)
	// (The interval is an hour on the fake clock: nothing re-runs the
	// check. In production it comes up on the next interval.)
	select {
	case s := <-w.changes:
		t.Logf("check changed to up=%v without the interval", s.Up)
	case <-time.After(rewatchEvery + 500*ms):
		t.Errorf("HAProxy started and wrote its pidfile; no run within the re-watch period: no event source left (source %v)", w.source.Load())
	}
}

// R3: the pidfile directory being removed and recreated (systemd removes
// RuntimeDirectory= on stop; `systemctl restart haproxy`) ends the
// trigger for good: later kills are seen only on the interval.
func TestReviewPidfileDirRecreatedDisablesPidfd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "haproxy")
	os.Mkdir(dir, 0o755)
	pf := filepath.Join(dir, "haproxy.pid")
	p1 := sleeper(t, "sleep")
	writePidfile(t, pf, p1.Process.Pid)
	w := runProcessCheck(t, config.Check{Type: "process", Pidfile: pf})
	w.expect(t, true)
	// systemctl restart haproxy: stop (process exits, directory removed), start.
	p1.Process.Kill()
	p1.Wait()
	os.RemoveAll(dir)
	w.expect(t, false)
	os.Mkdir(dir, 0o755)
	p2 := sleeper(t, "sleep")
	writePidfile(t, pf, p2.Process.Pid)
	time.Sleep(100 * ms)
	t.Logf("source after the restart: %v", w.source.Load())
	select {
	case s := <-w.changes:
		t.Logf("up=%v", s.Up)
	case <-time.After(rewatchEvery + 500*ms):
		t.Errorf("HAProxy restarted; check not re-run without the interval (source %v): the pidfd watch is gone for good, its next kill waits a whole interval", w.source.Load())
	}
}

// R6: the grace on exit is fall − 1 re-checks: an old process exiting 5 ms
// before the new PID is written (with HAProxy's unlink and create) must
// not take a fall-2 check down. fall 1 means one failed run is enough:
// it has no grace by definition (docs/design.md).
func TestReviewPidfileNoGraceOnExit(t *testing.T) {
	for _, fall := range []int{2} {
		t.Run(fmt.Sprint("fall=", fall), func(t *testing.T) {
			pf := filepath.Join(t.TempDir(), "haproxy.pid")
			old := sleeper(t, "sleep")
			writePidfile(t, pf, old.Process.Pid)
			w := runProcessCheckOn(t, config.Check{Type: "process", Pidfile: pf, Fall: fall, FastInterval: 10 * ms}, clock.Real{})
			w.expect(t, true)
			time.Sleep(20 * ms)
			next := sleeper(t, "sleep")
			old.Process.Kill()
			old.Wait()
			time.Sleep(5 * ms)
			haproxyWritePidfile(t, pf, next.Process.Pid, 0)
			time.Sleep(50 * ms)
			select {
			case s := <-w.changes:
				t.Errorf("fall %d: reload (old exits 5ms before the new PID is written): check up=%v (%v)", fall, s.Up, s.Err)
			default:
			}
		})
	}
}
