package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// HAProxyConfig is the generated haproxy.cfg: *:80 answers 200 with the node
// name as body; monitor-uri /healthz on *:8404 (vipd checks 127.0.0.1:8404).
func (n *Node) HAProxyConfig() string {
	return fmt.Sprintf(`global
    maxconn 4000

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-request 2s

frontend web
    bind *:80
    http-request return status 200 content-type text/plain string "%s"

frontend health
    bind *:8404
    monitor-uri /healthz
`, n.Name)
}

// StartHAProxy starts HAProxy (-db, foreground) and waits until its
// monitor-uri answers inside the node.
func (n *Node) StartHAProxy() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.haproxy.Running() {
		return fmt.Errorf("haproxy on %s already running", n.Name)
	}
	cfg := filepath.Join(n.tb.Dir, n.Name+"-haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(n.HAProxyConfig()), 0o644); err != nil {
		return err
	}
	p, err := startProc(n.NS, "haproxy@"+n.Name, n.tb.logPath("haproxy-"+n.Name), nil, n.tb.Opts.HAProxy, "-db", "-f", cfg)
	if err != nil {
		return err
	}
	n.haproxy = p
	if err := pollHTTP(n.NS, "http://127.0.0.1:8404/healthz", 5*time.Second, func(c int, _ string) bool { return c == 200 }); err != nil {
		return fmt.Errorf("haproxy on %s: %w\n%s", n.Name, err, p.LogTail(20))
	}
	return nil
}

// HAProxy is the node's current HAProxy process (nil if never started).
func (n *Node) HAProxy() *Proc { n.mu.Lock(); defer n.mu.Unlock(); return n.haproxy }

// StopHAProxy stops HAProxy with SIGTERM (immediate stop in -db mode: the
// listeners close at once) and waits for it.
func (n *Node) StopHAProxy() error {
	if p := n.HAProxy(); p != nil {
		return p.Stop(5 * time.Second)
	}
	return nil
}

// KillHAProxy SIGKILLs HAProxy.
func (n *Node) KillHAProxy() error {
	if p := n.HAProxy(); p != nil {
		return p.Kill()
	}
	return nil
}
