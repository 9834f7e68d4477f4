package fakenet

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

// Recorder watches which nodes have which VIPs bound, across all fake
// hosts, and accumulates the time any one address was held by two or more
// nodes at once.
type Recorder struct {
	mu        sync.Mutex
	holders   map[string]map[netip.Addr]bool // node -> addresses bound
	dualSince time.Time
	dual      time.Duration
	log       []string
	changed   chan struct{}
}

func NewRecorder() *Recorder {
	return &Recorder{holders: map[string]map[netip.Addr]bool{}, changed: make(chan struct{})}
}

// SetAddrs records the addresses node has bound now.
func (r *Recorder) SetAddrs(node string, addrs map[netip.Addr]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := len(r.holders[node]) > 0
	same := len(r.holders[node]) == len(addrs)
	for a := range addrs {
		same = same && r.holders[node][a]
	}
	if same {
		return
	}
	r.holders[node] = addrs
	now := time.Now()
	if after := len(addrs) > 0; after != before {
		r.log = append(r.log, fmt.Sprintf("%s %s bound=%v", now.Format("15:04:05.000"), node, after))
	}
	dual := false
	seen := map[netip.Addr]bool{}
	for _, as := range r.holders {
		for a := range as {
			dual = dual || seen[a]
			seen[a] = true
		}
	}
	switch {
	case dual && r.dualSince.IsZero():
		r.dualSince = now
	case !dual && !r.dualSince.IsZero():
		r.dual += now.Sub(r.dualSince)
		r.dualSince = time.Time{}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Recorder) Holders() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, as := range r.holders {
		if len(as) > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// WaitFor waits until exactly want holds (want "" = nobody).
func (r *Recorder) WaitFor(t testing.TB, want string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		h := r.Holders()
		if (want == "" && len(h) == 0) || (len(h) == 1 && h[0] == want) {
			return time.Now()
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("holder is %v after %v, want %q; history:\n%s", h, timeout, want, strings.Join(r.History(), "\n"))
		}
	}
}

func (r *Recorder) History() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// DualHolding is how long any address was bound on two nodes at once.
func (r *Recorder) DualHolding() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dual
	if !r.dualSince.IsZero() {
		d += time.Since(r.dualSince)
	}
	return d
}

// Host is an in-memory interface table standing in for netlink in the
// no-root tier (the namespace tier runs the real one). It keeps what the
// kernel keeps that vipd relies on: addresses per interface with their
// lifetimes (an address is gone once its lifetime has run out on the
// host's clock), lookups by IP on any interface, renames; Intercept
// injects failures and stalls.
type Host struct {
	node string
	rec  *Recorder
	clk  clock.Clock

	mu     sync.Mutex
	addrs  map[netip.Prefix]hostAddr
	links  map[string]bool // interface name -> exists
	events chan netif.Event
	// intercept, if set, runs inside every address request, after the
	// request is issued and before the kernel would apply it: an error
	// fails the request (nothing applied); advancing a fake clock models
	// a stall inside the call.
	intercept func(op Op) error
	Garps     atomic.Int64
	garpTimes []time.Time           // host-clock time of each counted round, read before its gate check
	announced map[netip.Addr]string // the interface each IP was last announced on
}

type hostAddr struct {
	iface string
	until time.Time // lifetime end on the host's clock
}

// Op names an address request for Intercept.
type Op struct {
	Kind   string // "bind", "extend", "unbind", "remove-ips"
	Iface  string
	Prefix netip.Prefix
}

// NewHost returns a host with one interface, eth0, on the real clock.
func NewHost(node string, rec *Recorder) *Host {
	return NewHostAt(node, rec, clock.Real{})
}

// NewHostAt returns a host with one interface, eth0, whose address
// lifetimes run on clk.
func NewHostAt(node string, rec *Recorder, clk clock.Clock) *Host {
	return &Host{node: node, rec: rec, clk: clk, addrs: map[netip.Prefix]hostAddr{},
		links: map[string]bool{"eth0": true}, events: make(chan netif.Event, 16)}
}

// Intercept sets f to run inside every address request (nil: none).
func (h *Host) Intercept(f func(op Op) error) {
	h.mu.Lock()
	h.intercept = f
	h.mu.Unlock()
}

// Rename renames interface from to to; its addresses stay on it.
func (h *Host) Rename(from, to string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.links, from)
	h.links[to] = true
	for p, a := range h.addrs {
		if a.iface == from {
			a.iface = to
			h.addrs[p] = a
		}
	}
}

func (h *Host) call(op Op) error {
	h.mu.Lock()
	f := h.intercept
	h.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(op)
}

// expireLocked drops addresses whose lifetime has run out.
func (h *Host) expireLocked() {
	now := h.clk.Now()
	for p, a := range h.addrs {
		if !a.until.IsZero() && !now.Before(a.until) {
			delete(h.addrs, p)
		}
	}
	h.recordLocked()
}

func (h *Host) recordLocked() {
	if h.rec != nil {
		as := map[netip.Addr]bool{}
		for p := range h.addrs {
			as[p.Addr()] = true
		}
		h.rec.SetAddrs(h.node, as)
	}
}

// Bind binds p as netif.Handle.Bind does: the lifetime is computed when
// the request is issued, from goneBy.
func (h *Host) Bind(ifname string, p netip.Prefix, goneBy time.Time, _ netif.AddrOptions) (netif.Binding, error) {
	return h.bind("bind", ifname, p, goneBy)
}

// Extend is Bind for an address known to be bound (never reports Added).
func (h *Host) Extend(ifname string, p netip.Prefix, goneBy time.Time, _ netif.AddrOptions) (netif.Binding, error) {
	b, err := h.bind("extend", ifname, p, goneBy)
	b.Added = false
	return b, err
}

func (h *Host) bind(kind, ifname string, p netip.Prefix, goneBy time.Time) (netif.Binding, error) {
	issued := h.clk.Now()
	lifetime, ok := netif.LifetimeUntil(issued, goneBy.Add(-netif.AckAllowance))
	if !ok {
		return netif.Binding{}, netif.ErrLifetimeTooShort
	}
	if err := h.call(Op{Kind: kind, Iface: ifname, Prefix: p}); err != nil {
		return netif.Binding{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.links[ifname] {
		return netif.Binding{}, fmt.Errorf("%w: %q", netif.ErrNoInterface, ifname)
	}
	h.expireLocked()
	applied := h.clk.Now()
	_, had := h.addrs[p]
	h.addrs[p] = hostAddr{iface: ifname, until: applied.Add(lifetime)}
	h.recordLocked()
	if !had {
		h.emit(netif.Event{Kind: netif.AddrAdded, Interface: ifname, Prefix: p})
	}
	return netif.Binding{Added: !had, Lifetime: lifetime, Issued: issued, Acked: h.clk.Now()}, nil
}

// Unbind removes p's IP from every interface, as netif.Handle.Unbind.
func (h *Host) Unbind(ifname string, p netip.Prefix) (int, error) {
	if err := h.call(Op{Kind: "unbind", Iface: ifname, Prefix: p}); err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.removeLocked(p.Addr())), nil
}

// RemoveIPs removes every address with one of ips, on any interface.
func (h *Host) RemoveIPs(ips []netip.Addr) ([]netip.Prefix, error) {
	if err := h.call(Op{Kind: "remove-ips"}); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []netip.Prefix
	for _, ip := range ips {
		out = append(out, h.removeLocked(ip)...)
	}
	return out, nil
}

func (h *Host) removeLocked(ip netip.Addr) []netip.Prefix {
	h.expireLocked()
	var gone []netip.Prefix
	for q, a := range h.addrs {
		if q.Addr() == ip {
			delete(h.addrs, q)
			gone = append(gone, q)
			h.emit(netif.Event{Kind: netif.AddrRemoved, Interface: a.iface, Prefix: q})
		}
	}
	h.recordLocked()
	return gone
}

// emit queues an address event without blocking (a full queue drops it,
// as a netlink socket overrun would).
func (h *Host) emit(ev netif.Event) {
	select {
	case h.events <- ev:
	default:
	}
}

// AddByHand binds p on ifname with no lifetime, as an operator's `ip addr
// add` would.
func (h *Host) AddByHand(ifname string, p netip.Prefix) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs[p] = hostAddr{iface: ifname}
	h.recordLocked()
	h.emit(netif.Event{Kind: netif.AddrAdded, Interface: ifname, Prefix: p})
}

// AddLink adds an interface (the host starts with eth0 only).
func (h *Host) AddLink(ifname string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.links[ifname] = true
}

// AnnouncedOn returns the interface ip was last announced on ("" if never).
func (h *Host) AnnouncedOn(ip netip.Addr) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.announced[ip]
}

// ProbeARP finds no conflicts: no other host exists here.
func (h *Host) ProbeARP(context.Context, string, []netip.Addr, time.Duration) ([]netif.Conflict, error) {
	return nil, nil
}

// LinkUp reports whether the interface exists.
func (h *Host) LinkUp(ifname string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.links[ifname], nil
}

// Watch delivers the host's address events.
func (h *Host) Watch(ctx context.Context, _ []string) (<-chan netif.Event, error) {
	out := make(chan netif.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-h.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Announce counts announcement rounds sent while gate is open.
func (h *Host) Announce(ifname string, ip netip.Addr, gate netif.Gate) error {
	// The time is read before the gate: a clock advanced in between
	// closes the gate rather than stamping an open-gate round late, so a
	// stamp at or past a fence means the gate really was open there.
	at := h.clk.Now()
	if gate != nil && !gate() {
		return fmt.Errorf("%w: %v", netif.ErrGateClosed, ip)
	}
	h.mu.Lock()
	h.garpTimes = append(h.garpTimes, at)
	if h.announced == nil {
		h.announced = map[netip.Addr]string{}
	}
	h.announced[ip] = ifname
	h.mu.Unlock()
	h.Garps.Add(1)
	return nil
}

// GarpsFrom counts the announcement rounds sent at or after t on the
// host's clock. Unlike a difference of Garps it does not race with an
// announcer that passed its gate just before a test advanced the clock.
func (h *Host) GarpsFrom(t time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, at := range h.garpTimes {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

// Has reports whether p is bound on the host (its lifetime not run out).
func (h *Host) Has(p netip.Prefix) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expireLocked()
	_, ok := h.addrs[p]
	return ok
}

// Where returns the interface p's IP is bound on, and its lifetime end
// (zero: none), or "" if it is not bound.
func (h *Host) Where(ip netip.Addr) (iface string, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expireLocked()
	for q, a := range h.addrs {
		if q.Addr() == ip {
			return a.iface, a.until
		}
	}
	return "", time.Time{}
}
