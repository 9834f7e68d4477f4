package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/prereq"
)

// binDir is the repository's bin/ (make build tools).
var binDir = func() string { d, _ := filepath.Abs("../../bin"); return d }()

func TestMain(m *testing.M) {
	stop := CloseOnSignal()
	code := m.Run()
	stop()
	os.Exit(code)
}

// needTestbed skips unless root and the tools exist. The testbed self-tests
// do not need vipd, so only etcd, vipd-probe and haproxy are required.
func needTestbed(t *testing.T) {
	t.Helper()
	var miss []string
	for _, m := range Prereqs(binDir, "") {
		if !strings.HasSuffix(m, "/vipd") {
			miss = append(miss, m)
		}
	}
	if len(miss) > 0 {
		prereq.Missing(t, "namespace testbed needs %v (run as root after `make tools`)", miss)
	}
}

func TestProbeRefusesHostNamespace(t *testing.T) {
	probe := filepath.Join(binDir, "vipd-probe")
	if _, err := os.Stat(probe); err != nil {
		prereq.Missing(t, "bin/vipd-probe not built (make tools)")
	}
	// It checks its namespace before sending anything; the URL is on
	// loopback anyway, so even a broken check could not send off the host.
	out, err := exec.Command(probe, "--url", "http://127.0.0.1:9/", "--duration", "1s").CombinedOutput()
	if err == nil {
		t.Fatalf("vipd-probe ran in the host namespace; output %q", out)
	}
	if !strings.Contains(string(out), "refusing to run in the host network namespace") {
		t.Fatalf("unexpected refusal message: %q (%v)", out, err)
	}
}

func TestSweepRemovesLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root")
	}
	// A PID far above pid_max's default is never alive.
	name := NamePrefix + "4194999-0zz"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	// A live owner's namespace must survive the sweep: the owner is a child
	// we start (and kill, by its PID) ourselves.
	owner := exec.Command("sleep", "60")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Process.Kill(); owner.Wait() })
	live := fmt.Sprintf("%s%d-0zz", NamePrefix, owner.Process.Pid)
	if out, err := exec.Command("ip", "netns", "add", live).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", live).Run() })
	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if !contains(removed, name) || contains(removed, live) {
		t.Fatalf("Sweep removed %v; want %s and not %s", removed, name, live)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		t.Fatalf("%s still exists", name)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestTestbed validates the testbed without vipd: topology, etcd cluster,
// HAProxy through the LAN, the probe, and the holder monitor and outage
// analysis with the VIP moved by hand (plus a gratuitous ARP from arping
// inside the node namespace, as vipd would send).
func TestTestbed(t *testing.T) {
	needTestbed(t)
	tb, err := New(Options{BinDir: binDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	nsNames := []string{}
	for _, n := range tb.all {
		nsNames = append(nsNames, n.Name)
	}
	dir := tb.Dir
	closed := false
	t.Cleanup(func() {
		if !closed {
			if t.Failed() {
				t.Logf("logs:\n%s", tb.Logs(30))
			}
			tb.Close()
		}
	})

	t.Run("topology", func(t *testing.T) {
		if len(tb.all) != 7 {
			t.Fatalf("%d namespaces, want 7 (lan, 2 nodes, 3 etcd, client)", len(tb.all))
		}
		for _, n := range tb.all {
			if n.Ino == hostIno {
				t.Fatalf("%s is the host namespace", n.Name)
			}
			if len(n.Name) > 20 {
				t.Errorf("namespace name %q is long", n.Name)
			}
		}
		for _, n := range tb.Nodes {
			mac, err := n.EthMAC()
			if err != nil || mac.String() != n.MAC.String() {
				t.Errorf("%s eth0 MAC %v (%v), want %v", n.Name, mac, err, n.MAC)
			}
		}
	})

	t.Run("etcd", func(t *testing.T) {
		if err := tb.StartEtcd(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("etcd 3-member cluster healthy after %v", tb.EtcdStartup.Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		code, body, err := HTTPDo(ctx, tb.Client.NS, http.MethodPost, tb.Etcd[1].ClientURL()+"/v3/cluster/member/list", "{}")
		if err != nil || code != 200 {
			t.Fatalf("member list: %d %v %s", code, err, body)
		}
		var ml struct {
			Members []struct {
				Name       string   `json:"name"`
				ClientURLs []string `json:"clientURLs"`
			} `json:"members"`
		}
		if err := json.Unmarshal([]byte(body), &ml); err != nil {
			t.Fatal(err)
		}
		if len(ml.Members) != 3 {
			t.Fatalf("cluster has %d members, want 3: %s", len(ml.Members), body)
		}
		for _, m := range tb.Etcd {
			if !m.Healthy(time.Second) {
				t.Errorf("%s unhealthy", m.Name)
			}
		}
	})

	t.Run("haproxy", func(t *testing.T) {
		for _, n := range tb.Nodes {
			if err := n.StartHAProxy(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			code, body, err := HTTPGet(ctx, tb.Client.NS, "http://"+n.IP.String()+"/")
			cancel()
			if err != nil || code != 200 || body != n.Name {
				t.Fatalf("GET %s from client: %d %q %v", n.IP, code, body, err)
			}
		}
		if err := tb.Nodes[1].StopHAProxy(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, _, err := HTTPGet(ctx, tb.Nodes[1].NS, "http://127.0.0.1:8404/healthz"); err == nil {
			t.Fatal("healthz answers after StopHAProxy")
		}
		if err := tb.Nodes[1].StartHAProxy(); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	n1, n2 := tb.Nodes[0], tb.Nodes[1]
	garp := func(n *Node) {
		t.Helper()
		// arping runs inside the node namespace: the GARP stays on the bridge.
		// Unsolicited ARP with sender IP = target IP = VIP (Habets' arping);
		// exit status 1 only means nobody replied, as expected.
		vip := VIP.Addr().String()
		out, err := exec.Command("ip", "netns", "exec", n.NS.Name, "arping", "-q", "-U", "-S", vip, "-c", "1", "-i", "eth0", vip).CombinedOutput()
		if err != nil && len(out) > 0 {
			t.Logf("arping: %v %s", err, out)
		}
	}

	t.Run("probe-and-monitor", func(t *testing.T) {
		if err := tb.StartProbe(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if c := tb.Probes().Counts(); c["-"] == 0 || len(c) != 1 {
			t.Fatalf("without a holder every probe must fail; got %v", c)
		}
		if hs := tb.Holders(); len(hs) != 0 {
			t.Fatalf("holders %v before any VIP", hs)
		}

		// Hold on node 1.
		t0 := time.Now()
		if err := n1.AddVIP(); err != nil {
			t.Fatal(err)
		}
		garp(n1)
		if err := tb.WaitHolder(Node1, time.Second); err != nil {
			t.Fatal(err)
		}
		if ev, ok := tb.Mon.EventAfter(Node1, true, t0); !ok || ev.Time.Sub(t0) > 200*time.Millisecond {
			t.Fatalf("monitor saw the add at %v (ok %v)", ev.Time.Sub(t0), ok)
		}
		if _, err := tb.WaitAnswer(Node1, t0, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		nb, err := tb.ClientNeigh()
		if err != nil || tb.NodeByMAC(nb.MAC) != Node1 {
			t.Fatalf("client neighbour for VIP: %v %s (%v), want %s's MAC", nb.MAC, nb.State, err, Node1)
		}
		t.Logf("client neighbour entry: %v %s", nb.MAC, nb.State)
		time.Sleep(500 * time.Millisecond)

		// Move by hand with a 300 ms gap, then a GARP from node 2.
		const gap = 300 * time.Millisecond
		tMove := time.Now()
		if err := n1.DelVIP(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
		if err := n2.AddVIP(); err != nil {
			t.Fatal(err)
		}
		garp(n2)
		if err := tb.WaitHolder(Node2, time.Second); err != nil {
			t.Fatal(err)
		}
		first, err := tb.WaitAnswer(Node2, tMove, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		win := tb.Probes().Window(tMove.Add(-100*time.Millisecond), time.Now())
		out := win.LongestOutage()
		sw, ok := win.SwitchedTo(Node2)
		t.Logf("hand move with %v gap: outage %v, first answer from %s after %v, switched at +%v",
			gap, out, Node2, first.Start.Sub(tMove).Round(time.Millisecond), sw.Sub(tMove).Round(time.Millisecond))
		if !ok || out.Duration < gap-20*time.Millisecond || out.Duration > gap+700*time.Millisecond {
			t.Errorf("outage %v for a %v gap; switched %v", out, gap, ok)
		}
		if nb, err := tb.ClientNeigh(); err != nil || tb.NodeByMAC(nb.MAC) != Node2 {
			t.Errorf("client neighbour after GARP: %v %s (%v), want %s", nb.MAC, nb.State, err, Node2)
		}
		st := tb.Mon.Stats(tMove, time.Now())
		t.Logf("monitor over the move: %+v", st)
		if st.TwoHolders != 0 || st.MaxHolders != 1 || st.NoHolder < gap-20*time.Millisecond || st.NoHolder > gap+100*time.Millisecond {
			t.Errorf("stats %+v; want no overlap and ≈%v without holder", st, gap)
		}

		// Deliberate split brain: both hold for 200 ms; the monitor must see it.
		tSplit := time.Now()
		if err := n1.AddVIP(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if hs := tb.Holders(); len(hs) != 2 {
			t.Fatalf("holders %v, want both", hs)
		}
		if err := n1.DelVIP(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(Node2, time.Second); err != nil {
			t.Fatal(err)
		}
		st = tb.Mon.Stats(tSplit, time.Now())
		t.Logf("monitor over the deliberate overlap: %+v", st)
		if st.MaxHolders != 2 || st.TwoHolders < 150*time.Millisecond || st.TwoHolders > 400*time.Millisecond {
			t.Errorf("stats %+v; want ≈200ms with two holders", st)
		}

		// Back-to-back handovers, microseconds apart: the ordered view must
		// never show an overlap when the removal comes first ...
		nEv := len(tb.Mon.Events())
		tBB := time.Now()
		const rounds = 20
		for i := 0; i < rounds; i++ {
			for _, op := range []func() error{n2.DelVIP, n1.AddVIP, n1.DelVIP, n2.AddVIP} {
				if err := op(); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitEvents := func(n int) {
			t.Helper()
			for deadline := time.Now().Add(2 * time.Second); len(tb.Mon.Events()) < n; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("monitor saw %d events, want %d", len(tb.Mon.Events()), n)
				}
			}
		}
		waitEvents(nEv + 4*rounds)
		st = tb.Mon.Stats(tBB, time.Now())
		t.Logf("monitor over %d back-to-back handovers: %+v", 2*rounds, st)
		if st.TwoHolders != 0 || st.MaxHolders != 1 || st.Changes != 4*rounds {
			t.Errorf("stats %+v; want %d changes and never two holders", st, 4*rounds)
		}
		// ... and must show it when the add comes first.
		tOv := time.Now()
		if err := n1.AddVIP(); err != nil {
			t.Fatal(err)
		}
		if err := n2.DelVIP(); err != nil {
			t.Fatal(err)
		}
		waitEvents(nEv + 4*rounds + 2)
		if st = tb.Mon.Stats(tOv, time.Now()); st.MaxHolders != 2 || st.TwoHolders <= 0 {
			t.Errorf("add-before-remove not seen as overlap: %+v", st)
		}
		if err := n1.DelVIP(); err != nil {
			t.Fatal(err)
		}
		if err := n2.AddVIP(); err != nil {
			t.Fatal(err)
		}
		if err := tb.WaitHolder(Node2, time.Second); err != nil {
			t.Fatal(err)
		}

		// Kernel lifetime: an address added with valid_lft 1 s vanishes by itself.
		if err := n2.DelVIP(); err != nil {
			t.Fatal(err)
		}
		tLft := time.Now()
		out2, err := exec.Command("ip", "-n", n1.NS.Name, "addr", "add", VIP.String(), "dev", "eth0", "valid_lft", "1", "preferred_lft", "1").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr add with lifetime: %v %s", err, out2)
		}
		if err := tb.WaitHolder(Node1, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Mon.WaitFor(func(hs []string) bool { return len(hs) == 0 }, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		if ev, ok := tb.Mon.EventAfter(Node1, false, tLft); ok {
			t.Logf("VIP with valid_lft 1 expired after %v (monitor saw RTM_DELADDR)", ev.Time.Sub(tLft).Round(time.Millisecond))
		}

		all := tb.Probes()
		t.Logf("probe: %d probes at %.1f/s; answers %v", len(all), all.Rate(), all.Counts())
		if r := all.Rate(); r < 80 {
			t.Errorf("probe rate %.1f/s, want ≈100/s", r)
		}
		if errs := tb.Mon.Errors(); len(errs) > 0 {
			t.Errorf("monitor errors: %v", errs)
		}
		if err := tb.Mon.CrossCheck(time.Second); err != nil {
			t.Error(err)
		}
		t.Logf("holder events (ordered view): %d", len(tb.Mon.Events()))
	})

	t.Run("close", func(t *testing.T) {
		var procs []*Proc
		for _, n := range tb.Nodes {
			procs = append(procs, n.HAProxy())
		}
		for _, m := range tb.Etcd {
			procs = append(procs, m.Proc())
		}
		procs = append(procs, tb.probe)
		t0 := time.Now()
		if err := tb.Close(); err != nil {
			t.Fatal(err)
		}
		closed = true
		t.Logf("Close took %v", time.Since(t0).Round(time.Millisecond))
		for _, p := range procs {
			if p != nil && p.Running() {
				t.Errorf("%s still running after Close", p.Name)
			}
		}
		for _, n := range nsNames {
			if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
				t.Errorf("namespace %s left after Close", n)
			}
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("temp dir %s left after Close", dir)
		}
	})
}

func TestTimelineAnalysis(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	var rs []ProbeResult
	for ms := 0; ms < 1000; ms += 10 {
		node := "a"
		switch {
		case ms >= 200 && ms < 260: // 6 failures
		case ms >= 260 && ms < 500:
			node = "b"
		case ms >= 500 && ms < 530: // 3 failures
			node = ""
		case ms >= 530:
			node = "b"
		}
		if ms >= 200 && ms < 260 {
			node = ""
		}
		rs = append(rs, ProbeResult{Start: at(ms), Node: node})
	}
	// Shuffle the order a little, as the probe prints in completion order.
	rs[10], rs[11] = rs[11], rs[10]
	tl := NewTimeline(rs)
	o := tl.LongestOutage()
	if o.Duration != 60*time.Millisecond || o.Failed != 6 || !o.Start.Equal(at(200)) || !o.End.Equal(at(260)) {
		t.Fatalf("outage %+v", o)
	}
	if sw, ok := tl.SwitchedTo("b"); !ok || !sw.Equal(at(260)) {
		t.Fatalf("switched %v %v", sw, ok)
	}
	if _, ok := tl.SwitchedTo("a"); ok {
		t.Fatal("a is not the final answerer")
	}
	w := tl.Window(at(400), at(600))
	if len(w) != 20 || w.LongestOutage().Failed != 3 {
		t.Fatalf("window %d probes, outage %+v", len(w), w.LongestOutage())
	}
	if r := tl.Rate(); r < 99 || r > 101 {
		t.Fatalf("rate %v", r)
	}
	tail := NewTimeline(append(rs, ProbeResult{Start: at(1000)}, ProbeResult{Start: at(1010)}))
	if o := tail.Window(at(900), time.Time{}).LongestOutage(); o.Failed != 2 || !o.End.IsZero() || o.Duration != 10*time.Millisecond {
		t.Fatalf("trailing outage %+v", o)
	}
	if r, err := ParseProbeLine("1700000000123456789 web-node-2 812"); err != nil || r.Node != "web-node-2" || r.Latency != 812*time.Microsecond || r.Start.UnixNano() != 1700000000123456789 {
		t.Fatalf("parse: %+v %v", r, err)
	}
	if r, err := ParseProbeLine("1700000000123456789 - 100000"); err != nil || r.OK() {
		t.Fatalf("parse failure line: %+v %v", r, err)
	}
}

func TestMonitorStats(t *testing.T) {
	m := newMonitor(nil)
	base := m.start
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	m.record(at(100), "a", true)
	m.record(at(150), "a", true) // refresh: not a change
	m.record(at(500), "a", false)
	m.record(at(520), "b", true)
	m.record(at(800), "a", true) // overlap 800..850
	m.record(at(850), "b", false)
	st := m.Stats(base, at(1000))
	if st.NoHolder != 120*time.Millisecond || st.TwoHolders != 50*time.Millisecond || st.MaxHolders != 2 || st.Changes != 5 || st.MinGap != 20*time.Millisecond {
		t.Fatalf("stats %+v", st)
	}
	st = m.Stats(at(510), at(700))
	if st.NoHolder != 10*time.Millisecond || st.TwoHolders != 0 || st.MaxHolders != 1 || st.Changes != 1 || st.MinGap != -1 {
		t.Fatalf("window stats %+v", st)
	}
	if hs := m.Holders(); len(hs) != 1 || hs[0] != "a" {
		t.Fatalf("holders %v", hs)
	}
	if ev, ok := m.EventAfter("b", true, at(0)); !ok || !ev.Time.Equal(at(520)) {
		t.Fatalf("EventAfter %v %v", ev, ok)
	}
}
