package checks

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// R7 of the issue 14 review: when the probe and pidfd_open disagree for good (the probe sees a
// live process in /proc, pidfd_open says ESRCH: a /proc of another PID
// namespace), vanished -> kick -> run -> report -> vanished ... spins.
func TestReviewVanishedKickLoop(t *testing.T) {
	var runs atomic.Int64
	trig := procTrigger{what: "x", still: func(int) bool { return true },
		open: func(pid, _ int) (int, error) {
			if pid == os.Getpid() {
				return unix.PidfdOpen(pid, 0)
			}
			return -1, unix.ESRCH
		}}.run
	r := NewRunner(clock.NewFake(t0), testLogger(t))
	r.Add("p", config.Check{Interval: time.Hour}, func(ctx context.Context) error {
		runs.Add(1)
		ReportPids(ctx, []int{999999})
		return nil
	}, WithTrigger(trig, SourcePidfd))
	start(t, r, nil)
	time.Sleep(200 * time.Millisecond)
	// At most one run per vanishedEvery (100ms) besides the first.
	if n := runs.Load(); n > 5 {
		t.Errorf("%d runs in 200ms with the interval at 1h: a kick loop", n)
	}
}
