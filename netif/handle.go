package netif

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkTimeout bounds every request on the handle's netlink socket, so a
// wedged kernel call cannot hold the caller past its fence deadline.
const netlinkTimeout = 2 * time.Second

// maxLifetime is the largest finite lifetime the kernel accepts:
// 0xffffffff seconds means "forever", which would defeat the dead-man's
// switch, so Replace clamps to one second less.
const maxLifetime = math.MaxUint32 - 1

// Handle manages addresses on links of one network namespace via netlink.
// Its methods are safe for concurrent use.
type Handle struct {
	log *slog.Logger

	// mu guards closed and the use of nl and ns: every method holds it
	// shared while it talks to the kernel, Close holds it exclusively. A
	// closed netlink.Handle silently falls back to the calling thread's
	// namespace, so it must never be used after Close.
	mu     sync.RWMutex
	closed bool
	nl     *netlink.Handle
	ns     netns.NsHandle // owned by Handle; closed by Close; None = own namespace, never setns
}

// acquire takes mu shared; it fails once the Handle is closed.
func (h *Handle) acquire() error {
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (h *Handle) release() { h.mu.RUnlock() }

// NewHandle returns a Handle for vipd's own network namespace: the
// namespace of the calling thread when it is created (and of Watch's and
// the ARP probe's sockets when they are opened). It never calls setns,
// which would need CAP_SYS_ADMIN: vipd runs with only CAP_NET_ADMIN and
// CAP_NET_RAW.
func NewHandle(log *slog.Logger) (*Handle, error) {
	return newHandle(netns.None(), log)
}

// NewHandleAt returns a Handle for the network namespace ns. The Handle
// keeps its own duplicate of ns, so the caller may close ns afterwards.
func NewHandleAt(ns netns.NsHandle, log *slog.Logger) (*Handle, error) {
	if !ns.IsOpen() {
		return nil, errors.New("netif: network namespace handle is not open")
	}
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netif: duplicate network namespace handle: %w", err)
	}
	own := netns.NsHandle(fd)
	h, err := newHandle(own, log)
	if err != nil {
		own.Close()
		return nil, err
	}
	return h, nil
}

func newHandle(ns netns.NsHandle, log *slog.Logger) (*Handle, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var nh *netlink.Handle
	var err error
	if ns.IsOpen() {
		nh, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		nh, err = netlink.NewHandle(unix.NETLINK_ROUTE) // no setns
	}
	if err != nil {
		return nil, fmt.Errorf("netif: open rtnetlink socket: %w", err)
	}
	if err := nh.SetSocketTimeout(netlinkTimeout); err != nil {
		nh.Close()
		return nil, fmt.Errorf("netif: set rtnetlink socket timeout: %w", err)
	}
	return &Handle{nl: nh, ns: ns, log: log}, nil
}

// Close releases the netlink socket and the namespace handle; later calls
// fail with ErrClosed. Close is idempotent. Watches started from h keep
// running until their context is done.
func (h *Handle) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.nl.Close()
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

// link looks ifname up, mapping "not found" to ErrNoInterface. Unexported
// methods expect the caller to hold mu via acquire.
func (h *Handle) link(ifname string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%w: %q", ErrNoInterface, ifname)
		}
		return nil, fmt.Errorf("netif: look up interface %q: %w", ifname, err)
	}
	return l, nil
}

// nlAddr converts p for netlink, with the prefix length of p and the exact
// host address (not the masked network).
func nlAddr(p netip.Prefix) *netlink.Addr {
	a := p.Addr().Unmap()
	bits := a.BitLen()
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(a.AsSlice()),
		Mask: net.CIDRMask(p.Bits(), bits),
	}}
}

func validPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("netif: invalid address %v", p)
	}
	return nil
}

// Replace binds p on ifname with valid_lft = preferred_lft = lifetime
// floored to whole seconds (clamped below the kernel's "forever").
//
// A lifetime under one second returns an error wrapping ErrLifetimeTooShort
// and touches nothing. The address is first added with NLM_F_EXCL; if it is
// already there (EEXIST) it is refreshed with AddrReplace, which resets its
// lifetime in place: the address never disappears, so no flap. IPv6
// addresses get IFA_F_NODAD so they are usable at once (the VIP must not
// wait out duplicate address detection; the election, not DAD, decides who
// holds it).
//
// The kernel removes the address up to about a second after the lifetime
// ends (see the package doc), so to have it gone by a deadline pass at most
// the time left to the deadline minus one second.
//
// added reports whether the kernel created the address in this call, so the
// caller knows to announce it.
func (h *Handle) Replace(ifname string, p netip.Prefix, lifetime time.Duration) (added bool, err error) {
	return h.replace(ifname, p, lifetime, AddrOptions{})
}

func (h *Handle) replace(ifname string, p netip.Prefix, lifetime time.Duration, o AddrOptions) (added bool, err error) {
	return h.setAddr(ifname, p, lifetime, o, false)
}

// setAddr adds or refreshes p. With refreshOnly it sends one replace
// (create-or-replace) request instead of an exclusive add and then a
// replace: the cheap path for refreshing the lifetime of an address the
// caller knows is bound (added is then always false).
func (h *Handle) setAddr(ifname string, p netip.Prefix, lifetime time.Duration, o AddrOptions, refreshOnly bool) (added bool, err error) {
	if err := validPrefix(p); err != nil {
		return false, err
	}
	if lifetime < time.Second {
		return false, fmt.Errorf("%w: %v for %v on %q", ErrLifetimeTooShort, lifetime, p, ifname)
	}
	secs := int64(lifetime / time.Second)
	if secs > maxLifetime {
		secs = maxLifetime
	}
	if err := h.acquire(); err != nil {
		return false, err
	}
	defer h.release()
	l, err := h.link(ifname)
	if err != nil {
		return false, err
	}
	// A fresh Addr per request: netlink mutates the one it is given.
	mk := func() *netlink.Addr {
		a := nlAddr(p)
		a.ValidLft = int(secs)
		a.PreferedLft = int(secs)
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		} else {
			// No broadcast address next to a VIP (as `ip addr add`
			// without brd); netlink would otherwise derive one.
			a.Broadcast = net.IPv4zero
			a.Label = o.Label
			a.Scope = int(o.Scope)
		}
		return a
	}
	if refreshOnly {
		if err := h.nl.AddrReplace(l, mk()); err != nil {
			return false, fmt.Errorf("netif: refresh %v on %q: %w", p, ifname, err)
		}
		return false, nil
	}
	err = h.nl.AddrAdd(l, mk())
	switch {
	case err == nil:
		h.log.Debug("address added", "interface", ifname, "address", p, "lifetime_s", secs, "label", o.Label, "scope", o.Scope)
		return true, nil
	case errors.Is(err, unix.EEXIST):
		// Present already: refresh its lifetime in place.
	case errors.Is(err, unix.ENODEV):
		return false, fmt.Errorf("%w: %q (adding %v)", ErrNoInterface, ifname, p)
	default:
		return false, fmt.Errorf("netif: add %v on %q: %w", p, ifname, err)
	}
	if err := h.nl.AddrReplace(l, mk()); err != nil {
		return false, fmt.Errorf("netif: refresh %v on %q: %w", p, ifname, err)
	}
	return false, nil
}

// Remove deletes p (address and prefix length must both match) from
// ifname. It is idempotent: an absent address gives removed=false and no
// error. A missing interface gives an error wrapping ErrNoInterface.
func (h *Handle) Remove(ifname string, p netip.Prefix) (removed bool, err error) {
	if err := validPrefix(p); err != nil {
		return false, err
	}
	if err := h.acquire(); err != nil {
		return false, err
	}
	defer h.release()
	return h.remove(ifname, p)
}

func (h *Handle) remove(ifname string, p netip.Prefix) (bool, error) {
	l, err := h.link(ifname)
	if err != nil {
		return false, err
	}
	if err := h.nl.AddrDel(l, nlAddr(p)); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		if errors.Is(err, unix.ENODEV) {
			return false, fmt.Errorf("%w: %q (removing %v)", ErrNoInterface, ifname, p)
		}
		return false, fmt.Errorf("netif: remove %v from %q: %w", p, ifname, err)
	}
	h.log.Debug("address removed", "interface", ifname, "address", p)
	return true, nil
}

// RemoveAddr deletes every address on ifname whose IP is ip, whatever its
// prefix length, and reports how many it removed. It is the fail-closed
// cleanup for a VIP that someone bound with a different prefix length.
func (h *Handle) RemoveAddr(ifname string, ip netip.Addr) (int, error) {
	if err := h.acquire(); err != nil {
		return 0, err
	}
	defer h.release()
	ps, err := h.addrs(ifname)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range ps {
		if p.Addr() != ip.Unmap() {
			continue
		}
		ok, err := h.remove(ifname, p)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// Addrs lists the addresses on ifname (both families).
func (h *Handle) Addrs(ifname string) ([]netip.Prefix, error) {
	if err := h.acquire(); err != nil {
		return nil, err
	}
	defer h.release()
	return h.addrs(ifname)
}

func (h *Handle) addrs(ifname string) ([]netip.Prefix, error) {
	l, err := h.link(ifname)
	if err != nil {
		return nil, err
	}
	as, err := h.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("netif: list addresses on %q: %w", ifname, err)
	}
	out := make([]netip.Prefix, 0, len(as))
	for _, a := range as {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// Has reports whether p (address and prefix length) is bound on ifname.
func (h *Handle) Has(ifname string, p netip.Prefix) (bool, error) {
	if err := validPrefix(p); err != nil {
		return false, err
	}
	ps, err := h.Addrs(ifname)
	if err != nil {
		return false, err
	}
	want := netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	for _, q := range ps {
		if q == want {
			return true, nil
		}
	}
	return false, nil
}

// LinkUp reports whether ifname can carry the VIP: it is administratively
// up (IFF_UP) and its RFC 2863 operational state is "up", or "unknown" for
// drivers that do not report one (loopback, tun). Any other operational
// state counts as down; in particular a veth whose peer is down reports
// IF_OPER_LOWERLAYERDOWN or IF_OPER_DOWN and is not up.
func (h *Handle) LinkUp(ifname string) (bool, error) {
	if err := h.acquire(); err != nil {
		return false, err
	}
	defer h.release()
	l, err := h.link(ifname)
	if err != nil {
		return false, err
	}
	return linkIsUp(l.Attrs()), nil
}

func linkIsUp(a *netlink.LinkAttrs) bool {
	if a.RawFlags&unix.IFF_UP == 0 {
		return false
	}
	return a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
}

// prefixOf converts a netlink address to a Prefix holding the host address.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 128 && a.Is4() {
		ones -= 96 // an IPv4 address with an IPv6-length mask
	}
	if bits == 0 || ones < 0 || ones > a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}
