package keeper

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
)

func TestPromiseFile(t *testing.T) {
	dir := t.TempDir()
	p := promiseFile(filepath.Join(dir, "promised"))
	if left, err := p.remaining(); err != nil || left != 0 {
		t.Fatalf("no record: %v, %v; want 0", left, err)
	}
	if err := p.save(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	left, err := p.remaining()
	if err != nil || left <= 2*time.Second || left > 3*time.Second {
		t.Fatalf("after a 3 s promise: %v, %v", left, err)
	}
	// A shorter promise later never shortens the record.
	if err := p.save(time.Second); err != nil {
		t.Fatal(err)
	}
	if l2, _ := p.remaining(); l2 < left-100*time.Millisecond {
		t.Errorf("a shorter promise shortened the record: %v -> %v", left, l2)
	}
	// A record of another boot means nothing.
	if err := os.WriteFile(string(p), []byte("00000000-0000-0000-0000-000000000000 99999999999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if left, err := p.remaining(); err != nil || left != 0 {
		t.Errorf("record of another boot: %v, %v; want 0", left, err)
	}
	if err := os.WriteFile(string(p), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.remaining(); err == nil {
		t.Error("malformed record: no error")
	}
}

// A node that promised and is restarted with the peer channel off still
// claims nothing until the promise could have ended; one whose record is
// unreadable waits a lease TTL.
func TestRestartHonoursARecordedPromise(t *testing.T) {
	m := etcdtest.Start(t)
	dir := t.TempDir()
	pf := promiseFile(filepath.Join(dir, "promised"))
	if err := pf.save(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(strings.NewReader(`
node: n1
etcd: {endpoints: [` + m.Endpoint + `], lease_ttl: 3s}
metrics: {listen: ""}
groups: [{name: VI_1, interface: eth0, addresses: [192.168.20.15/24]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{netip.MustParseAddr("192.168.20.15")}
	host := fakenet.NewHost("n1", fakenet.NewRecorder())
	k := New(Options{Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: testLog(t), Ifaces: host, PromiseFile: string(pf)})
	if k.fs == nil {
		t.Fatal("no promise gate for a recorded promise with the peer channel off")
	}
	if left := time.Until(k.fs.PromisedUntil(addrs)); left < time.Second || left > 2*time.Second {
		t.Errorf("claims nothing for %v, want what is left of the recorded 2 s", left)
	}
	if k.fs.beginAcquire("VI_1", addrs) {
		t.Error("an acquire may start while a recorded promise stands")
	}
	if err := os.WriteFile(string(pf), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	k = New(Options{Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: testLog(t), Ifaces: host, PromiseFile: string(pf)})
	if k.fs == nil || time.Until(k.fs.PromisedUntil(addrs)) < 2500*time.Millisecond {
		t.Error("an unreadable record does not make the node wait a lease TTL")
	}
	// No record, no peer channel: exactly as before, no gate.
	k = New(Options{Config: cfg, Client: m.Client(t), Clock: clock.Real{}, Log: testLog(t), Ifaces: host, PromiseFile: filepath.Join(dir, "none")})
	if k.fs != nil {
		t.Error("a promise gate without the peer channel or a recorded promise")
	}
}
