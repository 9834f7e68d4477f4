package keeper_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

// A holder cut from etcd, but not from its peer, keeps the VIP: its peer
// renews its lease (docs/design.md §2.8), so nothing moves, for longer
// than a lease TTL plus the successor's grace. When its HAProxy then
// fails, it hands over through the peer: the resign is relayed, and the
// peer takes over at once (a graceful release), never with two holders.
func TestHolderCutFromEtcdKeepsVIPThroughPeer(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	cut := etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, Via: cut, Peer: true})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, Peer: true})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(500 * time.Millisecond) // both records (with their endpoints) seen
	moves := len(rec.History())

	cut.Cut()
	time.Sleep(6 * time.Second) // TTL 3 s + grace 1.45 s, with room
	if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-1" {
		t.Fatalf("holders %v after 6 s cut from etcd, want web-node-1 (relayed); history:\n%s", h, strings.Join(rec.History(), "\n"))
	}
	if got := len(rec.History()); got != moves {
		t.Errorf("the VIP moved while its holder was cut from etcd only; history:\n%s", strings.Join(rec.History(), "\n"))
	}
	l := n1.K.Session().Current()
	if !l.Relayed || !l.Live(time.Now()) {
		t.Errorf("web-node-1's lease %+v: want live and relayed", l)
	}

	// HAProxy fails on the cut-off holder: it hands over through its peer.
	failed := time.Now()
	n1.Healthy.Store(false)
	took := rec.WaitFor(t, "web-node-2", 5*time.Second).Sub(failed)
	t.Logf("handover through the peer %v after the check went down (check fall 2 × 20 ms)", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("handover took %v: not through the relay (an expiry takes ≥ 3 s)", took)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, strings.Join(rec.History(), "\n"))
	}
}

// Without the peer channel the same cut moves the VIP by expiry: the
// holder drops it at its fence, as before.
func TestHolderCutFromEtcdWithoutPeerFailsClosed(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	cut := etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Via: cut})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	cut.Cut()
	rec.WaitFor(t, "web-node-2", 10*time.Second)
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, strings.Join(rec.History(), "\n"))
	}
}
