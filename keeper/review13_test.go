package keeper

// Review of the relay and failsafe (docs/design.md §2.8, §2.9): tests that
// demonstrate findings. Each test names the finding it shows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/peer"
)

var r13Key = []byte("review13-peer-key-0123456789abcdef-xyz")

// r13Down is a LeaseClient and KV standing in for a member that cannot
// reach etcd: every request fails as a refused connection would.
type r13Down struct{ clientv3.KV }

var errR13Down = errors.New("dial tcp 10.0.0.9:2379: connect: connection refused")

func (r13Down) Grant(context.Context, int64) (*clientv3.LeaseGrantResponse, error) {
	return nil, errR13Down
}
func (r13Down) KeepAliveOnce(context.Context, clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	return nil, errR13Down
}
func (r13Down) Revoke(context.Context, clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	return nil, errR13Down
}
func (r13Down) Get(context.Context, string, ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return nil, errR13Down
}

func r13Failsafe(node string, p *peers) *failsafe {
	return &failsafe{
		node: node, clk: clock.Real{}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), obs: nopObserver{}, peers: p,
		length: 3 * time.Second, holds: true, margin: 500 * time.Millisecond, suspend: func() time.Duration { return 0 },
		poke: func(string) {}, promised: map[netip.Addr]time.Time{}, promisedTo: map[netip.Addr]string{}, promisedSeq: map[netip.Addr]uint64{}, acquiring: map[string][]netip.Addr{},
		claimed: map[string][]netip.Addr{}, got: map[string]promise{}, holding: map[string]map[string]string{},
		claimLease: map[string]clientv3.LeaseID{}, gotFrom: map[string]string{}, lingering: map[string]bool{},
	}
}

// Finding 1. A promise covers the addresses its request named, but the
// holder files it by node (failsafe.got) and Horizon uses it for any claim.
// A claim that becomes failsafe-eligible after a round (a fresh claim's
// Await ends while etcd is down) is held on a promise that never covered
// its address: the member may claim that address at once.
func TestReview13PromiseCountedForAnAddressItDidNotCover(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.168.20.15"), netip.MustParseAddr("192.168.20.16")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Member N: cannot reach etcd, serves promises.
	np := &peers{node: "N", timeout: 50 * time.Millisecond, leases: r13Down{}, kv: r13Down{}, keys: election.Keys{Prefix: "/vipd"}}
	n := r13Failsafe("N", np)
	srv := peer.NewServer(peer.ServerConfig{Key: r13Key, Handler: func(ctx context.Context, from, op string, body json.RawMessage) (any, error) {
		if op == opPromise {
			return n.servePromise(ctx, from, body)
		}
		return nil, peer.ErrUnknownOp
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	ep := ln.Addr().String()

	// Holder H: holds G1 (a1) under the failsafe; a round collects N's
	// promise for a1.
	hp := &peers{node: "H", client: peer.NewClient(peer.ClientConfig{Node: "H", Key: r13Key, Timeout: 2 * time.Second})}
	h := r13Failsafe("H", hp)
	members := map[string]string{"H": "", "N": ep}
	h.setClaim("G1", []netip.Addr{a1}, 7, members, false)
	h.round(ctx, 7)
	if h.Horizon(members, []netip.Addr{a1}).IsZero() {
		t.Fatal("no promise collected for G1")
	}

	// G2 (a2) becomes failsafe-eligible (its Await ended): before the next
	// round, its failsafe lease already rests on N's promise for a1.
	h.setClaim("G2", []netip.Addr{a2}, 7, members, false)
	hz := h.Horizon(members, []netip.Addr{a2})
	now := time.Now()
	if hz.After(now) && n.beginAcquire("G2", []netip.Addr{a2}) {
		t.Errorf("H may hold %v until %v (fence %v) on N's promise, yet N never promised %v and may start an acquire of it now",
			a2, hz.Sub(now).Round(time.Millisecond), hz.Add(-h.margin).Sub(now).Round(time.Millisecond), a2)
	}
}

// Finding 2. updateMembers takes the view's copy of the record as the base
// whenever no write is pending, even right after a confirmed write the view
// has not caught up with: base regresses to the older set, and the union a
// failsafe hold asks misses a node the record in etcd admits.
type r13Lead struct {
	leadership
	nodes  map[string]string
	modRev int64
	rev    int64
	// lose: the next write lands but its answer is lost; fail: writes
	// fail without landing.
	lose, fail bool
	pubLeases  []clientv3.LeaseID
}

func (l *r13Lead) WriteMembers(_ context.Context, c election.Claim, want map[string]string, seen map[netip.Addr]int64) (bool, int64, error) {
	if l.fail {
		return false, 0, context.DeadlineExceeded
	}
	for _, a := range c.Addrs {
		if seen[a] != l.modRev {
			return false, 0, nil
		}
	}
	l.rev++
	l.nodes, l.modRev = maps.Clone(want), l.rev
	if l.lose {
		l.lose = false
		return false, 0, context.DeadlineExceeded
	}
	return true, l.rev, nil
}

func r13Group(lead leadership) *group {
	return &group{name: "VI_1", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		env: &groupEnv{node: "A", peerEndpoint: "10.0.0.1:9843", etcd: lead, fs: r13Failsafe("A", nil)}}
}

func r13Cands(nodes ...string) []election.Candidate {
	var out []election.Candidate
	for _, n := range nodes {
		out = append(out, election.Candidate{Node: n, Peer: "ep-" + n})
	}
	return out
}

func r13Names(m map[string]string) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestReview13MembersBaseRegressesToAStaleView(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	old := map[string]string{"A": "10.0.0.1:9843", "B": "ep-B"}
	lead := &r13Lead{nodes: maps.Clone(old), modRev: 10, rev: 11}
	g := r13Group(lead)
	g.held.Claim = &election.Claim{Group: "VI_1", CreateRev: 10, Lease: 1, Addrs: []netip.Addr{a}}
	g.ms = membersState{claimRev: 10, base: maps.Clone(old), ok: true}
	// X's candidate record appears; the view (rev 11) still shows the
	// record written with the claim.
	in := Inputs{View: election.GroupState{Synced: true, Rev: 11, Candidates: r13Cands("B", "X"),
		Members: map[netip.Addr]election.Members{a: {Nodes: maps.Clone(old), ModRev: 10}}}, Addrs: []netip.Addr{a}}
	g.updateMembers(context.Background(), in)
	if _, ok := lead.nodes["X"]; !ok {
		t.Fatalf("record %v after the write, want X in it", r13Names(lead.nodes))
	}
	// The next pass runs before the view applied the write's event.
	g.updateMembers(context.Background(), in)
	u := g.ms.union()
	for n := range lead.nodes {
		if _, ok := u[n]; !ok {
			t.Errorf("etcd's record admits %v, but a failsafe hold would ask only %v: %s could claim while the holder relies on the others",
				r13Names(lead.nodes), r13Names(u), n)
		}
	}
}

// Finding 5. A write whose answer was lost but which landed stays in
// ms.sent for good once the view shows it (the record then equals want, so
// no write confirms it): the union keeps a departed member, whose promise
// can never come, so the failsafe is off until the membership changes.
func TestReview13LandedWriteNeverSettles(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	old := map[string]string{"A": "10.0.0.1:9843", "B": "ep-B", "Y": "ep-Y"}
	lead := &r13Lead{nodes: maps.Clone(old), modRev: 10, rev: 11, lose: true}
	g := r13Group(lead)
	g.held.Claim = &election.Claim{Group: "VI_1", CreateRev: 10, Lease: 1, Addrs: []netip.Addr{a}}
	g.ms = membersState{claimRev: 10, base: maps.Clone(old), ok: true}
	// Y left (its candidate record is gone): A writes {A, B}; the write
	// lands, its answer is lost.
	in := Inputs{View: election.GroupState{Synced: true, Rev: 11, Candidates: r13Cands("B"),
		Members: map[netip.Addr]election.Members{a: {Nodes: maps.Clone(old), ModRev: 10}}}}
	g.updateMembers(context.Background(), in)
	// The view catches up with the landed write, and stays there.
	in.View.Rev = lead.rev
	in.View.Members = map[netip.Addr]election.Members{a: {Nodes: maps.Clone(lead.nodes), ModRev: lead.modRev}}
	for range 10 {
		g.updateMembers(context.Background(), in)
	}
	if u := g.ms.union(); len(u) != len(lead.nodes) {
		t.Errorf("etcd holds %v (the view shows it, at a revision no pending write can follow), but the failsafe keeps asking %v",
			r13Names(lead.nodes), r13Names(u))
	}
}

// Finding 3. Reclaim is decided before the fence check and without
// checking that the promises still cover the claim: a holder whose pass
// comes after its horizon (a stall) reclaims and, the new claim not being
// fresh, binds at once without the Await grace.
func TestReview13ReclaimAfterTheHorizonPassed(t *testing.T) {
	in := holding(base())
	in.Session = election.Lease{ID: lease + 1, Deadline: t0.Add(2500 * time.Millisecond), ServerExpiry: t0.Add(3 * time.Second)}
	// The promises' horizon ended 5 s ago (the pass comes after a stall).
	in.Lease = election.Lease{ID: lease, Deadline: t0.Add(-5500 * time.Millisecond), ServerExpiry: t0.Add(-5 * time.Second), Failsafe: true}
	d, _ := Decide(in)
	if d.Action == Reclaim {
		t.Errorf("decided %v (%s) though the failsafe fence passed %v ago: others may have claimed and lost the address meanwhile",
			d.Action, d.Reason, in.Now.Sub(in.Lease.Deadline))
	}
}

// Finding 4. Two nodes. The standby is down for a while (a reboot): the
// holder's membership record drops it. The holder then dies (here: cut
// from etcd for good). The standby comes back, healthy, etcd works, and the
// group is vacant — but the record lists only the dead holder, so the
// standby never claims: stranded until the old holder returns or an
// operator deletes <prefix>/members/<ip>.
func TestReview13StandbyDownThenHolderDiesStrandsTheGroup(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	p1 := etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	n1 := r13Start(t, m, p1, rec, "web-node-1", 101)
	n2 := r13Start(t, m, nil, rec, "web-node-2", 100)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	r13WaitMembers(t, m, "web-node-1", "web-node-2")

	n2.stop()            // a reboot of the standby
	r13WaitMembers(t, m) // a record naming no one to promise is deleted
	p1.Cut()             // the holder dies (its lease expires; no peer can relay)
	rec.WaitFor(t, "", 10*time.Second)
	n1.stop()

	r13Start(t, m, nil, rec, "web-node-2", 100) // the standby is back
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h := rec.Holders(); len(h) == 1 && h[0] == "web-node-2" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("web-node-2 (healthy, reaching etcd) never claimed the vacant group in 20 s: the record left by the dead holder lists only web-node-1")
}

type r13Node struct {
	k      *Keeper
	cancel context.CancelFunc
	done   chan struct{}
}

func (n *r13Node) stop() {
	n.cancel()
	<-n.done
}

func r13Start(t *testing.T, m *etcdtest.Member, via *etcdtest.Proxy, rec *fakenet.Recorder, name string, prio int) *r13Node {
	return r13StartTracked(t, m, via, rec, name, prio, nil)
}

// r13StartTracked starts a node; with healthy set, the group tracks a check
// (weight 2) that fails while healthy is false.
func r13StartTracked(t *testing.T, m *etcdtest.Member, via *etcdtest.Proxy, rec *fakenet.Recorder, name string, prio int, healthy *atomic.Bool) *r13Node {
	t.Helper()
	endpoint, cli := m.Endpoint, m.Client(t)
	if via != nil {
		endpoint, cli = via.Endpoint, via.Client(t)
	}
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
	if healthy != nil {
		y += "    track: [{check: haproxy, weight: 2}]\n"
	}
	cfg, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := fakenet.NewHost(name, rec)
	k := New(Options{Config: cfg, Client: cli, Clock: clock.Real{}, Log: testLog(t).With("node", name),
		Peer:   &PeerOptions{Listener: ln, Advertise: ln.Addr().String(), Key: r13Key, Failsafe: true},
		Ifaces: host, Announce: host.Announce,
		Probes: func(string, config.Check) (checks.Probe, error) {
			return func(context.Context) error {
				if healthy != nil && !healthy.Load() {
					return errors.New("haproxy down")
				}
				return nil
			}, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	n := &r13Node{k: k, cancel: cancel, done: make(chan struct{})}
	var once atomic.Bool
	go func() {
		defer close(n.done)
		k.Run(ctx)
	}()
	t.Cleanup(func() {
		if once.CompareAndSwap(false, true) {
			cancel()
			<-n.done
		}
	})
	return n
}

func r13WaitMembers(t *testing.T, m *etcdtest.Member, nodes ...string) {
	t.Helper()
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Members(netip.MustParseAddr("192.168.20.15"))
	want := fmt.Sprint(nodes)
	var got []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := cli.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if len(resp.Kvs) == 1 {
			var ms election.Members
			if err := json.Unmarshal(resp.Kvs[0].Value, &ms); err != nil {
				t.Fatal(err)
			}
			got = ms.Names()
		}
		if fmt.Sprint(got) == want {
			return
		}
	}
	t.Fatalf("membership record lists %v, want %v", got, nodes)
}

// Finding 7. A promise is filed under the member name the holder asked,
// whoever answered at that endpoint: the reply does not name its node, and
// servePromise does not check that it is the node asked. If the recorded
// endpoint of M now reaches another vipd N (M restarted elsewhere, its old
// address reused), N's promise is counted as M's while M promised nothing.
func TestReview13PromiseFromWhoeverAnswersTheEndpoint(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	np := &peers{node: "N", timeout: 50 * time.Millisecond, leases: r13Down{}, kv: r13Down{}, keys: election.Keys{Prefix: "/vipd"}}
	n := r13Failsafe("N", np)
	srv := peer.NewServer(peer.ServerConfig{Key: r13Key, Handler: func(ctx context.Context, from, op string, body json.RawMessage) (any, error) {
		return n.servePromise(ctx, from, body)
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	hp := &peers{node: "H", client: peer.NewClient(peer.ClientConfig{Node: "H", Key: r13Key, Timeout: 2 * time.Second})}
	h := r13Failsafe("H", hp)
	members := map[string]string{"H": "", "M": ln.Addr().String()} // the record's endpoint of M, now N's
	h.setClaim("G", []netip.Addr{a}, 7, members, false)
	h.round(ctx, 7)
	m := r13Failsafe("M", nil)
	if hz := h.Horizon(members, []netip.Addr{a}); hz.After(time.Now()) && m.beginAcquire("G", []netip.Addr{a}) {
		t.Errorf("H holds on a promise filed as M's (answered by N); M promised nothing and may claim %v", a)
	}
}

// Finding 8. A failsafe holder (nobody reaches etcd; its view is stale)
// still yields to a challenger it saw before the outage once that
// challenger's preempt_delay runs out: it removes the VIP, its resign
// cannot land, and the challenger has promised not to claim: the VIP is
// down until etcd returns, for a preemption, not a health failure.
func TestReview13FailsafeHolderYieldsIntoTheOutage(t *testing.T) {
	in := holding(base())
	in.View.Synced = false // etcd unreachable: the view is what it last saw
	in.Session = election.Lease{}
	in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
	c := election.Candidate{Node: "web-node-1", Priority: 103, State: election.StateBackup, Preempt: true, PreemptDelay: 10 * time.Second}
	in.View.Candidates = []election.Candidate{c}
	in.Mem.Challenger, in.Mem.ChallengerSince = "web-node-1", t0.Add(-10*time.Second) // seen 5 s before the outage
	if d, _ := Decide(in); d.Action == Release {
		t.Errorf("failsafe holder decided %v (%s): the VIP goes down and nobody can claim it until etcd returns", d.Action, d.Reason)
	}
}

// Finding 9. The view shows the address's membership record gone (deleted
// by hand, e.g. following the design's advice for a stranded address):
// etcd now admits every node. The holder keeps its old base and stays
// failsafe-capable on the old members' promises while its rewrite has not
// landed; if etcd becomes unreachable now, a node outside that set may
// claim once the holder's lease expires, while the holder keeps its VIP.
func TestReview13RecordDeletedUnderTheClaimKeepsFailsafe(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	old := map[string]string{"A": "10.0.0.1:9843", "B": "ep-B"}
	lead := &r13Lead{fail: true} // etcd: no record; the rewrite does not get through
	g := r13Group(lead)
	g.held.Claim = &election.Claim{Group: "VI_1", CreateRev: 10, Lease: 1, Addrs: []netip.Addr{a}}
	g.ms = membersState{claimRev: 10, base: maps.Clone(old), ok: true}
	in := Inputs{View: election.GroupState{Synced: true, Rev: 20, Candidates: r13Cands("B"),
		Members: map[netip.Addr]election.Members{}}}
	g.updateMembers(context.Background(), in)
	if u := g.ms.union(); u != nil {
		t.Errorf("the view shows no record (every node may claim), yet a failsafe hold would rest on the promises of %v", r13Names(u))
	}
}

func (l *r13Lead) Publish(_ context.Context, _ string, _ election.Candidate, lease clientv3.LeaseID, _ int64) (election.PublishResult, error) {
	l.pubLeases = append(l.pubLeases, lease)
	return election.PublishResult{Written: true, ModRev: 30}, nil
}

// Finding 10. publish plans against the session's lease but writes the
// record on in.Lease.ID, which under a failsafe is the claim's lease: after
// etcd returns with that lease expired (the session has a new one) and
// before the Reclaim lands, the record goes to a dead lease (the write
// fails, and its failure backs off the group's etcd retry, which the
// Reclaim shares).
func TestReview13PublishUsesTheFailsafeLease(t *testing.T) {
	lead := &r13Lead{}
	g := r13Group(lead)
	g.cfg = config.Group{Name: "VI_1"}
	in := Inputs{Now: t0, Self: election.Candidate{Node: "A", Priority: 100},
		Session: election.Lease{ID: lease + 1, Deadline: t0.Add(2 * time.Second)},
		Lease:   election.Lease{ID: lease, Deadline: t0.Add(time.Second), ServerExpiry: t0.Add(1500 * time.Millisecond), Failsafe: true},
		View:    election.GroupState{Synced: true, Rev: 20}}
	g.publish(context.Background(), in)
	for _, l := range lead.pubLeases {
		if l != in.Session.ID {
			t.Errorf("candidate record written on lease %x (the failsafe claim's, expired), want the session's %x", int64(l), int64(in.Session.ID))
		}
	}
}

// Finding 11. An etcd leader election (here: both nodes cut from etcd for
// 1.2 s, as a member without a leader answers nothing useful) delays the
// holder's renewals past RenewEvery+HedgeAfter, so the holder asks for
// promises; the standby cannot reach etcd either, so it promises not to
// claim for a lease TTL. HAProxy then fails on the holder just after etcd
// is back: the holder releases gracefully, but the standby may not claim
// until its promise ends: a ~10 ms failover becomes seconds.
func TestReview13PromiseAfterAnEtcdBlipDelaysFailover(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	p1, p2 := etcdtest.NewProxy(t, m), etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	h1 := &atomic.Bool{}
	h1.Store(true)
	r13StartTracked(t, m, p1, rec, "web-node-1", 101, h1)
	h2 := &atomic.Bool{}
	h2.Store(true)
	n2 := r13StartTracked(t, m, p2, rec, "web-node-2", 100, h2)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	r13WaitMembers(t, m, "web-node-1", "web-node-2")
	time.Sleep(500 * time.Millisecond)

	p1.Cut()
	p2.Cut()
	time.Sleep(1200 * time.Millisecond) // an etcd election's worth
	p1.Heal()
	p2.Heal()
	healed := time.Now()
	// Renewals back to normal: the holder releases the promise it asked
	// for (unpromise). Waited for rather than slept on (a busy machine
	// takes longer than the usual 300 ms), but only for 1.5 s: the
	// promise, given during the blip, would only run out on its own 2 s
	// or more after the heal.
	for vip := []netip.Addr{netip.MustParseAddr("192.168.20.15")}; time.Now().Before(n2.k.fs.PromisedUntil(vip)); time.Sleep(10 * time.Millisecond) {
		if time.Since(healed) > 1500*time.Millisecond {
			t.Fatalf("web-node-2 still bound by its promise %v after etcd came back: the holder did not release it", time.Since(healed).Round(time.Millisecond))
		}
	}
	h1.Store(false) // HAProxy dies on the holder
	gone := rec.WaitFor(t, "", 5*time.Second)
	bound := rec.WaitFor(t, "web-node-2", 10*time.Second)
	if d := bound.Sub(gone); d > time.Second {
		t.Errorf("graceful failover took %v after the holder removed its VIP (a promise given during a 1.2 s etcd blip blocked the standby)", d.Round(time.Millisecond))
	}
}
