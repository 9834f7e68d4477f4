package keeper_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/keeper"
)

// Whole keepers on an embedded etcd (real clock): behaviours of issue 12
// that involve several loops or the keeper's lifecycle.

// The address is the resource: two groups of different names with the same
// VIP (a group renamed on one node, or a VIP configured twice) never have
// it bound on two nodes at once.
func TestOneAddressInTwoGroupsIsNeverHeldTwice(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Group: "VI_A"})
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Group: "VI_B"})
	time.Sleep(1500 * time.Millisecond)
	if h := rec.Holders(); len(h) != 1 {
		t.Fatalf("holders %v, want exactly one", h)
	}
	holder := rec.Holders()[0]
	// The holder goes away: the other group takes the address.
	if holder == "web-node-1" {
		n1.Stop()
		rec.WaitFor(t, "web-node-2", 5*time.Second)
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("192.168.20.15 bound on two nodes for %v:\n%s", d, strings.Join(rec.History(), "\n"))
	}
}

// A group renamed during a rolling SIGHUP: while one node has the old name
// and the other the new, the address is still held once; after both
// reloads it is held under the new name.
func TestGroupRenamedDuringRollingReload(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	s1 := keepertest.Spec{Name: "web-node-1", Priority: 101, Group: "VI_A"}
	s2 := keepertest.Spec{Name: "web-node-2", Priority: 100, Group: "VI_A"}
	n1 := keepertest.Start(t, m, rec, s1)
	n2 := keepertest.Start(t, m, rec, s2)
	rec.WaitFor(t, "web-node-1", 10*time.Second)

	s2.Group = "VI_B"
	if err := n2.K.Reload(keepertest.Config(t, m.Endpoint, s2)); err != nil {
		t.Fatal(err)
	}
	// Longer than a new group's first wait (the expiry grace: it has seen
	// no graceful release yet), so VI_B on web-node-2 would have claimed.
	time.Sleep(keeper.ExpiryGrace + time.Second)
	rec.WaitFor(t, "web-node-1", 0) // still the only holder
	s1.Group = "VI_B"
	if err := n1.K.Reload(keepertest.Config(t, m.Endpoint, s1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "VI_B held, VI_A gone", func() bool {
		resp, err := m.Client(t).Get(t.Context(), "/vipd/groups/", clientv3.WithPrefix())
		if err != nil || len(rec.Holders()) != 1 {
			return false
		}
		hasB, hasA := false, false
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			hasB = hasB || k == "/vipd/groups/VI_B/leader"
			// VI_A's released record stays (it tells peers the release
			// was graceful); its leader key and records go.
			hasA = hasA || (strings.HasPrefix(k, "/vipd/groups/VI_A/") && !strings.HasSuffix(k, "/released"))
		}
		return hasB && !hasA
	})
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("192.168.20.15 bound on two nodes for %v:\n%s", d, strings.Join(rec.History(), "\n"))
	}
}

// A group removed by a reload leaves no candidate record behind: a better
// ghost record would make the holder yield to a node that never claims,
// flapping the VIP every lease TTL.
func TestRemovedGroupLeavesNoGhostRecord(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101})
	s2 := keepertest.Spec{Name: "web-node-2", Priority: 150, Group: "VI_1", Extra: `
  - name: VI_2
    interface: eth0
    addresses: [192.168.20.16/24]
    priority: 150
`}
	n2 := keepertest.Start(t, m, rec, s2)
	waitUntil(t, "web-node-2 holds VI_1", func() bool { return n2.Host.Has(netip.MustParsePrefix("192.168.20.15/24")) })

	// web-node-2 drops VI_1 from its config (keeps VI_2, so it runs on).
	cfg := keepertest.Config(t, m.Endpoint, s2)
	cfg.Groups = cfg.Groups[1:]
	if err := n2.K.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Candidate("VI_1", "web-node-2")
	waitUntil(t, "web-node-2's VI_1 record deleted", func() bool {
		resp, err := cli.Get(t.Context(), key)
		return err == nil && len(resp.Kvs) == 0
	})
	vip := netip.MustParsePrefix("192.168.20.15/24")
	waitUntil(t, "web-node-1 holds VI_1", func() bool { return n1.Host.Has(vip) && !n2.Host.Has(vip) })
	// No flapping: web-node-1 keeps it for more than a lease TTL.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !n1.Host.Has(vip) || n2.Host.Has(vip) {
			t.Fatalf("VI_1 moved after web-node-2 removed it:\n%s", strings.Join(rec.History(), "\n"))
		}
	}
}

// A candidate record deleted by hand is written again within a renewal
// period.
func TestDeletedRecordIsWrittenAgain(t *testing.T) {
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100})
	cli := m.Client(t)
	key := election.Keys{Prefix: "/vipd"}.Candidate("VI_1", "web-node-2")
	waitUntil(t, "record published", func() bool {
		resp, err := cli.Get(t.Context(), key)
		return err == nil && len(resp.Kvs) == 1
	})
	if _, err := cli.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, "record written again", func() bool {
		resp, err := cli.Get(t.Context(), key)
		return err == nil && len(resp.Kvs) == 1
	})
	t.Logf("record written again %v after it was deleted", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("record written again after %v, want within one renewal period (500ms)", took)
	}
}

// A stray VIP with another prefix length (bound by hand, or by an old
// config) is removed at startup.
func TestStartupRemovesStrayWithOtherPrefixLength(t *testing.T) {
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	host := fakenet.NewHost("web-node-1", rec)
	stray := netip.MustParsePrefix("192.168.20.15/32")
	host.AddByHand("eth0", stray)
	cfg := keepertest.Config(t, m.Endpoint, keepertest.Spec{Name: "web-node-1", Priority: 101})
	cfg.Groups[0].Interface = "eth1" // the stray is on another interface, too
	k := keeper.New(keeper.Options{Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: keepertest.Logger(t), Ifaces: host,
		Probes: func(string, config.Check) (checks.Probe, error) {
			return func(context.Context) error { return nil }, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "stray removed", func() bool { return !host.Has(stray) })
}

// SIGHUP while the daemon stops: a reload that comes in as Run winds down
// never starts a group after the group loops were waited for, and no
// group loop outlives Run.
func TestReloadDuringShutdownStartsNoGroup(t *testing.T) {
	m := etcdtest.Start(t)
	for i := range 20 {
		rec := fakenet.NewRecorder()
		n := keepertest.Start(t, m, rec, keepertest.Spec{Name: fmt.Sprintf("node-%d", i), Priority: 100, Group: fmt.Sprintf("G_%d", i), Addresses: fmt.Sprintf("10.1.%d.1/24", i)})
		waitUntil(t, "ready", func() bool { ok, _ := n.K.Ready(); return ok })
		stop := make(chan struct{})
		reloads := make(chan error, 1)
		go func() {
			var last error
			for j := 0; ; j++ {
				select {
				case <-stop:
					reloads <- last
					return
				default:
				}
				spec := keepertest.Spec{Name: n.Name, Priority: 100, Group: fmt.Sprintf("G_%d", i), Addresses: fmt.Sprintf("10.1.%d.1/24", i),
					Extra: fmt.Sprintf("\n  - name: X_%d\n    interface: eth0\n    addresses: [10.2.%d.%d/24]\n", j, i, j%250+1)}
				last = n.K.Reload(keepertest.Config(t, m.Endpoint, spec))
			}
		}()
		time.Sleep(time.Duration(i%5) * 5 * time.Millisecond)
		n.Stop()
		close(stop)
		<-reloads
		if err := n.K.Reload(n.Config); !errors.Is(err, keeper.ErrStopping) {
			t.Fatalf("round %d: a reload after Run returned: %v, want ErrStopping", i, err)
		}
		waitUntil(t, "no group loop left", func() bool { return !groupLoopsRunning() })
	}
}

func groupLoopsRunning() bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Contains(string(buf[:n]), "keeper.(*group).run")
}
