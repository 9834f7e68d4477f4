package netif

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Pure tests of Watch's edge detection, fed synthetic netlink updates.

func linkUpd(typ uint16, idx int, name string, flags uint32, oper netlink.LinkOperState) netlink.LinkUpdate {
	u := netlink.LinkUpdate{Header: unix.NlMsghdr{Type: typ}}
	u.IfInfomsg = nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Index: int32(idx)}}
	u.Link = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx, Name: name, RawFlags: flags, OperState: oper}}
	return u
}

func addrUpd(idx int, p string, isNew bool) netlink.AddrUpdate {
	pp := netip.MustParsePrefix(p)
	return netlink.AddrUpdate{
		LinkIndex:   idx,
		NewAddr:     isNew,
		LinkAddress: net.IPNet{IP: net.IP(pp.Addr().AsSlice()), Mask: net.CIDRMask(pp.Bits(), pp.Addr().BitLen())},
	}
}

func TestWatcherEdges(t *testing.T) {
	vip := netip.MustParsePrefix("192.168.20.15/24")
	w := &watcher{
		want:  map[string]bool{"ens160": true},
		names: map[int]string{2: "ens160", 3: "eth9"},
		up:    map[string]bool{"ens160": true},
		addrs: map[string]map[netip.Prefix]bool{"ens160": {}},
	}
	const up = unix.IFF_UP
	steps := []struct {
		name string
		run  func() []Event
		want []Event
	}{
		{"link still up: nothing", func() []Event { return w.link(linkUpd(unix.RTM_NEWLINK, 2, "ens160", up, netlink.OperUp)) }, nil},
		{"add", func() []Event { return w.addr(addrUpd(2, "192.168.20.15/24", true)) },
			[]Event{{AddrAdded, "ens160", vip}}},
		{"refresh is not an event", func() []Event { return w.addr(addrUpd(2, "192.168.20.15/24", true)) }, nil},
		{"other interface ignored", func() []Event { return w.addr(addrUpd(3, "10.0.0.1/8", true)) }, nil},
		{"carrier lost", func() []Event {
			return w.link(linkUpd(unix.RTM_NEWLINK, 2, "ens160", up, netlink.OperLowerLayerDown))
		}, []Event{{Kind: LinkDown, Interface: "ens160"}}},
		{"admin down while already down: nothing", func() []Event {
			return w.link(linkUpd(unix.RTM_NEWLINK, 2, "ens160", 0, netlink.OperDown))
		}, nil},
		{"unknown operstate with IFF_UP counts as up", func() []Event {
			return w.link(linkUpd(unix.RTM_NEWLINK, 2, "ens160", up, netlink.OperUnknown))
		}, []Event{{Kind: LinkUp, Interface: "ens160"}}},
		{"remove", func() []Event { return w.addr(addrUpd(2, "192.168.20.15/24", false)) },
			[]Event{{AddrRemoved, "ens160", vip}}},
		{"remove again: nothing", func() []Event { return w.addr(addrUpd(2, "192.168.20.15/24", false)) }, nil},
		{"re-add", func() []Event { return w.addr(addrUpd(2, "192.168.20.15/24", true)) },
			[]Event{{AddrAdded, "ens160", vip}}},
		{"renamed away: addresses and link gone", func() []Event {
			return w.link(linkUpd(unix.RTM_NEWLINK, 2, "old0", up, netlink.OperUp))
		}, []Event{{AddrRemoved, "ens160", vip}, {Kind: LinkDown, Interface: "ens160"}}},
		{"another link renamed to the watched name", func() []Event {
			return w.link(linkUpd(unix.RTM_NEWLINK, 3, "ens160", up, netlink.OperUp))
		}, []Event{{Kind: LinkUp, Interface: "ens160"}}},
		{"deleted", func() []Event { return w.link(linkUpd(unix.RTM_DELLINK, 3, "ens160", up, netlink.OperUp)) },
			[]Event{{Kind: LinkDown, Interface: "ens160"}}},
	}
	for _, s := range steps {
		if got := s.run(); !reflect.DeepEqual(got, s.want) {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
}

func TestEventKindString(t *testing.T) {
	for k, s := range map[EventKind]string{AddrAdded: "AddrAdded", AddrRemoved: "AddrRemoved", LinkUp: "LinkUp", LinkDown: "LinkDown", 0: "EventKind(0)"} {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), s)
		}
	}
	ev := Event{Kind: AddrAdded, Interface: "ens160", Prefix: netip.MustParsePrefix("192.168.20.15/24")}
	if ev.String() != "AddrAdded ens160 192.168.20.15/24" {
		t.Errorf("Event.String() = %q", ev.String())
	}
}

func TestPrefixOf(t *testing.T) {
	for _, c := range []struct {
		n    *net.IPNet
		want string
	}{
		{&net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(24, 32)}, "10.0.0.1/24"},
		{&net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.CIDRMask(32, 32)}, "10.0.0.1/32"},
		{&net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(120, 128)}, "10.0.0.1/24"},
		{&net.IPNet{IP: net.ParseIP("2001:db8::15"), Mask: net.CIDRMask(64, 128)}, "2001:db8::15/64"},
	} {
		p, ok := prefixOf(c.n)
		if !ok || p.String() != c.want {
			t.Errorf("prefixOf(%v) = %v, %v; want %s", c.n, p, ok, c.want)
		}
	}
	if _, ok := prefixOf(nil); ok {
		t.Error("prefixOf(nil) ok")
	}
}
