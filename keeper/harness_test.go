package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
)

// The group harness runs one group loop pass by pass, in virtual time,
// against a real (embedded) etcd: the leader and address keys, the guards
// and the watch are etcd's own, while the fence, the kernel lifetimes and
// the announcement schedule run on a fake clock, and faults are injected
// into etcd requests (faultKV) and address requests (fakenet.Host's
// Intercept). Each test decides when the loop runs, so a "stall" is simply
// the clock moving while the loop does not.

var h0 = time.Unix(1_700_000_000, 0)

// testLease is the node lease as the test sets it: a real etcd lease (long
// TTL at the server, so real time never expires it) whose fence runs on
// the fake clock.
type testLease struct {
	clk *clock.Fake
	ttl time.Duration

	mu        sync.Mutex
	cur       election.Lease
	suspended bool
	changed   chan struct{}
}

func (l *testLease) Current() election.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.cur
	if l.suspended {
		c.Deadline, c.ServerExpiry = time.Time{}, time.Time{} // as election.Session after a suspend
	}
	return c
}

func (l *testLease) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// renew records a successful renewal sent now.
func (l *testLease) renew() { l.renewSentAt(l.clk.Now()) }

// renewSentAt records a successful renewal sent at sent, answered now.
func (l *testLease) renewSentAt(sent time.Time) {
	l.mu.Lock()
	now := sent
	l.cur.Renewed, l.cur.Deadline, l.cur.ServerExpiry = now, now.Add(l.ttl-l.ttl/6), now.Add(l.ttl)
	l.suspended = false
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *testLease) suspend() {
	l.mu.Lock()
	l.suspended = true
	l.mu.Unlock()
}

// faultKV passes requests to etcd unless a rule says otherwise.
type faultKV struct {
	clientv3.KV
	mu    sync.Mutex
	rules []*faultRule
}

// faultRule matches transactions that touch a key containing match.
type faultRule struct {
	match string
	// mode: "fail" returns an error without sending; "lose" commits and
	// then returns an error (the answer was lost); "late" returns an
	// error at once and commits after delay (real time); "observe" calls
	// observe and then commits.
	mode    string
	times   int // how many matching requests to affect; <0: all
	delay   time.Duration
	hits    int
	observe func()
}

func (f *faultKV) add(r *faultRule) *faultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
	return r
}

// hits reports how many requests r has affected.
func (f *faultKV) hits(r *faultRule) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return r.hits
}

func (f *faultKV) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

func (f *faultKV) Txn(ctx context.Context) clientv3.Txn {
	return &faultTxn{f: f, ctx: ctx, real: f.KV.Txn(ctx)}
}

type faultTxn struct {
	f    *faultKV
	ctx  context.Context
	real clientv3.Txn
	ops  []clientv3.Op
	cmps []clientv3.Cmp
}

func (t *faultTxn) If(c ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, c...)
	t.real = t.real.If(c...)
	return t
}
func (t *faultTxn) Then(o ...clientv3.Op) clientv3.Txn {
	t.ops = append(t.ops, o...)
	t.real = t.real.Then(o...)
	return t
}
func (t *faultTxn) Else(o ...clientv3.Op) clientv3.Txn {
	t.ops = append(t.ops, o...)
	t.real = t.real.Else(o...)
	return t
}

var errInjected = errors.New("injected etcd failure")

func (t *faultTxn) Commit() (*clientv3.TxnResponse, error) {
	keys := opKeys(t.cmps, t.ops)
	t.f.mu.Lock()
	var rule *faultRule
	for _, r := range t.f.rules {
		if r.times == 0 || !strings.Contains(keys, r.match) {
			continue
		}
		r.hits++
		if r.times > 0 {
			r.times--
		}
		rule = r
		break
	}
	t.f.mu.Unlock()
	if rule == nil {
		return t.real.Commit()
	}
	switch rule.mode {
	case "observe":
		rule.observe()
		return t.real.Commit()
	case "lose":
		if _, err := t.real.Commit(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: answer lost", errInjected)
	case "late":
		late := t.f.KV.Txn(context.Background()).If(t.cmps...)
		// Rebuild the request on a context of its own: the caller's ends.
		go func(ops []clientv3.Op) {
			time.Sleep(rule.delay)
			_, _ = late.Then(ops...).Commit()
		}(t.thenOps())
		return nil, fmt.Errorf("%w: timed out, lands later", errInjected)
	}
	return nil, errInjected
}

// thenOps returns the Then branch (late mode needs only it: the tests'
// late writes are the success branch of their compare).
func (t *faultTxn) thenOps() []clientv3.Op {
	var out []clientv3.Op
	for _, o := range t.ops {
		if o.IsPut() || o.IsDelete() || o.IsTxn() {
			out = append(out, o)
		}
	}
	return out
}

func opKeys(cmps []clientv3.Cmp, ops []clientv3.Op) string {
	var b strings.Builder
	for _, c := range cmps {
		b.WriteString(string(c.KeyBytes()) + " ")
	}
	for _, o := range ops {
		if o.IsTxn() {
			c, th, el := o.Txn()
			b.WriteString(opKeys(c, append(th, el...)))
			continue
		}
		b.WriteString(string(o.KeyBytes()) + " ")
	}
	return b.String()
}

// testHealth is the group's health as the test sets it.
type testHealth struct {
	mu sync.Mutex
	h  Health
}

func (t *testHealth) of(gc config.Group) Health {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.h
	if !h.Fault {
		h.Priority = gc.Priority + 2
	}
	return h
}

func (t *testHealth) set(fault bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.h = Health{Ready: true, Fault: fault}
	if fault {
		t.h.Failing = []string{"haproxy"}
	}
}

type noHooks struct{}

func (noHooks) run([]string, time.Duration, hookEnv) {}

// harness is one node's group loop and everything around it.
type harness struct {
	t      *testing.T
	ctx    context.Context
	node   string
	clk    *clock.Fake
	cli    *clientv3.Client
	kv     *faultKV
	lease  *testLease
	view   *election.View
	host   *fakenet.Host
	health *testHealth
	g      *group
	keys   election.Keys
	// noRenew stops until from renewing the lease every renewEvery of
	// virtual time, as the session would.
	noRenew bool
}

const renewEvery = 500 * time.Millisecond

const harnessGroup = `
name: VI_1
interface: eth0
addresses: [192.168.20.15/24]
priority: 101
backoff_step: 50ms
garp: {count: 2, interval: 100ms, refresh: 200ms}
`

var hvip = netip.MustParsePrefix("192.168.20.15/24")

// newHarness starts a group loop's surroundings for node on member m
// (nil: a fresh etcd). groupYAML overrides the group's config.
func newHarness(t *testing.T, m *etcdtest.Member, node, groupYAML string) *harness {
	t.Helper()
	if m == nil {
		m = etcdtest.Start(t)
	}
	if groupYAML == "" {
		groupYAML = harnessGroup
	}
	var indented []string
	for _, l := range strings.Split(strings.TrimSpace(groupYAML), "\n") {
		indented = append(indented, "    "+l)
	}
	indented[0] = "  - " + strings.TrimSpace(indented[0])
	cfg, err := config.Parse(strings.NewReader(fmt.Sprintf("node: %s\netcd: {endpoints: [%s]}\nmetrics: {listen: \"\"}\ngroups:\n%s\n",
		node, m.Endpoint, strings.Join(indented, "\n"))))
	if err != nil {
		t.Fatal(err)
	}
	gc := cfg.Groups[0]
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cli := m.Client(t)
	clk := clock.NewFake(h0)
	h := &harness{t: t, ctx: ctx, node: node, clk: clk, cli: cli, kv: &faultKV{KV: cli.KV},
		health: &testHealth{}, keys: election.Keys{Prefix: "/vipd"}}
	h.health.set(false)
	grant, err := cli.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	h.lease = &testLease{clk: clk, ttl: 3 * time.Second, changed: make(chan struct{}), cur: election.Lease{ID: grant.ID}}
	h.lease.renew()
	log := testLog(t).With("node", node)
	h.view = election.NewView(cli, h.keys, clk, log, func(string) {})
	done := make(chan struct{})
	go func() { defer close(done); h.view.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h.host = fakenet.NewHostAt(node, nil, clk)
	lead := &election.Leadership{KV: h.kv, Keys: h.keys, Node: node, RequestTimeout: 2 * time.Second,
		Batch: election.NewBatcher(h.kv, 2*time.Second, 0, 0, log)}
	env := &groupEnv{
		node: node, clk: clk, log: log, obs: nopObserver{}, lease: h.lease, ttl: 3 * time.Second,
		view: h.view, etcd: lead, links: h.host, announce: h.host.Announce, health: h.health.of,
		hooks: noHooks{}, timeout: 2 * time.Second, leave: func(*group) bool { return true },
	}
	h.g = newGroup(env, gc, func() {})
	t.Cleanup(func() { h.g.vips.ann.stop() })
	return h
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// sync waits until the view has seen every write made so far.
func (h *harness) sync() {
	h.t.Helper()
	resp, err := h.cli.Get(h.ctx, "/vipd/sync")
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; ; i++ {
		st := h.view.Group("VI_1", nil)
		if st.Synced && st.Rev >= resp.Header.Revision {
			return
		}
		if i > 2000 {
			h.t.Fatalf("view stuck at rev %d, want %d", st.Rev, resp.Header.Revision)
		}
		time.Sleep(time.Millisecond)
	}
}

// step runs one wake-up of the loop (up to passesPerWake passes) after the
// view caught up, and returns when the loop asks to look again.
func (h *harness) step() time.Duration {
	h.t.Helper()
	h.sync()
	h.g.mu.Lock()
	h.g.cfg = h.g.shared
	retiring := h.g.retiring
	h.g.mu.Unlock()
	wake, _ := h.g.reconcile(h.ctx, retiring)
	return wake
}

// until steps the loop, advancing the clock by each requested wake (at
// most max per step), until cond holds or limit passes in virtual time.
func (h *harness) until(what string, limit time.Duration, cond func() bool) {
	h.t.Helper()
	end := h.clk.Now().Add(limit)
	for {
		w := h.step()
		if cond() {
			return
		}
		if !h.clk.Now().Before(end) {
			h.t.Fatalf("%s: not after %v of virtual time", what, limit)
		}
		if w <= 0 || w > 100*time.Millisecond {
			w = 100 * time.Millisecond
		}
		h.clk.Advance(w)
		if !h.noRenew && h.clk.Now().Sub(h.lease.Current().Renewed) >= renewEvery {
			h.lease.renew()
		}
	}
}

// leader returns the leader key's node and create revision ("" if absent).
func (h *harness) leader() (string, int64) {
	h.t.Helper()
	resp, err := h.cli.Get(h.ctx, h.keys.Leader("VI_1"))
	if err != nil {
		h.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision
}

// count returns how many keys are under prefix.
func (h *harness) count(prefix string) int64 {
	h.t.Helper()
	resp, err := h.cli.Get(h.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Count
}

// hold runs the loop until this node holds the group with its VIP bound.
func (h *harness) hold() {
	h.t.Helper()
	h.until("holding", 5*time.Second, func() bool {
		n, _ := h.leader()
		return n == h.node && h.host.Has(hvip) && h.g.vips.bound()
	})
}
