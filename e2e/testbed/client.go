package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// Neigh is the client's neighbour entry for an address.
type Neigh struct {
	MAC   net.HardwareAddr
	State string
}

// ClientNeigh returns the client namespace's neighbour (ARP) entry for the VIP.
func (tb *Testbed) ClientNeigh() (Neigh, error) {
	l, err := tb.Client.NS.NL.LinkByName("eth0")
	if err != nil {
		return Neigh{}, err
	}
	ns, err := tb.Client.NS.NL.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return Neigh{}, err
	}
	for _, e := range ns {
		if e.IP.Equal(net.IP(VIP.Addr().AsSlice())) {
			return Neigh{MAC: e.HardwareAddr, State: nudString(e.State)}, nil
		}
	}
	return Neigh{}, errors.New("client has no neighbour entry for the VIP")
}

// NodeByMAC names the node whose eth0 has mac ("" if none).
func (tb *Testbed) NodeByMAC(mac net.HardwareAddr) string {
	for _, n := range tb.Nodes {
		if m, err := n.EthMAC(); err == nil && m.String() == mac.String() {
			return n.Name
		}
	}
	return ""
}

func nudString(s int) string {
	names := []struct {
		bit  int
		name string
	}{{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"}}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return strings.Join(out, "|")
}

// StartProbe runs vipd-probe in the client namespace against the VIP.
func (tb *Testbed) StartProbe() error {
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	if tb.probe.Running() {
		return errors.New("probe already running")
	}
	if tb.probeLog == nil {
		f, err := os.Create(tb.logPath("probe-timeline"))
		if err != nil {
			return err
		}
		tb.probeLog = f
	}
	url := "http://" + VIP.Addr().String() + probePath
	p, err := startProc(tb.Client.NS, "vipd-probe", tb.logPath("probe"), &lineWriter{fn: tb.addProbe}, tb.bin("vipd-probe"),
		"--url", url, "--interval", tb.Opts.ProbeInterval.String(), "--timeout", tb.Opts.ProbeTimeout.String(), "--duration", "30m")
	if err != nil {
		return err
	}
	tb.probe = p
	return nil
}

func (tb *Testbed) addProbe(line string) {
	r, err := ParseProbeLine(line)
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	if tb.probeLog != nil {
		io.WriteString(tb.probeLog, line+"\n")
	}
	if err == nil {
		tb.probes = append(tb.probes, r)
	}
}

// StopProbe stops the probe (SIGTERM) and waits for its last lines.
func (tb *Testbed) StopProbe() error {
	tb.probeMu.Lock()
	p := tb.probe
	tb.probeMu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop(3 * time.Second)
}

// Probes returns every probe result so far, sorted by start time.
func (tb *Testbed) Probes() Timeline {
	tb.probeMu.Lock()
	defer tb.probeMu.Unlock()
	return NewTimeline(tb.probes)
}

// WaitAnswer waits until a probe started at or after since is answered by node.
func (tb *Testbed) WaitAnswer(node string, since time.Time, timeout time.Duration) (ProbeResult, error) {
	deadline := time.Now().Add(timeout)
	for {
		if p, ok := tb.Probes().Window(since, time.Time{}).FirstAnswerFrom(node); ok {
			return p, nil
		}
		if time.Now().After(deadline) {
			return ProbeResult{}, fmt.Errorf("client got no answer from %s within %v (answers since: %v)",
				node, timeout, tb.Probes().Window(since, time.Time{}).Counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lineWriter struct {
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// StartAll starts etcd, HAProxy and vipd on both nodes, and the probe.
func (tb *Testbed) StartAll() error {
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		return err
	}
	for _, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			return err
		}
	}
	for _, n := range tb.Nodes {
		if err := n.StartVipd(); err != nil {
			return err
		}
	}
	return tb.StartProbe()
}
