package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Keepalived runs Debian's keepalived in a node namespace instead of vipd,
// with the seed's configuration adapted to the testbed (interface eth0, VIP
// 192.168.20.15/24, vrrp_script "killall -0 haproxy" interval 2 weight 2,
// priorities 101/100, virtual_router_id 51, VRRPv2, advert_int 1), for
// side-by-side benchmarks. VRRP multicast (224.0.0.18, IP protocol 112)
// leaves the node only through its eth0 onto the testbed bridge.
//
// One caveat of the testbed: every namespace shares the host's PID
// namespace, so a literal `killall -0 haproxy` on web-node-1 would also
// find web-node-2's HAProxy and never fail. The check script is therefore
// a killall shim (KeepalivedKillall) that signals only haproxy processes in
// the caller's network namespace — what `killall` sees on a real host.

// KeepalivedBinary is the keepalived executable (Debian package keepalived).
var KeepalivedBinary = "/usr/sbin/keepalived"

// KeepalivedTuning selects the keepalived configuration.
type KeepalivedTuning int

const (
	// KeepalivedSeed is the seed's configuration (VRRPv2, advert_int 1,
	// check interval 2).
	KeepalivedSeed KeepalivedTuning = iota
	// KeepalivedTuned is the bench's "tuned" column: VRRPv3, advert_int
	// 0.1, check interval 1 (keepalived's smallest script interval), fall 1
	// rise 1.
	KeepalivedTuned
	// KeepalivedTrackProcess is KeepalivedTuned with keepalived's own
	// event-driven process tracking (vrrp_track_process, the kernel's
	// process connector) in place of the killall script.
	KeepalivedTrackProcess
)

// KeepalivedNoProcessEvents is what keepalived logs when the kernel's
// process connector refuses it: the connector delivers only to sockets
// in the initial network namespace, and the testbed runs keepalived in
// the node's. vrrp_track_process then never sees a process exit.
const KeepalivedNoProcessEvents = "Failed to set/clear process event listen"

var (
	kaMu    sync.Mutex
	kaProcs = map[*Node]*Proc{}
)

// KeepalivedKillall is the shim installed as the check script's killall:
// `killall -SIG NAME` restricted to processes in the caller's network
// namespace.
const KeepalivedKillall = `#!/bin/sh
# killall -SIG NAME, restricted to processes in this network namespace
# (testbed nodes share one PID namespace; a real host's killall sees only
# its own HAProxy).
sig="$1"; name="$2"; found=1
self=$(readlink /proc/self/ns/net)
for p in $(pidof "$name"); do
  if [ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$self" ] && kill "$sig" "$p" 2>/dev/null; then
    found=0
  fi
done
exit $found
`

// KeepalivedConfig is the node's keepalived.conf: the seed's, with eth0.
func (n *Node) KeepalivedConfig(t KeepalivedTuning) string {
	state := "BACKUP"
	if n.Priority == 101 {
		state = "MASTER"
	}
	killall := filepath.Join(n.tb.Dir, "killall")
	global, advert, script := "", "", "  interval 2\n  weight 2\n"
	if t == KeepalivedTuned || t == KeepalivedTrackProcess {
		global = "  vrrp_version 3\n"
		advert = "  advert_int 0.1\n"
		script = "  interval 1\n  weight 2\n  fall 1\n  rise 1\n"
	}
	check := fmt.Sprintf("vrrp_script chk_haproxy {\n  script \"%s -0 %s\"\n%s}", killall, n.HAProxyName(), script)
	track := "track_script"
	if t == KeepalivedTrackProcess {
		check = fmt.Sprintf("vrrp_track_process chk_haproxy {\n  process %s\n  weight 2\n  quorum 1\n}", n.HAProxyName())
		track = "track_process"
	}
	return fmt.Sprintf(`! keepalived for %[1]s: the seed configuration adapted to the testbed
global_defs {
  router_id %[1]s
  script_user root
%[2]s}

%[7]s

vrrp_instance VI_1 {
  interface eth0
  state %[3]s
  virtual_router_id 51
  priority %[4]d
%[5]s
  virtual_ipaddress {
    %[6]s
  }

  %[8]s {
    chk_haproxy
  }
}
`, n.Name, global, state, n.Priority, advert, VIP, check, track)
}

// StartKeepalived writes the config and runs keepalived (foreground, VRRP
// only, logging to its log file) in the node namespace.
func (n *Node) StartKeepalived(t KeepalivedTuning) error {
	kaMu.Lock()
	defer kaMu.Unlock()
	if kaProcs[n].Running() {
		return fmt.Errorf("keepalived on %s already running", n.Name)
	}
	killall := filepath.Join(n.tb.Dir, "killall")
	if err := os.WriteFile(killall, []byte(KeepalivedKillall), 0o755); err != nil {
		return err
	}
	cfg := filepath.Join(n.tb.Dir, n.Name+"-keepalived.conf")
	if err := os.WriteFile(cfg, []byte(n.KeepalivedConfig(t)), 0o644); err != nil {
		return err
	}
	run := filepath.Join(n.tb.Dir, "keepalived-"+n.Name)
	if err := os.MkdirAll(run, 0o755); err != nil {
		return err
	}
	p, err := startProc(n.NS, "keepalived@"+n.Name, n.tb.logPath("keepalived-"+n.Name), nil, KeepalivedBinary,
		"--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"--use-file", cfg,
		"--pid", filepath.Join(run, "keepalived.pid"),
		"--vrrp_pid", filepath.Join(run, "vrrp.pid"),
		"--checkers_pid", filepath.Join(run, "checkers.pid"),
	)
	if err != nil {
		return err
	}
	kaProcs[n] = p
	return nil
}

// Keepalived is the node's keepalived parent process (nil if never started).
func (n *Node) Keepalived() *Proc {
	kaMu.Lock()
	defer kaMu.Unlock()
	return kaProcs[n]
}

// StopKeepalived sends SIGTERM (keepalived then sends a priority-0 advert
// and removes the VIP) and waits up to 10 s.
func (n *Node) StopKeepalived() error {
	if p := n.Keepalived(); p != nil {
		return p.Stop(10 * time.Second)
	}
	return nil
}

// SignalKeepalived sends sig to keepalived's parent process.
func (n *Node) SignalKeepalived(sig syscall.Signal) error {
	p := n.Keepalived()
	if p == nil {
		return fmt.Errorf("keepalived on %s never started", n.Name)
	}
	return p.Signal(sig)
}

// StopAllKeepalived stops keepalived on every node of tb (gracefully, then
// SIGKILL). Close also kills them with their namespaces.
func (tb *Testbed) StopAllKeepalived() {
	for _, n := range tb.Nodes {
		n.StopKeepalived()
	}
}
