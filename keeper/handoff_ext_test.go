package keeper_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

// Issue 17, whole keepers on a real etcd: the holder's keeper detaches and
// the next one starts on the same host from its handoff. The VIP never
// leaves the host, the peer never holds, the claim is the same.
func TestKeeperReexecInPlace(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, Peer: true, Failsafe: true}
	n1 := keepertest.Start(t, m, rec, spec)
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, Peer: true, Failsafe: true})
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(500 * time.Millisecond)
	before := len(rec.History())

	h := n1.Detach()
	if len(h.Groups) != 1 || !h.Groups[0].Bound || h.Lease == 0 {
		t.Fatalf("handoff %+v, want the bound claim and the lease", h)
	}
	if !n1.Host.Has(netip.PrefixFrom(vip, 24)) {
		t.Fatal("detaching removed the VIP")
	}
	spec.Host, spec.Handoff = n1.Host, &h
	next := keepertest.Start(t, m, rec, spec)
	steady(t, rec, "web-node-1", 5*time.Second, n1.Host)
	if got := rec.History(); len(got) != before {
		t.Errorf("the VIP moved or went down: history:\n%s", history(rec))
	}
	if !strings.Contains(next.K.Summary(), "VI_1=MASTER") {
		t.Errorf("the next keeper reports %s", next.K.Summary())
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

// A handoff older than the lease TTL describes a lease that has expired:
// the next keeper starts afresh (its startup cleanup removes the VIP) and
// holds only through a new claim; never two holders.
func TestKeeperStaleHandoffIgnored(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true}
	n1 := keepertest.Start(t, m, rec, spec)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	h := n1.Detach()
	h.MonoAt -= time.Minute
	spec.Host, spec.Handoff = n1.Host, &h
	keepertest.Start(t, m, rec, spec)
	gone := rec.WaitFor(t, "", 5*time.Second)
	back := rec.WaitFor(t, "web-node-1", 15*time.Second)
	t.Logf("stale handoff: VIP removed, back after %v (a new claim waits out the old lease)", back.Sub(gone).Round(time.Millisecond))
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}
