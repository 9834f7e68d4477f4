package checks

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/prereq"
)

// testNetns creates an unnamed network namespace for this test and a
// netlink handle in it. Nothing in it is reachable from the host's
// namespace; it disappears when the test's handles are closed (Cleanup).
func testNetns(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root (network namespaces)")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New() // moves this thread into the new namespace
	if serr := netns.Set(orig); serr != nil {
		// Leave the thread locked: Go discards it when the test ends.
		t.Fatalf("cannot return to the original namespace: %v", serr)
	}
	runtime.UnlockOSThread()
	orig.Close()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		ns.Close()
	})
	return ns, h
}

// A veth pair in a namespace of the test's own: the interface check
// follows vc0's link state as its peer vc1 goes up and down, through the
// netlink trigger (the interval is an hour), and reports a deleted link.
func TestInterfaceCheckNetns(t *testing.T) {
	ns, h := testNetns(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vc0"}, PeerName: "vc1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := h.LinkByName("vc0"); err == nil {
			_ = h.LinkDel(l)
		}
	})
	set := func(name string, up bool) {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if up {
			err = h.LinkSetUp(l)
		} else {
			err = h.LinkSetDown(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	probe := NewInterface("vc0", h)
	if err := runProbe(t, probe, 5*time.Second); err == nil || !strings.Contains(err.Error(), "admin down") {
		t.Fatalf("fresh veth: err = %v, want admin down", err)
	}
	if err := runProbe(t, NewInterface("nope0", h), 5*time.Second); err == nil || !strings.Contains(err.Error(), "checks: interface nope0: no such interface") {
		t.Fatalf("missing link: err = %v", err)
	}

	c := config.Check{Type: "interface", Name: "vc0", Interval: time.Hour, Timeout: time.Second}
	r := NewRunner(clock.Real{}, testLogger(t))
	r.Add("link", c, probe, WithTrigger(NewInterfaceTrigger("vc0", &ns), SourceNetlink))
	changes := make(chan Status, 16)
	stop := start(t, r, func(s Status) { changes <- s })
	next := func(what string, wantUp bool) Status {
		t.Helper()
		for {
			s := recv(t, changes, what)
			if s.Up == wantUp {
				return s
			}
			t.Logf("intermediate change while waiting for %s: %+v", what, s)
		}
	}
	next("first result (down)", false)
	set("vc0", true) // no carrier: peer is down
	time.Sleep(100 * time.Millisecond)
	if s := r.Snapshot()["link"]; s.Up {
		t.Fatalf("vc0 up without a peer: %+v", s)
	}
	set("vc1", true)
	next("vc0 up after its peer came up", true)
	set("vc1", false)
	s := next("vc0 down after its peer went down", false)
	if !strings.Contains(s.Err.Error(), "admin up") {
		t.Errorf("down error %v, want admin up / no carrier", s.Err)
	}
	set("vc1", true)
	next("vc0 up again", true)
	l, err := h.LinkByName("vc0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(l); err != nil { // deletes both ends
		t.Fatal(err)
	}
	s = next("vc0 deleted", false)
	if !strings.Contains(s.Err.Error(), "no such interface") {
		t.Errorf("after delete: %v", s.Err)
	}
	stop()
}
