package netif

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipd/vipd/internal/prereq"
)

// Namespace helpers. Every root test builds its own uniquely named network
// namespaces and deletes them in t.Cleanup; no test sends a packet from the
// host's namespace.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to create network namespaces")
	}
}

// testNS is a named network namespace owned by one test.
type testNS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle // a plain netlink handle inside it, for setup
}

// newNS creates a uniquely named network namespace and removes it when the
// test ends, whatever happens.
func newNS(t *testing.T) *testNS {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "vipd-netif-" + hex.EncodeToString(rnd[:])

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.NewNamed(name) // moves this thread into it
	if serr := netns.Set(orig); serr != nil {
		// Leave the thread locked: Go discards it when the test's
		// goroutine ends, so nothing else runs in the wrong namespace.
		t.Fatalf("return to original netns: %v", serr)
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		_ = netns.DeleteNamed(name)
		t.Fatalf("create netns %s: %v", name, err)
	}
	n := &testNS{name: name, h: ns}
	t.Cleanup(func() {
		if n.nl != nil {
			n.nl.Close()
		}
		n.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n.nl, err = netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	return n
}

// in runs f on a thread switched into n, for opening sockets there (a
// socket keeps the namespace it was created in).
func (n *testNS) in(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", n.name, err)
	}
	func() {
		defer func() {
			if err := netns.Set(orig); err != nil {
				// Keep the thread locked; it dies with the goroutine.
				t.Fatalf("return from netns %s: %v", n.name, err)
			}
			runtime.UnlockOSThread()
		}()
		f()
	}()
}

// ip runs `ip -n <ns> args...`.
func (n *testNS) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %v: %v\n%s", n.name, args, err, out)
	}
}

// veth creates a veth pair a (in n) and b (in peer, or n if peer is nil),
// both up.
func (n *testNS) veth(t *testing.T, a string, peer *testNS, b string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
	if peer != nil {
		v.PeerNamespace = netlink.NsFd(int(peer.h))
	}
	if err := n.nl.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s/%s: %v", a, b, err)
	}
	bns := n
	if peer != nil {
		bns = peer
	}
	for _, x := range []struct {
		ns   *testNS
		name string
	}{{n, a}, {bns, b}} {
		l, err := x.ns.nl.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.ns.nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// ipOut runs `ip -n <ns> args...` and returns its output.
func (n *testNS) ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %v: %v\n%s", n.name, args, err, out)
	}
	return string(out)
}
