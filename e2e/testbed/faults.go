package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/vipd/vipd/e2e/nscheck"
)

// Fault injection helpers for the safety suite: packet filters inside a
// testbed namespace, an etcd client that lives inside the client namespace,
// the etcd leader, commands run inside a host, and the node's own eth0.
//
// Network rule: nft only ever runs through `ip netns exec <testbed ns>`, and
// the etcd client's every connection is made by Netns.DialContext (socket
// verified to be in the namespace before it connects).

// nftTable is the only table the testbed creates; Unblock deletes it.
const nftTable = "vipd_e2e"

// Exec runs argv inside h's namespace and returns its combined output.
func (h *Host) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return h.ExecInput(ctx, nil, argv...)
}

// ExecInput is Exec with stdin.
func (h *Host) ExecInput(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	if h.NS == nil || h.NS.Ino == hostIno {
		return nil, fmt.Errorf("%s: not a testbed namespace; refusing", h.Name)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS.Name}, argv...)...)
	cmd.Env = append(os.Environ(), nscheck.HostEnv+"="+strconv.FormatUint(hostIno, 10))
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// Filter is what Host.Apply drops in the host's namespace (both
// directions; other traffic is untouched).
type Filter struct {
	// Hosts: every packet to or from these addresses.
	Hosts []netip.Addr
	// PeerChannel: the peer channel between this host and these nodes,
	// both ways: TCP to or from port PeerPort on them, and TCP from them
	// to or from port PeerPort here. Everything else between them flows.
	PeerChannel []netip.Addr
}

// Block drops every packet between h and the given peers (both directions,
// in h's namespace only), with nftables. Other traffic is untouched. Calling
// it again (or Apply) replaces the filter.
func (h *Host) Block(peers ...netip.Addr) error {
	if len(peers) == 0 {
		return errors.New("block: no peers")
	}
	return h.Apply(Filter{Hosts: peers})
}

// BlockPeerChannel drops the peer channel (TCP port PeerPort, both ways)
// between h and the given nodes, and nothing else. It replaces any filter
// installed before.
func (h *Host) BlockPeerChannel(nodes ...netip.Addr) error {
	if len(nodes) == 0 {
		return errors.New("block peer channel: no nodes")
	}
	return h.Apply(Filter{PeerChannel: nodes})
}

// Apply installs f with nftables in h's namespace, replacing the filter
// installed before (Unblock removes it).
func (h *Host) Apply(f Filter) error {
	if len(f.Hosts) == 0 && len(f.PeerChannel) == 0 {
		return errors.New("filter: nothing to drop")
	}
	set := func(as []netip.Addr) string {
		var ss []string
		for _, a := range as {
			ss = append(ss, a.String())
		}
		return "{ " + strings.Join(ss, ", ") + " }"
	}
	var in, out []string
	if len(f.Hosts) > 0 {
		s := set(f.Hosts)
		in = append(in, "ip saddr "+s+" drop")
		out = append(out, "ip daddr "+s+" drop")
	}
	if len(f.PeerChannel) > 0 {
		s := set(f.PeerChannel)
		in = append(in, fmt.Sprintf("ip saddr %s tcp sport %d drop", s, PeerPort), fmt.Sprintf("ip saddr %s tcp dport %d drop", s, PeerPort))
		out = append(out, fmt.Sprintf("ip daddr %s tcp dport %d drop", s, PeerPort), fmt.Sprintf("ip daddr %s tcp sport %d drop", s, PeerPort))
	}
	script := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain in {
		type filter hook input priority -10; policy accept;
		%[2]s
	}
	chain out {
		type filter hook output priority -10; policy accept;
		%[3]s
	}
}
`, nftTable, strings.Join(in, "\n\t\t"), strings.Join(out, "\n\t\t"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := h.ExecInput(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Unblock removes the filter Block installed (no-op if none).
func (h *Host) Unblock() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	script := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", nftTable)
	if out, err := h.ExecInput(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SetEthUp sets the host's own eth0 administratively up or down (inside its
// namespace; the bridge port stays up).
func (h *Host) SetEthUp(up bool) error {
	l, err := h.NS.NL.LinkByName("eth0")
	if err != nil {
		return err
	}
	if up {
		return h.NS.NL.LinkSetUp(l)
	}
	return h.NS.NL.LinkSetDown(l)
}

// AddAddr and DelAddr put an extra address on the host's eth0 (or take it
// away), e.g. to give `vipd cleanup` something to remove.
func (h *Host) AddAddr(p netip.Prefix) error { return h.addrOp(p, true) }

// DelAddr removes an address from eth0.
func (h *Host) DelAddr(p netip.Prefix) error { return h.addrOp(p, false) }

func (h *Host) addrOp(p netip.Prefix, add bool) error {
	l, err := h.NS.NL.LinkByName("eth0")
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if add {
		return h.NS.NL.AddrAdd(l, a)
	}
	return h.NS.NL.AddrDel(l, a)
}

// HasAddr reports whether eth0 carries the address of p.
func (h *Host) HasAddr(p netip.Prefix) (bool, error) { return h.AddrOn("eth0", p.Addr()) }

// EtcdClient returns an etcd v3 client that runs inside ns: every gRPC
// connection is dialled by ns.DialContext. endpoints default to every member.
func (tb *Testbed) EtcdClient(ns *Netns, endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = tb.Endpoints()
	}
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, "tcp", addr)
		})},
	})
}

// EtcdStatus is what one member says about the cluster.
type EtcdStatus struct {
	Member   *EtcdMember
	ID       uint64
	Leader   uint64 // 0: no leader known
	RaftTerm uint64
	Err      error
}

// EtcdStatuses asks every running member for its status (through cli, from
// inside the client namespace), each with its own timeout.
func (tb *Testbed) EtcdStatuses(cli *clientv3.Client, timeout time.Duration) []EtcdStatus {
	out := make([]EtcdStatus, len(tb.Etcd))
	done := make(chan struct{}, len(tb.Etcd))
	for i, m := range tb.Etcd {
		go func() {
			defer func() { done <- struct{}{} }()
			out[i].Member = m
			if !m.Proc().Running() {
				out[i].Err = errors.New("not running")
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			st, err := cli.Status(ctx, m.ClientURL())
			if err != nil {
				out[i].Err = err
				return
			}
			out[i].ID, out[i].Leader, out[i].RaftTerm = st.Header.MemberId, st.Leader, st.RaftTerm
		}()
	}
	for range tb.Etcd {
		<-done
	}
	return out
}

// EtcdLeader waits up to timeout until a running member (other than those
// in exclude) reports itself leader, agreed by every other running member
// that answers, and returns it.
func (tb *Testbed) EtcdLeader(cli *clientv3.Client, timeout time.Duration, exclude ...*EtcdMember) (*EtcdMember, uint64, error) {
	deadline := time.Now().Add(timeout)
	var last []EtcdStatus
	for {
		last = tb.EtcdStatuses(cli, 300*time.Millisecond)
		var leader *EtcdMember
		var term uint64
		agree := true
		for _, s := range last {
			if s.Err != nil {
				continue
			}
			if s.ID == s.Leader && s.Leader != 0 {
				leader, term = s.Member, s.RaftTerm
			}
		}
		if leader != nil {
			for _, x := range exclude {
				if x == leader {
					leader = nil
				}
			}
		}
		if leader != nil {
			var lid uint64
			for _, s := range last {
				if s.Member == leader {
					lid = s.ID
				}
			}
			for _, s := range last {
				if s.Err == nil && s.Leader != lid {
					agree = false
				}
			}
			if agree {
				return leader, term, nil
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, s := range last {
				fmt.Fprintf(&b, " %s: id %x leader %x term %d err %v;", s.Member.Name, s.ID, s.Leader, s.RaftTerm, s.Err)
			}
			return nil, 0, fmt.Errorf("no agreed etcd leader within %v:%s", timeout, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
