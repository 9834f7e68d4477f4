package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
)

// LeaseClient is the part of clientv3.Lease a Session uses.
type LeaseClient interface {
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
	KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error)
	Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error)
}

// SessionConfig times the node lease.
type SessionConfig struct {
	// TTL is the lease TTL requested from etcd (whole seconds).
	TTL time.Duration
	// Margin is subtracted from TTL to get the fence deadline.
	// Zero value: TTL/6, at least 100ms.
	Margin time.Duration
	// RenewEvery is the period between the sends of successful renewals
	// (counted from the send, not the answer: the fence and the VIP's
	// kernel lifetime count from the send). Zero value: TTL/6 (500ms for
	// 3s), so the last good renewal before an etcd outage is recent and
	// the holder rides through a leader election.
	RenewEvery time.Duration
	// RequestTimeout bounds one Grant or KeepAliveOnce, so a stuck etcd
	// member is abandoned for another endpoint quickly.
	RequestTimeout time.Duration
	// RetryEvery is the wait after a failed renewal before the next try.
	// While the member answers "no leader" the wait doubles up to
	// 2×RetryEvery (see failWait). Zero value: 100ms.
	RetryEvery time.Duration
	// HedgeAfter is how long a renewal may go unanswered before another
	// attempt is sent beside it. Zero value: 150ms.
	HedgeAfter time.Duration
	// RelayAfter is how long a renewal may go unanswered before peers are
	// asked to renew the lease too (Session.Relay), unless an attempt
	// failed first. Longer than HedgeAfter: a merely slow etcd should not
	// get every peer's renewal on top of the node's own. Zero value: half
	// of RequestTimeout or of RenewEvery, whichever is less, at least
	// HedgeAfter (250ms with the defaults).
	RelayAfter time.Duration
	// SuspendMeter reports how long the system has been suspended, to see
	// the fence slip through a suspend (see Session.Current). Zero value:
	// clock.BootSuspend(), the system's own; tests pass (*clock.Fake).Suspended.
	SuspendMeter clock.SuspendMeter
}

func (c SessionConfig) withDefaults() SessionConfig {
	if c.Margin == 0 {
		c.Margin = max(c.TTL/6, 100*time.Millisecond)
	}
	if c.RenewEvery == 0 {
		c.RenewEvery = c.TTL / 6
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 500 * time.Millisecond
	}
	if c.RetryEvery == 0 {
		c.RetryEvery = 100 * time.Millisecond
	}
	if c.HedgeAfter == 0 {
		c.HedgeAfter = 150 * time.Millisecond
	}
	if c.RelayAfter == 0 {
		c.RelayAfter = max(min(c.RequestTimeout/2, c.RenewEvery/2), c.HedgeAfter)
	}
	if c.SuspendMeter == nil {
		c.SuspendMeter = clock.BootSuspend()
	}
	return c
}

// Lease is the node's lease as last known. ID 0 means no lease.
type Lease struct {
	ID clientv3.LeaseID
	// Deadline is the fence: holding anything on this lease is allowed only
	// before it. Zero when a system suspend voided it (see Session.Current).
	Deadline time.Time
	// Renewed is when the last successful renewal (or grant) was sent.
	Renewed time.Time
	// ServerExpiry is the earliest time the server may expire the lease:
	// Renewed + TTL. Kernel lifetimes are bounded by it. Zero with
	// Deadline after a suspend.
	ServerExpiry time.Time
	// SuspendedAtRenewal is the SuspendMeter's reading when the renewal (or
	// grant) that set Deadline was sent. Current compares it with the meter
	// now; see there.
	SuspendedAtRenewal time.Duration
	// Relayed: the renewal that set Deadline was made by a peer on this
	// node's behalf; this node's own connection to etcd is failing.
	Relayed bool
	// Failsafe: Deadline and ServerExpiry come from peers' promises not to
	// claim (a failsafe hold, docs/design.md §2.9), not from a renewal:
	// the lease itself may have expired at the server. Set by the keeper,
	// per claim; the session never sets it.
	Failsafe bool
}

// Live reports whether the lease may be relied on at now.
func (l Lease) Live(now time.Time) bool { return l.ID != 0 && now.Before(l.Deadline) }

// RenewResult labels the outcome of one renewal attempt, for metrics.
type RenewResult string

// Renewal outcomes.
const (
	RenewOK       RenewResult = "ok"
	RenewFailed   RenewResult = "error"
	RenewLost     RenewResult = "lost" // lease not found: expired at the server
	RenewGranted  RenewResult = "granted"
	RenewGrantErr RenewResult = "grant_error"
	RenewRelayed  RenewResult = "relayed" // renewed by a peer on this node's behalf
)

// RelayFunc asks peers to renew lease id on this node's behalf (a lease
// keepalive needs only the ID). It answers as KeepAliveOnce would: the
// response of the peer's renewal, or an error wrapping
// rpctypes.ErrLeaseNotFound when a peer found the lease gone. A peer never
// renews a lease on its own initiative.
type RelayFunc func(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error)

// Session keeps one etcd lease for the node alive with synchronous
// KeepAliveOnce calls and tracks its fence deadline. All of a node's groups
// share it.
type Session struct {
	lc  LeaseClient
	clk clock.Clock
	cfg SessionConfig
	log *slog.Logger
	// OnRenew, if set, is called after every attempt (for metrics).
	OnRenew func(RenewResult, time.Duration)
	// Relay, if set, asks peers to renew the lease when this node's own
	// renewals fail (see renew). Set before Run.
	Relay RelayFunc

	// noLeaderRun counts the attempts in a row that failed with "no
	// leader"; it paces the retries. failedRun counts the failed renewals
	// since the last good one, for the recovery log line. Only the Run
	// goroutine (step) uses them.
	noLeaderRun, failedRun int
	// relayedLast: the last good renewal came through a peer, so the next
	// round asks the peers at once. Only the Run goroutine uses it.
	relayedLast bool
	// adopted: the lease came from Adopt and has not been renewed yet
	// (set before Run, then only the Run goroutine uses it).
	adopted bool

	mu      sync.Mutex
	lease   Lease
	changed chan struct{}
	// suspendMark is the meter's reading when a suspend was last reported,
	// so each one is logged (and signalled) once.
	suspendMark time.Duration
}

// NewSession returns a session; Run starts it.
func NewSession(lc LeaseClient, clk clock.Clock, cfg SessionConfig, log *slog.Logger) *Session {
	return &Session{lc: lc, clk: clk, cfg: cfg.withDefaults(), log: log, changed: make(chan struct{})}
}

// Adopt makes the session start from lease id, which this node's previous
// vipd image held when it re-executed in place (docs/design.md §2.10),
// instead of granting a new one. Nothing may rest on it until a renewal of
// this session's succeeds: until then it has no fence (no deadline from
// the previous image is trusted). A lease found gone at the server is
// replaced, as always. Call before Run.
func (s *Session) Adopt(id clientv3.LeaseID) {
	s.set(Lease{ID: id, SuspendedAtRenewal: s.cfg.SuspendMeter()})
	s.adopted = true
}

// Config returns the effective timing.
func (s *Session) Config() SessionConfig { return s.cfg }

// Current returns the lease as last known, with its fence voided if the
// system has been suspended since the renewal that set it.
//
// A suspend stops CLOCK_MONOTONIC, which Go's monotonic clock and so the
// fence use, and the kernel's jiffies, which time a VIP's kernel lifetime,
// while the etcd server's clock runs on. After a resume the fence would
// look live although the server may have expired the lease meanwhile and a
// peer may hold the VIP. The SuspendMeter tells: when it has grown by more
// than suspendThreshold since the renewal was sent (Lease.SuspendedAtRenewal),
// Current returns the lease with Deadline and ServerExpiry zero, so Live is
// false and no kernel lifetime is computed from it; ID and Renewed are kept
// (the lease may well be alive: the next renewal finds out). A renewal sent
// after the resume that succeeds proves the lease alive since then and
// gives a fresh deadline as usual; an answer to one sent before the suspend
// proves nothing about the time after it, and its reading (taken at its
// send time) keeps it void. The first Current to see a suspend logs it and
// closes the Changed channel, so that loops waiting on it look again.
//
// Current is called on every pass of every group loop: it costs a mutex
// and one meter reading (two clock_gettime system calls; under a
// microsecond in all, see BenchmarkSessionCurrent).
func (s *Session) Current() Lease {
	// Read the meter before taking the lock: a reading older than the
	// stored lease can only understate the growth since its renewal.
	m := s.cfg.SuspendMeter()
	s.mu.Lock()
	l := s.lease
	var newly time.Duration
	if l.ID != 0 && m-l.SuspendedAtRenewal > suspendThreshold {
		l.Deadline, l.ServerExpiry = time.Time{}, time.Time{}
		if d := m - max(l.SuspendedAtRenewal, s.suspendMark); d > suspendThreshold {
			newly, s.suspendMark = d, m
			s.signalLocked()
		}
	}
	s.mu.Unlock()
	if newly > 0 {
		s.log.Warn("system suspend detected; treating the fence as expired",
			"suspended", newly.Round(time.Millisecond), "lease", fmt.Sprintf("%x", int64(l.ID)))
	}
	return l
}

// suspendThreshold is how much the SuspendMeter may grow since a renewal
// before the renewal's fence is void. Without a suspend the meter grows
// only by the jitter of its reads: BootSuspend's two clock reads are
// microseconds apart, a reading can fall short of the truth by that gap
// and never overshoot it, a read slower than 100 µs (the thread was
// preempted between the two) is retried, and readings never decrease.
// Suspends last seconds. 10 ms is a hundred times that jitter, and small
// beside the margin (at least 100 ms, 500 ms with a 3 s TTL): a suspend
// too short to be seen moves the fence by less than 10 ms, which the
// margin absorbs.
const suspendThreshold = 10 * time.Millisecond

// suspendedSince reports whether the system has been suspended since the
// meter read reading.
func (s *Session) suspendedSince(reading time.Duration) bool {
	return s.cfg.SuspendMeter()-reading > suspendThreshold
}

// Changed returns a channel closed at the next change of the lease (new ID
// or new deadline, or a fence voided by a suspend). Call it again after it
// fires.
func (s *Session) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Session) set(l Lease) {
	s.mu.Lock()
	s.lease = l
	s.signalLocked()
	s.mu.Unlock()
}

func (s *Session) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Run grants and renews the lease until ctx is done. It never gives up:
// failures are logged and retried; a lease that expired at the server is
// replaced by a new one (and everything held on the old one is void, since
// holders compare lease IDs).
func (s *Session) Run(ctx context.Context) {
	timer := s.clk.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
		timer.Reset(s.step(ctx))
	}
}

// step makes one grant or renewal attempt and returns the wait before the
// next one.
func (s *Session) step(ctx context.Context) time.Duration {
	cur := s.Current() // also sees a suspend first, and wakes the waiters
	ttlSecs := int64(s.cfg.TTL / time.Second)
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), s.cfg.RequestTimeout)
	defer cancel()

	if cur.ID == 0 {
		suspended, sent := s.cfg.SuspendMeter(), s.clk.Now()
		resp, err := s.lc.Grant(rctx, ttlSecs)
		s.report(RenewGrantErr, RenewGranted, err, sent)
		if err != nil {
			wait := s.failWait(err)
			if ctx.Err() == nil {
				s.log.Warn("lease grant failed", "err", err, "retry_in", wait)
			}
			return wait
		}
		s.noLeaderRun = 0
		ttl := min(time.Duration(resp.TTL)*time.Second, s.cfg.TTL)
		l := Lease{ID: resp.ID, Renewed: sent, Deadline: FenceDeadline(sent, ttl, s.cfg.Margin), ServerExpiry: sent.Add(ttl),
			SuspendedAtRenewal: suspended}
		s.set(l)
		s.log.Info("lease granted", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", ttl)
		if s.suspendedSince(suspended) {
			// Granted across a suspend: the lease is ours but its fence is
			// void (Current sees to that). Renew at once for a fresh one.
			s.Current()
			return 0
		}
		return s.nextAfter(sent)
	}

	a := s.renew(ctx, cur.ID)
	resp, sent, err := a.resp, a.sent, a.err
	switch {
	case err == nil:
		s.noLeaderRun = 0
		ok := RenewOK
		if a.relayed {
			ok = RenewRelayed
		}
		s.report(RenewFailed, ok, nil, sent)
		if a.relayed != s.relayedLast {
			if a.relayed {
				s.log.Warn("lease renewed through a peer; this node's own etcd requests fail", "lease", fmt.Sprintf("%x", int64(cur.ID)))
			} else {
				s.log.Info("lease renewed directly again", "lease", fmt.Sprintf("%x", int64(cur.ID)))
			}
			s.relayedLast = a.relayed
		}
		if s.suspendedSince(a.suspended) {
			// Sent before a suspend, answered after it: it says nothing
			// about the lease after the resume. Do not store it (its fence
			// would be void anyway); renew at once instead.
			s.Current() // reports the suspend if nothing has yet
			s.log.Info("renewal answer straddled a system suspend; renewing again", "lease", fmt.Sprintf("%x", int64(cur.ID)))
			return 0
		}
		ttl := min(time.Duration(resp.TTL)*time.Second, s.cfg.TTL)
		deadline := FenceDeadline(sent, ttl, s.cfg.Margin)
		// A late answer to an old request must never move the fence back.
		// cur is the fence as Current gave it: zero if a suspend voided it,
		// and then any answer sent after the resume (this one, as the
		// check above shows) may set a fresh one.
		if deadline.Before(cur.Deadline) {
			return s.nextAfter(cur.Renewed)
		}
		s.set(Lease{ID: cur.ID, Renewed: sent, Deadline: deadline, ServerExpiry: sent.Add(ttl), SuspendedAtRenewal: a.suspended,
			Relayed: a.relayed})
		if s.adopted {
			s.adopted = false
			s.log.Info("lease adopted from the previous vipd image: renewed", "lease", fmt.Sprintf("%x", int64(cur.ID)))
		} else if gap := sent.Sub(cur.Renewed); s.failedRun > 0 || gap >= 2*s.cfg.RenewEvery {
			// The gap is what an etcd election cost the holder, whether
			// rounds failed or one round's attempt hung until the new
			// leader answered: compare it with the ride-through budget
			// (design §3).
			s.log.Info("lease renewed again", "lease", fmt.Sprintf("%x", int64(cur.ID)), "failures", s.failedRun,
				"gap", gap.Round(time.Millisecond))
			s.failedRun = 0
		}
		return s.nextAfter(sent)
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		s.noLeaderRun = 0
		s.report(RenewLost, RenewLost, err, sent)
		s.log.Warn("lease expired at the server; granting a new one", "lease", fmt.Sprintf("%x", int64(cur.ID)))
		s.set(Lease{})
		s.failedRun, s.relayedLast, s.adopted = 0, false, false
		return 0
	default:
		s.report(RenewFailed, RenewOK, err, sent)
		s.failedRun++
		wait := s.failWait(err)
		if ctx.Err() == nil {
			s.log.Warn("lease renewal failed", "lease", fmt.Sprintf("%x", int64(cur.ID)),
				"err", err, "fence_in", max(cur.Deadline.Sub(s.clk.Now()), 0).Round(time.Millisecond), "retry_in", wait)
		}
		return wait
	}
}

// nextAfter is the wait before the renewal that follows a good one sent at
// sent: RenewEvery after that send, at once if the answer took longer.
// Pacing from the answer would let a slow round trip age the last good
// renewal before an outage by RenewEvery plus the round trip, and the
// holder's ride-through budget runs from that send.
func (s *Session) nextAfter(sent time.Time) time.Duration {
	return max(s.cfg.RenewEvery-s.clk.Now().Sub(sent), 0)
}

// failWait returns the wait before the next attempt after a failed one.
//
// A member that lost its leader answers a request carrying
// WithRequireLeader at once with "no leader", so retrying every RetryEvery
// would be a tight loop of instantly failing requests against a cluster
// busy electing. While that is the answer, the wait doubles from RetryEvery
// up to noLeaderMaxWaits×RetryEvery (100, 200, 200… ms with the defaults).
// The cap is small on purpose: a holder's VIP outlives its last good
// renewal's send by only about 1.8 s at lease_ttl 3s (the last safe kernel
// lifetime; the fence is at 2.5 s), an election of 0.5–0.9 s eats half of
// that, and the holder must renew at the first moment a leader exists
// again; the last wait of the backoff is paid after the election ends.
// Any other error (a timeout, a broken connection: a stuck or unreachable
// member, not a quick "no") resets the pace to RetryEvery, as does a
// success.
func (s *Session) failWait(err error) time.Duration {
	if !isNoLeader(err) {
		s.noLeaderRun = 0
		return s.cfg.RetryEvery
	}
	wait := s.cfg.RetryEvery
	for range s.noLeaderRun {
		wait = min(2*wait, noLeaderMaxWaits*s.cfg.RetryEvery)
	}
	s.noLeaderRun = min(s.noLeaderRun+1, noLeaderMaxWaits) // enough doublings to reach the cap
	return wait
}

// noLeaderMaxWaits caps the no-leader backoff at this many RetryEvery.
const noLeaderMaxWaits = 2

// isNoLeader reports whether err is a member's "no leader" answer. The
// client turns the gRPC status into rpctypes.ErrNoLeader (an EtcdError,
// through rpctypes.Error in clientv3.ContextError); a status error that
// was not converted (rpctypes.ErrGRPCNoLeader, or the same status off the
// wire, which status errors match by code and message) counts too, wrapped
// or not.
func isNoLeader(err error) bool {
	return errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrGRPCNoLeader)
}

func (s *Session) report(onErr, onOK RenewResult, err error, sent time.Time) {
	if s.OnRenew == nil {
		return
	}
	r := onOK
	if err != nil {
		r = onErr
	}
	s.OnRenew(r, s.clk.Now().Sub(sent))
}

// renew sends KeepAliveOnce for id and hedges: while no answer has come,
// it starts another attempt every HedgeAfter (up to maxAttempts in
// flight), each with its own send time and RequestTimeout. An attempt
// stuck on an unreachable member, or on one that has not yet noticed that
// its leader is gone (its request waits until the timeout), then no longer
// costs the holder a whole timeout of its fence budget. The first success
// wins and is dated by its own send time (and suspend reading).
//
// With a Relay, the round also asks peers to renew the lease (design
// §2.8): at once if the previous good renewal came through a peer (this
// node's own path is known broken), else as soon as an own attempt fails
// or the round goes unanswered for RelayAfter (longer than HedgeAfter: a
// merely slow etcd is not sent the peers' renewals too). One relayed
// attempt per round. Its
// send time is when this node sent the request to the peers: the peer's
// keepalive leaves after it, so the server renewed at or after it.
//
// Hedging is for stuck requests only. An attempt that fails fast ends the
// round if nothing else is in flight; but a "no leader" answer ends the
// round even while an earlier own attempt is still stuck: otherwise the
// round would go on hedging (a third attempt HedgeAfter later, against a
// cluster that just said it cannot serve) instead of leaving the pace to
// step's no-leader backoff. Only a relayed attempt in flight is still
// waited for: this node's member may have lost its leader while the
// peers' members have one. The stuck attempts are cancelled; the next
// round sends a fresh one, which is no worse: a later send gives a later
// fence. Otherwise the last own error is returned (it paces the retries),
// or the relay's if it said the lease is gone.
func (s *Session) renew(ctx context.Context, id clientv3.LeaseID) attempt {
	actx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel() // ends attempts still in flight
	results := make(chan attempt, maxAttempts+1)
	// Both readings are taken before the request leaves: a suspend after
	// them is seen by the meter, and one before them delays the send,
	// which only makes the server renew later than sent says.
	stamp := func(relayed bool) attempt {
		return attempt{suspended: s.cfg.SuspendMeter(), sent: s.clk.Now(), relayed: relayed}
	}
	launch := func() {
		a := stamp(false)
		go func() {
			rctx, done := context.WithTimeout(actx, s.cfg.RequestTimeout)
			defer done()
			a.resp, a.err = s.lc.KeepAliveOnce(rctx, id)
			results <- a
		}()
	}
	relay := s.Relay
	relaying := false
	launchRelay := func() bool {
		if relay == nil || relaying {
			return false
		}
		relaying = true
		a := stamp(true)
		go func() {
			// The peer's own request has RequestTimeout; allow it that
			// and the way there and back.
			rctx, done := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout)
			defer done()
			a.resp, a.err = relay(rctx, id)
			results <- a
		}()
		return true
	}
	launch()
	launched, pending := 1, 1
	if s.relayedLast && launchRelay() {
		pending++
	}
	relayPending := relaying
	hedge := s.clk.NewTimer(s.cfg.HedgeAfter)
	defer hedge.Stop()
	var relayAfter <-chan time.Time
	if relay != nil && !relaying {
		rt := s.clk.NewTimer(s.cfg.RelayAfter)
		defer rt.Stop()
		relayAfter = rt.C()
	}
	var last, relayLast attempt
	noLeader := false
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil || errors.Is(r.err, rpctypes.ErrLeaseNotFound) {
				return r
			}
			if r.relayed {
				relayPending, relayLast = false, r
			} else {
				last = r
				noLeader = noLeader || isNoLeader(r.err)
				if launchRelay() {
					pending++
					relayPending = true
				}
			}
			if noLeader && !relayPending {
				return last
			}
		case <-hedge.C():
			if !noLeader && launched < maxAttempts {
				launch()
				launched++
				pending++
			}
			if launched < maxAttempts {
				hedge.Reset(s.cfg.HedgeAfter)
			}
		case <-relayAfter:
			relayAfter = nil
			if launchRelay() {
				pending++
				relayPending = true
			}
		case <-ctx.Done():
			return attempt{sent: s.clk.Now(), err: ctx.Err()}
		}
	}
	if last.err == nil {
		return relayLast
	}
	return last
}

// attempt is one KeepAliveOnce: its answer, and when it was sent by the
// clock and by the SuspendMeter.
type attempt struct {
	resp      *clientv3.LeaseKeepAliveResponse
	sent      time.Time
	suspended time.Duration
	err       error
	// relayed: sent through peers (Session.Relay), not this node's own
	// connection.
	relayed bool
}

// maxAttempts bounds the renewal attempts in flight at once.
const maxAttempts = 3

// Revoke gives the lease back so every key on it (leader keys, candidate
// records) disappears at once. Used on graceful shutdown after the VIPs are
// removed.
func (s *Session) Revoke(ctx context.Context) error {
	cur := s.Current()
	if cur.ID == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	_, err := s.lc.Revoke(rctx, cur.ID)
	s.set(Lease{})
	if err != nil {
		return fmt.Errorf("election: revoke lease %x: %w", int64(cur.ID), err)
	}
	return nil
}
