package netif

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// EventKind says what changed.
type EventKind int

// Event kinds.
const (
	AddrAdded EventKind = iota + 1
	AddrRemoved
	LinkUp
	LinkDown
)

// String returns the kind's name, e.g. "AddrAdded".
func (k EventKind) String() string {
	switch k {
	case AddrAdded:
		return "AddrAdded"
	case AddrRemoved:
		return "AddrRemoved"
	case LinkUp:
		return "LinkUp"
	case LinkDown:
		return "LinkDown"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change on a watched interface.
type Event struct {
	Kind      EventKind
	Interface string
	// Prefix is the address (host address and prefix length) for
	// AddrAdded and AddrRemoved; zero for link events.
	Prefix netip.Prefix
}

// String formats the event for logs.
func (e Event) String() string {
	if e.Prefix.IsValid() {
		return fmt.Sprintf("%s %s %s", e.Kind, e.Interface, e.Prefix)
	}
	return fmt.Sprintf("%s %s", e.Kind, e.Interface)
}

// watchBuffer is the capacity of the channel Watch returns.
const watchBuffer = 64

// watchRcvBuf is the receive buffer asked for on the subscription sockets
// (capped by net.core.rmem_max), so a burst of changes on a busy host does
// not overflow them (ENOBUFS ends the watch).
const watchRcvBuf = 1 << 20

// Watch streams address and link changes on the named interfaces, from
// rtnetlink multicast subscriptions (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR,
// RTNLGRP_IPV6_IFADDR; no polling), until ctx is done.
//
// Events are edge-triggered against the state Watch read when it started
// (after subscribing, so nothing is lost in between): AddrAdded when an
// address appears, AddrRemoved when it disappears (deleted or expired),
// LinkUp/LinkDown when [Handle.LinkUp]'s answer changes. A lifetime refresh
// by Replace is not an event. Interfaces that do not exist yet are watched
// by name and reported once they appear; a deleted interface reports
// AddrRemoved for its known addresses and LinkDown (if it was up). To start from a known
// state, call Watch first, then read Has/LinkUp: whatever changes after
// that read is reported.
//
// The channel is closed once ctx is done and every goroutine Watch started
// has stopped. It is also closed early, with an error logged, if the
// kernel subscription fails (for example the socket overflowed with
// ENOBUFS); the caller should then re-read the state and Watch again.
func (h *Handle) Watch(ctx context.Context, ifnames []string) (<-chan Event, error) {
	if len(ifnames) == 0 {
		return nil, errors.New("netif: watch: no interfaces named")
	}
	want := make(map[string]bool, len(ifnames))
	for _, n := range ifnames {
		want[n] = true
	}

	if err := h.acquire(); err != nil {
		return nil, err
	}
	defer h.release()
	done := make(chan struct{})
	addrCh := make(chan netlink.AddrUpdate, watchBuffer)
	linkCh := make(chan netlink.LinkUpdate, watchBuffer)
	// Only a Handle made for another namespace names it: subscribing with
	// a namespace calls setns, which needs CAP_SYS_ADMIN.
	var ns *netns.NsHandle
	if h.ns.IsOpen() {
		nsCopy := h.ns
		ns = &nsCopy
	}
	logErr := func(err error) {
		// Called from netlink's goroutines; slog loggers are concurrency-safe.
		if ctx.Err() == nil {
			h.log.Warn("netlink subscription", "err", err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{
		Namespace: ns, ErrorCallback: logErr, ReceiveBufferSize: watchRcvBuf,
	}); err != nil {
		close(done)
		return nil, fmt.Errorf("netif: subscribe to link events: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{
		Namespace: ns, ErrorCallback: logErr, ReceiveBufferSize: watchRcvBuf,
	}); err != nil {
		close(done)
		drain(linkCh)
		return nil, fmt.Errorf("netif: subscribe to address events: %w", err)
	}

	// Initial state, read after subscribing.
	w := &watcher{
		h:     h,
		want:  want,
		names: make(map[int]string),
		up:    make(map[string]bool),
		addrs: make(map[string]map[netip.Prefix]bool),
	}
	for n := range want {
		var l netlink.Link
		var as []netlink.Addr
		var err error
		h.exec(func() {
			if l, err = h.link(n); err == nil {
				as, err = h.nl.AddrList(l, netlink.FAMILY_ALL)
				if err != nil {
					err = fmt.Errorf("list addresses on %q: %w", n, err)
				}
			}
		})
		if err != nil {
			if errors.Is(err, ErrNoInterface) {
				continue // reported when it appears
			}
			close(done)
			drain(linkCh)
			drain(addrCh)
			return nil, fmt.Errorf("netif: watch: %w", err)
		}
		w.names[l.Attrs().Index] = n
		w.up[n] = linkIsUp(l.Attrs())
		set := make(map[netip.Prefix]bool, len(as))
		for _, a := range as {
			if p, ok := prefixOf(a.IPNet); ok {
				set[p] = true
			}
		}
		w.addrs[n] = set
	}

	out := make(chan Event, watchBuffer)
	go func() {
		defer close(out)
		defer func() {
			// Stop netlink's goroutines: closing done closes the
			// sockets, and draining lets a goroutine blocked on a send
			// reach its close.
			close(done)
			drain(linkCh)
			drain(addrCh)
		}()
		emit := func(evs []Event) bool {
			for _, ev := range evs {
				select {
				case out <- ev:
				case <-ctx.Done():
					return false
				}
			}
			return true
		}
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-linkCh:
				if !ok {
					h.log.Error("link subscription ended; closing watch", "interfaces", ifnames)
					return
				}
				if !emit(w.link(u)) {
					return
				}
			case u, ok := <-addrCh:
				if !ok {
					h.log.Error("address subscription ended; closing watch", "interfaces", ifnames)
					return
				}
				if !emit(w.addr(u)) {
					return
				}
			}
		}
	}()
	return out, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

// watcher holds Watch's view of the watched interfaces. It is only used by
// the Watch goroutine.
type watcher struct {
	h     *Handle
	want  map[string]bool
	names map[int]string                   // ifindex → name (any interface seen)
	up    map[string]bool                  // last reported/known link state
	addrs map[string]map[netip.Prefix]bool // addresses known present
}

func (w *watcher) link(u netlink.LinkUpdate) []Event {
	attrs := u.Link.Attrs()
	idx, name := int(u.Index), attrs.Name
	var evs []Event
	if old, ok := w.names[idx]; ok && old != name && w.want[old] {
		// Renamed away from a watched name: it is gone for us.
		evs = w.gone(old)
	}
	if u.Header.Type == unix.RTM_DELLINK {
		delete(w.names, idx)
		if w.want[name] {
			evs = append(evs, w.gone(name)...)
		}
		return evs
	}
	w.names[idx] = name
	if !w.want[name] {
		return evs
	}
	if w.addrs[name] == nil {
		w.addrs[name] = make(map[netip.Prefix]bool)
	}
	isUp := linkIsUp(attrs)
	was, known := w.up[name]
	w.up[name] = isUp
	if known && was == isUp {
		return evs
	}
	if isUp {
		return append(evs, Event{Kind: LinkUp, Interface: name})
	}
	return append(evs, Event{Kind: LinkDown, Interface: name})
}

// gone reports a watched interface that disappeared: its addresses went
// with it, and it is down.
func (w *watcher) gone(name string) []Event {
	var evs []Event
	for p := range w.addrs[name] {
		evs = append(evs, Event{Kind: AddrRemoved, Interface: name, Prefix: p})
	}
	delete(w.addrs, name)
	if was, known := w.up[name]; !known || was {
		evs = append(evs, Event{Kind: LinkDown, Interface: name})
	}
	w.up[name] = false
	return evs
}

func (w *watcher) addr(u netlink.AddrUpdate) []Event {
	name, ok := w.names[u.LinkIndex]
	if !ok {
		// An interface we have not seen a link event for; ask once and
		// remember its name, watched or not.
		if err := w.h.acquire(); err != nil {
			return nil
		}
		var l netlink.Link
		var err error
		w.h.exec(func() { l, err = w.h.nl.LinkByIndex(u.LinkIndex) })
		w.h.release()
		if err != nil {
			return nil
		}
		name = l.Attrs().Name
		w.names[u.LinkIndex] = name
	}
	if !w.want[name] {
		return nil
	}
	p, ok := prefixOf(&u.LinkAddress)
	if !ok {
		return nil
	}
	set := w.addrs[name]
	if set == nil {
		set = make(map[netip.Prefix]bool)
		w.addrs[name] = set
	}
	if u.NewAddr {
		if set[p] {
			return nil // lifetime refresh or flag change
		}
		set[p] = true
		return []Event{{Kind: AddrAdded, Interface: name, Prefix: p}}
	}
	if !set[p] {
		return nil
	}
	delete(set, p)
	return []Event{{Kind: AddrRemoved, Interface: name, Prefix: p}}
}
