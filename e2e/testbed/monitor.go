package testbed

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// HolderEvent is one observed add or removal of the VIP on a node.
type HolderEvent struct {
	Time  time.Time
	Node  string
	Added bool
}

func (e HolderEvent) String() string {
	op := "removed from"
	if e.Added {
		op = "added on"
	}
	return fmt.Sprintf("%s VIP %s %s", e.Time.Format("15:04:05.000"), op, e.Node)
}

// HolderStats summarises who held the VIP over a window.
type HolderStats struct {
	Window     time.Duration
	TwoHolders time.Duration // total time with ≥ 2 holders
	NoHolder   time.Duration // total time with no holder
	MaxHolders int
	Changes    int // holder set changes in the window
	// MinGap is the shortest time from the VIP's removal (last holder gone)
	// to its next add within the window: the safety margin of the closest
	// handover (-1 if no such handover).
	MinGap time.Duration
}

// Monitor follows the VIP on every node through netlink address events —
// no polling. Lifetime refreshes (AddrReplace) of an address already held
// are not changes.
//
// Two views are kept:
//
//   - the ordered view (Holders, WaitHolder, Events, Stats): one netlink
//     socket in the lan namespace with NETLINK_LISTEN_ALL_NSID receives the
//     address events of every node namespace in one queue, in the order the
//     kernel emitted them (address changes are serialised by the RTNL lock).
//     Events are timestamped when read, in that order. With one socket per
//     namespace instead, a handover a few ms apart could be read in the wrong
//     order whenever the test process is descheduled, showing a false overlap.
//   - a per-namespace view from netlink.AddrSubscribeWithOptions (one
//     subscription with a Namespace handle per node), used by CrossCheck to
//     confirm that the ordered view lost no event.
type Monitor struct {
	vip   net.IP
	start time.Time

	mu      sync.Mutex
	holding map[string]bool  // ordered view
	byID    map[int32]string // node by its namespace's ID in the lan namespace
	nsView  map[string]bool  // per-namespace subscriptions
	events  []HolderEvent
	errs    []error
	changed chan struct{} // closed and replaced on every change
	done    chan struct{}
	wg      sync.WaitGroup
}

func newMonitor(vip net.IP) *Monitor {
	return &Monitor{vip: vip, start: time.Now(), holding: map[string]bool{}, nsView: map[string]bool{},
		changed: make(chan struct{}), done: make(chan struct{})}
}

func (m *Monitor) stopping() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

func (m *Monitor) addErr(err error) {
	m.mu.Lock()
	m.errs = append(m.errs, err)
	m.mu.Unlock()
}

// CrossCheck waits up to timeout for the per-namespace subscriptions and the
// ordered view to agree on every node, and reports any difference.
func (m *Monitor) CrossCheck(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		var diff []string
		for n, h := range m.nsView {
			if m.holding[n] != h {
				diff = append(diff, fmt.Sprintf("%s: ordered %v, per-namespace %v", n, m.holding[n], h))
			}
		}
		m.mu.Unlock()
		if len(diff) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			sort.Strings(diff)
			return fmt.Errorf("holder views disagree: %v", diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watch subscribes to address events in node's namespace (existing addresses
// included) for the per-namespace view, and returns once the subscription is
// established.
func (m *Monitor) watch(node string, ns *Netns) error {
	ch := make(chan netlink.AddrUpdate, 256)
	h := ns.Handle
	err := netlink.AddrSubscribeWithOptions(ch, m.done, netlink.AddrSubscribeOptions{
		Namespace:         &h,
		ListExisting:      true,
		ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			if !m.stopping() { // closing the socket on shutdown is not an error
				m.addErr(fmt.Errorf("%s subscription: %w", node, err))
			}
		},
	})
	if err != nil {
		return fmt.Errorf("subscribe to addresses in %s: %w", ns.Name, err)
	}
	m.mu.Lock()
	if _, ok := m.nsView[node]; !ok {
		m.nsView[node] = false
	}
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for u := range ch { // drained until the library closes it
			if u.LinkAddress.IP.Equal(m.vip) {
				m.mu.Lock()
				m.nsView[node] = u.NewAddr
				m.mu.Unlock()
			}
		}
	}()
	return nil
}

func (m *Monitor) record(t time.Time, node string, added bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holding[node] == added {
		return
	}
	m.holding[node] = added
	m.events = append(m.events, HolderEvent{Time: t, Node: node, Added: added})
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Monitor) stop() {
	if !m.stopping() {
		close(m.done)
	}
	m.wg.Wait()
}

// Holders lists the nodes holding the VIP now, sorted.
func (m *Monitor) Holders() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holdersLocked()
}

func (m *Monitor) holdersLocked() []string {
	var hs []string
	for n, h := range m.holding {
		if h {
			hs = append(hs, n)
		}
	}
	sort.Strings(hs)
	return hs
}

// Events returns a copy of all events so far, in time order.
func (m *Monitor) Events() []HolderEvent {
	m.mu.Lock()
	ev := slices.Clone(m.events)
	m.mu.Unlock()
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].Time.Before(ev[j].Time) })
	return ev
}

// Errors returns subscription errors (e.g. ENOBUFS: events may be lost).
func (m *Monitor) Errors() []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.errs)
}

// WaitFor waits until pred(holders) is true, up to timeout, and returns the
// holders at that moment.
func (m *Monitor) WaitFor(pred func(holders []string) bool, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		hs := m.holdersLocked()
		ch := m.changed
		m.mu.Unlock()
		if pred(hs) {
			return hs, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return hs, fmt.Errorf("timeout after %v; holders now %v", timeout, hs)
		}
	}
}

// WaitHolder waits until node is the one and only holder.
func (m *Monitor) WaitHolder(node string, timeout time.Duration) error {
	_, err := m.WaitFor(func(hs []string) bool { return len(hs) == 1 && hs[0] == node }, timeout)
	if err != nil {
		return fmt.Errorf("waiting for %s to hold the VIP alone: %w", node, err)
	}
	return nil
}

// HoldersAt lists the nodes holding the VIP at time t (from the events).
func (m *Monitor) HoldersAt(t time.Time) []string {
	held := map[string]bool{}
	for _, e := range m.Events() {
		if e.Time.After(t) {
			break
		}
		held[e.Node] = e.Added
	}
	var hs []string
	for n, h := range held {
		if h {
			hs = append(hs, n)
		}
	}
	sort.Strings(hs)
	return hs
}

// EventAfter returns the first event at or after t for node with the given
// direction (added or removed).
func (m *Monitor) EventAfter(node string, added bool, t time.Time) (HolderEvent, bool) {
	for _, e := range m.Events() {
		if e.Node == node && e.Added == added && !e.Time.Before(t) {
			return e, true
		}
	}
	return HolderEvent{}, false
}

// Stats integrates the holder count over [from, to]; a zero to means now.
func (m *Monitor) Stats(from, to time.Time) HolderStats {
	if to.IsZero() {
		to = time.Now()
	}
	if from.Before(m.start) {
		from = m.start
	}
	st := HolderStats{Window: to.Sub(from), MinGap: -1}
	if !to.After(from) {
		return st
	}
	ev := m.Events()
	held := map[string]bool{}
	count := 0
	apply := func(e HolderEvent) {
		if held[e.Node] != e.Added {
			held[e.Node] = e.Added
			if e.Added {
				count++
			} else {
				count--
			}
		}
	}
	i := 0
	for ; i < len(ev) && !ev[i].Time.After(from); i++ {
		apply(ev[i])
	}
	cur := from
	account := func(until time.Time) {
		d := until.Sub(cur)
		switch {
		case count == 0:
			st.NoHolder += d
		case count >= 2:
			st.TwoHolders += d
		}
		st.MaxHolders = max(st.MaxHolders, count)
		cur = until
	}
	var vacated time.Time // when the last holder went away (in the window)
	for ; i < len(ev) && ev[i].Time.Before(to); i++ {
		account(ev[i].Time)
		before := count
		apply(ev[i])
		switch {
		case before > 0 && count == 0:
			vacated = ev[i].Time
		case before == 0 && count > 0 && !vacated.IsZero():
			if gap := ev[i].Time.Sub(vacated); st.MinGap < 0 || gap < st.MinGap {
				st.MinGap = gap
			}
		}
		st.Changes++
	}
	account(to)
	return st
}
