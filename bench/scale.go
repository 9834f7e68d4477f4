package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipd/vipd/e2e/testbed"
)

// etcdSnap is the sum of etcd's own counters over the members, fetched from
// /metrics over the LAN from the client namespace.
type etcdSnap struct {
	At        time.Time
	ByMethod  map[string]float64 // grpc_server_handled_total by grpc_method, all members
	Proposals float64            // etcd_server_proposals_committed_total, max over members
	Renewed   float64            // etcd_debugging_lease_renewed_total (leader counts), summed
	Puts      float64            // etcd_mvcc_put_total, max over members
	Err       error
}

func (s etcdSnap) total() float64 {
	t := 0.0
	for _, v := range s.ByMethod {
		t += v
	}
	return t
}

func fetch(ns *testbed.Netns, url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: ns.DialContext}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return string(b), err
}

func snapEtcd(tb *testbed.Testbed) etcdSnap {
	s := etcdSnap{At: time.Now(), ByMethod: map[string]float64{}}
	for _, m := range tb.Etcd {
		text, err := fetch(tb.Client.NS, m.ClientURL()+"/metrics")
		if err != nil {
			s.Err = err
			continue
		}
		ss := parseProm(text)
		for k, v := range sumBy(ss, "grpc_server_handled_total", "grpc_method") {
			s.ByMethod[k] += v
		}
		s.Proposals = max(s.Proposals, value(ss, "etcd_server_proposals_committed_total"))
		s.Puts = max(s.Puts, value(ss, "etcd_mvcc_put_total"))
		s.Renewed += value(ss, "etcd_debugging_lease_renewed_total")
	}
	return s
}

// etcdRates is the per-second rate between two snapshots.
type etcdRates struct {
	Window    time.Duration
	Total     float64
	ByMethod  map[string]float64
	Proposals float64
	Renewed   float64
	Puts      float64
}

func rates(a, b etcdSnap) etcdRates {
	d := b.At.Sub(a.At).Seconds()
	r := etcdRates{Window: b.At.Sub(a.At), ByMethod: map[string]float64{}}
	if d <= 0 {
		return r
	}
	for k, v := range b.ByMethod {
		if x := (v - a.ByMethod[k]) / d; x > 0.01 {
			r.ByMethod[k] = x
		}
	}
	r.Total = (b.total() - a.total()) / d
	r.Proposals = (b.Proposals - a.Proposals) / d
	r.Renewed = (b.Renewed - a.Renewed) / d
	r.Puts = (b.Puts - a.Puts) / d
	return r
}

func (r etcdRates) methods() string {
	var ks []string
	for k := range r.ByMethod {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, r.ByMethod[k]))
	}
	return strings.Join(parts, ", ")
}

var scaleNet = func() *net.IPNet { _, n, _ := net.ParseCIDR("10.200.0.0/16"); return n }()

// vips returns the scale VIPs bound on the node's eth0.
func vips(n *testbed.Node) (map[string]bool, error) {
	l, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	as, err := n.NS.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, a := range as {
		if scaleNet.Contains(a.IP) {
			out[a.IP.String()] = true
		}
	}
	return out, nil
}

// coverage is what polling the nodes' addresses (netlink dumps, every
// 20 ms) saw until a condition held.
type coverage struct {
	Took      time.Duration // until the condition held
	Milestone map[string]time.Duration
	MaxDual   int           // most VIPs seen on two nodes at once
	DualTime  time.Duration // polled time with any VIP on two nodes
	MaxOn     []int         // most VIPs seen on each node
	Polls     int
	TimedOut  bool
	LastCount []int
}

// poll samples the nodes until done(sets) or timeout; mark(sets) returns
// milestone names reached in a sample (first time recorded).
func poll(nodes []*testbed.Node, timeout time.Duration, done func(sets []map[string]bool) bool, mark func(sets []map[string]bool) []string) coverage {
	t0 := time.Now()
	c := coverage{Milestone: map[string]time.Duration{}, MaxOn: make([]int, len(nodes))}
	last := t0
	for {
		sets := make([]map[string]bool, len(nodes))
		for i, n := range nodes {
			sets[i], _ = vips(n)
		}
		now := time.Now()
		c.Polls++
		seen := map[string]int{}
		for _, s := range sets {
			for a := range s {
				seen[a]++
			}
		}
		dual := 0
		for _, k := range seen {
			if k > 1 {
				dual++
			}
		}
		if dual > 0 {
			c.DualTime += now.Sub(last)
		}
		last = now
		c.MaxDual = max(c.MaxDual, dual)
		c.LastCount = c.LastCount[:0]
		for i, s := range sets {
			c.LastCount = append(c.LastCount, len(s))
			c.MaxOn[i] = max(c.MaxOn[i], len(s))
		}
		if mark != nil {
			for _, m := range mark(sets) {
				if _, ok := c.Milestone[m]; !ok {
					c.Milestone[m] = now.Sub(t0)
				}
			}
		}
		if done(sets) {
			c.Took = now.Sub(t0)
			return c
		}
		if now.Sub(t0) > timeout {
			c.Took, c.TimedOut = now.Sub(t0), true
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func union(sets ...map[string]bool) int {
	u := map[string]bool{}
	for _, s := range sets {
		for a := range s {
			u[a] = true
		}
	}
	return len(u)
}

// scaleResult is one group count.
type scaleResult struct {
	Groups       int
	Startup      time.Duration // start → all VIPs on scale-1
	StartupReqs  float64       // etcd gRPC requests during startup
	StartupProps float64       // raft proposals during startup
	Steady       etcdRates
	CPU          []float64 // per vipd, % of a core, steady window
	RSS          []float64 // per vipd, MB, end of steady window
	Failover     coverage  // scale-1 cut off (carrier kept) → all VIPs on the others
	FailoverCPU  []float64 // per vipd during the failover window
	Preempt      coverage  // scale-1 back → all VIPs on scale-1 again
	Writes       [4]string // etcd writes by kind: startup, steady, failover, preempt back
	Go           []goStats // per vipd, steady window, from its own /metrics
	Stop         time.Duration
	Profile      string
	Err          error
}

type scaleOpts struct {
	sizes  []int
	steady time.Duration
	perf   bool
	logf   func(string, ...any)
}

func runScale(tb *testbed.Testbed, o scaleOpts) ([]scaleResult, error) {
	var nodes []*testbed.Node
	for i := range 3 {
		n, err := tb.AddNode(fmt.Sprintf("scale-%d", i+1), fmt.Sprintf("s%d", i+1), fmt.Sprintf("192.168.20.%d", 31+i), 103-i)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		return nil, err
	}
	var out []scaleResult
	for _, size := range o.sizes {
		r := scaleOnce(tb, nodes, size, o)
		out = append(out, r)
		if r.Err != nil {
			o.logf("scale %d: %v", size, r.Err)
		}
	}
	return out, nil
}

func scaleOnce(tb *testbed.Testbed, nodes []*testbed.Node, size int, o scaleOpts) (r scaleResult) {
	r.Groups = size
	prefix := fmt.Sprintf("/vipd-scale-%d", size)
	defer func() {
		t := time.Now()
		for _, n := range nodes {
			n.SignalVipd(15)
		}
		for _, n := range nodes {
			if err := n.StopVipd(); err != nil && r.Err == nil {
				r.Err = err
			}
		}
		if r.Stop == 0 {
			r.Stop = time.Since(t)
		}
	}()
	wc, err := newWriteCounter(tb, prefix)
	if err != nil {
		r.Err = err
		return
	}
	defer wc.close()
	e0 := snapEtcd(tb)
	t0 := time.Now()
	for _, n := range nodes {
		if err := n.StartVipdWithConfig(scaleConfig(n.Name, prefix, tb.Endpoints(), size, n.Priority)); err != nil {
			r.Err = err
			return
		}
	}
	c := poll(nodes, 120*time.Second, func(s []map[string]bool) bool {
		return len(s[0]) == size && len(s[1]) == 0 && len(s[2]) == 0
	}, nil)
	r.Startup = time.Since(t0)
	if c.TimedOut {
		r.Err = fmt.Errorf("%d groups: not all on scale-1 after %v (counts %v)", size, c.Took, c.LastCount)
		return
	}
	// Candidate records of the backups may still be going in: wait, then
	// measure the steady state.
	time.Sleep(3 * time.Second)
	e1 := snapEtcd(tb)
	r.StartupReqs, r.StartupProps = e1.total()-e0.total(), e1.Proposals-e0.Proposals
	r.Writes[0] = formatCounts(wc.take(), size)
	var p0 []procSample
	for _, n := range nodes {
		s, _ := sampleTree(n.Vipd().Pid(), false)
		p0 = append(p0, s)
	}
	var g0 []goSnap
	for _, n := range nodes {
		g0 = append(g0, snapGo(n))
	}
	if o.perf && size == o.sizes[len(o.sizes)-1] {
		r.Profile = perfProfile(tb, nodes[0], min(o.steady, 10*time.Second), size)
	}
	if d := time.Until(e1.At.Add(o.steady)); d > 0 {
		time.Sleep(d)
	}
	e2 := snapEtcd(tb)
	r.Steady = rates(e1, e2)
	r.Writes[1] = formatCounts(wc.take(), size)
	for i, n := range nodes {
		r.Go = append(r.Go, goRates(g0[i], snapGo(n)))
	}
	for i, n := range nodes {
		s, _ := sampleTree(n.Vipd().Pid(), false)
		r.CPU = append(r.CPU, cpuBetween(p0[i], s))
		r.RSS = append(r.RSS, float64(s.RSSkB)/1024)
		p0[i] = s
	}
	if e1.Err != nil || e2.Err != nil {
		r.Err = fmt.Errorf("etcd metrics: %v %v", e1.Err, e2.Err)
	}

	// The holder drops off the LAN (carrier kept). Done when every VIP is
	// on scale-2/3 and none is left on scale-1; then 2 s more, to see
	// churn between scale-2 and scale-3 settle.
	if err := tb.Isolate(&nodes[0].Host, true); err != nil {
		r.Err = err
		return
	}
	r.Failover = poll(nodes, 60*time.Second, func(s []map[string]bool) bool {
		return union(s[1], s[2]) == size && len(s[0]) == 0 && len(s[2]) == 0
	}, func(s []map[string]bool) []string {
		var m []string
		u := union(s[1], s[2])
		if u > 0 {
			m = append(m, "first")
		}
		if u >= size/2 {
			m = append(m, "half")
		}
		if u == size {
			m = append(m, "all")
		}
		if len(s[0]) < size {
			m = append(m, "s1-first-gone")
		}
		if len(s[0]) == 0 {
			m = append(m, "s1-empty")
		}
		return m
	})
	for i, n := range nodes {
		s, _ := sampleTree(n.Vipd().Pid(), false)
		r.FailoverCPU = append(r.FailoverCPU, cpuBetween(p0[i], s))
	}
	time.Sleep(2 * time.Second)
	r.Writes[2] = formatCounts(wc.take(), size)
	if err := tb.Isolate(&nodes[0].Host, false); err != nil {
		r.Err = err
		return
	}
	r.Preempt = poll(nodes, 60*time.Second, func(s []map[string]bool) bool {
		return len(s[0]) == size && len(s[1]) == 0 && len(s[2]) == 0
	}, nil)
	time.Sleep(2 * time.Second)
	r.Writes[3] = formatCounts(wc.take(), size)
	o.logf("scale %d groups: startup %v, steady %.1f req/s (%s), failover %v (timed out %v, milestones %v, max on scale-3 %d), preempt back %v",
		size, r.Startup.Round(time.Millisecond), r.Steady.Total, r.Steady.methods(), r.Failover.Took.Round(time.Millisecond), r.Failover.TimedOut,
		r.Failover.Milestone, r.Failover.MaxOn[2], r.Preempt.Took.Round(time.Millisecond))
	for i, w := range r.Writes {
		o.logf("  writes %s: %s", []string{"startup", "steady", "failover", "preempt back"}[i], w)
	}
	return r
}

// perfProfile records the holder's CPU profile with perf (if installed) for
// d and returns the top of the report (flat, by symbol).
func perfProfile(tb *testbed.Testbed, n *testbed.Node, d time.Duration, size int) string {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "(perf not installed)"
	}
	data := filepath.Join(tb.Dir, fmt.Sprintf("perf-%d.data", size))
	rec := exec.Command(perf, "record", "-q", "-F", "499", "-g", "-p", fmt.Sprint(n.Vipd().Pid()), "-o", data, "--", "sleep", fmt.Sprint(int(d.Seconds())))
	if out, err := rec.CombinedOutput(); err != nil {
		return fmt.Sprintf("(perf record: %v: %s)", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep := exec.CommandContext(ctx, perf, "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "2")
	out, err := rep.Output()
	if err != nil {
		return fmt.Sprintf("(perf report: %v)", err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") && !strings.Contains(l, "Samples") {
			continue
		}
		// Inclusive (children) view: keep vipd's own functions, netlink,
		// the GC and the top lines.
		if !strings.HasPrefix(l, "#") && len(keep) > 12 && !strings.Contains(l, "vipd/vipd") && !strings.Contains(l, "netlink") && !strings.Contains(l, "gcBgMarkWorker") {
			continue
		}
		l = strings.TrimRight(strings.TrimSuffix(strings.TrimRight(l, " "), "-      -"), " ")
		keep = append(keep, l)
	}
	os.Remove(data)
	return strings.Join(keep, "\n")
}

// goSnap is a vipd's Go runtime state from its own /metrics (read from
// inside the node's namespace, on its loopback).
type goSnap struct {
	At                      time.Time
	Goroutines, Stack, Heap float64
	AllocTotal, GCTotal     float64
	Err                     error
}

func snapGo(n *testbed.Node) goSnap {
	s := goSnap{At: time.Now()}
	text, err := fetch(n.NS, "http://127.0.0.1:9842/metrics")
	if err != nil {
		s.Err = err
		return s
	}
	ss := parseProm(text)
	s.Goroutines = value(ss, "go_goroutines")
	s.Stack = value(ss, "go_memstats_stack_inuse_bytes")
	s.Heap = value(ss, "go_memstats_heap_inuse_bytes")
	s.AllocTotal = value(ss, "go_memstats_alloc_bytes_total")
	s.GCTotal = value(ss, "go_gc_duration_seconds_count")
	return s
}

// goStats summarises a steady window.
type goStats struct {
	Goroutines, StackMB, HeapMB, AllocMBps, GCps float64
	Err                                          error
}

func goRates(a, b goSnap) goStats {
	g := goStats{Goroutines: b.Goroutines, StackMB: b.Stack / (1 << 20), HeapMB: b.Heap / (1 << 20)}
	if a.Err != nil || b.Err != nil {
		g.Err = fmt.Errorf("%v %v", a.Err, b.Err)
		return g
	}
	if d := b.At.Sub(a.At).Seconds(); d > 0 {
		g.AllocMBps = (b.AllocTotal - a.AllocTotal) / (1 << 20) / d
		g.GCps = (b.GCTotal - a.GCTotal) / d
	}
	return g
}
