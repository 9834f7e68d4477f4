package election

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
)

func newLeadership(t *testing.T, cli *clientv3.Client, node string) *Leadership {
	t.Helper()
	return &Leadership{KV: cli.KV, Batch: NewBatcher(cli.KV, 2*time.Second, 0, 0, nil),
		Keys: Keys{Prefix: "/vipd"}, Node: node, RequestTimeout: 2 * time.Second}
}

func grant(t *testing.T, cli *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	l, err := cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	return l.ID
}

func keyCount(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// The address is the resource: a group of another name (a rename during a
// rolling reload, or the same VIP configured in two groups) cannot acquire
// while any of its addresses is claimed, and a win claims every address
// with the leader key in one revision.
func TestAcquireClaimsEveryAddress(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	n1, n2 := newLeadership(t, cli, "n1"), newLeadership(t, cli, "n2")
	l1, l2 := grant(t, cli), grant(t, cli)
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")

	r, err := n1.Acquire(ctx, "A", []netip.Addr{a, b}, l1, nil, nil)
	if err != nil || !r.Won {
		t.Fatalf("first acquire: %+v, %v", r, err)
	}
	own, err := n1.Inspect(ctx, "A", []netip.Addr{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if claim, complete, _ := own.ClaimOf("A", "n1", l1, []netip.Addr{a, b}); !complete || claim.CreateRev != r.Claim.CreateRev {
		t.Fatalf("Inspect after win: %+v complete=%v, want rev %d", own, complete, r.Claim.CreateRev)
	}

	// Group B on n2 shares address b with A: it must not win.
	r2, err := n2.Acquire(ctx, "B", []netip.Addr{b, c}, l2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Won {
		t.Fatal("group B won although its address 10.0.0.2 is claimed by group A")
	}
	if r2.Holder != "address 10.0.0.2 claimed by n1 for group A" {
		t.Errorf("Holder = %q", r2.Holder)
	}
	if n := keyCount(t, cli, "/vipd/addresses/10.0.0.3"); n != 0 {
		t.Errorf("a failed acquire left %d claim keys for 10.0.0.3", n)
	}

	// Resign frees every key; B then wins.
	if err := n1.Resign(ctx, r.Claim, true); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, cli, "/vipd/addresses/") + keyCount(t, cli, "/vipd/groups/A/leader"); n != 0 {
		t.Fatalf("%d keys left after resign", n)
	}
	if r2, err = n2.Acquire(ctx, "B", []netip.Addr{b, c}, l2, nil, nil); err != nil || !r2.Won {
		t.Fatalf("B after A resigned: %+v, %v", r2, err)
	}
}

// Resign deletes only keys still created by the claim, each on its own
// guard: a key deleted by hand does not keep the others alive, and a
// retried or late resign never deletes someone else's newer claim.
func TestResignIsGuardedPerKey(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	n1, n2 := newLeadership(t, cli, "n1"), newLeadership(t, cli, "n2")
	l1, l2 := grant(t, cli), grant(t, cli)
	a := netip.MustParseAddr("10.0.0.1")
	keys := Keys{Prefix: "/vipd"}

	r, err := n1.Acquire(ctx, "A", []netip.Addr{a}, l1, nil, nil)
	if err != nil || !r.Won {
		t.Fatal(r, err)
	}
	// An operator deletes the leader key: the address key must still go.
	if _, err := cli.Delete(ctx, keys.Leader("A")); err != nil {
		t.Fatal(err)
	}
	if err := n1.Resign(ctx, r.Claim, true); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, cli, "/vipd/addresses/"); n != 0 {
		t.Fatalf("%d keys left: the address claim outlived the deleted leader key", n)
	}
	if n := keyCount(t, cli, keys.Released("A")); n != 0 {
		t.Fatal("a release was recorded for a leader key this resign did not delete")
	}

	// n2 wins the group; n1's stale resign (same claim, retried) must not
	// touch n2's keys.
	r2, err := n2.Acquire(ctx, "A", []netip.Addr{a}, l2, nil, nil)
	if err != nil || !r2.Won {
		t.Fatal(r2, err)
	}
	if err := n1.Resign(ctx, r.Claim, true); err != nil {
		t.Fatal(err)
	}
	own, err := n2.Inspect(ctx, "A", []netip.Addr{a})
	if err != nil {
		t.Fatal(err)
	}
	if _, complete, _ := own.ClaimOf("A", "n2", l2, []netip.Addr{a}); !complete {
		t.Fatalf("a stale resign damaged n2's claim: %+v", own)
	}
}

// Publish is guarded by the record's ModRevision, so a write that lands
// late (its answer timed out and it was retried) cannot overwrite the
// newer record.
func TestPublishGuardKeepsOrder(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	n1 := newLeadership(t, cli, "n1")
	l1 := grant(t, cli)
	key := Keys{Prefix: "/vipd"}.Candidate("A", "n1")
	rec := func(prio int) Candidate { return Candidate{Node: "n1", Priority: prio, State: StateBackup} }

	first, err := n1.Publish(ctx, "A", rec(103), l1, 0)
	if err != nil || !first.Written {
		t.Fatal(first, err)
	}
	second, err := n1.Publish(ctx, "A", rec(101), l1, first.ModRev)
	if err != nil || !second.Written {
		t.Fatal(second, err)
	}
	// The first attempt of the second write, sent with the same guard,
	// lands now: it must be dropped.
	late, err := n1.Publish(ctx, "A", rec(999), l1, first.ModRev)
	if err != nil {
		t.Fatal(err)
	}
	if late.Written || late.ModRev != second.ModRev {
		t.Fatalf("late write: %+v, want dropped with current ModRev %d", late, second.ModRev)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var got Candidate
	if err := json.Unmarshal(resp.Kvs[0].Value, &got); err != nil || got.Priority != 101 {
		t.Fatalf("record = %s, want priority 101", resp.Kvs[0].Value)
	}

	// Deleted by an operator: the guard reports it absent (ModRev 0), and
	// the next write with that guard recreates it.
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	gone, err := n1.Publish(ctx, "A", rec(101), l1, second.ModRev)
	if err != nil || gone.Written || gone.ModRev != 0 {
		t.Fatalf("publish over a deleted record: %+v, %v; want not written, ModRev 0", gone, err)
	}
	if again, err := n1.Publish(ctx, "A", rec(101), l1, 0); err != nil || !again.Written {
		t.Fatal(again, err)
	}
}

// Unpublish deletes this node's record only on the given lease: a record
// that another process with the same node name wrote stays.
func TestUnpublishIsGuardedByLease(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	n1 := newLeadership(t, cli, "n1")
	l1, other := grant(t, cli), grant(t, cli)
	rec := Candidate{Node: "n1", Priority: 100, State: StateBackup}
	if _, err := n1.Publish(ctx, "A", rec, other, 0); err != nil {
		t.Fatal(err)
	}
	if err := n1.Unpublish(ctx, "A", l1); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, cli, "/vipd/groups/A/candidates/"); n != 1 {
		t.Fatalf("unpublish on lease %x deleted a record on another lease", l1)
	}
	if err := n1.Unpublish(ctx, "A", other); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, cli, "/vipd/groups/A/candidates/"); n != 0 {
		t.Fatal("record still there after unpublish on its own lease")
	}
}

// The view mirrors address claims and wakes the group they name.
func TestViewMirrorsAddressClaims(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n1 := newLeadership(t, cli, "n1")
	l1 := grant(t, cli)
	a := netip.MustParseAddr("10.0.0.1")
	changed := make(chan string, 100)
	v := NewView(cli, Keys{Prefix: "/vipd"}, clockReal{}, discardLog(), func(g string) { changed <- g })
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor := func(group string) {
		t.Helper()
		for {
			select {
			case g := <-changed:
				if g == group {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no change of %q seen", group)
			}
		}
	}
	waitFor("")
	r, err := n1.Acquire(ctx, "A", []netip.Addr{a}, l1, nil, nil)
	if err != nil || !r.Won {
		t.Fatal(r, err)
	}
	waitFor("A")
	for v.Group("A", []netip.Addr{a}).Rev < r.Claim.CreateRev {
		time.Sleep(time.Millisecond)
	}
	st := v.Group("B", []netip.Addr{a})
	if got := st.Addresses[a]; got.Node != "n1" || got.Group != "A" || got.CreateRev != r.Claim.CreateRev || got.Lease != l1 {
		t.Fatalf("view's claim of %v = %+v", a, got)
	}
	if err := n1.Resign(ctx, r.Claim, true); err != nil {
		t.Fatal(err)
	}
	waitFor("A") // the delete wakes the group the claim named
	if st := v.Group("B", []netip.Addr{a}); st.Addresses[a].Present() {
		t.Fatalf("claim still seen after resign: %+v", st.Addresses[a])
	}
}

type clockReal = clock.Real

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The view tells, for a new claim, how the one before it ended: a
// graceful release (Resign with graceful: the VIPs were bound and then
// confirmed gone), or anything else — an expiry or revoke, a resign of a
// claim that never bound, a claim the view never saw end.
func TestViewTellsHowThePriorClaimEnded(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n1, n2 := newLeadership(t, cli, "n1"), newLeadership(t, cli, "n2")
	a := netip.MustParseAddr("10.0.0.1")
	addrs := []netip.Addr{a}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	v := NewView(cli, Keys{Prefix: "/vipd"}, clk, discardLog(), func(string) {})
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitRev := func(rev int64) GroupState {
		t.Helper()
		for i := 0; ; i++ {
			st := v.Group("A", addrs)
			if st.Synced && st.Rev >= rev {
				return st
			}
			if i > 5000 {
				t.Fatalf("view stuck at %d, want %d", st.Rev, rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	listed := clk.Now()
	acquire := func(l *Leadership, lease clientv3.LeaseID) Claim {
		t.Helper()
		r, err := l.Acquire(ctx, "A", addrs, lease, nil, nil)
		if err != nil || !r.Won {
			t.Fatal(r, err)
		}
		waitRev(r.Claim.CreateRev)
		return r.Claim
	}

	// The first claim: the view never saw anything end; counted from the
	// listing, not graceful.
	c1 := acquire(n1, grant(t, cli))
	if st := v.Group("A", addrs); st.Prior.Graceful || !st.Prior.At.Equal(listed) {
		t.Fatalf("first claim's prior %+v, want not graceful, at the listing %v", st.Prior, listed)
	}
	clk.Advance(time.Second)
	if err := n1.Resign(ctx, c1, true); err != nil {
		t.Fatal(err)
	}
	resp, _ := cli.Get(ctx, "/x")
	waitRev(resp.Header.Revision) // the view applied the resign at this time
	resigned := clk.Now()
	clk.Advance(time.Second)
	acquire(n2, grant(t, cli))
	if st := v.Group("A", addrs); !st.Prior.Graceful || !st.Prior.At.Equal(resigned) {
		t.Fatalf("after a graceful resign: prior %+v, want graceful at %v", st.Prior, resigned)
	}

	// A claim that expires (its lease revoked): not graceful.
	l3 := grant(t, cli)
	st := v.Group("A", addrs)
	if err := n2.Resign(ctx, Claim{Group: "A", CreateRev: st.Leader.CreateRev, Lease: st.Leader.Lease, Addrs: addrs}, true); err != nil {
		t.Fatal(err)
	}
	acquire(n1, l3)
	clk.Advance(time.Second)
	if _, err := cli.Revoke(ctx, l3); err != nil {
		t.Fatal(err)
	}
	resp, _ = cli.Get(ctx, "/x")
	waitRev(resp.Header.Revision)
	expired := clk.Now()
	clk.Advance(time.Second)
	c4 := acquire(n2, grant(t, cli))
	if st := v.Group("A", addrs); st.Prior.Graceful || !st.Prior.At.Equal(expired) {
		t.Fatalf("after an expiry: prior %+v, want not graceful at %v", st.Prior, expired)
	}

	// A resign of a claim that never bound (graceful false) passes on
	// nothing: not graceful.
	if err := n2.Resign(ctx, c4, false); err != nil {
		t.Fatal(err)
	}
	acquire(n1, grant(t, cli))
	if st := v.Group("A", addrs); st.Prior.Graceful {
		t.Fatalf("after a resign of a claim never bound: prior %+v, want not graceful", st.Prior)
	}
}

// failingKV fails every transaction: a broken connection.
type failingKV struct{ clientv3.KV }

func (failingKV) Txn(ctx context.Context) clientv3.Txn { return failingTxn{} }

type failingTxn struct{}

func (t failingTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t failingTxn) Then(...clientv3.Op) clientv3.Txn { return t }
func (t failingTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (failingTxn) Commit() (*clientv3.TxnResponse, error) {
	return nil, errors.New("connection broken")
}

// A node whose group connection is broken while its lease connection
// works still deletes its keys: resign and unpublish fall back to it.
func TestResignAndUnpublishFallBack(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	good := newLeadership(t, cli, "n1")
	lease := grant(t, cli)
	a := netip.MustParseAddr("10.0.0.1")
	r, err := good.Acquire(ctx, "A", []netip.Addr{a}, lease, nil, nil)
	if err != nil || !r.Won {
		t.Fatal(r, err)
	}
	if _, err := good.Publish(ctx, "A", Candidate{Node: "n1", State: StateBackup}, lease, 0); err != nil {
		t.Fatal(err)
	}
	broken := &Leadership{KV: failingKV{}, Batch: NewBatcher(failingKV{}, time.Second, 0, 0, nil), Keys: good.Keys, Node: "n1", RequestTimeout: time.Second}
	if err := broken.Resign(ctx, r.Claim, true); err == nil {
		t.Fatal("resign over a broken connection succeeded without a fallback")
	}
	broken.Fallback = cli.KV
	if err := broken.Resign(ctx, r.Claim, true); err != nil {
		t.Fatal(err)
	}
	if err := broken.Unpublish(ctx, "A", lease); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, cli, "/vipd/groups/A/leader") + keyCount(t, cli, "/vipd/addresses/") + keyCount(t, cli, "/vipd/groups/A/candidates/"); n != 0 {
		t.Fatalf("%d keys left", n)
	}
}
