package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/vipd/vipd/internal/etcdtest"
)

// countingKV passes every request to a real etcd and counts transactions,
// and the most caller transactions carried by one of them.
type countingKV struct {
	clientv3.KV
	txns atomic.Int64
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.txns.Add(1)
	return c.KV.Txn(ctx)
}

func acquireOps(key, node string, lease clientv3.LeaseID) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, node, clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(key)}
}

// A burst of conditional writes on distinct keys leaves in far fewer
// requests than calls, and every caller gets its own outcome: the create
// revision of its key, or the holder of a key that was taken already.
func TestBatcherCoalescesBurstWithIndependentOutcomes(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := context.Background()
	kv := &countingKV{KV: cli.KV}
	b := NewBatcher(kv, 5*time.Second, 0, 0, nil)

	const n = 600
	key := func(i int) string { return fmt.Sprintf("/t/groups/g%03d/leader", i) }
	// Every tenth key is held by another node already.
	for i := 0; i < n; i += 10 {
		if _, err := cli.Put(ctx, key(i), "other"); err != nil {
			t.Fatal(err)
		}
	}
	before := kv.txns.Load()

	results := make([]TxnResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmps, then, els := acquireOps(key(i), "me", 0)
			results[i], errs[i] = b.Txn(ctx, cmps, then, els)
		})
	}
	wg.Wait()
	requests := kv.txns.Load() - before
	t.Logf("%d calls in %d etcd transactions", n, requests)
	if requests > n/4 {
		t.Errorf("%d calls took %d transactions; want them coalesced (≤ %d)", n, requests, n/4)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		r := results[i]
		if i%10 == 0 {
			if r.Succeeded {
				t.Fatalf("call %d took a key that was held", i)
			}
			if kvs := r.Responses[0].GetResponseRange().GetKvs(); len(kvs) != 1 || string(kvs[0].Value) != "other" {
				t.Fatalf("call %d: else branch = %v, want the holder 'other'", i, r.Responses)
			}
			continue
		}
		if !r.Succeeded {
			t.Fatalf("call %d lost a vacant key", i)
		}
		got, err := cli.Get(ctx, key(i))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "me" || got.Kvs[0].CreateRevision != r.Revision {
			t.Fatalf("call %d: key %v, result revision %d; want value me created at the result's revision", i, got.Kvs, r.Revision)
		}
	}
}

// An idle batcher sends a call at once and on its own: no added latency,
// no nesting.
func TestBatcherLoneCallGoesAlone(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	kv := &countingKV{KV: cli.KV}
	b := NewBatcher(kv, 5*time.Second, 0, 0, nil)
	cmps, then, els := acquireOps("/t/k", "me", 0)
	r, err := b.Txn(context.Background(), cmps, then, els)
	if err != nil || !r.Succeeded {
		t.Fatalf("Txn = %+v, %v", r, err)
	}
	if got := kv.txns.Load(); got != 1 {
		t.Fatalf("%d transactions for one call", got)
	}
	if r.Responses[0].GetResponsePut() == nil {
		t.Fatalf("responses %v: want the put's own response, not a nested one", r.Responses)
	}
}

// Calls on the same key never share a transaction (etcd would refuse it);
// they run one after the other, so exactly one acquire of a key wins.
func TestBatcherSameKeyCallsAreOrdered(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b := NewBatcher(cli.KV, 5*time.Second, 0, 1, nil)
	const n = 40
	var won atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Half on one shared key, half on keys of their own.
			key := "/t/shared"
			if i%2 == 1 {
				key = fmt.Sprintf("/t/own%d", i)
			}
			cmps, then, els := acquireOps(key, fmt.Sprint(i), 0)
			r, err := b.Txn(context.Background(), cmps, then, els)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			if r.Succeeded && key == "/t/shared" {
				won.Add(1)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d acquires of one key won; want exactly 1", won.Load())
	}
}

// A server with a smaller --max-txn-ops refuses a full batch; the batcher
// halves its batches until they fit, and callers' retries then succeed.
func TestBatcherShrinksToServerMaxTxnOps(t *testing.T) {
	m := etcdtest.Start(t, func(c *embed.Config) { c.MaxTxnOps = 8 })
	cli := m.Client(t)
	b := NewBatcher(cli.KV, 5*time.Second, 0, 1, nil)
	const n = 200
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := range n {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				cmps, then, els := acquireOps(fmt.Sprintf("/t/k%d", i), "me", 0)
				r, err := b.Txn(context.Background(), cmps, then, els)
				if err == nil {
					if !r.Succeeded {
						t.Errorf("call %d lost a vacant key", i)
					}
					return
				}
				refused.Add(1)
				if attempt > 20 {
					t.Errorf("call %d still failing: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.mu.Lock()
	ops := b.maxOps
	b.mu.Unlock()
	if ops > 8 {
		t.Fatalf("batch size %d after refusals by a server allowing 8", ops)
	}
	t.Logf("%d refused calls; batch size now %d", refused.Load(), ops)
	got, err := cli.Get(context.Background(), "/t/k", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || got.Count != n {
		t.Fatalf("%d keys written (err %v), want %d", got.Count, err, n)
	}
}

// A caller whose context ends stops waiting at once.
func TestBatcherCallerGivesUp(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b := NewBatcher(blockingKV{cli.KV}, time.Minute, 0, 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cmps, then, els := acquireOps("/t/k", "me", 0)
	start := time.Now()
	_, err := b.Txn(ctx, cmps, then, els)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("gave up after %v", took)
	}
}

// blockingKV never answers a transaction until its context ends.
type blockingKV struct{ clientv3.KV }

func (b blockingKV) Txn(ctx context.Context) clientv3.Txn { return blockingTxn{ctx: ctx} }

type blockingTxn struct {
	clientv3.Txn
	ctx context.Context
}

func (t blockingTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t blockingTxn) Then(...clientv3.Op) clientv3.Txn { return t }
func (t blockingTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (t blockingTxn) Commit() (*clientv3.TxnResponse, error) {
	<-t.ctx.Done()
	return nil, t.ctx.Err()
}
