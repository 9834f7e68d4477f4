package keeper_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/keeper"
)

func leaderKey(t *testing.T, cli *clientv3.Client) (string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), election.Keys{Prefix: "/vipd"}.Leader("VI_1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision
}

func TestHigherPriorityWins(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: false})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: false})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	// It stays there.
	time.Sleep(500 * time.Millisecond)
	rec.WaitFor(t, "web-node-1", 0)
	if holder, _ := leaderKey(t, m.Client(t)); holder != "web-node-1" {
		t.Errorf("leader key names %q, want web-node-1", holder)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestSeedFailoverAndPreemptBack(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	for i := 0; n1.Host.Garps.Load() == 0; i++ {
		if i == 100 {
			t.Fatal("no announcement within 1s of binding")
		}
		time.Sleep(10 * time.Millisecond)
	}

	n1.Healthy.Store(false) // 101 < 102
	rec.WaitFor(t, "web-node-2", 5*time.Second)
	n1.Healthy.Store(true) // 103 > 102: preempt back
	rec.WaitFor(t, "web-node-1", 5*time.Second)
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, strings.Join(rec.History(), "\n"))
	}
}

// TestGracefulStopHandsOverWithin100ms: a resigning holder hands over in
// one watch round trip, not a lease TTL. Three handovers run back to back
// (web-node-1 restarts and preempts back in between) and the fastest must
// be within 100ms, so a descheduled test process on a busy machine does not
// fail it; each is logged.
func TestGracefulStopHandsOverWithin100ms(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100})
	best := time.Hour
	for i := range 3 {
		n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
		rec.WaitFor(t, "web-node-1", 10*time.Second)
		time.Sleep(300 * time.Millisecond) // let candidate records settle

		go n1.Stop()
		off := rec.WaitFor(t, "", 5*time.Second)
		on := rec.WaitFor(t, "web-node-2", 5*time.Second)
		gap := on.Sub(off)
		t.Logf("handover %d: VIP off web-node-1 -> on web-node-2 in %v", i+1, gap)
		best = min(best, gap)
	}
	if best > 100*time.Millisecond {
		t.Errorf("fastest of 3 handovers took %v, want ≤ 100ms", best)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

// TestLeaseRevokedWaitsOutTheKernelLag: a lease that vanishes at the
// server (as after a partition) voids the holder's claim; nobody binds the
// VIP until ExpiryGrace after the vacancy, by which time the old holder's
// kernel has removed it even had its vipd been frozen.
func TestLeaseRevokedWaitsOutTheKernelLag(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: false})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: false})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(300 * time.Millisecond)

	id := n1.K.Session().Current().ID
	revoked := time.Now()
	if _, err := m.Client(t).Revoke(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	off := rec.WaitFor(t, "", 3*time.Second)
	t.Logf("web-node-1 dropped the VIP %v after its lease was revoked", off.Sub(revoked).Round(time.Millisecond))
	// web-node-1 comes back with a new lease and, the best candidate,
	// takes the group again: not before the grace.
	on := rec.WaitFor(t, "web-node-1", 10*time.Second)
	if gap := on.Sub(revoked); gap < keeper.ExpiryGrace {
		t.Errorf("VIP bound again %v after the vacancy, before the expiry grace of %v", gap, keeper.ExpiryGrace)
	}
	if got := n1.K.Session().Current().ID; got == id {
		t.Errorf("web-node-1 still uses the revoked lease %x", id)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestNeverHoldsAfterKeyDeleted(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: false})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	_, rev := leaderKey(t, m.Client(t))

	// Delete the key behind the holder's back and keep it deleted by
	// writing a leader key for a node that does not exist, on no lease.
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Leader("VI_1")
	if _, err := cli.Txn(context.Background()).
		Then(clientv3.OpDelete(key), clientv3.OpPut(key+"-x", "")).Commit(); err != nil {
		t.Fatal(err)
	}
	off := rec.WaitFor(t, "", 2*time.Second)
	t.Logf("VIP removed after the key was deleted (at %v)", off.Format("15:04:05.000"))
	// The group is vacant again, so web-node-1 may claim it anew: only
	// with a new key (a new CreateRevision).
	rec.WaitFor(t, "web-node-1", 5*time.Second)
	holder, rev2 := leaderKey(t, cli)
	if holder != "web-node-1" || rev2 <= rev {
		t.Errorf("re-acquired with key (%q, rev %d), want a new key for web-node-1 after rev %d", holder, rev2, rev)
	}
}

// TestStaleChallengerDoesNotFlapTheVIP: a better candidate whose record
// outlives it (dead or cut off, lease not yet expired) gets one yield, not
// one every backoff step until its lease expires.
func TestStaleChallengerDoesNotFlapTheVIP(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100})
	rec.WaitFor(t, "web-node-2", 10*time.Second)

	cli := m.Client(t)
	lease, err := cli.Grant(t.Context(), 30)
	if err != nil {
		t.Fatal(err)
	}
	ghost, _ := json.Marshal(election.Candidate{Node: "web-node-0", Priority: 200, State: election.StateBackup, Preempt: true})
	if _, err := cli.Put(t.Context(), election.Keys{Prefix: "/vipd"}.Candidate("VI_1", "web-node-0"), string(ghost), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	before := len(rec.History())
	time.Sleep(2 * time.Second)
	rec.WaitFor(t, "web-node-2", 0)
	changes := rec.History()[before:]
	if len(changes) > 2 {
		t.Errorf("VIP flapped %d times for a candidate that never takes over:\n%s", len(changes)/2, strings.Join(changes, "\n"))
	}
}
