package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/nscheck"
)

// Helpers for the benchmarks in bench/: extra nodes on the LAN and one-shot
// commands inside a testbed namespace.

// AddNode creates one more node namespace on the LAN bridge (eth0 with ip/24
// and the usual fixed MAC) and appends it to tb.Nodes, so Close stops its
// vipd and deletes it. The holder monitor does not follow it unless Follow
// is called. Not safe concurrently with other testbed calls that read
// tb.Nodes.
func (tb *Testbed) AddNode(name, short, ip string, priority int) (*Node, error) {
	br, err := tb.LAN.NL.LinkByName("br0")
	if err != nil {
		return nil, err
	}
	h := Host{Name: name, Short: short}
	if h.IP, err = netip.ParseAddr(ip); err != nil {
		return nil, err
	}
	h.MAC = macFor(h.IP)
	if h.NS, err = tb.newNetns(short); err != nil {
		return nil, err
	}
	if err := tb.connect(&h, br.Attrs().Index); err != nil {
		return nil, err
	}
	n := &Node{Host: h, Priority: priority, tb: tb}
	tb.Nodes = append(tb.Nodes, n)
	return n, nil
}

// Follow makes the holder monitor follow the seed VIP on n, a node added
// with AddNode (both views: the ordered one and a per-namespace
// subscription). n holds no VIP yet.
func (tb *Testbed) Follow(n *Node) error {
	if err := tb.Mon.assignNSID(tb.LAN, n, 100+len(tb.Nodes)); err != nil {
		return err
	}
	if err := tb.Mon.watch(n.Name, n.NS); err != nil {
		return err
	}
	if has, err := n.HasVIP(); err != nil {
		return err
	} else if has {
		tb.Mon.record(time.Now(), n.Name, true)
	}
	return nil
}

// Command returns a command that runs argv inside ns (through `ip netns
// exec`), with the host-namespace inode in the environment so testbed tools
// can refuse the host namespace. The caller runs and waits for it.
func (n *Netns) Command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	cmd.Env = append(os.Environ(), nscheck.HostEnv+"="+strconv.FormatUint(hostIno, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run runs argv inside ns and returns its combined output; the error
// includes the output.
func (n *Netns) Run(ctx context.Context, argv ...string) (string, error) {
	out, err := n.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %v: %s", strings.Join(argv, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Probing reports whether the client probe is running (it stops by itself
// after 30 minutes; benchmarks restart it with StartProbe).
func (tb *Testbed) Probing() bool {
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	return tb.probe.Running()
}
