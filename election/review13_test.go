package election

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
)

// slowLeases answers every KeepAliveOnce successfully, but only once the
// test releases it: a healthy etcd whose answers take longer than
// HedgeAfter (a busy disk, a remote site).
type slowLeases struct {
	scriptedLeases
	release chan struct{}
	calls   atomic.Int32
	waiting chan struct{} // closed once the first call waits
}

func (s *slowLeases) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if s.calls.Add(1) == 1 {
		close(s.waiting)
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: 3}, nil
}

// Finding (load): with the peer channel on, a renewal that is merely slow
// (answered after 200 ms, HedgeAfter 150 ms; nothing failed) also sends a
// relayed renewal to up to three peers, each of which sends a KeepAliveOnce
// of its own: a slow but healthy etcd gets up to 3 extra lease requests per
// node per round, exactly when it is struggling.
func TestReview13SlowButHealthyEtcdIsAskedThroughPeersToo(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &slowLeases{scriptedLeases: scriptedLeases{clk: clk, ttl: 3}, release: make(chan struct{}), waiting: make(chan struct{})}
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, RequestTimeout: time.Second,
		SuspendMeter: clk.Suspended, HedgeAfter: 150 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	rl := &scriptedRelay{clk: clk, hang: true}
	s.Relay = rl.relay
	s.step(context.Background()) // grant
	clk.Advance(500 * time.Millisecond)

	done := make(chan struct{})
	go func() { defer close(done); s.step(context.Background()) }()
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("no hedge timer armed")
	}
	<-lc.waiting
	clk.Advance(150 * time.Millisecond) // still no answer: hedge
	time.Sleep(20 * time.Millisecond)
	clk.Advance(50 * time.Millisecond)
	close(lc.release) // etcd answers, 200 ms after the send
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("round did not end")
	}
	if l := s.Current(); l.Relayed || !l.Live(clk.Now()) {
		t.Fatalf("lease %+v: want renewed directly", l)
	}
	rl.mu.Lock()
	n := len(rl.sent)
	rl.mu.Unlock()
	if n != 0 {
		t.Errorf("a round whose own renewal succeeded (200 ms) also asked the peers (%d relay round(s)): each peer renews through etcd too", n)
	}
}
