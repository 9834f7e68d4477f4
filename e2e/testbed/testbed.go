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
// Each node's vipd serves the peer channel on <node ip>:9843 (PeerPort) with
// the testbed's key file (<dir>/peer.key, mode 0600) and the failsafe on,
// unless its Node.Peer says otherwise (PeerRelay, PeerOff).
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
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	// Peer is how VipdConfig sets up the peer channel (default: on, with
	// the failsafe). Set it before StartVipd; a running vipd keeps the
	// config it started with.
	Peer PeerMode
	// VipdBinary, if set, is the vipd binary StartVipd runs instead of
	// the testbed's (a copy a test replaces, as a package upgrade does).
	VipdBinary string
	tb         *Testbed

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
	peerKey  []byte
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
	if err = tb.writePeerKey(); err != nil {
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

// writePeerKey creates the cluster's shared peer key file (mode 0600, 32
// random bytes as a base64 line, as the operator's recipe makes it).
func (tb *Testbed) writePeerKey() error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	key := base64.StdEncoding.EncodeToString(raw)
	if err := os.WriteFile(tb.PeerKeyPath(), []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("peer key: %w", err)
	}
	tb.peerKey = []byte(key)
	return nil
}

// PeerKeyPath is the peer key file every node's config names.
func (tb *Testbed) PeerKeyPath() string { return filepath.Join(tb.Dir, "peer.key") }

// PeerKey is the key as vipd reads it from PeerKeyPath (the base64 line,
// trailing newline trimmed), for tests that build peer requests.
func (tb *Testbed) PeerKey() []byte { return append([]byte(nil), tb.peerKey...) }

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
