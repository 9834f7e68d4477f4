package netif

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vipd/vipd/internal/clock"
	"golang.org/x/net/bpf"
)

// FrameWriter sends complete Ethernet frames (header included, no FCS).
// *packet.Conn opened with packet.Raw satisfies it; tests use a fake.
type FrameWriter interface {
	// WriteTo sends frame b; addr is a *packet.Addr holding the frame's
	// destination hardware address.
	WriteTo(b []byte, addr net.Addr) (int, error)
	Close() error
}

// Announcer sends gratuitous ARP for IPv4 VIPs and unsolicited Neighbor
// Advertisements for IPv6 VIPs on one interface. It is safe for concurrent
// use if its FrameWriter is (a packet socket is).
type Announcer struct {
	ifi  *net.Interface
	mac  net.HardwareAddr
	conn FrameWriter
	log  *slog.Logger
}

// allNodes is the IPv6 all-nodes multicast group (RFC 4291 §2.7.1).
const allNodesStr = "ff02::1"

// allNodesMAC is the Ethernet mapping of ff02::1 (RFC 2464 §7).
func allNodesMAC() net.HardwareAddr { return net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01} }

func broadcastMAC() net.HardwareAddr { return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

func zeroMAC() net.HardwareAddr { return net.HardwareAddr{0, 0, 0, 0, 0, 0} }

// DialAnnouncer opens AF_PACKET sockets on ifname (in the calling thread's
// network namespace) and returns an Announcer writing to them.
//
// It works on an interface without any IPv4 address of its own. arp.Dial
// cannot: arp.New scans the interface's addresses and fails with "no IPv4
// address available for interface" when there is none. So the Announcer
// builds the Ethernet frames itself and writes them to raw packet sockets,
// one per EtherType (ARP and IPv6) so the kernel tags each frame with its
// true protocol. The sockets never read: a BPF filter drops every incoming
// frame before it is queued.
func DialAnnouncer(ifname string, log *slog.Logger) (*Announcer, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrNoInterface, ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%w: %q has %q", errNoHardwareAddr, ifname, ifi.HardwareAddr)
	}
	drop, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return nil, fmt.Errorf("netif: assemble drop filter: %w", err)
	}
	cfg := &packet.Config{Filter: drop}
	c4, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), cfg)
	if err != nil {
		return nil, fmt.Errorf("netif: open ARP packet socket on %q: %w", ifname, err)
	}
	c6, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeIPv6), cfg)
	if err != nil {
		c4.Close()
		return nil, fmt.Errorf("netif: open IPv6 packet socket on %q: %w", ifname, err)
	}
	return NewAnnouncer(ifi, &etherMux{arp: c4, ipv6: c6}, log), nil
}

// NewAnnouncer returns an Announcer that writes frames for ifi to conn.
// The Announcer owns conn and closes it on Close.
func NewAnnouncer(ifi *net.Interface, conn FrameWriter, log *slog.Logger) *Announcer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Announcer{ifi: ifi, mac: ifi.HardwareAddr, conn: conn, log: log}
}

// Close closes the underlying sockets.
func (a *Announcer) Close() error {
	if err := a.conn.Close(); err != nil {
		return fmt.Errorf("netif: close announcer on %q: %w", a.ifi.Name, err)
	}
	return nil
}

// Gate reports whether a frame may leave now. An Announcer checks it
// immediately before every frame it writes: a holder's gate closes when
// its fence passes or its VIP is no longer bound, so an announcer that was
// stalled (SIGSTOP, a paused VM, a slow socket) never points clients back
// at a node that has lost the VIP. A nil Gate is always open.
type Gate func() bool

// Announce sends one announcement round for ip, each frame only while gate
// is open; a closed gate stops the round with an error wrapping
// ErrGateClosed.
//
// IPv4: two frames, both to the Ethernet broadcast address, both with
// sender MAC = the interface's MAC and sender IP = target IP = ip:
//  1. an ARP request with target MAC 00:00:00:00:00:00 (the ARP
//     Announcement of RFC 5227 §3);
//  2. an ARP reply with target MAC = the interface's MAC (the form of
//     `arping -A`), for older stacks that only update their cache from
//     replies.
//
// Receivers that already have an entry for ip update it to our MAC.
//
// IPv6: one unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) from ip to
// ff02::1 with the Override flag set, Solicited and Router clear, and a
// Target Link-Layer Address option carrying the interface's MAC. Its
// source is ip itself (an address assigned to the interface, as §4.4
// requires), so no link-local address is needed; hop limit 255.
//
// ARP frames are zero-padded to the 60-byte Ethernet minimum. Both frames
// of a round are attempted; the first error is returned.
func (a *Announcer) Announce(ip netip.Addr, gate Gate) error {
	ip = ip.Unmap()
	frames, err := a.frames(ip)
	if err != nil {
		return err
	}
	var first error
	for _, f := range frames {
		if gate != nil && !gate() {
			return fmt.Errorf("%w: %v on %q", ErrGateClosed, ip, a.ifi.Name)
		}
		dst := net.HardwareAddr(f[0:6])
		if _, err := a.conn.WriteTo(f, &packet.Addr{HardwareAddr: dst}); err != nil && first == nil {
			first = fmt.Errorf("netif: announce %v on %q: %w", ip, a.ifi.Name, err)
		}
	}
	if first == nil {
		a.log.Debug("announced", "interface", a.ifi.Name, "address", ip)
	}
	return first
}

// frames builds the frames of one round for ip.
func (a *Announcer) frames(ip netip.Addr) ([][]byte, error) {
	if len(a.mac) != 6 {
		return nil, fmt.Errorf("%w: %q has %q", errNoHardwareAddr, a.ifi.Name, a.mac)
	}
	switch {
	case ip.Is4():
		req, err := garpFrame(arp.OperationRequest, a.mac, ip, zeroMAC())
		if err != nil {
			return nil, fmt.Errorf("netif: build ARP request for %v on %q: %w", ip, a.ifi.Name, err)
		}
		rep, err := garpFrame(arp.OperationReply, a.mac, ip, a.mac)
		if err != nil {
			return nil, fmt.Errorf("netif: build ARP reply for %v on %q: %w", ip, a.ifi.Name, err)
		}
		return [][]byte{req, rep}, nil
	case ip.Is6() && !ip.IsLinkLocalUnicast() && ip.Zone() == "" && !ip.IsMulticast() && !ip.IsUnspecified():
		na, err := naFrame(a.mac, ip)
		if err != nil {
			return nil, fmt.Errorf("netif: build neighbor advertisement for %v on %q: %w", ip, a.ifi.Name, err)
		}
		return [][]byte{na}, nil
	default:
		return nil, fmt.Errorf("netif: cannot announce %v on %q: not a unicast IPv4 or global IPv6 address", ip, a.ifi.Name)
	}
}

// garpFrame builds a broadcast Ethernet frame carrying an ARP packet with
// sender = (mac, ip) and target = (tha, ip).
func garpFrame(op arp.Operation, mac net.HardwareAddr, ip netip.Addr, tha net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(op, mac, ip, tha, ip)
	if err != nil {
		return nil, err
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := &ethernet.Frame{
		Destination: broadcastMAC(),
		Source:      mac,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     pb,
	}
	return f.MarshalBinary()
}

// naFrame builds an Ethernet frame carrying an IPv6 packet carrying an
// unsolicited Neighbor Advertisement for ip.
func naFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{
			Direction: ndp.Target,
			Addr:      mac,
		}},
	}
	allNodes := netip.MustParseAddr(allNodesStr)
	icmp, err := ndp.MarshalMessageChecksum(na, ip, allNodes)
	if err != nil {
		return nil, err
	}
	pkt := make([]byte, 40+len(icmp))
	pkt[0] = 6 << 4 // version 6, traffic class 0, flow label 0
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp)))
	pkt[6] = 58  // next header: ICMPv6
	pkt[7] = 255 // hop limit, required by RFC 4861 §7.1.2
	src, dst := ip.As16(), allNodes.As16()
	copy(pkt[8:24], src[:])
	copy(pkt[24:40], dst[:])
	copy(pkt[40:], icmp)
	f := &ethernet.Frame{
		Destination: allNodesMAC(),
		Source:      mac,
		EtherType:   ethernet.EtherTypeIPv6,
		Payload:     pkt,
	}
	return f.MarshalBinary()
}

// etherMux sends each frame on the packet socket bound to its EtherType.
type etherMux struct {
	arp, ipv6 FrameWriter
}

func (m *etherMux) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) < 14 {
		return 0, errors.New("netif: frame shorter than an Ethernet header")
	}
	switch et := ethernet.EtherType(binary.BigEndian.Uint16(b[12:14])); et {
	case ethernet.EtherTypeARP:
		return m.arp.WriteTo(b, addr)
	case ethernet.EtherTypeIPv6:
		return m.ipv6.WriteTo(b, addr)
	default:
		return 0, fmt.Errorf("netif: no socket for EtherType %#04x", uint16(et))
	}
}

func (m *etherMux) Close() error {
	return errors.Join(m.arp.Close(), m.ipv6.Close())
}

// Burst runs count rounds of send: the first at once, then one every
// interval on clk, until count rounds ran or ctx is done (checked before
// every round, so a cancelled ctx sends nothing more). A failing round does
// not stop the burst (the next may succeed, e.g. once a link is up). It
// returns the number of rounds whose send returned nil and the first error.
func Burst(ctx context.Context, clk clock.Clock, count int, interval time.Duration, send func() error) (int, error) {
	return Schedule(ctx, clk, count, interval, 0, send)
}

// Schedule runs a group's whole announcement schedule: a [Burst] of count
// rounds, one every interval starting at once, then, if refresh > 0, one
// more round every refresh (counted from the previous round) for as long
// as ctx lives. With refresh 0 it returns when the burst is over;
// otherwise it returns only once ctx is done. Like Burst it checks ctx
// before every round, keeps going after a failing round (send should log
// its own errors if they matter per round), and returns the number of
// rounds whose send returned nil and the first error. Every timer it arms
// is stopped before it returns.
func Schedule(ctx context.Context, clk clock.Clock, count int, interval, refresh time.Duration, send func() error) (int, error) {
	sent := 0
	var first error
	var t clock.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for round := 0; round < count || refresh > 0; round++ {
		if round > 0 || count == 0 { // the burst's first round goes at once
			wait := interval
			if round >= count {
				wait = refresh
			}
			if t == nil {
				t = clk.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			select {
			case <-ctx.Done():
				return sent, first
			case <-t.C():
			}
		}
		if ctx.Err() != nil {
			return sent, first
		}
		if err := send(); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	return sent, first
}
