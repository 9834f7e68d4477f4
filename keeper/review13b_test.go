package keeper

// Second review of commit e4f7776 (relay and failsafe, docs/design.md
// §2.8, §2.9). Each test names the finding it shows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/peer"
	"golang.org/x/sys/unix"
)

// Finding B1. An unpromise names only addresses, not which promise it
// releases. One that is delivered late (the member was slow, the holder's
// Call timed out and it moved on) lands after a newer promise the holder
// asked for in a later outage, and drops it: the holder holds on a promise
// the member no longer keeps.
func TestReview13bStaleUnpromiseDropsANewerPromise(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	np := &peers{node: "N", timeout: 50 * time.Millisecond, leases: r13Down{}, kv: r13Down{}, keys: election.Keys{Prefix: "/vipd"}}
	n := r13Failsafe("N", np)
	gate := make(chan struct{})
	late := make(chan struct{})
	var handled atomic.Bool
	srv := peer.NewServer(peer.ServerConfig{Key: r13Key, Handler: func(ctx context.Context, from, op string, body json.RawMessage) (any, error) {
		switch op {
		case opPromise:
			return n.servePromise(ctx, from, body)
		case opUnpromise:
			if handled.CompareAndSwap(false, true) { // the first unpromise is slow to be handled (a GC pause, a busy CPU, a queue)
				<-gate
				defer close(late)
			}
			return n.serveUnpromise(ctx, from, body)
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

	hp := &peers{node: "H", client: peer.NewClient(peer.ClientConfig{Node: "H", Key: r13Key, Timeout: 200 * time.Millisecond})}
	h := r13Failsafe("H", hp)
	members := map[string]string{"H": "", "N": ln.Addr().String()}
	h.setClaim("G", []netip.Addr{a}, 7, members, false)

	// Outage 1: a promise; then the lease is renewed and covers it: release.
	h.round(ctx, 7)
	h.release(ctx, election.Lease{ID: 7, Renewed: time.Now(), Deadline: time.Now().Add(9 * time.Second), ServerExpiry: time.Now().Add(10 * time.Second)})
	if len(h.got) != 0 {
		t.Fatal("promises not released")
	}
	// Outage 2 (the unpromise has not been handled yet): a new promise.
	h.round(ctx, 7)
	hz := h.Horizon(members, []netip.Addr{a})
	if !hz.After(time.Now()) {
		t.Fatal("no promise in the second outage")
	}
	close(gate) // the stale unpromise is handled now
	<-late
	if now := time.Now(); now.Before(hz) && n.beginAcquire("G", []netip.Addr{a}) {
		t.Errorf("H holds %v on N's promise for %v more, yet N dropped it (a stale unpromise) and may acquire now",
			a, hz.Sub(now).Round(time.Millisecond))
	}
}

// Finding B2. During a failsafe hold with a synced view (the lease path
// broken, or the window in which the promises outlast the renewed lease),
// the holder rewrites its membership record: it admits a node that never
// promised (a new candidate) or deletes the record (no other member with
// an endpoint left in the view: the member that promised let its
// candidate record expire). The hold's member set (fsClaim, read by
// groupLease and the announcement gate) is only updated at the next pass,
// which no write wakes: until then the VIPs stay up on the old promises
// while etcd already admits the new node.
func TestReview13bFailsafeHolderWidensItsRecord(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	old := map[string]string{"A": "10.0.0.1:9843", "B": "ep-B"}
	for _, tc := range []struct {
		name  string
		cands []election.Candidate
	}{
		{"a new candidate X", r13Cands("B", "X")},
		{"the promising member's record expired", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lead := &r13Lead{nodes: maps.Clone(old), modRev: 10, rev: 11}
			g := r13Group(lead)
			c := election.Claim{Group: "VI_1", CreateRev: 10, Lease: 1, Addrs: []netip.Addr{a}}
			g.held.Claim = &c
			g.ms = membersState{claimRev: 10, base: maps.Clone(old), baseRev: 10, ok: true}
			g.fsClaim.Store(&fsClaim{claim: c, members: g.ms.union()})
			in := Inputs{Now: t0,
				Lease: election.Lease{ID: 1, Deadline: t0.Add(time.Second), ServerExpiry: t0.Add(1500 * time.Millisecond), Failsafe: true},
				View: election.GroupState{Synced: true, Rev: 11, Candidates: tc.cands,
					Members: map[netip.Addr]election.Members{a: {Nodes: maps.Clone(old), ModRev: 10}}}}
			g.updateMembers(context.Background(), in)
			hold := g.fsClaim.Load().members
			if lead.nodes == nil {
				t.Errorf("record deleted (every node may claim %v) while the failsafe hold rests on the promises of %v", a, r13Names(hold))
				return
			}
			for m := range lead.nodes {
				if _, ok := hold[m]; !ok {
					t.Errorf("record now admits %s (%v) while the failsafe hold rests on the promises of %v only", m, r13Names(lead.nodes), r13Names(hold))
				}
			}
		})
	}
}

// Finding B3. A failing weight check (the node stays eligible, and no
// better candidate exists) makes a failsafe holder release: nobody can
// take over until etcd returns, so the VIP is simply down, where with
// etcd the holder would keep it. A weight check that was already failing
// when etcd went away turns every outage into a VIP outage.
func TestReview13bFailsafeHolderDropsOnAWeightWithNoChallenger(t *testing.T) {
	in := holding(base())
	in.Self.Failing = []string{"haproxy-backup-path"} // a weight: still eligible
	in.Self.Priority = 100
	in.View.Candidates = []election.Candidate{{Node: "web-node-1", Priority: 90, State: election.StateBackup}}
	in.Session = election.Lease{}
	in.Lease = election.Lease{ID: lease, Deadline: t0.Add(1500 * time.Millisecond), ServerExpiry: t0.Add(2 * time.Second), Failsafe: true}
	if d, _ := Decide(in); d.Action == Release {
		t.Errorf("failsafe holder decided %v (%s) with no better candidate: with etcd it would hold; now the VIP is down until etcd returns", d.Action, d.Reason)
	}
	in.Lease = base().Lease
	in.Session = in.Lease
	if d, _ := Decide(in); d.Action != Hold {
		t.Fatalf("with etcd: %v (%s), want Hold", d.Action, d.Reason)
	}
}

// Finding B4 (left by the fix). Three nodes. n3 is down for a reboot while
// n1 holds: the record becomes {n1, n2}. n2 is in FAULT (its HAProxy is
// down; it stays a candidate, so rule 4 does not delete the record). n1
// then dies. n3 comes back healthy, reaches etcd, is the only eligible
// node, and the group is vacant: the record keeps it out until n2 recovers
// or n1 returns. The deletion rule only covers "nobody else to ask".
func TestReview13bStandbyRebootedWhileOtherInFaultStrands(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	p1 := etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	n2ok := &atomic.Bool{}
	n2ok.Store(true)
	// n1's peer key differs, so that nothing it sends through peers lands
	// when it dies (a crash, not a stop): only the membership record matters here.
	n1 := r13bStartKey(t, m, p1, rec, "web-node-1", 101, nil, []byte("review13b-other-peer-key-0123456789abcdef"))
	r13bStart(t, m, nil, rec, "web-node-2", 100, n2ok)
	n3 := r13bStart(t, m, nil, rec, "web-node-3", 99, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	r13WaitMembers(t, m, "web-node-1", "web-node-2", "web-node-3")

	n3.stop() // a reboot
	r13WaitMembers(t, m, "web-node-1", "web-node-2")
	n2ok.Store(false) // n2's HAProxy down: FAULT
	time.Sleep(500 * time.Millisecond)
	// The holder dies: cut from etcd and stopped before any peer relays
	// for it, so its resign cannot land (as after a crash); its keys go
	// with its lease.
	p1.Cut()
	n1.stop()
	rec.WaitFor(t, "", 10*time.Second)

	r13bStart(t, m, nil, rec, "web-node-3", 99, nil) // back, healthy
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h := rec.Holders(); len(h) == 1 && h[0] == "web-node-3" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("web-node-3 (healthy, reaching etcd, the only eligible node) never claimed the vacant group in 20 s: the record lists only web-node-1 (dead) and web-node-2 (FAULT)")
}

// r13bStart starts a node; with healthy set, the group tracks a check with
// weight 0 (FAULT while it is down).
func r13bStart(t *testing.T, m *etcdtest.Member, via *etcdtest.Proxy, rec *fakenet.Recorder, name string, prio int, healthy *atomic.Bool) *r13Node {
	t.Helper()
	return r13bStartKey(t, m, via, rec, name, prio, healthy, r13Key)
}

func r13bStartKey(t *testing.T, m *etcdtest.Member, via *etcdtest.Proxy, rec *fakenet.Recorder, name string, prio int, healthy *atomic.Bool, key []byte) *r13Node {
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
		y += "    track: [{check: haproxy}]\n"
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
		Peer:   &PeerOptions{Listener: ln, Advertise: ln.Addr().String(), Key: key, Failsafe: true},
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
	n := &r13Node{cancel: cancel, done: make(chan struct{})}
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

// Finding B5. servePromise writes the promise record (promiseFile.save:
// a write and a rename in the state directory) while holding f.mu, which
// every group pass (inputs: PromisedUntil, groupLease.Current: Horizon),
// every trackClaim and the announcement gate also take. A state directory
// that stalls (a hung disk, a full journal on a slow device, here a FIFO)
// stalls every group loop of the node: a holder of another group misses
// its lifetime refreshes and loses its VIP.
func TestReview13bPromiseRecordWriteBlocksEveryGroup(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/promised"
	if err := unix.Mkfifo(path+".tmp", 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	np := &peers{node: "N", timeout: 50 * time.Millisecond, leases: r13Down{}, kv: r13Down{}, keys: election.Keys{Prefix: "/vipd"}}
	n := r13Failsafe("N", np)
	n.file = promiseFile(path)
	a, b := netip.MustParseAddr("192.168.20.15"), netip.MustParseAddr("192.168.20.99")
	body, _ := json.Marshal(promiseRequest{To: "N", Lease: 7, Addrs: []netip.Addr{a}})
	served := make(chan struct{})
	go func() { defer close(served); n.servePromise(context.Background(), "H", body) }()
	defer func() {
		if f, err := os.OpenFile(path+".tmp", os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil { // unblock the writer
			<-served
			f.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond) // the promise is being recorded
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.PromisedUntil([]netip.Addr{b}) // another group's pass, for an unrelated address
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Errorf("a group pass of this node (another address) is blocked for 1 s behind a promise record write")
	}
}
