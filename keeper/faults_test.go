package keeper

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/netif"
)

// Fault injection in the group loop (issue 12): every failed etcd or
// netlink step, and every stall, converges without two holders and without
// a stranded group.

// A holder that goes FAULT while its resign fails keeps retrying with
// backoff until the leader key is gone; it never leaves its key on its
// live lease without holding the VIP (peers would wait forever).
func TestFailedResignIsRetriedUntilTheKeyIsGone(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	rule := h.kv.add(&faultRule{match: "/leader", mode: "fail", times: 3})

	h.health.set(true)
	h.step()
	if h.host.Has(hvip) {
		t.Fatal("VIP still bound after FAULT")
	}
	if n, _ := h.leader(); n != "web-node-1" {
		t.Fatalf("leader key %q: the failing resign was not sent", n)
	}
	h.until("leader key deleted", 10*time.Second, func() bool { n, _ := h.leader(); return n == "" })
	if n := h.kv.hits(rule); n != 3 {
		t.Errorf("%d resigns failed, want 3 before the one that succeeded", n)
	}
	if n := h.count(h.keys.Addresses()); n != 0 {
		t.Errorf("%d address claims left after the resign", n)
	}
}

// An acquire whose transaction committed but whose answer was lost: the
// node finds its own keys and holds them if it still wants the group...
func TestLostAcquireAnswerThenHold(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	rule := h.kv.add(&faultRule{match: "/leader", mode: "lose", times: 1})
	h.hold()
	if n := h.kv.hits(rule); n != 1 {
		t.Fatalf("the acquire was not the one that lost its answer (%d hits)", n)
	}
	if _, rev := h.leader(); h.g.held.Claim == nil || h.g.held.Claim.CreateRev != rev {
		t.Fatalf("holding with claim %+v, want the key's revision %d", h.g.held.Claim, rev)
	}
}

// ...and deletes them if it no longer does (FAULT meanwhile): the key must
// not stay on its live lease.
func TestLostAcquireAnswerThenFaultResigns(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	rule := h.kv.add(&faultRule{match: "/leader", mode: "lose", times: 1})
	h.until("acquire sent", 5*time.Second, func() bool { return h.kv.hits(rule) > 0 })
	if n, _ := h.leader(); n != "web-node-1" {
		t.Fatalf("the lost acquire did not commit (leader %q)", n)
	}
	h.health.set(true)
	h.until("own key found and deleted", 5*time.Second, func() bool { n, _ := h.leader(); return n == "" })
	if h.host.Has(hvip) {
		t.Error("VIP bound by a node in FAULT")
	}
	if n := h.count("/vipd/addresses/"); n != 0 {
		t.Errorf("%d address claims left", n)
	}
}

// An acquire that timed out and landed later, after the node had given it
// up: the view shows a key of this node's on its lease; the node finds it
// and deletes it, since it is in FAULT by then.
func TestLateAcquireIsCleanedUp(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	rule := h.kv.add(&faultRule{match: "/leader", mode: "late", times: 1, delay: 300 * time.Millisecond})
	h.until("acquire sent", 5*time.Second, func() bool { return h.kv.hits(rule) > 0 })
	h.health.set(true)
	h.until("uncertainty resolved", 5*time.Second, func() bool { return !h.g.held.Unsure })
	// The late write lands now.
	for i := 0; ; i++ {
		if n, _ := h.leader(); n == "web-node-1" {
			break
		}
		if i > 500 {
			t.Fatal("the late acquire never landed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.until("late key deleted", 5*time.Second, func() bool { n, _ := h.leader(); return n == "" })
}

// The VIP's removal fails: the keys stay until the VIP is provably gone
// (removal confirmed, or its kernel lifetime certainly over), so no peer
// can bind while the address may still be up here.
func TestReleaseWaitsUntilTheVIPIsGone(t *testing.T) {
	for _, heal := range []string{"removal succeeds later", "kernel lifetime runs out"} {
		t.Run(heal, func(t *testing.T) {
			h := newHarness(t, nil, "web-node-1", "")
			h.hold()
			h.host.Intercept(func(op fakenet.Op) error {
				if op.Kind == "unbind" {
					return netif.ErrClosed // any netlink failure
				}
				return nil
			})
			goneBy := h.g.vips.goneBy()
			h.health.set(true)
			for h.clk.Now().Add(200 * time.Millisecond).Before(goneBy) {
				h.step()
				if n, _ := h.leader(); n == "" && h.host.Has(hvip) {
					t.Fatalf("leader key deleted at +%v while the VIP is still bound", h.clk.Now().Sub(h0))
				}
				if heal == "removal succeeds later" && h.clk.Now().Sub(h0) > time.Second {
					h.host.Intercept(nil)
					break
				}
				h.clk.Advance(100 * time.Millisecond)
			}
			if n, _ := h.leader(); n != "web-node-1" {
				t.Fatalf("leader key %q before the VIP was gone", n)
			}
			h.until("keys deleted", 10*time.Second, func() bool { n, _ := h.leader(); return n == "" })
			if h.host.Has(hvip) {
				t.Fatal("leader key deleted while the VIP is still bound")
			}
		})
	}
}

// The interface was renamed while the address survived on it: removal
// finds the address by IP on any link, so the release completes at once
// and the address is really gone.
func TestReleaseAfterInterfaceRenamed(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	h.host.Rename("eth0", "eth0-old")
	if iface, _ := h.host.Where(hvip.Addr()); iface != "eth0-old" {
		t.Fatalf("VIP on %q after the rename", iface)
	}
	h.health.set(true)
	h.step()
	if iface, _ := h.host.Where(hvip.Addr()); iface != "" {
		t.Fatalf("VIP still on %q after release", iface)
	}
	if n, _ := h.leader(); n != "" {
		t.Fatalf("leader key %q left after release", n)
	}
}

// A stall inside the bind (the netlink request waits, the process is
// frozen) lets the fence pass: the address the request added is removed
// at once, not at the next pass.
func TestStallInsideBindRemovesAtOnce(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	var stalled atomic.Bool
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "bind" && !stalled.Swap(true) {
			h.clk.Advance(5 * time.Second) // past the fence and the server expiry
		}
		return nil
	})
	h.until("a bind stalled", 5*time.Second, func() bool { return stalled.Load() })
	if h.host.Has(hvip) {
		t.Fatal("VIP bound after a bind that ended past the fence")
	}
	if !h.g.held.Lapsed {
		t.Error("claim not marked lapsed after the fence passed during the bind")
	}
}

// A stall inside a lifetime refresh short of the fence, but long enough
// that the lifetime counted from the request's end outlasts the lease at
// the server: the VIP comes off at once.
func TestStallInsideRefreshPastServerExpiry(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	h.clk.Advance(400 * time.Millisecond)
	h.lease.renew() // server expiry now +3s; a refresh computes 1s of lifetime
	h.host.Intercept(func(op fakenet.Op) error {
		if op.Kind == "extend" || op.Kind == "bind" {
			h.clk.Advance(1900 * time.Millisecond) // fence still live (2.5s), lifetime now ends past expiry
		}
		return nil
	})
	h.step()
	if h.host.Has(hvip) {
		t.Fatalf("VIP bound with a lifetime ending past the server expiry")
	}
}

// Renewals stop (an etcd leader election): the holder keeps its VIP in the
// kernel for as long as the last good renewal allows, the last safe
// refresh at LastRefresh ending the lifetime at LastRefresh + 1 s (send +
// 1.8 s at lease_ttl 3s), never past LifetimeEnd. An earlier refresh
// (made 300 ms before the address could expire, or for a gain at a pass)
// must not use up that last one, whatever the phase of the renewal against
// the previous refresh, however long its answer took, and whether the loop
// wakes only on its own timers or also on outside events; and the last
// refresh is made once, not at every pass after it.
func TestHolderKeepsVIPThroughRenewalGap(t *testing.T) {
	t.Parallel()
	for _, since := range []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond} {
		for _, rtt := range []time.Duration{0, 100 * time.Millisecond, 150 * time.Millisecond} {
			for _, every := range []time.Duration{0, 50 * time.Millisecond, 10 * time.Millisecond} {
				name := fmt.Sprintf("renewal %v after the bind, answered in %v, outside wakes every %v", since, rtt, every)
				t.Run(name, func(t *testing.T) {
					h := newHarness(t, nil, "web-node-1", "")
					h.hold()
					h.clk.Advance(since)
					sent := h.clk.Now()
					h.clk.Advance(rtt)
					h.lease.renewSentAt(sent)
					expiry := sent.Add(3 * time.Second)
					var extends []time.Time
					h.host.Intercept(func(op fakenet.Op) error {
						if op.Kind == "extend" || op.Kind == "bind" {
							extends = append(extends, h.clk.Now())
						}
						return nil
					})
					// Just before the kernel may remove the address given
					// its lifetime at the last safe refresh.
					keep := LastRefresh(expiry).Add(time.Second - netif.KernelEarlyExpiry - time.Millisecond)
					_, lastUntil := h.host.Where(hvip.Addr())
					for {
						w := h.step()
						iface, until := h.host.Where(hvip.Addr())
						if iface == "" {
							t.Fatalf("VIP's lifetime ended %v after the last good renewal's send (seen at %v); the lease allows %v",
								lastUntil.Sub(sent), h.clk.Now().Sub(sent), keep.Sub(sent))
						}
						lastUntil = until
						if until.After(LifetimeEnd(expiry)) {
							t.Fatalf("lifetime ends %v after the send, past LifetimeEnd (%v)", until.Sub(sent), LifetimeEnd(expiry).Sub(sent))
						}
						if !h.clk.Now().Before(keep) {
							break
						}
						next := h.clk.Now().Add(w)
						if w <= 0 {
							next = keep
						}
						if every > 0 {
							next = earliest(next, h.clk.Now().Add(every))
						}
						h.clk.Set(earliest(next, keep))
					}
					var late []time.Duration
					for _, at := range extends {
						if !at.Before(LastRefresh(expiry)) {
							late = append(late, at.Sub(sent))
						}
					}
					if len(late) > 1 {
						t.Errorf("%d refreshes at or after the last safe refresh (%v after the send): %v; want one",
							len(late), LastRefresh(expiry).Sub(sent), late)
					}
				})
			}
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// No announcement leaves after the fence: a loop stalled while the
// announcer's timers fire (a SIGSTOP during the burst, or with a refresh
// running) sends nothing once the fence has passed or the VIP's kernel
// lifetime may have run out.
func TestNoAnnouncementAfterTheFence(t *testing.T) {
	for _, c := range []struct {
		name  string
		renew bool // renewals go on (fence live), but the loop stalls: the kernel lifetime ends
	}{{"fence passed", false}, {"kernel lifetime running out", true}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, nil, "web-node-1", "")
			h.hold()
			waitGarps(t, h.host, 1)
			// The loop stalls from here: only timers run.
			fence := h.lease.Current().Deadline
			until := h.g.vips.expiresFrom()
			stop := fence
			if c.renew {
				stop = until
			}
			for i := 0; i < 60; i++ {
				h.clk.Advance(100 * time.Millisecond)
				if c.renew {
					h.lease.renew()
				}
				time.Sleep(2 * time.Millisecond) // let the announcer run
				if !h.clk.Now().Before(stop) {
					break
				}
			}
			for range 20 {
				h.clk.Advance(100 * time.Millisecond)
				if c.renew {
					h.lease.renew()
				}
				time.Sleep(2 * time.Millisecond)
			}
			waitQuiet(h)
			if n := h.host.GarpsFrom(stop); n != 0 {
				t.Fatalf("%d announcements after the gate should have closed (at +%v)", n, stop.Sub(h0))
			}
		})
	}
}

// A stall of the whole process past the fence: on resume the announcer's
// overdue timer fires before the loop runs, and must send nothing.
func TestNoAnnouncementAfterResume(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	waitGarps(t, h.host, 1)
	fence := h.lease.Current().Deadline
	h.clk.Advance(10 * time.Second) // SIGSTOP for 10 s, then SIGCONT
	time.Sleep(20 * time.Millisecond)
	waitQuiet(h)
	if n := h.host.GarpsFrom(fence); n != 0 {
		t.Fatalf("%d announcements after resuming past the fence", n)
	}
}

// A detected system suspend voids the fence (election.Session zeroes it):
// the holder drops the VIP at its next pass, and inspects its keys before
// binding again once a renewal sent after the resume succeeded.
func TestSuspendDropsTheVIP(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	h.lease.suspend()
	if h.g.vips.open() {
		t.Error("announcement gate open after a suspend")
	}
	h.step()
	if h.host.Has(hvip) || !h.g.held.Lapsed {
		t.Fatalf("after a suspend: bound %v, lapsed %v; want dropped and lapsed", h.host.Has(hvip), h.g.held.Lapsed)
	}
	h.lease.renew()
	h.hold()
}

// A candidate record deleted behind the node's back (etcdctl del, or a
// second process with the node's name exiting) is written again.
func TestDeletedRecordIsRepublished(t *testing.T) {
	h := newHarness(t, nil, "web-node-2", "")
	h.hold()
	key := h.keys.Candidate("VI_1", "web-node-2")
	if _, err := h.cli.Delete(h.ctx, key); err != nil {
		t.Fatal(err)
	}
	h.step()
	resp, err := h.cli.Get(h.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatal("record not written again after it was deleted")
	}
	var c election.Candidate
	if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil || c.State != election.StateMaster || resp.Kvs[0].Lease != int64(h.lease.Current().ID) {
		t.Fatalf("republished record %s on lease %x", resp.Kvs[0].Value, resp.Kvs[0].Lease)
	}
}

// A retiring group (removed by a reload) releases its keys and deletes its
// candidate record, retrying through etcd failures, and only then leaves:
// no ghost record for the holder to yield to.
func TestRetiredGroupLeavesNothing(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	h.kv.add(&faultRule{match: "/candidates/", mode: "fail", times: 2})
	h.g.retire("group removed by reload")
	left := false
	h.g.env.leave = func(*group) bool { left = true; return true }
	h.until("left", 10*time.Second, func() bool { return left })
	if h.host.Has(hvip) {
		t.Error("VIP bound after the group left")
	}
	for _, prefix := range []string{h.keys.Leader("VI_1"), h.keys.Addresses(), "/vipd/groups/VI_1/candidates/"} {
		if n := h.count(prefix); n != 0 {
			t.Errorf("%d keys under %s left behind by the retired group", n, prefix)
		}
	}
	// The record of the graceful release stays: peers that still have the
	// group claim it without waiting out the kernel expiry lag.
	if n := h.count(h.keys.Released("VI_1")); n != 1 {
		t.Errorf("no released record after the group left")
	}
}

// A reload that changes a group's addresses releases the old claim and
// campaigns for the new addresses.
func TestAddressesChangedByReload(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", "")
	h.hold()
	gc := h.g.config()
	gc.Addresses = config.Addrs("192.168.20.16/24")
	gc.Prefixes, gc.Links = []netip.Prefix{netip.MustParsePrefix("192.168.20.16/24")}, []string{"eth0"}
	h.g.update(gc)
	h.until("holding the new address", 5*time.Second, func() bool {
		return h.host.Has(gc.Prefixes[0]) && !h.host.Has(hvip) && h.g.vips.bound()
	})
	if n := h.count(h.keys.Address(hvip.Addr())); n != 0 {
		t.Error("the old address is still claimed")
	}
	if n := h.count(h.keys.Address(gc.Prefixes[0].Addr())); n != 1 {
		t.Error("the new address is not claimed")
	}
}

func waitGarps(t *testing.T, host *fakenet.Host, n int64) {
	t.Helper()
	for i := 0; host.Garps.Load() < n; i++ {
		if i > 1000 {
			t.Fatalf("no announcement after binding")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitQuiet waits until the announcer goroutine is parked on its timer or
// gone.
func waitQuiet(h *harness) {
	time.Sleep(20 * time.Millisecond)
}
