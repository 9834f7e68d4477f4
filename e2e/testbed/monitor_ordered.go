package testbed

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// watchOrdered opens one NETLINK_ROUTE socket in the lan namespace that
// listens to IPv4 address events of every peer namespace with an ID there
// (NETLINK_LISTEN_ALL_NSID), assigns IDs to the node namespaces, and feeds
// the ordered view. It only receives: netlink messages never leave the host.
func (m *Monitor) watchOrdered(lan *Netns, nodes []*Node) error {
	for i, n := range nodes {
		if err := m.assignNSID(lan, n, 100+i); err != nil {
			return err
		}
	}

	f, rc, err := allNSIDSocket(lan, unix.RTMGRP_IPV4_IFADDR, "netlink-listen-all-nsid")
	if err != nil {
		return err
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); <-m.done; f.Close() }()
	go func() {
		defer m.wg.Done()
		buf := make([]byte, 1<<16)
		oob := make([]byte, 512)
		for {
			n, oobn, err, rerr := recvmsg(rc, buf, oob)
			now := time.Now()
			if err != nil {
				if !m.stopping() {
					m.addErr(fmt.Errorf("ordered monitor: %w", err))
				}
				return
			}
			if rerr != nil {
				if m.stopping() {
					return
				}
				m.addErr(fmt.Errorf("ordered monitor recvmsg (events may be lost): %w", rerr))
				if rerr == unix.ENOBUFS {
					continue
				}
				return
			}
			m.mu.Lock()
			node, ok := m.byID[nsidOf(oob[:oobn])]
			m.mu.Unlock()
			if !ok {
				continue
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				m.addErr(fmt.Errorf("ordered monitor: %w", err))
				continue
			}
			for i := range msgs {
				t := msgs[i].Header.Type
				if t != unix.RTM_NEWADDR && t != unix.RTM_DELADDR {
					continue
				}
				if m.isVIP(&msgs[i]) {
					m.record(now, node, t == unix.RTM_NEWADDR)
				}
			}
		}
	}()
	return nil
}

// assignNSID gives n's namespace a peer ID in lan (want, unless it has one
// already) and maps it to n for the ordered view. The socket hears every
// namespace with an ID, so a node added later is followed from here on.
func (m *Monitor) assignNSID(lan *Netns, n *Node, want int) error {
	id, err := lan.NL.GetNetNsIdByFd(int(n.NS.Handle))
	if err != nil {
		return fmt.Errorf("get nsid of %s in %s: %w", n.NS.Name, lan.Name, err)
	}
	if id < 0 {
		if err := lan.NL.SetNetNsIdByFd(int(n.NS.Handle), want); err != nil {
			return fmt.Errorf("set nsid of %s in %s: %w", n.NS.Name, lan.Name, err)
		}
		if id, err = lan.NL.GetNetNsIdByFd(int(n.NS.Handle)); err != nil || id < 0 {
			return fmt.Errorf("nsid of %s in %s after set: %d %v", n.NS.Name, lan.Name, id, err)
		}
	}
	m.mu.Lock()
	if m.byID == nil {
		m.byID = map[int32]string{}
	}
	m.byID[int32(id)] = n.Name
	if _, ok := m.holding[n.Name]; !ok {
		m.holding[n.Name] = false
	}
	m.mu.Unlock()
	return nil
}

// nsidOf extracts the peer namespace ID from the control messages (-1 if
// the message came from the socket's own namespace).
func nsidOf(oob []byte) int32 {
	scms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, c := range scms {
		if c.Header.Level == unix.SOL_NETLINK && c.Header.Type == unix.NETLINK_LISTEN_ALL_NSID && len(c.Data) >= 4 {
			return int32(binary.NativeEndian.Uint32(c.Data))
		}
	}
	return -1
}

func (m *Monitor) isVIP(msg *syscall.NetlinkMessage) bool {
	attrs, err := syscall.ParseNetlinkRouteAttr(msg)
	if err != nil {
		return false
	}
	for _, a := range attrs {
		if (a.Attr.Type == unix.IFA_LOCAL || a.Attr.Type == unix.IFA_ADDRESS) && len(a.Value) == 4 && net.IP(a.Value).Equal(m.vip) {
			return true
		}
	}
	return false
}

// allNSIDSocket opens, in the lan namespace, a non-blocking (poller-driven)
// rtnetlink socket bound to groups that also hears every namespace lan has
// a peer id for (NETLINK_LISTEN_ALL_NSID): one ordered stream of events
// from all hosts.
func allNSIDSocket(lan *Netns, groups uint32, name string) (*os.File, syscall.RawConn, error) {
	var fd int
	if err := lan.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("netlink socket in %s: %w", lan.Name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_LISTEN_ALL_NSID, 1); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("NETLINK_LISTEN_ALL_NSID: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("bind netlink: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}

// recvmsg reads one datagram from an allNSIDSocket, waiting in the poller.
// err is the poller's error, rerr recvmsg's (ENOBUFS: events were lost).
func recvmsg(rc syscall.RawConn, buf, oob []byte) (n, oobn int, err, rerr error) {
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
		return rerr != unix.EAGAIN
	})
	return n, oobn, err, rerr
}
