package election

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
)

// LastWin records when the watch sees a node create a leader key, and
// only then: a rewrite of an existing key or a full listing is no news of
// a node taking a group.
func TestViewLastWinCountsCreatedLeaderKeys(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := Keys{Prefix: "/v"}
	if _, err := cli.Put(ctx, keys.Leader("listed"), "old-node"); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	v, changed := runView(t, cli, keys, clk)
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
	waitFor("") // listed
	if got := v.LastWin("old-node"); !got.IsZero() {
		t.Fatalf("LastWin after a listing = %v, want zero", got)
	}

	clk.Advance(time.Second)
	wonAt := clk.Now()
	if _, err := cli.Put(ctx, keys.Leader("g1"), "node-a"); err != nil {
		t.Fatal(err)
	}
	waitFor("g1")
	if got := v.LastWin("node-a"); !got.Equal(wonAt) {
		t.Fatalf("LastWin(node-a) = %v, want %v", got, wonAt)
	}

	clk.Advance(time.Second)
	if _, err := cli.Put(ctx, keys.Leader("g1"), "node-a"); err != nil { // rewrite, not a creation
		t.Fatal(err)
	}
	waitFor("g1")
	if got := v.LastWin("node-a"); !got.Equal(wonAt) {
		t.Fatalf("LastWin(node-a) after a rewrite = %v, want still %v", got, wonAt)
	}
}

// The view's revision never runs ahead of the events it has applied: etcd
// sends a catching-up watch at most 1000 revisions of events per response
// with the store's current revision in the header, and a claim then
// seemed deleted (or its successor confirmable) before its keys arrived.
func TestViewRevNeverAheadOfAppliedEvents(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := Keys{Prefix: "/vipd"}
	a := netip.MustParseAddr("10.0.0.1")
	addrs := []netip.Addr{a}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0)) // no progress requests
	var (
		mu       sync.Mutex
		v        *View
		claimRev int64
		bad      []string
	)
	v = NewView(cli, keys, clk, slog.New(slog.DiscardHandler), func(string) {
		mu.Lock()
		defer mu.Unlock()
		if claimRev == 0 {
			return
		}
		st := v.Group("A", addrs)
		if st.Synced && st.Rev >= claimRev && (!st.Leader.Present || st.Leader.CreateRev != claimRev) {
			bad = append(bad, fmt.Sprintf("view Rev %d >= claim rev %d, but leader present=%v rev=%d", st.Rev, claimRev, st.Leader.Present, st.Leader.CreateRev))
		}
	})
	rev, err := v.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1200 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/vipd/groups/G%d/candidates/n", i%50), `{"node":"n"}`); err != nil {
			t.Fatal(err)
		}
	}
	lc := &Leadership{KV: cli.KV, Batch: NewBatcher(cli.KV, 2*time.Second, 0, 0, nil), Keys: keys, Node: "n1", RequestTimeout: 2 * time.Second}
	l, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	r, err := lc.Acquire(ctx, "A", addrs, l.ID, nil, nil)
	if err != nil || !r.Won {
		t.Fatal(r, err)
	}
	mu.Lock()
	claimRev = r.Claim.CreateRev
	mu.Unlock()
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = v.watch(wctx, rev+1) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := v.Group("A", addrs)
		if st.Leader.Present && st.Leader.CreateRev == claimRev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("view never saw the claim")
		}
		time.Sleep(5 * time.Millisecond)
	}
	wcancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d states with Rev past the claim but the claim not applied; first: %s", len(bad), bad[0])
	}
}

// A quiet cluster (no write after the listing) must not look stalled: etcd
// answers a progress request only for watchers whose start revision it has
// reached, so a watch started one past the listed revision got no answer
// until the next write, and the view re-listed every few seconds (seen in
// a vipd re-executed in place, which writes nothing at start).
func TestViewQuietClusterDoesNotStall(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := Keys{Prefix: "/v"}
	if _, err := cli.Put(ctx, keys.Leader("g1"), "node-a"); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	v, changed := runView(t, cli, keys, clk)
	select {
	case <-changed: // listed
	case <-time.After(10 * time.Second):
		t.Fatal("never listed")
	}
	for range 2 * staleAfter {
		clk.WaitForTimers(1, 5*time.Second)
		clk.Advance(progressEvery)
		time.Sleep(100 * time.Millisecond) // the request and its answer, in real time
	}
	relists := 0
	for len(changed) > 0 {
		if <-changed == "" {
			relists++
		}
	}
	if relists > 0 || !v.Group("g1", nil).Synced {
		t.Errorf("quiet cluster: %d re-lists after %d progress periods, synced %v; want none", relists, 2*staleAfter, v.Group("g1", nil).Synced)
	}
}

// runView runs a view on clk until the test ends; changed receives the
// groups it reports ("" for every group).
func runView(t *testing.T, cli *clientv3.Client, keys Keys, clk clock.Clock) (*View, chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan string, 100)
	v := NewView(cli, keys, clk, slog.New(slog.DiscardHandler), func(g string) { changed <- g })
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return v, changed
}
