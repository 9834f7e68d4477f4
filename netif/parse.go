package netif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
)

// ARPFrame is an Ethernet frame carrying an ARP packet for IPv4 over
// Ethernet (RFC 826), as sent by [Announcer] and as seen on the wire.
type ARPFrame struct {
	Dst, Src  net.HardwareAddr // Ethernet header
	Op        arp.Operation
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// arpFrameLen is the length of an untagged Ethernet header plus an ARP
// packet for IPv4 over Ethernet; frames on the wire may carry padding
// after it.
const arpFrameLen = 14 + 28

var errNotARP = errors.New("netif: not an ARP frame for IPv4 over Ethernet")

// ParseARPFrame parses an untagged Ethernet frame holding an ARP packet
// with hardware type 1 (Ethernet), protocol type 0x0800 (IPv4), hardware
// length 6 and protocol length 4. Bytes after the ARP packet (padding,
// FCS) are ignored. Returned slices do not alias b.
func ParseARPFrame(b []byte) (ARPFrame, error) {
	if len(b) < arpFrameLen {
		return ARPFrame{}, fmt.Errorf("%w: %d bytes, want at least %d", errNotARP, len(b), arpFrameLen)
	}
	if et := binary.BigEndian.Uint16(b[12:14]); et != 0x0806 {
		return ARPFrame{}, fmt.Errorf("%w: EtherType %#04x", errNotARP, et)
	}
	p := b[14:arpFrameLen]
	htype, ptype := binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4])
	if htype != 1 || ptype != 0x0800 || p[4] != 6 || p[5] != 4 {
		return ARPFrame{}, fmt.Errorf("%w: htype %d ptype %#04x hlen %d plen %d", errNotARP, htype, ptype, p[4], p[5])
	}
	mac := func(s []byte) net.HardwareAddr { return append(net.HardwareAddr(nil), s...) }
	return ARPFrame{
		Dst:       mac(b[0:6]),
		Src:       mac(b[6:12]),
		Op:        arp.Operation(binary.BigEndian.Uint16(p[6:8])),
		SenderMAC: mac(p[8:14]),
		SenderIP:  netip.AddrFrom4([4]byte(p[14:18])),
		TargetMAC: mac(p[18:24]),
		TargetIP:  netip.AddrFrom4([4]byte(p[24:28])),
	}, nil
}

// Gratuitous reports whether f announces its sender: a request or reply
// whose sender and target protocol addresses are equal (RFC 5227 §3,
// RFC 5944 §4.6).
func (f ARPFrame) Gratuitous() bool {
	return (f.Op == arp.OperationRequest || f.Op == arp.OperationReply) && f.SenderIP == f.TargetIP
}
