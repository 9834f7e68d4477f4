package keeper

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

// LeaseSource is the part of election.Session the refresher reads.
type LeaseSource interface {
	Current() election.Lease
	Changed() <-chan struct{}
}

// RefreshFunc resets the kernel lifetime of an address known to be bound.
type RefreshFunc func(ifname string, p netip.Prefix, lifetime time.Duration, o netif.AddrOptions) error

// heldVIPs is what a holding group asks the refresher to keep alive.
type heldVIPs struct {
	iface    string
	prefixes []netip.Prefix
	opts     netif.AddrOptions
	lease    clientv3.LeaseID // the lease the group's claim is on
	keyRev   int64            // the claim's leader key CreateRevision
	until    time.Time        // when the kernel lifetime set last ends
	failed   func()           // called when a refresh fails: re-bind in the group loop
}

// minExtension is the least a refresh must add to an address's lifetime
// to be worth a netlink request.
const minExtension = 250 * time.Millisecond

// RefreshLifetime decides whether to extend the kernel lifetime of VIPs
// held on lease heldOn, last set to end at until: only on the node's
// current, live lease, only with a lifetime that ends safely before the
// server may expire the lease (election.KernelLifetime), and only when
// that moves the end by at least minExtension.
func RefreshLifetime(now time.Time, l election.Lease, heldOn clientv3.LeaseID, until time.Time) (time.Duration, bool) {
	if heldOn != l.ID || !l.Live(now) {
		return 0, false
	}
	lifetime, ok := election.KernelLifetime(now, l.ServerExpiry)
	if !ok || !now.Add(lifetime).After(until.Add(minExtension)) {
		return 0, false
	}
	return lifetime, true
}

// refresher extends the kernel lifetimes of every VIP this node holds, in
// one pass after each lease renewal (and once more at the last safe
// moment should the next renewal be late). With a thousand groups, each
// group loop waking on every renewal to refresh its own VIPs was a
// thousand wake-ups every 500 ms; now holding loops sleep until their
// fence deadline and one goroutine does the netlink work.
//
// A group hands its VIPs over with hold after binding them and takes them
// back with release before removing them. release waits for a pass in
// progress, so a refresh (which re-creates an absent address) never
// follows a removal. The refresher also checks the group view itself: a
// leader key seen deleted is not refreshed, even before its group loop
// has reacted.
type refresher struct {
	lease   LeaseSource
	view    func(group string) election.GroupState
	refresh RefreshFunc
	clk     clock.Clock
	log     *slog.Logger

	mu   sync.Mutex // held for a whole pass
	held map[string]*heldVIPs
}

func newRefresher(lease LeaseSource, view func(string) election.GroupState, refresh RefreshFunc, clk clock.Clock, log *slog.Logger) *refresher {
	return &refresher{lease: lease, view: view, refresh: refresh, clk: clk, log: log, held: map[string]*heldVIPs{}}
}

// hold registers (or updates) group's bound VIPs.
func (r *refresher) hold(group string, h heldVIPs) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.held[group]; old != nil && old.lease == h.lease && old.until.After(h.until) {
		h.until = old.until // a pass extended them since
	}
	r.held[group] = &h
}

// release unregisters group, after any pass in progress has finished.
func (r *refresher) release(group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.held, group)
}

// run makes a pass after every lease change and at the last safe refresh
// time, until ctx is done.
func (r *refresher) run(ctx context.Context) {
	timer := r.clk.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		changed := r.lease.Changed()
		wake := r.pass()
		timer.Reset(wake)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C():
		}
	}
}

// pass refreshes what is due and returns when to look again.
func (r *refresher) pass() time.Duration {
	l := r.lease.Current()
	r.mu.Lock()
	defer r.mu.Unlock()
	for group, h := range r.held {
		// Re-read the clock per group: a slow pass must not set a
		// lifetime computed for an earlier moment.
		now := r.clk.Now()
		lifetime, ok := RefreshLifetime(now, l, h.lease, h.until)
		if !ok || KeyGone(r.view(group), h.keyRev) {
			continue
		}
		var failed error
		for _, p := range h.prefixes {
			if err := r.refresh(h.iface, p, lifetime, h.opts); err != nil {
				failed = err
				r.log.Error("cannot refresh VIP", "group", group, "address", p, "interface", h.iface, "err", err)
			}
		}
		if failed != nil {
			h.failed()
			continue
		}
		h.until = now.Add(lifetime)
	}
	// Come back for the last safe refresh in case the next renewal is late.
	if next := election.LastRefresh(l.ServerExpiry).Sub(r.clk.Now()); next > 0 && next < maxSleep {
		return next
	}
	return maxSleep
}
