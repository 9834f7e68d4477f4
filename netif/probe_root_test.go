package netif

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// lanOf builds a bridge br0 in a namespace of its own and plugs one veth
// per host into it: port p<i> on the bridge, eth0 (up, no address) in
// hosts[i].
func lanOf(t *testing.T, hosts ...*testNS) *testNS {
	t.Helper()
	lan := newNS(t)
	lan.ip(t, "link", "add", "br0", "type", "bridge")
	lan.ip(t, "link", "set", "br0", "up")
	for i, h := range hosts {
		port := "p" + string(rune('0'+i))
		lan.veth(t, port, h, "eth0")
		lan.ip(t, "link", "set", port, "master", "br0")
	}
	return lan
}

// TestProbeARPAcrossNamespaces: three hosts on a bridge. The prober (no
// IPv4 address of its own) sees no conflict while nobody has the VIP, and
// the bystander receives its probes with sender IP 0.0.0.0; once a third
// host binds the VIP, its kernel answers the probe and ProbeARP reports
// that host's MAC, returning early.
func TestProbeARPAcrossNamespaces(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	nA, nB, nC := newNS(t), newNS(t), newNS(t)
	lanOf(t, nA, nB, nC)
	h, err := NewHandleAt(nA.h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	macOf := func(n *testNS) net.HardwareAddr {
		l, err := n.nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().HardwareAddr
	}
	macA, macC := macOf(nA), macOf(nC)
	nB.ip(t, "addr", "add", "10.99.8.2/24", "dev", "eth0")
	nC.ip(t, "addr", "add", "10.99.8.3/24", "dev", "eth0")
	vip := netip.MustParseAddr("10.99.8.15")

	var rx *packet.Conn
	nB.in(t, func() {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if rx, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil); err != nil {
			t.Fatal(err)
		}
	})
	defer rx.Close()

	const wait = 100 * time.Millisecond
	start := time.Now()
	cs, err := h.ProbeARP(context.Background(), "eth0", []netip.Addr{vip}, wait)
	took := time.Since(start)
	if err != nil || len(cs) != 0 {
		t.Fatalf("ProbeARP with the VIP unused = %v, %v", cs, err)
	}
	t.Logf("no conflict: ProbeARP took %v (wait %v)", took.Round(time.Millisecond), wait)
	if took < wait {
		t.Errorf("ProbeARP returned after %v, before its %v wait", took, wait)
	}

	// The socket also read our own outgoing probes (a packet socket sees
	// them); they have sender IP 0.0.0.0 and would count as "another host
	// probing" if our MAC were not filtered out, so the empty result above
	// covers that filter.

	// The bystander saw probeRounds probes from A for the VIP.
	rx.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1514)
	probes := 0
	for probes < probeRounds {
		n, _, err := rx.ReadFrom(buf)
		if err != nil {
			t.Fatalf("bystander saw %d probes, want %d: %v", probes, probeRounds, err)
		}
		f, err := ParseARPFrame(buf[:n])
		if err != nil || f.TargetIP != vip {
			continue
		}
		if f.Op != arp.OperationRequest || !f.SenderIP.IsUnspecified() || f.SenderMAC.String() != macA.String() ||
			f.Dst.String() != "ff:ff:ff:ff:ff:ff" || f.TargetMAC.String() != "00:00:00:00:00:00" {
			t.Errorf("probe on the wire: %+v", f)
		}
		probes++
	}

	// A third host takes the VIP: conflict.
	nC.ip(t, "addr", "add", vip.String()+"/24", "dev", "eth0")
	start = time.Now()
	cs, err = h.ProbeARP(context.Background(), "eth0", []netip.Addr{vip}, wait)
	took = time.Since(start)
	if err != nil || len(cs) != 1 {
		t.Fatalf("ProbeARP with the VIP on another host = %v, %v; want one conflict", cs, err)
	}
	t.Logf("conflict %v reported after %v", cs[0], took.Round(time.Microsecond))
	if c := cs[0]; c.IP != vip || c.MAC.String() != macC.String() || c.Probing || c.Op != arp.OperationReply {
		t.Errorf("conflict %+v, want a reply from %v for %v", c, macC, vip)
	}
	if took >= wait {
		t.Errorf("ProbeARP took %v; the conflict should end it early", took)
	}

	// The daemon's case: a handle on the caller's own namespace (NewHandle)
	// opens its socket without setns (the hardened unit has no
	// CAP_SYS_ADMIN).
	nA.in(t, func() {
		own, err := NewHandle(testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		cs, err := own.ProbeARP(context.Background(), "eth0", []netip.Addr{vip}, wait)
		if err != nil || len(cs) != 1 || cs[0].MAC.String() != macC.String() {
			t.Errorf("ProbeARP through NewHandle inside the namespace = %v, %v; want the conflict with %v", cs, err, macC)
		}
	})
	if _, err := h.ProbeARP(context.Background(), "nosuch0", []netip.Addr{vip}, wait); err == nil {
		t.Error("ProbeARP on a missing interface succeeded")
	}
}
