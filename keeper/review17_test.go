package keeper_test

// Review of issue 17 (re-execution in place, b42e210). Each test names the
// finding it demonstrates and failed against that commit; the comments
// say what was found and, where the fix is elsewhere (cmd/vipd's
// preflight), what the keeper now does instead.

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

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/internal/runlock"
)

func unixDup(f *os.File) (uintptr, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	return uintptr(fd), err
}

// r17Start starts a node with its config changed by mutate first (a
// config edited across the re-execution).
func r17Start(t *testing.T, m *etcdtest.Member, rec *fakenet.Recorder, s keepertest.Spec, mutate func(*config.Config)) *keepertest.Node {
	t.Helper()
	s.Mutate = mutate
	return keepertest.Start(t, m, rec, s)
}

// r17StartFailing is r17Start whose first failRuns probe runs fail.
func r17StartFailing(t *testing.T, m *etcdtest.Member, rec *fakenet.Recorder, s keepertest.Spec, mutate func(*config.Config), failRuns int32) *keepertest.Node {
	t.Helper()
	s.Mutate, s.FailFirstRuns = mutate, failRuns
	return keepertest.Start(t, m, rec, s)
}

var vipPrefix = netip.PrefixFrom(vip, 24)

// steady fails the test if the VIP's holder history changes, or anyone
// but want holds, within d.
func steady(t *testing.T, rec *fakenet.Recorder, want string, d time.Duration, hosts ...*fakenet.Host) {
	t.Helper()
	before := len(rec.History())
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, h := range hosts {
			h.Has(vipPrefix) // expires what has run out, as the kernel would
		}
		if hs := rec.Holders(); len(hs) != 1 || hs[0] != want {
			t.Errorf("holders %v at %v into the re-execution; history:\n%s", hs, d-time.Until(deadline), history(rec))
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := rec.History(); len(got) != before {
		t.Errorf("the VIP moved or went down during the re-execution; history:\n%s", history(rec))
	}
}

// Finding: a check with init_fail starts known and DOWN in the next image
// (checks.NewState), so awaitAdoption's "first result" wait is over at
// once and the adopted holder runs its first passes with the check down:
// its priority drops by the weight (or it is in FAULT with weight 0) and
// it releases to the peer. Every `systemctl reload` moves the VIP (twice,
// with preempt). The check status is not handed over.
func TestReview17InitFailCheckMovesVIPOnReexec(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	initFail := func(c *config.Config) {
		ck := c.Checks["haproxy"]
		ck.InitFail = true
		c.Checks["haproxy"] = ck
	}
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, CheckInterval: 300 * time.Millisecond}
	n1 := r17Start(t, m, rec, spec, initFail)
	r17Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, CheckInterval: 300 * time.Millisecond}, initFail)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(1500 * time.Millisecond) // both checks up: 103 vs 102

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	r17Start(t, m, rec, spec, initFail)
	steady(t, rec, "web-node-1", 4*time.Second, n1.Host)
}

// Finding: lease_ttl raised across the re-execution (3s -> 10s; check
// --config accepts it, SIGHUP would refuse it as needing a restart). The
// adopted lease kept its granted TTL of 3 s at the server; the session
// took min(granted, configured) = 3 s for the fence, but paced renewals
// and the margin on the configured 10 s: the holder dropped and rebound
// its VIP every 1.67 s, for as long as it ran. Now the running image
// refuses such a re-execution (cmd/vipd: handoverable), and a next image
// given a handoff made with another TTL does not use it: it starts afresh
// (its cleanup takes the VIP off), claims anew on a lease of its own, and
// then holds steadily.
func TestReview17LeaseTTLRaisedAcrossReexec(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101}
	n1 := r17Start(t, m, rec, spec, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(500 * time.Millisecond)

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	next := r17Start(t, m, rec, spec, func(c *config.Config) { c.Etcd.LeaseTTL = 10 * time.Second })
	rec.WaitFor(t, "", 5*time.Second)
	rec.WaitFor(t, "web-node-1", 20*time.Second)
	if id := next.K.Session().Current().ID; int64(id) == h.Lease {
		t.Errorf("the next image renews the handed-over lease %x, made with another TTL", id)
	}
	steady(t, rec, "web-node-1", 6*time.Second, n1.Host)
}

// Finding: the next image waits, before any group loop runs, for its
// tracked checks' first results, up to a lease TTL (awaitAdoption), while
// the VIP lives only on the lifetime the old image set: 1 s at most with
// lease_ttl 3s, 0.5-1 s left at the detach. A check whose first run takes
// longer than what is left (here 1.2 s, an http check with a 2 s timeout
// against a slow backend) lets the kernel remove the VIP before the loop
// refreshes it: an outage on a plain reload, not two holders.
func TestReview17SlowFirstCheckLetsTheLifetimeRunOut(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, CheckInterval: 2 * time.Second, ProbeDelay: 1200 * time.Millisecond}
	n1 := r17Start(t, m, rec, spec, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(500 * time.Millisecond)

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	r17Start(t, m, rec, spec, nil)
	steady(t, rec, "web-node-1", 4*time.Second, n1.Host)
}

// Finding: the peer channel's failsafe turned off across the re-execution.
// A holder without the failsafe writes no membership record and its claim
// deletes the one it found (design §2.9 rule 4), but the adopted claim
// keeps the record the old image wrote, and nothing rewrites or deletes it
// (updateMembers returns at once without a failsafe part): it lists the
// members of the day for as long as the claim lasts, keeping out every
// node added since (rule 1) should this holder die while the listed
// standbys are gone.
func TestReview17FailsafeOffKeepsStaleMembersRecord(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Peer: true, Failsafe: true}
	n1 := r17Start(t, m, rec, spec, nil)
	r17Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Peer: true, Failsafe: true}, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	cli := m.Client(t)
	keys := election.Keys{Prefix: "/vipd"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := cli.Get(context.Background(), keys.Members(vip))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no membership record written by the failsafe holder")
		}
		time.Sleep(50 * time.Millisecond)
	}

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	spec.Peer, spec.Failsafe = false, false
	// (The running image refuses such a re-execution: cmd/vipd
	// handoverable. Given the handoff all the same, the next image does
	// not use it: it starts afresh and claims anew, deleting the record.)
	next := r17Start(t, m, rec, spec, nil)
	rec.WaitFor(t, "", 5*time.Second)
	rec.WaitFor(t, "web-node-1", 20*time.Second)
	if id := next.K.Session().Current().ID; int64(id) == h.Lease {
		t.Errorf("the next image, without the failsafe, adopted the failsafe holder's lease %x", id)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
	time.Sleep(500 * time.Millisecond)
	r, err := cli.Get(context.Background(), keys.Members(vip))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 0 {
		t.Errorf("holder without the failsafe still has the membership record %s (rule 4: none)", r.Kvs[0].Value)
	}
}

// Finding: etcd.prefix changed across the re-execution. The adopted lease
// is renewed by the next image, so the keys the old image wrote under the
// old prefix (leader key, address claim, candidate record) live on with
// it: nothing deletes them (Inspect, the view and the sweep see only the
// new prefix) and the lease never expires. A node still on the old prefix
// (a rolling change) sees a holder that holds nothing, for ever. A restart
// would have resigned them and revoked the lease.
func TestReview17PrefixChangeStrandsOldKeys(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101}
	n1 := r17Start(t, m, rec, spec, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	r17Start(t, m, rec, spec, func(c *config.Config) { c.Etcd.Prefix = "/vipd2" })
	time.Sleep(6 * time.Second) // twice the lease TTL
	cli := m.Client(t)
	old := election.Keys{Prefix: "/vipd"}
	r, err := cli.Get(context.Background(), old.Leader("VI_1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 0 {
		t.Errorf("leader key under the old prefix still there %v after the re-execution (lease %x, kept alive by the next image)",
			6*time.Second, clientv3.LeaseID(r.Kvs[0].Lease))
	}
}

// Finding: a second re-execution while the first image's successor is
// still adopting. CanDetach only asks for a directly renewed lease and no
// relay/failsafe mode; Ready (systemd READY=1) is true as soon as the lease
// is live, because no group loop has started yet (awaitAdoption is still
// waiting for the checks' first results: the summary is empty). A SIGUSR2
// then passes CanDetach; Detach cancels the context, awaitAdoption returns
// and every group loop starts on a cancelled context: its Inspect fails,
// and it hands over its claim still lapsed, so Bound=false. The image
// after it takes the bound claim for a fresh one (Held{Lapsed, Fresh}):
// Await removes the VIP and waits out the expiry grace (and, with the peer
// channel on, the start-up promise of a lease TTL) before binding again.
func TestReview17SecondReexecDuringAdoption(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	slow := keepertest.Spec{Tracked: true, CheckInterval: 2 * time.Second, ProbeDelay: 800 * time.Millisecond}
	spec := slow
	spec.Name, spec.Priority = "web-node-1", 101
	n1 := r17Start(t, m, rec, spec, nil)
	peer := slow
	peer.Name, peer.Priority = "web-node-2", 100
	r17Start(t, m, rec, peer, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(2 * time.Second) // both checks up: 103 vs 102

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	a := r17Start(t, m, rec, spec, nil)
	deadline := time.Now().Add(3 * time.Second)
	for {
		ready, _ := a.K.Ready()
		if ready && a.K.CanDetach() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the next image never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("next image ready (READY=1) and CanDetach passes while adopting: summary %q", a.K.Summary())
	ha := a.Detach()
	if len(ha.Groups) != 1 || !ha.Groups[0].Bound {
		t.Errorf("the adopting image handed over %+v: the bound claim is no longer marked bound", ha.Groups)
	}
	spec.Handoff = &ha
	r17Start(t, m, rec, spec, nil)
	steady(t, rec, "web-node-1", 3*time.Second, n1.Host)
}

// Finding: a group without addresses holds its MASTER state under the
// fence (design §2.1): a holder cut from etcd reports BACKUP and runs that
// hook at its fence. The next image, when it cannot renew the adopted
// lease, starts no group loop until awaitAdoption gives up a whole lease
// TTL after its start; only then does the adopted group (preset MASTER)
// drop and run the BACKUP hook: past the old image's fence by the time
// from its last renewal to the new image's start plus TTL/6. The peer
// becomes MASTER ExpiryGrace (1.45 s) after the server expiry, so a new
// image starting more than about 1.45 s after the last renewal leaves two
// MASTERs (hook-wise) at once.
func TestReview17AddresslessMasterOutlivesFence(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	mark := filepath.Join(t.TempDir(), "backup")
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, NoAddresses: true,
		Extra: fmt.Sprintf("    notify: {backup: [/bin/sh, -c, 'date +%%s.%%N >> %s']}\n", mark)}
	n1 := r17Start(t, m, rec, spec, nil)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(n1.K.Summary(), "VI_1=MASTER") {
		if time.Now().After(deadline) {
			t.Fatalf("never MASTER: %s", n1.K.Summary())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	os.Remove(mark)
	lastRenewal := time.Now().Add(-time.Since(n1.K.Session().Current().Renewed))
	h := n1.Detach()
	fence := lastRenewal.Add(3*time.Second - 500*time.Millisecond)
	p := etcdtest.NewProxy(t, m)
	p.Cut()
	spec.Host, spec.Handoff, spec.Via = n1.Host, &h, p
	r17Start(t, m, rec, spec, nil)
	time.Sleep(time.Until(fence.Add(3 * time.Second)))
	b, err := os.ReadFile(mark)
	if err != nil {
		t.Fatalf("no BACKUP hook run within 3 s of the fence: %v", err)
	}
	var sec float64
	fmt.Sscanf(strings.TrimSpace(string(b)), "%f", &sec)
	at := time.Unix(0, int64(sec*1e9))
	if late := at.Sub(fence); late > 100*time.Millisecond {
		t.Errorf("BACKUP hook ran %v after the fence of the last renewal; MASTER outlived the fence", late.Round(time.Millisecond))
	}
}

// Control for TestReview17AddresslessMasterOutlivesFence (passes): the same
// holder cut from etcd without a re-execution runs its BACKUP hook at its
// fence.
func TestReview17ControlAddresslessCutHolder(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	mark := filepath.Join(t.TempDir(), "backup")
	p := etcdtest.NewProxy(t, m)
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, NoAddresses: true, Via: p,
		Extra: fmt.Sprintf("    notify: {backup: [/bin/sh, -c, 'date +%%s.%%N >> %s']}\n", mark)}
	n1 := r17Start(t, m, rec, spec, nil)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(n1.K.Summary(), "VI_1=MASTER") {
		if time.Now().After(deadline) {
			t.Fatalf("never MASTER: %s", n1.K.Summary())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	os.Remove(mark)
	p.Cut()
	lastRenewal := time.Now().Add(-time.Since(n1.K.Session().Current().Renewed))
	fence := lastRenewal.Add(3*time.Second - 500*time.Millisecond)
	time.Sleep(time.Until(fence.Add(2 * time.Second)))
	b, err := os.ReadFile(mark)
	if err != nil {
		t.Fatalf("no BACKUP hook: %v", err)
	}
	var sec float64
	fmt.Sscanf(strings.TrimSpace(string(b)), "%f", &sec)
	at := time.Unix(0, int64(sec*1e9))
	t.Logf("BACKUP hook %v after the fence", at.Sub(fence).Round(time.Millisecond))
	if late := at.Sub(fence); late > 100*time.Millisecond {
		t.Errorf("BACKUP hook ran %v after the fence", late.Round(time.Millisecond))
	}
}

// Finding: a group removed (or renamed) across the re-execution is retired
// by the next image from a config synthesized out of the handoff
// (startUnconfiguredLocked): no notify hooks. It releases and leaves
// without its BACKUP or STOP hook; a SIGHUP removal runs both. For a group
// without addresses, whose hooks are the whole point (a cloud route), the
// node never gives up what its MASTER hook took while the peer's MASTER
// hook takes it too.
func TestReview17RemovedGroupRetiresWithoutHooks(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	mark := filepath.Join(t.TempDir(), "stop")
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101,
		Extra: fmt.Sprintf("    notify: {stop: [/bin/sh, -c, 'echo $VIPD_GROUP >> %s'], backup: [/bin/sh, -c, 'echo backup-$VIPD_GROUP >> %s']}\n", mark, mark)}
	n1 := r17Start(t, m, rec, spec, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	h := n1.Detach()
	os.Remove(mark)
	spec.Host, spec.Handoff = n1.Host, &h
	r17Start(t, m, rec, spec, func(c *config.Config) { c.Groups[0].Name = "VI_2" })
	time.Sleep(3 * time.Second)
	b, _ := os.ReadFile(mark)
	if !strings.Contains(string(b), "VI_1") {
		t.Errorf("group VI_1, removed across the re-execution, released and left without its BACKUP/STOP hook (hooks run: %q)", b)
	}
}

// Finding (same root as init_fail): the check state is not handed over,
// and a new check's first result decides at once (no fall hysteresis). A
// single failed probe at the next image's first run (HAProxy reloading in
// the same upgrade, a refused connection) turns the check down at once,
// where the running image, its check up with fall 2, would have ridden it
// out (design §1: "a refused probe during an HAProxy reload must not move
// the VIP on its own"): the holder is preempted and the VIP moves.
func TestReview17OneFailedFirstProbeMovesVIP(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	spec := keepertest.Spec{Name: "web-node-1", Priority: 101, Tracked: true, CheckInterval: 300 * time.Millisecond}
	n1 := r17Start(t, m, rec, spec, nil)
	r17Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Tracked: true, CheckInterval: 300 * time.Millisecond}, nil)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(time.Second)

	h := n1.Detach()
	spec.Host, spec.Handoff = n1.Host, &h
	r17StartFailing(t, m, rec, spec, nil, 1)
	steady(t, rec, "web-node-1", 3*time.Second, n1.Host)
}

// Finding: VIPD_LOCK_FD is trusted as is. runlock.Inherit takes any open
// descriptor for the lock (flock succeeds on any file nobody else locks),
// truncates it and writes the PID into it, and vipd then skips lockHost:
// the one-vipd-per-host lock is never taken, so a second vipd starts
// beside it, and the file behind the descriptor is clobbered. Inherit does
// not check that the descriptor is <runtime dir>/vipd.lock.
func TestReview17InheritTakesAnyDescriptor(t *testing.T) {
	dir := t.TempDir()
	other, err := os.Create(filepath.Join(t.TempDir(), "precious"))
	if err != nil {
		t.Fatal(err)
	}
	other.WriteString("data that must survive\n")
	fd, err := unixDup(other)
	if err != nil {
		t.Fatal(err)
	}
	lk, err := runlock.Inherit(fd, dir)
	if err == nil {
		defer lk.Close()
		b, _ := os.ReadFile(other.Name())
		second, err2 := runlock.Acquire(dir)
		if err2 == nil {
			second.Close()
		}
		t.Errorf("Inherit accepted a descriptor that is not the lock file (file now %q); the real lock in %s is free: Acquire err=%v",
			b, dir, err2)
	}
}

// Finding: re-executing a binary that predates issue 17 (a rollback: its
// `version` and `check --config` passed the preflight) handed it the
// lock's descriptor, which it does not know: it takes the lock afresh and
// flock refuses a second open file description even in the same process,
// so it exits ("another vipd is running"): a crash for the node. Now the
// preflight asks `version --features` for the handoff feature
// (cmd/vipd TestPreflight); the lock's behaviour itself is unchanged.
func TestReview17OlderBinaryRefusesInheritedLock(t *testing.T) {
	dir := t.TempDir()
	lk, err := runlock.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if l2, err := runlock.Acquire(dir); err == nil {
		l2.Close()
		t.Error("a second open of the held lock succeeded: an older image could start beside the handed-over lock")
	}
}
