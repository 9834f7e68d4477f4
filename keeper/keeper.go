package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
)

// Interfaces is the part of netif.Handle the keeper uses.
type Interfaces interface {
	Replace(ifname string, p netip.Prefix, lifetime time.Duration) (added bool, err error)
	Remove(ifname string, p netip.Prefix) (removed bool, err error)
	LinkUp(ifname string) (bool, error)
	Watch(ctx context.Context, ifnames []string) (<-chan netif.Event, error)
}

// AnnounceFunc sends one announcement round (GARP request + reply, or NA)
// for ip on ifname.
type AnnounceFunc func(ifname string, ip netip.Addr) error

// Options wires a Keeper. Every field but Announce and Checks is required.
type Options struct {
	Config   config.Config
	Client   *clientv3.Client
	Clock    clock.Clock
	Log      *slog.Logger
	Ifaces   Interfaces
	Announce AnnounceFunc
	// Checks runs the configured health checks; nil means none.
	Checks *checks.Runner
	// Session overrides the lease timing derived from Config (tests).
	Session *election.SessionConfig
	// OnTransition, if set, is called after every state change.
	OnTransition func(Transition)
}

// Transition describes one group state change.
type Transition struct {
	Group, Node string
	From, To    string
	Reason      string
	Priority    int
}

// Keeper runs one reconcile loop per group on a shared lease and watch.
type Keeper struct {
	opt     Options
	node    string
	clk     clock.Clock
	log     *slog.Logger
	session *election.Session
	view    *election.View
	lead    *election.Leadership
	groups  map[string]*group
	ordered []*group

	mu       sync.Mutex
	statuses map[string]checks.Status
	links    map[string]bool // ifname -> up; absent = unknown
}

// New builds a keeper; Run starts it.
func New(opt Options) *Keeper {
	cfg := opt.Config
	k := &Keeper{
		opt:      opt,
		node:     cfg.Node,
		clk:      opt.Clock,
		log:      opt.Log.With("node", cfg.Node),
		groups:   map[string]*group{},
		statuses: map[string]checks.Status{},
		links:    map[string]bool{},
	}
	keys := election.Keys{Prefix: cfg.Etcd.Prefix}
	scfg := election.SessionConfig{TTL: cfg.Etcd.LeaseTTL, RequestTimeout: cfg.Etcd.RequestTimeout}
	if opt.Session != nil {
		scfg = *opt.Session
	}
	k.session = election.NewSession(opt.Client.Lease, k.clk, scfg, k.log)
	k.lead = &election.Leadership{KV: opt.Client.KV, Keys: keys, Node: cfg.Node, RequestTimeout: cfg.Etcd.RequestTimeout}
	k.view = election.NewView(opt.Client, keys, k.clk, k.log, k.poke)
	for _, gc := range cfg.Groups {
		g := &group{k: k, cfg: gc, log: k.log.With("group", gc.Name), wake: make(chan struct{}, 1)}
		k.groups[gc.Name] = g
		k.ordered = append(k.ordered, g)
	}
	return k
}

// Session exposes the node lease (for metrics and status).
func (k *Keeper) Session() *election.Session { return k.session }

func (k *Keeper) poke(group string) {
	if group == "" {
		for _, g := range k.ordered {
			g.poke()
		}
		return
	}
	if g := k.groups[group]; g != nil {
		g.poke()
	}
}

// RemoveAll removes every configured VIP from this host. It is the startup
// cleanup and `vipd cleanup`; it reports how many addresses it removed.
func RemoveAll(ifaces Interfaces, groups []config.Group, log *slog.Logger) (int, error) {
	removed := 0
	var errs []error
	for _, g := range groups {
		for _, p := range g.Prefixes {
			ok, err := ifaces.Remove(g.Interface, p)
			switch {
			case errors.Is(err, netif.ErrNoInterface):
				log.Warn("interface not found; nothing to remove", "group", g.Name, "interface", g.Interface)
			case err != nil:
				errs = append(errs, err)
			case ok:
				removed++
				log.Info("removed VIP", "group", g.Name, "interface", g.Interface, "address", p)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// Run removes stale VIPs, then runs checks, lease, watch and group loops
// until ctx is done. On the way out every group removes its VIPs, then
// resigns its leader key, then the lease is revoked, so peers take over at
// once.
func (k *Keeper) Run(ctx context.Context) error {
	if _, err := RemoveAll(k.opt.Ifaces, k.opt.Config.Groups, k.log); err != nil {
		return fmt.Errorf("keeper: startup cleanup: %w", err)
	}

	// Background parts outlive the group loops, so the loops can resign
	// through a working client after ctx is cancelled.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	defer func() {
		stopBg()
		bgWG.Wait()
	}()

	ifnames := k.interfaceNames()
	events, err := k.opt.Ifaces.Watch(bg, ifnames)
	if err != nil {
		return fmt.Errorf("keeper: watch interfaces: %w", err)
	}
	for _, name := range ifnames {
		k.refreshLink(name)
	}
	bgWG.Add(3)
	go func() { defer bgWG.Done(); k.session.Run(bg) }()
	go func() { defer bgWG.Done(); k.view.Run(bg) }()
	go func() { defer bgWG.Done(); k.netEvents(bg, events) }()
	if k.opt.Checks != nil {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); k.opt.Checks.Run(bg, k.onCheck) }()
	}

	var wg sync.WaitGroup
	for _, g := range k.ordered {
		wg.Add(1)
		go func() { defer wg.Done(); g.run(ctx) }()
	}
	wg.Wait()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opt.Config.Etcd.RequestTimeout*2)
	defer cancel()
	if err := k.session.Revoke(rctx); err != nil {
		k.log.Warn("lease revoke on exit failed; keys expire with the lease", "err", err)
	}
	return nil
}

func (k *Keeper) interfaceNames() []string {
	var names []string
	for _, g := range k.ordered {
		if !slices.Contains(names, g.cfg.Interface) {
			names = append(names, g.cfg.Interface)
		}
	}
	return names
}

func (k *Keeper) refreshLink(name string) {
	up, err := k.opt.Ifaces.LinkUp(name)
	if err != nil {
		k.log.Warn("interface state unknown", "interface", name, "err", err)
		up = false
	}
	k.mu.Lock()
	k.links[name] = up
	k.mu.Unlock()
}

// netEvents turns address and link events into group wake-ups.
func (k *Keeper) netEvents(ctx context.Context, events <-chan netif.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Kind == netif.LinkUp || ev.Kind == netif.LinkDown {
				k.mu.Lock()
				k.links[ev.Interface] = ev.Kind == netif.LinkUp
				k.mu.Unlock()
			}
			for _, g := range k.ordered {
				if g.cfg.Interface != ev.Interface {
					continue
				}
				if ev.Kind == netif.AddrAdded || ev.Kind == netif.AddrRemoved {
					if !slices.Contains(g.cfg.Prefixes, ev.Prefix) && !slices.ContainsFunc(g.cfg.Prefixes, func(p netip.Prefix) bool { return p.Addr() == ev.Prefix.Addr() }) {
						continue
					}
					g.markDirty()
				}
				g.poke()
			}
		}
	}
}

func (k *Keeper) onCheck(st checks.Status) {
	k.mu.Lock()
	k.statuses[st.Name] = st
	k.mu.Unlock()
	if st.Up {
		k.log.Info("check up", "check", st.Name, "took", st.Duration.Round(time.Millisecond))
	} else {
		k.log.Warn("check down", "check", st.Name, "err", st.Err)
	}
	for _, g := range k.ordered {
		if slices.ContainsFunc(g.cfg.Track, func(t config.Track) bool { return t.Check == st.Name }) {
			g.poke()
		}
	}
}

// health returns what a group's candidacy depends on.
func (k *Keeper) health(gc config.Group) (prio int, fault bool, failing []string, linkUp, ready bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	tracked := checks.TrackedChecks(gc.Track, k.statuses)
	prio, fault, failing = checks.EffectivePriority(gc.Priority, tracked)
	ready = true
	for _, t := range tracked {
		ready = ready && t.Known
	}
	up, known := k.links[gc.Interface]
	if !up {
		failing = append(failing, "interface "+gc.Interface)
	}
	return prio, fault || !up, failing, up, ready && known
}
