package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

var keys = election.Keys{Prefix: "/vipd"}

// pair starts web-node-1 (101) and web-node-2 (100) and waits for
// web-node-1 to hold and both candidate records to be published.
func pair(t *testing.T) (*etcdtest.Member, *fakenet.Recorder, *keepertest.Node, *keepertest.Node) {
	t.Helper()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	n2 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	waitStatus(t, m, func(g GroupStatus) bool { return g.Holder == "web-node-1" && len(g.Candidates) == 2 })
	return m, rec, n1, n2
}

func waitStatus(t *testing.T, m *etcdtest.Member, ok func(GroupStatus) bool) GroupStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := Status(context.Background(), m.Client(t), keys)
		if err != nil {
			t.Fatal(err)
		}
		if g, found := findGroup(st, "VI_1"); found && ok(g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never matched: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := realMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatusTableAndJSON(t *testing.T) {
	m, _, _, _ := pair(t)
	code, out, errs := run(t, "status", "--endpoints", m.Endpoint)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"GROUP", "VI_1", "web-node-1", "web-node-2", "MASTER", "BACKUP", "101", "100"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// The group's addresses and interface stand next to its holder, on
	// the group's first line.
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[0]); !slices.Equal(f[:4], []string{"GROUP", "HOLDER", "ADDRESSES", "INTERFACE"}) {
		t.Errorf("header %q, want GROUP HOLDER ADDRESSES INTERFACE first", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || !slices.Equal(f[:4], []string{"VI_1", "web-node-1", "192.168.20.15/24", "eth0"}) {
		t.Errorf("first row %q, want VI_1 web-node-1 192.168.20.15/24 eth0 first", lines[1])
	}
	code, out, _ = run(t, "status", "--json", "--endpoints", m.Endpoint)
	var st []GroupStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json: exit %d, output %q", code, out)
	}
	if len(st) != 1 || st[0].Holder != "web-node-1" || st[0].LeaseTTLSeconds <= 0 || len(st[0].Candidates) != 2 ||
		st[0].Candidates[0].Node != "web-node-1" || st[0].Candidates[0].Priority != 101 ||
		!slices.Equal(st[0].Addresses, []string{"192.168.20.15/24"}) || st[0].Interface != "eth0" ||
		st[0].Candidates[1].Interface != "eth0" || !slices.Equal(st[0].Candidates[1].Addresses, []string{"192.168.20.15/24"}) {
		t.Errorf("unexpected JSON status: %+v", st)
	}
}

func TestHandoverMovesTheVIPAndHolds(t *testing.T) {
	m, rec, _, _ := pair(t)
	code, out, errs := run(t, "handover", "VI_1", "--to", "web-node-2", "--hold", "3s", "--endpoints", m.Endpoint)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "web-node-1 -> web-node-2") {
		t.Errorf("output %q does not report the move", out)
	}
	rec.WaitFor(t, "web-node-2", 2*time.Second)
	// web-node-1 (101 > 100) must not preempt back while the hold lasts.
	time.Sleep(time.Second)
	if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-2" {
		t.Errorf("holders %v one second into the hold, want [web-node-2]", h)
	}
	// After the hold the better node preempts back (preempt: true).
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestHandoverErrors(t *testing.T) {
	m, _, _, _ := pair(t)
	cli := m.Client(t)
	ctx := context.Background()
	if _, err := Handover(ctx, cli, keys, "VI_9", "", time.Second); !errors.Is(err, ErrUnknownGroup) {
		t.Errorf("unknown group: %v", err)
	}
	if _, err := Handover(ctx, cli, keys, "VI_1", "web-node-7", time.Second); !errors.Is(err, ErrUnknownNode) || !strings.Contains(err.Error(), "web-node-7") {
		t.Errorf("unknown node: %v", err)
	}
	// A candidate in FAULT cannot take over.
	rec, _ := json.Marshal(election.Candidate{Node: "web-node-3", Priority: 99, State: election.StateFault, Failing: []string{"haproxy"}})
	if _, err := cli.Put(ctx, keys.Candidate("VI_1", "web-node-3"), string(rec)); err != nil {
		t.Fatal(err)
	}
	_, err := Handover(ctx, cli, keys, "VI_1", "web-node-3", time.Second)
	if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "haproxy") {
		t.Errorf("target in fault: %v", err)
	}
	code, _, errs := run(t, "handover", "VI_1", "--to", "web-node-3", "--endpoints", m.Endpoint)
	if code != 1 || !strings.Contains(errs, "not healthy") {
		t.Errorf("CLI: exit %d, stderr %q", code, errs)
	}
}

func TestEtcdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	code, _, errs := run(t, "status", "--endpoints", "http://"+addr, "--timeout", "500ms")
	if code != 1 || !strings.Contains(errs, "unreachable") || !strings.Contains(errs, addr) {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestDrainSurvivesRestartAndUndrain(t *testing.T) {
	m, rec, n1, _ := pair(t)
	code, out, errs := run(t, "drain", "web-node-1", "--endpoints", m.Endpoint)
	if code != 0 || !strings.Contains(out, "VI_1") {
		t.Fatalf("drain: exit %d, out %q, err %q", code, out, errs)
	}
	rec.WaitFor(t, "web-node-2", 2*time.Second)
	waitStatus(t, m, func(g GroupStatus) bool {
		for _, c := range g.Candidates {
			if c.Node == "web-node-1" {
				return c.Drained
			}
		}
		return false
	})

	// A restarted vipd on web-node-1 stays drained.
	n1.Stop()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	time.Sleep(time.Second)
	if h := rec.Holders(); len(h) != 1 || h[0] != "web-node-2" {
		t.Fatalf("after restart of the drained node, holders = %v", h)
	}

	if code, _, errs := run(t, "undrain", "web-node-1", "--endpoints", m.Endpoint); code != 0 {
		t.Fatalf("undrain: exit %d: %s", code, errs)
	}
	rec.WaitFor(t, "web-node-1", 5*time.Second) // better priority, preempt on
	if code, _, errs := run(t, "undrain", "web-node-1", "--endpoints", m.Endpoint); code != 1 || !strings.Contains(errs, "not drained") {
		t.Errorf("second undrain: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := run(t, "drain", "web-node-9", "--endpoints", m.Endpoint); code != 1 || !strings.Contains(errs, "web-node-9") {
		t.Errorf("drain of unknown node: exit %d, stderr %q", code, errs)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := run(t, "handover"); code != 2 {
		t.Errorf("handover without group: exit %d, want 2", code)
	}
	if code, _, errs := run(t, "bogus"); code != 2 || !strings.Contains(errs, "bogus") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errs)
	}
}

// Without --to the handover goes to the best other healthy candidate.
func TestHandoverWithoutTarget(t *testing.T) {
	m, rec, _, _ := pair(t)
	code, out, errs := run(t, "handover", "VI_1", "--hold", "3s", "--endpoints", m.Endpoint)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "web-node-1 -> web-node-2") {
		t.Errorf("output %q does not report the move", out)
	}
	rec.WaitFor(t, "web-node-2", 2*time.Second)
}

// ghost publishes a candidate record for a node that never claims (frozen,
// just killed): eligible as far as anyone can tell.
func ghost(t *testing.T, m *etcdtest.Member, node string, prio int) {
	t.Helper()
	cli := m.Client(t)
	l, err := cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(election.Candidate{Node: node, Priority: prio, State: election.StateBackup, Preempt: true})
	if _, err := cli.Put(t.Context(), keys.Candidate("VI_1", node), string(rec), clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
}

// A target that looks eligible but never claims: the old holder reclaims
// the group once (it does not loop acquire → release for the same
// request), the group is vacant only for a few backoff steps, and vipctl
// fails naming the reason.
func TestHandoverToATargetThatNeverClaims(t *testing.T) {
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	ghost(t, m, "web-node-2", 100)
	waitStatus(t, m, func(g GroupStatus) bool { return len(g.Candidates) == 2 })
	seen := len(rec.History())

	code, _, errs := run(t, "handover", "VI_1", "--hold", "5s", "--timeout", "5s", "--endpoints", m.Endpoint)
	if code == 0 || !strings.Contains(errs, "web-node-2 did not take over; web-node-1 reclaimed the group") {
		t.Fatalf("exit %d, stderr %q; want a failure naming the reason", code, errs)
	}
	rec.WaitFor(t, "web-node-1", time.Second)
	time.Sleep(1500 * time.Millisecond) // the request stands: no second release
	if changes := rec.History()[seen:]; len(changes) != 2 {
		t.Errorf("VIP changes during the failed handover: %d, want one release and one reclaim:\n%s", len(changes), strings.Join(changes, "\n"))
	}
}

// With --to naming a node that never claims, another healthy candidate
// takes over (it ranks next), and vipctl says the target did not.
func TestHandoverToATargetThatNeverClaimsOthersTakeOver(t *testing.T) {
	m, rec, _, _ := pair(t)
	ghost(t, m, "web-node-3", 99)
	waitStatus(t, m, func(g GroupStatus) bool { return len(g.Candidates) == 3 })
	code, _, errs := run(t, "handover", "VI_1", "--to", "web-node-3", "--hold", "5s", "--timeout", "5s", "--endpoints", m.Endpoint)
	if code == 0 || !strings.Contains(errs, "web-node-3 did not take over; web-node-2 did") {
		t.Fatalf("exit %d, stderr %q; want a failure naming what happened", code, errs)
	}
	rec.WaitFor(t, "web-node-2", time.Second)
}

func TestHandoverOutcome(t *testing.T) {
	cases := []struct {
		from, target, requested, got string
		fails                        bool
	}{
		{"n1", "n2", "", "n2", false},
		{"n1", "n2", "", "n3", false}, // no --to: any other node will do
		{"n1", "n2", "n2", "n2", false},
		{"n1", "n2", "n2", "n3", true},
		{"n1", "n2", "", "n1", true},
		{"n1", "n2", "n2", "n1", true},
	}
	for _, c := range cases {
		err := handoverOutcome(c.from, c.target, c.requested, c.got)
		if (err != nil) != c.fails || (err != nil && !errors.Is(err, ErrHandoverFailed)) {
			t.Errorf("handoverOutcome(%+v) = %v", c, err)
		}
	}
}

// A retried handover is a new request, although vipctl rewrites the same
// key (whose CreateRevision a rewrite keeps): after one that failed (the
// target never claimed, the holder reclaimed), a retry to a healthy node
// is carried out, within the first request's hold.
func TestHandoverRetryAfterFailure(t *testing.T) {
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	ghost(t, m, "web-node-3", 100)
	waitStatus(t, m, func(g GroupStatus) bool { return len(g.Candidates) == 2 })
	if code, _, errs := run(t, "handover", "VI_1", "--hold", "30s", "--timeout", "5s", "--endpoints", m.Endpoint); code == 0 {
		t.Fatalf("handover to a target that never claims succeeded: %s", errs)
	}
	rec.WaitFor(t, "web-node-1", time.Second)
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 99})
	waitStatus(t, m, func(g GroupStatus) bool { return len(g.Candidates) == 3 })
	code, out, errs := run(t, "handover", "VI_1", "--to", "web-node-2", "--hold", "30s", "--timeout", "5s", "--endpoints", m.Endpoint)
	if code != 0 || !strings.Contains(out, "web-node-1 -> web-node-2") {
		t.Fatalf("retried handover: exit %d, out %q, err %q", code, out, errs)
	}
	// web-node-2 yields once to the ghost (100 > 99), which never claims,
	// and then holds.
	rec.WaitFor(t, "web-node-2", 5*time.Second)
}

// A holder cut from etcd whose peer renews its lease shows as MASTER
// (relay): its record is written through the peer.
func TestStatusShowsARelayedHolder(t *testing.T) {
	m := etcdtest.Start(t)
	cut := etcdtest.NewProxy(t, m)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Via: cut, Peer: true})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Peer: true})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	waitStatus(t, m, func(g GroupStatus) bool { return g.Holder == "web-node-1" && len(g.Candidates) == 2 })
	cut.Cut()
	waitStatus(t, m, func(g GroupStatus) bool {
		return g.Holder == "web-node-1" && len(g.Candidates) == 2 && g.Candidates[0].Mode == "relay"
	})
	code, out, errs := run(t, "status", "--endpoints", m.Endpoint)
	if code != 0 || !strings.Contains(out, "MASTER (relay)") {
		t.Errorf("status exit %d, %s\n%s: want MASTER (relay)", code, errs, out)
	}
}

// Flags go before or after the command, as etcdctl and kubectl take them:
// `vipctl --config F status` reads F (it used to fail with unknown command
// "--config").
func TestFlagsBeforeOrAfterTheCommand(t *testing.T) {
	m, _, _, _ := pair(t)
	cfg := filepath.Join(t.TempDir(), "vipd.yaml")
	yaml := fmt.Sprintf(`node: web-node-9
etcd:
  endpoints: [%s]
groups:
  - name: VI_1
    interface: eth0
    addresses: [192.168.20.15/24]
`, m.Endpoint)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--config", cfg, "status"},
		{"status", "--config", cfg},
		{"--config=" + cfg, "status", "--timeout", "5s"},
		{"-config", cfg, "--json", "status"},
		{"--endpoints", m.Endpoint, "status"},
		{"--timeout", "5s", "status", "--endpoints", m.Endpoint},
	} {
		code, out, errs := run(t, args...)
		if code != 0 || !strings.Contains(out, "web-node-1") {
			t.Errorf("vipctl %s: exit %d, out %q, err %q", strings.Join(args, " "), code, out, errs)
		}
	}
	// A command's argument may come after flags that precede the command.
	code, out, errs := run(t, "--endpoints", m.Endpoint, "--hold", "1s", "handover", "--to", "web-node-2", "VI_1")
	if code != 0 || !strings.Contains(out, "web-node-1 -> web-node-2") {
		t.Errorf("handover with flags around it: exit %d, out %q, err %q", code, out, errs)
	}
}

// The parse alone, without etcd: where the command is found, and the
// errors for what is not a command line.
func TestFlagParsing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	for _, c := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		// The config is read (and is missing): the command was found.
		{[]string{"--config", missing, "status"}, 1, missing},
		{[]string{"status", "--config", missing}, 1, missing},
		{[]string{"--config", missing, "drain", "web-node-1"}, 1, missing},
		{[]string{"--config", missing, "--", "drain", "web-node-1"}, 1, missing},
		{[]string{"--config", missing}, 2, "no command"},
		{[]string{"--config", missing, "bogus"}, 2, `unknown command "bogus"`},
		{[]string{"--bogus", "status"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"--config"}, 2, "flag needs an argument"},
		{[]string{"--config", missing, "status", "extra"}, 2, "want 0 argument(s), got 1"},
		{[]string{"--config", missing, "drain"}, 2, "want 1 argument(s), got 0"},
	} {
		code, _, errs := run(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.inStderr) {
			t.Errorf("vipctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, errs, c.code, c.inStderr)
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"--config", missing, "-h"}, {"status", "--help"}} {
		if code, out, _ := run(t, args...); code != 0 || !strings.Contains(out, "usage: vipctl") {
			t.Errorf("vipctl %s: exit %d, out %q; want the usage and exit 0", strings.Join(args, " "), code, out)
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"--config", missing, "version"}} {
		if code, out, _ := run(t, args...); code != 0 || !strings.HasPrefix(out, "vipctl ") {
			t.Errorf("vipctl %s: exit %d, out %q", strings.Join(args, " "), code, out)
		}
	}
}

// The group's addresses and interface come from its holder's record; a
// vacant group shows the best candidate's; a record without them (a vipd
// older than the fields) is passed over, and with none the table says -.
func TestGroupPlace(t *testing.T) {
	a := []string{"10.0.0.1/24"}
	b := []string{"10.0.0.1/24", "10.0.0.2/24"}
	cases := []struct {
		name  string
		g     GroupStatus
		addrs []string
		iface string
	}{
		{"holder's, although worse ranked", GroupStatus{Holder: "n2", Candidates: []CandidateStatus{
			{Node: "n1", Interface: "eth0", Addresses: a}, {Node: "n2", Interface: "ens3", Addresses: b}}}, b, "ens3"},
		{"vacant: the best candidate's", GroupStatus{Candidates: []CandidateStatus{
			{Node: "n1", Interface: "eth0", Addresses: a}, {Node: "n2", Interface: "ens3", Addresses: b}}}, a, "eth0"},
		{"holder's record predates the fields", GroupStatus{Holder: "n1", Candidates: []CandidateStatus{
			{Node: "n1"}, {Node: "n2", Interface: "ens3", Addresses: b}}}, b, "ens3"},
		{"no record says", GroupStatus{Holder: "n1", Candidates: []CandidateStatus{{Node: "n1"}}}, []string{}, ""},
	}
	for _, c := range cases {
		addrs, iface := groupPlace(&c.g)
		if !slices.Equal(addrs, c.addrs) || iface != c.iface {
			t.Errorf("%s: %v on %q, want %v on %q", c.name, addrs, iface, c.addrs, c.iface)
		}
	}
	var out bytes.Buffer
	printStatus(&out, []GroupStatus{
		{Group: "VI_1", Holder: "n1", LeaseTTLSeconds: 3, Addresses: b, Interface: "ens3",
			Candidates: []CandidateStatus{{Node: "n1", Priority: 101, State: "MASTER"}, {Node: "n2", Priority: 100, State: "BACKUP"}}},
		{Group: "VI_2", Addresses: []string{}, Candidates: []CandidateStatus{}},
	})
	want := [][]string{
		{"GROUP", "HOLDER", "ADDRESSES", "INTERFACE", "LEASE", "NODE", "PRIORITY", "STATE", "FAILING"},
		{"VI_1", "n1", "10.0.0.1/24,10.0.0.2/24", "ens3", "3s", "n1", "101", "MASTER", "-"},
		{"n2", "100", "BACKUP", "-"},
		{"VI_2", "(vacant)", "-", "-", "-", "-", "-", "-", "-"},
	}
	got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("table:\n%s\nwant %d lines", out.String(), len(want))
	}
	for i := range got {
		if !slices.Equal(strings.Fields(got[i]), want[i]) {
			t.Errorf("table line %d: %q, want %q", i, got[i], want[i])
		}
	}
}
