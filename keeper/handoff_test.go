package keeper

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
)

// Issue 17: a re-execution in place hands the group over without
// releasing anything. These tests model the next image in process: a new
// group loop on the same host, lease and etcd, started from what the old
// loop handed over (detach, then adopt). Written before detach/adopt
// existed; each names the fault it injects.

// recHooks records the hooks run.
type recHooks struct {
	mu  sync.Mutex
	ran []string
}

func (r *recHooks) run(argv []string, _ time.Duration, env hookEnv) {
	if len(argv) == 0 {
		return
	}
	r.mu.Lock()
	r.ran = append(r.ran, env.State)
	r.mu.Unlock()
}

func (r *recHooks) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ran)
}

// successor replaces the harness's group with the next image's loop for
// the same group, started from hg.
//
// Like a new process, it has a view of its own, which knows nothing of
// what the old one saw (when the vacancy a claim replaced began, say).
func (h *harness) successor(hg HandoffGroup) {
	h.t.Helper()
	gc := h.g.config()
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	env := *h.g.env
	env.view = election.NewView(h.cli, h.keys, h.clk, testLog(h.t), func(string) {})
	view := env.view.(*election.View)
	done := make(chan struct{})
	go func() { defer close(done); view.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-done })
	h.view = view
	g := newGroup(&env, gc, cancel)
	g.adopt(hg, h.clk.Now())
	h.t.Cleanup(func() { g.vips.ann.stop() })
	h.g = g
}

const hookedGroup = harnessGroup + "notify: {master: [/bin/true], backup: [/bin/true], fault: [/bin/true]}\n"

// The holder hands over; the next image re-reads the claim and keeps the
// VIP: no removal at any point, the same claim, no hook (the state did
// not change), MASTER reported throughout.
//
// The claim replaced a vacancy that did not end gracefully (the previous
// holder's lease expired), so a claim taken for fresh would wait out the
// expiry grace with the VIP off: the handed-over one must not.
func TestHandoffKeepsTheVIP(t *testing.T) {
	m := etcdtest.Start(t)
	prev := newHarness(t, m, "web-node-2", "")
	prev.hold()
	if _, err := prev.cli.Revoke(prev.ctx, prev.lease.Current().ID); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, m, "web-node-1", hookedGroup)
	hooks := &recHooks{}
	h.g.env.hooks = hooks
	h.hold()
	_, rev := h.leader()
	var unbinds atomic.Int32
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "unbind" {
			unbinds.Add(1)
		}
		return nil
	})
	hg := h.g.detach()
	if !hg.Bound || hg.Rev != rev || len(hg.Present) != 1 || hg.Present[0].Link != "eth0" || hg.State != string(election.StateMaster) {
		t.Fatalf("handed over %+v, want the bound claim rev %d with its VIP on eth0, MASTER", hg, rev)
	}
	ran := hooks.count()
	h.successor(hg)
	if st := h.g.currentState(); st != election.StateMaster {
		t.Errorf("the next image starts in %v, want MASTER as handed over", st)
	}
	h.until("held again", 3*time.Second, func() bool {
		if !h.host.Has(hvip) {
			t.Fatalf("VIP absent at +%v", h.clk.Now().Sub(h0))
		}
		if st := h.g.currentState(); st != election.StateMaster {
			t.Fatalf("reported %v while taking over", st)
		}
		return h.g.vips.bound() && !h.g.adopting
	})
	if n := unbinds.Load(); n != 0 {
		t.Errorf("%d removals during the handover, want none", n)
	}
	if _, rev2 := h.leader(); rev2 != rev {
		t.Errorf("claim rev %d after the handover, want the same claim %d", rev2, rev)
	}
	if n := hooks.count() - ran; n != 0 {
		t.Errorf("%d hooks ran on the handover, want none: %v", n, hooks.ran)
	}
	// It is a full holder again: renewals stop, the VIP comes off.
	h.noRenew = true
	h.until("dropped at the fence", 5*time.Second, func() bool { return !h.host.Has(hvip) })
}

// A resign was sent and its answer lost when the image handed over (it
// lands later): the next image must never hold that claim again, even
// healthy; it may hold the group again only through a new claim.
func TestHandoffResignInFlight(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	rule := h.kv.add(&faultRule{match: "/leader", mode: "late", times: 1, delay: 300 * time.Millisecond})
	h.health.set(true) // FAULT: release
	h.until("resign sent", 5*time.Second, func() bool { return h.kv.hits(rule) > 0 })
	if !h.g.held.Resigning {
		t.Fatalf("held %+v, want a resign in flight", h.g.held)
	}
	hg := h.g.detach()
	if hg.Bound || !hg.Resigning {
		t.Fatalf("handed over %+v, want resigning, not bound", hg)
	}
	h.health.set(false) // healthy again: tempting
	h.successor(hg)
	h.until("held through a new claim", 10*time.Second, func() bool {
		if c := h.g.held.Claim; h.host.Has(hvip) && (c == nil || c.CreateRev == hg.Rev) {
			t.Fatalf("VIP bound at +%v under %+v, the claim whose resign may land (rev %d)", h.clk.Now().Sub(h0), c, hg.Rev)
		}
		_, r := h.leader()
		return r != 0 && r != hg.Rev && h.g.vips.bound()
	})
}

// The lease expired between the two images (the next one found it gone
// and was granted another): the handed-over claim is void; its VIP comes
// off before anything else.
func TestHandoffLeaseGone(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	hg := h.g.detach()
	if _, err := h.cli.Revoke(h.ctx, h.lease.Current().ID); err != nil {
		t.Fatal(err)
	}
	grant, err := h.cli.Grant(h.ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	h.lease.mu.Lock()
	h.lease.cur.ID = grant.ID
	h.lease.mu.Unlock()
	h.lease.renew()
	h.successor(hg)
	h.step()
	if h.host.Has(hvip) {
		t.Fatal("VIP of a claim on an expired lease kept after the first pass")
	}
	if h.g.held.Claim != nil && h.g.held.Claim.CreateRev == hg.Rev {
		t.Errorf("still holding the void claim: %+v", h.g.held)
	}
}

// The claim's keys were deleted while no image ran (by hand): the next
// image finds no claim and removes the VIP; it binds again only through a
// new claim.
func TestHandoffClaimGone(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	_, rev := h.leader()
	hg := h.g.detach()
	if _, err := h.cli.Delete(h.ctx, h.keys.Leader("VI_1")); err != nil {
		t.Fatal(err)
	}
	h.successor(hg)
	h.until("VIP removed", 2*time.Second, func() bool { return !h.host.Has(hvip) })
	h.until("claimed anew", 10*time.Second, func() bool {
		_, r := h.leader()
		return r != 0 && r != rev && h.g.vips.bound()
	})
}

// A claim won but not yet bound when the image handed over (it was waiting
// out the previous holder's kernel expiry lag, that vacancy not having
// ended gracefully): the next image's view never saw that vacancy, so it
// must count the wait from no earlier than the handover.
func TestHandoffFreshClaimStillWaits(t *testing.T) {
	m := etcdtest.Start(t)
	prev := newHarness(t, m, "web-node-2", "")
	prev.hold()
	h := newHarness(t, m, "web-node-1", "")
	h.step() // publish; see the group held
	if _, err := prev.cli.Revoke(prev.ctx, prev.lease.Current().ID); err != nil {
		t.Fatal(err)
	}
	h.until("won, waiting", 5*time.Second, func() bool { return h.g.held.Claim != nil && h.g.held.Fresh })
	if h.host.Has(hvip) {
		t.Fatal("bound at once after a vacancy without a graceful release")
	}
	hg := h.g.detach()
	if hg.Bound || hg.Rev == 0 {
		t.Fatalf("handed over %+v, want the claim, not bound", hg)
	}
	adopted := h.clk.Now()
	h.successor(hg)
	h.until("bound", 10*time.Second, func() bool {
		if h.host.Has(hvip) && h.clk.Now().Before(adopted.Add(ExpiryGrace)) {
			t.Fatalf("bound %v after the handover, before the expiry grace (%v) from it", h.clk.Now().Sub(adopted), ExpiryGrace)
		}
		return h.g.vips.bound()
	})
}
