package keeper

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
)

// Issue 15: a group's addresses may sit on several interfaces (keepalived's
// `dev`, and its sync groups), and a group may have no address at all (its
// holder runs the notify hooks; keepalived instances whose hook moves a
// cloud address). These tests inject the faults first.

// A promise covers the addresses it names, and a claim without addresses
// has nothing a promise could cover: its leader key is guarded by no
// membership record, so a newcomer that reaches etcd could claim it while
// the old holder sits on promises. No horizon, whatever was promised.
func TestHorizonNeedsAddresses(t *testing.T) {
	a := netip.MustParseAddr("192.168.20.15")
	got := map[string]promise{"web-node-2": {Until: h0.Add(3 * time.Second), Addrs: map[netip.Addr]bool{a: true}}}
	members := map[string]string{"web-node-1": "127.0.0.1:1", "web-node-2": "127.0.0.1:2"}
	if h := horizon("web-node-1", members, nil, got, 0); !h.IsZero() {
		t.Errorf("horizon of a claim with no addresses = %v, want none (no failsafe)", h)
	}
	if h := horizon("web-node-1", members, []netip.Addr{a}, got, 0); !h.Equal(h0.Add(3 * time.Second)) {
		t.Errorf("horizon of a covered claim = %v, want the promise's end", h)
	}
}

const noAddrGroup = `
name: VI_1
interface: eth0
priority: 101
backoff_step: 50ms
`

// A group with no addresses is MASTER while it holds its claim under a
// live fence, and stops being MASTER by the fence deadline when renewals
// stop, as a group with VIPs removes them: its notify hooks are what it
// holds.
func TestNoAddressGroupIsMasterWithinTheFence(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", noAddrGroup)
	h.until("MASTER", 5*time.Second, func() bool {
		n, _ := h.leader()
		return n == "web-node-1" && h.g.currentState() == election.StateMaster
	})
	if !h.g.vips.bound() {
		t.Error("holding with no addresses: bound() = false")
	}
	deadline := h.lease.Current().Deadline
	h.noRenew = true
	for h.clk.Now().Before(deadline) {
		w := h.step()
		if h.g.currentState() != election.StateMaster {
			t.Fatalf("left MASTER at %v, before the fence deadline %v", h.clk.Now().Sub(h0), deadline.Sub(h0))
		}
		if w <= 0 || w > 100*time.Millisecond {
			w = 100 * time.Millisecond
		}
		h.clk.Advance(min(w, deadline.Sub(h.clk.Now())))
	}
	h.step()
	if st := h.g.currentState(); st == election.StateMaster {
		t.Errorf("still %v at the fence deadline without a renewal", st)
	}
}

const twoIfGroup = `
name: VI_1
interface: eth0
addresses: [192.168.20.15/24, {address: 10.1.0.5/24, interface: eth1}]
priority: 101
backoff_step: 50ms
garp: {count: 2, interval: 100ms}
`

var eth1VIP = netip.MustParsePrefix("10.1.0.5/24")

// Each address is bound, announced and removed on its own interface.
func TestAddressesOnTheirOwnInterfaces(t *testing.T) {
	h := newHarness(t, nil, "web-node-1", twoIfGroup)
	h.host.AddLink("eth1")
	h.hold()
	if ifc, _ := h.host.Where(hvip.Addr()); ifc != "eth0" {
		t.Errorf("%v bound on %q, want eth0", hvip, ifc)
	}
	if ifc, _ := h.host.Where(eth1VIP.Addr()); ifc != "eth1" {
		t.Errorf("%v bound on %q, want eth1", eth1VIP, ifc)
	}
	h.until("announced", time.Second, func() bool { return h.host.AnnouncedOn(eth1VIP.Addr()) != "" })
	if ifc := h.host.AnnouncedOn(eth1VIP.Addr()); ifc != "eth1" {
		t.Errorf("%v announced on %q, want eth1", eth1VIP, ifc)
	}
	if ifc := h.host.AnnouncedOn(hvip.Addr()); ifc != "eth0" {
		t.Errorf("%v announced on %q, want eth0", hvip, ifc)
	}

	// A reload moves the address to eth2: it comes off eth1 first.
	h.host.AddLink("eth2")
	gc := h.g.config()
	gc.Addresses = []config.Address{{CIDR: hvip.String()}, {CIDR: eth1VIP.String(), Interface: "eth2"}}
	gc.Links = []string{"eth0", "eth2"}
	h.g.update(gc)
	h.until("rebound on eth2", 2*time.Second, func() bool {
		ifc, _ := h.host.Where(eth1VIP.Addr())
		return ifc == "eth2" && h.g.vips.bound()
	})

	// Renewals stop: every address comes off, on every interface.
	h.noRenew = true
	h.until("removed", 5*time.Second, func() bool { return !h.g.vips.present() })
	for _, p := range []netip.Prefix{hvip, eth1VIP} {
		if h.host.Has(p) {
			t.Errorf("%v still on the host after the fence", p)
		}
	}
}

// A group is in FAULT while any interface it uses is down: the group's
// own, or one an address names.
func TestHealthFaultOnAnAddressInterface(t *testing.T) {
	hl := newHealth(clock.NewFake(h0), testLog(t), nopObserver{}, nil, nil)
	gc := config.Group{Name: "VI_1", Interface: "eth0", Priority: 101,
		Addresses: []config.Address{{CIDR: "192.168.20.15/24"}, {CIDR: "10.1.0.5/24", Interface: "eth1"}},
		Links:     []string{"eth0", "eth1"}}
	hl.up["eth0"], hl.up["eth1"] = true, true
	if got := hl.Of(gc); got.Fault || !got.Ready {
		t.Fatalf("both links up: %+v, want ready, no fault", got)
	}
	hl.up["eth1"] = false
	if got := hl.Of(gc); !got.Fault {
		t.Errorf("eth1 down: %+v, want FAULT (naming eth1)", got)
	}
	delete(hl.up, "eth1")
	if got := hl.Of(gc); got.Ready {
		t.Errorf("eth1 state unknown: ready = true, want false")
	}

	// No addresses and no interface: nothing to wait for.
	bare := config.Group{Name: "hooks", Priority: 100}
	hl.statuses["x"] = checks.Status{Name: "x", Up: true}
	if got := hl.Of(bare); got.Fault || !got.Ready {
		t.Errorf("group without interfaces: %+v, want ready, no fault", got)
	}
}
