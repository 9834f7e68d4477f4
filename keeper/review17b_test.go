package keeper

// Review 17b (0332233, f604611): see the review report.

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

// Finding: a handed-over check state that no check takes at the first
// apply (the check is defined but tracked by no group of the new config,
// or not defined at all) stays in health.seed for the life of the image.
// A later SIGHUP reload that tracks a check of that name starts it from
// the stale state, known and UP, skipping init_fail and rise: the node
// counts the check up, hours later, before (and for fall-1 runs after)
// any probe of it has passed.
func TestReview17bStaleSeedUsedByLaterReload(t *testing.T) {
	clk := clock.NewFake(h0)
	var runs atomic.Int32
	probes := func(string, config.Check) (checks.Probe, error) {
		return func(context.Context) error { runs.Add(1); return errors.New("backend down") }, nil
	}
	hl := newHealth(clk, testLog(t), nopObserver{}, probes, nil)
	hl.seed = map[string]checks.Status{"x": {Name: "x", Up: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); hl.stop() }()
	hl.start(ctx)
	ck := config.Check{Type: "exec", Interval: time.Hour, Rise: 2, Fall: 3, InitFail: true}
	cfg1 := config.Config{Checks: map[string]config.Check{"x": ck}, Groups: []config.Group{{Name: "VI_1", Priority: 100}}}
	if err := hl.apply(cfg1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * time.Hour) // the re-execution was long ago
	gc := config.Group{Name: "VI_1", Priority: 100, Track: []config.Track{{Check: "x", Weight: 0}}}
	cfg2 := config.Config{Checks: map[string]config.Check{"x": ck}, Groups: []config.Group{gc}}
	if err := hl.apply(cfg2); err != nil { // a SIGHUP reload starts tracking x
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runs.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if got := hl.Of(gc); !got.Fault {
		t.Errorf("check x (init_fail, never passed, %d failed runs) tracked by a reload 6 h after the re-execution: %+v; "+
			"it started from the handed-over state (up) left in health.seed", runs.Load(), got)
	}
}
