package testbed

// Announcement tooling (issue 4): IPv6 on the LAN, a node whose eth0 has no
// IPv4 address of its own, neighbour and address event recorders with
// timestamps, client traffic that keeps neighbour entries alive, and a
// tcpdump capture on the bridge with a small pcap reader.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPv6 LAN addresses: fd00:20::<last IPv4 octet, read as hex digits>, so
// web-node-1 (192.168.20.10) is fd00:20::10 and the client fd00:20::100.
const ipv6LANPrefix = 64

// VIP6 is an IPv6 VIP on the same LAN.
var VIP6 = netip.MustParsePrefix("fd00:20::15/64")

// IPv6Of is h's IPv6 LAN address (valid once AddIPv6 ran).
func IPv6Of(h *Host) netip.Addr {
	a := h.IP.As4()
	return netip.MustParseAddr(fmt.Sprintf("fd00:20::%d", a[3]))
}

// hosts lists every host of the LAN.
func (tb *Testbed) hosts() []*Host {
	var hs []*Host
	for _, n := range tb.Nodes {
		hs = append(hs, &n.Host)
	}
	for _, m := range tb.Etcd {
		hs = append(hs, &m.Host)
	}
	return append(hs, tb.Client)
}

// AddIPv6 gives every host's eth0 its IPv6 LAN address (IPv6Of, /64,
// nodad so it is usable at once).
func (tb *Testbed) AddIPv6() error {
	for _, h := range tb.hosts() {
		eth, err := h.NS.NL.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("%s: eth0: %w", h.Name, err)
		}
		ip := IPv6Of(h)
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(ipv6LANPrefix, 128)}, Flags: unix.IFA_F_NODAD}
		if err := h.NS.NL.AddrAdd(eth, a); err != nil {
			return fmt.Errorf("%s: add %v: %w", h.Name, ip, err)
		}
	}
	return nil
}

// MgmtMAC is the MAC of the management interface eth1 that
// WithoutOwnIPv4 adds to a node: 02:01 + its IPv4 address.
func MgmtMAC(h *Host) net.HardwareAddr {
	m := macFor(h.IP)
	m[1] = 0x01
	return m
}

// WithoutOwnIPv4 leaves node n's eth0 without any IPv4 address: its
// address moves to a second bridge port, eth1 (MAC MgmtMAC), which carries
// its etcd traffic, so vipd on eth0 must announce from an interface
// without IPv4 (the case arp.Dial cannot handle). The node answers ARP
// only on the interface that has the asked address (arp_ignore=1) and
// picks ARP source addresses from the outgoing interface (arp_announce=2),
// so eth1 never answers for a VIP on eth0 and clients learn eth0's MAC.
// Call before starting vipd on n.
func (tb *Testbed) WithoutOwnIPv4(n *Node) error {
	br, err := tb.LAN.NL.LinkByName("br0")
	if err != nil {
		return err
	}
	port := n.Short + "m"
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: port, MasterIndex: br.Attrs().Index},
		PeerName:         "eth1",
		PeerHardwareAddr: MgmtMAC(&n.Host),
		PeerNamespace:    netlink.NsFd(int(n.NS.Handle)),
	}
	if err := tb.LAN.NL.LinkAdd(veth); err != nil {
		return fmt.Errorf("management veth for %s: %w", n.Name, err)
	}
	pl, err := tb.LAN.NL.LinkByName(port)
	if err != nil {
		return err
	}
	if err := tb.LAN.NL.LinkSetUp(pl); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"all/arp_ignore", "1"}, {"all/arp_announce", "2"}} {
		if err := n.NS.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/"+kv[0], []byte(kv[1]), 0o644)
		}); err != nil {
			return fmt.Errorf("%s: sysctl %s: %w", n.Name, kv[0], err)
		}
	}
	eth0, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		return err
	}
	eth1, err := n.NS.NL.LinkByName("eth1")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(n.IP.AsSlice()), Mask: net.CIDRMask(subnet, 32)}}
	if err := n.NS.NL.AddrAdd(eth1, addr); err != nil {
		return fmt.Errorf("%s: eth1 addr: %w", n.Name, err)
	}
	if err := n.NS.NL.LinkSetUp(eth1); err != nil {
		return err
	}
	if err := n.NS.NL.AddrDel(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(n.IP.AsSlice()), Mask: net.CIDRMask(subnet, 32)}}); err != nil {
		return fmt.Errorf("%s: remove eth0's IPv4: %w", n.Name, err)
	}
	v4, err := n.NS.NL.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	if len(v4) != 0 {
		return fmt.Errorf("%s: eth0 still has IPv4 %v", n.Name, v4)
	}
	return nil
}

// ClientNeighOf reads the client's neighbour entry for ip (either family).
func (tb *Testbed) ClientNeighOf(ip netip.Addr) (Neigh, error) {
	l, err := tb.Client.NS.NL.LinkByName("eth0")
	if err != nil {
		return Neigh{}, err
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := tb.Client.NS.NL.NeighList(l.Attrs().Index, fam)
	if err != nil {
		return Neigh{}, err
	}
	for _, e := range ns {
		if a, ok := netip.AddrFromSlice(e.IP); ok && a.Unmap() == ip && len(e.HardwareAddr) == 6 {
			return Neigh{MAC: e.HardwareAddr, State: nudString(e.State)}, nil
		}
	}
	return Neigh{}, fmt.Errorf("client has no neighbour entry for %v", ip)
}

// ---- address and neighbour events, in kernel order ----

// VIPEvent is a VIP added to or removed from a node, or a change of the
// client's neighbour entry for a VIP.
type VIPEvent struct {
	Seq   int       // position in the kernel's order (one socket)
	At    time.Time // when the event was read
	Host  string    // node name, or "client" for neighbour events
	IP    netip.Addr
	Neigh bool             // a client neighbour event (else an address event)
	Added bool             // address events: added (true) or removed
	MAC   net.HardwareAddr // neighbour events: the entry's MAC (nil if none)
	State string           // neighbour events: NUD state
}

// VIPWatch records, through one NETLINK_ROUTE socket in the lan namespace
// with NETLINK_LISTEN_ALL_NSID, the address events of every node namespace
// and the neighbour events of the client namespace for a set of addresses.
// One socket means one queue: an address add in a node, the announcement
// it triggers and the client's neighbour update arrive in the order the
// kernel made them, so "the entry changed after the add" is never an
// artefact of reading two sockets. It only receives.
type VIPWatch struct {
	want    map[netip.Addr]bool
	f       *os.File
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	events  []VIPEvent
	errs    []error
	changed chan struct{}
}

// WatchVIPs starts recording events for ips. Stop it when done.
func (tb *Testbed) WatchVIPs(ips ...netip.Addr) (*VIPWatch, error) {
	w := &VIPWatch{want: map[netip.Addr]bool{}, done: make(chan struct{}), changed: make(chan struct{})}
	for _, ip := range ips {
		w.want[ip] = true
	}
	byID := map[int32]string{}
	hosts := []*Host{tb.Client}
	for _, n := range tb.Nodes {
		hosts = append(hosts, &n.Host)
	}
	for i, h := range hosts {
		id, err := tb.LAN.NL.GetNetNsIdByFd(int(h.NS.Handle))
		if err != nil {
			return nil, fmt.Errorf("nsid of %s: %w", h.NS.Name, err)
		}
		if id < 0 {
			if err := tb.LAN.NL.SetNetNsIdByFd(int(h.NS.Handle), 200+i); err != nil {
				return nil, fmt.Errorf("set nsid of %s: %w", h.NS.Name, err)
			}
			if id, err = tb.LAN.NL.GetNetNsIdByFd(int(h.NS.Handle)); err != nil || id < 0 {
				return nil, fmt.Errorf("nsid of %s after set: %d %v", h.NS.Name, id, err)
			}
		}
		byID[int32(id)] = h.Name
	}
	f, rc, err := allNSIDSocket(tb.LAN, unix.RTMGRP_IPV4_IFADDR|unix.RTMGRP_IPV6_IFADDR|unix.RTMGRP_NEIGH, "netlink-vip-watch")
	if err != nil {
		return nil, err
	}
	w.f = f
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		buf := make([]byte, 1<<16)
		oob := make([]byte, 512)
		for {
			n, oobn, err, rerr := recvmsg(rc, buf, oob)
			now := time.Now()
			if err != nil || (rerr != nil && rerr != unix.ENOBUFS) {
				w.fail(err, rerr)
				return
			}
			if rerr == unix.ENOBUFS {
				w.fail(nil, fmt.Errorf("vip watch overflowed: events lost"))
				continue
			}
			host, ok := byID[nsidOf(oob[:oobn])]
			if !ok {
				continue
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				continue
			}
			for i := range msgs {
				w.handle(now, host, &msgs[i])
			}
		}
	}()
	return w, nil
}

func (w *VIPWatch) fail(errs ...error) {
	select {
	case <-w.done:
		return
	default:
	}
	w.mu.Lock()
	w.errs = append(w.errs, errors.Join(errs...))
	w.mu.Unlock()
}

// Errors lists receive errors (none expected).
func (w *VIPWatch) Errors() []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]error(nil), w.errs...)
}

// rtAttrs splits rtnetlink attributes.
func rtAttrs(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			break
		}
		out[binary.NativeEndian.Uint16(b[2:4])&^unix.NLA_F_NESTED] = b[4:l]
		al := (l + 3) &^ 3
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return out
}

func (w *VIPWatch) handle(at time.Time, host string, m *syscall.NetlinkMessage) {
	var ev VIPEvent
	switch m.Header.Type {
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if host == "client" || len(m.Data) < unix.SizeofIfAddrmsg {
			return
		}
		at2 := rtAttrs(m.Data[unix.SizeofIfAddrmsg:])
		v := at2[unix.IFA_LOCAL]
		if v == nil {
			v = at2[unix.IFA_ADDRESS]
		}
		ip, ok := netip.AddrFromSlice(v)
		if !ok {
			return
		}
		ev = VIPEvent{Host: host, IP: ip.Unmap(), Added: m.Header.Type == unix.RTM_NEWADDR}
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		if host != "client" || len(m.Data) < unix.SizeofNdMsg {
			return
		}
		state := binary.NativeEndian.Uint16(m.Data[8:10])
		at2 := rtAttrs(m.Data[unix.SizeofNdMsg:])
		ip, ok := netip.AddrFromSlice(at2[unix.NDA_DST])
		if !ok {
			return
		}
		ev = VIPEvent{Host: host, IP: ip.Unmap(), Neigh: true, State: nudString(int(state))}
		if mac := at2[unix.NDA_LLADDR]; len(mac) == 6 && m.Header.Type == unix.RTM_NEWNEIGH {
			ev.MAC = append(net.HardwareAddr(nil), mac...)
		}
	default:
		return
	}
	if !w.want[ev.IP] {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !ev.Neigh {
		// A lifetime refresh is also RTM_NEWADDR: keep edges only.
		held := false
		for i := len(w.events) - 1; i >= 0; i-- {
			if e := w.events[i]; !e.Neigh && e.Host == host && e.IP == ev.IP {
				held = e.Added
				break
			}
		}
		if held == ev.Added {
			return
		}
	}
	ev.At, ev.Seq = at, len(w.events)
	w.events = append(w.events, ev)
	close(w.changed)
	w.changed = make(chan struct{})
}

// Stop closes the socket and waits for the reader.
func (w *VIPWatch) Stop() {
	select {
	case <-w.done:
		return
	default:
	}
	close(w.done)
	w.f.Close()
	w.wg.Wait()
}

// Events returns the events so far, in kernel order.
func (w *VIPWatch) Events() []VIPEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]VIPEvent(nil), w.events...)
}

func (w *VIPWatch) wait(what string, timeout time.Duration, match func(VIPEvent) bool) (VIPEvent, error) {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, e := range w.events {
			if match(e) {
				w.mu.Unlock()
				return e, nil
			}
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			return VIPEvent{}, fmt.Errorf("%s: not within %v", what, timeout)
		}
	}
}

// WaitAddr waits for node to add (added) or remove ip at or after after.
func (w *VIPWatch) WaitAddr(node string, ip netip.Addr, added bool, after time.Time, timeout time.Duration) (VIPEvent, error) {
	return w.wait(fmt.Sprintf("%s %s %v", node, map[bool]string{true: "adds", false: "removes"}[added], ip), timeout, func(e VIPEvent) bool {
		return !e.Neigh && e.Host == node && e.IP == ip && e.Added == added && !e.At.Before(after)
	})
}

// WaitNeigh waits for the first client neighbour event read at or after
// after that gives ip the MAC mac.
func (w *VIPWatch) WaitNeigh(ip netip.Addr, mac net.HardwareAddr, after time.Time, timeout time.Duration) (VIPEvent, error) {
	return w.wait(fmt.Sprintf("client entry for %v names %v", ip, mac), timeout, func(e VIPEvent) bool {
		return e.Neigh && !e.At.Before(after) && e.IP == ip && e.MAC.String() == mac.String()
	})
}

// EventsOf returns the events for ip, in kernel order.
func (w *VIPWatch) EventsOf(ip netip.Addr) []VIPEvent {
	var out []VIPEvent
	for _, e := range w.Events() {
		if e.IP == ip {
			out = append(out, e)
		}
	}
	return out
}

// AddrEventsBetween returns the address events read in [from, to).
func (w *VIPWatch) AddrEventsBetween(from, to time.Time) []VIPEvent {
	var out []VIPEvent
	for _, e := range w.Events() {
		if !e.Neigh && !e.At.Before(from) && e.At.Before(to) {
			out = append(out, e)
		}
	}
	return out
}

// ---- client traffic ----

// ClientTraffic sends one UDP datagram (to the discard port) to each of a
// set of addresses every period from the client namespace, so the client
// keeps a neighbour entry for each, as a client talking to the VIPs would.
// Nothing listens on port 9; the datagrams only exercise ARP/NDP.
type ClientTraffic struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartClientTraffic starts the sender. Stop it when done.
func (tb *Testbed) StartClientTraffic(period time.Duration, ips ...netip.Addr) (*ClientTraffic, error) {
	var conns []net.Conn
	for _, ip := range ips {
		c, err := tb.Client.NS.DialContext(context.Background(), "udp", netip.AddrPortFrom(ip, 9).String())
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("client udp to %v: %w", ip, err)
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ct := &ClientTraffic{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ct.done)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			for _, c := range conns {
				_, _ = c.Write([]byte("vipd-e2e")) // ECONNREFUSED from an earlier ICMP is expected
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ct, nil
}

// Stop ends the traffic.
func (c *ClientTraffic) Stop() { c.cancel(); <-c.done }

// ---- capture on the bridge ----

// Capture is tcpdump on br0 in the lan namespace, writing a pcap file.
type Capture struct {
	proc *Proc
	Path string
}

// StartCapture runs `tcpdump -i br0 -U -w FILE FILTER...` in the lan
// namespace (it only listens; it sends nothing) and waits until it
// captures.
func (tb *Testbed) StartCapture(name string, filter ...string) (*Capture, error) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("tcpdump (Debian package tcpdump): %w", err)
	}
	path := filepath.Join(tb.Dir, name+".pcap")
	logPath := tb.logPath("tcpdump-" + name)
	// --immediate-mode: without it libpcap hands packets over in blocks,
	// after up to a second, and a capture stopped within that second
	// reports "0 packets captured" although the filter received them.
	argv := append([]string{tcpdump, "-i", "br0", "--immediate-mode", "-U", "-n", "-s", "256", "-w", path}, filter...)
	p, err := startProc(tb.LAN, "tcpdump@"+name, logPath, nil, argv...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "listening on br0") {
			return &Capture{proc: p, Path: path}, nil
		}
		if !p.Running() || time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("tcpdump did not start: %s", p.LogTail(10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop stops tcpdump (SIGTERM flushes the file) and reads the capture.
func (c *Capture) Stop() ([]PcapRecord, error) {
	if err := c.proc.Stop(5 * time.Second); err != nil && c.proc.Running() {
		return nil, err
	}
	f, err := os.Open(c.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPcap(f)
}

// Kill stops tcpdump without reading (cleanup).
func (c *Capture) Kill() { _ = c.proc.Kill() }

// PcapRecord is one captured frame.
type PcapRecord struct {
	At   time.Time
	Data []byte // as captured (possibly truncated to the snap length)
}

// ReadPcap reads a classic pcap stream (either byte order, micro- or
// nanosecond timestamps) of Ethernet frames.
func ReadPcap(r io.Reader) ([]PcapRecord, error) {
	var gh [24]byte
	if _, err := io.ReadFull(r, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	var bo binary.ByteOrder
	nano := false
	switch m := binary.LittleEndian.Uint32(gh[0:4]); m {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("pcap: bad magic %#08x", m)
	}
	if lt := bo.Uint32(gh[20:24]); lt != 1 {
		return nil, fmt.Errorf("pcap: link type %d, want 1 (Ethernet)", lt)
	}
	var out []PcapRecord
	for {
		var rh [16]byte
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return out, nil // tcpdump was stopped mid-record
			}
			return out, err
		}
		sec, frac := int64(bo.Uint32(rh[0:4])), int64(bo.Uint32(rh[4:8]))
		incl := bo.Uint32(rh[8:12])
		if incl > 1<<18 {
			return out, fmt.Errorf("pcap: record of %d bytes", incl)
		}
		data := make([]byte, incl)
		if _, err := io.ReadFull(r, data); err != nil {
			return out, nil
		}
		if !nano {
			frac *= 1000
		}
		out = append(out, PcapRecord{At: time.Unix(sec, frac), Data: data})
	}
}

// ---- vipctl ----

// RunVipctl runs bin/vipctl with args in the client namespace against the
// testbed's etcd and returns its output.
func (tb *Testbed) RunVipctl(timeout time.Duration, args ...string) (string, error) {
	out := filepath.Join(tb.Dir, "vipctl-"+strconv.FormatInt(time.Now().UnixNano(), 10)+".out")
	argv := append([]string{tb.bin("vipctl")}, args...)
	argv = append(argv, "--endpoints", strings.Join(tb.Endpoints(), ","))
	p, err := startProc(tb.Client.NS, "vipctl", out, nil, argv...)
	if err != nil {
		return "", err
	}
	werr := p.Wait(timeout)
	if werr != nil {
		_ = p.Kill()
	} else {
		werr = p.ExitErr()
	}
	b, _ := os.ReadFile(out)
	return string(b), werr
}
