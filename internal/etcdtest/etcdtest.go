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
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	// Shutdown noise goes to a file, kept with the test's data.
	cfg.LogOutputs = []string{filepath.Join(cfg.Dir, "etcd.log")}
	client, peer := freeURL(t), freeURL(t)
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
		t.Fatalf("etcdtest: start: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		t.Fatal("etcdtest: server not ready after 20s")
	}
	t.Cleanup(e.Close)
	return &Member{Etcd: e, Endpoint: client.String()}
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

func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}
