package election

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
)

// scriptedLeases answers Grant and KeepAliveOnce from a script, advancing
// the fake clock by each call's simulated round trip.
type scriptedLeases struct {
	clk    *clock.Fake
	mu     sync.Mutex
	rtt    time.Duration
	fail   error
	grants int
	ttl    int64
}

func (s *scriptedLeases) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants++
	s.clk.Advance(s.rtt)
	return &clientv3.LeaseGrantResponse{ID: clientv3.LeaseID(100 + s.grants), TTL: ttl}, nil
}

func (s *scriptedLeases) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clk.Advance(s.rtt)
	if s.fail != nil {
		return nil, s.fail
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: s.ttl}, nil
}

func (s *scriptedLeases) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	return &clientv3.LeaseRevokeResponse{}, nil
}

func newTestSession(rtt time.Duration) (*Session, *scriptedLeases, *clock.Fake) {
	clk := clock.NewFake(t0)
	lc := &scriptedLeases{clk: clk, rtt: rtt, ttl: 3}
	// No hedging here: these tests script one attempt at a time.
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, HedgeAfter: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return s, lc, clk
}

func TestSessionLateRenewalCountsFromSendTime(t *testing.T) {
	s, lc, clk := newTestSession(10 * time.Millisecond)
	ctx := context.Background()
	if wait := s.step(ctx); wait != 500*time.Millisecond {
		t.Fatalf("after grant, next renewal in %v, want TTL/6 = 500ms", wait)
	}
	l := s.Current()
	if l.ID == 0 || !l.Deadline.Equal(t0.Add(2500*time.Millisecond)) {
		t.Fatalf("after grant: %+v, want deadline t0+2.5s (grant sent at t0)", l)
	}

	// A renewal that takes 1.9 s to come back.
	clk.Advance(750 * time.Millisecond)
	sent := clk.Now()
	lc.rtt = 1900 * time.Millisecond
	s.step(ctx)
	l = s.Current()
	if want := sent.Add(2500 * time.Millisecond); !l.Deadline.Equal(want) {
		t.Fatalf("late renewal: deadline %v, want sent+2.5s = %v", l.Deadline, want)
	}
	if want := sent.Add(3 * time.Second); !l.ServerExpiry.Equal(want) {
		t.Errorf("ServerExpiry = %v, want sent+TTL = %v", l.ServerExpiry, want)
	}
	if !l.Renewed.Equal(sent) {
		t.Errorf("Renewed = %v, want the send time %v", l.Renewed, sent)
	}
	if left := l.Deadline.Sub(clk.Now()); left != 600*time.Millisecond {
		t.Errorf("time left when the answer arrived = %v, want 600ms", left)
	}
}

func TestSessionFailedRenewalKeepsDeadline(t *testing.T) {
	s, lc, clk := newTestSession(time.Millisecond)
	ctx := context.Background()
	s.step(ctx)
	before := s.Current()
	clk.Advance(750 * time.Millisecond)
	lc.fail = context.DeadlineExceeded
	if wait := s.step(ctx); wait != 100*time.Millisecond {
		t.Errorf("retry after %v, want 100ms", wait)
	}
	if got := s.Current(); got != before {
		t.Errorf("failed renewal changed the lease: %+v -> %+v", before, got)
	}
	clk.Set(before.Deadline)
	if s.Current().Live(clk.Now()) {
		t.Error("lease still live at its deadline")
	}
}

func TestSessionLostLeaseIsReplaced(t *testing.T) {
	s, lc, clk := newTestSession(time.Millisecond)
	ctx := context.Background()
	s.step(ctx)
	old := s.Current().ID
	changed := s.Changed()
	clk.Advance(750 * time.Millisecond)
	lc.fail = rpctypes.ErrLeaseNotFound
	if wait := s.step(ctx); wait != 0 {
		t.Errorf("after a lost lease, next attempt in %v, want at once", wait)
	}
	select {
	case <-changed:
	default:
		t.Error("losing the lease did not signal Changed")
	}
	if s.Current().ID != 0 {
		t.Errorf("lease %x still current after it was lost", s.Current().ID)
	}
	lc.fail = nil
	s.step(ctx)
	if id := s.Current().ID; id == 0 || id == old {
		t.Errorf("new lease = %x, want a fresh one (old %x)", id, old)
	}
}

func TestSessionRunStopsOnCancel(t *testing.T) {
	s, _, clk := newTestSession(time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	clk.WaitForTimers(1, time.Second)
	clk.Advance(0)
	for i := 0; i < 5; i++ {
		clk.WaitForTimers(1, time.Second)
		clk.Advance(750 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if s.Current().ID == 0 {
		t.Error("Run never granted a lease")
	}
}

// hangingLeases: the first KeepAliveOnce hangs until its context ends (a
// member without a leader); later ones answer at once.
type hangingLeases struct {
	scriptedLeases
	calls   atomic.Int32
	hanging chan struct{} // closed once the first call is hanging
}

func (h *hangingLeases) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if h.calls.Add(1) == 1 {
		close(h.hanging)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: 3}, nil
}

func TestSessionHedgesAStuckRenewal(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &hangingLeases{scriptedLeases: scriptedLeases{clk: clk, ttl: 3}, hanging: make(chan struct{})}
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, RequestTimeout: 500 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.step(context.Background()) // grant
	clk.Advance(500 * time.Millisecond)

	done := make(chan time.Duration)
	go func() { done <- s.step(context.Background()) }()
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("no hedge timer armed")
	}
	<-lc.hanging                        // the first attempt is in flight and stuck
	clk.Advance(150 * time.Millisecond) // the first attempt still hangs: hedge
	select {
	case wait := <-done:
		if wait != 500*time.Millisecond {
			t.Errorf("after a hedged success, next renewal in %v, want 500ms", wait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("renewal did not complete through the hedged attempt")
	}
	l := s.Current()
	if want := t0.Add(650 * time.Millisecond); !l.Renewed.Equal(want) {
		t.Errorf("Renewed = %v, want the hedged attempt's send time %v", l.Renewed, want)
	}
	if got := lc.calls.Load(); got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
}
