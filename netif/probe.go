package netif

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ProbeConn sends and receives Ethernet frames. *packet.Conn opened with
// packet.Raw for EtherType ARP satisfies it; tests use a fake.
type ProbeConn interface {
	FrameWriter
	ReadFrom(b []byte) (int, net.Addr, error)
	SetReadDeadline(t time.Time) error
}

// Conflict is another host's claim on an address, seen while probing.
type Conflict struct {
	IP  netip.Addr
	MAC net.HardwareAddr // the other host's sender hardware address
	Op  arp.Operation
	// Probing is true when the other host was itself probing for IP
	// (sender IP 0.0.0.0) rather than using it.
	Probing bool
}

// String formats the conflict for logs.
func (c Conflict) String() string {
	how := "answers for"
	if c.Probing {
		how = "probes for"
	}
	return fmt.Sprintf("%v %s %v (ARP %v)", c.MAC, how, c.IP, c.Op)
}

// probeRounds is how many probes go out per address within the wait: one
// at once and one halfway, so a single lost frame does not hide a
// conflict. (RFC 5227 sends PROBE_NUM = 3 over 1–2 s; vipd compresses the
// probe into its failover budget.)
const probeRounds = 2

// Prober sends ARP probes (RFC 5227 §2.1.1) on one interface and reports
// other hosts that answer for, or probe for, the probed addresses.
type Prober struct {
	ifi  *net.Interface
	mac  net.HardwareAddr
	own  map[string]bool // our MACs (as strings): frames from them are ours
	conn ProbeConn
	log  *slog.Logger
}

// DialProber opens an AF_PACKET socket for ARP on ifname, in the calling
// thread's network namespace. Like [DialAnnouncer] it works on an
// interface without an IPv4 address of its own. Frames whose sender or
// source MAC is ifname's or one in own are never conflicts (the socket
// sees our own outgoing probes, and our kernel may answer for an address
// bound on another of our interfaces).
func DialProber(ifname string, own []net.HardwareAddr, log *slog.Logger) (*Prober, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrNoInterface, ifname, err)
	}
	return dialProber(ifi, own, log)
}

func dialProber(ifi *net.Interface, own []net.HardwareAddr, log *slog.Logger) (*Prober, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%w: %q has %q", errNoHardwareAddr, ifi.Name, ifi.HardwareAddr)
	}
	c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("netif: open ARP packet socket on %q: %w", ifi.Name, err)
	}
	return NewProber(ifi, c, own, log), nil
}

// NewProber returns a Prober that probes from ifi through conn. The Prober
// owns conn and closes it on Close.
func NewProber(ifi *net.Interface, conn ProbeConn, own []net.HardwareAddr, log *slog.Logger) *Prober {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Prober{ifi: ifi, mac: ifi.HardwareAddr, own: map[string]bool{ifi.HardwareAddr.String(): true}, conn: conn, log: log}
	for _, m := range own {
		p.own[m.String()] = true
	}
	return p
}

// Close closes the socket.
func (p *Prober) Close() error {
	if err := p.conn.Close(); err != nil {
		return fmt.Errorf("netif: close prober on %q: %w", p.ifi.Name, err)
	}
	return nil
}

// Probe sends ARP probes for every address of ips (all IPv4) and listens
// for up to wait, or until ctx is done, or until every address has a
// conflict. A probe is a broadcast ARP request with sender MAC = the
// interface's MAC, sender IP 0.0.0.0, target MAC zero and target IP = the
// address, so no neighbour cache learns anything from it; probeRounds
// probes per address go out, the first at once.
//
// A conflict is an ARP request or reply from a MAC that is not ours with
// sender IP = a probed address (a host using it), or an ARP probe from a
// MAC that is not ours for a probed address (a host about to claim it).
// Probe returns the first conflict seen per address, in the order seen.
// Send and receive errors end the probe with the conflicts so far and an
// error; a passed wait is not an error.
func (p *Prober) Probe(ctx context.Context, ips []netip.Addr, wait time.Duration) ([]Conflict, error) {
	want := make(map[netip.Addr]bool, len(ips))
	var frames [][]byte
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.Is4() || ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("netif: cannot ARP-probe %v on %q: not a unicast IPv4 address", ip, p.ifi.Name)
		}
		f, err := probeFrame(p.mac, ip)
		if err != nil {
			return nil, fmt.Errorf("netif: build ARP probe for %v on %q: %w", ip, p.ifi.Name, err)
		}
		want[ip] = true
		frames = append(frames, f)
	}
	if len(want) == 0 {
		return nil, nil
	}
	// A cancelled ctx ends a blocked read at once.
	stop := context.AfterFunc(ctx, func() { _ = p.conn.SetReadDeadline(time.Now()) })
	defer stop()

	start := time.Now()
	end := start.Add(wait)
	seen := map[netip.Addr]bool{}
	var out []Conflict
	buf := make([]byte, 1514)
	for round := 0; round < probeRounds; round++ {
		for _, f := range frames {
			if _, err := p.conn.WriteTo(f, &packet.Addr{HardwareAddr: broadcastMAC()}); err != nil {
				return out, fmt.Errorf("netif: send ARP probe on %q: %w", p.ifi.Name, err)
			}
		}
		phaseEnd := start.Add(wait * time.Duration(round+1) / probeRounds)
		if round == probeRounds-1 {
			phaseEnd = end
		}
		if err := p.conn.SetReadDeadline(phaseEnd); err != nil {
			return out, fmt.Errorf("netif: ARP probe on %q: set deadline: %w", p.ifi.Name, err)
		}
		for {
			if ctx.Err() != nil {
				return out, nil
			}
			n, _, err := p.conn.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
					if ctx.Err() != nil {
						return out, nil
					}
					break // next round, or done
				}
				return out, fmt.Errorf("netif: ARP probe on %q: read: %w", p.ifi.Name, err)
			}
			c, ok := p.classify(buf[:n], want)
			if !ok || seen[c.IP] {
				continue
			}
			seen[c.IP] = true
			out = append(out, c)
			p.log.Debug("ARP probe conflict", "interface", p.ifi.Name, "conflict", c.String())
			if len(seen) == len(want) {
				return out, nil
			}
		}
	}
	return out, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// classify reports whether frame b is another host's claim on one of want.
func (p *Prober) classify(b []byte, want map[netip.Addr]bool) (Conflict, bool) {
	f, err := ParseARPFrame(b)
	if err != nil || p.own[f.SenderMAC.String()] || p.own[f.Src.String()] {
		return Conflict{}, false
	}
	if f.Op != arp.OperationRequest && f.Op != arp.OperationReply {
		return Conflict{}, false
	}
	switch {
	case want[f.SenderIP]:
		return Conflict{IP: f.SenderIP, MAC: f.SenderMAC, Op: f.Op}, true
	case f.SenderIP.IsUnspecified() && f.Op == arp.OperationRequest && want[f.TargetIP]:
		return Conflict{IP: f.TargetIP, MAC: f.SenderMAC, Op: f.Op, Probing: true}, true
	}
	return Conflict{}, false
}

// probeFrame builds a broadcast ARP probe for ip from mac.
func probeFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	pk, err := arp.NewPacket(arp.OperationRequest, mac, netip.IPv4Unspecified(), zeroMAC(), ip)
	if err != nil {
		return nil, err
	}
	pb, err := pk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := &ethernet.Frame{Destination: broadcastMAC(), Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	return f.MarshalBinary()
}

// ProbeARP runs a [Prober] on ifname in the handle's network namespace:
// it opens a packet socket there, probes ips for up to wait (see
// [Prober.Probe]) and closes the socket. Every MAC of the namespace's
// links counts as ours.
func (h *Handle) ProbeARP(ctx context.Context, ifname string, ips []netip.Addr, wait time.Duration) ([]Conflict, error) {
	p, err := h.dialProber(ifname)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Probe(ctx, ips, wait)
}

func (h *Handle) dialProber(ifname string) (*Prober, error) {
	if err := h.acquire(); err != nil {
		return nil, err
	}
	defer h.release()
	var l netlink.Link
	var links []netlink.Link
	var err error
	h.exec(func() {
		if l, err = h.link(ifname); err == nil {
			if links, err = h.nl.LinkList(); err != nil {
				err = fmt.Errorf("netif: list links: %w", err)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	var own []net.HardwareAddr
	for _, x := range links {
		if len(x.Attrs().HardwareAddr) == 6 {
			own = append(own, x.Attrs().HardwareAddr)
		}
	}
	a := l.Attrs()
	ifi := &net.Interface{Index: a.Index, MTU: a.MTU, Name: a.Name, HardwareAddr: a.HardwareAddr, Flags: a.Flags}
	var p *Prober
	err = h.inNetns(func() error {
		var err error
		p, err = dialProber(ifi, own, h.log)
		return err
	})
	return p, err
}

// inNetns runs f on a locked thread switched into the handle's namespace,
// for opening sockets there (a socket keeps the namespace it was created
// in). If the thread cannot switch back it stays locked, so Go discards it
// when f's goroutine ends and nothing else runs in the wrong namespace.
func (h *Handle) inNetns(f func() error) error {
	if !h.ns.IsOpen() {
		return f() // vipd's own namespace: no setns (needs CAP_SYS_ADMIN)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netif: get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netif: enter network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netif: return to network namespace: %w", err))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
