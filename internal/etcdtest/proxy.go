package etcdtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Proxy forwards TCP connections on loopback to a member, and can cut
// them: a node behind a cut proxy is partitioned from etcd (its packets
// vanish: connections stall, new ones are accepted and go nowhere) while
// everything else still reaches the member.
type Proxy struct {
	// Endpoint is the proxy's client URL.
	Endpoint string
	target   string
	ln       net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to m, stopped when the test ends.
func NewProxy(t testing.TB, m *Member) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy: %v", err)
	}
	u, err := url.Parse(m.Endpoint)
	if err != nil {
		t.Fatalf("etcdtest: proxy: %v", err)
	}
	p := &Proxy{Endpoint: "http://" + ln.Addr().String(), target: u.Host, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Client returns a client through the proxy, closed when the test ends.
func (p *Proxy) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcdtest: proxy client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Cut partitions the proxy's clients from the member: open connections
// stop carrying data (without a reset, as a dropped route does), and new
// ones are held open without reaching it.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Heal ends the partition: connections held meanwhile are closed (their
// clients reconnect), new ones are forwarded again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c, true)
		p.wg.Go(func() {
			defer p.track(c, false)
			defer c.Close()
			if p.isCut() {
				io.Copy(io.Discard, c) // held until Heal or close
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			p.track(up, true)
			defer p.track(up, false)
			defer up.Close()
			var once sync.WaitGroup
			once.Go(func() { p.pipe(up, c); up.Close(); c.Close() })
			p.pipe(c, up)
			up.Close()
			c.Close()
			once.Wait()
		})
	}
}

// pipe copies src to dst until either ends, dropping the data while the
// proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isCut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
