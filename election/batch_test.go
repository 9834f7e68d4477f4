package election

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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

// gateKV passes requests to a real etcd and logs each transaction as it
// reaches Commit: its keys, how many calls it carries, which gates were
// shut then, and when it started and returned. The first request touching
// a gated key waits for that key's gate to open (or for its context)
// before it goes on to etcd: a slow request.
type gateKV struct {
	clientv3.KV
	gates map[string]chan struct{}

	mu      sync.Mutex
	held    map[string]bool // gated keys whose first request has come
	seq     int             // orders the starts and ends of commits
	commits []gateCommit
}

type gateCommit struct {
	keys       []string
	calls      int      // caller transactions carried
	cost       int      // txnCost of the request
	shut       []string // its gated keys whose gates were shut when it reached Commit
	start, end int      // seq when it reached Commit and when it returned; end 0 while in flight
	err        error
}

func newGateKV(kv clientv3.KV, gated ...string) *gateKV {
	g := &gateKV{KV: kv, gates: map[string]chan struct{}{}, held: map[string]bool{}}
	for _, k := range gated {
		g.gates[k] = make(chan struct{})
	}
	return g
}

func (g *gateKV) Txn(ctx context.Context) clientv3.Txn {
	return &gateTxn{g: g, ctx: ctx, inner: g.KV.Txn(ctx)}
}

func (g *gateKV) release(key string) { close(g.gates[key]) }

func (g *gateKV) log() []gateCommit {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.commits)
}

// calls is how many caller transactions have reached Commit.
func (g *gateKV) calls() int {
	n := 0
	for _, c := range g.log() {
		n += c.calls
	}
	return n
}

type gateTxn struct {
	g     *gateKV
	ctx   context.Context
	inner clientv3.Txn
	cmps  []clientv3.Cmp
	then  []clientv3.Op
	els   []clientv3.Op
}

func (t *gateTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	t.inner = t.inner.If(cs...)
	return t
}

func (t *gateTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then = append(t.then, ops...)
	t.inner = t.inner.Then(ops...)
	return t
}

func (t *gateTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.els = append(t.els, ops...)
	t.inner = t.inner.Else(ops...)
	return t
}

func (t *gateTxn) Commit() (*clientv3.TxnResponse, error) {
	// The Batcher nests several calls under an outer transaction without
	// compares whose operations are all transactions; anything else is
	// taken for one call (so a lone call of that shape counts as many).
	calls := 1
	if len(t.cmps) == 0 && len(t.els) == 0 && len(t.then) > 1 &&
		!slices.ContainsFunc(t.then, func(op clientv3.Op) bool { return !op.IsTxn() }) {
		calls = len(t.then)
	}
	g := t.g
	keys := callKeys(t.cmps, t.then, t.els)
	var shut []string
	var wait []chan struct{}
	g.mu.Lock()
	for k, gate := range g.gates {
		if !slices.Contains(keys, k) {
			continue
		}
		select {
		case <-gate:
		default:
			shut = append(shut, k)
		}
		if !g.held[k] {
			g.held[k] = true
			wait = append(wait, gate)
		}
	}
	g.seq++
	g.commits = append(g.commits, gateCommit{keys: keys, calls: calls,
		cost: txnCost(t.cmps, t.then, t.els), shut: shut, start: g.seq})
	i := len(g.commits) - 1
	g.mu.Unlock()
	resp, err := t.commit(wait)
	g.mu.Lock()
	g.seq++
	g.commits[i].end, g.commits[i].err = g.seq, err
	g.mu.Unlock()
	return resp, err
}

func (t *gateTxn) commit(gates []chan struct{}) (*clientv3.TxnResponse, error) {
	for _, gate := range gates {
		select {
		case <-gate:
		case <-t.ctx.Done():
			return nil, t.ctx.Err()
		}
	}
	return t.inner.Commit()
}

// checkKeysNotInFlightTogether fails t if two requests touching one key
// were in flight at the same time.
func checkKeysNotInFlightTogether(t *testing.T, log []gateCommit) {
	t.Helper()
	for i, a := range log {
		for _, c := range log[i+1:] {
			shared := slices.ContainsFunc(a.keys, func(k string) bool { return slices.Contains(c.keys, k) })
			if shared && (a.end == 0 || c.start < a.end) {
				t.Errorf("requests on keys %v and %v were in flight together", a.keys, c.keys)
			}
		}
	}
}

// pendingCalls is how many calls b holds queued.
func (b *Batcher) pendingCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// asyncCall runs one Batcher call in the background and waits until it
// has arrived: queued, or handed to the KV. Calls made one after the
// other by asyncCall arrive in that order.
type asyncCall struct {
	res  TxnResult
	err  error
	done chan struct{}
}

func startCall(t *testing.T, b *Batcher, g *gateKV, cmps []clientv3.Cmp, then, els []clientv3.Op) *asyncCall {
	t.Helper()
	arrived := b.pendingCalls() + g.calls()
	c := &asyncCall{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.res, c.err = b.Txn(context.Background(), cmps, then, els)
	}()
	waitFor(t, "the call to arrive", func() bool { return b.pendingCalls()+g.calls() > arrived })
	return c
}

func (c *asyncCall) wait(t *testing.T) TxnResult {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("call did not return")
	}
	if c.err != nil {
		t.Fatalf("call: %v", c.err)
	}
	return c.res
}

func (c *asyncCall) returned() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func put(key, val string) []clientv3.Op { return []clientv3.Op{clientv3.OpPut(key, val)} }

// touchedWhileShut reports whether a request touching key other than the
// first one reached the KV while key's gate was shut.
func touchedWhileShut(log []gateCommit, key string) bool {
	first := true
	for _, c := range log {
		if !slices.Contains(c.keys, key) {
			continue
		}
		if !first && slices.Contains(c.shut, key) {
			return true
		}
		first = false
	}
	return false
}

// A call on a key a batch in flight touches waits until that batch has
// returned, even with batch slots free, while calls on other keys go on:
// a slow write is never overtaken by a later one from this process.
func TestBatcherSameKeyWaitsForInFlightBatch(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	g := newGateKV(cli.KV, "/t/k")
	b := NewBatcher(g, 5*time.Second, 0, 0, nil)

	first := startCall(t, b, g, nil, put("/t/k", "first"), nil)
	second := startCall(t, b, g, nil, put("/t/k", "second"), nil)
	other := startCall(t, b, g, nil, put("/t/other", "x"), nil)
	other.wait(t) // calls on other keys are not held up
	time.Sleep(50 * time.Millisecond)
	if second.returned() || touchedWhileShut(g.log(), "/t/k") {
		t.Fatalf("a second call on /t/k went out while the first was in flight: %+v", g.log())
	}
	if n := b.pendingCalls(); n != 1 {
		t.Fatalf("%d calls pending, want the second call on /t/k", n)
	}

	g.release("/t/k")
	r1, r2 := first.wait(t), second.wait(t)
	if r1.Revision >= r2.Revision {
		t.Fatalf("first write applied at %d, second at %d: out of call order", r1.Revision, r2.Revision)
	}
	got, err := cli.Get(context.Background(), "/t/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "second" {
		t.Fatalf("/t/k = %v (err %v), want the later write", got.Kvs, err)
	}
	checkKeysNotInFlightTogether(t, g.log())
}

// A caller that gave up and retries: the retry waits, though a batch slot
// is free, until the batch still carrying the first attempt (for another
// caller in it) has returned, so the first attempt cannot land after it.
func TestBatcherRetryWaitsForAbandonedAttempt(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	g := newGateKV(cli.KV, "/t/x1", "/t/x2", "/t/k")
	b := NewBatcher(g, 5*time.Second, 0, 2, nil)

	// Both slots busy, so the first attempt and another call share a batch.
	x1 := startCall(t, b, g, nil, put("/t/x1", "x"), nil)
	x2 := startCall(t, b, g, nil, put("/t/x2", "x"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := b.Txn(ctx, nil, put("/t/k", "first"), nil)
		firstErr <- err
	}()
	waitFor(t, "the first attempt to queue", func() bool { return b.pendingCalls() == 1 })
	other := startCall(t, b, g, nil, put("/t/other", "x"), nil)
	g.release("/t/x1")
	x1.wait(t)
	waitFor(t, "the batch of the first attempt to reach the KV", func() bool { return g.calls() == 4 })
	g.release("/t/x2") // a slot is free now
	x2.wait(t)

	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("first attempt: %v, want cancelled", err)
	}
	retry := startCall(t, b, g, nil, put("/t/k", "retry"), nil)
	time.Sleep(50 * time.Millisecond)
	if retry.returned() || touchedWhileShut(g.log(), "/t/k") {
		t.Fatalf("the retry went out while the first attempt was in flight: %+v", g.log())
	}
	g.release("/t/k")
	rr, ro := retry.wait(t), other.wait(t)
	if rr.Revision <= ro.Revision {
		t.Fatalf("retry applied at %d, the first attempt's batch at %d: out of call order", rr.Revision, ro.Revision)
	}
	got, err := cli.Get(context.Background(), "/t/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "retry" {
		t.Fatalf("/t/k = %v (err %v), want the retry's write", got.Kvs, err)
	}
	checkKeysNotInFlightTogether(t, g.log())
}

// Calls on one key leave one at a time in arrival order, interleaved with
// calls on other keys that do not wait for them.
func TestBatcherKeepsArrivalOrderPerKey(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	g := newGateKV(cli.KV, "/t/k")
	b := NewBatcher(g, 5*time.Second, 0, 0, nil)

	k := []*asyncCall{startCall(t, b, g, nil, put("/t/k", "1"), nil)}
	var others []*asyncCall
	for i := 2; i <= 3; i++ {
		others = append(others, startCall(t, b, g, nil, put(fmt.Sprintf("/t/o%d", i), "x"), nil))
		k = append(k, startCall(t, b, g, nil, put("/t/k", fmt.Sprint(i)), nil))
	}
	others = append(others, startCall(t, b, g, nil, put("/t/o4", "x"), nil))
	for _, o := range others {
		o.wait(t)
	}
	if touchedWhileShut(g.log(), "/t/k") {
		t.Fatalf("a later call on /t/k went out while the first was in flight: %+v", g.log())
	}
	g.release("/t/k")
	var revs []int64
	for _, c := range k {
		revs = append(revs, c.wait(t).Revision)
	}
	if !slices.IsSorted(revs) || revs[0] == revs[1] || revs[1] == revs[2] {
		t.Fatalf("writes to /t/k applied at revisions %v; want them in call order", revs)
	}
	got, err := cli.Get(context.Background(), "/t/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "3" {
		t.Fatalf("/t/k = %v (err %v), want the last write", got.Kvs, err)
	}
	checkKeysNotInFlightTogether(t, g.log())
}

// A later call on a key does not overtake an earlier one that was kept out
// of a batch because it did not fit; calls on other keys still fill it.
func TestBatcherLaterCallDoesNotOvertakeOneTooLargeForBatch(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	g := newGateKV(cli.KV, "/t/hold")
	b := NewBatcher(g, 5*time.Second, 4, 1, nil)

	hold := startCall(t, b, g, nil, put("/t/hold", "x"), nil) // occupies the only slot
	p := startCall(t, b, g, nil, put("/t/p", "x"), nil)
	// Cost 3: with p, 2+3 > 4, so it does not fit p's batch.
	big := startCall(t, b, g, nil, []clientv3.Op{
		clientv3.OpPut("/t/k", "big"), clientv3.OpPut("/t/k/a", "x"), clientv3.OpPut("/t/k/b", "x"),
	}, nil)
	small := startCall(t, b, g, nil, put("/t/k", "small"), nil) // would fit, but is later on /t/k
	q := startCall(t, b, g, nil, put("/t/q", "x"), nil)
	g.release("/t/hold")
	for _, c := range []*asyncCall{hold, p, q} {
		c.wait(t)
	}
	rb, rs := big.wait(t), small.wait(t)
	if rb.Revision >= rs.Revision {
		t.Fatalf("big call applied at %d, the later small one at %d: out of call order", rb.Revision, rs.Revision)
	}
	got, err := cli.Get(context.Background(), "/t/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "small" {
		t.Fatalf("/t/k = %v (err %v), want the later write", got.Kvs, err)
	}
	// p and q shared a batch: the call kept back held up only its key.
	log := g.log()
	if len(log) != 4 || log[1].calls != 2 || !slices.Contains(log[1].keys, "/t/p") || !slices.Contains(log[1].keys, "/t/q") {
		t.Fatalf("requests %+v: want hold, {p, q}, big, small", log)
	}
	checkKeysNotInFlightTogether(t, log)
}

func createRevIs(key string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), "=", rev)
}

// costShape is a transaction whose etcd cost is known by hand, on keys
// under prefix.
type costShape struct {
	name string
	cmps []clientv3.Cmp
	then []clientv3.Op
	els  []clientv3.Op
	cost int
}

func costShapes(prefix string) []costShape {
	k := func(s string) string { return prefix + s }
	del, get := func(s string) clientv3.Op { return clientv3.OpDelete(k(s)) }, func(s string) clientv3.Op { return clientv3.OpGet(k(s)) }
	return []costShape{
		{name: "empty", cost: 0},
		{name: "flat", cmps: []clientv3.Cmp{createRevIs(k("a"), 0)}, then: []clientv3.Op{clientv3.OpPut(k("a"), "x")}, els: []clientv3.Op{get("a")}, cost: 1},
		{name: "flat, wide branch", cmps: []clientv3.Cmp{createRevIs(k("a"), 0), createRevIs(k("b"), 0)}, then: []clientv3.Op{del("a"), del("b"), del("c")}, cost: 3},
		{name: "one level: resign", then: []clientv3.Op{
			clientv3.OpTxn([]clientv3.Cmp{createRevIs(k("a"), 7)}, []clientv3.Op{del("a")}, nil),
			clientv3.OpTxn([]clientv3.Cmp{createRevIs(k("b"), 7)}, []clientv3.Op{del("b")}, nil),
		}, cost: 2 + 1},
		{name: "one level: wide nested in else", cmps: []clientv3.Cmp{createRevIs(k("a"), 0)}, then: []clientv3.Op{get("a")}, els: []clientv3.Op{
			clientv3.OpTxn(nil, []clientv3.Op{del("b"), del("c"), del("d")}, nil),
		}, cost: 1 + 3},
		{name: "two levels", cmps: []clientv3.Cmp{createRevIs(k("a"), 7)}, then: []clientv3.Op{
			del("a"),
			clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{createRevIs(k("b"), 7)}, []clientv3.Op{del("b")}, nil)}, nil),
		}, els: []clientv3.Op{get("a")}, cost: 2 + (1 + 1)},
		{name: "two levels, the costlier nested one shallower", then: []clientv3.Op{
			clientv3.OpTxn(nil, []clientv3.Op{del("a"), del("b"), del("c")}, nil),
			clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{del("d")}, nil)}, nil),
		}, cost: 2 + 3},
	}
}

// txnCost follows etcd's --max-txn-ops rule: a transaction's own count,
// the longest of its compares and branches, plus the costliest nested one.
func TestTxnCost(t *testing.T) {
	for _, s := range costShapes("/t/") {
		if got := txnCost(s.cmps, s.then, s.els); got != s.cost {
			t.Errorf("%s: txnCost = %d, want %d", s.name, got, s.cost)
		}
	}
	for _, c := range []struct{ n, largest, want int }{{1, 4, 4}, {2, 1, 3}, {3, 4, 7}} {
		if got := batchCost(c.n, c.largest); got != c.want {
			t.Errorf("batchCost(%d, %d) = %d, want %d", c.n, c.largest, got, c.want)
		}
	}
}

// The server agrees: a transaction passes a --max-txn-ops of L exactly
// when its txnCost is at most L.
func TestTxnCostMatchesServer(t *testing.T) {
	const limit = 4
	cli := etcdtest.Start(t, func(c *embed.Config) { c.MaxTxnOps = limit }).Client(t)
	for i, s := range costShapes("/t/") {
		// Wrap each shape as one nested transaction under 1..3 others:
		// the outer count eats into what is left for it.
		for n := 1; n <= 3; n++ {
			ops := []clientv3.Op{clientv3.OpTxn(s.cmps, s.then, s.els)}
			for j := 1; j < n; j++ {
				ops = append(ops, clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpGet(fmt.Sprintf("/u/%d/%d", i, j))}, nil))
			}
			cost := txnCost(nil, ops, nil)
			_, err := cli.Txn(context.Background()).Then(ops...).Commit()
			if refused := errors.Is(err, rpctypes.ErrTooManyOps); refused != (cost > limit) {
				t.Errorf("%s under %d: cost %d, server with limit %d answered %v", s.name, n, cost, limit, err)
			} else if err != nil && !refused {
				t.Errorf("%s under %d: %v", s.name, n, err)
			}
		}
	}
}

// The keys of nested transactions count as the call's: the same-key rules
// see them.
func TestCallKeysIncludeNestedTransactions(t *testing.T) {
	for _, s := range costShapes("/t/") {
		if s.name != "two levels" {
			continue
		}
		got := callKeys(s.cmps, s.then, s.els)
		slices.Sort(got)
		got = slices.Compact(got)
		if want := []string{"/t/a", "/t/b"}; !slices.Equal(got, want) {
			t.Fatalf("callKeys = %q, want %q", got, want)
		}
	}
}

// Calls whose branches hold nested transactions (a resign deleting the
// leader key and each address claim under its own compare) are batched
// within the server's --max-txn-ops as etcd counts it: with the Batcher's
// limit equal to the server's, no batch is refused, and every call gets
// its own outcome.
func TestBatcherNestedCallsFitServerMaxTxnOps(t *testing.T) {
	const limit = 8
	cli := etcdtest.Start(t, func(c *embed.Config) { c.MaxTxnOps = limit }).Client(t)
	ctx := context.Background()
	g := newGateKV(cli.KV, "/t/hold")
	b := NewBatcher(g, 5*time.Second, limit, 1, nil)

	const n = 60
	key := func(i int, s string) string { return fmt.Sprintf("/t/g%02d/%s", i, s) }
	revs := map[string]int64{}
	for i := range n {
		for _, s := range []string{"a", "b"} {
			r, err := cli.Put(ctx, key(i, s), "mine")
			if err != nil {
				t.Fatal(err)
			}
			revs[key(i, s)] = r.Header.Revision
		}
	}
	// Shapes by i%3, each with a stale revision now and then:
	//   0: resign, Then = two nested txns each deleting one key (cost 3);
	//   1: guarded delete of a plus a two-level nested delete of b (cost 4);
	//   2: a flat acquire of a held key, Else reading it (cost 1).
	staleB := func(i int) bool { return i%6 == 3 || i%6 == 4 }
	rev := func(i int, s string) int64 {
		if s == "b" && staleB(i) {
			return revs[key(i, s)] + 1000
		}
		return revs[key(i, s)]
	}
	call := func(i int) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
		guardedDel := func(s string) clientv3.Op {
			return clientv3.OpTxn([]clientv3.Cmp{createRevIs(key(i, s), rev(i, s))}, []clientv3.Op{clientv3.OpDelete(key(i, s))}, nil)
		}
		switch i % 3 {
		case 0:
			return nil, []clientv3.Op{guardedDel("a"), guardedDel("b")}, nil
		case 1:
			return []clientv3.Cmp{createRevIs(key(i, "a"), rev(i, "a"))},
				[]clientv3.Op{clientv3.OpDelete(key(i, "a")), clientv3.OpTxn(nil, []clientv3.Op{guardedDel("b")}, nil)},
				[]clientv3.Op{clientv3.OpGet(key(i, "a"))}
		default:
			return acquireOps(key(i, "a"), "me", 0)
		}
	}

	hold := startCall(t, b, g, nil, put("/t/hold", "x"), nil) // the only slot: the rest queue
	results := make([]TxnResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmps, then, els := call(i)
			results[i], errs[i] = b.Txn(ctx, cmps, then, els)
		})
	}
	waitFor(t, "the burst to queue", func() bool { return b.pendingCalls() == n })
	g.release("/t/hold")
	wg.Wait()
	hold.wait(t)

	log := g.log()
	for _, c := range log {
		if c.err != nil {
			t.Errorf("request on %d keys, cost %d: %v", len(c.keys), c.cost, c.err)
		}
		if c.cost > limit {
			t.Errorf("request on %d keys costs %d, over the server's %d", len(c.keys), c.cost, limit)
		}
	}
	t.Logf("%d calls in %d requests", n+1, len(log))
	if len(log) > n/2 {
		t.Errorf("%d calls took %d requests; want them batched", n+1, len(log))
	}
	b.mu.Lock()
	ops := b.maxOps
	b.mu.Unlock()
	if ops != limit {
		t.Errorf("batch limit now %d, want the server's %d kept", ops, limit)
	}

	exists := func(k string) bool {
		r, err := cli.Get(ctx, k, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Count == 1
	}
	nested := func(r *pb.ResponseOp) *pb.TxnResponse {
		if r.GetResponseTxn() == nil {
			t.Fatalf("response %v: want a nested transaction's", r)
		}
		return r.GetResponseTxn()
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		r := results[i]
		switch i % 3 {
		case 0:
			if !r.Succeeded || len(r.Responses) != 2 {
				t.Fatalf("resign %d: %+v", i, r)
			}
			if !nested(r.Responses[0]).Succeeded || nested(r.Responses[1]).Succeeded == staleB(i) {
				t.Fatalf("resign %d: nested outcomes %v, stale b %v", i, r.Responses, staleB(i))
			}
			if exists(key(i, "a")) || exists(key(i, "b")) != staleB(i) {
				t.Fatalf("resign %d: a left %v, b left %v, stale b %v", i, exists(key(i, "a")), exists(key(i, "b")), staleB(i))
			}
		case 1:
			if !r.Succeeded || len(r.Responses) != 2 || r.Responses[0].GetResponseDeleteRange().GetDeleted() != 1 {
				t.Fatalf("two-level %d: %+v", i, r)
			}
			inner := nested(nested(r.Responses[1]).Responses[0])
			if inner.Succeeded == staleB(i) || exists(key(i, "b")) != staleB(i) {
				t.Fatalf("two-level %d: inner outcome %v, b left %v, stale b %v", i, inner.Succeeded, exists(key(i, "b")), staleB(i))
			}
		default:
			if r.Succeeded {
				t.Fatalf("acquire %d took a held key", i)
			}
			if kvs := r.Responses[0].GetResponseRange().GetKvs(); len(kvs) != 1 || string(kvs[0].Value) != "mine" {
				t.Fatalf("acquire %d: else branch %v", i, r.Responses)
			}
		}
	}
}
