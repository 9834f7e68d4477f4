package keepertest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/keeper"
)

// Node is one running keeper.
type Node struct {
	Name   string
	Host   *fakenet.Host
	K      *keeper.Keeper
	Config config.Config
	// Healthy switches the node's "haproxy" check.
	Healthy *atomic.Bool

	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// Detach hands the node over as a re-execution in place does: the keeper
// ends keeping its VIPs, keys and lease, and returns what it handed over.
func (n *Node) Detach() keeper.Handoff {
	n.K.Detach()
	n.stopOnce.Do(n.cancel)
	<-n.done
	return n.K.Handoff()
}

// Stop stops the keeper gracefully and waits for it.
func (n *Node) Stop() {
	n.stopOnce.Do(n.cancel)
	<-n.done
}

// Spec describes a node.
type Spec struct {
	Name     string
	Priority int
	// Tracked adds the "haproxy" check (weight 2) to the group.
	Tracked bool
	// Extra is appended to the group's YAML (indented four spaces).
	Extra string
	// CheckInterval is the haproxy check's interval and timeout
	// (default 20ms).
	CheckInterval time.Duration
	// ProbeDelay makes every probe run take this long, like a real HTTP
	// check would.
	ProbeDelay time.Duration
	// Group and Addresses name the group and its VIPs (default VI_1 with
	// 192.168.20.15/24).
	Group     string
	Addresses string
	// NoAddresses gives the group none (it elects a holder for hooks).
	NoAddresses bool
	// Via, if set, is the node's way to etcd (a proxy the test can cut).
	Via *etcdtest.Proxy
	// Peer turns the peer channel on, on a loopback port, with PeerKey;
	// Failsafe the failsafe too.
	Peer, Failsafe bool
	// Observer receives the keeper's metrics events (nil: none).
	Observer keeper.Observer
	// Host, if set, is the node's host (a node re-executed in place keeps
	// its host); default: a new one.
	Host *fakenet.Host
	// Handoff is what the node's previous image handed over (Detach).
	Handoff *keeper.Handoff
	// Mutate, if set, edits the config before the keeper starts (a config
	// changed across a re-execution).
	Mutate func(*config.Config)
	// FailFirstRuns makes the first probe runs fail (a refused connection
	// while HAProxy reloads).
	FailFirstRuns int32
}

// PeerKey is the peer channel key of test nodes.
var PeerKey = []byte("keepertest-peer-key-0123456789abcdef")

// Config returns the YAML config of a test node on endpoint.
func Config(t testing.TB, endpoint string, s Spec) config.Config {
	t.Helper()
	y := fmt.Sprintf(`
node: %[1]s
etcd: {endpoints: [%[2]s], lease_ttl: 3s, request_timeout: 300ms}
metrics: {listen: ""}
checks:
  haproxy: {type: http, url: "http://127.0.0.1:1/healthz", interval: %[4]s, timeout: %[4]s, rise: 2, fall: 2}
groups:
  - name: %[5]s
    interface: eth0
    addresses: [%[6]s]
    priority: %[3]d
    backoff_step: 50ms
    garp: {count: 2, interval: 10ms}
`, s.Name, endpoint, s.Priority, cmp.Or(s.CheckInterval, 20*time.Millisecond), cmp.Or(s.Group, "VI_1"), addresses(s))
	if s.Tracked {
		y += "    track: [{check: haproxy, weight: 2}]\n"
	}
	y += s.Extra
	c, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addresses(s Spec) string {
	if s.NoAddresses {
		return ""
	}
	return cmp.Or(s.Addresses, "192.168.20.15/24")
}

// Logger logs to stderr under -v and nowhere otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start runs a node until the test ends (or Stop).
func Start(t testing.TB, m *etcdtest.Member, rec *fakenet.Recorder, s Spec) *Node {
	t.Helper()
	endpoint, cli := m.Endpoint, m.Client(t)
	if s.Via != nil {
		endpoint, cli = s.Via.Endpoint, s.Via.Client(t)
	}
	cfg := Config(t, endpoint, s)
	if s.Mutate != nil {
		s.Mutate(&cfg)
	}
	var fails atomic.Int32
	fails.Store(s.FailFirstRuns)
	host := s.Host
	if host == nil {
		host = fakenet.NewHost(s.Name, rec)
	}
	healthy := &atomic.Bool{}
	healthy.Store(true)
	var po *keeper.PeerOptions
	if s.Peer {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		po = &keeper.PeerOptions{Listener: ln, Advertise: ln.Addr().String(), Key: PeerKey, Failsafe: s.Failsafe}
	}
	k := keeper.New(keeper.Options{
		Config: cfg, Client: cli, Clock: clock.Real{}, Log: Logger(t), Peer: po, Observer: s.Observer, Handoff: s.Handoff,
		Ifaces: host, Announce: host.Announce,
		Probes: func(string, config.Check) (checks.Probe, error) {
			return func(ctx context.Context) error {
				if s.ProbeDelay > 0 {
					select {
					case <-time.After(s.ProbeDelay):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if fails.Add(-1) >= 0 {
					return fmt.Errorf("connection refused")
				}
				if healthy.Load() {
					return nil
				}
				return fmt.Errorf("haproxy down")
			}, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Name: s.Name, Host: host, K: k, Config: cfg, Healthy: healthy, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		if err := k.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", s.Name, err)
		}
	}()
	t.Cleanup(n.Stop)
	return n
}
