package keeper_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/keeper"
)

// failsafePair starts web-node-1 (101) and web-node-2 (100), each behind a
// proxy to etcd the test can cut, with the peer channel and the failsafe
// on, and waits until web-node-1 holds and the address's membership
// record lists both.
func failsafePair(t *testing.T) (m *etcdtest.Member, rec *fakenet.Recorder, n1, n2 *keepertest.Node, p1, p2 *etcdtest.Proxy) {
	t.Helper()
	m = etcdtest.Start(t)
	p1, p2 = etcdtest.NewProxy(t, m), etcdtest.NewProxy(t, m)
	rec = fakenet.NewRecorder()
	n1 = keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, Via: p1, Peer: true, Failsafe: true})
	n2 = keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, Via: p2, Peer: true, Failsafe: true})
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	waitMembers(t, m, "web-node-1", "web-node-2")
	return
}

// waitMembers waits until the VIP's membership record lists exactly nodes.
func waitMembers(t *testing.T, m *etcdtest.Member, nodes ...string) {
	t.Helper()
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Members(vip)
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
		if strings.Join(got, ",") == strings.Join(nodes, ",") {
			return
		}
	}
	t.Fatalf("membership record of %v lists %v, want %v", vip, got, nodes)
}

func history(rec *fakenet.Recorder) string { return strings.Join(rec.History(), "\n") }

// Nobody reaches etcd for 8 s (longer than the lease TTL: the holder's
// lease expires at the server meanwhile), every peer reachable: the holder
// keeps the VIP on its peer's promise, and when etcd comes back it claims
// anew with the VIP still bound. No move, no gap, never two holders.
func TestFailsafeKeepsVIPWhileNobodyReachesEtcd(t *testing.T) {
	t.Parallel()
	_, rec, n1, _, p1, p2 := failsafePair(t)
	before := len(rec.History())
	p1.Cut()
	p2.Cut()
	deadline := time.Now().Add(8 * time.Second)
	sawFailsafe := false
	for time.Now().Before(deadline) {
		if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-1" {
			t.Fatalf("holders %v while etcd was unreachable, want web-node-1; history:\n%s", h, history(rec))
		}
		if st, _ := n1.K.GroupMode("VI_1"); st == "failsafe" {
			sawFailsafe = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawFailsafe {
		t.Error("web-node-1 never reported MASTER (failsafe)")
	}
	p1.Heal()
	p2.Heal()
	time.Sleep(5 * time.Second)
	if got := rec.History(); len(got) != before {
		t.Errorf("the VIP moved or went down: history:\n%s", history(rec))
	}
	if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-1" {
		t.Errorf("holders %v after etcd came back, want web-node-1", h)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
	if st, _ := n1.K.GroupMode("VI_1"); st != "" {
		t.Errorf("web-node-1 still reports mode %q after etcd came back", st)
	}
}

// Nobody reaches etcd, and then the peer stops answering: the holder's
// hold ends with the last promise (fail closed), well before anybody could
// claim, and nobody binds until etcd is back.
func TestFailsafeEndsWithoutThePeersPromise(t *testing.T) {
	t.Parallel()
	_, rec, _, n2, p1, p2 := failsafePair(t)
	p1.Cut()
	p2.Cut()
	time.Sleep(4 * time.Second) // in failsafe: the lease has expired at the server
	if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-1" {
		t.Fatalf("holders %v, want web-node-1 under the failsafe; history:\n%s", h, history(rec))
	}
	n2.Stop() // returns once its peer server has stopped: no promise after this
	stopped := time.Now()
	gone := rec.WaitFor(t, "", 5*time.Second)
	t.Logf("VIP removed %v after the only peer stopped promising (promise 3 s, fence 0.5 s before its end)", gone.Sub(stopped).Round(time.Millisecond))
	if gone.Sub(stopped) > 3*time.Second {
		t.Errorf("VIP removed %v after the last promise could have been given, later than the promise lasts (3 s)", gone.Sub(stopped))
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

// Nobody reaches etcd and HAProxy fails on the holder: it removes the VIP
// (health still rules), and nobody can bind until etcd returns; then the
// peer takes over.
func TestFailsafeHealthStillRules(t *testing.T) {
	t.Parallel()
	_, rec, n1, _, p1, p2 := failsafePair(t)
	p1.Cut()
	p2.Cut()
	time.Sleep(4 * time.Second)
	n1.Healthy.Store(false)
	rec.WaitFor(t, "", 3*time.Second)
	time.Sleep(3 * time.Second)
	if h := rec.Holders(); len(h) != 0 {
		t.Fatalf("holders %v while nobody reaches etcd; history:\n%s", h, history(rec))
	}
	p1.Heal()
	p2.Heal()
	rec.WaitFor(t, "web-node-2", 15*time.Second)
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, history(rec))
	}
}

// The closure of the membership: a third node, better than both, joins
// while the two recorded members cannot reach etcd, and it can. The
// holder's lease expires at the server and the group looks vacant to the
// newcomer, but the address's membership record does not admit it: it
// must not claim while the failsafe hold may stand. Once etcd is back the
// holder claims anew, records the newcomer, and the newcomer preempts.
func TestFailsafeNewcomerCannotClaim(t *testing.T) {
	t.Parallel()
	m, rec, _, _, p1, p2 := failsafePair(t)
	p1.Cut()
	p2.Cut()
	n3 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-3", Priority: 200, Tracked: true, Peer: true, Failsafe: true})
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-1" {
			t.Fatalf("holders %v while the recorded members were cut from etcd, want web-node-1; history:\n%s", h, history(rec))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p1.Heal()
	p2.Heal()
	waitMembers(t, m, "web-node-1", "web-node-2", "web-node-3")
	rec.WaitFor(t, "web-node-3", 15*time.Second)
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, history(rec))
	}
	_ = n3
}

// A peer restarts during a failsafe hold, so it cannot remember its
// promise, and etcd comes back for it (not for the holder) at once: it
// reaches etcd, refuses further promises, and sees the group vacant (the
// holder's lease expired). It must still not claim before its old promise
// ended (it waits a promise's length after starting), and binds only the
// grace after that: never next to the holder's VIP.
func TestFailsafePeerRestartHonoursThePromise(t *testing.T) {
	t.Parallel()
	m, rec, _, n2, p1, p2 := failsafePair(t)
	p1.Cut()
	p2.Cut()
	time.Sleep(4 * time.Second)
	n2.Stop()
	p2.Heal()
	restarted := time.Now()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, Via: p2, Peer: true, Failsafe: true})
	at := rec.WaitFor(t, "web-node-2", 15*time.Second)
	if at.Sub(restarted) < 3*time.Second {
		t.Errorf("web-node-2 bound %v after its restart, before any promise it gave could have ended (3 s)", at.Sub(restarted))
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v; history:\n%s", d, history(rec))
	}
}

var vip = netip.MustParseAddr("192.168.20.15")

var _ = keeper.Reclaim

// A group with no addresses has no failsafe: no membership record guards
// its leader key, so a node the holder never heard of could claim it. Cut
// from etcd, its holder leaves MASTER by its fence whatever its peer
// promises, and a newcomer that reaches etcd is never MASTER beside it.
func TestFailsafeNotForGroupsWithoutAddresses(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	p1, p2 := etcdtest.NewProxy(t, m), etcdtest.NewProxy(t, m)
	spec := func(name string, prio int, via *etcdtest.Proxy) keepertest.Spec {
		return keepertest.Spec{Name: name, Priority: prio, NoAddresses: true, Via: via, Peer: true, Failsafe: true}
	}
	n1 := keepertest.Start(t, m, nil, spec("web-node-1", 101, p1))
	n2 := keepertest.Start(t, m, nil, spec("web-node-2", 100, p2))
	master := func(n *keepertest.Node) bool { return strings.Contains(n.K.Summary(), "VI_1=MASTER") }
	for end := time.Now().Add(15 * time.Second); !master(n1); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("web-node-1 never MASTER: %s / %s", n1.K.Summary(), n2.K.Summary())
		}
	}
	time.Sleep(time.Second) // the peers' records and channel settle
	p1.Cut()
	p2.Cut()
	cut := time.Now()
	n3 := keepertest.Start(t, m, nil, spec("web-node-3", 200, nil))
	var left time.Time
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		m1, m3 := master(n1), master(n3)
		if m1 && m3 {
			t.Fatalf("web-node-1 and web-node-3 both MASTER %v after the cut: %s / %s", time.Since(cut), n1.K.Summary(), n3.K.Summary())
		}
		if mode, _ := n1.K.GroupMode("VI_1"); mode == "failsafe" {
			t.Fatalf("web-node-1 holds a group without addresses on failsafe promises")
		}
		if !m1 && left.IsZero() {
			left = time.Now()
		}
	}
	if left.IsZero() || left.Sub(cut) > 3*time.Second {
		t.Errorf("web-node-1 left MASTER %v after the cut, want within the lease TTL (3 s)", left.Sub(cut))
	}
	if !master(n3) {
		t.Errorf("web-node-3, the only node reaching etcd, is not MASTER: %s", n3.K.Summary())
	}
}
