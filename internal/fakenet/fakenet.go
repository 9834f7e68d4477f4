package fakenet

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/netif"
)

// Recorder watches which nodes have the VIP bound, across all fake hosts,
// and accumulates the time two or more held it at once.
type Recorder struct {
	mu        sync.Mutex
	holders   map[string]bool
	dualSince time.Time
	dual      time.Duration
	log       []string
	changed   chan struct{}
}

func NewRecorder() *Recorder {
	return &Recorder{holders: map[string]bool{}, changed: make(chan struct{})}
}

func (r *Recorder) Set(node string, bound bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holders[node] == bound {
		return
	}
	now := time.Now()
	r.holders[node] = bound
	r.log = append(r.log, fmt.Sprintf("%s %s bound=%v", now.Format("15:04:05.000"), node, bound))
	n := 0
	for _, b := range r.holders {
		if b {
			n++
		}
	}
	switch {
	case n > 1 && r.dualSince.IsZero():
		r.dualSince = now
	case n <= 1 && !r.dualSince.IsZero():
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
	for n, b := range r.holders {
		if b {
			out = append(out, n)
		}
	}
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
// no-root tier (the namespace tier runs the real one).
type Host struct {
	node   string
	rec    *Recorder
	mu     sync.Mutex
	addrs  map[netip.Prefix]time.Duration // prefix -> last lifetime
	events chan netif.Event
	Garps  atomic.Int64
}

func NewHost(node string, rec *Recorder) *Host {
	return &Host{node: node, rec: rec, addrs: map[netip.Prefix]time.Duration{}, events: make(chan netif.Event, 16)}
}

// ReplaceWith binds p (options are not modelled).
func (h *Host) ReplaceWith(ifname string, p netip.Prefix, lifetime time.Duration, _ netif.AddrOptions) (bool, error) {
	return h.Replace(ifname, p, lifetime)
}

// Refresh re-binds p.
func (h *Host) Refresh(ifname string, p netip.Prefix, lifetime time.Duration, _ netif.AddrOptions) error {
	_, err := h.Replace(ifname, p, lifetime)
	return err
}

// ProbeARP finds no conflicts: no other host exists here.
func (h *Host) ProbeARP(context.Context, string, []netip.Addr, time.Duration) ([]netif.Conflict, error) {
	return nil, nil
}

// Replace binds p, reporting whether it was absent.
func (h *Host) Replace(ifname string, p netip.Prefix, lifetime time.Duration) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if lifetime < time.Second {
		return false, netif.ErrLifetimeTooShort
	}
	_, had := h.addrs[p]
	h.addrs[p] = lifetime
	h.rec.Set(h.node, true)
	return !had, nil
}

func (h *Host) Remove(ifname string, p netip.Prefix) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, had := h.addrs[p]
	delete(h.addrs, p)
	if len(h.addrs) == 0 {
		h.rec.Set(h.node, false)
	}
	return had, nil
}

func (h *Host) LinkUp(string) (bool, error) { return true, nil }

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

// Announce counts announcement rounds.
func (h *Host) Announce(string, netip.Addr) error { h.Garps.Add(1); return nil }

// Has reports whether p is bound on the host.
func (h *Host) Has(p netip.Prefix) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.addrs[p]
	return ok
}
