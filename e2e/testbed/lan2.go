package testbed

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// A second LAN, for groups whose addresses sit on two interfaces: bridge
// br1 in the lan namespace, and an eth1 on each web node, connected to it
// through a veth pair whose bridge port is the node's short name + "b".
// It lives in the testbed's namespaces and goes with them.

// LAN2Port is the bridge port of h's eth1.
func LAN2Port(h *Host) string { return h.Short + "b" }

// AddSecondLAN creates br1 and gives every web node an eth1 on it, with
// the host part of its eth0 address in prefix (10.1.0.0/24: web-node-1's
// eth1 is 10.1.0.11).
func (tb *Testbed) AddSecondLAN(prefix netip.Prefix) error {
	if err := tb.LAN.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br1"}}); err != nil {
		return fmt.Errorf("br1: %w", err)
	}
	br, err := tb.LAN.NL.LinkByName("br1")
	if err != nil {
		return err
	}
	if err := tb.LAN.NL.LinkSetUp(br); err != nil {
		return err
	}
	for _, n := range tb.Nodes {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: LAN2Port(&n.Host), MasterIndex: br.Attrs().Index},
			PeerName:      "eth1",
			PeerNamespace: netlink.NsFd(int(n.NS.Handle)),
		}
		if err := tb.LAN.NL.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth eth1 for %s: %w", n.Name, err)
		}
		port, err := tb.LAN.NL.LinkByName(LAN2Port(&n.Host))
		if err != nil {
			return err
		}
		if err := tb.LAN.NL.LinkSetUp(port); err != nil {
			return err
		}
		eth1, err := n.NS.NL.LinkByName("eth1")
		if err != nil {
			return fmt.Errorf("%s: eth1: %w", n.Name, err)
		}
		ip := prefix.Addr().As4()
		ip[3] = n.IP.As4()[3]
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip[:]), Mask: net.CIDRMask(prefix.Bits(), 32)}}
		if err := n.NS.NL.AddrAdd(eth1, addr); err != nil {
			return fmt.Errorf("%s: eth1 addr: %w", n.Name, err)
		}
		if err := n.NS.NL.LinkSetUp(eth1); err != nil {
			return err
		}
	}
	return nil
}

// SetLAN2Up brings h's br1 port up or down: down takes the carrier off
// h's eth1 (its operational state goes down), as a cable pulled.
func (tb *Testbed) SetLAN2Up(h *Host, up bool) error {
	port, err := tb.LAN.NL.LinkByName(LAN2Port(h))
	if err != nil {
		return err
	}
	if up {
		return tb.LAN.NL.LinkSetUp(port)
	}
	return tb.LAN.NL.LinkSetDown(port)
}

// AddrOn reports whether interface ifname of h carries ip.
func (h *Host) AddrOn(ifname string, ip netip.Addr) (bool, error) {
	l, err := h.NS.NL.LinkByName(ifname)
	if err != nil {
		return false, err
	}
	addrs, err := h.NS.NL.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			return true, nil
		}
	}
	return false, nil
}
