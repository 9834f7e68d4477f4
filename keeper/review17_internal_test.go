package keeper

// Review of issue 17 (re-execution in place, b42e210), in-process
// successor harness (handoff_test.go). See the review report.

import (
	"errors"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/fakenet"
)

// Finding: a VIP whose removal failed before the handover is handed over
// as Present, and the next image puts it in vips.maybe: "no lifetime
// known, only a confirmed removal clears it". The old image knew the
// lifetime it set (Binding.GoneBy) and, per design §2.4, would go on once
// lifetime + kernel lag had certainly passed. The next image never can: a
// removal that keeps failing keeps the claim's keys in etcd for as long as
// the node runs and renews its lease, and no peer can take the group.
func TestReview17FailedRemovalStrandsClaimAfterHandoff(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	_, rev := h.leader()
	failing := errors.New("netlink: removal fails")
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "unbind" {
			return failing
		}
		return nil
	})
	h.health.set(true) // FAULT: release; the removal fails
	h.until("releasing, removal pending", 2*time.Second, func() bool { return h.g.vips.removing })
	hg := h.g.detach()
	if len(hg.Present) != 1 {
		t.Fatalf("handed over %+v, want the VIP present", hg)
	}
	h.successor(hg)
	// The old image would have resigned once the lifetime (1 s) plus the
	// kernel's lag (2.5 s) had passed (the control below); give it 10 s
	// of virtual time, in steps slow enough in real time for the view's
	// progress requests to be answered.
	end := h.clk.Now().Add(10 * time.Second)
	for h.clk.Now().Before(end) {
		h.g.mu.Lock()
		h.g.cfg = h.g.shared
		h.g.mu.Unlock()
		h.g.reconcile(h.ctx, "")
		if _, r := h.leader(); r != rev {
			return // resigned
		}
		time.Sleep(5 * time.Millisecond)
		h.clk.Advance(100 * time.Millisecond)
		if h.clk.Now().Sub(h.lease.Current().Renewed) >= renewEvery {
			h.lease.renew()
		}
	}
	t.Errorf("claim rev %d still in etcd 10 s after the handover (VIP on the host: %v, removing: %v, maybe: %v): the next image waits for a confirmed removal for ever",
		rev, h.host.Has(hvip), h.g.vips.removing, h.g.vips.maybe)
}

// Control (passes): without a re-execution the same failing removal ends
// once the lifetime and the kernel lag have passed, and the keys go.
func TestReview17ControlFailedRemovalEnds(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	_, rev := h.leader()
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "unbind" {
			return errors.New("netlink: removal fails")
		}
		return nil
	})
	h.health.set(true)
	h.until("resigned", 10*time.Second, func() bool { _, r := h.leader(); return r != rev })
}
