package testbed

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// PeerPort is the port of every node's peer channel (peer.listen).
const PeerPort = 9843

// PeerMode is how a node's vipd config sets up the peer channel
// (docs/design.md §2.8, §2.9).
type PeerMode int

const (
	// PeerFailsafe (the default): peer.listen <node ip>:9843, the
	// testbed's key file, failsafe: true. Relayed renewals and the
	// failsafe are on.
	PeerFailsafe PeerMode = iota
	// PeerRelay: the channel is on (relayed renewals, promises given to
	// others), failsafe: false (this node never holds on promises).
	PeerRelay
	// PeerOff: no peer section. The node neither relays nor promises.
	PeerOff
)

func (m PeerMode) String() string {
	switch m {
	case PeerFailsafe:
		return "failsafe"
	case PeerRelay:
		return "relay only"
	case PeerOff:
		return "off"
	}
	return fmt.Sprintf("PeerMode(%d)", int(m))
}

// PeerEndpoint is where the node serves its peer channel: <ip>:9843.
func (n *Node) PeerEndpoint() netip.AddrPort { return netip.AddrPortFrom(n.IP, PeerPort) }

// PeerKeyPath is the testbed's peer key file, as the node's config names it.
func (n *Node) PeerKeyPath() string { return n.tb.PeerKeyPath() }

// PeerConfig is the peer section of the node's vipd config for its Peer
// mode ("" for PeerOff).
func (n *Node) PeerConfig() string {
	if n.Peer == PeerOff {
		return ""
	}
	return fmt.Sprintf("peer:\n  listen: %s\n  key_file: %s\n  failsafe: %v\n", n.PeerEndpoint(), n.tb.PeerKeyPath(), n.Peer == PeerFailsafe)
}

// VipdConfig is the node's vipd configuration (the seed scenario), with
// the peer channel as n.Peer says (default: on, failsafe on).
func (n *Node) VipdConfig() string {
	return fmt.Sprintf(`node: %s
etcd:
  endpoints: [%s]
  prefix: /vipd
  lease_ttl: 3s
  dial_timeout: 2s
metrics: {listen: ""}
%schecks:
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
`, n.Name, strings.Join(n.tb.Endpoints(), ", "), n.PeerConfig(), VIP, n.Priority)
}

// VipdConfigPath is where StartVipd writes the config.
func (n *Node) VipdConfigPath() string { return filepath.Join(n.tb.Dir, n.Name+"-vipd.yaml") }

// VipdLogPath is vipd's log (stderr) file; restarts append to it.
func (n *Node) VipdLogPath() string { return n.tb.logPath("vipd-" + n.Name) }

// VipdRuntimeDir is the node's vipd runtime directory (its vipd.lock).
// Every node's vipd runs on this one host, and vipd allows one per runtime
// directory, so each node gets its own (as each host has its /run/vipd).
func (n *Node) VipdRuntimeDir() string { return filepath.Join(n.tb.Dir, "run-"+n.Name) }

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
	bin := n.tb.bin("vipd")
	if n.VipdBinary != "" {
		bin = n.VipdBinary
	}
	p, err := startProc(n.NS, "vipd@"+n.Name, n.VipdLogPath(), nil, bin, "run", "--config", n.VipdConfigPath(),
		"--runtime-dir", n.VipdRuntimeDir())
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
func (n *Node) HasVIP() (bool, error) { return n.AddrOn("eth0", VIP.Addr()) }

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

// ExampleConfig is the shipped example config of the node
// (dir/<node>.yaml, e.g. deploy/examples/seed), adapted to the testbed
// (Adapt). Its etcd endpoints are the example's: the testbed's members
// have the same addresses.
func (n *Node) ExampleConfig(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, n.Name+".yaml"))
	if err != nil {
		return "", fmt.Errorf("example config for %s: %w", n.Name, err)
	}
	return n.Adapt(string(b)), nil
}

// Adapt adapts a config written for the seed's hosts to the node:
// interface ens160 → eth0, HAProxy's pidfile → HAProxyPidfile, a process
// check by the name haproxy → HAProxyName, and the peer channel: a config
// without a peer section gets the testbed's (PeerConfig), one with a peer
// section keeps it with key_file pointed at the testbed's key.
func (n *Node) Adapt(conf string) string {
	conf = strings.ReplaceAll(conf, "interface: ens160", "interface: eth0")
	conf = strings.ReplaceAll(conf, "pidfile: /run/haproxy.pid", "pidfile: "+n.HAProxyPidfile())
	conf = strings.ReplaceAll(conf, "name: haproxy\n", "name: "+n.HAProxyName()+"\n")
	return withPeer(conf, n.PeerConfig(), n.PeerKeyPath())
}

// withPeer gives config the peer section section if it has none, else
// points its peer.key_file at keyPath.
func withPeer(config, section, keyPath string) string {
	if !peerSection.MatchString(config) {
		return strings.TrimRight(config, "\n") + "\n" + section
	}
	return peerKeyFile.ReplaceAllString(config, "${1}"+keyPath)
}

var (
	peerSection = regexp.MustCompile(`(?m)^peer:`)
	// peerKeyFile matches key_file inside the top-level peer section.
	peerKeyFile = regexp.MustCompile(`(?m)(^peer:(?:\n[ \t]+.*)*?\n[ \t]+key_file:[ \t]*).*$`)
)
