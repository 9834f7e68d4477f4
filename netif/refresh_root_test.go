package netif

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestRefreshResetsLifetimeInOneRequest: Refresh keeps a bound address
// (no remove/add events) and sets its lifetime anew; on an address that
// has gone it creates it again.
func TestRefreshResetsLifetimeInOneRequest(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	vip := netip.MustParsePrefix("10.99.7.15/24")
	if _, err := h.Replace("va", vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := h.Watch(ctx, []string{"va"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Refresh("va", vip, 9*time.Second, AddrOptions{}); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	a := kernelAddr(t, n, "va", vip)
	if a == nil || a.ValidLft < 8 || a.ValidLft > 9 {
		t.Fatalf("after Refresh(9s): %+v, want valid_lft 9", a)
	}
	expectNoEvent(t, evs, 200*time.Millisecond)

	if _, err := h.Remove("va", vip); err != nil {
		t.Fatal(err)
	}
	if err := h.Refresh("va", vip, 2*time.Second, AddrOptions{}); err != nil {
		t.Fatalf("Refresh of a removed address: %v", err)
	}
	if kernelAddr(t, n, "va", vip) == nil {
		t.Fatal("Refresh did not create the removed address again")
	}
	if err := h.Refresh("va", vip, 500*time.Millisecond, AddrOptions{}); err == nil {
		t.Error("Refresh with a lifetime under 1s succeeded")
	}
}
