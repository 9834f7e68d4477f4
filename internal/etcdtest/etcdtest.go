package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Member is one running embedded etcd member.
type Member struct {
	Etcd     *embed.Etcd
	Endpoint string
}

// Start runs a single-member etcd cluster on loopback ports and returns it;
// it is closed when the test ends. Options adjust the member's
// configuration before it starts (e.g. its --max-txn-ops).
func Start(t testing.TB, options ...func(*embed.Config)) *Member {
	t.Helper()
	// The ports are found free and then bound by etcd: another test
	// process may take one in between ("address already in use"), so a
	// failed start is tried again on fresh ports and a fresh directory.
	var err error
	for range startAttempts {
		var m *Member
		if m, err = start(t, options); err == nil {
			return m
		}
	}
	t.Fatalf("etcdtest: start (%d attempts): %v", startAttempts, err)
	return nil
}

const startAttempts = 5

func start(t testing.TB, options []func(*embed.Config)) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	// Shutdown noise goes to a file, kept with the test's data.
	cfg.LogOutputs = []string{filepath.Join(cfg.Dir, "etcd.log")}
	urls := freeURLs(t, 2)
	client, peer := urls[0], urls[1]
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peer.String())
	// Fast elections keep tests short; a single member elects itself.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	for _, o := range options {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		t.Fatal("etcdtest: server not ready after 20s")
	}
	t.Cleanup(e.Close)
	return &Member{Etcd: e, Endpoint: client.String()}, nil
}

// Client returns a client for m, closed when the test ends.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.Endpoint},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// freeURLs returns n distinct loopback URLs whose ports were free just
// now (all held open together, so they differ).
func freeURLs(t testing.TB, n int) []url.URL {
	t.Helper()
	var out []url.URL
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		defer l.Close()
		out = append(out, url.URL{Scheme: "http", Host: l.Addr().String()})
	}
	return out
}
