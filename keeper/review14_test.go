package keeper

import (
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

type relObs struct {
	nopObserver
	mu  sync.Mutex
	got []time.Duration
}

func (o *relObs) CheckToRelease(_ string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, d)
}
func (o *relObs) all() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Duration(nil), o.got...)
}

// R5a: DownSince was the earliest Since of the hurting checks. A minor
// check (weight -1) down since before the VIP was bound masked the process
// check (weight 0: FAULT) that goes down later and causes the release.
func TestReview14DownSinceMasksTheCause(t *testing.T) {
	hl := newHealth(clock.NewFake(h0), testLog(t), nopObserver{}, nil, nil)
	hl.up["eth0"] = true
	hl.statuses["minor"] = checks.Status{Name: "minor", Up: false, Since: h0.Add(-time.Hour)}
	gc := config.Group{Name: "VI_1", Interface: "eth0", Priority: 101,
		Track: []config.Track{{Check: "minor", Weight: -1}, {Check: "haproxy", Weight: 0}}}

	h := newHarness(t, nil, "web-node-1", "")
	obs := &relObs{}
	h.g.env.obs = obs
	h.hold()

	// HAProxy dies now: the process check goes down (FAULT).
	hl.statuses["haproxy"] = checks.Status{Name: "haproxy", Up: false, Since: h.clk.Now()}
	real := hl.Of(gc)
	if !real.Fault || !real.DownSince.Equal(h.clk.Now()) {
		t.Fatalf("Of: fault %v DownSince %v, want the newest cause (now)", real.Fault, real.DownSince)
	}
	h.health.mu.Lock()
	h.health.h = real
	h.health.mu.Unlock()
	h.until("released", 5*time.Second, func() bool { return !h.g.vips.bound() })
	if got := obs.all(); len(got) != 1 {
		t.Errorf("release caused by the process check going down: observations %v, want 1 (masked by the minor check down since before the bind)", got)
	}
}

// R5b: a release with nothing to do with the check (here the lease is
// lost: a suspend) while a non-decisive check is down was attributed to
// that check, with the whole time since it went down.
func TestReview14UnrelatedReleaseAttributed(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	obs := &relObs{}
	h.g.env.obs = obs
	h.hold()
	// A weight -1 check goes down: priority 101+2 -> still the holder.
	h.health.mu.Lock()
	h.health.h = Health{Ready: true, DownSince: h.clk.Now(), Failing: []string{"minor"}}
	h.health.mu.Unlock()
	for range 20 {
		h.step()
		h.clk.Advance(100 * time.Millisecond)
		h.lease.renew()
	}
	if !h.g.vips.bound() {
		t.Fatal("released on a minor check")
	}
	h.clk.Advance(10 * time.Minute)
	h.lease.renew()
	h.step()
	h.lease.suspend()
	h.step()
	if h.g.vips.bound() {
		t.Fatal("still bound after suspend")
	}
	if got := obs.all(); len(got) != 0 {
		t.Errorf("a release caused by the lease (suspend) was recorded as check-to-release %v", got)
	}
}
