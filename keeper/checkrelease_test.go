package keeper_test

import (
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

// releaseObs records CheckToRelease.
type releaseObs struct {
	nopObs
	mu  sync.Mutex
	got map[string][]time.Duration
}

func (o *releaseObs) CheckToRelease(group string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.got == nil {
		o.got = map[string][]time.Duration{}
	}
	o.got[group] = append(o.got[group], d)
}

func (o *releaseObs) of(group string) []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Duration(nil), o.got[group]...)
}

// A tracked check going down on the holder is timed to the VIP's removal
// (vipd_check_to_release_seconds); a release with every check up (a
// graceful stop) is not.
func TestCheckToReleaseObserved(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	obs1 := &releaseObs{}
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, Observer: obs1})
	n2 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true})
	rec.WaitFor(t, "web-node-1", 10*time.Second)

	down := time.Now()
	n1.Healthy.Store(false)
	rec.WaitFor(t, "web-node-2", 5*time.Second)
	waitUntil(t, "CheckToRelease on web-node-1", func() bool { return len(obs1.of("VI_1")) == 1 })
	d := obs1.of("VI_1")[0]
	if d < 0 || d > time.Since(down) {
		t.Fatalf("check to release %v: not within the %v since the check was set down", d, time.Since(down))
	}
	t.Logf("check down → VIP removed: %v", d)

	// Back to web-node-1 (preempt), then a graceful stop: no check is
	// down, so nothing is observed.
	n1.Healthy.Store(true)
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	n1.Stop()
	rec.WaitFor(t, "web-node-2", 10*time.Second)
	if got := obs1.of("VI_1"); len(got) != 1 {
		t.Fatalf("observations %v, want only the one of the check going down", got)
	}
	_ = n2
}
