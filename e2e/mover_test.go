package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/internal/ec2fake"
)

// providerScript plays a cloud provider for the exec mover: the owner of
// the addresses is a file, and every call is recorded with its time
// (CLOCK_REALTIME, as the holder monitor's), node and action.
const providerScript = `#!/bin/sh
exec 9>>"%[1]s/provider.lock"
flock 9
now=$(date +%%s.%%N)
owner=$(cat "%[1]s/owner" 2>/dev/null)
echo "$now $VIPD_MOVER_ACTION $VIPD_NODE $owner" >> "%[1]s/calls"
case "$VIPD_MOVER_ACTION" in
assert) echo "$VIPD_NODE" > "%[1]s/owner" ;;
check) [ "$owner" = "$VIPD_NODE" ] || exit 3 ;;
*) exit 2 ;;
esac
`

type providerCall struct {
	at           time.Time
	action, node string
}

func readProviderCalls(t *testing.T, dir string) []providerCall {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []providerCall
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		sec, nsec, _ := strings.Cut(f[0], ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		ns, err2 := strconv.ParseInt((nsec + "000000000")[:9], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad provider record %q", l)
		}
		out = append(out, providerCall{at: time.Unix(s, ns), action: f[1], node: f[2]})
	}
	return out
}

// TestExecMover runs the seed pair with an exec mover whose command plays
// the provider (issue 16). Through HAProxy stopping, vipd killed (node
// loss), the holder cut off (partition), vipd frozen and a planned
// handover, the provider's owner always ends on the holder, and no call
// of a node lies outside its hold: each is made while the holder monitor
// shows that node holding the VIP (its VIPs go on before its first call
// and come off after its last: outside that, its fence has passed).
func TestExecMover(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t, title: "exec mover (issue 16)"}
	defer res.log()
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tb.Dir, "provider")
	script := filepath.Join(dir, "provider.sh")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(fmt.Sprintf(providerScript, dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	n1 := tb.Node(testbed.Node1)
	cfg, tStart := startMoverPair(t, tb, func(*testbed.Node) string {
		return "{type: exec, command: [" + script + "], interval: 1s, timeout: 1s}"
	})
	owner := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "owner"))
		return strings.TrimSpace(string(b))
	}
	// step does what, waits for holder to hold the VIP, then for the
	// provider's owner to follow it.
	step := func(what, holder string, timeout time.Duration, do func() error) {
		t.Helper()
		t0 := time.Now()
		bound := doAndWaitHolder(t, tb, what, holder, timeout, do)
		for end := time.Now().Add(3 * time.Second); owner() != holder; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: the provider's owner is %q 3 s after %s bound the VIP", what, owner(), holder)
			}
		}
		var moved time.Duration
		for _, c := range readProviderCalls(t, dir) {
			if c.action == "assert" && c.node == holder && !c.at.Before(t0) {
				moved = c.at.Sub(bound)
				break
			}
		}
		res.add(what+" → provider owner "+holder, fmt.Sprintf("%v after the VIP was bound", ms(moved)), "owner follows the holder (asserted)")
	}
	noop := func() error { return nil }
	step("start", testbed.Node1, 10*time.Second, noop)
	step("HAProxy stopped on the holder", testbed.Node2, 5*time.Second, n1.StopHAProxy)
	step("HAProxy back (preempt)", testbed.Node1, 10*time.Second, n1.StartHAProxy)
	step("vipd killed on the holder (node loss)", testbed.Node2, 15*time.Second, n1.KillVipd)
	step("vipd back (preempt after its start-up wait)", testbed.Node1, 15*time.Second, func() error { return n1.StartVipdWithConfig(cfg(n1)) })
	step("holder cut off (partition)", testbed.Node2, 15*time.Second, func() error { return tb.Isolate(&n1.Host, true) })
	step("partition healed (preempt)", testbed.Node1, 15*time.Second, func() error { return tb.Isolate(&n1.Host, false) })
	step("holder's vipd frozen", testbed.Node2, 15*time.Second, n1.FreezeVipd)
	time.Sleep(2 * time.Second) // frozen well past its fence
	step("vipd thawed (preempt)", testbed.Node1, 15*time.Second, n1.ThawVipd)
	step("planned handover", testbed.Node2, 10*time.Second, func() error {
		out, err := tb.RunVipctl(15*time.Second, "handover", "VI_1", "--to", testbed.Node2, "--hold", "5s")
		if err != nil {
			return fmt.Errorf("vipctl handover: %v\n%s", err, out)
		}
		return nil
	})
	time.Sleep(1500 * time.Millisecond) // a check or two of the new holder

	// Every call inside its node's hold.
	calls := readProviderCalls(t, dir)
	outside := 0
	for _, c := range calls {
		if inHold(tb, c.node, c.at) {
			continue
		}
		outside++
		t.Errorf("%s %s at %s while the monitor shows holders %v", c.node, c.action, c.at.Format("15:04:05.000"), tb.Mon.HoldersAt(c.at))
	}
	if outside > 0 {
		t.Logf("holder events:\n%s", eventsSince(tb, tStart))
	}
	st := tb.Mon.Stats(tStart, time.Now())
	if st.TwoHolders != 0 {
		t.Errorf("two holders for %v", st.TwoHolders)
	}
	asserts := 0
	for _, c := range calls {
		if c.action == "assert" {
			asserts++
		}
	}
	res.add("provider calls outside the caller's hold", fmt.Sprintf("%d of %d (%d asserts)", outside, len(calls), asserts), "0 (asserted)")
	res.add("time with two holders", ms(st.TwoHolders), "0 (asserted)")
}

// TestAWSMover runs the seed pair with the aws mover against the fake EC2
// (internal/ec2fake; no EC2 emulator can be installed here), served on the
// testbed's client host: each node's metadata service names its instance
// and interface, and the secondary private IP and its route follow the
// holder through HAProxy stopping, its return, throttling (retried inside
// the fence) and a missing permission (the address stays on the last
// holder that could move it). Every call that moves something names the
// interface of a node that holds the VIP at that moment.
func TestAWSMover(t *testing.T) {
	needAll(t)
	// Inherited by vipd through the testbed's `ip netns exec`: the SDK's
	// default chain finds them, and reads no file of this host.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t, title: "aws mover against the fake EC2 (issue 16)"}
	defer res.log()
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	eni := map[string]string{testbed.Node1: "eni-0001", testbed.Node2: "eni-0002"}
	node := map[string]string{"eni-0001": testbed.Node1, "eni-0002": testbed.Node2}
	fake := ec2fake.New("eu-west-1", []ec2fake.Instance{
		{ID: "i-0001", MAC: "02:00:00:00:00:01", ENI: "eni-0001", PrimaryIP: n1.IP.String()},
		{ID: "i-0002", MAC: "02:00:00:00:00:02", ENI: "eni-0002", PrimaryIP: n2.IP.String()},
	}, nil, []string{"rtb-0001"})
	serve := func(port int, h http.Handler) string {
		var ln net.Listener
		if err := tb.Client.NS.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(tb.Client.IP, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return "http://" + ln.Addr().String()
	}
	api := serve(8773, fake)
	imds := map[string]string{testbed.Node1: serve(8774, fake.IMDS("i-0001")), testbed.Node2: serve(8775, fake.IMDS("i-0002"))}
	_, tStart := startMoverPair(t, tb, func(n *testbed.Node) string {
		return fmt.Sprintf("{type: aws, interval: 1s, timeout: 1s, aws: {private_ip: true, route_tables: [rtb-0001], endpoint: %q, imds_endpoint: %q}}", api, imds[n.Name])
	})
	vip := testbed.VIP.Addr().String()
	step := func(what, holder string, timeout time.Duration, do func() error) {
		t.Helper()
		bound := doAndWaitHolder(t, tb, what, holder, timeout, do)
		for end := time.Now().Add(5 * time.Second); fake.OwnerOf(vip) != eni[holder] || fake.RouteTarget("rtb-0001", vip+"/32") != eni[holder]; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: %s on %q, its route to %q, 5 s after %s bound the VIP", what, vip, fake.OwnerOf(vip), fake.RouteTarget("rtb-0001", vip+"/32"), holder)
			}
		}
		res.add(what+" → "+vip+" and its route on "+eni[holder], ms(time.Since(bound)), "follows the holder (asserted)")
	}
	noop := func() error { return nil }
	step("start", testbed.Node1, 10*time.Second, noop)
	step("HAProxy stopped on the holder", testbed.Node2, 5*time.Second, n1.StopHAProxy)
	step("HAProxy back (preempt)", testbed.Node1, 10*time.Second, n1.StartHAProxy)
	step("HAProxy stopped, EC2 throttling 3 calls", testbed.Node2, 5*time.Second, func() error {
		fake.Throttle(3)
		return n1.StopHAProxy()
	})
	// Without the permission the new holder cannot move the address: it
	// stays where it was, and the holder keeps trying.
	fake.Deny("AssignPrivateIpAddresses", true)
	t0 := time.Now()
	if err := n1.StartHAProxy(); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	denied := 0
	for _, c := range fake.Calls() {
		if c.At.After(t0) && c.Result == "UnauthorizedOperation" && c.ENI == "eni-0001" {
			denied++
		}
	}
	if denied < 2 || fake.OwnerOf(vip) != "eni-0002" {
		t.Fatalf("denied: %d refused assigns by web-node-1, %s on %s; want it retried and the address left on eni-0002", denied, vip, fake.OwnerOf(vip))
	}
	res.add("permission missing on the new holder", fmt.Sprintf("%d refused assigns in 2 s, address left on eni-0002", denied), "retried with backoff (asserted)")
	step("permission granted again", testbed.Node1, 10*time.Second, func() error { fake.Deny("AssignPrivateIpAddresses", false); return nil })

	outside, moves := 0, 0
	for _, c := range fake.Calls() {
		if c.Result != "ok" || (c.Action != "AssignPrivateIpAddresses" && c.Action != "ReplaceRoute" && c.Action != "CreateRoute") {
			continue
		}
		moves++
		n := node[c.ENI]
		if inHold(tb, n, c.At) {
			continue
		}
		outside++
		t.Errorf("%s for %s at %s while the monitor shows holders %v", c.Action, n, c.At.Format("15:04:05.000"), tb.Mon.HoldersAt(c.At))
	}
	st := tb.Mon.Stats(tStart, time.Now())
	if st.TwoHolders != 0 {
		t.Errorf("two holders for %v", st.TwoHolders)
	}
	res.add("moving calls outside the caller's hold", fmt.Sprintf("%d of %d", outside, moves), "0 (asserted)")
	res.add("time with two holders", ms(st.TwoHolders), "0 (asserted)")
}

// startMoverPair starts HAProxy on both nodes and vipd with the group's
// mover set to mover(n) (YAML flow), web-node-1 first until it holds. It
// returns the config maker (for restarts) and when vipd started.
func startMoverPair(t *testing.T, tb *testbed.Testbed, mover func(n *testbed.Node) string) (cfg func(n *testbed.Node) string, started time.Time) {
	t.Helper()
	cfg = func(n *testbed.Node) string {
		c := n.VipdConfig()
		old := "    garp: {count: 5, interval: 1s}\n"
		if !strings.Contains(c, old) {
			t.Fatalf("testbed vipd config has no %q", old)
		}
		return strings.Replace(c, old, old+"    mover: "+mover(n)+"\n", 1)
	}
	for _, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
	}
	started = time.Now()
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	if err := n1.StartVipdWithConfig(cfg(n1)); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := n2.StartVipdWithConfig(cfg(n2)); err != nil {
		t.Fatal(err)
	}
	return cfg, started
}

// inHold reports whether the holder monitor shows node holding the VIP at
// t. The monitor stamps an address event when it reads it, a little after
// the kernel made it: a call up to 50 ms before its node's add event
// counts as after it.
func inHold(tb *testbed.Testbed, node string, t time.Time) bool {
	if slices.Contains(tb.Mon.HoldersAt(t), node) {
		return true
	}
	add, ok := tb.Mon.EventAfter(node, true, t)
	return ok && add.Time.Sub(t) <= 50*time.Millisecond
}

// doAndWaitHolder does what, waits until holder holds the VIP alone, and
// returns when it bound it (as the holder monitor saw it).
func doAndWaitHolder(t *testing.T, tb *testbed.Testbed, what, holder string, timeout time.Duration, do func() error) (bound time.Time) {
	t.Helper()
	t0 := time.Now()
	if err := do(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := tb.WaitHolder(holder, timeout); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, eventsSince(tb, t0))
	}
	if add, ok := tb.Mon.EventAfter(holder, true, t0); ok {
		return add.Time
	}
	return time.Now()
}
