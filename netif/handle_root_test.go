package netif

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/internal/clock"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// nsHandle returns a Handle on a fresh namespace holding veth pair va/vb.
func nsHandle(t *testing.T) (*testNS, *Handle) {
	t.Helper()
	n := newNS(t)
	n.veth(t, "va", nil, "vb")
	h, err := NewHandleAt(n.h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return n, h
}

// kernelAddr returns the kernel's record of p on ifname, or nil.
func kernelAddr(t *testing.T, n *testNS, ifname string, p netip.Prefix) *netlink.Addr {
	t.Helper()
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	as, err := n.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for i := range as {
		if q, ok := prefixOf(as[i].IPNet); ok && q == p {
			return &as[i]
		}
	}
	return nil
}

// TestReplaceLifetimeExpires: the dead-man's switch. An address bound with
// a 2 s lifetime disappears from the kernel on its own, for both families.
func TestReplaceLifetimeExpires(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	v4 := netip.MustParsePrefix("10.99.0.15/24")
	v6 := netip.MustParsePrefix("2001:db8:99::15/64")

	start := time.Now()
	for _, p := range []netip.Prefix{v4, v6} {
		added, err := h.Replace("va", p, 2*time.Second+900*time.Millisecond) // floored to 2 s
		if err != nil || !added {
			t.Fatalf("Replace(%v) = %v, %v; want added", p, added, err)
		}
		ka := kernelAddr(t, n, "va", p)
		if ka == nil {
			t.Fatalf("%v not in the kernel after Replace", p)
		}
		if ka.ValidLft < 1 || ka.ValidLft > 2 || ka.PreferedLft < 1 || ka.PreferedLft > 2 {
			t.Errorf("%v: valid_lft %d preferred_lft %d, want 2 (floored)", p, ka.ValidLft, ka.PreferedLft)
		}
		if ka.Flags&unix.IFA_F_PERMANENT != 0 {
			t.Errorf("%v is permanent (flags %#x)", p, ka.Flags)
		}
		if p.Addr().Is6() && (ka.Flags&unix.IFA_F_NODAD == 0 || ka.Flags&unix.IFA_F_TENTATIVE != 0) {
			t.Errorf("%v: flags %#x, want nodad and not tentative", p, ka.Flags)
		}
		if ok, err := h.Has("va", p); err != nil || !ok {
			t.Fatalf("Has(%v) = %v, %v", p, ok, err)
		}
	}
	gone := map[netip.Prefix]time.Duration{}
	for time.Since(start) < 4*time.Second && len(gone) < 2 {
		for _, p := range []netip.Prefix{v4, v6} {
			if _, done := gone[p]; done {
				continue
			}
			ok, err := h.Has("va", p)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				gone[p] = time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range []netip.Prefix{v4, v6} {
		d, ok := gone[p]
		if !ok {
			t.Errorf("%v still present 4 s after a 2 s lifetime", p)
			continue
		}
		t.Logf("%v with valid_lft 2 vanished after %v", p, d.Round(time.Millisecond))
		if d < 1900*time.Millisecond {
			t.Errorf("%v vanished after %v, before its 2 s lifetime", p, d)
		}
	}
}

// TestReplaceRefreshRemoveAndErrors: a refresh keeps the address (no
// AddrRemoved, added=false) and extends its life; Remove is idempotent;
// short lifetimes and missing interfaces are refused.
func TestReplaceRefreshRemoveAndErrors(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	vip := netip.MustParsePrefix("10.99.1.15/24")

	// Refused before anything is touched.
	if _, err := h.Replace("va", vip, 999*time.Millisecond); !errors.Is(err, ErrLifetimeTooShort) {
		t.Fatalf("Replace(999ms) = %v, want ErrLifetimeTooShort", err)
	}
	if _, err := h.Replace("nosuch0", vip, 0); !errors.Is(err, ErrLifetimeTooShort) {
		t.Fatalf("Replace(nosuch0, 0) = %v, want ErrLifetimeTooShort", err)
	}
	if ok, err := h.Has("va", vip); err != nil || ok {
		t.Fatalf("after refused Replace: Has = %v, %v; want false", ok, err)
	}
	if _, err := h.Replace("nosuch0", vip, 2*time.Second); !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("Replace(nosuch0) = %v, want ErrNoInterface naming it", err)
	}
	if _, err := h.Remove("nosuch0", vip); !errors.Is(err, ErrNoInterface) {
		t.Fatalf("Remove(nosuch0) = %v, want ErrNoInterface", err)
	}
	if _, err := h.Has("nosuch0", vip); !errors.Is(err, ErrNoInterface) {
		t.Fatalf("Has(nosuch0) = %v, want ErrNoInterface", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := h.Watch(ctx, []string{"va"})
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	added, err := h.Replace("va", vip, 2*time.Second)
	if err != nil || !added {
		t.Fatalf("first Replace = %v, %v; want added", added, err)
	}
	expectEvent(t, evs, Event{Kind: AddrAdded, Interface: "va", Prefix: vip})

	// Refresh twice, 1 s apart, each well before the previous lifetime
	// could run out, with a longer lifetime the second time.
	for i, lft := range []time.Duration{2 * time.Second, 4 * time.Second} {
		time.Sleep(time.Second - time.Since(t0)%time.Second)
		added, err := h.Replace("va", vip, lft)
		if err != nil || added {
			t.Fatalf("refresh %d = %v, %v; want added=false", i, added, err)
		}
		ka := kernelAddr(t, n, "va", vip)
		if ka == nil {
			t.Fatalf("refresh %d: address missing", i)
		}
		if want := int(lft / time.Second); ka.ValidLft < want-1 || ka.ValidLft > want {
			t.Errorf("refresh %d: valid_lft %d, want %d", i, ka.ValidLft, want)
		}
	}
	// The original 2 s lifetime ended ~1 s ago; the address lives on.
	for time.Since(t0) < 3500*time.Millisecond {
		time.Sleep(100 * time.Millisecond)
		if ok, err := h.Has("va", vip); err != nil || !ok {
			t.Fatalf("refreshed address gone after %v (%v)", time.Since(t0), err)
		}
	}
	expectNoEvent(t, evs, 50*time.Millisecond) // not even AddrAdded for a refresh

	removed, err := h.Remove("va", vip)
	if err != nil || !removed {
		t.Fatalf("Remove = %v, %v; want removed", removed, err)
	}
	// The first AddrRemoved is this one: the refreshes never removed it.
	expectEvent(t, evs, Event{Kind: AddrRemoved, Interface: "va", Prefix: vip})
	removed, err = h.Remove("va", vip)
	if err != nil || removed {
		t.Fatalf("second Remove = %v, %v; want false, nil", removed, err)
	}
	for _, p := range []string{"2001:db8:1::15/64", "10.99.1.16/32"} {
		if removed, err := h.Remove("va", netip.MustParsePrefix(p)); err != nil || removed {
			t.Fatalf("Remove(never added %s) = %v, %v", p, removed, err)
		}
	}

	// RemoveIPs removes the VIP whatever prefix length it was bound with.
	if _, err := h.Replace("va", netip.MustParsePrefix("10.99.1.15/32"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if gone, err := h.RemoveIPs([]netip.Addr{vip.Addr()}); err != nil || len(gone) != 1 {
		t.Fatalf("RemoveIPs = %v, %v; want one address", gone, err)
	}
	if ps, err := h.Addrs("va"); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range ps {
			if p.Addr() == vip.Addr() {
				t.Fatalf("%v still bound after RemoveIPs", p)
			}
		}
	}
}

// nextEvent returns the next event, skipping IPv6 link-local address
// events: the kernel adds and removes those by itself as links go up and
// down.
func nextEvent(evs <-chan Event, wait time.Duration) (Event, bool, bool) {
	timeout := time.After(wait)
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				return Event{}, false, true
			}
			if ev.Prefix.IsValid() && ev.Prefix.Addr().IsLinkLocalUnicast() {
				continue
			}
			return ev, true, true
		case <-timeout:
			return Event{}, false, false
		}
	}
}

func expectEvent(t *testing.T, evs <-chan Event, want Event) {
	t.Helper()
	ev, open, got := nextEvent(evs, 3*time.Second)
	switch {
	case !got:
		t.Fatalf("no event within 3 s, want %v", want)
	case !open:
		t.Fatalf("watch closed, want %v", want)
	case ev != want:
		t.Fatalf("event %v, want %v", ev, want)
	}
}

func expectNoEvent(t *testing.T, evs <-chan Event, wait time.Duration) {
	t.Helper()
	if ev, open, got := nextEvent(evs, wait); got {
		t.Fatalf("unexpected event %v (channel open: %v)", ev, open)
	}
}

// TestNewHandleCurrentNamespace: NewHandle pins the calling thread's
// namespace, so it keeps working there after the thread moves back.
func TestNewHandleCurrentNamespace(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n := newNS(t)
	n.veth(t, "va", nil, "vb")
	var h *Handle
	n.in(t, func() {
		var err error
		h, err = NewHandle(testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
	})
	up, err := h.LinkUp("va")
	if err != nil || !up {
		t.Fatalf("LinkUp(va) = %v, %v", up, err)
	}

	// After Close nothing reaches the kernel (a closed netlink.Handle
	// would fall back to the caller's namespace, here the host's).
	h.Close()
	h.Close() // idempotent
	vip := netip.MustParsePrefix("10.99.5.1/32")
	if _, err := h.Replace("va", vip, 5*time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Replace after Close = %v, want ErrClosed", err)
	}
	if _, err := h.Remove("va", vip); !errors.Is(err, ErrClosed) {
		t.Errorf("Remove after Close = %v, want ErrClosed", err)
	}
	if _, err := h.Has("va", vip); !errors.Is(err, ErrClosed) {
		t.Errorf("Has after Close = %v, want ErrClosed", err)
	}
	if _, err := h.LinkUp("va"); !errors.Is(err, ErrClosed) {
		t.Errorf("LinkUp after Close = %v, want ErrClosed", err)
	}
	if _, err := h.Watch(context.Background(), []string{"va"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close = %v, want ErrClosed", err)
	}
}

// TestWatchAddrAndLinkEvents: addresses changed by another handle and
// `ip link set` on the veth are reported; LinkUp follows the operational
// state (peer down = not up); cancel closes the channel and stops every
// goroutine. Not parallel, so the goroutine check sees only its own.
func TestWatchAddrAndLinkEvents(t *testing.T) {
	requireRoot(t)
	n, h := nsHandle(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := h.Watch(ctx, []string{"va", "vc"})
	if err != nil {
		t.Fatal(err)
	}

	// Another handle (the test's raw netlink handle) adds and removes.
	p := netip.MustParsePrefix("10.99.2.7/24")
	l, err := n.nl.LinkByName("va")
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(24, 32)}}
	if err := n.nl.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, evs, Event{Kind: AddrAdded, Interface: "va", Prefix: p})
	// Not watched: nothing.
	lb, _ := n.nl.LinkByName("vb")
	if err := n.nl.AddrAdd(lb, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 2, 8), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := n.nl.AddrDel(l, a); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, evs, Event{Kind: AddrRemoved, Interface: "va", Prefix: p})

	n.ip(t, "link", "set", "va", "down")
	expectEvent(t, evs, Event{Kind: LinkDown, Interface: "va"})
	if up, err := h.LinkUp("va"); err != nil || up {
		t.Fatalf("LinkUp after down = %v, %v", up, err)
	}
	n.ip(t, "link", "set", "va", "up")
	expectEvent(t, evs, Event{Kind: LinkUp, Interface: "va"})
	if up, err := h.LinkUp("va"); err != nil || !up {
		t.Fatalf("LinkUp after up = %v, %v", up, err)
	}

	// The peer going down takes va's carrier: va is admin up but not up.
	n.ip(t, "link", "set", "vb", "down")
	expectEvent(t, evs, Event{Kind: LinkDown, Interface: "va"})
	vaLink, _ := n.nl.LinkByName("va")
	t.Logf("va with peer down: flags %v operstate %v", vaLink.Attrs().Flags, vaLink.Attrs().OperState)
	if up, err := h.LinkUp("va"); err != nil || up {
		t.Fatalf("LinkUp with peer down = %v, %v; want false", up, err)
	}
	n.ip(t, "link", "set", "vb", "up")
	expectEvent(t, evs, Event{Kind: LinkUp, Interface: "va"})

	// An interface created after Watch started is picked up by name.
	n.ip(t, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
	expectEvent(t, evs, Event{Kind: LinkDown, Interface: "vc"})
	n.ip(t, "addr", "add", "10.99.3.1/24", "dev", "vc")
	expectEvent(t, evs, Event{Kind: AddrAdded, Interface: "vc", Prefix: netip.MustParsePrefix("10.99.3.1/24")})
	n.ip(t, "link", "del", "vc")
	expectEvent(t, evs, Event{Kind: AddrRemoved, Interface: "vc", Prefix: netip.MustParsePrefix("10.99.3.1/24")})
	expectNoEvent(t, evs, 100*time.Millisecond)

	cancel()
	select {
	case _, ok := <-evs:
		for ok {
			_, ok = <-evs
		}
	case <-time.After(3 * time.Second):
		t.Fatal("watch channel not closed after cancel")
	}
	// Every goroutine Watch started, ours and netlink's, has stopped.
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "vishvananda/netlink.") && !strings.Contains(stacks, "netif.(*Handle).Watch") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after cancel:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDialAnnouncerWithoutIPv4: on a veth end with no IPv4 address of its
// own (where arp.Dial fails), DialAnnouncer's frames reach the peer, in
// another namespace, as an ARP request and reply for the VIP from our MAC,
// and an unsolicited NA for an IPv6 VIP.
func TestDialAnnouncerWithoutIPv4(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	na, nb := newNS(t), newNS(t)
	na.veth(t, "va", nb, "vb")
	h, err := NewHandleAt(na.h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ps, err := h.Addrs("va")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Addr().Is4() {
			t.Fatalf("va has IPv4 address %v; the test needs none", p)
		}
	}
	vaLink, err := na.nl.LinkByName("va")
	if err != nil {
		t.Fatal(err)
	}
	mac := vaLink.Attrs().HardwareAddr

	var rx4, rx6 *packet.Conn
	nb.in(t, func() {
		ifi, err := net.InterfaceByName("vb")
		if err != nil {
			t.Fatal(err)
		}
		if rx4, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil); err != nil {
			t.Fatal(err)
		}
		if rx6, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil); err != nil {
			t.Fatal(err)
		}
	})
	defer rx4.Close()
	defer rx6.Close()

	var ann *Announcer
	na.in(t, func() {
		ifi, err := net.InterfaceByName("va")
		if err != nil {
			t.Fatal(err)
		}
		// The library surprise this package works around.
		if c, err := arp.Dial(ifi); err == nil {
			c.Close()
			t.Error("arp.Dial succeeded on an interface without IPv4; DialAnnouncer's workaround may be unnecessary")
		} else {
			t.Logf("arp.Dial on va: %v", err)
		}
		if ann, err = DialAnnouncer("va", testLogger(t)); err != nil {
			t.Fatal(err)
		}
	})
	defer ann.Close()
	if _, err := DialAnnouncer("nosuch0", nil); !errors.Is(err, ErrNoInterface) {
		t.Errorf("DialAnnouncer(nosuch0) = %v, want ErrNoInterface", err)
	}

	vip4 := netip.MustParseAddr("10.99.4.15")
	vip6 := netip.MustParseAddr("2001:db8:4::15")
	if err := ann.Announce(vip4, nil); err != nil {
		t.Fatal(err)
	}
	if err := ann.Announce(vip6, nil); err != nil {
		t.Fatal(err)
	}

	// ARP: the request then the reply (anything else on the wire is
	// skipped, though nothing else should send ARP here).
	var got []ARPFrame
	buf := make([]byte, 1500)
	rx4.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(got) < 2 {
		k, _, err := rx4.ReadFrom(buf)
		if err != nil {
			t.Fatalf("reading ARP on vb after %d frames: %v", len(got), err)
		}
		f, err := ParseARPFrame(buf[:k])
		if err != nil || f.SenderIP != vip4 {
			continue
		}
		got = append(got, f)
	}
	for i, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		f := got[i]
		wantTHA := net.HardwareAddr{0, 0, 0, 0, 0, 0}
		if op == arp.OperationReply {
			wantTHA = mac
		}
		if f.Op != op || f.Dst.String() != "ff:ff:ff:ff:ff:ff" || f.Src.String() != mac.String() ||
			f.SenderMAC.String() != mac.String() || f.SenderIP != vip4 || f.TargetIP != vip4 ||
			f.TargetMAC.String() != wantTHA.String() {
			t.Errorf("frame %d: %+v; want %v from %v for %v", i, f, op, mac, vip4)
		}
	}

	// IPv6: the unsolicited NA among whatever the kernel sends (MLD, DAD).
	rx6.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		k, _, err := rx6.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no neighbor advertisement for %v on vb: %v", vip6, err)
		}
		b := buf[:k]
		if k < 54 || b[20] != 58 || b[54] != 136 {
			continue
		}
		m, err := ndp.ParseMessage(b[54:])
		if err != nil {
			t.Fatalf("bad NA: %v", err)
		}
		adv := m.(*ndp.NeighborAdvertisement)
		if adv.TargetAddress != vip6 {
			continue
		}
		if !adv.Override || adv.Solicited || b[21] != 255 || net.HardwareAddr(b[6:12]).String() != mac.String() ||
			net.HardwareAddr(b[0:6]).String() != "33:33:00:00:00:01" {
			t.Errorf("NA %+v, hop limit %d, eth %x", adv, b[21], b[:14])
		}
		var lla *ndp.LinkLayerAddress
		for _, o := range adv.Options {
			if x, ok := o.(*ndp.LinkLayerAddress); ok && x.Direction == ndp.Target {
				lla = x
			}
		}
		if lla == nil || lla.Addr.String() != mac.String() {
			t.Errorf("NA target link-layer option %v, want %v", lla, mac)
		}
		break
	}
}

// TestAdminDownDropsIPv6VIP pins a kernel behaviour the coordinator must
// handle: with the default keep_addr_on_down=0, setting a link admin down
// deletes its IPv6 addresses (an IPv6 VIP included) but keeps IPv4 ones; a
// carrier loss (peer down) keeps both. After the link comes back, Replace
// reports added=true, so the caller re-announces.
func TestAdminDownDropsIPv6VIP(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	v4 := netip.MustParsePrefix("10.99.6.15/24")
	v6 := netip.MustParsePrefix("2001:db8:6::15/64")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := h.Watch(ctx, []string{"va"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{v4, v6} {
		if _, err := h.Replace("va", p, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, evs, Event{Kind: AddrAdded, Interface: "va", Prefix: p})
	}

	n.ip(t, "link", "set", "vb", "down") // carrier loss on va
	expectEvent(t, evs, Event{Kind: LinkDown, Interface: "va"})
	expectNoEvent(t, evs, 200*time.Millisecond)
	for _, p := range []netip.Prefix{v4, v6} {
		if ok, err := h.Has("va", p); err != nil || !ok {
			t.Errorf("after carrier loss: Has(%v) = %v, %v; want true", p, ok, err)
		}
	}
	n.ip(t, "link", "set", "vb", "up")
	expectEvent(t, evs, Event{Kind: LinkUp, Interface: "va"})

	n.ip(t, "link", "set", "va", "down") // admin down
	// The IPv6 removal and the link change come on separate sockets, in
	// either order.
	got := map[Event]bool{}
	for range 2 {
		ev, open, ok := nextEvent(evs, 3*time.Second)
		if !ok || !open {
			t.Fatalf("events so far %v; watch open %v", got, open)
		}
		got[ev] = true
	}
	if !got[Event{Kind: LinkDown, Interface: "va"}] || !got[Event{Kind: AddrRemoved, Interface: "va", Prefix: v6}] {
		t.Fatalf("after admin down got %v; want LinkDown and AddrRemoved %v", got, v6)
	}
	if ok, _ := h.Has("va", v4); !ok {
		t.Error("IPv4 VIP gone after admin down")
	}
	n.ip(t, "link", "set", "va", "up")
	expectEvent(t, evs, Event{Kind: LinkUp, Interface: "va"})
	added, err := h.Replace("va", v6, 30*time.Second)
	if err != nil || !added {
		t.Fatalf("Replace(%v) after admin up = %v, %v; want added", v6, added, err)
	}
}

// The Handle caches interface lookups for address requests. An interface
// deleted and re-created under the same name (a new index) within the
// cache's lifetime must still get the address, refresh and removal.
func TestAddressRequestsFollowRecreatedInterface(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	vip := netip.MustParsePrefix("10.99.3.15/32")
	if _, err := h.Replace("va", vip, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	old, err := n.nl.LinkByName("va")
	if err != nil {
		t.Fatal(err)
	}
	n.ip(t, "link", "del", "va")
	n.veth(t, "va", nil, "vb")
	fresh, err := n.nl.LinkByName("va")
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Attrs().Index == old.Attrs().Index {
		t.Fatalf("re-created va kept index %d; the test needs a new one", old.Attrs().Index)
	}

	added, err := h.Replace("va", vip, 5*time.Second)
	if err != nil || !added {
		t.Fatalf("Replace on the re-created va = %v, %v; want added", added, err)
	}
	if kernelAddr(t, n, "va", vip) == nil {
		t.Fatal("address not on the re-created va")
	}
	if err := h.Refresh("va", vip, 6*time.Second, AddrOptions{}); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	n.ip(t, "link", "del", "va")
	n.veth(t, "va", nil, "vb")
	if removed, err := h.Remove("va", vip); err != nil || removed {
		t.Fatalf("Remove on a re-created va without the address = %v, %v; want false, nil", removed, err)
	}
	n.ip(t, "link", "del", "va")
	if _, err := h.Replace("va", vip, 5*time.Second); !errors.Is(err, ErrNoInterface) {
		t.Fatalf("Replace on a deleted va = %v, want ErrNoInterface", err)
	}
}

// A cached lookup is trusted for linkCacheTTL, then renewed: an interface
// renamed away (no ENODEV) and replaced by a new one of the same name gets
// the address requests after the TTL. Virtual time, real netlink.
func TestAddressRequestsRenewCachedLookupAfterTTL(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	h.clk = clk
	vip := netip.MustParsePrefix("10.99.4.15/32")
	if _, err := h.Replace("va", vip, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	n.ip(t, "link", "set", "va", "down")
	n.ip(t, "link", "set", "va", "name", "vold")
	n.veth(t, "va", nil, "vc")

	// Within the TTL the request still goes to the renamed link, as the
	// cache's comment admits.
	if err := h.Refresh("va", vip, 6*time.Second, AddrOptions{}); err != nil {
		t.Fatal(err)
	}
	if kernelAddr(t, n, "va", vip) != nil {
		t.Fatal("cached lookup renewed before its TTL")
	}
	clk.Advance(linkCacheTTL)
	if added, err := h.Replace("va", vip, 5*time.Second); err != nil || !added {
		t.Fatalf("Replace after the TTL = %v, %v; want added on the new va", added, err)
	}
	if kernelAddr(t, n, "va", vip) == nil {
		t.Fatal("address not on the new va after the TTL")
	}
}
