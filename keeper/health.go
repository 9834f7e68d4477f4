package keeper

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

// LinkWatcher is what the health part needs of netif.Handle: link states
// and address and link events.
type LinkWatcher interface {
	LinkUp(ifname string) (bool, error)
	Watch(ctx context.Context, ifnames []string) (<-chan netif.Event, error)
}

// ProbeFunc builds the probe of a configured check.
type ProbeFunc func(name string, c config.Check) (checks.Probe, error)

// Health is what a group's candidacy depends on besides etcd.
type Health struct {
	// Priority is the effective priority: base plus the weights of the
	// tracked checks (checks.EffectivePriority).
	Priority int
	// Fault: a weight-0 check is down, or the interface is down.
	Fault bool
	// Failing names the failing checks and a down interface.
	Failing []string
	// Ready: every tracked check has a first result and the interface's
	// state is known.
	Ready bool
	// DownSince is the latest time one of the tracked checks that now
	// lower the priority or cause the FAULT got into that state (its
	// Status.Since): the newest of the causes; zero if none does.
	DownSince time.Time
}

// health owns the tracked checks' runners and results and the interface
// watches: everything a group's candidacy depends on besides etcd. It
// tells the keeper, through onCheck and onNet, what changed, so the
// keeper wakes the groups concerned.
type health struct {
	clk    clock.Clock
	log    *slog.Logger
	obs    Observer
	probes ProbeFunc
	links  LinkWatcher
	// onCheck is called after a check's state changed; onNet for every
	// address or link event; onResync when an interface's events may have
	// been missed (its watch ended and was started again). They must not
	// block.
	onCheck  func(name string)
	onNet    func(ev netif.Event)
	onResync func(ifname string)

	mu       sync.Mutex
	stopped  bool            // set by stop: nothing starts after
	ctx      context.Context // set by start; parent of runners and watches
	statuses map[string]checks.Status
	// seed holds the check states the previous vipd image handed over:
	// each check starts in its own (checks.WithKnown).
	seed     map[string]checks.Status
	up       map[string]bool // ifname -> link up; absent = unknown
	running  map[string]*runningCheck
	watching map[string]context.CancelFunc
	wg       sync.WaitGroup
}

type runningCheck struct {
	cfg    config.Check
	cancel context.CancelFunc
	done   chan struct{}
}

func newHealth(clk clock.Clock, log *slog.Logger, obs Observer, probes ProbeFunc, links LinkWatcher) *health {
	return &health{clk: clk, log: log, obs: obs, probes: probes, links: links,
		onCheck: func(string) {}, onNet: func(netif.Event) {}, onResync: func(string) {},
		statuses: map[string]checks.Status{}, up: map[string]bool{},
		running: map[string]*runningCheck{}, watching: map[string]context.CancelFunc{}}
}

// start makes ctx the parent of every runner and watch; stop ends them.
func (h *health) start(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
}

// stop ends every check and watch and waits for them. Nothing starts
// after it (a reload racing the shutdown).
func (h *health) stop() {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	h.stopChecks(nil)
	h.mu.Lock()
	for name, cancel := range h.watching {
		cancel()
		delete(h.watching, name)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// validate builds every tracked check's probe of cfg, to reject a config
// before anything of it is applied.
func (h *health) validate(cfg config.Config) error {
	for _, gc := range cfg.Groups {
		for _, t := range gc.Track {
			if _, err := h.probes(t.Check, cfg.Checks[t.Check]); err != nil {
				return fmt.Errorf("keeper: checks.%s: %w", t.Check, err)
			}
		}
	}
	return nil
}

// apply watches every interface of cfg's groups and runs every tracked
// check, keeping the state of checks whose settings did not change (so a
// reload does not reset rise/fall or priorities) and stopping the rest.
func (h *health) apply(cfg config.Config) error {
	if err := h.watch(cfg.Groups); err != nil {
		return err
	}
	tracked := map[string]bool{}
	for _, g := range cfg.Groups {
		for _, t := range g.Track {
			tracked[t.Check] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(tracked)) {
		if err := h.runCheck(name, cfg.Checks[name]); err != nil {
			return err
		}
	}
	h.stopChecks(tracked)
	// The handed-over states are for the checks the first configuration
	// runs, now started: one a later reload starts begins afresh.
	h.mu.Lock()
	h.seed = nil
	h.mu.Unlock()
	return nil
}

// known returns every check state known now.
func (h *health) known() map[string]checks.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.statuses)
}

// Of returns what gc's candidacy depends on now.
func (h *health) Of(gc config.Group) Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	tracked := checks.TrackedChecks(gc.Track, h.statuses)
	prio, fault, failing := checks.EffectivePriority(gc.Priority, tracked)
	ready := true
	for _, t := range tracked {
		ready = ready && t.Known
	}
	var downSince time.Time
	for _, t := range tracked {
		if t.Hurts() {
			if s := h.statuses[t.Name].Since; s.After(downSince) {
				downSince = s
			}
		}
	}
	// Every interface the group binds on, and its own: a VIP on a link
	// that is down serves nobody (keepalived: FAULT on the VRRP interface).
	linksUp, linksKnown := true, true
	for _, name := range gc.Interfaces() {
		up, known := h.up[name]
		if !up {
			failing = append(failing, "interface "+name)
		}
		linksUp, linksKnown = linksUp && up, linksKnown && known
	}
	return Health{Priority: prio, Fault: fault || !linksUp, Failing: failing, Ready: ready && linksKnown, DownSince: downSince}
}

// watch makes sure every interface used by groups is watched, and stops
// watching the ones no group uses any more.
func (h *health) watch(groups []config.Group) error {
	used := map[string]bool{}
	var names []string
	for _, gc := range groups {
		names = append(names, gc.Interfaces()...)
	}
	for _, name := range names {
		if used[name] {
			continue
		}
		used[name] = true
		h.mu.Lock()
		_, watching := h.watching[name]
		ctx := h.ctx
		h.mu.Unlock()
		if watching {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		events, err := h.links.Watch(wctx, []string{name})
		if err != nil {
			cancel()
			return fmt.Errorf("keeper: watch interface %s: %w", name, err)
		}
		h.refreshLink(name)
		h.mu.Lock()
		if h.stopped {
			h.mu.Unlock()
			cancel()
			return nil
		}
		h.watching[name] = cancel
		h.wg.Go(func() { h.follow(wctx, name, events) })
		h.mu.Unlock()
	}
	h.mu.Lock()
	for name, cancel := range h.watching {
		if !used[name] {
			cancel()
			delete(h.watching, name)
		}
	}
	h.mu.Unlock()
	return nil
}

// Re-watching an interface whose watch ended backs off from rewatchMin,
// doubling, to rewatchMax.
const (
	rewatchMin = 100 * time.Millisecond
	rewatchMax = 5 * time.Second
)

// follow passes on an interface's events for as long as ctx lives. A watch
// ends early when its netlink subscription fails (an overrun: ENOBUFS);
// events were lost then, so the link state is read again, the groups on
// it are told to re-check, and the interface is watched again.
func (h *health) follow(ctx context.Context, name string, events <-chan netif.Event) {
	wait := rewatchMin
	for {
		h.netEvents(ctx, events)
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("interface watch ended; events may have been missed, watching it again", "interface", name, "in", wait)
		t := h.clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		wait = min(2*wait, rewatchMax)
		var err error
		if events, err = h.links.Watch(ctx, []string{name}); err != nil {
			h.log.Warn("cannot watch interface", "interface", name, "err", err)
			events = nil
			continue
		}
		wait = rewatchMin
		h.refreshLink(name)
		h.onResync(name)
	}
}

func (h *health) refreshLink(name string) {
	up, err := h.links.LinkUp(name)
	if err != nil {
		h.log.Warn("interface state unknown", "interface", name, "err", err)
		up = false
	}
	h.mu.Lock()
	h.up[name] = up
	h.mu.Unlock()
}

// netEvents records link states and passes every event on, until ctx
// ends or the watch does (a nil channel: at once).
func (h *health) netEvents(ctx context.Context, events <-chan netif.Event) {
	if events == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Kind == netif.LinkUp || ev.Kind == netif.LinkDown {
				h.mu.Lock()
				h.up[ev.Interface] = ev.Kind == netif.LinkUp
				h.mu.Unlock()
				h.log.Info("interface "+ev.Kind.String(), "interface", ev.Interface)
			}
			h.onNet(ev)
		}
	}
}

// runCheck starts check name unless it already runs with the same
// settings.
func (h *health) runCheck(name string, c config.Check) error {
	h.mu.Lock()
	rc := h.running[name]
	ctx := h.ctx
	h.mu.Unlock()
	if rc != nil && reflect.DeepEqual(rc.cfg, c) {
		return nil
	}
	probe, err := h.probes(name, c)
	if err != nil {
		return fmt.Errorf("keeper: checks.%s: %w", name, err)
	}
	if rc != nil {
		// Keep the last status until the new run reports: an unknown
		// check counts as down, and the drop in priority would hand a
		// held VIP to a peer on every reload.
		h.stopCheck(name, true)
	}
	r := checks.NewRunner(h.clk, h.log)
	// Process, file and interface checks also run at once on pidfd,
	// inotify and netlink events; the others are polled.
	opts := []checks.AddOption{checks.WithTrigger(checks.NewTrigger(c))}
	h.mu.Lock()
	if st, ok := h.seed[name]; ok {
		delete(h.seed, name)
		st.Name = name
		h.statuses[name] = st
		opts = append(opts, checks.WithKnown(st))
	}
	h.mu.Unlock()
	r.Add(name, c, probe, opts...)
	r.OnRun(func(name string, ok bool, took time.Duration) { h.obs.CheckRun(name, ok, took) })
	r.OnSource(func(name, source string) {
		h.log.Info("check events", "check", name, "source", source)
		h.obs.CheckEvents(name, source)
	})
	cctx, cancel := context.WithCancel(ctx)
	rc = &runningCheck{cfg: c, cancel: cancel, done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		cancel()
		return nil
	}
	h.running[name] = rc
	h.wg.Go(func() {
		defer close(rc.done)
		r.Run(cctx, h.checked)
	})
	return nil
}

// stopChecks stops every running check not in keep (nil: all).
func (h *health) stopChecks(keep map[string]bool) {
	h.mu.Lock()
	var stop []string
	for name := range h.running {
		if !keep[name] {
			stop = append(stop, name)
		}
	}
	h.mu.Unlock()
	for _, name := range stop {
		h.stopCheck(name, false)
	}
}

// stopCheck stops a running check and, unless keepStatus, forgets its
// status.
func (h *health) stopCheck(name string, keepStatus bool) {
	h.mu.Lock()
	rc := h.running[name]
	delete(h.running, name)
	h.mu.Unlock()
	if rc == nil {
		return
	}
	rc.cancel()
	<-rc.done
	if keepStatus {
		return
	}
	h.mu.Lock()
	delete(h.statuses, name)
	h.mu.Unlock()
}

// checked records a check's new state.
func (h *health) checked(st checks.Status) {
	h.mu.Lock()
	h.statuses[st.Name] = st
	h.mu.Unlock()
	h.obs.CheckState(st.Name, st.Up)
	if st.Up {
		h.log.Info("check up", "check", st.Name, "took", st.Duration.Round(time.Millisecond))
	} else {
		h.log.Warn("check down", "check", st.Name, "err", st.Err)
	}
	h.onCheck(st.Name)
}
