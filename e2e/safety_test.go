package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/internal/prereq"
)

// Timing of the testbed's vipd config (lease_ttl 3s; the fence margin is
// the session default, TTL/6).
const (
	leaseTTL    = 3 * time.Second
	fenceMargin = leaseTTL / 6
)

// scen is one scenario of TestSafety: its window and what goes into the
// suite table.
type scen struct {
	from, to time.Time
	// byHand is dual holding the test made itself (a VIP added by hand on
	// the standby); it is reported, and subtracted before asserting 0.
	byHand time.Duration
	hand   bool            // the test itself put the VIP on a second node
	outage *testbed.Outage // nil: longest outage in the window
	notes  []string
}

func (s *scen) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// TestSafety is issue 3's fault-injection suite beyond TestHolderFaults:
// the holder cut from etcd by a packet filter, etcd leader churn, quorum
// loss, a holder whose only etcd member is partitioned, VIPs changed by
// hand, the holder's own interface down, garbage in etcd, `vipd cleanup`,
// and (issue 5) a planned handover with vipctl and SIGHUP reloads. Every
// scenario starts from web-node-1 holding, asserts 0 ms with two holders
// (netlink address events in both node namespaces), and adds a row to the
// suite table logged at the end.
func TestSafety(t *testing.T) {
	needAll(t)
	if _, err := os.Stat(filepath.Join(binDir, "vipctl")); err != nil {
		prereq.Missing(t, "needs bin/vipctl (make build): %v", err)
	}
	// Registered before the testbed's cleanup, so it runs after it: the
	// digest of failed scenarios is the run's last output (CI shows the
	// tail), not buried above the processes' logs.
	var digest []string
	t.Cleanup(func() {
		if len(digest) > 0 {
			t.Logf("failed scenarios, digest:\n%s", strings.Join(digest, "\n"))
		}
	})
	tb := newTestbed(t, testbed.Options{KeepDir: os.Getenv("VIPD_E2E_KEEPDIR") != ""})
	res := &results{t: t, title: "safety suite measurements"}
	defer func() { res.log(); t.Log(suiteTable()) }()

	tStart := time.Now()
	if err := tb.StartAll(); err != nil {
		t.Fatal(err)
	}
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	cli, err := tb.EtcdClient(tb.Client.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	etcdIPs := func(ms ...*testbed.EtcdMember) []netip.Addr {
		var ips []netip.Addr
		for _, m := range ms {
			ips = append(ips, m.IP)
		}
		return ips
	}
	waitHealthy := func(t *testing.T, ms []*testbed.EtcdMember, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for _, m := range ms {
			for !m.Healthy(300 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("etcd %s not healthy after %v\n%s", m.Name, timeout, m.Proc().LogTail(20))
				}
				time.Sleep(30 * time.Millisecond)
			}
		}
	}
	// back restores the steady state: every etcd member running (thawed)
	// and healthy, no packet filter on the nodes, HAProxy and vipd
	// running on both nodes with the peer channel as mode says (a node
	// whose vipd runs another mode is restarted), web-node-1 the only
	// holder and answering the client.
	back := func(t *testing.T, mode testbed.PeerMode) {
		t.Helper()
		if err := tb.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		for _, m := range tb.Etcd {
			if !m.Proc().Running() {
				if err := m.Start(); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitHealthy(t, tb.Etcd, 15*time.Second)
		for _, n := range []*testbed.Node{n1, n2} {
			if err := n.Unblock(); err != nil {
				t.Fatal(err)
			}
			if !n.HAProxy().Running() {
				if err := n.StartHAProxy(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, n := range []*testbed.Node{n2, n1} {
			if n.Peer != mode {
				t.Logf("restarting vipd on %s with the peer channel %v (was %v)", n.Name, mode, n.Peer)
				n.Peer = mode
				if err := n.StopVipd(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, n := range []*testbed.Node{n1, n2} {
			if !n.Vipd().Running() {
				if err := n.StartVipd(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.WaitAnswer(testbed.Node1, time.Now(), 3*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// scenarioPeer runs fn as a subtest after restoring the steady state
	// with the peer channel as mode says, and records its row in the
	// suite table (also when it fails).
	scenarioPeer := func(name, title string, mode testbed.PeerMode, fn func(t *testing.T, s *scen)) {
		t.Run(name, func(t *testing.T) {
			back(t, mode)
			s := &scen{from: time.Now()}
			defer func() {
				to := s.to
				if to.IsZero() {
					to = time.Now()
				}
				st := tb.Mon.Stats(s.from, to)
				out := tb.Probes().Window(s.from, to).LongestOutage()
				if s.outage != nil {
					out = *s.outage
				}
				dual := st.TwoHolders - s.byHand
				if dual > 0 || (st.MaxHolders > 1 && !s.hand) {
					t.Errorf("%s: two holders for %v (max %d holders)", title, dual, st.MaxHolders)
				}
				if s.hand {
					s.note("stray VIP added by hand on the standby: %v with two holders (made by the test)", ms(s.byHand))
				}
				if mode != testbed.PeerFailsafe {
					s.notes = append([]string{"peer channel: " + mode.String()}, s.notes...)
				}
				suiteAdd(suiteRow{scenario: title, dual: dual, noHolder: st.NoHolder, outage: out, result: resultOf(t), note: strings.Join(s.notes, "; ")})
				if t.Failed() {
					digest = append(digest, failureDigest(tb, name, s.from, to, out, n1, n2))
				}
			}()
			fn(t, s)
		})
	}
	// scenario is scenarioPeer with the testbed's default: the peer
	// channel on, failsafe on.
	scenario := func(name, title string, fn func(t *testing.T, s *scen)) {
		scenarioPeer(name, title, testbed.PeerFailsafe, fn)
	}
	env := &safetyEnv{tb: tb, res: res, cli: cli, n1: n1, n2: n2, scenario: scenario, scenarioPeer: scenarioPeer,
		etcdIPs: etcdIPs, waitHealthy: waitHealthy}

	// 1a. The holder is cut from every etcd member, not from its peer:
	// web-node-2 renews its lease (relay), nothing moves; HAProxy then
	// stops on the holder and it hands over through the relay.
	env.cutRelay()

	// cutFailsClosed cuts web-node-1 off by the filter f (from every etcd
	// member, and from its peer's relay unless the channel is off) and
	// checks that it fails closed: the VIP is off by its fence, web-node-2
	// takes over only after the lease can have expired, and web-node-1
	// preempts back once after the heal.
	cutFailsClosed := func(t *testing.T, s *scen, label string, f testbed.Filter) {
		t.Cleanup(func() { n1.Unblock() })
		t0 := time.Now()
		if err := n1.Apply(f); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node2, 3*leaseTTL); err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		// Clients were still served by web-node-1 while it held.
		if c := tb.Probes().Window(t0, del.Time).Counts(); c[testbed.Node1] == 0 {
			t.Errorf("no client answers from web-node-1 while it was cut from etcd only: %v", c)
		}
		deadline, lines, spread := fenceFromLog(n1, t0, del.Time)
		if lines == 0 {
			t.Fatalf("web-node-1 logged no failed renewal before removing the VIP\n%s", n1.Vipd().LogTail(30))
		}
		expiry := deadline.Add(fenceMargin) // earliest server-side expiry: last renewal sent + TTL
		late := del.Time.Sub(deadline)
		res.add(label+": fence deadline (from vipd log) after cut", ms(deadline.Sub(t0)), fmt.Sprintf("%d renewal failures, spread %v", lines, ms(spread)))
		res.add(label+": VIP removed on web-node-1 vs fence deadline", ms(late), "≤ +100ms (asserted); before server expiry (asserted)")
		res.add(label+": web-node-2 added vs earliest lease expiry", ms(add.Time.Sub(expiry)), "≥ 0 (asserted)")
		if late > 100*time.Millisecond {
			t.Errorf("VIP removed %v after the fence deadline", ms(late))
		}
		// vipd's own unbind (the address may already be gone: the kernel
		// lifetime is shorter than the fence).
		if own, ok := vipdRemoval(n1, t0); !ok {
			t.Errorf("web-node-1's vipd never logged the VIP's removal")
		} else {
			ownLate := own.Time.Sub(deadline)
			if ownLate > 100*time.Millisecond {
				t.Errorf("vipd unbound %v after its fence deadline", ms(ownLate))
			}
			res.add(label+": vipd's own unbind vs fence deadline", ms(ownLate), "≤ +100ms (asserted); reason "+own.Attrs["reason"])
			s.note("kernel lifetime removed the VIP %s before the fence, vipd unbound at fence %+dms", ms(-late), ownLate.Milliseconds())
		}
		if !del.Time.Before(expiry) {
			t.Errorf("VIP removed at %v, not before the earliest server expiry %v", del.Time.Format("15:04:05.000"), expiry.Format("15:04:05.000"))
		}
		if add.Time.Before(expiry.Add(-2 * time.Millisecond)) {
			t.Errorf("web-node-2 acquired %v before web-node-1's lease could expire", ms(expiry.Sub(add.Time)))
		}
		if l, ok := waitLog(n1, t0, "VIP removed", 0); ok {
			s.note("reason: %s", l.Attrs["reason"])
		}
		s.note("web-node-2 added %s after earliest lease expiry", ms(add.Time.Sub(expiry)))
		// Heal: web-node-1 comes back and preempts once; never two holders, no flapping.
		time.Sleep(500 * time.Millisecond)
		tHeal := time.Now()
		if err := n1.Unblock(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		st := tb.Mon.Stats(tHeal, time.Now())
		if st.MaxHolders > 1 || st.Changes > 2 {
			t.Errorf("after heal: %d holder changes (max %d holders), want one move back", st.Changes, st.MaxHolders)
		}
		add1, _ := tb.Mon.EventAfter(testbed.Node1, true, tHeal)
		res.add(label+": heal → web-node-1 back (preempt)", ms(add1.Time.Sub(tHeal)), fmt.Sprintf("%d holder changes after heal (≤ 2 asserted)", st.Changes))
	}

	// 1b. The holder is cut from every etcd member and from its peer
	// (nftables in its own namespace; clients still reach it): no relay,
	// no failsafe; it fails closed by its fence and web-node-2 takes over.
	scenario("holder-cut-from-etcd", "holder cut from all etcd members and its peer (nft)", func(t *testing.T, s *scen) {
		cutFailsClosed(t, s, "cut", testbed.Filter{Hosts: etcdIPs(tb.Etcd...), PeerChannel: []netip.Addr{n2.IP}})
	})

	// 4. The etcd leader is killed and restarted 20 times; the holder rides
	// through every election.
	scenario("etcd-leader-churn", "etcd leader SIGKILLed+restarted ×20", func(t *testing.T, s *scen) {
		const cycles = 20
		t0 := time.Now()
		var elect []time.Duration
		for i := range cycles {
			leader, _, err := tb.EtcdLeader(cli, 10*time.Second)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			tKill := time.Now()
			if err := leader.Kill(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := tb.EtcdLeader(cli, 10*time.Second, leader); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			tElected := time.Now()
			elect = append(elect, tElected.Sub(tKill))
			if err := leader.Start(); err != nil {
				t.Fatal(err)
			}
			waitHealthy(t, []*testbed.EtcdMember{leader}, 15*time.Second)
			// Each kill is one election: the next waits until the holder
			// has renewed under the new leader (a renewal round, RenewEvery
			// plus RequestTimeout, fits in the second after the election,
			// and any failure since the kill is followed by a recovery).
			// Elections back to back inside the holder's ride-through
			// budget (≈1.8 s from its last good renewal) are an etcd
			// outage, not a leader change: the holder fails closed then.
			time.Sleep(time.Until(tElected.Add(time.Second)))
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				fails := logSince(n1, tKill, "lease renewal failed")
				if len(fails) == 0 || len(logSince(n1, fails[len(fails)-1].Time, "lease renewed again")) > 0 {
					break
				}
				if time.Now().After(end) {
					t.Errorf("cycle %d: web-node-1 did not renew within 5 s of the election; last: %s", i, fails[len(fails)-1].Raw)
					break
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
		st := tb.Mon.Stats(t0, time.Now())
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		if hs := tb.Holders(); len(hs) != 1 || hs[0] != testbed.Node1 {
			t.Errorf("holders after churn %v, want [web-node-1]", hs)
		}
		var removals, holderChanges int
		for _, e := range tb.Mon.Events() {
			if e.Time.Before(t0) {
				continue
			}
			if e.Node != testbed.Node1 {
				holderChanges++
			} else if !e.Added {
				removals++
			}
		}
		_, vipdRemoved := vipdRemoval(n1, t0)
		rebinds := len(logSince(n1, t0, "VIP bound"))
		defer func() {
			res.add("churn: VIP removals on web-node-1 / vipd re-binds / other holder", fmt.Sprintf("%d / %d / %d", removals, rebinds, holderChanges), "0 (asserted)")
			s.note("%d removals on the holder (%d by vipd), %d re-binds", removals, map[bool]int{true: 1}[vipdRemoved], rebinds)
		}()
		minE, maxE, sum := elect[0], elect[0], time.Duration(0)
		for _, e := range elect {
			minE, maxE, sum = min(minE, e), max(maxE, e), sum+e
		}
		// How close did the holder come to its fence?
		closest := time.Duration(-1)
		fails := logSince(n1, t0, "lease renewal failed")
		for _, l := range fails {
			if d, err := time.ParseDuration(l.Attrs["fence_in"]); err == nil && (closest < 0 || d < closest) {
				closest = d
			}
		}
		res.add("churn: kill → new leader (min/avg/max)", fmt.Sprintf("%v / %v / %v", ms(minE), ms(sum/cycles), ms(maxE)), "etcd default timings")
		res.add("churn: holder renewal failures / closest fence_in", fmt.Sprintf("%d / %v", len(fails), ms(closest)), "closest approach to the fence deadline")
		var longest time.Duration
		for _, l := range logSince(n1, t0, "lease renewed again") {
			if d, err := time.ParseDuration(l.Attrs["gap"]); err == nil {
				longest = max(longest, d)
			}
		}
		res.add("churn: holder's longest renewal gap (send → send)", ms(longest), "rides through ≈ 1.8 s (last safe kernel lifetime)")
		res.add("churn: wall time", ms(time.Since(t0)), "")
		s.note("%d leader kills; elections %v–%v; %d failed renewals, closest fence_in %v", cycles, ms(minE), ms(maxE), len(fails), ms(closest))
		if st.Changes != 0 || out.Failed > 0 {
			if holderChanges == 0 {
				// Only web-node-1 lost and re-bound the VIP: the renewal gap
				// of an election outlasted the kernel lifetime (1 s at
				// lease_ttl 3s; the kernel removes the address 1–2 s after
				// the last refresh) or, rarely, the fence itself (2.5 s).
				cause := "the kernel lifetime ran out (vipd never unbound it)"
				if vipdRemoved {
					var why []string
					for _, l := range logSince(n1, t0, "VIP removed") {
						why = append(why, l.Time.Format("15:04:05.000")+" "+l.Attrs["reason"])
					}
					cause = fmt.Sprintf("the kernel lifetime ran out, and vipd itself removed it: %v", why)
				}
				vipdBug(t, "the holder drops the VIP during a normal etcd leader election (kernel lifetime 1 s, fence 2.5 s at lease_ttl 3s vs renewal gaps of 1–2.5 s)",
					"VIP left web-node-1 %d times during etcd leader churn (outage %v, %v without holder): %s; closest fence_in %v",
					removals, out, ms(st.NoHolder), cause, ms(closest))
			}
			t.Errorf("VIP moved during etcd leader churn: %d changes, %v without holder, outage %v", st.Changes, ms(st.NoHolder), out)
		}
	})

	// 5. Quorum lost: two of three members killed. With the failsafe
	// the holder keeps the VIP on web-node-2's promises (the variant with
	// the failsafe off, at the end, fails closed).
	env.quorumLostFailsafe()

	// 5a–g. Nobody reaches etcd: frozen, killed, with the peer blocked,
	// with HAProxy failing on the holder, a peer restarted during the
	// hold, forged peer requests, and a newcomer outside the membership.
	env.failsafeScenarios()

	// 6. The holder's vipd talks to one member only, and that member is
	// partitioned from the other two (nft in the member's namespace); the
	// peer channel between the nodes is blocked (no relay).
	// Twice: the member is the etcd leader (it may keep answering until it
	// notices it lost quorum), then a follower (it loses its leader).
	for _, want := range []string{"leader", "follower"} {
		scenario("single-endpoint-"+want+"-isolated", "holder's only etcd member ("+want+") isolated, peer channel blocked", func(t *testing.T, s *scen) {
			leader, _, err := tb.EtcdLeader(cli, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			e1 := leader
			if want == "follower" {
				e1 = tb.Etcd[0]
				if e1 == leader {
					e1 = tb.Etcd[1]
				}
			}
			var peers []*testbed.EtcdMember
			for _, m := range tb.Etcd {
				if m != e1 {
					peers = append(peers, m)
				}
			}
			single := strings.Replace(n1.VipdConfig(), strings.Join(tb.Endpoints(), ", "), e1.ClientURL(), 1)
			if single == n1.VipdConfig() {
				t.Fatal("could not rewrite the endpoint list")
			}
			t.Cleanup(func() {
				e1.Unblock()
				n1.Unblock()
				n1.StopVipd()
				n1.StartVipd() // back to every endpoint
			})
			// Without its peer: web-node-2 reaches the majority and would
			// renew web-node-1's lease for it (a relay, as in 1a); this
			// scenario is about what the isolated member answers.
			if err := n1.BlockPeerChannel(n2.IP); err != nil {
				t.Fatal(err)
			}
			if err := n1.StopVipd(); err != nil {
				t.Fatal(err)
			}
			if err := n1.StartVipdWithConfig(single); err != nil {
				t.Fatal(err)
			}
			if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			leader, _, _ = tb.EtcdLeader(cli, 5*time.Second)
			role := "follower"
			if leader == e1 {
				role = "leader"
			}
			t0 := time.Now()
			s.from = t0
			if err := e1.Block(etcdIPs(peers...)...); err != nil {
				t.Fatal(err)
			}
			if err := tb.WaitHolder(testbed.Node2, 4*leaseTTL); err != nil {
				t.Fatal(err)
			}
			del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
			add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
			deadline, lines, _ := fenceFromLog(n1, t0, del.Time)
			late := time.Duration(0)
			if lines > 0 {
				late = del.Time.Sub(deadline)
				if late > 100*time.Millisecond {
					t.Errorf("VIP removed %v after the fence deadline", ms(late))
				}
			} else {
				t.Errorf("no failed renewal logged before the release: the isolated member kept renewing?\n%s", n1.Vipd().LogTail(30))
			}
			if !add.Time.After(del.Time) {
				t.Errorf("web-node-2 added the VIP before web-node-1 removed it")
			}
			if lines > 0 {
				// web-node-2 may acquire only once web-node-1's lease can
				// have expired: its last successful renewal (sent) + TTL.
				after := add.Time.Sub(deadline.Add(fenceMargin))
				if after < -2*time.Millisecond {
					t.Errorf("web-node-2 acquired %v before web-node-1's lease could expire", ms(-after))
				}
				res.add("isolated "+role+": web-node-2 added vs earliest lease expiry", ms(after), "≥ 0 (asserted)")
			}
			if own, ok := waitLog(n1, t0, "VIP removed", 0); ok && lines > 0 {
				d := own.Time.Sub(deadline)
				if d > 100*time.Millisecond {
					t.Errorf("vipd unbound %v after its fence deadline", ms(d))
				}
				res.add("isolated "+role+": vipd's own unbind vs fence deadline", ms(d), "≤ +100ms (asserted); reason "+own.Attrs["reason"])
			} else {
				t.Errorf("web-node-1's vipd never logged the VIP's removal")
			}
			res.add("isolated "+role+": web-node-1 removed after isolation", ms(del.Time.Sub(t0)), fmt.Sprintf("%v after its fence deadline (≤ 100ms asserted)", ms(late)))
			res.add("isolated "+role+": web-node-2 added after removal", ms(add.Time.Sub(del.Time)), "> 0 (asserted)")
			s.note("%s was %s; VIP gone %s after the fence (kernel lifetime); web-node-2 added it %s after", e1.Name, role, ms(late), ms(add.Time.Sub(del.Time)))
			tHeal := time.Now()
			if err := e1.Unblock(); err != nil {
				t.Fatal(err)
			}
			if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			add1, _ := tb.Mon.EventAfter(testbed.Node1, true, tHeal)
			res.add("isolated "+role+": heal → web-node-1 back", ms(add1.Time.Sub(tHeal)), "")
		})
	}

	// 7. VIPs changed by hand: deleted on the holder, added on the standby.
	scenario("vip-changed-by-hand", "VIP deleted on holder / added on standby by hand", func(t *testing.T, s *scen) {
		tDel := time.Now()
		if err := n1.DelVIP(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, tDel)
		re, _ := tb.Mon.EventAfter(testbed.Node1, true, tDel)
		restore := re.Time.Sub(del.Time)
		if restore > time.Second {
			t.Errorf("deleted VIP restored after %v, want ≤ 1s", ms(restore))
		}
		if _, ok := tb.Mon.EventAfter(testbed.Node2, true, tDel); ok {
			t.Errorf("web-node-2 took the VIP after a hand delete on the holder")
		}
		time.Sleep(300 * time.Millisecond)
		out := tb.Probes().Window(tDel, time.Now()).LongestOutage()
		res.add("hand delete on holder → restored", ms(restore), "≤ 1s (asserted)")
		tAdd := time.Now()
		if err := n2.AddVIP(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, tAdd)
		rm, _ := tb.Mon.EventAfter(testbed.Node2, false, tAdd)
		stray := rm.Time.Sub(add.Time)
		if stray > time.Second {
			t.Errorf("stray VIP on the standby removed after %v, want ≤ 1s", ms(stray))
		}
		// Every moment with two holders from the hand add on is the test's.
		s.hand = true
		defer func() { s.byHand = tb.Mon.Stats(tAdd, time.Now()).TwoHolders }()
		res.add("hand add on standby → removed", ms(stray), "≤ 1s (asserted)")
		s.outage = &out
		s.note("restored in %s (outage %v); stray removed in %s", ms(restore), out, ms(stray))
		time.Sleep(300 * time.Millisecond)
	})

	// 8. The holder's own eth0 goes down (inside its namespace), then up.
	scenario("holder-eth0-down-up", "holder's eth0 down, then up", func(t *testing.T, s *scen) {
		t.Cleanup(func() { n1.SetEthUp(true) })
		t0 := time.Now()
		if err := n1.SetEthUp(false); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node2, 3*leaseTTL); err != nil {
			t.Fatal(err)
		}
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		res.add("eth0 down: VIP removed on web-node-1", ms(del.Time.Sub(t0)), "")
		res.add("eth0 down: VIP added on web-node-2", ms(add.Time.Sub(t0)), fmt.Sprintf("gap %v (lease expiry: web-node-1 cannot resign)", ms(add.Time.Sub(del.Time))))
		time.Sleep(time.Second)
		tUp := time.Now()
		if err := n1.SetEthUp(true); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		st := tb.Mon.Stats(tUp, time.Now())
		var adds1 int
		for _, e := range tb.Mon.Events() {
			if e.Node == testbed.Node1 && e.Added && !e.Time.Before(tUp) {
				adds1++
			}
		}
		if adds1 != 1 || st.Changes > 2 {
			t.Errorf("after eth0 up: web-node-1 added the VIP %d times, %d holder changes; want one move back", adds1, st.Changes)
		}
		back1, _ := tb.Mon.EventAfter(testbed.Node1, true, tUp)
		res.add("eth0 up → web-node-1 back (preempt)", ms(back1.Time.Sub(tUp)), fmt.Sprintf("%d changes after up (≤ 2 asserted)", st.Changes))
		s.note("removed %s after down; web-node-2 +%s; back once after up (%d changes)", ms(del.Time.Sub(t0)), ms(add.Time.Sub(t0)), st.Changes)
	})

	// 9. Garbage in etcd.
	scenario("garbage-in-etcd", "garbage keys in etcd", func(t *testing.T, s *scen) {
		garbage := []struct{ key, val, why string }{
			{"/vipd/groups/VI_1/candidates/web-node-9", "{not json", "non-JSON candidate record"},
			{"/vipd/groups/VI_1/candidates/web-node-7", `{"node":"web-node-1","priority":250,"state":"MASTER","preempt":true}`, "candidate record naming another node than its key"},
			{"/vipd/groups/VI_9/leader", "ghost-node", "leader key without a lease, unknown group"},
			{"/vipd/groups/VI_1/handover", "\x00\xffgarbage", "handover request that is not JSON"},
			{"/vipd/groups/VI_1/candidates/x/y", "1", "too deep candidate key"},
			{"/vipd/groups//leader", "x", "empty group name"},
			{"/vipd/nodes/web-node-2/garbage", "x", "unknown node key"},
			{"/vipd/unknown", "\xff", "unknown key"},
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			for _, g := range garbage {
				cli.Delete(ctx, g.key)
			}
		})
		t0 := time.Now()
		p1 := n1.Vipd()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, g := range garbage {
			if _, err := cli.Put(ctx, g.key, g.val); err != nil {
				t.Fatalf("put %s: %v", g.key, err)
			}
		}
		for _, n := range []*testbed.Node{n1, n2} {
			if _, ok := waitLog(n, t0, "ignoring malformed candidate record", 3*time.Second); !ok {
				t.Errorf("%s did not log the malformed candidate record", n.Name)
			}
			if _, ok := waitLog(n, t0, "ignoring malformed handover request", time.Second); !ok {
				t.Errorf("%s did not log the malformed handover request", n.Name)
			}
		}
		// A restarted standby lists the garbage (not only watches it).
		tR := time.Now()
		if err := n2.StopVipd(); err != nil {
			t.Fatal(err)
		}
		if err := n2.StartVipd(); err != nil {
			t.Fatal(err)
		}
		if _, ok := waitLog(n2, tR, "state change", 5*time.Second); !ok {
			t.Errorf("restarted web-node-2 reached no state with garbage in etcd\n%s", n2.Vipd().LogTail(20))
		}
		if _, ok := waitLog(n2, tR, "ignoring malformed candidate record", time.Second); !ok {
			t.Errorf("restarted web-node-2 did not log the garbage it listed")
		}
		time.Sleep(1500 * time.Millisecond)
		if !p1.Running() || !n2.Vipd().Running() {
			t.Errorf("a vipd exited with garbage in etcd (web-node-1 %v, web-node-2 %v)", p1.Running(), n2.Vipd().Running())
		}
		// Removing it again is no event either.
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer dcancel()
		for _, g := range garbage {
			if _, err := cli.Delete(dctx, g.key); err != nil {
				t.Errorf("delete %s: %v", g.key, err)
			}
		}
		time.Sleep(time.Second)
		st := tb.Mon.Stats(t0, time.Now())
		if st.Changes != 0 {
			t.Errorf("VIP changed with garbage in etcd: %d changes", st.Changes)
		}
		var warns []string
		for _, l := range logSince(n1, t0, "") {
			if l.Level == "WARN" || l.Level == "ERROR" {
				warns = append(warns, l.Msg)
			}
		}
		res.add("garbage: keys written / VIP changes", fmt.Sprintf("%d / %d", len(garbage), st.Changes), "0 changes, both vipd alive (asserted)")
		s.note("%d garbage keys; web-node-1 warnings: %v", len(garbage), uniq(warns))
	})

	// 9b. A well-formed candidate record for a node that does not exist,
	// with a higher priority, written without a lease (no vipd writes one
	// without its lease): it must not make the holder step down.
	scenario("ghost-candidate", "unknown node's candidate (no lease, prio 250)", func(t *testing.T, s *scen) {
		key := "/vipd/groups/VI_1/candidates/ghost-node"
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			cli.Delete(ctx, key)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		t0 := time.Now()
		if _, err := cli.Put(ctx, key, `{"node":"ghost-node","priority":250,"state":"BACKUP","preempt":true}`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		st := tb.Mon.Stats(t0, time.Now())
		if _, err := cli.Delete(ctx, key); err != nil {
			t.Error(err)
		}
		if st.Changes != 0 {
			var lines []string
			for _, l := range logSince(n1, t0, "state change") {
				lines = append(lines, l.Raw)
			}
			s.note("%d VIP changes while the record existed", st.Changes)
			if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
				t.Error(err)
			}
			vipdBug(t, "a lease-less candidate record of an unknown node preempts the holder",
				"a lease-less candidate record of an unknown node moved the VIP: %d changes, %v without holder\n%s",
				st.Changes, ms(st.NoHolder), strings.Join(lines, "\n"))
			return
		}
		s.note("%d VIP changes while the record existed", st.Changes)
	})

	// 10. vipd cleanup --config FILE inside a node namespace.
	scenario("vipd-cleanup", "vipd cleanup --config (standby node)", func(t *testing.T, s *scen) {
		extra := []netip.Prefix{netip.MustParsePrefix("192.168.20.16/24"), netip.MustParsePrefix("192.168.20.17/32")}
		cfg := fmt.Sprintf(`node: %s
etcd:
  endpoints: [%s]
groups:
  - name: VI_1
    interface: eth0
    addresses: [%s]
    priority: 100
  - name: VI_2
    interface: eth0
    addresses: [%s, %s]
    priority: 100
  - name: VI_3
    interface: eth9
    addresses: [192.168.20.18/24]
    priority: 100
`, n2.Name, strings.Join(tb.Endpoints(), ", "), testbed.VIP, extra[0], extra[1])
		path := filepath.Join(tb.Dir, "cleanup.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, p := range extra {
				n2.DelAddr(p)
			}
		})
		for _, p := range extra {
			if err := n2.AddAddr(p); err != nil {
				t.Fatal(err)
			}
		}
		run := func(runtimeDir string) (string, int) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := n2.Exec(ctx, filepath.Join(binDir, "vipd"), "cleanup", "--config", path, "--runtime-dir", runtimeDir)
			code := 0
			if err != nil {
				code = -1
				if ee, ok := err.(interface{ ExitCode() int }); ok {
					code = ee.ExitCode()
				}
			}
			return strings.TrimSpace(string(out)), code
		}
		// With web-node-2's vipd running in its runtime dir, cleanup
		// refuses (it would strip a running vipd) and removes nothing.
		out0, code0 := run(n2.VipdRuntimeDir())
		if want := fmt.Sprintf("another vipd (pid %d) is running", n2.Vipd().Pid()); code0 != 1 || !strings.Contains(out0, want) {
			t.Errorf("cleanup next to a running vipd: exit %d, output %q; want exit 1 and %q", code0, out0, want)
		}
		for _, p := range extra {
			if has, _ := n2.HasAddr(p); !has {
				t.Errorf("%v removed by a cleanup that refused", p)
			}
		}
		// The cleanup mechanics, as on a host whose vipd is stopped: a
		// runtime dir of its own, since the standby's vipd keeps running.
		cleanupDir := filepath.Join(tb.Dir, "run-cleanup")
		out1, code1 := run(cleanupDir)
		if code1 != 0 || !strings.Contains(out1, "removed 2 VIPs") {
			t.Errorf("first cleanup: exit %d, output:\n%s", code1, out1)
		}
		for _, p := range extra {
			if has, _ := n2.HasAddr(p); has {
				t.Errorf("%v still on web-node-2 after cleanup", p)
			}
		}
		if has, _ := n2.HasAddr(netip.PrefixFrom(n2.IP, 24)); !has {
			t.Errorf("cleanup removed web-node-2's own address")
		}
		out2, code2 := run(cleanupDir)
		if code2 != 0 || !strings.Contains(out2, "removed 0 VIPs") {
			t.Errorf("second cleanup (nothing to do): exit %d, output:\n%s", code2, out2)
		}
		if hs := tb.Holders(); len(hs) != 1 || hs[0] != testbed.Node1 {
			t.Errorf("holders after cleanup on the standby: %v", hs)
		}
		res.add("vipd cleanup: 1st run / 2nd run", fmt.Sprintf("exit %d %q / exit %d %q", code1, lastLine(out1), code2, lastLine(out2)), "2 removed, then 0; exit 0 both (asserted)")
		s.note("refused next to the running vipd (exit %d); then exit %d (2 removed), exit %d (0 removed); missing eth9 only warned", code0, code1, code2)
	})

	// 11a. Planned handover with vipctl (issue 5).
	scenario("vipctl-handover", "vipctl handover VI_1 --to web-node-2", func(t *testing.T, s *scen) {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, err := tb.Client.Exec(ctx, filepath.Join(binDir, "vipctl"), "handover", "VI_1", "--to", testbed.Node2,
			"--hold", "3s", "--endpoints", strings.Join(tb.Endpoints(), ","))
		if err != nil {
			t.Fatalf("vipctl handover: %v\n%s", err, out)
		}
		if err := tb.WaitHolder(testbed.Node2, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.WaitAnswer(testbed.Node2, t0, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		t1 := time.Now()
		o := tb.Probes().Window(t0, t1).LongestOutage()
		del, _ := tb.Mon.EventAfter(testbed.Node1, false, t0)
		add, _ := tb.Mon.EventAfter(testbed.Node2, true, t0)
		if o.Duration > 500*time.Millisecond {
			t.Errorf("planned handover: client outage %v, want ≤ 0.5s (target 0.1s)", o)
		}
		met := "met"
		if o.Duration > 100*time.Millisecond {
			met = "MISSED"
		}
		res.add("vipctl handover: client outage", o, fmt.Sprintf("target ≤ 100ms: %s (asserted ≤ 500ms)", met))
		res.add("vipctl handover: VIP removed → added", ms(add.Time.Sub(del.Time)), strings.TrimSpace(string(out)))
		s.outage = &o
		s.to = t1
		s.note("outage %v (target 0.1s: %s); VIP gap %s", o, met, ms(add.Time.Sub(del.Time)))
		// After the 3 s hold, web-node-1 preempts back.
		if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	// 11b. SIGHUP with a changed valid config keeps the held VIP; SIGHUP
	// with an invalid one keeps the old config running.
	scenario("sighup-reload", "SIGHUP reload on holder (valid, then invalid)", func(t *testing.T, s *scen) {
		orig := n1.VipdConfig()
		path := n1.VipdConfigPath()
		t.Cleanup(func() { os.WriteFile(path, []byte(orig), 0o644) })
		// A changed tracked check (interval) and GARP count; same VIP.
		changed := strings.Replace(strings.Replace(orig, "interval: 200ms", "interval: 300ms", 1), "count: 5", "count: 3", 1)
		if changed == orig {
			t.Fatal("could not change the config")
		}
		hup := func(cfg, want string) logLine {
			t.Helper()
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			th := time.Now()
			if err := n1.SignalVipd(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			l, ok := waitLog(n1, th, want, 3*time.Second)
			if !ok {
				t.Fatalf("no %q after SIGHUP\n%s", want, n1.Vipd().LogTail(20))
			}
			return l
		}
		t0 := time.Now()
		hup(changed, "configuration reloaded")
		time.Sleep(time.Second)
		bad := hup("node: web-node-1\ngroups: [\n", "reload rejected; the running configuration stays")
		bad2 := hup(strings.Replace(orig, "lease_ttl: 3s", "lease_ttl: 1s", 1), "reload rejected; the running configuration stays")
		time.Sleep(time.Second)
		if !n1.Vipd().Running() {
			t.Fatal("vipd exited after an invalid config on SIGHUP")
		}
		hup(orig, "configuration reloaded")
		time.Sleep(500 * time.Millisecond)
		st := tb.Mon.Stats(t0, time.Now())
		res.add("SIGHUP valid/invalid/invalid/valid: VIP changes", st.Changes, "0, no remove event (asserted)")
		s.note("reloaded twice, rejected twice (%q; %q), %d VIP events", trunc(bad.Attrs["err"], 50), trunc(bad2.Attrs["err"], 60), st.Changes)
		if !n1.Vipd().Running() {
			t.Fatal("vipd exited")
		}
		if ev, ok := tb.Mon.EventAfter(testbed.Node1, false, t0); ok || st.Changes != 0 {
			var lines []string
			for _, l := range logSince(n1, t0, "") {
				if l.Msg == "VIP removed" || l.Msg == "state change" || l.Msg == "configuration reloaded" || l.Msg == "check up" {
					lines = append(lines, l.Raw)
				}
			}
			if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
				t.Error(err)
			}
			vipdBug(t, "reload with a changed tracked check resets it to unknown (counted as down): the holder is preempted",
				"held VIP removed during reloads (%v, %d changes)\n%s", ev, st.Changes, strings.Join(lines, "\n"))
		}
	})

	// 14. Quorum lost with the failsafe off (peer channel on for relays,
	// failsafe: false): the holder fails closed by its deadline; with
	// quorum back some node holds within 1 s + TTL.
	scenarioPeer("quorum-lost-failsafe-off", "etcd quorum lost (2 of 3 killed), then back", testbed.PeerRelay, func(t *testing.T, s *scen) {
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
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, 2*leaseTTL); err != nil {
			t.Fatalf("holder did not release without quorum: %v", err)
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
		res.add("quorum lost: VIP removed vs fence deadline", ms(late), "≤ +100ms (asserted)")
		if own, ok := waitLog(n1, t0, "VIP removed", 2*time.Second); ok {
			if d := own.Time.Sub(deadline); d > 100*time.Millisecond {
				t.Errorf("vipd unbound %v after its fence deadline", ms(d))
			}
			res.add("quorum lost: vipd's own unbind vs fence deadline", ms(own.Time.Sub(deadline)), "≤ +100ms (asserted); reason "+own.Attrs["reason"])
		} else {
			t.Errorf("web-node-1's vipd never logged the VIP's removal")
		}
		// Nobody may take it while there is no quorum.
		time.Sleep(time.Second)
		if hs := tb.Holders(); len(hs) != 0 {
			t.Errorf("holders without etcd quorum: %v", hs)
		}
		tBack := time.Now()
		for _, m := range down {
			if err := m.Start(); err != nil {
				t.Fatal(err)
			}
		}
		hs, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 1 }, time.Second+leaseTTL+2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		add, _ := tb.Mon.EventAfter(hs[0], true, tBack)
		took := add.Time.Sub(tBack)
		if took > time.Second+leaseTTL {
			t.Errorf("quorum back → holder after %v, want ≤ 1s + lease TTL", ms(took))
		}
		res.add("quorum back → "+hs[0]+" holds", ms(took), "≤ 1s + TTL = 4s (asserted)")
		s.note("VIP gone %s after fence (kernel lifetime); quorum back → %s holds after %s", ms(late), hs[0], ms(took))
		waitHealthy(t, tb.Etcd, 15*time.Second)
	})

	// 15. The holder cut from etcd with the peer channel off (no peer
	// section, as a config without one runs): it fails closed by its
	// fence, as 1b with the channel blocked.
	scenarioPeer("holder-cut-from-etcd-peer-off", "holder cut from all etcd members (nft)", testbed.PeerOff, func(t *testing.T, s *scen) {
		cutFailsClosed(t, s, "cut, peer off", testbed.Filter{Hosts: etcdIPs(tb.Etcd...)})
	})

	t.Run("whole-run", func(t *testing.T) {
		st := tb.Mon.Stats(tStart, time.Now())
		if errs := tb.Mon.Errors(); len(errs) > 0 {
			t.Errorf("holder monitor errors (events may be lost): %v", errs)
		}
		if err := tb.Mon.CrossCheck(time.Second); err != nil {
			t.Error(err)
		}
		for _, n := range tb.Nodes {
			for _, l := range vipdLog(n) {
				if strings.Contains(l.Raw, "panic") {
					t.Errorf("%s logged a panic: %s", n.Name, l.Raw)
				}
			}
		}
		res.add("TestSafety: time with two holders (incl. by hand)", ms(st.TwoHolders), "only the hand-added stray VIP")
		res.add("TestSafety: closest VIP removal → next add", ms(st.MinGap), "includes the hand delete that vipd restores")
		res.add("TestSafety: wall time", ms(time.Since(tStart)), "")
	})
}

// failureDigest is what a failed scenario looked like: the VIP's moves,
// the longest client outage, and each node's state changes in its window.
func failureDigest(tb *testbed.Testbed, name string, from, to time.Time, out testbed.Outage, nodes ...*testbed.Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "== %s (%s – %s): longest client outage %v (%d probes failed)\n", name,
		from.Format("15:04:05.000"), to.Format("15:04:05.000"), out.Duration, out.Failed)
	for _, ev := range tb.Mon.Events() {
		if !ev.Time.Before(from) && !ev.Time.After(to) {
			fmt.Fprintf(&b, "   %v\n", ev)
		}
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "   %s: %s\n", n.Name, strings.Join(states(n, from), "; "))
		var warn []string
		for _, l := range vipdLog(n) {
			if !l.Time.Before(from) && !l.Time.After(to) && (l.Level == "WARN" || l.Level == "ERROR") {
				warn = append(warn, l.Raw)
			}
		}
		if len(warn) > 20 { // the last ones are the ones that explain
			fmt.Fprintf(&b, "     (%d earlier warnings)\n", len(warn)-20)
			warn = warn[len(warn)-20:]
		}
		for _, w := range warn {
			fmt.Fprintf(&b, "     %s\n", w)
		}
	}
	return b.String()
}

// vipdBug fails the sub-test with a description of the vipd bug it
// guards against (all three found by this suite are fixed; the
// measurements still go into the tables first).
func vipdBug(t *testing.T, bug, format string, args ...any) {
	t.Helper()
	t.Errorf("vipd bug: "+bug+": "+format, args...)
}

// vipdRemoval returns vipd's own "VIP removed" log line at or after t (the
// monitor's removal event may be the kernel's lifetime expiry instead).
func vipdRemoval(n *testbed.Node, t time.Time) (logLine, bool) {
	return waitLog(n, t, "VIP removed", 0)
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
