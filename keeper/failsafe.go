package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
)

// opPromise asks a peer to promise not to claim anything for a while
// (docs/design.md §2.9).
const opPromise = "promise"

type promiseRequest struct {
	// To is the member asked: a node answering at an endpoint recorded
	// for another refuses (the endpoint may have moved).
	To string `json:"to"`
	// Lease is the caller's lease: the peer first tries to renew it, to
	// see whether it can reach etcd itself.
	Lease int64 `json:"lease"`
	// Addrs are the addresses the caller holds under the failsafe.
	Addrs []netip.Addr `json:"addrs"`
}

type promiseReply struct {
	// Node is the member that answers.
	Node string `json:"node"`
	// Promised is how long, from the peer's receipt of the request, it
	// will claim none of the addresses (nanoseconds). Zero: refused.
	Promised time.Duration `json:"promised,omitempty"`
	// Refused says why not.
	Refused string `json:"refused,omitempty"`
	// Seq numbers the promise among the member's: an unpromise names the
	// latest it releases, so a late one cannot release a newer promise.
	Seq uint64 `json:"seq,omitempty"`
}

// opUnpromise tells a member that the caller no longer relies on its
// promises (its lease is renewed again): the member may claim those
// addresses at once, e.g. when the caller then releases them gracefully.
const opUnpromise = "unpromise"

type unpromiseRequest struct {
	Addrs []netip.Addr `json:"addrs"`
	// Seq is the latest promise released (promiseReply.Seq).
	Seq uint64 `json:"seq"`
}

// promise is one peer's promise as the holder counts it: the peer claims
// nothing before Until (the holder's send time plus the promise's length:
// the peer's own count starts later), unless a system suspend since
// Suspended (the SuspendMeter at the send) voids it.
type promise struct {
	Until     time.Time
	Suspended time.Duration
	// Addrs are the addresses it covers; Seq its number (promiseReply).
	Addrs map[netip.Addr]bool
	Seq   uint64
}

// failsafe is this node's part of the failsafe: the promises it gives, the
// acquires they forbid, and the promises it collects for the claims it
// holds. Promising is always on with the peer channel; holding on promises
// only with peer.failsafe.
type failsafe struct {
	node    string
	clk     clock.Clock
	log     *slog.Logger
	obs     Observer
	peers   *peers
	session *election.Session
	// length is how long a promise lasts: the lease TTL.
	length time.Duration
	// holds: this node holds its claims under promises when its lease
	// cannot be renewed (peer.failsafe).
	holds   bool
	margin  time.Duration
	suspend clock.SuspendMeter
	// poke wakes every group (promises changed).
	poke func(string)
	// file remembers the promises given across restarts ("" = not kept).
	file promiseFile

	mu sync.Mutex
	// startedUntil: this node claims nothing before it (it may have
	// promised before a restart); promised: each address it promised not
	// to claim, until when.
	startedUntil time.Time
	promised     map[netip.Addr]time.Time
	// promisedTo is the node each address was last promised to, in the
	// promise numbered promisedSeq; seq numbers the promises given.
	promisedTo  map[netip.Addr]string
	promisedSeq map[netip.Addr]uint64
	seq         uint64
	// acquiring are the addresses of each group with an acquire in
	// flight, or one whose answer was lost and is not yet resolved: no
	// promise on them while it is.
	acquiring map[string][]netip.Addr
	// claimed are the addresses this node has claims on, by group.
	claimed map[string][]netip.Addr
	// got is the latest promise from each peer, gotFrom the endpoint it
	// came from.
	got     map[string]promise
	gotFrom map[string]string
	// holding are the member sets (node -> endpoint) of the claims held,
	// by group: whom a promise round asks.
	holding map[string]map[string]string
	// claimLease is the lease of each group's claim.
	claimLease map[string]clientv3.LeaseID
	// lingering are the groups without a claim whose VIPs may still be up.
	lingering map[string]bool
}

func newFailsafe(node string, clk clock.Clock, log *slog.Logger, obs Observer, p *peers, s *election.Session, holds bool, poke func(string)) *failsafe {
	cfg := s.Config()
	return &failsafe{
		node: node, clk: clk, log: log, obs: obs, peers: p, session: s, length: cfg.TTL, holds: holds,
		margin: cfg.Margin, suspend: cfg.SuspendMeter, poke: poke,
		// A node that starts cannot remember the promises it gave before:
		// it waits out the longest one.
		startedUntil: clk.Now().Add(cfg.TTL), promised: map[netip.Addr]time.Time{}, promisedTo: map[netip.Addr]string{},
		promisedSeq: map[netip.Addr]uint64{},
		acquiring:   map[string][]netip.Addr{}, claimed: map[string][]netip.Addr{}, got: map[string]promise{},
		gotFrom: map[string]string{}, holding: map[string]map[string]string{}, claimLease: map[string]clientv3.LeaseID{},
		lingering: map[string]bool{},
	}
}

// PromisedUntil is when this node's latest promise not to claim any of
// addrs ends.
func (f *failsafe) PromisedUntil(addrs []netip.Addr) time.Time {
	if f == nil {
		return time.Time{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.promisedUntilLocked(addrs)
}

func (f *failsafe) promisedUntilLocked(addrs []netip.Addr) time.Time {
	t := f.startedUntil
	for _, a := range addrs {
		t = later(t, f.promised[a.Unmap()])
	}
	return t
}

// beginAcquire registers an acquire of group's addrs about to be sent,
// unless a promise forbids it now. Atomic with giving a promise: a promise
// is never given while an acquire of its addresses may be on its way.
func (f *failsafe) beginAcquire(group string, addrs []netip.Addr) bool {
	if f == nil {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clk.Now().Before(f.promisedUntilLocked(addrs)) {
		return false
	}
	f.acquiring[group] = addrs
	return true
}

// endAcquire records that group's acquire is resolved: answered, or a lost
// answer's outcome read back.
func (f *failsafe) endAcquire(group string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	delete(f.acquiring, group)
	f.mu.Unlock()
}

// setClaim records the addresses group has claimed (nil: none), and the
// member set a failsafe hold of the claim needs (nil: no failsafe hold).
//
// lingering says that group holds no claim but a VIP of its may still be
// on the host (a removal not yet confirmed): its lifetime may rest on
// promises, which are then not released early.
func (f *failsafe) setClaim(group string, addrs []netip.Addr, lease clientv3.LeaseID, members map[string]string, lingering bool) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if lingering {
		f.lingering[group] = true
	} else {
		delete(f.lingering, group)
	}
	if addrs == nil {
		delete(f.claimed, group)
		delete(f.claimLease, group)
	} else {
		f.claimed[group] = addrs
		f.claimLease[group] = lease
	}
	if members == nil || !f.holds {
		delete(f.holding, group)
	} else {
		f.holding[group] = members
	}
}

// Horizon is the time until which no member of members but this node may
// claim addrs, by the promises collected: the earliest of their ends. Zero
// if a member has given none covering addrs (or one voided by a suspend),
// or there is no other member: a failsafe needs every other member's
// promise, and at least one.
func (f *failsafe) Horizon(members map[string]string, addrs []netip.Addr) time.Time {
	if f == nil || !f.holds {
		return time.Time{}
	}
	meter := f.suspend()
	f.mu.Lock()
	defer f.mu.Unlock()
	return horizon(f.node, members, addrs, f.got, meter)
}

// horizon is Horizon's decision, pure: the earliest promise end of the
// members other than self, zero if one is missing, does not cover every
// address of addrs, or is voided by a suspend (the meter grew by more than
// suspendThreshold since its send), or if there is no other member, or no
// address: a promise is not to claim addresses, and nothing but an
// address's membership record keeps a node the holder never asked from
// claiming (docs/design.md §2.9).
func horizon(self string, members map[string]string, addrs []netip.Addr, got map[string]promise, meter time.Duration) time.Time {
	if len(addrs) == 0 {
		return time.Time{}
	}
	var h time.Time
	others := 0
	for m := range members {
		if m == self {
			continue
		}
		others++
		p, ok := got[m]
		if !ok || meter-p.Suspended > suspendThreshold {
			return time.Time{}
		}
		for _, a := range addrs {
			if !p.Addrs[a.Unmap()] {
				return time.Time{}
			}
		}
		if h.IsZero() || p.Until.Before(h) {
			h = p.Until
		}
	}
	if others == 0 {
		return time.Time{}
	}
	return h
}

// suspendThreshold: as election's (a suspend shorter than this is absorbed
// by the margin).
const suspendThreshold = 10 * time.Millisecond

// run collects promises while this node holds claims and its lease is not
// being renewed: a round every RenewEvery, each member asked at once. Once
// renewals cover every claim again it tells the members it no longer
// relies on their promises, so they need not wait them out.
func (f *failsafe) run(ctx context.Context) {
	cfg := f.session.Config()
	t := f.clk.NewTimer(cfg.RenewEvery)
	defer t.Stop()
	for {
		tick := false
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			tick = true
			t.Reset(cfg.RenewEvery)
		case <-f.session.Changed(): // a renewal: release at once
		}
		l := f.session.Current()
		now := f.clk.Now()
		// Renewals every RenewEvery: one missing (plus a hedge) means the
		// lease's fence may not move again soon.
		if l.ID != 0 && now.Sub(l.Renewed) < cfg.RenewEvery+cfg.HedgeAfter && l.Live(now) {
			f.release(ctx, l)
			continue
		}
		if tick {
			f.round(ctx, l.ID)
		}
	}
}

// release drops the promises collected, and tells their givers, once
// nothing relies on them: no VIP without a claim may linger, and every
// claim held is on lease l, which covers at least as long as the promises
// do (a kernel lifetime set on their horizon ends within the lease's
// guarantee); or no claim is held at all.
func (f *failsafe) release(ctx context.Context, l election.Lease) {
	f.mu.Lock()
	if !mayRelease(f.got, f.claimLease, len(f.lingering) > 0, l) {
		f.mu.Unlock()
		return
	}
	nodes := make([]string, 0, len(f.got))
	covered := map[string]unpromiseRequest{}
	for n, p := range f.got {
		nodes = append(nodes, n)
		r := unpromiseRequest{Seq: p.Seq}
		for a := range p.Addrs {
			r.Addrs = append(r.Addrs, a)
		}
		covered[n] = r
	}
	f.got = map[string]promise{}
	eps := map[string]string{}
	for n, ep := range f.gotFrom {
		eps[n] = ep
	}
	f.gotFrom = map[string]string{}
	f.mu.Unlock()
	f.log.Info("lease renewed again; releasing the peers' failsafe promises", "peers", nodes)
	var wg sync.WaitGroup
	for _, n := range nodes {
		if ep := eps[n]; ep != "" {
			wg.Go(func() {
				err := f.peers.client.Call(ctx, ep, opUnpromise, covered[n], nil)
				result := "ok"
				if err != nil {
					result = relayErrorLabel(err)
				}
				f.obs.PeerRelay(n, opUnpromise, result)
			})
		}
	}
	wg.Wait()
}

// mayRelease is release's decision, pure (see there).
func mayRelease(got map[string]promise, claimLease map[string]clientv3.LeaseID, lingering bool, l election.Lease) bool {
	if len(got) == 0 || lingering {
		return false
	}
	if len(claimLease) == 0 {
		return true
	}
	for _, cl := range claimLease {
		if cl != l.ID {
			return false // a claim on a lost lease: it still needs them (to claim anew)
		}
	}
	for _, p := range got {
		if l.ServerExpiry.Before(p.Until) {
			return false
		}
	}
	return true
}

// round asks every member of every held claim for a promise.
func (f *failsafe) round(ctx context.Context, lease clientv3.LeaseID) {
	f.mu.Lock()
	targets := map[string]string{}
	var addrs []netip.Addr
	for g, ms := range f.holding {
		for n, ep := range ms {
			if n != f.node {
				targets[n] = ep
			}
		}
		addrs = append(addrs, f.claimed[g]...)
	}
	f.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	covered := map[netip.Addr]bool{}
	for _, a := range addrs {
		covered[a.Unmap()] = true
	}
	var wg sync.WaitGroup
	changed := false
	var cmu sync.Mutex
	for n, ep := range targets {
		if ep == "" {
			continue // no peer channel: its promise cannot be had
		}
		wg.Go(func() {
			p := promise{Suspended: f.suspend(), Addrs: covered}
			sent := f.clk.Now()
			var r promiseReply
			err := f.peers.client.Call(ctx, ep, opPromise, promiseRequest{To: n, Lease: int64(lease), Addrs: addrs}, &r)
			result := "promised"
			switch {
			case err != nil:
				result = relayErrorLabel(err)
			case r.Node != n:
				result, err = "wrong_node", fmt.Errorf("keeper: %s answered at %s, the endpoint recorded for %s", r.Node, ep, n)
			case r.Promised <= 0:
				result = "refused"
			}
			f.obs.PeerRelay(n, opPromise, result)
			if err != nil || r.Promised <= 0 {
				f.log.Debug("no failsafe promise", "peer", n, "err", err, "refused", r.Refused)
				return
			}
			p.Until, p.Seq = sent.Add(min(r.Promised, f.length)), r.Seq
			f.mu.Lock()
			f.got[n], f.gotFrom[n] = p, ep
			f.mu.Unlock()
			cmu.Lock()
			changed = true
			cmu.Unlock()
		})
	}
	wg.Wait()
	if changed {
		f.poke("")
	}
}

// servePromise answers a peer's promise request: refused if this node can
// reach etcd (it renews the peer's lease instead: a relay), if an acquire
// of its own may be on its way, or if it claims one of the addresses;
// else it promises to claim nothing for the promise length.
func (f *failsafe) servePromise(ctx context.Context, from string, body json.RawMessage) (any, error) {
	var req promiseRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("keeper: promise: bad request: %w", err)
	}
	if req.To != f.node {
		f.obs.PeerServed(from, opPromise, "refused")
		return promiseReply{Node: f.node, Refused: fmt.Sprintf("this is %s, not %s", f.node, req.To)}, nil
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), f.peers.timeout)
	var err error
	if req.Lease != 0 {
		_, err = f.peers.leases.KeepAliveOnce(rctx, clientv3.LeaseID(req.Lease))
	} else {
		// No lease to renew (the caller's was found gone and it has no
		// new one yet): a linearizable read tells whether etcd answers.
		_, err = f.peers.kv.Get(rctx, f.peers.keys.All()+"failsafe-probe", clientv3.WithCountOnly())
	}
	cancel()
	switch {
	case err == nil:
		f.obs.PeerServed(from, opPromise, "refused")
		return promiseReply{Node: f.node, Refused: "this node reaches etcd"}, nil
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		f.obs.PeerServed(from, opPromise, "refused")
		return promiseReply{Node: f.node, Refused: "this node reaches etcd: your lease is gone"}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	overlap := func(as []netip.Addr) (netip.Addr, bool) {
		for _, a := range as {
			for _, b := range req.Addrs {
				if a.Unmap() == b.Unmap() {
					return a, true
				}
			}
		}
		return netip.Addr{}, false
	}
	for g, as := range f.acquiring {
		if a, ok := overlap(as); ok {
			f.obs.PeerServed(from, opPromise, "refused")
			return promiseReply{Node: f.node, Refused: fmt.Sprintf("an acquire of %s (group %s) by this node may still land", a, g)}, nil
		}
	}
	for g, as := range f.claimed {
		if a, ok := overlap(as); ok {
			f.obs.PeerServed(from, opPromise, "refused")
			return promiseReply{Node: f.node, Refused: fmt.Sprintf("this node claims %s for group %s", a, g)}, nil
		}
	}
	// Taken at once (no acquire of these addresses can start from here),
	// remembered on disk without the lock (every group pass takes it),
	// then given: a restart must honour it.
	now := f.clk.Now()
	until := now.Add(f.length)
	fresh := false
	f.seq++
	seq := f.seq
	for _, a := range req.Addrs {
		a = a.Unmap()
		if !now.Before(f.promised[a]) {
			fresh = true
		}
		f.promised[a] = later(f.promised[a], until)
		f.promisedTo[a], f.promisedSeq[a] = from, seq
	}
	f.mu.Unlock()
	err = f.file.save(f.length)
	f.mu.Lock()
	if err != nil {
		f.log.Error("cannot record a failsafe promise; refusing it", "peer", from, "err", err)
		f.obs.PeerServed(from, opPromise, "refused")
		return promiseReply{Node: f.node, Refused: "this node cannot record its promise"}, nil
	}
	if fresh {
		f.log.Warn("promised a peer's failsafe hold not to claim its addresses", "peer", from, "addresses", req.Addrs, "for", f.length)
	}
	f.obs.PeerServed(from, opPromise, "promised")
	return promiseReply{Node: f.node, Promised: f.length, Seq: seq}, nil
}

// serveUnpromise drops this node's promises on the caller's addresses: the
// caller no longer relies on them.
func (f *failsafe) serveUnpromise(_ context.Context, from string, body json.RawMessage) (any, error) {
	var req unpromiseRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("keeper: unpromise: bad request: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dropped := 0
	for _, a := range req.Addrs {
		a = a.Unmap()
		if f.promisedTo[a] == from && f.promisedSeq[a] <= req.Seq {
			delete(f.promised, a)
			delete(f.promisedTo, a)
			delete(f.promisedSeq, a)
			dropped++
		}
	}
	if dropped > 0 {
		f.log.Info("a peer no longer needs this node's failsafe promise", "peer", from, "addresses", req.Addrs)
		defer f.poke("") // groups waiting on the promise look again
	}
	f.obs.PeerServed(from, opUnpromise, "ok")
	return struct{}{}, nil
}

// membersOf is the member set a claim records: this node and every
// eligible candidate, with their endpoints. A candidate in FAULT or
// drained is left out: it may not claim while the record stands (so a
// failsafe hold need not ask it), and is added back when it is eligible
// again; keeping it in would let a node that stays down keep a returning
// one out after the holder dies.
func membersOf(self, endpoint string, cands []election.Candidate) map[string]string {
	m := map[string]string{self: endpoint}
	for _, c := range cands {
		if c.Eligible() {
			m[c.Node] = c.Peer
		}
	}
	return m
}

// unionMembers returns the union of member sets.
func unionMembers(sets ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, s := range sets {
		for n, ep := range s {
			if old, ok := out[n]; !ok || old == "" {
				out[n] = ep
			}
		}
	}
	return out
}

func memberNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
