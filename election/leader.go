package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is proof of having created a group's leader key and the claim keys
// of its addresses, all in one transaction: the revision that created them
// and the lease they were created on. A claim is void as soon as the node's
// lease changes or any of its keys is seen with another CreateRevision.
type Claim struct {
	Group     string
	CreateRev int64
	Lease     clientv3.LeaseID
	// Addrs are the addresses whose claim keys were created with the
	// leader key: the VIPs this claim allows the node to bind.
	Addrs []netip.Addr
}

// Covers reports whether the claim allows binding exactly addrs, in any
// order.
func (c Claim) Covers(addrs []netip.Addr) bool {
	if len(c.Addrs) != len(addrs) {
		return false
	}
	a, b := slices.Clone(c.Addrs), slices.Clone(addrs)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}

// AddressClaim is an address claim key as stored (JSON value) and seen
// (metadata). The zero value means "unclaimed".
type AddressClaim struct {
	Node  string `json:"node"`
	Group string `json:"group"`
	// CreateRev and Lease come from the key's metadata.
	CreateRev int64            `json:"-"`
	Lease     clientv3.LeaseID `json:"-"`
}

// Present reports whether the address is claimed.
func (a AddressClaim) Present() bool { return a.CreateRev != 0 }

// Ownership is what etcd holds for one group and its addresses, read in
// one linearizable request by Inspect.
type Ownership struct {
	Leader LeaderInfo
	// Addrs[i] is the claim of the i-th inspected address.
	Addrs []AddressClaim
	// Rev is the store revision the read saw.
	Rev int64
}

// ClaimOf interprets o for node on lease: the claim this node holds on the
// group, if any. complete is true when the leader key and every address
// key are this node's, on lease, from one transaction: the node may hold
// the group. found is true when at least one key created with the leader
// key's revision is this node's on lease: then, if not complete, the node
// must delete what is left (Resign) before it may campaign again, or it
// would leave keys on a live lease that no one is using.
func (o Ownership) ClaimOf(group, node string, lease clientv3.LeaseID, addrs []netip.Addr) (c Claim, complete, found bool) {
	l := o.Leader
	ours := l.Present && l.Node == node && l.Lease == lease && lease != 0
	rev := l.CreateRev
	complete = ours && len(o.Addrs) == len(addrs)
	for _, a := range o.Addrs {
		mine := a.Present() && a.Node == node && a.Group == group && a.Lease == lease && lease != 0
		if !ours && mine {
			// The leader key is gone or not ours, but an address key of
			// ours survived it (deleted by hand, say): its revision is
			// the claim's.
			ours, rev = true, a.CreateRev
		}
		if !mine || a.CreateRev != rev {
			complete = false
		}
	}
	if !ours {
		return Claim{}, false, false
	}
	return Claim{Group: group, CreateRev: rev, Lease: lease, Addrs: slices.Clone(addrs)}, complete, true
}

// Leadership performs the per-group etcd writes of one node. Writes go
// through Batch, so many groups' writes share requests; reads use KV.
type Leadership struct {
	KV             clientv3.KV
	Batch          *Batcher
	Keys           Keys
	Node           string
	RequestTimeout time.Duration
	// Fallback, if set, carries a resign or unpublish that failed through
	// Batch (a second connection, the lease's): a node whose group
	// connection is broken while its lease is renewed must still be able
	// to delete its keys, or they would block the group for good.
	Fallback clientv3.KV
	// Relay, if set, carries a resign or a candidate record write through
	// a peer when this node's own requests fail; PreferRelay says when to
	// try it first (the lease itself is renewed only through peers).
	Relay       Relayer
	PreferRelay func() bool
}

// withFallback sends ops through the fallback connection after err.
func (l *Leadership) withFallback(ctx context.Context, err error, cmps []clientv3.Cmp, then []clientv3.Op) error {
	if err == nil || l.Fallback == nil || ctx.Err() != nil {
		return err
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	if _, ferr := l.Fallback.Txn(rctx).If(cmps...).Then(then...).Commit(); ferr != nil {
		return errors.Join(err, ferr)
	}
	return nil
}

func (l *Leadership) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(parent), l.RequestTimeout)
}

// AcquireResult is the outcome of an Acquire that reached etcd.
type AcquireResult struct {
	Won   bool
	Claim Claim
	// Holder says who is in the way when Won is false: the leader key's
	// node, or an address claimed by another group or node.
	Holder string
}

// Acquire creates the group's leader key and the claim key of every
// address on lease if, and only if, all of them are absent. A lost answer
// (err != nil) leaves the outcome unknown: the keys may exist; Inspect
// tells.
//
// The same transaction writes each address's membership record (members;
// nil deletes it), if the record is still the one the caller saw (seen,
// by address: its ModRevision, 0 for none). The caller has checked that
// the record it saw admits this node (Members.Admits); the guard makes
// sure that is still the record (docs/design.md §2.9).
func (l *Leadership) Acquire(ctx context.Context, group string, addrs []netip.Addr, lease clientv3.LeaseID,
	members map[string]string, seen map[netip.Addr]int64) (AcquireResult, error) {
	if lease == 0 {
		return AcquireResult{}, fmt.Errorf("election: acquire %s: no lease", group)
	}
	leader := l.Keys.Leader(group)
	val, err := json.Marshal(AddressClaim{Node: l.Node, Group: group})
	if err != nil {
		return AcquireResult{}, fmt.Errorf("election: acquire %s: %w", group, err)
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(leader), "=", 0)}
	then := []clientv3.Op{clientv3.OpPut(leader, l.Node, clientv3.WithLease(lease))}
	els := []clientv3.Op{clientv3.OpGet(leader)}
	for _, a := range addrs {
		k := l.Keys.Address(a)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		then = append(then, clientv3.OpPut(k, string(val), clientv3.WithLease(lease)))
		els = append(els, clientv3.OpGet(k))
	}
	mcmps, mops, err := l.Keys.membersOps(addrs, members, seen)
	if err != nil {
		return AcquireResult{}, fmt.Errorf("election: acquire %s: %w", group, err)
	}
	cmps, then = append(cmps, mcmps...), append(then, mops...)
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.Batch.Txn(rctx, cmps, then, els)
	if err != nil {
		return AcquireResult{}, fmt.Errorf("election: acquire %s: %w", group, err)
	}
	if resp.Succeeded {
		return AcquireResult{Won: true, Claim: Claim{Group: group, CreateRev: resp.Revision, Lease: lease, Addrs: slices.Clone(addrs)}, Holder: l.Node}, nil
	}
	var in []string
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		in = append(in, string(kvs[0].Value))
	}
	for i, a := range addrs {
		if kvs := resp.Responses[i+1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			c := parseAddressClaim(kvs[0])
			in = append(in, fmt.Sprintf("address %v claimed by %s for group %s", a, c.Node, c.Group))
		}
	}
	return AcquireResult{Holder: strings.Join(in, "; ")}, nil
}

// Released records a graceful release: the claim (by its CreateRev) whose
// holder removed its VIPs and then deleted its keys. A peer that sees a
// group vacated this way need not wait out the kernel expiry lag of the
// old holder's VIPs (see keeper.ExpiryGrace).
type Released struct {
	Node      string `json:"node"`
	CreateRev int64  `json:"create_rev"`
}

// Resign deletes every key of c that is still the one c created (leader
// key and address keys, each guarded by its CreateRevision). With graceful
// it also records the release (Released) with the leader key's delete: the
// caller has confirmed its VIPs gone, and no earlier claim's VIP can be
// left either (the caller's VIPs were bound under c only once the claim
// before it was safely over, or c never bound and the claim before it
// ended gracefully). Otherwise, a claim never bound must not be recorded:
// its predecessor's VIP may still be on its way out. Callers
// remove the VIPs first. Success means no key of c remains, whether this
// call deleted it or it was already gone; the guards make a retry, or a
// late duplicate, harmless.
func (l *Leadership) Resign(ctx context.Context, c Claim, graceful bool) error {
	then, err := l.Keys.ResignOps(l.Node, c, graceful)
	if err != nil {
		return err
	}
	var relayErr error
	if l.preferRelay() {
		if relayErr = l.Relay.RelayResign(ctx, c, graceful); relayErr == nil {
			return nil
		}
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	_, err = l.Batch.Txn(rctx, nil, then, nil)
	err = l.withFallback(ctx, err, nil, then)
	if err != nil && l.Relay != nil && relayErr == nil && ctx.Err() == nil {
		relayErr = l.Relay.RelayResign(ctx, c, graceful)
		if relayErr == nil {
			return nil
		}
	}
	if err != nil {
		err = errors.Join(err, relayErr)
	}
	if err != nil {
		return fmt.Errorf("election: resign %s: %w", c.Group, err)
	}
	return nil
}

// ResignOps are the operations of node's resign of c (see
// Leadership.Resign): one guarded delete per key, and with graceful the
// release record beside the leader key's delete. A peer relaying the
// resign (docs/design.md §2.8) sends exactly these.
func (k Keys) ResignOps(node string, c Claim, graceful bool) ([]clientv3.Op, error) {
	mark, err := json.Marshal(Released{Node: node, CreateRev: c.CreateRev})
	if err != nil {
		return nil, fmt.Errorf("election: resign %s: %w", c.Group, err)
	}
	leader := k.Leader(c.Group)
	guard := func(key string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(key), "=", c.CreateRev) }
	onLeader := []clientv3.Op{clientv3.OpDelete(leader)}
	if graceful {
		onLeader = append(onLeader, clientv3.OpPut(k.Released(c.Group), string(mark)))
	}
	then := []clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{guard(leader)}, onLeader, nil)}
	for _, a := range c.Addrs {
		// The membership record goes with the claim: the VIPs are gone, so
		// no failsafe hold can rely on it, and any node may claim next.
		key := k.Address(a)
		then = append(then, clientv3.OpTxn([]clientv3.Cmp{guard(key)}, []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(k.Members(a))}, nil))
	}
	return then, nil
}

// Relayer carries a node's resign or candidate record write through a
// peer, when the node cannot reach etcd itself but its lease is renewed
// through peers (docs/design.md §2.8). The writes are the node's own,
// guarded as always, so a relayed write that lands late, or twice, is
// harmless.
type Relayer interface {
	RelayResign(ctx context.Context, c Claim, graceful bool) error
	RelayPublish(ctx context.Context, group string, c Candidate, lease clientv3.LeaseID, expectModRev int64) (PublishResult, error)
}

// preferRelay: the node's lease is renewed only through peers, so its own
// requests would only time out first.
func (l *Leadership) preferRelay() bool {
	return l.Relay != nil && l.PreferRelay != nil && l.PreferRelay()
}

func (l *Leadership) addressKeys(addrs []netip.Addr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, l.Keys.Address(a))
	}
	return out
}

// Inspect reads the group's leader key and the claim keys of addrs
// linearizably, in one request. Used to resolve what a stall or a lost
// answer left uncertain (see Ownership.ClaimOf).
func (l *Leadership) Inspect(ctx context.Context, group string, addrs []netip.Addr) (Ownership, error) {
	ops := []clientv3.Op{clientv3.OpGet(l.Keys.Leader(group))}
	for _, k := range l.addressKeys(addrs) {
		ops = append(ops, clientv3.OpGet(k))
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	// A read-only transaction: served by a linearizable read, no Raft
	// proposal.
	resp, err := l.KV.Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return Ownership{}, fmt.Errorf("election: inspect %s: %w", group, err)
	}
	o := Ownership{Rev: resp.Header.Revision, Addrs: make([]AddressClaim, len(addrs))}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		o.Leader = leaderInfo(kvs[0])
	}
	for i := range addrs {
		if kvs := resp.Responses[i+1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			o.Addrs[i] = parseAddressClaim(kvs[0])
		}
	}
	return o, nil
}

func leaderInfo(kv *mvccpb.KeyValue) LeaderInfo {
	return LeaderInfo{Present: true, Node: string(kv.Value), CreateRev: kv.CreateRevision, Lease: clientv3.LeaseID(kv.Lease)}
}

// parseAddressClaim reads an address claim key. A malformed value still
// claims the address (it is present, and only its creator may delete it);
// it just names nobody.
func parseAddressClaim(kv *mvccpb.KeyValue) AddressClaim {
	var a AddressClaim
	_ = json.Unmarshal(kv.Value, &a)
	a.CreateRev, a.Lease = kv.CreateRevision, clientv3.LeaseID(kv.Lease)
	return a
}

// PublishResult is the outcome of a Publish that reached etcd.
type PublishResult struct {
	// Written is false when the record's ModRevision was not the expected
	// one: someone (a late write of ours, an operator, another process
	// with this node name) changed it. ModRev then is the record's current
	// ModRevision (0: absent), to expect on the next try.
	Written bool
	ModRev  int64
}

// Publish writes this node's candidate record for group on lease, if the
// record's ModRevision is still expectModRev (0: absent). The guard keeps
// writes in order: a write that timed out on this side and lands late
// finds the record changed and is dropped, instead of overwriting a newer
// record with a stale priority.
func (l *Leadership) Publish(ctx context.Context, group string, c Candidate, lease clientv3.LeaseID, expectModRev int64) (PublishResult, error) {
	cmps, then, els, err := l.Keys.PublishTxn(l.Node, group, c, lease, expectModRev)
	if err != nil {
		return PublishResult{}, err
	}
	var relayErr error
	if l.preferRelay() {
		r, rerr := l.Relay.RelayPublish(ctx, group, c, lease, expectModRev)
		if rerr == nil {
			return r, nil
		}
		relayErr = rerr
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.Batch.Txn(rctx, cmps, then, els)
	if err != nil {
		if l.Relay != nil && relayErr == nil && ctx.Err() == nil {
			r, rerr := l.Relay.RelayPublish(ctx, group, c, lease, expectModRev)
			if rerr == nil {
				return r, nil
			}
			relayErr = rerr
		}
		return PublishResult{}, fmt.Errorf("election: publish %s: %w", group, errors.Join(err, relayErr))
	}
	return PublishResultOf(resp), nil
}

// PublishTxn is the transaction of node's Publish (see Leadership.Publish);
// a peer relaying the write sends exactly it.
func (k Keys) PublishTxn(node, group string, c Candidate, lease clientv3.LeaseID, expectModRev int64) (cmps []clientv3.Cmp, then, els []clientv3.Op, err error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("election: publish %s: %w", group, err)
	}
	key := k.Candidate(group, node)
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", expectModRev)},
		[]clientv3.Op{clientv3.OpPut(key, string(b), clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(key, clientv3.WithKeysOnly())}, nil
}

// PublishResultOf reads the outcome of a PublishTxn.
func PublishResultOf(resp TxnResult) PublishResult {
	if resp.Succeeded {
		return PublishResult{Written: true, ModRev: resp.Revision}
	}
	var cur int64
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		cur = kvs[0].ModRevision
	}
	return PublishResult{ModRev: cur}
}

// Unpublish deletes this node's candidate record for group if it is on
// lease. Success means no record of this node on lease remains.
func (l *Leadership) Unpublish(ctx context.Context, group string, lease clientv3.LeaseID) error {
	key := l.Keys.Candidate(group, l.Node)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", lease)}
	then := []clientv3.Op{clientv3.OpDelete(key)}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	_, err := l.Batch.Txn(rctx, cmps, then, nil)
	if err := l.withFallback(ctx, err, cmps, then); err != nil {
		return fmt.Errorf("election: unpublish %s: %w", group, err)
	}
	return nil
}
