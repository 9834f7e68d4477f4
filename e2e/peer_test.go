package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/e2e/testbed"
)

// The peer channel's scenarios of TestSafety (docs/design.md §2.8 relayed
// renewals, §2.9 the failsafe): the holder cut from etcd but not from its
// peer, etcd frozen or killed while both nodes run, the failsafe's fail-
// closed paths, a restarted peer, a node outside the recorded membership,
// and requests to a peer port without the key. They run inside TestSafety
// (its testbed, harness and suite table): `go test -run
// 'TestSafety/<name>$' ./e2e`.

// safetyEnv is what TestSafety's scenarios share.
type safetyEnv struct {
	tb           *testbed.Testbed
	res          *results
	cli          *clientv3.Client
	n1, n2       *testbed.Node
	scenario     func(name, title string, fn func(t *testing.T, s *scen))
	scenarioPeer func(name, title string, mode testbed.PeerMode, fn func(t *testing.T, s *scen))
	etcdIPs      func(ms ...*testbed.EtcdMember) []netip.Addr
	waitHealthy  func(t *testing.T, ms []*testbed.EtcdMember, timeout time.Duration)
}

// A holder reports MASTER (failsafe) only while it holds a promise from
// every other recorded member: in the two-node testbed, web-node-2's. (The
// member logs "promised a peer's failsafe hold…" only when it had no
// promise on the address running, so that line is not a per-hold signal.)

// promiseLen is how long a failsafe promise lasts (the lease TTL), and how
// long a restarted node claims nothing.
const promiseLen = leaseTTL

// The testbed's etcd keys of the seed group.
var (
	leaderKey  = "/vipd/groups/VI_1/leader"
	membersKey = "/vipd/members/" + testbed.VIP.Addr().String()
)

// failsafeScenarios are the scenarios with etcd unreachable for everyone,
// in the order TestSafety runs them (the membership one last: it adds a
// third node).
func (e *safetyEnv) failsafeScenarios() {
	e.etcdFrozen()
	e.etcdKilled()
	e.etcdDownPeerBlocked()
	e.etcdDownHAProxyStopped()
	e.peerRestartedDuringFailsafe()
	e.forgedPeerRequests()
	e.membershipClosure()
}

// waitState waits until n logs a state change to `to` (e.g. "MASTER
// (failsafe)") at or after since.
func waitState(n *testbed.Node, since time.Time, to string, timeout time.Duration) (logLine, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range logSince(n, since, "state change") {
			if l.Attrs["to"] == to {
				return l, true
			}
		}
		if time.Now().After(deadline) {
			return logLine{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// states lists n's state changes at or after since as "to (reason)".
func states(n *testbed.Node, since time.Time) []string {
	var out []string
	for _, l := range logSince(n, since, "state change") {
		out = append(out, fmt.Sprintf("%s %s (%s)", l.Time.Format("15:04:05.000"), l.Attrs["to"], l.Attrs["reason"]))
	}
	return out
}

// members reads the VIP's membership record: its node names, sorted (nil
// if there is none).
func (e *safetyEnv) members(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := e.cli.Get(ctx, membersKey)
	if err != nil {
		t.Fatalf("read %s: %v", membersKey, err)
	}
	if len(r.Kvs) == 0 {
		return nil
	}
	var m struct {
		Nodes map[string]string `json:"nodes"`
	}
	if err := json.Unmarshal(r.Kvs[0].Value, &m); err != nil {
		t.Fatalf("%s: %v: %q", membersKey, err, r.Kvs[0].Value)
	}
	var names []string
	for n := range m.Nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// waitMembers waits until the membership record lists exactly want: a
// failsafe hold asks every recorded member, so the scenarios that need one
// start from a known record.
func (e *safetyEnv) waitMembers(t *testing.T, timeout time.Duration, want ...string) bool {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(timeout)
	for {
		got := e.members(t)
		if slices.Equal(got, want) {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("membership record %s lists %v after %v, want %v", membersKey, got, timeout, want)
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leader reads the group's leader key: its lease and create revision (0, 0
// if vacant).
func (e *safetyEnv) leader(t *testing.T) (lease int64, createRev int64, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := e.cli.Get(ctx, leaderKey)
	if err != nil {
		t.Fatalf("read %s: %v", leaderKey, err)
	}
	if len(r.Kvs) == 0 {
		return 0, 0, ""
	}
	return r.Kvs[0].Lease, r.Kvs[0].CreateRevision, string(r.Kvs[0].Value)
}

// afterEtcd reports how the holder's claim came through an etcd outage:
// its lease kept (renewed again) or a new claim made with the VIP bound.
func afterEtcd(n *testbed.Node, since time.Time) string {
	if l, ok := waitLog(n, since, "claimed anew after a failsafe hold; the VIPs stayed bound", 0); ok {
		return "claimed anew at " + l.Time.Format("15:04:05.000") + " (lease expired during the hold)"
	}
	if len(logSince(n, since, "lease expired at the server; granting a new one")) > 0 {
		return "lease expired; no reclaim logged"
	}
	return "lease kept"
}

// quorumLostFailsafe: two of three members killed. Nobody can renew;
// web-node-2 promises, web-node-1 keeps the VIP. With quorum back it
// renews its lease (etcd extends leases on a new leader) or claims anew.
func (e *safetyEnv) quorumLostFailsafe() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("quorum-lost", "etcd quorum lost (2 of 3 killed), failsafe: VIP kept", func(t *testing.T, s *scen) {
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		down := []*testbed.EtcdMember{tb.Etcd[1], tb.Etcd[2]}
		t.Cleanup(func() {
			for _, m := range down {
				if !m.Proc().Running() {
					m.Start()
				}
			}
		})
		t0 := time.Now()
		for _, m := range down {
			if err := m.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		fs, ok := waitState(n1, t0, "MASTER (failsafe)", 5*time.Second)
		if !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe) after quorum loss: %v", states(n1, t0))
		}
		// Hold past the fence a lease renewed just before the loss had.
		time.Sleep(time.Until(t0.Add(2 * leaseTTL)))
		tBack := time.Now()
		hold := tb.Mon.Stats(t0, tBack)
		for _, m := range down {
			if err := m.Start(); err != nil {
				t.Fatal(err)
			}
		}
		e.waitHealthy(t, tb.Etcd, 15*time.Second)
		master, ok := waitState(n1, tBack, "MASTER", 10*time.Second)
		if !ok {
			t.Errorf("web-node-1 not plain MASTER within 10 s of quorum back: %v", states(n1, tBack))
		}
		time.Sleep(time.Second)
		st := tb.Mon.Stats(t0, time.Now())
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		if st.Changes != 0 || out.Failed > 0 {
			t.Errorf("VIP moved or clients lost answers with quorum lost under the failsafe: %d changes, outage %v; web-node-1 %v",
				st.Changes, out, states(n1, t0))
		}
		how := afterEtcd(n1, tBack)
		res.add("quorum lost: kill → MASTER (failsafe)", ms(fs.Time.Sub(t0)), fmt.Sprintf("held %v without quorum, %d VIP changes, outage %v", ms(tBack.Sub(t0)), hold.Changes, out))
		res.add("quorum back → web-node-1 plain MASTER", ms(master.Time.Sub(tBack)), how+"; 0 changes, 0 outage (asserted)")
		s.note("VIP kept %v without quorum (failsafe); quorum back: %s, MASTER after %s", ms(tBack.Sub(t0)), how, ms(master.Time.Sub(tBack)))
	})
}

// cutRelay: web-node-1 cut from every etcd member (not from web-node-2):
// web-node-2 renews its lease, nothing moves for 9 s; then HAProxy stops on
// web-node-1 and it hands over through the relayed resign.
func (e *safetyEnv) cutRelay() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("holder-cut-from-etcd-relay", "holder cut from etcd only: relay, then HAProxy stopped", func(t *testing.T, s *scen) {
		t.Cleanup(func() { n1.Unblock() })
		lease0, _, _ := e.leader(t)
		t0 := time.Now()
		if err := n1.Block(e.etcdIPs(tb.Etcd...)...); err != nil {
			t.Fatal(err)
		}
		relayed, ok := waitLog(n1, t0, "lease renewed through a peer; this node's own etcd requests fail", 3*time.Second)
		if !ok {
			t.Fatalf("web-node-1 logged no relayed renewal within 3 s of the cut: %v", states(n1, t0))
		}
		mode, okMode := waitState(n1, t0, "MASTER (relay)", 2*time.Second)
		if !okMode {
			t.Errorf("web-node-1 never reported MASTER (relay): %v", states(n1, t0))
		}
		// Nothing moves while the relay lasts.
		time.Sleep(time.Until(t0.Add(9 * time.Second)))
		tStop := time.Now()
		st := tb.Mon.Stats(t0, tStop)
		out := tb.Probes().Window(t0, tStop).LongestOutage()
		fails := len(logSince(n1, t0, "lease renewal failed"))
		if st.Changes != 0 || out.Failed > 0 {
			t.Errorf("during the relay: %d VIP changes, client outage %v (want none)", st.Changes, out)
		}
		if lease, _, node := e.leader(t); lease != lease0 || node != testbed.Node1 {
			t.Errorf("leader key during the relay: %s on lease %x, want web-node-1 on %x", node, lease, lease0)
		}
		res.add("cut, relay: cut → first relayed renewal", ms(relayed.Time.Sub(t0)), "MASTER (relay) at "+ms(mode.Time.Sub(t0)))
		res.add("cut, relay: 9 s relayed: VIP changes / outage / failed renewals", fmt.Sprintf("%d / %v / %d", st.Changes, out, fails), "0 / none (asserted); lease unchanged (asserted)")
		// A health change during the relay hands over at once: the resign
		// goes through web-node-2.
		if err := n1.StopHAProxy(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node2, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		ans, err := tb.WaitAnswer(testbed.Node2, tStop, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
		hand := tb.Probes().Window(tStop, time.Now()).LongestOutage()
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, tStop)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, tStop)
		if _, ok := waitLog(n2, tStop, "relayed a resign", time.Second); !ok {
			t.Errorf("web-node-2 did not log relaying web-node-1's resign")
		}
		if hand.Duration > time.Second {
			t.Errorf("handover through the relay: client outage %v, want ≤ 1s (bench HAProxy row: ~380 ms)", hand)
		}
		res.add("cut, relay: HAProxy stop → VIP removed / on web-node-2", fmt.Sprintf("%v / %v", ms(del.Time.Sub(tStop)), ms(add.Time.Sub(tStop))),
			fmt.Sprintf("gap %v; resign relayed by web-node-2 (asserted)", ms(add.Time.Sub(del.Time))))
		res.add("cut, relay: HAProxy stop → client outage", hand, fmt.Sprintf("≤ 1s (asserted); client answered by web-node-2 after %v; bench HAProxy row ~380 ms", ms(ans.Start.Sub(tStop))))
		s.note("relayed %v: 0 changes, outage %v, %d failed renewals; HAProxy stop → handover outage %v (through the relayed resign)",
			ms(tStop.Sub(t0)), out, fails, hand)
		// Heal: web-node-1 back on etcd and healthy preempts back (back()).
		if err := n1.Unblock(); err != nil {
			t.Fatal(err)
		}
		if err := n1.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
		tHeal := time.Now()
		if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		back1, _ := tb.Mon.EventAfter(testbed.Node1, true, tHeal)
		res.add("cut, relay: heal → web-node-1 back (preempt)", ms(back1.Time.Sub(tHeal)), "")
	})
}

// etcdFrozen: every etcd member SIGSTOPped for 30 s, then resumed. The
// holder keeps the VIP on web-node-2's promises; the frozen cluster resumes
// with its lease expired, and it claims anew with the VIP bound.
func (e *safetyEnv) etcdFrozen() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("etcd-frozen-30s", "all etcd members SIGSTOPped 30 s, then resumed", func(t *testing.T, s *scen) {
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		lease0, rev0, _ := e.leader(t)
		t.Cleanup(func() { tb.ThawEtcd() })
		t0 := time.Now()
		if err := tb.FreezeEtcd(); err != nil {
			t.Fatal(err)
		}
		fs, ok := waitState(n1, t0, "MASTER (failsafe)", 5*time.Second)
		if !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe) with etcd frozen: %v", states(n1, t0))
		}
		time.Sleep(time.Until(t0.Add(30 * time.Second)))
		tThaw := time.Now()
		hold := tb.Mon.Stats(t0, tThaw)
		if err := tb.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		master, ok := waitState(n1, tThaw, "MASTER", 10*time.Second)
		if !ok {
			t.Errorf("web-node-1 not plain MASTER within 10 s of the thaw: %v", states(n1, tThaw))
		}
		e.waitHealthy(t, tb.Etcd, 10*time.Second)
		time.Sleep(2 * time.Second)
		st := tb.Mon.Stats(t0, time.Now())
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		if st.Changes != 0 || out.Failed > 0 {
			t.Errorf("etcd frozen 30 s: %d VIP changes, client outage %v (want none); web-node-1 %v", st.Changes, out, states(n1, t0))
		}
		if hs := tb.Holders(); !slices.Equal(hs, []string{testbed.Node1}) {
			t.Errorf("holders after the thaw: %v", hs)
		}
		lease1, rev1, node := e.leader(t)
		how := afterEtcd(n1, tThaw)
		res.add("etcd frozen: freeze → MASTER (failsafe)", ms(fs.Time.Sub(t0)), "")
		res.add("etcd frozen 30 s: VIP changes / client outage", fmt.Sprintf("%d / %v", st.Changes, out), fmt.Sprintf("0 / none (asserted); %d changes while frozen", hold.Changes))
		res.add("etcd frozen: thaw → web-node-1 plain MASTER", ms(master.Time.Sub(tThaw)), how)
		res.add("etcd frozen: claim before / after", fmt.Sprintf("lease %x rev %d / %s lease %x rev %d", lease0, rev0, node, lease1, rev1), "")
		s.note("frozen 30 s: MASTER (failsafe) after %s, 0 changes; thaw: %s, plain MASTER after %s", ms(fs.Time.Sub(t0)), how, ms(master.Time.Sub(tThaw)))
	})
}

// etcdKilled: every etcd member SIGKILLed, restarted 5 s later. etcd
// extends every lease when a leader is elected, so the holder keeps its
// lease.
func (e *safetyEnv) etcdKilled() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("etcd-killed-restarted", "all etcd members SIGKILLed, restarted after 5 s", func(t *testing.T, s *scen) {
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		lease0, rev0, _ := e.leader(t)
		t0 := time.Now()
		if err := tb.KillEtcd(); err != nil {
			t.Fatal(err)
		}
		fs, ok := waitState(n1, t0, "MASTER (failsafe)", 5*time.Second)
		if !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe) with etcd killed: %v", states(n1, t0))
		}
		time.Sleep(time.Until(t0.Add(5 * time.Second)))
		tStart := time.Now()
		if err := tb.StartEtcd(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		tUp := time.Now()
		master, ok := waitState(n1, tStart, "MASTER", 10*time.Second)
		if !ok {
			t.Errorf("web-node-1 not plain MASTER within 10 s of etcd's restart: %v", states(n1, tStart))
		}
		time.Sleep(2 * time.Second)
		st := tb.Mon.Stats(t0, time.Now())
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		if st.Changes != 0 || out.Failed > 0 {
			t.Errorf("etcd killed and restarted: %d VIP changes, client outage %v (want none); web-node-1 %v", st.Changes, out, states(n1, t0))
		}
		lease1, rev1, _ := e.leader(t)
		how := afterEtcd(n1, tStart)
		res.add("etcd killed: kill → MASTER (failsafe)", ms(fs.Time.Sub(t0)), fmt.Sprintf("down %v; restart → all healthy %v", ms(tStart.Sub(t0)), ms(tUp.Sub(tStart))))
		res.add("etcd killed: VIP changes / client outage", fmt.Sprintf("%d / %v", st.Changes, out), "0 / none (asserted)")
		res.add("etcd killed: restart → web-node-1 plain MASTER", ms(master.Time.Sub(tStart)), fmt.Sprintf("%s (lease %x rev %d → %x rev %d)", how, lease0, rev0, lease1, rev1))
		s.note("down %v, etcd healthy %v after restart; %s; plain MASTER %s after the restart", ms(tStart.Sub(t0)), ms(tUp.Sub(tStart)), how, ms(master.Time.Sub(tStart)))
	})
}

// etcdDownPeerBlocked: etcd frozen and the peer channel blocked: no
// promise can be had, the holder fails closed by its fence, and nobody
// binds until etcd is back.
func (e *safetyEnv) etcdDownPeerBlocked() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("etcd-down-peer-blocked", "etcd frozen and peer channel blocked: fails closed", func(t *testing.T, s *scen) {
		t.Cleanup(func() { tb.ThawEtcd(); n1.Unblock() })
		if err := n1.BlockPeerChannel(n2.IP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		if err := tb.FreezeEtcd(); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, 2*leaseTTL); err != nil {
			t.Fatalf("holder kept the VIP without etcd and without its peer: %v; %v", err, states(n1, t0))
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		deadline, lines, _ := fenceFromLog(n1, t0, del.Time)
		if lines == 0 {
			t.Fatalf("no failed renewal logged before the release\n%s", n1.Vipd().LogTail(30))
		}
		late := del.Time.Sub(deadline)
		if late > 100*time.Millisecond {
			t.Errorf("VIP removed %v after the fence deadline", ms(late))
		}
		if _, ok := waitState(n1, t0, "MASTER (failsafe)", 0); ok {
			t.Errorf("web-node-1 reported MASTER (failsafe) without its peer's promise")
		}
		own, okOwn := waitLog(n1, t0, "VIP removed", 2*time.Second)
		if !okOwn {
			t.Errorf("web-node-1's vipd never logged the VIP's removal")
		} else if d := own.Time.Sub(deadline); d > 100*time.Millisecond {
			t.Errorf("vipd unbound %v after its fence deadline", ms(d))
		}
		// Nobody binds while etcd is down.
		time.Sleep(time.Until(del.Time.Add(4 * time.Second)))
		tThaw := time.Now()
		if st := tb.Mon.Stats(del.Time.Add(time.Millisecond), tThaw); st.MaxHolders != 0 {
			t.Errorf("someone bound the VIP with etcd down: holders %v", tb.Mon.HoldersAt(tThaw))
		}
		if err := tb.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		hs, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 1 }, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(hs[0], true, tThaw)
		if err := n1.Unblock(); err != nil {
			t.Fatal(err)
		}
		res.add("etcd down, peer blocked: VIP removed vs fence deadline", ms(late), fmt.Sprintf("≤ +100ms (asserted); removed %v after the freeze (negative: the kernel lifetime ran out first)", ms(del.Time.Sub(t0))))
		if okOwn {
			res.add("etcd down, peer blocked: vipd's own unbind vs fence deadline", ms(own.Time.Sub(deadline)), "≤ +100ms (asserted); reason "+own.Attrs["reason"])
		}
		res.add("etcd down, peer blocked: no holder until thaw", ms(tThaw.Sub(del.Time)), "0 holders (asserted)")
		res.add("etcd down, peer blocked: thaw → "+hs[0]+" holds", ms(add.Time.Sub(tThaw)), "lease expired while frozen: a claim after expiry waits the 1.45 s grace")
		s.note("VIP off %s after the fence deadline; nobody bound for %v; thaw → %s holds after %s", ms(late), ms(tThaw.Sub(del.Time)), hs[0], ms(add.Time.Sub(tThaw)))
	})
}

// etcdDownHAProxyStopped: during a failsafe hold HAProxy stops on the
// holder: the VIP comes off at once and nobody can take it until etcd is
// back; then web-node-2 takes over.
func (e *safetyEnv) etcdDownHAProxyStopped() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("etcd-down-haproxy-stopped", "etcd frozen, HAProxy stopped on the holder", func(t *testing.T, s *scen) {
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		t.Cleanup(func() { tb.ThawEtcd() })
		t0 := time.Now()
		if err := tb.FreezeEtcd(); err != nil {
			t.Fatal(err)
		}
		fs, ok := waitState(n1, t0, "MASTER (failsafe)", 5*time.Second)
		if !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe): %v", states(n1, t0))
		}
		time.Sleep(time.Until(fs.Time.Add(time.Second)))
		tStop := time.Now()
		if err := n1.StopHAProxy(); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, 3*time.Second); err != nil {
			t.Fatalf("VIP not removed after HAProxy stopped during the failsafe hold: %v", err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, tStop)
		// Nobody may bind while etcd is down.
		time.Sleep(time.Until(tStop.Add(6 * time.Second)))
		tThaw := time.Now()
		if st := tb.Mon.Stats(del.Time.Add(time.Millisecond), tThaw); st.MaxHolders != 0 {
			t.Errorf("someone bound the VIP with etcd down: holders %v", tb.Mon.HoldersAt(tThaw))
		}
		if err := tb.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node2, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, tThaw)
		ans, err := tb.WaitAnswer(testbed.Node2, tThaw, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out := tb.Probes().Window(tStop, ans.Start.Add(300*time.Millisecond)).LongestOutage()
		s.outage = &out
		ended := "lease expired (no resign landed)"
		if _, ok := waitLog(n2, tThaw, "relayed a resign", 0); ok {
			ended = "resign relayed by web-node-2"
		}
		res.add("etcd down, HAProxy stop → VIP removed", ms(del.Time.Sub(tStop)), "at once (check fall 2 × 200 ms)")
		res.add("etcd down, HAProxy stop: no holder until thaw", ms(tThaw.Sub(del.Time)), "0 holders (asserted)")
		res.add("etcd down, HAProxy stop: thaw → web-node-2 holds", ms(add.Time.Sub(tThaw)), ended)
		res.add("etcd down, HAProxy stop: client outage", out, "until etcd returns (by design)")
		s.note("VIP off %s after HAProxy stop; nobody bound for %v with etcd down; thaw → web-node-2 after %s", ms(del.Time.Sub(tStop)), ms(tThaw.Sub(del.Time)), ms(add.Time.Sub(tThaw)))
	})
}

// peerRestartedDuringFailsafe: web-node-2's vipd is SIGKILLed and started
// again during a failsafe hold (it cannot remember its promises), then
// web-node-1 is frozen and etcd resumed, so the vacancy tempts web-node-2:
// it may bind only once every promise it could have given has ended
// (restart + promise length) and the expiry grace has passed.
func (e *safetyEnv) peerRestartedDuringFailsafe() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("peer-restarted-during-failsafe", "web-node-2 restarted during a failsafe hold", func(t *testing.T, s *scen) {
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		t.Cleanup(func() { tb.ThawEtcd(); n1.ThawVipd() })
		t0 := time.Now()
		if err := tb.FreezeEtcd(); err != nil {
			t.Fatal(err)
		}
		if _, ok := waitState(n1, t0, "MASTER (failsafe)", 5*time.Second); !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe): %v", states(n1, t0))
		}
		time.Sleep(500 * time.Millisecond)
		tKill := time.Now()
		if err := n2.KillVipd(); err != nil {
			t.Fatal(err)
		}
		tStart := time.Now()
		if err := n2.StartVipd(); err != nil {
			t.Fatal(err)
		}
		// The restarted web-node-2 answers web-node-1's promise rounds
		// (it cannot reach etcd either): the hold goes on.
		promisedNew, okNew := waitLog(n2, tStart, "promised a peer's failsafe hold not to claim its addresses", 3*time.Second)
		time.Sleep(time.Until(tStart.Add(1500 * time.Millisecond)))
		held, _ := n1.HasVIP()
		// web-node-1 stops (frozen: it can neither reclaim nor ask), and
		// etcd resumes: the lease it held expired while frozen.
		tFreeze := time.Now()
		if err := n1.FreezeVipd(); err != nil {
			t.Fatal(err)
		}
		if err := tb.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		tThaw := time.Now()
		if err := tb.WaitHolder(testbed.Node2, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, tThaw)
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		// Every promise the old process gave ends by tKill + P; the new one
		// claims nothing before its start + P, nor (a promise of its own
		// covering web-node-1's last round) before tFreeze + P.
		if add.Time.Before(tKill.Add(promiseLen)) {
			t.Errorf("restarted web-node-2 bound the VIP %v before its previous process's promises could have ended", ms(tKill.Add(promiseLen).Sub(add.Time)))
		}
		if add.Time.Before(tStart.Add(promiseLen)) {
			t.Errorf("restarted web-node-2 bound the VIP %v before its start + the promise length", ms(tStart.Add(promiseLen).Sub(add.Time)))
		}
		if okNew && add.Time.Before(tFreeze.Add(promiseLen)) {
			t.Errorf("web-node-2 bound the VIP %v before the promise it gave after its restart could have ended", ms(tFreeze.Add(promiseLen).Sub(add.Time)))
		}
		newProm := "no promise from the new process"
		if okNew {
			newProm = fmt.Sprintf("new process promised %v after its start", ms(promisedNew.Time.Sub(tStart)))
		}
		res.add("peer restart: kill → start / web-node-1 still held 1.5 s later", fmt.Sprintf("%v / %v", ms(tStart.Sub(tKill)), held), newProm)
		res.add("peer restart: web-node-1 frozen + thaw → web-node-2 bound", ms(add.Time.Sub(tThaw)),
			fmt.Sprintf("bound %v after kill + P, %v after start + P (≥ 0 asserted); VIP left web-node-1 %v before", ms(add.Time.Sub(tKill.Add(promiseLen))),
				ms(add.Time.Sub(tStart.Add(promiseLen))), ms(add.Time.Sub(del.Time))))
		s.note("hold survived the restart: %v (%s); web-node-2 bound %v after its start (P = %v, grace 1.45 s)", held, newProm, ms(add.Time.Sub(tStart)), promiseLen)
		if err := n1.ThawVipd(); err != nil {
			t.Fatal(err)
		}
	})
}

// peerWire builds and sends peer channel requests by hand (peer/doc.go's
// wire), from the client namespace.
type peerWire struct {
	ns  *testbed.Netns
	key []byte
}

func peerMAC(key []byte, lines ...string) string {
	m := hmac.New(sha256.New, key)
	io.WriteString(m, strings.Join(lines, "\n"))
	return hex.EncodeToString(m.Sum(nil))
}

func randHex16() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// raw builds an HTTP/1.1 POST as bytes (so a replay is byte for byte).
func (w peerWire) raw(addr netip.AddrPort, path string, hdr map[string]string, body []byte) []byte {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr.String()+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.Close = true
	var b bytes.Buffer
	req.Write(&b)
	return b.Bytes()
}

// send writes raw on a fresh connection from the client namespace and
// reads the answer.
func (w peerWire) send(addr netip.AddrPort, raw []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := w.ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return 0, nil, nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(raw); err != nil {
		return 0, nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header, b, err
}

// nonce asks addr for a nonce (no key needed) and checks its MAC under
// the key the test holds.
func (w peerWire) nonce(t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	ch := randHex16()
	code, hdr, body, err := w.send(addr, w.raw(addr, "/v1/nonce", nil, []byte(`{"challenge":"`+ch+`"}`)))
	if err != nil || code != http.StatusOK {
		t.Fatalf("nonce from %v: %d %s %v", addr, code, body, err)
	}
	var r struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Nonce == "" {
		t.Fatalf("nonce from %v: %q %v", addr, body, err)
	}
	if got, want := hdr.Get("Vipd-Mac"), peerMAC(w.key, "vipd-peer-v1 nonce", ch, r.Nonce); got != want {
		t.Fatalf("nonce MAC from %v does not check under the testbed's key (%s, want %s): the test's wire is wrong", addr, got, want)
	}
	return r.Nonce
}

// call builds a request for op as node with nonce, MAC'd under key.
func (w peerWire) call(addr netip.AddrPort, key []byte, node, op, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	mac := peerMAC(key, "vipd-peer-v1 request", node, op, nonce, hex.EncodeToString(sum[:]))
	return w.raw(addr, "/v1/call/"+op, map[string]string{"Vipd-Node": node, "Vipd-Nonce": nonce, "Vipd-Mac": mac}, body)
}

// forgedPeerRequests sends requests without the key to the nodes' peer
// ports from the client namespace: no headers, a wrong key's MAC (on the
// holder's own resign and on a promise: both would change something), a
// body changed under a valid MAC, and a valid request replayed. Every one
// is refused with 401 and logged; the holder, its lease and claim stay.
func (e *safetyEnv) forgedPeerRequests() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("forged-peer-requests", "forged, replayed, unauthenticated peer requests", func(t *testing.T, s *scen) {
		w := peerWire{ns: tb.Client.NS, key: tb.PeerKey()}
		lease0, rev0, _ := e.leader(t)
		members0 := e.members(t)
		wrongKey := []byte(randHex16() + randHex16())
		to2, to1 := n2.PeerEndpoint(), n1.PeerEndpoint()
		t0 := time.Now()
		type attempt struct {
			what     string
			addr     netip.AddrPort
			raw      []byte
			want     int
			reason   string
			pauseLog bool // same refusal reason as the last one: wait out the log's rate limit
		}
		resign := []byte(fmt.Sprintf(`{"group":"VI_1","create_rev":%d,"addrs":["%s"],"graceful":true}`, rev0, testbed.VIP.Addr()))
		promise := []byte(fmt.Sprintf(`{"lease":%d,"addrs":["%s"]}`, lease0, testbed.VIP.Addr()))
		renew := []byte(`{"lease":7}`) // no such lease: a peer that renews it learns it is gone
		tampered := w.call(to2, w.key, testbed.Node1, "renew", w.nonce(t, to2), renew)
		tampered = bytes.Replace(tampered, []byte(`{"lease":7}`), []byte(`{"lease":8}`), 1)
		valid := w.call(to2, w.key, testbed.Node1, "renew", w.nonce(t, to2), renew)
		attempts := []attempt{
			{what: "no headers (renew)", addr: to2, raw: w.raw(to2, "/v1/call/renew", nil, renew), want: 401, reason: "malformed"},
			{what: "wrong key: resign of the holder's claim as web-node-1", addr: to2, raw: w.call(to2, wrongKey, testbed.Node1, "resign", w.nonce(t, to2), resign), want: 401, reason: "bad_mac"},
			{what: "valid renew (captured)", addr: to2, raw: valid, want: 200},
			{what: "the captured renew replayed", addr: to2, raw: valid, want: 401, reason: "unknown_nonce"},
			{what: "wrong key: promise for web-node-1", addr: to2, raw: w.call(to2, wrongKey, testbed.Node1, "promise", w.nonce(t, to2), promise), want: 401, reason: "bad_mac", pauseLog: true},
			{what: "body changed under a valid MAC", addr: to2, raw: tampered, want: 401, reason: "bad_mac", pauseLog: true},
			{what: "the captured renew replayed to web-node-1", addr: to1, raw: valid, want: 401, reason: "unknown_nonce"},
			{what: "wrong key: resign sent to the holder", addr: to1, raw: w.call(to1, wrongKey, testbed.Node2, "resign", w.nonce(t, to1), resign), want: 401, reason: "bad_mac"},
		}
		var rows []string
		sent := map[string]map[string]int{} // node → reason → refusals sent
		for _, a := range attempts {
			if a.pauseLog {
				time.Sleep(1100 * time.Millisecond)
			}
			code, _, body, err := w.send(a.addr, a.raw)
			if err != nil {
				t.Errorf("%s: %v", a.what, err)
				continue
			}
			var eb struct {
				Error string `json:"error"`
				Gone  bool   `json:"gone"`
			}
			json.Unmarshal(body, &eb)
			if code != a.want || (a.reason != "" && eb.Error != a.reason) {
				t.Errorf("%s: got %d %s, want %d %q", a.what, code, strings.TrimSpace(string(body)), a.want, a.reason)
			}
			if a.want == 200 && !eb.Gone {
				t.Errorf("%s: answer %s, want the lease reported gone", a.what, body)
			}
			node := testbed.Node2
			if a.addr == to1 {
				node = testbed.Node1
			}
			if a.reason != "" {
				if sent[node] == nil {
					sent[node] = map[string]int{}
				}
				sent[node][a.reason]++
			}
			rows = append(rows, fmt.Sprintf("%s → %d %s", a.what, code, strings.TrimSpace(string(body))))
		}
		time.Sleep(300 * time.Millisecond)
		for _, n := range []*testbed.Node{n1, n2} {
			logged := map[string]int{}
			for _, l := range logSince(n, t0, "peer request refused") {
				logged[l.Attrs["reason"]]++
				if hb := l.Attrs["held_back"]; hb != "" {
					var k int
					fmt.Sscan(hb, &k)
					logged[l.Attrs["reason"]] += k
				}
			}
			for reason, k := range sent[n.Name] {
				if logged[reason] < k {
					t.Errorf("%s logged %d \"peer request refused\" reason=%s, want %d: %v", n.Name, logged[reason], reason, k, logged)
				}
			}
			res.add("forged peer requests: refusals logged by "+n.Name, fmt.Sprint(logged), fmt.Sprintf("sent %v (asserted)", sent[n.Name]))
		}
		if len(logSince(n2, t0, "promised a peer's failsafe hold not to claim its addresses")) > 0 {
			t.Errorf("web-node-2 promised on a forged request")
		}
		if len(logSince(n2, t0, "relayed a resign")) > 0 || len(logSince(n1, t0, "relayed a resign")) > 0 {
			t.Errorf("a forged resign was carried out")
		}
		time.Sleep(500 * time.Millisecond)
		lease1, rev1, node := e.leader(t)
		st := tb.Mon.Stats(t0, time.Now())
		if lease1 != lease0 || rev1 != rev0 || node != testbed.Node1 || st.Changes != 0 || !slices.Equal(e.members(t), members0) {
			t.Errorf("forged requests changed something: leader %s lease %x rev %d (was %x rev %d), %d VIP changes, members %v (was %v)",
				node, lease1, rev1, lease0, rev0, st.Changes, e.members(t), members0)
		}
		res.add("forged peer requests: holder / lease / claim / VIP changes", fmt.Sprintf("%s / %x / rev %d / %d", node, lease1, rev1, st.Changes), "unchanged (asserted)")
		for _, r := range rows {
			t.Log(r)
		}
		s.note("%d requests: no headers → 401 malformed; wrong key (resign, promise) and changed body → 401 bad_mac; a valid renew answered 200, its replay (both nodes) → 401 unknown_nonce; nothing changed", len(attempts))
	})
}

// membershipClosure: web-node-1 and web-node-2 are cut from etcd (not from
// each other) and hold on the failsafe; web-node-3, with a higher
// priority, starts then and reaches etcd. The membership record lists only
// web-node-1 and web-node-2, so it must not claim while the hold stands.
// When etcd returns for all, web-node-1 claims anew and records
// web-node-3, which then preempts it: never two holders.
func (e *safetyEnv) membershipClosure() {
	tb, n1, n2, res := e.tb, e.n1, e.n2, e.res
	e.scenario("membership-closure", "newcomer with higher priority during a failsafe hold", func(t *testing.T, s *scen) {
		n3 := tb.Node(testbed.Node3)
		if n3 == nil {
			var err error
			if n3, err = tb.AddNode(testbed.Node3, "n3", "192.168.20.12", 102); err != nil {
				t.Fatal(err)
			}
			if err := tb.Follow(n3); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			n1.Unblock()
			n2.Unblock()
			n3.StopVipd()
			n3.StopHAProxy()
		})
		if err := n3.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		t0 := time.Now()
		for _, n := range []*testbed.Node{n1, n2} {
			if err := n.Block(e.etcdIPs(tb.Etcd...)...); err != nil {
				t.Fatal(err)
			}
		}
		fs, ok := waitState(n1, t0, "MASTER (failsafe)", 6*time.Second)
		if !ok {
			t.Fatalf("web-node-1 never reported MASTER (failsafe) with both nodes cut from etcd: %v", states(n1, t0))
		}
		t3 := time.Now()
		if err := n3.StartVipd(); err != nil {
			t.Fatal(err)
		}
		// web-node-1's lease expires at the server about a TTL after the
		// cut; web-node-3 sees the group vacant and is not a member.
		time.Sleep(time.Until(t3.Add(8 * time.Second)))
		tHeal := time.Now()
		st := tb.Mon.Stats(t0, tHeal)
		out := tb.Probes().Window(t0, tHeal).LongestOutage()
		if _, ok := tb.Mon.EventAfter(testbed.Node3, true, t0); ok || st.Changes != 0 {
			t.Errorf("during the hold: web-node-3 bound the VIP or it moved (%d changes); web-node-3 %v", st.Changes, states(n3, t3))
		}
		if out.Failed > 0 {
			t.Errorf("client outage %v during the failsafe hold", out)
		}
		_, _, atHeal := e.leader(t)
		if atHeal == "" {
			atHeal = "none (web-node-1's lease expired at the server)"
		}
		n3states := states(n3, t3)
		for _, n := range []*testbed.Node{n1, n2} {
			if err := n.Unblock(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tb.WaitHolder(testbed.Node3, 20*time.Second); err != nil {
			t.Fatalf("%v; web-node-1 %v; web-node-3 %v", err, states(n1, tHeal), states(n3, t3))
		}
		add3, _ := tb.Mon.EventAfter(testbed.Node3, true, tHeal)
		del1, _ := tb.Mon.EventAfter(testbed.Node1, false, tHeal)
		how := afterEtcd(n1, tHeal)
		time.Sleep(time.Second)
		res.add("closure: both cut → MASTER (failsafe)", ms(fs.Time.Sub(t0)), "")
		res.add("closure: web-node-3 running with etcd, hold standing", ms(tHeal.Sub(t3)), fmt.Sprintf("web-node-3 never bound, 0 changes, outage %v (asserted); leader key at heal: %s", out, atHeal))
		healOut := tb.Probes().Window(tHeal, add3.Time.Add(300*time.Millisecond)).LongestOutage()
		res.add("closure: heal → web-node-3 holds (preempt)", ms(add3.Time.Sub(tHeal)), fmt.Sprintf("web-node-1 %s; its VIP off %v before; client outage %v (design: claim anew, then a graceful preempt)",
			how, ms(add3.Time.Sub(del1.Time)), healOut))
		t.Logf("web-node-3 states: %v", n3states)
		// web-node-3 leaves gracefully: web-node-1 takes over and the
		// record drops web-node-3 again (later scenarios need it).
		if err := n3.StopVipd(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		e.waitMembers(t, 10*time.Second, n1.Name, n2.Name)
		s.note("web-node-3 (prio 102+2) ran %v beside the hold without binding (states %v); heal → web-node-1 %s, web-node-3 preempted after %s",
			ms(tHeal.Sub(t3)), n3states, how, ms(add3.Time.Sub(tHeal)))
	})
}
