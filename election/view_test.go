package election

import (
	"context"
	"log/slog"
	"testing"
	"time"

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
	changed := make(chan string, 100)
	v := NewView(cli, keys, clk, slog.New(slog.DiscardHandler), func(g string) { changed <- g })
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
