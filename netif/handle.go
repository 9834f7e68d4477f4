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

	"github.com/vipd/vipd/internal/clock"
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

	// calls feeds the one goroutine that uses nl (see exec); Close closes
	// it once no method holds mu.
	calls chan func()
	// links caches interface lookups for address requests; owned by the
	// netlink goroutine.
	links map[string]cachedLink
	// boundOn records the interface indexes each address was added or
	// refreshed on, so Unbind knows when a copy may be left on another
	// link (an interface renamed and another created under its name
	// within the cache's TTL); owned by the netlink goroutine.
	boundOn map[netip.Prefix]map[int]struct{}
	// clk times the cache; the system clock unless a test sets another.
	clk clock.Clock
}

type cachedLink struct {
	link netlink.Link
	at   time.Time
}

// linkCacheTTL bounds how long an address request trusts a cached
// interface lookup. Refreshing the lifetimes of a thousand VIPs would
// otherwise cost a thousand RTM_GETLINK dumps of the same interface every
// renewal. A request on a link that has gone away fails with ENODEV and is
// retried with a fresh lookup; an interface renamed within the TTL could
// get one request meant for its old name, and that address still expires
// with its kernel lifetime.
const linkCacheTTL = time.Second

// exec runs f on the Handle's netlink goroutine, the only one that uses
// nl; the caller must hold mu via acquire. The socket serialises requests
// anyway, and vishvananda/netlink receives into a 64 KiB array on the
// calling goroutine's stack: a thousand group loops calling it directly
// each grew a 128 KiB stack (125 MB at 1000 groups) that the GC scanned on
// every cycle.
func (h *Handle) exec(f func()) {
	done := make(chan struct{})
	h.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

func (h *Handle) serve() {
	for f := range h.calls {
		f()
	}
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
	h := &Handle{nl: nh, ns: ns, log: log, calls: make(chan func()), links: map[string]cachedLink{},
		boundOn: map[netip.Prefix]map[int]struct{}{}, clk: clock.Real{}}
	go h.serve()
	return h, nil
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
	close(h.calls) // no method holds mu, so no call is queued or running
	h.nl.Close()
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

// addrLink returns ifname's link for an address request, from the cache if
// it is younger than linkCacheTTL. cached tells the caller that an ENODEV
// may just mean a stale entry (see retryStale). Unexported methods that use
// nl run on the netlink goroutine (exec).
func (h *Handle) addrLink(ifname string) (l netlink.Link, cached bool, err error) {
	if c, ok := h.links[ifname]; ok && clock.Since(h.clk, c.at) < linkCacheTTL {
		return c.link, true, nil
	}
	l, err = h.link(ifname)
	if err != nil {
		delete(h.links, ifname)
		return nil, false, err
	}
	h.links[ifname] = cachedLink{link: l, at: h.clk.Now()}
	return l, false, nil
}

// withAddrLink runs req on ifname's link and, if it fails with ENODEV on a
// cached link (the interface was deleted, perhaps re-created with a new
// index), once more on a fresh lookup.
func (h *Handle) withAddrLink(ifname string, req func(netlink.Link) error) error {
	l, cached, err := h.addrLink(ifname)
	if err != nil {
		return err
	}
	err = req(l)
	if cached && errors.Is(err, unix.ENODEV) {
		delete(h.links, ifname)
		if l, _, err = h.addrLink(ifname); err != nil {
			return err
		}
		err = req(l)
	}
	return err
}

// link looks ifname up afresh, mapping "not found" to ErrNoInterface.
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

// setAddr adds or refreshes p with a fixed lifetime. With refreshOnly it
// sends one replace (create-or-replace) request instead of an exclusive add
// and then a replace: the cheap path for refreshing the lifetime of an
// address the caller knows is bound (added is then always false).
func (h *Handle) setAddr(ifname string, p netip.Prefix, lifetime time.Duration, o AddrOptions, refreshOnly bool) (added bool, err error) {
	if lifetime < time.Second {
		return false, fmt.Errorf("%w: %v for %v on %q", ErrLifetimeTooShort, lifetime, p, ifname)
	}
	b, err := h.bind(ifname, p, func(time.Time) (time.Duration, bool) { return lifetime, true }, o, refreshOnly)
	return b.Added, err
}

// bind adds or refreshes p with the lifetime that lifetimeAt gives for the
// moment the request is issued, on the netlink goroutine: a caller that
// waited behind other requests gets a lifetime counted from when its own
// request leaves, not from when it asked.
func (h *Handle) bind(ifname string, p netip.Prefix, lifetimeAt func(issued time.Time) (time.Duration, bool), o AddrOptions, refreshOnly bool) (b Binding, err error) {
	if err := validPrefix(p); err != nil {
		return Binding{}, err
	}
	if err := h.acquire(); err != nil {
		return Binding{}, err
	}
	defer h.release()
	h.exec(func() {
		b.Issued = h.clk.Now()
		lifetime, ok := lifetimeAt(b.Issued)
		if !ok {
			err = fmt.Errorf("%w: no whole second left for %v on %q", ErrLifetimeTooShort, p, ifname)
			return
		}
		secs := min(int64(lifetime/time.Second), maxLifetime)
		b.Lifetime = time.Duration(secs) * time.Second
		b.Added, err = h.setAddrNL(ifname, p, secs, o, refreshOnly)
		b.Acked = h.clk.Now()
	})
	return b, err
}

func (h *Handle) setAddrNL(ifname string, p netip.Prefix, secs int64, o AddrOptions, refreshOnly bool) (added bool, err error) {
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
	// on records the link of the request that succeeded.
	on := func(req func(netlink.Link) error) func(netlink.Link) error {
		return func(l netlink.Link) error {
			err := req(l)
			if err == nil || errors.Is(err, unix.EEXIST) {
				if h.boundOn[p] == nil {
					h.boundOn[p] = map[int]struct{}{}
				}
				h.boundOn[p][l.Attrs().Index] = struct{}{}
			}
			return err
		}
	}
	replace := on(func(l netlink.Link) error { return h.nl.AddrReplace(l, mk()) })
	if refreshOnly {
		if err := h.withAddrLink(ifname, replace); err != nil {
			return false, linkErr(err, ifname, "refresh", p)
		}
		return false, nil
	}
	err = h.withAddrLink(ifname, on(func(l netlink.Link) error { return h.nl.AddrAdd(l, mk()) }))
	switch {
	case err == nil:
		h.log.Debug("address added", "interface", ifname, "address", p, "lifetime_s", secs, "label", o.Label, "scope", o.Scope)
		return true, nil
	case errors.Is(err, unix.EEXIST):
		// Present already: refresh its lifetime in place.
	default:
		return false, linkErr(err, ifname, "add", p)
	}
	if err := h.withAddrLink(ifname, replace); err != nil {
		return false, linkErr(err, ifname, "refresh", p)
	}
	return false, nil
}

// linkErr wraps the error of an address request: a missing interface
// (ENODEV from the kernel, or the lookup's ErrNoInterface) as
// ErrNoInterface, anything else as it is, naming what was tried.
func linkErr(err error, ifname, op string, p netip.Prefix) error {
	switch {
	case errors.Is(err, ErrNoInterface):
		return err
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%w: %q (%s %v)", ErrNoInterface, ifname, op, p)
	}
	return fmt.Errorf("netif: %s %v on %q: %w", op, p, ifname, err)
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
	h.exec(func() { removed, err = h.remove(ifname, p) })
	return removed, err
}

func (h *Handle) remove(ifname string, p netip.Prefix) (bool, error) {
	_, ok, err := h.removeAt(ifname, p)
	return ok, err
}

// removeAt is remove, also returning the index of the link it removed p
// from.
func (h *Handle) removeAt(ifname string, p netip.Prefix) (idx int, ok bool, err error) {
	err = h.withAddrLink(ifname, func(l netlink.Link) error {
		idx = l.Attrs().Index
		return h.nl.AddrDel(l, nlAddr(p))
	})
	switch {
	case err == nil:
		h.log.Debug("address removed", "interface", ifname, "address", p)
		return idx, true, nil
	case errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ESRCH):
		return idx, false, nil
	}
	return idx, false, linkErr(err, ifname, "remove", p)
}

// Addrs lists the addresses on ifname (both families).
func (h *Handle) Addrs(ifname string) ([]netip.Prefix, error) {
	if err := h.acquire(); err != nil {
		return nil, err
	}
	defer h.release()
	var ps []netip.Prefix
	var err error
	h.exec(func() { ps, err = h.addrs(ifname) })
	return ps, err
}

func (h *Handle) addrs(ifname string) ([]netip.Prefix, error) {
	// A fresh lookup: AddrList filters a dump by index, so a stale index
	// would list nothing rather than fail.
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
	var l netlink.Link
	var err error
	h.exec(func() { l, err = h.link(ifname) })
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
