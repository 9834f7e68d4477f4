package keeper_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/keeper"
	"github.com/vipd/vipd/netif"
)

// recorder watches which nodes have the VIP bound, across all fake hosts,
// and accumulates the time two or more held it at once.
type recorder struct {
	mu        sync.Mutex
	holders   map[string]bool
	dualSince time.Time
	dual      time.Duration
	log       []string
	changed   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{holders: map[string]bool{}, changed: make(chan struct{})}
}

func (r *recorder) set(node string, bound bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holders[node] == bound {
		return
	}
	now := time.Now()
	r.holders[node] = bound
	r.log = append(r.log, fmt.Sprintf("%s %s bound=%v", now.Format("15:04:05.000"), node, bound))
	n := 0
	for _, b := range r.holders {
		if b {
			n++
		}
	}
	switch {
	case n > 1 && r.dualSince.IsZero():
		r.dualSince = now
	case n <= 1 && !r.dualSince.IsZero():
		r.dual += now.Sub(r.dualSince)
		r.dualSince = time.Time{}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) holderList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, b := range r.holders {
		if b {
			out = append(out, n)
		}
	}
	return out
}

// waitFor waits until exactly want holds (want "" = nobody).
func (r *recorder) waitFor(t *testing.T, want string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		h := r.holderList()
		if (want == "" && len(h) == 0) || (len(h) == 1 && h[0] == want) {
			return time.Now()
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("holder is %v after %v, want %q; history:\n%s", h, timeout, want, strings.Join(r.history(), "\n"))
		}
	}
}

func (r *recorder) history() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *recorder) dualHolding() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dual
	if !r.dualSince.IsZero() {
		d += time.Since(r.dualSince)
	}
	return d
}

// fakeHost is an in-memory interface table standing in for netlink in the
// no-root tier (the namespace tier runs the real one).
type fakeHost struct {
	node   string
	rec    *recorder
	mu     sync.Mutex
	addrs  map[netip.Prefix]time.Duration // prefix -> last lifetime
	events chan netif.Event
	garps  atomic.Int64
}

func newFakeHost(node string, rec *recorder) *fakeHost {
	return &fakeHost{node: node, rec: rec, addrs: map[netip.Prefix]time.Duration{}, events: make(chan netif.Event, 16)}
}

func (h *fakeHost) Replace(ifname string, p netip.Prefix, lifetime time.Duration) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if lifetime < time.Second {
		return false, netif.ErrLifetimeTooShort
	}
	_, had := h.addrs[p]
	h.addrs[p] = lifetime
	h.rec.set(h.node, true)
	return !had, nil
}

func (h *fakeHost) Remove(ifname string, p netip.Prefix) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, had := h.addrs[p]
	delete(h.addrs, p)
	if len(h.addrs) == 0 {
		h.rec.set(h.node, false)
	}
	return had, nil
}

func (h *fakeHost) LinkUp(string) (bool, error) { return true, nil }

func (h *fakeHost) Watch(ctx context.Context, _ []string) (<-chan netif.Event, error) {
	out := make(chan netif.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-h.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (h *fakeHost) announce(string, netip.Addr) error { h.garps.Add(1); return nil }

// node is one running keeper.
type node struct {
	name   string
	host   *fakeHost
	k      *keeper.Keeper
	cancel context.CancelFunc
	done   chan struct{}
	health *atomic.Bool
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

func testConfig(t *testing.T, endpoint, name string, prio int, tracked bool) config.Config {
	t.Helper()
	y := fmt.Sprintf(`
node: %s
etcd: {endpoints: [%s], lease_ttl: 3s, request_timeout: 300ms}
metrics: {listen: ""}
checks:
  haproxy: {type: http, url: "http://127.0.0.1:1/healthz", interval: 20ms, timeout: 20ms, rise: 2, fall: 2}
groups:
  - name: VI_1
    interface: eth0
    addresses: [192.168.20.15/24]
    priority: %d
    backoff_step: 50ms
    garp: {count: 2, interval: 10ms}
`, name, endpoint, prio)
	if tracked {
		y += "    track: [{check: haproxy, weight: 2}]\n"
	}
	c, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startNode(t *testing.T, m *etcdtest.Member, rec *recorder, name string, prio int, tracked bool) *node {
	t.Helper()
	cfg := testConfig(t, m.Endpoint, name, prio, tracked)
	host := newFakeHost(name, rec)
	health := &atomic.Bool{}
	health.Store(true)
	opts := keeper.Options{
		Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: logger(t).With("test", t.Name()),
		Ifaces: host, Announce: host.announce,
	}
	opts.Probes = func(string, config.Check) (checks.Probe, error) {
		return func(context.Context) error {
			if health.Load() {
				return nil
			}
			return fmt.Errorf("haproxy down")
		}, nil
	}
	k := keeper.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{name: name, host: host, k: k, cancel: cancel, done: make(chan struct{}), health: health}
	go func() {
		defer close(n.done)
		if err := k.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	t.Cleanup(n.stop)
	return n
}

func leaderKey(t *testing.T, cli *clientv3.Client) (string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), election.Keys{Prefix: "/vipd"}.Leader("VI_1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision
}

func TestHigherPriorityWins(t *testing.T) {
	m := etcdtest.Start(t)
	rec := newRecorder()
	startNode(t, m, rec, "web-node-2", 100, false)
	startNode(t, m, rec, "web-node-1", 101, false)
	rec.waitFor(t, "web-node-1", 10*time.Second)
	// It stays there.
	time.Sleep(500 * time.Millisecond)
	rec.waitFor(t, "web-node-1", 0)
	if holder, _ := leaderKey(t, m.Client(t)); holder != "web-node-1" {
		t.Errorf("leader key names %q, want web-node-1", holder)
	}
	if d := rec.dualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestSeedFailoverAndPreemptBack(t *testing.T) {
	m := etcdtest.Start(t)
	rec := newRecorder()
	n1 := startNode(t, m, rec, "web-node-1", 101, true)
	startNode(t, m, rec, "web-node-2", 100, true)
	rec.waitFor(t, "web-node-1", 10*time.Second)
	for i := 0; n1.host.garps.Load() == 0; i++ {
		if i == 100 {
			t.Fatal("no announcement within 1s of binding")
		}
		time.Sleep(10 * time.Millisecond)
	}

	n1.health.Store(false) // 101 < 102
	rec.waitFor(t, "web-node-2", 5*time.Second)
	n1.health.Store(true) // 103 > 102: preempt back
	rec.waitFor(t, "web-node-1", 5*time.Second)
	if d := rec.dualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, strings.Join(rec.history(), "\n"))
	}
}

func TestGracefulStopHandsOverWithin100ms(t *testing.T) {
	m := etcdtest.Start(t)
	rec := newRecorder()
	n1 := startNode(t, m, rec, "web-node-1", 101, false)
	startNode(t, m, rec, "web-node-2", 100, false)
	rec.waitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(300 * time.Millisecond) // let candidate records settle

	go n1.stop()
	off := rec.waitFor(t, "", 5*time.Second)
	on := rec.waitFor(t, "web-node-2", 5*time.Second)
	gap := on.Sub(off)
	t.Logf("handover: VIP off web-node-1 -> on web-node-2 in %v", gap)
	if gap > 100*time.Millisecond {
		t.Errorf("handover took %v, want ≤ 100ms", gap)
	}
	if d := rec.dualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestLeaseRevokedOtherAcquires(t *testing.T) {
	m := etcdtest.Start(t)
	rec := newRecorder()
	n1 := startNode(t, m, rec, "web-node-1", 101, false)
	startNode(t, m, rec, "web-node-2", 100, false)
	rec.waitFor(t, "web-node-1", 10*time.Second)
	time.Sleep(300 * time.Millisecond)

	// Pretend the server expired web-node-1's lease (as after a partition):
	// its next renewal finds no lease and its claim is void.
	id := n1.k.Session().Current().ID
	if _, err := m.Client(t).Revoke(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	// web-node-2 is the only candidate with a live record at first, so it
	// takes the group; web-node-1 comes back with a new lease and preempts
	// (101 > 100), which is the configured policy.
	deadline := time.Now().Add(5 * time.Second)
	sawN2 := false
	for time.Now().Before(deadline) && !sawN2 {
		for _, line := range rec.history() {
			sawN2 = sawN2 || strings.HasSuffix(line, "web-node-2 bound=true")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !sawN2 {
		t.Fatalf("web-node-2 never acquired after web-node-1's lease was revoked; history:\n%s", strings.Join(rec.history(), "\n"))
	}
	rec.waitFor(t, "web-node-1", 10*time.Second)
	if got := n1.k.Session().Current().ID; got == id {
		t.Errorf("web-node-1 still uses the revoked lease %x", id)
	}
}

func TestNeverHoldsAfterKeyDeleted(t *testing.T) {
	m := etcdtest.Start(t)
	rec := newRecorder()
	startNode(t, m, rec, "web-node-1", 101, false)
	rec.waitFor(t, "web-node-1", 10*time.Second)
	_, rev := leaderKey(t, m.Client(t))

	// Delete the key behind the holder's back and keep it deleted by
	// writing a leader key for a node that does not exist, on no lease.
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Leader("VI_1")
	if _, err := cli.Txn(context.Background()).
		Then(clientv3.OpDelete(key), clientv3.OpPut(key+"-x", "")).Commit(); err != nil {
		t.Fatal(err)
	}
	off := rec.waitFor(t, "", 2*time.Second)
	t.Logf("VIP removed after the key was deleted (at %v)", off.Format("15:04:05.000"))
	// The group is vacant again, so web-node-1 may claim it anew: only
	// with a new key (a new CreateRevision).
	rec.waitFor(t, "web-node-1", 5*time.Second)
	holder, rev2 := leaderKey(t, cli)
	if holder != "web-node-1" || rev2 <= rev {
		t.Errorf("re-acquired with key (%q, rev %d), want a new key for web-node-1 after rev %d", holder, rev2, rev)
	}
}
