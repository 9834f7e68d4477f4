package keeper_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
	"github.com/vipd/vipd/keeper"
	"github.com/vipd/vipd/netif"
)

// Tests of what bind and announce do with netif: the ARP probe before
// claiming, label and scope, the announcement schedule and its metric.

// annHost is a fakenet.Host that also probes (scripted conflicts) and
// takes address options, recording the order of calls.
type annHost struct {
	*fakenet.Host
	mu        sync.Mutex
	calls     []string
	conflicts []netif.Conflict
	probeArgs []string
	opts      []netif.AddrOptions
}

func (h *annHost) record(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, s)
}

func (h *annHost) Bind(ifname string, p netip.Prefix, goneBy time.Time, o netif.AddrOptions) (netif.Binding, error) {
	h.mu.Lock()
	h.opts = append(h.opts, o)
	h.mu.Unlock()
	b, err := h.Host.Bind(ifname, p, goneBy, o)
	if b.Added {
		h.record("add " + p.String())
	}
	return b, err
}

func (h *annHost) ProbeARP(ctx context.Context, ifname string, ips []netip.Addr, wait time.Duration) ([]netif.Conflict, error) {
	h.mu.Lock()
	h.probeArgs = append(h.probeArgs, fmt.Sprintf("%s %v %v", ifname, ips, wait))
	cs := slices.Clone(h.conflicts)
	h.mu.Unlock()
	h.record("probe")
	return cs, nil
}

func (h *annHost) snapshot() (calls, probes []string, opts []netif.AddrOptions) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls), slices.Clone(h.probeArgs), slices.Clone(h.opts)
}

// annObserver counts conflicts and announcements.
type annObserver struct {
	keeper.Observer
	mu        sync.Mutex
	conflicts map[string]int
	announced map[netip.Addr]int
}

func newAnnObserver() *annObserver {
	return &annObserver{conflicts: map[string]int{}, announced: map[netip.Addr]int{}}
}

func (o *annObserver) Conflict(group string) { o.mu.Lock(); o.conflicts[group]++; o.mu.Unlock() }
func (o *annObserver) Announced(_ string, ip netip.Addr) {
	o.mu.Lock()
	o.announced[ip]++
	o.mu.Unlock()
}
func (o *annObserver) counts() (map[string]int, map[netip.Addr]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return cloneCounts(o.conflicts), cloneCounts(o.announced)
}

func cloneCounts[K comparable](m map[K]int) map[K]int {
	out := make(map[K]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// nopObs satisfies the rest of keeper.Observer.
type nopObs struct{}

func (nopObs) GroupState(string, election.State, int, bool)    {}
func (nopObs) Transition(string, election.State)               {}
func (nopObs) Acquired(string, time.Duration)                  {}
func (nopObs) Announced(string, netip.Addr)                    {}
func (nopObs) CheckState(string, bool)                         {}
func (nopObs) CheckRun(string, bool, time.Duration)            {}
func (nopObs) CheckEvents(string, string)                      {}
func (nopObs) CheckToRelease(string, time.Duration)            {}
func (nopObs) Renewal(string, time.Duration)                   {}
func (nopObs) Notified(string, string, string)                 {}
func (nopObs) Conflict(string)                                 {}
func (nopObs) PeerRelay(string, string, string)                {}
func (nopObs) PeerServed(string, string, string)               {}
func (nopObs) PeerRefused(string)                              {}
func (nopObs) MoverCall(string, string, string, time.Duration) {}
func (nopObs) HolderMode(string, string)                       {}

// startAnn runs one keeper named web-node-1 with group lines (YAML,
// indented four spaces); its probes report conflicts.
func startAnn(t *testing.T, m *etcdtest.Member, rec *fakenet.Recorder, group string, conflicts []netif.Conflict) (*annHost, *annObserver) {
	t.Helper()
	y := fmt.Sprintf(`
node: web-node-1
etcd: {endpoints: [%s], lease_ttl: 3s, request_timeout: 300ms}
metrics: {listen: ""}
groups:
  - name: VI_1
    interface: eth0
    backoff_step: 50ms
%s`, m.Endpoint, group)
	cfg, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	host := &annHost{Host: fakenet.NewHost("web-node-1", rec), conflicts: conflicts}
	obs := newAnnObserver()
	obs.Observer = nopObs{}
	k := keeper.New(keeper.Options{
		Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: keepertest.Logger(t),
		Ifaces: host, Announce: host.Announce, Observer: obs,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := k.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return host, obs
}

// TestProbeBeforeBind: with garp.probe, the keeper probes every VIP of the
// group once, with the configured wait, before adding any of them.
func TestProbeBeforeBind(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	host, obs := startAnn(t, m, rec, `    addresses: [192.168.20.15/24, 192.168.20.16/24]
    garp: {count: 1, interval: 10ms, probe: true, probe_wait: 30ms}
`, nil)
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	// The recorder flips with the first address; wait for the second.
	waitUntil(t, "both VIPs added", func() bool { c, _, _ := host.snapshot(); return len(c) >= 3 })
	calls, probes, opts := host.snapshot()
	if len(probes) != 1 || probes[0] != "eth0 [192.168.20.15 192.168.20.16] 30ms" {
		t.Errorf("probes %q, want one for both VIPs with the configured 30ms", probes)
	}
	if len(calls) < 3 || calls[0] != "probe" || !strings.HasPrefix(calls[1], "add ") || !strings.HasPrefix(calls[2], "add ") {
		t.Errorf("calls %q, want the probe before both adds", calls)
	}
	for _, o := range opts {
		if o != (netif.AddrOptions{}) {
			t.Errorf("options %+v without label or scope configured, want the zero value", o)
		}
	}
	if c, _ := obs.counts(); len(c) != 0 {
		t.Errorf("conflicts %v without any", c)
	}
}

// TestProbeConflictStillBinds: a conflict is reported to the observer (the
// vipd_address_conflicts_total metric) and the VIP is bound anyway, since
// etcd made this node the holder; refreshes do not probe again.
func TestProbeConflictStillBinds(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	other := net.HardwareAddr{2, 0, 0xc0, 0xa8, 0x14, 0x63}
	host, obs := startAnn(t, m, rec, `    addresses: [192.168.20.15/24]
    garp: {count: 1, interval: 10ms, probe: true}
`, []netif.Conflict{{IP: netip.MustParseAddr("192.168.20.15"), MAC: other}})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	if !host.Has(netip.MustParsePrefix("192.168.20.15/24")) {
		t.Fatal("VIP not bound after a conflict")
	}
	if c, _ := obs.counts(); c["VI_1"] != 1 {
		t.Errorf("conflicts %v, want VI_1: 1", c)
	}
	if _, probes, _ := host.snapshot(); len(probes) != 1 || !strings.HasSuffix(probes[0], " 50ms") {
		t.Errorf("probes %q, want one with the default 50ms wait", probes)
	}
	// Holding on: lease renewals refresh the VIP without probing again.
	time.Sleep(1500 * time.Millisecond)
	if _, probes, _ := host.snapshot(); len(probes) != 1 {
		t.Errorf("%d probes while holding, want 1", len(probes))
	}
}

// TestIPv6GroupDoesNotProbe: garp.probe is IPv4 only.
func TestIPv6GroupDoesNotProbe(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	host, _ := startAnn(t, m, rec, `    addresses: [fd00:20::15/64]
    garp: {count: 1, interval: 10ms, probe: true}
`, nil)
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	if _, probes, _ := host.snapshot(); len(probes) != 0 {
		t.Errorf("IPv6 group probed: %q", probes)
	}
}

// TestLabelAndScopeReachBind: label and scope from the config are passed
// on every bind of every VIP.
func TestLabelAndScopeReachBind(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	host, _ := startAnn(t, m, rec, `    addresses: [192.168.20.15/24, 192.168.20.16/24]
    label: "eth0:vip"
    scope: link
    garp: {count: 1, interval: 10ms}
`, nil)
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	// The recorder flips on the first address; wait for the second too.
	var opts []netif.AddrOptions
	for i := 0; ; i++ {
		if _, _, opts = host.snapshot(); len(opts) >= 2 {
			break
		}
		if i == 200 {
			t.Fatalf("Bind called %d times, want ≥ 2", len(opts))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, o := range opts {
		if o != (netif.AddrOptions{Label: "eth0:vip", Scope: netif.ScopeLink}) {
			t.Errorf("options %+v, want label eth0:vip scope link", o)
		}
	}
}

// TestAnnounceScheduleAndMetric: after binding, every VIP is announced
// count times, then once per refresh while held; the observer hears of
// each successful per-address send. (The exact schedule is tested in
// virtual time in netif; this checks the wiring without timing windows.)
func TestAnnounceScheduleAndMetric(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	host, obs := startAnn(t, m, rec, `    addresses: [192.168.20.15/24, 192.168.20.16/24]
    garp: {count: 3, interval: 20ms, refresh: 100ms}
`, nil)
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	// The burst (3) and at least two refreshes reach both addresses.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ann := obs.counts()
		a, b := ann[netip.MustParseAddr("192.168.20.15")], ann[netip.MustParseAddr("192.168.20.16")]
		if a >= 5 && b >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("announcements after 10s: %d and %d, want ≥ 3 + 2 refreshes each", a, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, ann := obs.counts()
	heard := int64(ann[netip.MustParseAddr("192.168.20.15")] + ann[netip.MustParseAddr("192.168.20.16")])
	// The host counts a send before the observer hears of it; at most one
	// round (two sends) can be in between.
	if sent := host.Garps.Load(); sent < heard || sent > heard+2 {
		t.Errorf("host sent %d announcements, observer heard of %d", sent, heard)
	}
}
