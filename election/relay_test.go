package election

import (
	"context"
	"errors"
	"fmt"
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

// scriptedRelay is a Session.Relay that answers after rtt of virtual time,
// with err if set, and counts its calls and their send times.
type scriptedRelay struct {
	clk   *clock.Fake
	rtt   time.Duration
	calls atomic.Int32
	mu    sync.Mutex
	err   error
	hang  bool // wait for the round to end, then fail
	sent  []time.Time
}

func (r *scriptedRelay) relay(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	r.mu.Lock()
	r.sent = append(r.sent, r.clk.Now())
	err, hang := r.err, r.hang
	r.mu.Unlock()
	defer r.calls.Add(1)
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r.clk.Advance(r.rtt)
	if err != nil {
		return nil, err
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: 3}, nil
}

func (r *scriptedRelay) set(err error, hang bool) {
	r.mu.Lock()
	r.err, r.hang = err, hang
	r.mu.Unlock()
}

func (r *scriptedRelay) sentAt(i int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[i]
}

// settle waits (in real time) until n relay calls have returned.
func (r *scriptedRelay) settle(t *testing.T, n int32) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); r.calls.Load() < n; {
		if time.Now().After(end) {
			t.Fatalf("%d relay calls returned, want %d", r.calls.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

var errRefused = errors.New("dial tcp 10.0.0.1:2379: connect: connection refused")

// The holder is cut from etcd (its own renewals fail at once) but a peer
// reaches it: the round asks the peer, the lease stays live, and its fence
// counts from the moment this node sent the request to the peer, not from
// the peer's answer.
func TestSessionRelaysWhenOwnRenewalFails(t *testing.T) {
	s, lc, clk := newTestSession(0)
	var results []RenewResult
	s.OnRenew = func(r RenewResult, _ time.Duration) { results = append(results, r) }
	rl := &scriptedRelay{clk: clk, rtt: 40 * time.Millisecond}
	s.Relay = rl.relay
	ctx := context.Background()
	s.step(ctx) // grant
	clk.Advance(500 * time.Millisecond)

	lc.fail = errRefused
	sent := clk.Now()
	wait := s.step(ctx)
	l := s.Current()
	if !l.Live(clk.Now()) || !l.Relayed {
		t.Fatalf("after a relayed renewal: lease %+v, want live and Relayed", l)
	}
	if want := sent.Add(2500 * time.Millisecond); !l.Deadline.Equal(want) {
		t.Errorf("fence %v, want the relay request's send time + TTL - margin = %v", l.Deadline, want)
	}
	if want := sent.Add(3 * time.Second); !l.ServerExpiry.Equal(want) {
		t.Errorf("server expiry %v, want %v", l.ServerExpiry, want)
	}
	if wait != 460*time.Millisecond {
		t.Errorf("next round in %v, want 500ms after the relayed send", wait)
	}
	if results[len(results)-1] != RenewRelayed {
		t.Errorf("reported %v, want %v last", results, RenewRelayed)
	}

	// The next round asks the peer at once, beside its own attempt: no
	// HedgeAfter is lost while this node's own path is known broken.
	clk.Advance(wait)
	sent = clk.Now()
	s.step(ctx)
	rl.settle(t, 2)
	if got := rl.sentAt(1); !got.Equal(sent) {
		t.Errorf("second round asked the peer at %v, want at once (%v)", got, sent)
	}

	// Own renewals work again (the peer, asked at once beside them, does
	// not answer this time): the lease is no longer relayed, and the
	// round after does not ask the peer.
	lc.fail = nil
	rl.set(nil, true)
	clk.Advance(500 * time.Millisecond)
	s.step(ctx)
	if l := s.Current(); l.Relayed || !l.Live(clk.Now()) {
		t.Fatalf("own renewal after relaying: %+v, want live, not Relayed", l)
	}
	rl.settle(t, 3)
	clk.Advance(500 * time.Millisecond)
	s.step(ctx)
	time.Sleep(10 * time.Millisecond)
	if got := rl.calls.Load(); got != 3 {
		t.Errorf("a round after a good own renewal asked the peer (%d calls, want 3)", got)
	}
}

// An own attempt that hangs (a partition that drops packets): the peer is
// asked after RelayAfter (not at the first hedge: a merely slow etcd would
// get every peer's renewal on top), and the fence counts from that send.
func TestSessionRelaysWhenOwnRenewalHangs(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &hangingLeases{scriptedLeases: scriptedLeases{clk: clk, ttl: 3}, then: errRefused, hanging: make(chan struct{})}
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, RequestTimeout: time.Hour,
		SuspendMeter: clk.Suspended, HedgeAfter: time.Hour, RelayAfter: 250 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	rl := &scriptedRelay{clk: clk, rtt: 10 * time.Millisecond}
	s.Relay = rl.relay
	s.step(context.Background()) // grant
	clk.Advance(500 * time.Millisecond)

	done := make(chan time.Duration, 1)
	go func() { done <- s.step(context.Background()) }()
	if !clk.WaitForTimers(2, 5*time.Second) {
		t.Fatal("no hedge and relay timers armed")
	}
	<-lc.hanging
	relayAt := clk.Now().Add(250 * time.Millisecond)
	clk.Advance(150 * time.Millisecond) // HedgeAfter's worth: no relay yet
	time.Sleep(20 * time.Millisecond)
	rl.mu.Lock()
	asked := len(rl.sent)
	rl.mu.Unlock()
	if asked != 0 {
		t.Fatal("peers asked before RelayAfter")
	}
	clk.Advance(100 * time.Millisecond) // RelayAfter
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the round did not end through the relay")
	}
	l := s.Current()
	if !l.Relayed || !l.Renewed.Equal(relayAt) {
		t.Errorf("lease %+v: want Relayed, renewed at the relay's send %v", l, relayAt)
	}
}

// This node's member answers "no leader" (it is cut from the other
// members) while the peers' members have one: the round waits for the
// relay instead of ending on the quick "no".
func TestSessionNoLeaderWaitsForTheRelay(t *testing.T) {
	s, lc, clk := newTestSession(0)
	rl := &scriptedRelay{clk: clk, rtt: 30 * time.Millisecond}
	s.Relay = rl.relay
	ctx := context.Background()
	s.step(ctx)
	clk.Advance(500 * time.Millisecond)
	lc.fail = fmt.Errorf("renew: %w", rpctypes.ErrNoLeader)
	s.step(ctx)
	if l := s.Current(); !l.Relayed || !l.Live(clk.Now()) {
		t.Fatalf("lease %+v: want renewed through the peer", l)
	}
}

// A peer that finds the lease gone is believed: the lease is replaced (a
// peer can only make this node drop its VIPs, never keep them).
func TestSessionRelayedLeaseNotFound(t *testing.T) {
	s, lc, clk := newTestSession(0)
	rl := &scriptedRelay{clk: clk, err: fmt.Errorf("peer: %w", rpctypes.ErrLeaseNotFound)}
	s.Relay = rl.relay
	ctx := context.Background()
	s.step(ctx)
	clk.Advance(500 * time.Millisecond)
	lc.fail = errRefused
	if wait := s.step(ctx); wait != 0 {
		t.Errorf("after the peer found the lease gone, next step in %v, want at once (grant)", wait)
	}
	if l := s.Current(); l.ID != 0 {
		t.Fatalf("lease %+v kept after a peer found it gone", l)
	}
}

// Peers that cannot renew either leave the fence where it was: a failed
// relay is just a failed round.
func TestSessionFailedRelayKeepsDeadline(t *testing.T) {
	s, lc, clk := newTestSession(0)
	rl := &scriptedRelay{clk: clk, rtt: 20 * time.Millisecond, err: errors.New("peer: no peer could renew")}
	s.Relay = rl.relay
	ctx := context.Background()
	s.step(ctx)
	before := s.Current()
	clk.Advance(500 * time.Millisecond)
	lc.fail = errRefused
	if wait := s.step(ctx); wait != 100*time.Millisecond {
		t.Errorf("after own and relay failed, retry in %v, want RetryEvery", wait)
	}
	if got := s.Current(); got != before {
		t.Errorf("failed round changed the lease: %+v -> %+v", before, got)
	}
	rl.settle(t, 1)
	if rl.calls.Load() != 1 {
		t.Errorf("%d relay calls, want 1", rl.calls.Load())
	}
}
