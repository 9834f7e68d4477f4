// Package testbed builds vipd's seed topology inside network namespaces it
// creates, runs real etcd, HAProxy, vipd and the client probe in them, and
// observes the result: who holds the VIP (netlink address events), what the
// client sees (probe timeline) and the client's neighbour entry for the VIP.
//
// Topology (every host is a namespace vt<pid>-<seq><short>; every packet
// stays on its bridge or loopback):
//
//	lan        bridge br0; one veth port per host (port name = host short name)
//	n1         web-node-1  eth0 192.168.20.10/24  HAProxy, vipd (priority 101)
//	n2         web-node-2  eth0 192.168.20.11/24  HAProxy, vipd (priority 100)
//	n3         web-node-3  eth0 192.168.20.12/24  HAProxy, vipd (priority 99; only with Options.Nodes 3)
//	e1 e2 e3   etcd-1..3   eth0 192.168.20.2-4/24 a 3-member etcd cluster
//	c          client      eth0 192.168.20.100/24 vipd-probe → http://192.168.20.15/
//
// The VIP 192.168.20.15/24 is bound by vipd on a node's eth0. MAC addresses
// are fixed (02:00 + the IPv4 address) so they are easy to read in logs.
//
// etcd runs with the Raft timings of the shipped etcd example
// (deploy/examples/etcd: heartbeat 50 ms, election timeout 500 ms, so a
// leader change takes 0.5–1 s, inside what lease_ttl 3s rides through) and with
// --unsafe-no-fsync, since etcd's own disk durability is not under test and
// fsync latency on a shared CI disk would only add noise.
//
// Testbeds are serialised across processes by a file lock (go test runs
// packages in parallel; two testbeds on 2 cores would distort timings), and
// New first sweeps namespaces left by dead owners.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Seed topology addresses.
var (
	VIP       = netip.MustParsePrefix("192.168.20.15/24")
	subnet    = 24
	EtcdPort  = 2379
	peerPort  = 2380
	probePath = "/"
)

// Node names of the seed scenario.
const (
	Node1 = "web-node-1"
	Node2 = "web-node-2"
	// Node3 exists only with Options.Nodes = 3.
	Node3 = "web-node-3"
)

// Options configure a testbed.
type Options struct {
	// BinDir holds vipd, etcd and vipd-probe (make build tools → bin/).
	BinDir string
	// HAProxy is the haproxy binary. Default /usr/sbin/haproxy.
	HAProxy string
	// ProbeInterval and ProbeTimeout configure vipd-probe. Defaults 10 ms, 100 ms.
	ProbeInterval, ProbeTimeout time.Duration
	// KeepDir keeps the temp dir (configs, logs, etcd data) after Close.
	KeepDir bool
	// Nodes is the number of web nodes, 2 (the seed, default) or 3: the
	// third is web-node-3, namespace n3, 192.168.20.12, priority 99, and
	// the holder monitor follows it like the others.
	Nodes int
	// Logf receives progress messages. Default: discard.
	Logf func(format string, args ...any)
}

// Host is one namespace on the LAN.
type Host struct {
	Name  string // e.g. web-node-1, etcd-2, client
	Short string // bridge port name and namespace suffix
	IP    netip.Addr
	MAC   net.HardwareAddr
	NS    *Netns
}

// Node is a web node: HAProxy and vipd.
type Node struct {
	Host
	Priority int
	tb       *Testbed

	mu      sync.Mutex
	haproxy *Proc
	vipd    *Proc
}

// EtcdMember is one member of the etcd cluster.
type EtcdMember struct {
	Host
	tb   *Testbed
	mu   sync.Mutex
	proc *Proc
}

// Testbed is a running seed topology. Create with New, always Close.
type Testbed struct {
	Opts   Options
	Dir    string // temp dir: configs, logs/, etcd data
	LAN    *Netns
	Nodes  []*Node
	Etcd   []*EtcdMember
	Client *Host
	Mon    *Monitor

	// EtcdStartup is how long StartEtcd took until all members were healthy.
	EtcdStartup time.Duration

	seq      int
	lock     *os.File
	all      []*Netns
	closeOne sync.Once
	closeErr error

	probeMu  sync.Mutex
	probe    *Proc
	probes   []ProbeResult
	probeLog *os.File
}

var (
	seqMu   sync.Mutex
	nextSeq int
	openMu  sync.Mutex
	open    = map[*Testbed]bool{}
)

func (tb *Testbed) logf(format string, args ...any) {
	if tb.Opts.Logf != nil {
		tb.Opts.Logf(format, args...)
	}
}

// Prereqs reports what is missing to run a testbed: root, the binaries in
// binDir, haproxy, ip. Empty means ready.
func Prereqs(binDir, haproxy string) []string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (network namespaces)")
	}
	if haproxy == "" {
		haproxy = "/usr/sbin/haproxy"
	}
	for _, f := range []string{filepath.Join(binDir, "vipd"), filepath.Join(binDir, "etcd"), filepath.Join(binDir, "vipd-probe"), haproxy} {
		if st, err := os.Stat(f); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			miss = append(miss, f)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		miss = append(miss, "ip (iproute2)")
	}
	return miss
}

func macFor(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x02, 0x00, a[0], a[1], a[2], a[3]}
}

// New builds the namespaces, bridge and links and starts the holder monitor.
// No process runs yet: see StartEtcd, Node.StartHAProxy, Node.StartVipd,
// StartProbe (or StartAll).
func New(opts Options) (_ *Testbed, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed needs root (network namespaces)")
	}
	if opts.HAProxy == "" {
		opts.HAProxy = "/usr/sbin/haproxy"
	}
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = 10 * time.Millisecond
	}
	if opts.ProbeTimeout == 0 {
		opts.ProbeTimeout = 100 * time.Millisecond
	}
	if opts.BinDir != "" {
		if opts.BinDir, err = filepath.Abs(opts.BinDir); err != nil {
			return nil, err
		}
	}
	if removed, err := Sweep(); len(removed) > 0 || err != nil {
		if opts.Logf != nil {
			opts.Logf("swept leftovers of dead testbeds: %v (err %v)", removed, err)
		}
	}
	tLock := time.Now()
	lock, err := acquireLock()
	if err != nil {
		return nil, fmt.Errorf("testbed lock: %w", err)
	}
	if w := time.Since(tLock); w > 100*time.Millisecond && opts.Logf != nil {
		opts.Logf("waited %v for another testbed to finish (testbeds run one at a time)", w.Round(time.Millisecond))
	}
	seqMu.Lock()
	nextSeq++
	seq := nextSeq
	seqMu.Unlock()
	tb := &Testbed{Opts: opts, seq: seq, lock: lock}
	openMu.Lock()
	open[tb] = true
	openMu.Unlock()
	defer func() {
		if err != nil {
			tb.Close()
		}
	}()
	if tb.Dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-%d-", NamePrefix, os.Getpid(), seq)); err != nil {
		return nil, err
	}
	if err = os.MkdirAll(filepath.Join(tb.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	if tb.LAN, err = tb.newNetns("lan"); err != nil {
		return nil, err
	}
	if err = tb.LAN.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		return nil, fmt.Errorf("add bridge: %w", err)
	}
	br, err := tb.LAN.NL.LinkByName("br0")
	if err != nil {
		return nil, err
	}
	if err = tb.LAN.NL.LinkSetUp(br); err != nil {
		return nil, err
	}

	mkHost := func(name, short, ip string) (Host, error) {
		h := Host{Name: name, Short: short, IP: netip.MustParseAddr(ip)}
		h.MAC = macFor(h.IP)
		ns, err := tb.newNetns(short)
		if err != nil {
			return h, err
		}
		h.NS = ns
		return h, tb.connect(&h, br.Attrs().Index)
	}
	nodes := []struct{ name, short, ip string }{{Node1, "n1", "192.168.20.10"}, {Node2, "n2", "192.168.20.11"}}
	switch opts.Nodes {
	case 0, 2:
	case 3:
		nodes = append(nodes, struct{ name, short, ip string }{Node3, "n3", "192.168.20.12"})
	default:
		return nil, fmt.Errorf("testbed: Options.Nodes = %d, want 2 or 3", opts.Nodes)
	}
	for i, nd := range nodes {
		h, err := mkHost(nd.name, nd.short, nd.ip)
		if err != nil {
			return nil, err
		}
		tb.Nodes = append(tb.Nodes, &Node{Host: h, Priority: 101 - i, tb: tb})
	}
	for i, ip := range []string{"192.168.20.2", "192.168.20.3", "192.168.20.4"} {
		h, err := mkHost(fmt.Sprintf("etcd-%d", i+1), fmt.Sprintf("e%d", i+1), ip)
		if err != nil {
			return nil, err
		}
		tb.Etcd = append(tb.Etcd, &EtcdMember{Host: h, tb: tb})
	}
	c, err := mkHost("client", "c", "192.168.20.100")
	if err != nil {
		return nil, err
	}
	tb.Client = &c

	tb.Mon = newMonitor(net.IP(VIP.Addr().AsSlice()))
	if err = tb.Mon.watchOrdered(tb.LAN, tb.Nodes); err != nil {
		return nil, err
	}
	for _, n := range tb.Nodes {
		if err = tb.Mon.watch(n.Name, n.NS); err != nil {
			return nil, err
		}
		// Fresh namespaces hold no VIP; record one found anyway.
		if has, err := n.HasVIP(); err != nil {
			return nil, err
		} else if has {
			tb.Mon.record(time.Now(), n.Name, true)
		}
	}
	tb.logf("testbed %s%d-%d ready in %s", NamePrefix, os.Getpid(), seq, tb.Dir)
	return tb, nil
}

func (tb *Testbed) newNetns(short string) (*Netns, error) {
	n, err := createNetns(fmt.Sprintf("%s%d-%d%s", NamePrefix, os.Getpid(), tb.seq, short))
	if err != nil {
		return nil, err
	}
	tb.all = append(tb.all, n)
	return n, nil
}

// connect creates the veth pair: port h.Short on the bridge in the lan
// namespace, eth0 (with h's MAC and address) in h's namespace.
func (tb *Testbed) connect(h *Host, brIndex int) error {
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: h.Short, MasterIndex: brIndex},
		PeerName:         "eth0",
		PeerHardwareAddr: h.MAC,
		PeerNamespace:    netlink.NsFd(int(h.NS.Handle)),
	}
	if err := tb.LAN.NL.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth for %s: %w", h.Name, err)
	}
	port, err := tb.LAN.NL.LinkByName(h.Short)
	if err != nil {
		return err
	}
	if err := tb.LAN.NL.LinkSetUp(port); err != nil {
		return err
	}
	eth, err := h.NS.NL.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("%s: eth0: %w", h.Name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(h.IP.AsSlice()), Mask: net.CIDRMask(subnet, 32)}}
	if err := h.NS.NL.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("%s: addr: %w", h.Name, err)
	}
	return h.NS.NL.LinkSetUp(eth)
}

// SetLinkUp brings h's bridge port up or down: down drops the host off the
// LAN (its eth0 stays up, as when a switch port or cable fails).
func (tb *Testbed) SetLinkUp(h *Host, up bool) error {
	port, err := tb.LAN.NL.LinkByName(h.Short)
	if err != nil {
		return err
	}
	if up {
		return tb.LAN.NL.LinkSetUp(port)
	}
	return tb.LAN.NL.LinkSetDown(port)
}

// Isolate detaches h's port from the bridge (isolated) or re-attaches it.
// Unlike SetLinkUp(h, false) the host keeps carrier on eth0, so it cannot
// tell from its link that it is cut off (as when an upstream switch fails).
func (tb *Testbed) Isolate(h *Host, isolated bool) error {
	port, err := tb.LAN.NL.LinkByName(h.Short)
	if err != nil {
		return err
	}
	if isolated {
		return tb.LAN.NL.LinkSetNoMaster(port)
	}
	br, err := tb.LAN.NL.LinkByName("br0")
	if err != nil {
		return err
	}
	return tb.LAN.NL.LinkSetMaster(port, br)
}

// Node returns the node called name, or nil.
func (tb *Testbed) Node(name string) *Node {
	for _, n := range tb.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (tb *Testbed) logPath(name string) string {
	return filepath.Join(tb.Dir, "logs", name+".log")
}

func (tb *Testbed) bin(name string) string { return filepath.Join(tb.Opts.BinDir, name) }

// HTTPGet performs one GET from inside ns (no keep-alive). url must use an
// IP literal host.
func HTTPGet(ctx context.Context, ns *Netns, url string) (int, string, error) {
	return HTTPDo(ctx, ns, http.MethodGet, url, "")
}

// HTTPDo performs one request with a JSON body from inside ns.
func HTTPDo(ctx context.Context, ns *Netns, method, url, body string) (int, string, error) {
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: ns.DialContext}}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if body != "" && err == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), err
}

func pollHTTP(ns *Netns, url string, timeout time.Duration, ok func(int, string) bool) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		code, body, err := HTTPGet(ctx, ns, url)
		cancel()
		if err == nil && ok(code, body) {
			return nil
		}
		last = fmt.Sprintf("%d %q %v", code, strings.TrimSpace(body), err)
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s from %s: not ready after %v (last: %s)", url, ns.Name, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- etcd ----

func (tb *Testbed) initialCluster() string {
	var parts []string
	for _, m := range tb.Etcd {
		parts = append(parts, fmt.Sprintf("%s=http://%s:%d", m.Name, m.IP, peerPort))
	}
	return strings.Join(parts, ",")
}

// Endpoints are the etcd client URLs.
func (tb *Testbed) Endpoints() []string {
	var eps []string
	for _, m := range tb.Etcd {
		eps = append(eps, m.ClientURL())
	}
	return eps
}

// ClientURL is the member's client URL.
func (m *EtcdMember) ClientURL() string { return fmt.Sprintf("http://%s:%d", m.IP, EtcdPort) }

// Start starts the member (initial-cluster-state new on a fresh data dir,
// which etcd ignores once the member has data).
func (m *EtcdMember) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc.Running() {
		return fmt.Errorf("%s already running", m.Name)
	}
	tb := m.tb
	p, err := startProc(m.NS, m.Name, tb.logPath(m.Name), nil, tb.bin("etcd"),
		"--name", m.Name,
		"--data-dir", filepath.Join(tb.Dir, m.Name+".etcd"),
		"--listen-peer-urls", fmt.Sprintf("http://%s:%d", m.IP, peerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://%s:%d", m.IP, peerPort),
		"--listen-client-urls", fmt.Sprintf("http://%s:%d,http://127.0.0.1:%d", m.IP, EtcdPort, EtcdPort),
		"--advertise-client-urls", m.ClientURL(),
		"--initial-cluster", tb.initialCluster(),
		"--initial-cluster-state", "new",
		"--initial-cluster-token", fmt.Sprintf("%s%d-%d", NamePrefix, os.Getpid(), tb.seq),
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--unsafe-no-fsync",
		"--log-level", "warn",
		"--log-outputs", "stderr",
	)
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// Proc is the member's current process (nil if never started).
func (m *EtcdMember) Proc() *Proc { m.mu.Lock(); defer m.mu.Unlock(); return m.proc }

// Stop stops the member gracefully (SIGTERM).
func (m *EtcdMember) Stop() error {
	if p := m.Proc(); p != nil {
		return p.Stop(5 * time.Second)
	}
	return nil
}

// Kill SIGKILLs the member.
func (m *EtcdMember) Kill() error {
	if p := m.Proc(); p != nil {
		return p.Kill()
	}
	return nil
}

// Healthy asks the member's /health from the client namespace.
func (m *EtcdMember) Healthy(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code, body, err := HTTPGet(ctx, m.tb.Client.NS, m.ClientURL()+"/health")
	return err == nil && code == 200 && strings.Contains(body, `"health":"true"`)
}

// StartEtcd starts all members and waits until every one reports healthy
// (over the LAN, from the client namespace).
func (tb *Testbed) StartEtcd(timeout time.Duration) error {
	t0 := time.Now()
	for _, m := range tb.Etcd {
		if err := m.Start(); err != nil {
			return err
		}
	}
	for _, m := range tb.Etcd {
		err := pollHTTP(tb.Client.NS, m.ClientURL()+"/health", timeout-time.Since(t0), func(code int, body string) bool {
			return code == 200 && strings.Contains(body, `"health":"true"`)
		})
		if err != nil {
			return fmt.Errorf("etcd %s: %w\n%s", m.Name, err, m.Proc().LogTail(20))
		}
	}
	tb.EtcdStartup = time.Since(t0)
	tb.logf("etcd cluster healthy after %v", tb.EtcdStartup.Round(time.Millisecond))
	return nil
}

// ---- HAProxy ----

// HAProxyConfig is the generated haproxy.cfg: *:80 answers 200 with the node
// name as body; monitor-uri /healthz on *:8404 (vipd checks 127.0.0.1:8404).
func (n *Node) HAProxyConfig() string {
	return fmt.Sprintf(`global
    maxconn 4000

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-request 2s

frontend web
    bind *:80
    http-request return status 200 content-type text/plain string "%s"

frontend health
    bind *:8404
    monitor-uri /healthz
`, n.Name)
}

// StartHAProxy starts HAProxy (-db, foreground) and waits until its
// monitor-uri answers inside the node.
func (n *Node) StartHAProxy() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.haproxy.Running() {
		return fmt.Errorf("haproxy on %s already running", n.Name)
	}
	cfg := filepath.Join(n.tb.Dir, n.Name+"-haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(n.HAProxyConfig()), 0o644); err != nil {
		return err
	}
	p, err := startProc(n.NS, "haproxy@"+n.Name, n.tb.logPath("haproxy-"+n.Name), nil, n.tb.Opts.HAProxy, "-db", "-f", cfg)
	if err != nil {
		return err
	}
	n.haproxy = p
	if err := pollHTTP(n.NS, "http://127.0.0.1:8404/healthz", 5*time.Second, func(c int, _ string) bool { return c == 200 }); err != nil {
		return fmt.Errorf("haproxy on %s: %w\n%s", n.Name, err, p.LogTail(20))
	}
	return nil
}

// HAProxy is the node's current HAProxy process (nil if never started).
func (n *Node) HAProxy() *Proc { n.mu.Lock(); defer n.mu.Unlock(); return n.haproxy }

// StopHAProxy stops HAProxy with SIGTERM (immediate stop in -db mode: the
// listeners close at once) and waits for it.
func (n *Node) StopHAProxy() error {
	if p := n.HAProxy(); p != nil {
		return p.Stop(5 * time.Second)
	}
	return nil
}

// KillHAProxy SIGKILLs HAProxy.
func (n *Node) KillHAProxy() error {
	if p := n.HAProxy(); p != nil {
		return p.Kill()
	}
	return nil
}

// ---- vipd ----

// VipdConfig is the node's vipd configuration, in DESIGN.md's schema.
func (n *Node) VipdConfig() string {
	return fmt.Sprintf(`node: %s
etcd:
  endpoints: [%s]
  prefix: /vipd
  lease_ttl: 3s
  dial_timeout: 2s
metrics: {listen: ""}
checks:
  haproxy:
    type: http
    url: http://127.0.0.1:8404/healthz
    interval: 200ms
    timeout: 150ms
    rise: 2
    fall: 2
groups:
  - name: VI_1
    interface: eth0
    addresses: [%s]
    priority: %d
    preempt: true
    preempt_delay: 0s
    track: [{check: haproxy, weight: 2}]
    garp: {count: 5, interval: 1s}
`, n.Name, strings.Join(n.tb.Endpoints(), ", "), VIP, n.Priority)
}

// VipdConfigPath is where StartVipd writes the config.
func (n *Node) VipdConfigPath() string { return filepath.Join(n.tb.Dir, n.Name+"-vipd.yaml") }

// VipdLogPath is vipd's log (stderr) file; restarts append to it.
func (n *Node) VipdLogPath() string { return n.tb.logPath("vipd-" + n.Name) }

// StartVipd writes VipdConfig and runs `vipd run --config FILE` in the node.
func (n *Node) StartVipd() error { return n.StartVipdWithConfig(n.VipdConfig()) }

// StartVipdWithConfig runs vipd with the given YAML config.
func (n *Node) StartVipdWithConfig(yaml string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vipd.Running() {
		return fmt.Errorf("vipd on %s already running", n.Name)
	}
	if err := os.WriteFile(n.VipdConfigPath(), []byte(yaml), 0o644); err != nil {
		return err
	}
	p, err := startProc(n.NS, "vipd@"+n.Name, n.VipdLogPath(), nil, n.tb.bin("vipd"), "run", "--config", n.VipdConfigPath())
	if err != nil {
		return err
	}
	n.vipd = p
	return nil
}

// Vipd is the node's current vipd process (nil if never started).
func (n *Node) Vipd() *Proc { n.mu.Lock(); defer n.mu.Unlock(); return n.vipd }

// StopVipd sends SIGTERM and waits (up to 5 s, then SIGKILL and an error).
func (n *Node) StopVipd() error {
	if p := n.Vipd(); p != nil {
		return p.Stop(5 * time.Second)
	}
	return nil
}

// KillVipd SIGKILLs vipd.
func (n *Node) KillVipd() error {
	if p := n.Vipd(); p != nil {
		return p.Kill()
	}
	return nil
}

// FreezeVipd sends SIGSTOP; ThawVipd sends SIGCONT.
func (n *Node) FreezeVipd() error { return n.signalVipd(syscall.SIGSTOP) }

// ThawVipd resumes a frozen vipd.
func (n *Node) ThawVipd() error { return n.signalVipd(syscall.SIGCONT) }

// SignalVipd sends sig to vipd without waiting.
func (n *Node) signalVipd(sig syscall.Signal) error {
	p := n.Vipd()
	if p == nil {
		return fmt.Errorf("vipd on %s never started", n.Name)
	}
	return p.Signal(sig)
}

// SignalVipd sends sig to vipd without waiting (e.g. SIGTERM, to time the
// release separately from the process exit).
func (n *Node) SignalVipd(sig syscall.Signal) error { return n.signalVipd(sig) }

// VipdLog returns vipd's whole log.
func (n *Node) VipdLog() string {
	b, err := os.ReadFile(n.VipdLogPath())
	if err != nil {
		return fmt.Sprintf("(no vipd log: %v)", err)
	}
	return string(b)
}

// EthMAC reads the MAC of the node's eth0 from the kernel.
func (h *Host) EthMAC() (net.HardwareAddr, error) {
	l, err := h.NS.NL.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// HasVIP asks the kernel (netlink dump) whether the VIP is on the node's eth0.
func (n *Node) HasVIP() (bool, error) {
	l, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		return false, err
	}
	addrs, err := n.NS.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(VIP.Addr().AsSlice())) {
			return true, nil
		}
	}
	return false, nil
}

// AddVIP and DelVIP bind/unbind the VIP by hand (testbed self-tests; vipd
// does this in real scenarios).
func (n *Node) AddVIP() error { return n.vipOp(true) }

// DelVIP removes the VIP from the node's eth0.
func (n *Node) DelVIP() error { return n.vipOp(false) }

func (n *Node) vipOp(add bool) error {
	l, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(VIP.Addr().AsSlice()), Mask: net.CIDRMask(VIP.Bits(), 32)}}
	if add {
		return n.NS.NL.AddrAdd(l, a)
	}
	return n.NS.NL.AddrDel(l, a)
}

// Holders lists the nodes holding the VIP now (monitor view).
func (tb *Testbed) Holders() []string { return tb.Mon.Holders() }

// WaitHolder waits until node alone holds the VIP.
func (tb *Testbed) WaitHolder(node string, timeout time.Duration) error {
	return tb.Mon.WaitHolder(node, timeout)
}

// ---- client ----

// Neigh is the client's neighbour entry for an address.
type Neigh struct {
	MAC   net.HardwareAddr
	State string
}

// ClientNeigh returns the client namespace's neighbour (ARP) entry for the VIP.
func (tb *Testbed) ClientNeigh() (Neigh, error) {
	l, err := tb.Client.NS.NL.LinkByName("eth0")
	if err != nil {
		return Neigh{}, err
	}
	ns, err := tb.Client.NS.NL.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return Neigh{}, err
	}
	for _, e := range ns {
		if e.IP.Equal(net.IP(VIP.Addr().AsSlice())) {
			return Neigh{MAC: e.HardwareAddr, State: nudString(e.State)}, nil
		}
	}
	return Neigh{}, errors.New("client has no neighbour entry for the VIP")
}

// NodeByMAC names the node whose eth0 has mac ("" if none).
func (tb *Testbed) NodeByMAC(mac net.HardwareAddr) string {
	for _, n := range tb.Nodes {
		if m, err := n.EthMAC(); err == nil && m.String() == mac.String() {
			return n.Name
		}
	}
	return ""
}

func nudString(s int) string {
	names := []struct {
		bit  int
		name string
	}{{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"}}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return strings.Join(out, "|")
}

// StartProbe runs vipd-probe in the client namespace against the VIP.
func (tb *Testbed) StartProbe() error {
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	if tb.probe.Running() {
		return errors.New("probe already running")
	}
	if tb.probeLog == nil {
		f, err := os.Create(tb.logPath("probe-timeline"))
		if err != nil {
			return err
		}
		tb.probeLog = f
	}
	url := "http://" + VIP.Addr().String() + probePath
	p, err := startProc(tb.Client.NS, "vipd-probe", tb.logPath("probe"), &lineWriter{fn: tb.addProbe}, tb.bin("vipd-probe"),
		"--url", url, "--interval", tb.Opts.ProbeInterval.String(), "--timeout", tb.Opts.ProbeTimeout.String(), "--duration", "30m")
	if err != nil {
		return err
	}
	tb.probe = p
	return nil
}

func (tb *Testbed) addProbe(line string) {
	r, err := ParseProbeLine(line)
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	if tb.probeLog != nil {
		io.WriteString(tb.probeLog, line+"\n")
	}
	if err == nil {
		tb.probes = append(tb.probes, r)
	}
}

// StopProbe stops the probe (SIGTERM) and waits for its last lines.
func (tb *Testbed) StopProbe() error {
	tb.probeMu.Lock()
	p := tb.probe
	tb.probeMu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop(3 * time.Second)
}

// Probes returns every probe result so far, sorted by start time.
func (tb *Testbed) Probes() Timeline {
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	return NewTimeline(tb.probes)
}

// WaitAnswer waits until a probe started at or after since is answered by node.
func (tb *Testbed) WaitAnswer(node string, since time.Time, timeout time.Duration) (ProbeResult, error) {
	deadline := time.Now().Add(timeout)
	for {
		if p, ok := tb.Probes().Window(since, time.Time{}).FirstAnswerFrom(node); ok {
			return p, nil
		}
		if time.Now().After(deadline) {
			return ProbeResult{}, fmt.Errorf("client got no answer from %s within %v (answers since: %v)",
				node, timeout, tb.Probes().Window(since, time.Time{}).Counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lineWriter struct {
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// StartAll starts etcd, HAProxy and vipd on both nodes, and the probe.
func (tb *Testbed) StartAll() error {
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		return err
	}
	for _, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			return err
		}
	}
	for _, n := range tb.Nodes {
		if err := n.StartVipd(); err != nil {
			return err
		}
	}
	return tb.StartProbe()
}

// ---- diagnostics and teardown ----

// Logs returns the last n lines of every process log, for failure reports.
func (tb *Testbed) Logs(n int) string {
	if tb.Dir == "" {
		return ""
	}
	files, _ := filepath.Glob(filepath.Join(tb.Dir, "logs", "*.log"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "probe-timeline.log") {
			continue
		}
		fmt.Fprintf(&b, "----- %s (last %d lines) -----\n%s\n", filepath.Base(f), n, tailFile(f, n))
	}
	fmt.Fprintf(&b, "----- holder events -----\n")
	for _, e := range tb.Mon.Events() {
		fmt.Fprintf(&b, "%s\n", e)
	}
	return b.String()
}

// Close stops every process (vipd gracefully first, so it releases the VIP),
// deletes the namespaces and the temp dir, and releases the testbed lock.
// It is idempotent and safe on a partly built testbed.
func (tb *Testbed) Close() error {
	tb.closeOne.Do(func() {
		var errs []error
		tb.StopProbe()
		for _, n := range tb.Nodes {
			if err := n.StopVipd(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, n := range tb.Nodes {
			n.KillHAProxy()
		}
		for _, m := range tb.Etcd {
			m.Kill()
		}
		if tb.Mon != nil {
			tb.Mon.stop()
		}
		for i := len(tb.all) - 1; i >= 0; i-- {
			if err := tb.all[i].delete(); err != nil {
				errs = append(errs, err)
			}
		}
		tb.probeMu.Lock()
		if tb.probeLog != nil {
			tb.probeLog.Close()
		}
		tb.probeMu.Unlock()
		if tb.Dir != "" && !tb.Opts.KeepDir {
			if err := os.RemoveAll(tb.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		if tb.lock != nil {
			tb.lock.Close() // releases the flock
		}
		openMu.Lock()
		delete(open, tb)
		openMu.Unlock()
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}

// CloseOnSignal closes every open testbed and exits (status 130) on SIGINT
// or SIGTERM, so Ctrl-C never leaves namespaces or processes behind. It
// returns a function that uninstalls the handler.
func CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "\n%v: tearing down testbeds...\n", sig)
			openMu.Lock()
			var tbs []*Testbed
			for tb := range open {
				tbs = append(tbs, tb)
			}
			openMu.Unlock()
			for _, tb := range tbs {
				tb.Close()
			}
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
