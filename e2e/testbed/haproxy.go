package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HAProxyConfig is the generated haproxy.cfg: *:80 answers 200 with the node
// name as body; monitor-uri /healthz on *:8404 (vipd checks 127.0.0.1:8404).
func (n *Node) HAProxyConfig() string {
	return fmt.Sprintf(`global
    maxconn 4000
    # A replacing process takes the listeners over (-x), as reloads do.
    stats socket %[2]s mode 600 level admin expose-fd listeners

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-request 2s

frontend web
    bind *:80
    http-request return status 200 content-type text/plain string "%[1]s"

frontend health
    bind *:8404
    monitor-uri /healthz
`, n.Name, n.haproxySocket())
}

// haproxySocket is the node's HAProxy stats socket (a unix socket).
func (n *Node) haproxySocket() string { return filepath.Join(n.tb.Dir, n.Name+"-haproxy.sock") }

// HAProxyName is the name the node's HAProxy runs under: haproxy-1 on
// web-node-1. The testbed's nodes share one PID namespace; each runs its
// HAProxy from a copy of the binary named after the node, so that a
// process check (or keepalived's killall) by name sees only its own, as on
// a real host with one HAProxy.
func (n *Node) HAProxyName() string {
	return "haproxy-" + strings.TrimPrefix(n.Name, "web-node-")
}

// HAProxyPidfile is where the node's HAProxy master writes its PID (the
// testbed's /run/haproxy.pid).
func (n *Node) HAProxyPidfile() string { return filepath.Join(n.tb.Dir, n.Name+"-haproxy.pid") }

// haproxyBinary copies the HAProxy binary to HAProxyName once.
func (n *Node) haproxyBinary() (string, error) {
	bin := filepath.Join(n.tb.Dir, "bin", n.HAProxyName())
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	b, err := os.ReadFile(n.tb.Opts.HAProxy)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return "", err
	}
	return bin, os.Rename(tmp, bin)
}

// StartHAProxy starts HAProxy in master-worker mode in the foreground
// (-W -db, as Debian's unit runs it with -Ws), writing the master's PID
// to HAProxyPidfile, and waits until its monitor-uri answers inside the
// node.
func (n *Node) StartHAProxy() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.haproxy.Running() {
		return fmt.Errorf("haproxy on %s already running", n.Name)
	}
	p, err := n.startHAProxy("-W", "-p", n.HAProxyPidfile())
	if err != nil {
		return err
	}
	n.haproxy = p
	return nil
}

func (n *Node) startHAProxy(args ...string) (*Proc, error) {
	cfg := filepath.Join(n.tb.Dir, n.Name+"-haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(n.HAProxyConfig()), 0o644); err != nil {
		return nil, err
	}
	bin, err := n.haproxyBinary()
	if err != nil {
		return nil, err
	}
	argv := append([]string{bin, "-db", "-f", cfg}, args...)
	p, err := startProc(n.NS, "haproxy@"+n.Name, n.tb.logPath("haproxy-"+n.Name), nil, argv...)
	if err != nil {
		return nil, err
	}
	if err := pollHTTP(n.NS, "http://127.0.0.1:8404/healthz", 5*time.Second, func(c int, _ string) bool { return c == 200 }); err != nil {
		p.Kill()
		return nil, fmt.Errorf("haproxy on %s: %w\n%s", n.Name, err, p.LogTail(20))
	}
	return p, nil
}

// HAProxy is the node's current HAProxy process (nil if never started):
// the master.
func (n *Node) HAProxy() *Proc { n.mu.Lock(); defer n.mu.Unlock(); return n.haproxy }

// StopHAProxy stops HAProxy with SIGTERM to the master (immediate stop:
// it stops its workers and exits) and waits until no process of it is
// left.
func (n *Node) StopHAProxy() error {
	if p := n.HAProxy(); p != nil {
		if err := p.Stop(5 * time.Second); err != nil {
			return err
		}
	}
	return n.waitHAProxyGone(5 * time.Second)
}

// KillHAProxy SIGKILLs the HAProxy master; its workers exit when they see
// it gone. It waits until no process of it is left.
func (n *Node) KillHAProxy() error {
	if p := n.HAProxy(); p != nil {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	return n.waitHAProxyGone(5 * time.Second)
}

// waitHAProxyGone waits until no process runs under HAProxyName.
func (n *Node) waitHAProxyGone(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := n.haproxyPids()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy on %s: processes %v still running after %v", n.Name, pids, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ReloadHAProxy reloads HAProxy as `systemctl reload haproxy` does for
// Debian's unit: SIGUSR2 to the master, which re-executes itself (same
// PID) and replaces its workers. It waits until the old worker is gone.
func (n *Node) ReloadHAProxy() error {
	p := n.HAProxy()
	if !p.Running() {
		return fmt.Errorf("haproxy on %s not running", n.Name)
	}
	before := n.haproxyPids()
	if err := p.Signal(syscall.SIGUSR2); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		now := n.haproxyPids()
		old := 0
		for _, pid := range before {
			if slices.Contains(now, pid) && pid != p.Pid() {
				old++
			}
		}
		if old == 0 && len(now) >= 2 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("haproxy on %s: reload did not replace the workers (before %v, now %v)", n.Name, before, n.haproxyPids())
}

// RestartHAProxyNewPID replaces HAProxy by a new process the classic
// way (`haproxy -x SOCKET -sf OLDPIDS`, what init scripts and HAProxy's
// docs do): the new HAProxy (one process, no master) takes the listening
// sockets over from the old one through the stats socket, tells the old
// processes to finish, and its PID is written to the pidfile.
func (n *Node) RestartHAProxyNewPID() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.haproxy
	// -sf every process of the old HAProxy: its workers, or the single
	// process a previous replacement left (its master, if any, exits
	// with them or is stopped below).
	args := []string{"-x", n.haproxySocket(), "-sf"}
	for _, pid := range n.haproxyPids() {
		args = append(args, strconv.Itoa(pid))
	}
	p, err := n.startHAProxy(args...)
	if err != nil {
		return err
	}
	tmp := n.HAProxyPidfile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(p.Pid())+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, n.HAProxyPidfile()); err != nil {
		return err
	}
	n.haproxy = p
	if !old.Running() {
		return nil
	}
	// The old master exits with its last worker; one whose worker was
	// itself replaced by a reload may linger: it has no listeners left,
	// so it is told to stop, as a service manager would.
	if old.Wait(3*time.Second) == nil {
		return nil
	}
	if err := old.Signal(syscall.SIGTERM); err != nil && old.Running() {
		return err
	}
	return old.Wait(10 * time.Second)
}

// haproxyPids lists the processes running under HAProxyName.
func (n *Node) haproxyPids() []int {
	out, _ := exec.Command("pgrep", "-x", n.HAProxyName()).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Bed is the testbed the node belongs to.
func (n *Node) Bed() *Testbed { return n.tb }
