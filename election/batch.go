package election

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultBatchOps is etcd's default --max-txn-ops: the most operations one
// transaction may carry. etcd counts a nested transaction's operations
// against what its parent leaves, so a batch of n calls whose costliest
// call costs m costs n+m (see txnCost and batchCost).
const DefaultBatchOps = 128

// DefaultBatchesInFlight is how many batches a Batcher keeps outstanding
// at once: enough to pipeline a burst through Raft, few enough that a
// burst still coalesces.
const DefaultBatchesInFlight = 4

// TxnResult is the outcome of one caller's transaction.
type TxnResult struct {
	Succeeded bool
	Responses []*pb.ResponseOp
	// Revision is the store revision after the transaction; keys it
	// created have this CreateRevision.
	Revision int64
}

// Batcher coalesces the small transactions of many group loops into few
// etcd requests. Each caller's compare-then-else becomes a nested
// transaction (etcd 3.3 and later) of one outer transaction without
// compares, so every caller keeps its own outcome while a batch shares one
// request, one Raft entry and one fsync. A failover of a thousand groups is
// then a handful of requests instead of thousands, and the node's lease
// renewals are not starved by them.
//
// Idle, it adds no latency: a call goes out at once, alone, when fewer
// than the in-flight limit of batches are outstanding. Calls that arrive
// meanwhile queue and leave together as soon as a batch returns.
//
// Writes to one key apply in call order, as far as this process can see
// to it. Calls touching the same key (in their compares or operations,
// nested transactions included) never share a batch, since etcd refuses
// duplicate keys in one transaction, and never overlap in time either: a
// call waits while a batch touching any of its keys is in flight, until
// that batch has returned (answered, failed, timed out or cancelled), and
// it never overtakes an earlier queued call on any of its keys, even one
// held back because it did not fit in a batch. Calls on other keys still
// go meanwhile. So a write retried after a timeout cannot be sent while
// the timed-out one is still on its way from this process.
//
// What the Batcher cannot stop: a request that timed out or was
// cancelled on the client may still reach the server and be applied
// later, after a write sent once it returned. Callers that must not be
// overtaken by such a late write guard their writes with compares (on a
// key's create or mod revision, say), so a stale write fails instead of
// landing.
type Batcher struct {
	kv          clientv3.KV
	timeout     time.Duration
	log         *slog.Logger
	maxInFlight int

	mu       sync.Mutex
	maxOps   int          // the server's --max-txn-ops as far as known; lowered when it refuses a batch
	pending  []*batchCall // in arrival order
	inflight int
	// busy holds the keys of the batches in flight. A key is in at most
	// one of them: calls touching a busy key stay pending.
	busy map[string]bool
}

type batchCall struct {
	ctx  context.Context
	cmps []clientv3.Cmp
	then []clientv3.Op
	els  []clientv3.Op
	keys []string
	cost int // txnCost of the call sent as a transaction of its own
	done chan struct{}
	res  TxnResult
	err  error
}

// NewBatcher returns a Batcher sending on kv. timeout bounds each batch;
// maxOps and maxInFlight of zero take DefaultBatchOps and
// DefaultBatchesInFlight.
func NewBatcher(kv clientv3.KV, timeout time.Duration, maxOps, maxInFlight int, log *slog.Logger) *Batcher {
	if maxOps <= 0 {
		maxOps = DefaultBatchOps
	}
	if maxInFlight <= 0 {
		maxInFlight = DefaultBatchesInFlight
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Batcher{kv: kv, timeout: timeout, log: log, maxOps: maxOps, maxInFlight: maxInFlight,
		busy: map[string]bool{}}
}

// Txn runs If(cmps).Then(then).Else(els) as part of a batch and returns its
// outcome, or ctx's error if ctx ends first (the transaction may still be
// applied then, as with any request whose answer is lost).
func (b *Batcher) Txn(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (TxnResult, error) {
	c := &batchCall{ctx: ctx, cmps: cmps, then: then, els: els, keys: callKeys(cmps, then, els),
		cost: txnCost(cmps, then, els), done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	b.startLocked()
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return TxnResult{}, ctx.Err()
	}
}

// startLocked sends pending calls while batch slots are free.
func (b *Batcher) startLocked() {
	for b.inflight < b.maxInFlight && len(b.pending) > 0 {
		batch := b.takeLocked()
		if len(batch) == 0 {
			return
		}
		b.inflight++
		go b.send(batch)
	}
}

// takeLocked removes the next batch from pending and marks its keys busy:
// calls in arrival order within the server's operation limit, no two
// touching the same key. A call stays pending if one of its keys is busy,
// is in the batch already, or belongs to an earlier call that stays
// pending, so calls on one key leave one at a time in arrival order.
// Calls whose callers gave up are dropped unsent.
//
// Whenever a call stays pending, a batch is in flight (one touching its
// keys, or the one taken now, or one that kept an earlier call back), and
// its return takes again.
func (b *Batcher) takeLocked() []*batchCall {
	var batch, rest []*batchCall
	claimed := map[string]bool{} // keys of the batch and of the calls kept back
	largest := 0
	for _, c := range b.pending {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
			continue
		}
		fits := len(batch) == 0 || batchCost(len(batch)+1, max(largest, c.cost)) <= b.maxOps
		free := !overlaps(b.busy, c.keys) && !overlaps(claimed, c.keys)
		for _, k := range c.keys {
			claimed[k] = true
		}
		if !fits || !free {
			rest = append(rest, c)
			continue
		}
		largest = max(largest, c.cost)
		batch = append(batch, c)
	}
	b.pending = rest
	for _, c := range batch {
		for _, k := range c.keys {
			b.busy[k] = true
		}
	}
	return batch
}

// send commits one batch and hands every caller its outcome. The request
// ends when it is answered, when it times out, or when every caller in it
// has given up.
func (b *Batcher) send(batch []*batchCall) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), b.timeout)
	defer cancel()
	var waiting atomic.Int32
	waiting.Store(int32(len(batch)))
	for _, c := range batch {
		stop := context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}

	results, err := b.commit(ctx, batch)
	if errors.Is(err, rpctypes.ErrTooManyOps) && len(batch) > 1 {
		largest := 0
		for _, c := range batch {
			largest = max(largest, c.cost)
		}
		cost := batchCost(len(batch), largest)
		b.mu.Lock()
		if b.maxOps >= cost {
			b.maxOps = cost / 2
			b.log.Warn("etcd refused a batch as too many operations; sending smaller batches (raise etcd's --max-txn-ops to batch more)",
				"ops", cost, "now", b.maxOps)
		}
		b.mu.Unlock()
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.res = results[i]
		}
		close(c.done)
	}

	b.mu.Lock()
	for _, c := range batch {
		for _, k := range c.keys {
			delete(b.busy, k)
		}
	}
	b.inflight--
	b.startLocked()
	b.mu.Unlock()
}

// commit sends batch as one transaction: a lone call as itself, several
// as nested transactions.
func (b *Batcher) commit(ctx context.Context, batch []*batchCall) ([]TxnResult, error) {
	if len(batch) == 1 {
		c := batch[0]
		resp, err := b.kv.Txn(ctx).If(c.cmps...).Then(c.then...).Else(c.els...).Commit()
		if err != nil {
			return nil, err
		}
		return []TxnResult{{Succeeded: resp.Succeeded, Responses: resp.Responses, Revision: resp.Header.Revision}}, nil
	}
	ops := make([]clientv3.Op, len(batch))
	for i, c := range batch {
		ops[i] = clientv3.OpTxn(c.cmps, c.then, c.els)
	}
	resp, err := b.kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	if len(resp.Responses) != len(batch) {
		return nil, errors.New("election: batched transaction answered with the wrong number of responses")
	}
	out := make([]TxnResult, len(batch))
	for i, r := range resp.Responses {
		t := r.GetResponseTxn()
		if t == nil {
			return nil, errors.New("election: batched transaction answered without a nested transaction response")
		}
		out[i] = TxnResult{Succeeded: t.Succeeded, Responses: t.Responses, Revision: resp.Header.Revision}
	}
	return out, nil
}

// txnCost is what etcd's --max-txn-ops check needs of a transaction
// If(cmps).Then(then).Else(els): the server (checkTxnRequest) requires
// its own count, the longest of its compares and branches, to be within
// the limit, and checks each nested transaction against the limit less
// that count. So the transaction fits a limit exactly when the limit is
// at least its own count plus the largest cost of its nested
// transactions (0 if it has none).
func txnCost(cmps []clientv3.Cmp, then, els []clientv3.Op) int {
	nested := 0
	for _, list := range [][]clientv3.Op{then, els} {
		for _, op := range list {
			if op.IsTxn() {
				nested = max(nested, txnCost(op.Txn()))
			}
		}
	}
	return max(len(cmps), len(then), len(els)) + nested
}

// batchCost is what etcd's --max-txn-ops check counts for a batch of n
// calls whose costliest call costs largest (see txnCost): several go as
// nested transactions of one outer transaction of n operations, so cost
// n plus the costliest; a lone call is sent as itself and costs its own.
func batchCost(n, largest int) int {
	if n == 1 {
		return largest
	}
	return n + largest
}

// callKeys lists the keys a call compares or operates on, those of its
// nested transactions included (a nested transaction has no key of its
// own). Ranges count by their first key.
func callKeys(cmps []clientv3.Cmp, ops ...[]clientv3.Op) []string {
	var keys []string
	for _, c := range cmps {
		keys = append(keys, string(c.KeyBytes()))
	}
	for _, list := range ops {
		for _, op := range list {
			if op.IsTxn() {
				keys = append(keys, callKeys(op.Txn())...)
				continue
			}
			keys = append(keys, string(op.KeyBytes()))
		}
	}
	return keys
}

func overlaps(seen map[string]bool, keys []string) bool {
	for _, k := range keys {
		if seen[k] {
			return true
		}
	}
	return false
}
