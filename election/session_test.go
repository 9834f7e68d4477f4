package election

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vipd/vipd/internal/clock"
)

// scriptedLeases answers Grant and KeepAliveOnce from a script, advancing
// the fake clock by each call's simulated round trip.
type scriptedLeases struct {
	clk       *clock.Fake
	mu        sync.Mutex
	rtt       time.Duration
	fail      error // every KeepAliveOnce fails with it
	grantFail error // every Grant fails with it
	grants    int
	ttl       int64
	renewals  []time.Time // when each KeepAliveOnce was sent
	// inFlight, if set, runs inside every call, after the send and before
	// the round trip: what happens while the request is out.
	inFlight func()
}

func (s *scriptedLeases) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight != nil {
		s.inFlight()
	}
	s.clk.Advance(s.rtt)
	if s.grantFail != nil {
		return nil, s.grantFail
	}
	s.grants++
	return &clientv3.LeaseGrantResponse{ID: clientv3.LeaseID(100 + s.grants), TTL: ttl}, nil
}

func (s *scriptedLeases) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renewals = append(s.renewals, s.clk.Now())
	if s.inFlight != nil {
		s.inFlight()
	}
	s.clk.Advance(s.rtt)
	if s.fail != nil {
		return nil, s.fail
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: s.ttl}, nil
}

// sent returns the send times of the KeepAliveOnce calls so far.
func (s *scriptedLeases) sent() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.renewals...)
}

func (s *scriptedLeases) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	return &clientv3.LeaseRevokeResponse{}, nil
}

func newTestSession(rtt time.Duration) (*Session, *scriptedLeases, *clock.Fake) {
	// No hedging here: these tests script one attempt at a time.
	return newScriptedSession(rtt, SessionConfig{HedgeAfter: time.Hour})
}

// newScriptedSession returns a session on a scripted lease client with a
// 3 s TTL and a 500 ms margin, suspends measured by the fake clock; the
// rest of cfg is as given (defaults: renew every 500 ms, retry after
// 100 ms, hedge after 150 ms).
func newScriptedSession(rtt time.Duration, cfg SessionConfig) (*Session, *scriptedLeases, *clock.Fake) {
	return newLoggedSession(rtt, cfg, io.Discard)
}

func newLoggedSession(rtt time.Duration, cfg SessionConfig, logTo io.Writer) (*Session, *scriptedLeases, *clock.Fake) {
	clk := clock.NewFake(t0)
	lc := &scriptedLeases{clk: clk, rtt: rtt, ttl: 3}
	cfg.TTL, cfg.Margin, cfg.SuspendMeter = 3*time.Second, 500*time.Millisecond, clk.Suspended
	s := NewSession(lc, clk, cfg, slog.New(slog.NewTextHandler(logTo, nil)))
	return s, lc, clk
}

func TestSessionLateRenewalCountsFromSendTime(t *testing.T) {
	s, lc, clk := newTestSession(10 * time.Millisecond)
	ctx := context.Background()
	if wait := s.step(ctx); wait != 490*time.Millisecond {
		t.Fatalf("after grant, next renewal in %v, want TTL/6 = 500ms after the send, 490ms after the answer", wait)
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

// Renewals are paced from their send times, not their answers: a holder's
// ride-through budget runs from the last good renewal's send, so a slow
// answer (an etcd member under load, 150 ms here) must not age the last
// good renewal before an election by RenewEvery plus the round trip.
func TestSessionRenewalsPacedFromSend(t *testing.T) {
	const rtt = 150 * time.Millisecond
	s, lc, clk := newTestSession(rtt)
	ctx := context.Background()
	for range 5 {
		clk.Advance(s.step(ctx))
	}
	sent := lc.sent()
	for i := 1; i < len(sent); i++ {
		if gap := sent[i].Sub(sent[i-1]); gap != 500*time.Millisecond {
			t.Errorf("renewal %d sent %v after the previous one, want RenewEvery = 500ms (round trip %v)", i, gap, rtt)
		}
	}
	// A grant is paced the same way: the first renewal goes RenewEvery
	// after the grant was sent.
	if first := sent[0].Sub(t0); first != 500*time.Millisecond {
		t.Errorf("first renewal %v after the grant was sent, want 500ms", first)
	}
	// An answer slower than RenewEvery: the next renewal goes at once.
	lc.rtt = 700 * time.Millisecond
	if wait := s.step(ctx); wait != 0 {
		t.Errorf("after a 700ms round trip, next renewal in %v, want 0", wait)
	}
}

// The first success after failed renewals is logged with the failures and
// the gap since the previous good renewal's send: the number to compare
// with the holder's ride-through budget (≈1.8 s at lease_ttl 3s).
func TestSessionLogsRenewalRecovery(t *testing.T) {
	var logs syncBuffer
	// No hedging: a hedged attempt left over from the slow round below
	// would advance the virtual clock after the round ended.
	s, lc, clk := newLoggedSession(0, SessionConfig{HedgeAfter: time.Hour}, &logs)
	ctx := context.Background()
	clk.Advance(s.step(ctx)) // grant at t0
	clk.Advance(s.step(ctx)) // renewal at t0+500ms
	if strings.Contains(logs.String(), "renewed again") {
		t.Fatalf("recovery logged without a failure:\n%s", logs.String())
	}
	lc.fail = context.DeadlineExceeded
	clk.Advance(s.step(ctx)) // t0+1s
	clk.Advance(s.step(ctx)) // t0+1.1s
	lc.fail = nil
	s.step(ctx) // t0+1.2s
	want := `msg="lease renewed again" lease=65 failures=2 gap=700ms`
	if got := logs.String(); strings.Count(got, "renewed again") != 1 || !strings.Contains(got, want) {
		t.Fatalf("log:\n%s\nwant one line with %s", got, want)
	}
	clk.Advance(s.step(ctx))
	if strings.Count(logs.String(), "renewed again") != 1 {
		t.Errorf("recovery logged again after an ordinary renewal:\n%s", logs.String())
	}
	// An election that ends inside one round (a stuck attempt, answered
	// once the new leader is up) costs the holder as much: a gap of two
	// RenewEvery or more is logged without failures too.
	lc.rtt = 1100 * time.Millisecond
	clk.Advance(s.step(ctx)) // answered 1.1 s after its send: the next goes at once
	lc.rtt = 0
	s.step(ctx)
	want = `msg="lease renewed again" lease=65 failures=0 gap=1.1s`
	if got := logs.String(); strings.Count(got, "renewed again") != 2 || !strings.Contains(got, want) {
		t.Fatalf("log:\n%s\nwant a second line with %s", got, want)
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
// wedged or unreachable member); later ones answer at once, with then if
// it is set, else with success.
type hangingLeases struct {
	scriptedLeases
	then    error
	calls   atomic.Int32
	hanging chan struct{} // closed once the first call is hanging
}

func (h *hangingLeases) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if h.calls.Add(1) == 1 {
		close(h.hanging)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if h.then != nil {
		return nil, h.then
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: 3}, nil
}

func TestSessionHedgesAStuckRenewal(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &hangingLeases{scriptedLeases: scriptedLeases{clk: clk, ttl: 3}, hanging: make(chan struct{})}
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, RequestTimeout: 500 * time.Millisecond,
		SuspendMeter: clk.Suspended},
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

// Every renewal over 5 s of virtual time answers "no leader" at once: the
// retries back off 100, 200, 400, 400… ms, and no hedged attempts are
// added (each attempt failed fast, with default hedging on).
func TestSessionNoLeaderBacksOff(t *testing.T) {
	s, lc, clk := newScriptedSession(0, SessionConfig{})
	ctx := context.Background()
	s.step(ctx) // grant
	clk.Advance(500 * time.Millisecond)
	lc.fail = rpctypes.ErrNoLeader
	start := clk.Now()
	for clk.Now().Sub(start) < 5*time.Second {
		clk.Advance(s.step(ctx))
	}

	var want []time.Duration // offsets from start
	for at, wait := time.Duration(0), 100*time.Millisecond; at < 5*time.Second; at, wait = at+wait, min(2*wait, 200*time.Millisecond) {
		want = append(want, at)
	}
	var got []time.Duration
	for _, at := range lc.sent() {
		got = append(got, at.Sub(start))
	}
	if !slices.Equal(got, want) {
		t.Errorf("attempts at %v,\nwant %v (waits 100, then 200 ms)", got, want)
	}
}

// The no-leader backoff is reset by a success and by any other error, and
// applies to grants too.
func TestSessionNoLeaderBackoffResets(t *testing.T) {
	const ms = time.Millisecond
	noLeader, timeout := rpctypes.ErrNoLeader, context.DeadlineExceeded
	type step struct {
		err  error // of this step's Grant or KeepAliveOnce
		wait time.Duration
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a success resets", []step{{nil, 500 * ms}, {noLeader, 100 * ms}, {noLeader, 200 * ms}, {noLeader, 200 * ms},
			{noLeader, 200 * ms}, {nil, 500 * ms}, {noLeader, 100 * ms}, {noLeader, 200 * ms}}},
		{"ordinary errors keep the 100ms pace", []step{{nil, 500 * ms}, {timeout, 100 * ms}, {timeout, 100 * ms}, {timeout, 100 * ms}}},
		{"an ordinary error resets", []step{{nil, 500 * ms}, {noLeader, 100 * ms}, {noLeader, 200 * ms}, {timeout, 100 * ms},
			{noLeader, 100 * ms}}},
		{"a lost lease resets", []step{{nil, 500 * ms}, {noLeader, 100 * ms}, {noLeader, 200 * ms}, {rpctypes.ErrLeaseNotFound, 0},
			{noLeader, 100 * ms}}},
		{"grants back off too", []step{{noLeader, 100 * ms}, {noLeader, 200 * ms}, {noLeader, 200 * ms}, {noLeader, 200 * ms},
			{nil, 500 * ms}, {noLeader, 100 * ms}}},
		{"the status error and wrapped errors count", []step{{nil, 500 * ms}, {rpctypes.ErrGRPCNoLeader, 100 * ms},
			{fmt.Errorf("renew: %w", rpctypes.ErrNoLeader), 200 * ms}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, lc, clk := newScriptedSession(0, SessionConfig{})
			for i, st := range tc.steps {
				lc.fail, lc.grantFail = st.err, st.err
				if got := s.step(context.Background()); got != st.wait {
					t.Fatalf("step %d (%v): next attempt in %v, want %v", i, st.err, got, st.wait)
				}
				clk.Advance(st.wait)
			}
		})
	}
}

// A hedged attempt that answers "no leader" while the first attempt is
// still stuck ends the round: no third attempt is hedged, and the next try
// is left to the backoff.
func TestSessionNoLeaderEndsHedgedRound(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &hangingLeases{scriptedLeases: scriptedLeases{clk: clk, ttl: 3}, then: rpctypes.ErrNoLeader, hanging: make(chan struct{})}
	// RequestTimeout is a real-time context deadline: make it long, so the
	// stuck attempt stays stuck for the whole test.
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second, Margin: 500 * time.Millisecond, RequestTimeout: time.Hour,
		SuspendMeter: clk.Suspended},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.step(context.Background()) // grant
	clk.Advance(500 * time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan time.Duration, 1)
	go func() { done <- s.step(ctx) }()
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("no hedge timer armed")
	}
	<-lc.hanging
	clk.Advance(150 * time.Millisecond) // hedge: the second attempt answers "no leader"
	select {
	case wait := <-done:
		if wait != 100*time.Millisecond {
			t.Errorf("after a no-leader answer, next attempt in %v, want 100ms", wait)
		}
	case <-time.After(2 * time.Second): // real time
		clk.Advance(time.Second) // what the round does next: more hedges
		cancel()
		<-done
		t.Fatalf("the round went on after a no-leader answer (%d attempts once 1s more had passed)", lc.calls.Load())
	}
	clk.Advance(time.Second)
	if got := lc.calls.Load(); got != 2 {
		t.Errorf("%d attempts, want 2 (the stuck one and one hedge)", got)
	}
}

func TestIsNoLeader(t *testing.T) {
	wire := status.Error(codes.Unavailable, "etcdserver: no leader") // as received, not the package's value
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"client error", rpctypes.ErrNoLeader, true},
		{"as the client converts it", clientv3.ContextError(context.Background(), wire), true},
		{"grpc status", rpctypes.ErrGRPCNoLeader, true},
		{"status off the wire", wire, true},
		{"wrapped", fmt.Errorf("election: renew: %w", rpctypes.ErrNoLeader), true},
		{"wrapped status", fmt.Errorf("renew: %w", wire), true},
		{"leader changed", rpctypes.ErrLeaderChanged, false},
		{"leader changed status", rpctypes.ErrGRPCLeaderChanged, false},
		{"lease not found", rpctypes.ErrLeaseNotFound, false},
		{"deadline", context.DeadlineExceeded, false},
		{"plain text is not enough", errors.New("etcdserver: no leader"), false},
		{"nil", nil, false},
	} {
		if got := isNoLeader(tc.err); got != tc.want {
			t.Errorf("%s: isNoLeader(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// syncBuffer collects log output from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A suspend voids the fence at once, without the monotonic clock moving,
// and says so once; the next renewal, sent after the resume, restores it.
func TestSessionSuspendVoidsFence(t *testing.T) {
	var logs syncBuffer
	s, lc, clk := newLoggedSession(time.Millisecond, SessionConfig{}, &logs)
	ctx := context.Background()
	s.step(ctx) // grant
	clk.Advance(500 * time.Millisecond)
	if wait := s.step(ctx); wait != 499*time.Millisecond {
		t.Fatalf("renewal: next in %v, want 500ms after the send (499ms after the 1ms round trip)", wait)
	}
	before := s.Current()
	if !before.Live(clk.Now()) {
		t.Fatalf("lease not live before the suspend: %+v", before)
	}
	changed := s.Changed()

	clk.Suspend(5 * time.Second)
	now := clk.Now()
	l := s.Current()
	if l.Live(now) {
		t.Errorf("lease still live right after a 5s suspend: %+v", l)
	}
	if !l.Deadline.IsZero() || !l.ServerExpiry.IsZero() {
		t.Errorf("Deadline %v, ServerExpiry %v after a suspend, want both zero", l.Deadline, l.ServerExpiry)
	}
	if l.ID != before.ID || !l.Renewed.Equal(before.Renewed) || l.SuspendedAtRenewal != before.SuspendedAtRenewal {
		t.Errorf("suspend changed the lease's identity: %+v -> %+v", before, l)
	}
	select {
	case <-changed:
	default:
		t.Error("detecting the suspend did not signal Changed")
	}
	again := s.Changed()
	for range 3 {
		s.Current()
	}
	select {
	case <-again:
		t.Error("Changed signalled again for the same suspend")
	default:
	}
	if n := strings.Count(logs.String(), "system suspend detected"); n != 1 {
		t.Errorf("suspend logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"system suspend detected; treating the fence as expired\" suspended=5s") {
		t.Errorf("log does not say WARN with the suspended time:\n%s", logs.String())
	}

	// The next renewal is sent after the resume: its answer proves the
	// lease alive since then.
	clk.Advance(500 * time.Millisecond)
	sent := clk.Now()
	if wait := s.step(ctx); wait != 499*time.Millisecond {
		t.Errorf("renewal after the resume: next in %v, want 500ms after the send", wait)
	}
	l = s.Current()
	if !l.Live(clk.Now()) {
		t.Fatalf("lease not live after a renewal sent after the resume: %+v", l)
	}
	if want := sent.Add(2500 * time.Millisecond); !l.Deadline.Equal(want) || l.SuspendedAtRenewal != 5*time.Second {
		t.Errorf("after the resume: deadline %v, suspended-at-renewal %v; want %v, 5s", l.Deadline, l.SuspendedAtRenewal, want)
	}
	if got := len(lc.sent()); got != 2 {
		t.Errorf("%d renewals, want 2", got)
	}

	// A second suspend is a new one: seen and logged again.
	clk.Suspend(2 * time.Second)
	if s.Current().Live(clk.Now()) {
		t.Error("lease live after a second suspend")
	}
	if n := strings.Count(logs.String(), "system suspend detected"); n != 2 {
		t.Errorf("two suspends logged %d times, want 2", n)
	}
}

// A grant or renewal sent before a suspend and answered after it cannot
// make the lease live: what it proves ends at the suspend. The session
// renews again at once, and that renewal does.
func TestSessionAnswerAcrossSuspendDoesNotRestore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grant bool // the straddling call is the grant, not a renewal
	}{
		{"renewal", false},
		{"grant", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, lc, clk := newScriptedSession(20*time.Millisecond, SessionConfig{})
			ctx := context.Background()
			if !tc.grant {
				s.step(ctx)
				clk.Advance(500 * time.Millisecond)
			}
			before := s.Current()
			lc.inFlight = func() { clk.Suspend(5 * time.Second) } // the request is out; the system sleeps
			if wait := s.step(ctx); wait != 0 {
				t.Errorf("after an answer across a suspend, next attempt in %v, want at once", wait)
			}
			lc.inFlight = nil
			l := s.Current()
			if l.Live(clk.Now()) {
				t.Fatalf("answer to a request sent before the suspend made the lease live: %+v", l)
			}
			if l.ID == 0 {
				t.Fatal("no lease ID after a successful grant")
			}
			if !tc.grant && !l.Renewed.Equal(before.Renewed) {
				t.Errorf("Renewed = %v, want the last renewal before the suspend (%v)", l.Renewed, before.Renewed)
			}

			sent := clk.Now()
			s.step(ctx)
			l = s.Current()
			if !l.Live(clk.Now()) || !l.Renewed.Equal(sent) {
				t.Errorf("renewal sent after the resume: %+v, want live, renewed at %v", l, sent)
			}
		})
	}
}

// The late-answer rule holds across the suspend check: an answer whose
// fence is earlier than the current one is ignored; but once a suspend has
// voided the fence, an answer sent after the resume sets one, even if
// earlier than the void one was.
func TestSessionLateAnswerNeverMovesFenceBack(t *testing.T) {
	for _, tc := range []struct {
		name      string
		suspend   time.Duration
		wantFence bool // the short answer's fence is taken
	}{
		{"live fence", 0, false},
		{"fence voided by a suspend", 5 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, lc, clk := newScriptedSession(time.Millisecond, SessionConfig{})
			ctx := context.Background()
			s.step(ctx) // grant: fence at t0+2.5s
			clk.Advance(500 * time.Millisecond)
			clk.Suspend(tc.suspend)
			lc.ttl = 1 // this answer's fence: sent+0.5s, before the grant's
			sent := clk.Now()
			s.step(ctx)
			l := s.Current()
			if tc.wantFence {
				if want := sent.Add(500 * time.Millisecond); !l.Deadline.Equal(want) {
					t.Errorf("deadline %v, want the new answer's %v", l.Deadline, want)
				}
				return
			}
			if want := t0.Add(2500 * time.Millisecond); !l.Deadline.Equal(want) {
				t.Errorf("deadline %v, want it kept at %v", l.Deadline, want)
			}
		})
	}
}

func TestSessionDefaultSuspendMeter(t *testing.T) {
	clk := clock.NewFake(t0)
	lc := &scriptedLeases{clk: clk, ttl: 3}
	s := NewSession(lc, clk, SessionConfig{TTL: 3 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if s.Config().SuspendMeter == nil {
		t.Fatal("no default SuspendMeter")
	}
	s.step(context.Background())
	if l := s.Current(); !l.Live(clk.Now()) {
		t.Errorf("lease not live with the system's meter and no suspend: %+v", l)
	}
}

// Current runs on every pass of every group loop.
func BenchmarkSessionCurrent(b *testing.B) {
	clk := clock.NewFake(t0)
	s := NewSession(&scriptedLeases{clk: clk, ttl: 3}, clk, SessionConfig{TTL: 3 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.step(context.Background())
	for b.Loop() {
		s.Current()
	}
}

// Issue 17: a re-executed vipd adopts the lease its previous image held.
// Nothing may rest on it before a renewal of its own succeeds (no fence
// from the predecessor is trusted); the renewal sets the fence from its
// own send time; a lease found gone is replaced, as always.
func TestSessionAdopt(t *testing.T) {
	s, lc, clk := newTestSession(10 * time.Millisecond)
	ctx := context.Background()
	s.Adopt(0x77)
	if l := s.Current(); l.ID != 0x77 || l.Live(clk.Now()) {
		t.Fatalf("adopted before any renewal: %+v, want ID 77 and no fence", l)
	}
	sent := clk.Now()
	s.step(ctx)
	if lc.grants != 0 {
		t.Errorf("adopting granted %d leases, want the adopted one renewed", lc.grants)
	}
	l := s.Current()
	if l.ID != 0x77 || !l.Live(clk.Now()) || !l.Renewed.Equal(sent) || !l.Deadline.Equal(sent.Add(3*time.Second-500*time.Millisecond)) {
		t.Errorf("after the first renewal: %+v, want lease 77 fenced from the send (%v)", l, sent)
	}

	s2, lc2, _ := newTestSession(10 * time.Millisecond)
	s2.Adopt(0x78)
	lc2.fail = rpctypes.ErrLeaseNotFound
	s2.step(ctx)
	lc2.fail = nil
	s2.step(ctx)
	if l := s2.Current(); l.ID == 0x78 || l.ID == 0 || lc2.grants != 1 {
		t.Errorf("adopted lease gone at the server: now %+v after %d grants, want a new lease", l, lc2.grants)
	}
}
