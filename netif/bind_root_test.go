package netif

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipd/vipd/internal/clock"
)

// Unbind confirms the VIP gone even when the interface it was bound on
// was renamed, and another link took its name: it finds the address by IP
// on any link.
func TestUnbindFindsTheVIPOnARenamedLink(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	// The handle caches interface lookups for linkCacheTTL; time that on a
	// fake clock, so the removals below look the name up afresh.
	clk := clock.NewFake(time.Now())
	h.clk = clk
	vip := netip.MustParsePrefix("10.99.8.15/24")
	if _, err := h.Bind("va", vip, clk.Now().Add(30*time.Second), AddrOptions{}); err != nil {
		t.Fatal(err)
	}
	// Rename va (links must be down to be renamed; an IPv4 address stays),
	// and give its old name to the other end.
	rename := func(from, to string) {
		t.Helper()
		l, err := n.nl.LinkByName(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.nl.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
		if err := n.nl.LinkSetName(l, to); err != nil {
			t.Fatal(err)
		}
	}
	rename("va", "vx")
	if kernelAddr(t, n, "vx", vip) == nil {
		t.Fatal("the VIP did not survive the rename")
	}
	clk.Advance(2 * linkCacheTTL)
	removed, err := h.Unbind("va", vip)
	if err != nil || removed != 1 {
		t.Fatalf("Unbind(va) with va gone = %d, %v; want 1, nil", removed, err)
	}
	if kernelAddr(t, n, "vx", vip) != nil {
		t.Fatal("VIP still on the renamed link")
	}

	if _, err := h.Bind("vx", vip, clk.Now().Add(30*time.Second), AddrOptions{}); err != nil {
		t.Fatal(err)
	}
	rename("vb", "va") // the name now points at another link
	clk.Advance(2 * linkCacheTTL)
	removed, err = h.Unbind("va", vip)
	if err != nil || removed != 1 {
		t.Fatalf("Unbind(va) with va another link = %d, %v; want 1, nil", removed, err)
	}
	if kernelAddr(t, n, "vx", vip) != nil {
		t.Fatal("VIP still on the renamed link")
	}
	// Nothing left: Unbind confirms that too.
	if removed, err := h.Unbind("va", vip); err != nil || removed != 0 {
		t.Fatalf("Unbind of an absent VIP = %d, %v; want 0, nil", removed, err)
	}
}

// RemoveIPs removes a VIP's IP whatever its prefix length and link, and
// nothing else.
func TestRemoveIPsRemovesEveryPrefixLength(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	ip := netip.MustParseAddr("10.99.9.15")
	other := netip.MustParsePrefix("10.99.9.16/24")
	// other first: it is the subnet's primary address, and the VIP a
	// secondary, as a VIP next to a host's own address is. (Deleting a
	// primary deletes its secondaries unless promote_secondaries is set.)
	for _, c := range []struct {
		link string
		p    netip.Prefix
	}{{"va", other}, {"va", netip.PrefixFrom(ip, 24)}, {"vb", netip.PrefixFrom(ip, 32)}} {
		if _, err := h.Replace(c.link, c.p, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := h.RemoveIPs([]netip.Addr{ip})
	if err != nil || len(gone) != 2 {
		t.Fatalf("RemoveIPs = %v, %v; want both prefixes of %v", gone, err, ip)
	}
	as, err := n.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, a := range as {
		p, _ := prefixOf(a.IPNet)
		if p.Addr() == ip {
			t.Errorf("%v still bound", p)
		}
		kept = kept || p == other
	}
	if !kept {
		t.Errorf("RemoveIPs removed %v too", other)
	}
}

// The lifetime is computed when the request leaves, not when the caller
// asked: a request that waited behind others (or a stall) gets a shorter
// lifetime, so it still runs out by the deadline.
func TestBindComputesTheLifetimeWhenIssued(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	clk := clock.NewFake(time.Now())
	h.clk = clk
	vip := netip.MustParsePrefix("10.99.10.15/24")
	end := clk.Now().Add(4500 * time.Millisecond)

	// Hold the netlink goroutine busy, queue the bind behind it, and let
	// 2 s pass meanwhile.
	release := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		if err := h.acquire(); err != nil {
			t.Error(err)
			return
		}
		defer h.release()
		h.exec(func() { close(busy); <-release })
	}()
	<-busy
	type result struct {
		b   Binding
		err error
	}
	done := make(chan result)
	go func() {
		b, err := h.Bind("va", vip, end, AddrOptions{})
		done <- result{b, err}
	}()
	time.Sleep(50 * time.Millisecond) // the bind is queued
	clk.Advance(2 * time.Second)
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.b.Lifetime != 2*time.Second || !r.b.Issued.Equal(clk.Now()) {
		t.Fatalf("binding %+v: want a 2 s lifetime computed at issue (+2 s), not 4 s from the call", r.b)
	}
	if a := kernelAddr(t, n, "va", vip); a == nil || a.ValidLft > 2 {
		t.Fatalf("kernel has %+v, want valid_lft ≤ 2", a)
	}
	// Too late at issue: nothing is touched.
	if _, err := h.Bind("va", netip.MustParsePrefix("10.99.10.16/24"), clk.Now().Add(900*time.Millisecond), AddrOptions{}); !errors.Is(err, ErrLifetimeTooShort) {
		t.Fatalf("bind with under a second left: %v, want ErrLifetimeTooShort", err)
	}
}

// An interface renamed and another created under its name while the VIP
// is bound: a refresh through the name puts a second copy on the new
// link. Unbind removes both: it knows the address was bound on two links.
func TestUnbindRemovesACopyLeftOnARenamedLink(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	clk := clock.NewFake(time.Now())
	h.clk = clk
	vip := netip.MustParsePrefix("10.99.11.15/24")
	if _, err := h.Bind("va", vip, clk.Now().Add(30*time.Second), AddrOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := n.nl.LinkByName("va")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.nl.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := n.nl.LinkSetName(l, "vx"); err != nil {
		t.Fatal(err)
	}
	n.veth(t, "va", nil, "vy") // a new va
	clk.Advance(2 * linkCacheTTL)
	if _, err := h.Extend("va", vip, clk.Now().Add(30*time.Second), AddrOptions{}); err != nil {
		t.Fatal(err)
	}
	if kernelAddr(t, n, "vx", vip) == nil || kernelAddr(t, n, "va", vip) == nil {
		t.Fatal("setup: want the VIP on both the renamed link and the new one")
	}
	removed, err := h.Unbind("va", vip)
	if err != nil || removed != 2 {
		t.Fatalf("Unbind = %d, %v; want both copies removed", removed, err)
	}
	if kernelAddr(t, n, "vx", vip) != nil || kernelAddr(t, n, "va", vip) != nil {
		t.Fatal("a copy of the VIP is left")
	}
}
