package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/internal/prereq"
	"github.com/vipd/vipd/netif"
)

// TestNetlinkRefreshCost measures, in a testbed node namespace, what one
// lifetime refresh of a held VIP costs with vipd's netif.Handle.Replace
// (LinkByName + AddrAdd(EXCL) → EEXIST + AddrReplace) against the proposed
// path (one AddrReplace on a cached ifindex), for 1000 /32 addresses, and
// how much goroutine stack a netlink call leaves behind. Root only; it sends
// no packets (netlink only). Opt-in, so the unit tier never builds
// namespaces: VIPD_BENCH=1 go test -run NetlinkRefreshCost -v ./bench
func TestNetlinkRefreshCost(t *testing.T) {
	if os.Getenv("VIPD_BENCH") == "" {
		t.Skip("benchmark: set VIPD_BENCH=1 (root)")
	}
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root (network namespaces)")
	}
	tb, err := testbed.New(testbed.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	n := tb.Node(testbed.Node1)
	h, err := netif.NewHandleAt(n.NS.Handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	const groups = 1000
	var ps []netip.Prefix
	for i := range groups {
		ps = append(ps, netip.MustParsePrefix(scaleVIP(i)+"/32"))
	}
	for _, p := range ps {
		if _, err := h.Replace("eth0", p, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cpu := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	measure := func(name string, rounds int, fn func() error) time.Duration {
		c0, w0 := cpu(), time.Now()
		for range rounds {
			if err := fn(); err != nil {
				t.Fatal(err)
			}
		}
		per := (cpu() - c0) / time.Duration(rounds*groups)
		t.Logf("%-62s %6.1f µs CPU per address refresh (wall %v for %d × %d)", name, float64(per)/1e3, time.Since(w0).Round(time.Millisecond), rounds, groups)
		return per
	}
	cur := measure("netif.Handle.Replace (vipd today: 3 netlink round trips)", 5, func() error {
		for _, p := range ps {
			if _, err := h.Replace("eth0", p, 30*time.Second); err != nil {
				return err
			}
		}
		return nil
	})
	l, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	stub := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Attrs().Index}}
	prop := measure("AddrReplace on a cached ifindex (proposed: 1 round trip)", 5, func() error {
		for _, p := range ps {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(32, 32)}, ValidLft: 30, PreferedLft: 30, Broadcast: net.IPv4zero}
			if err := n.NS.NL.AddrReplace(stub, a); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("ratio: %.1fx; at 1000 groups × 2 renewals/s: %.0f%% vs %.0f%% of a core (in-process, this machine)",
		float64(cur)/float64(prop), float64(cur)*2000/1e9*100, float64(prop)*2000/1e9*100)

	// Stack left behind: G goroutines each make one netlink call and park,
	// against G goroutines that only park.
	stacks := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	park := func(call bool) uint64 {
		runtime.GC()
		before := stacks()
		var ready, release sync.WaitGroup
		release.Add(1)
		for i := range groups {
			ready.Add(1)
			go func() {
				if call {
					h.Replace("eth0", ps[i], 30*time.Second)
				}
				ready.Done()
				release.Wait()
			}()
		}
		ready.Wait()
		after := stacks()
		release.Done()
		return after - before
	}
	idle := park(false)
	called := park(true)
	t.Logf("goroutine stacks: %d parked goroutines %s; after one netif.Handle.Replace each %s (%s per goroutine)",
		groups, mb(idle), mb(called), fmt.Sprintf("%.0f KiB", float64(called)/groups/1024))
}

func mb(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
