package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
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
	ReplaceWith(ifname string, p netip.Prefix, lifetime time.Duration, o netif.AddrOptions) (added bool, err error)
	// Refresh resets the lifetime of an address known to be bound (one
	// netlink request instead of two).
	Refresh(ifname string, p netip.Prefix, lifetime time.Duration, o netif.AddrOptions) error
	Remove(ifname string, p netip.Prefix) (removed bool, err error)
	ProbeARP(ctx context.Context, ifname string, ips []netip.Addr, wait time.Duration) ([]netif.Conflict, error)
	LinkUp(ifname string) (bool, error)
	Watch(ctx context.Context, ifnames []string) (<-chan netif.Event, error)
}

// AnnounceFunc sends one announcement round (GARP request + reply, or NA)
// for ip on ifname.
type AnnounceFunc func(ifname string, ip netip.Addr) error

// ProbeFunc builds the probe of a configured check.
type ProbeFunc func(name string, c config.Check) (checks.Probe, error)

// Options wires a Keeper. Config, Client, Clock, Log and Ifaces are
// required.
type Options struct {
	Config config.Config
	Client *clientv3.Client
	Clock  clock.Clock
	Log    *slog.Logger
	Ifaces Interfaces
	// Announce sends announcements; nil sends none.
	Announce AnnounceFunc
	// Probes builds check probes; nil means checks.NewProbe.
	Probes ProbeFunc
	// Observer receives metrics events; nil means none.
	Observer Observer
	// Session overrides the lease timing derived from Config (tests).
	Session *election.SessionConfig
	// LeaseClient, if set, carries lease grants and renewals on a
	// connection of their own, so a storm of group writes (startup, a
	// failover of many groups) does not delay them. Default: Client.
	LeaseClient *clientv3.Client
}

// Keeper runs one reconcile loop per group on a shared lease and watch.
type Keeper struct {
	opt     Options
	node    string
	clk     clock.Clock
	log     *slog.Logger
	obs     Observer
	session *election.Session
	view    *election.View
	lead    *election.Leadership
	notify  *notifier

	mu       sync.Mutex
	cfg      config.Config
	groups   map[string]*group
	statuses map[string]checks.Status
	links    map[string]bool // ifname -> up; absent = unknown
	running  map[string]*runningCheck
	ifWatch  map[string]context.CancelFunc
	groupCtx context.Context // set by Run; parent of group loops
	bgCtx    context.Context
	groupWG  sync.WaitGroup
	bgWG     sync.WaitGroup
}

type runningCheck struct {
	cfg    config.Check
	cancel context.CancelFunc
	done   chan struct{}
}

// New builds a keeper; Run starts it.
func New(opt Options) *Keeper {
	cfg := opt.Config
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	if opt.Probes == nil {
		opt.Probes = func(_ string, c config.Check) (checks.Probe, error) { return checks.NewProbe(c) }
	}
	k := &Keeper{
		opt:      opt,
		node:     cfg.Node,
		clk:      opt.Clock,
		log:      opt.Log.With("node", cfg.Node),
		obs:      opt.Observer,
		cfg:      cfg,
		groups:   map[string]*group{},
		statuses: map[string]checks.Status{},
		links:    map[string]bool{},
		running:  map[string]*runningCheck{},
		ifWatch:  map[string]context.CancelFunc{},
	}
	keys := election.Keys{Prefix: cfg.Etcd.Prefix}
	scfg := election.SessionConfig{TTL: cfg.Etcd.LeaseTTL, RequestTimeout: cfg.Etcd.RequestTimeout}
	if opt.Session != nil {
		scfg = *opt.Session
	}
	leases := opt.Client
	if opt.LeaseClient != nil {
		leases = opt.LeaseClient
	}
	k.session = election.NewSession(leases.Lease, k.clk, scfg, k.log)
	k.session.OnRenew = func(r election.RenewResult, took time.Duration) {
		k.obs.Renewal(string(r), took)
		if r == election.RenewGranted && opt.Client != leases {
			// A new lease after a loss: etcd is reachable again through the
			// lease connection, so let the group connection retry at once
			// rather than after its reconnect backoff.
			opt.Client.ActiveConnection().ResetConnectBackoff()
		}
	}
	k.lead = &election.Leadership{KV: opt.Client.KV, Keys: keys, Node: cfg.Node, RequestTimeout: cfg.Etcd.RequestTimeout,
		Batch: election.NewBatcher(opt.Client.KV, cfg.Etcd.RequestTimeout, 0, 0, k.log)}
	k.view = election.NewView(opt.Client, keys, k.clk, k.log, k.poke)
	return k
}

// Session exposes the node lease (for metrics and status).
func (k *Keeper) Session() *election.Session { return k.session }

func (k *Keeper) poke(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if name == "" {
		for _, g := range k.groups {
			g.poke()
		}
		return
	}
	if g := k.groups[name]; g != nil {
		g.poke()
	}
}

func (k *Keeper) groupList() []*group {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*group, 0, len(k.groups))
	for _, g := range k.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
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
	if _, err := RemoveAll(k.opt.Ifaces, k.cfg.Groups, k.log); err != nil {
		return fmt.Errorf("keeper: startup cleanup: %w", err)
	}

	// Background parts outlive the group loops, so the loops can resign
	// through a working client after ctx is cancelled.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	k.notify = &notifier{log: k.log, obs: k.obs, ctx: bg}
	defer func() {
		// Give stop hooks (and others still running) a moment, then
		// kill what is left: exit must not hang on a hook.
		k.notify.waitFor(hookGraceOnExit)
		stopBg()
		k.bgWG.Wait()
		k.notify.wait()
	}()

	k.mu.Lock()
	k.groupCtx, k.bgCtx = ctx, bg
	k.mu.Unlock()

	if err := k.watchInterfaces(k.cfg.Groups); err != nil {
		return err
	}
	k.bgWG.Add(2)
	go func() { defer k.bgWG.Done(); k.session.Run(bg) }()
	go func() { defer k.bgWG.Done(); k.view.Run(bg) }()
	if err := k.startChecks(k.cfg); err != nil {
		return err
	}
	k.mu.Lock()
	for _, gc := range k.cfg.Groups {
		k.startGroupLocked(gc)
	}
	k.mu.Unlock()

	<-ctx.Done()
	k.groupWG.Wait()
	k.stopChecks(nil)

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.Etcd.RequestTimeout*2)
	defer cancel()
	if err := k.session.Revoke(rctx); err != nil {
		k.log.Warn("lease revoke on exit failed; keys expire with the lease", "err", err)
	}
	return nil
}

// hookGraceOnExit is how long vipd waits for running notify hooks when it
// stops, before killing them.
const hookGraceOnExit = 5 * time.Second

// startGroupLocked starts a group's loop. k.mu must be held.
func (k *Keeper) startGroupLocked(gc config.Group) {
	gctx, cancel := context.WithCancel(k.groupCtx)
	g := newGroup(k, gc, cancel)
	k.groups[gc.Name] = g
	k.groupWG.Add(1)
	go func() {
		defer k.groupWG.Done()
		defer close(g.done)
		g.run(gctx)
	}()
}

// watchInterfaces makes sure every interface used by groups is watched.
func (k *Keeper) watchInterfaces(groups []config.Group) error {
	for _, gc := range groups {
		name := gc.Interface
		k.mu.Lock()
		_, watching := k.ifWatch[name]
		k.mu.Unlock()
		if watching {
			continue
		}
		wctx, cancel := context.WithCancel(k.bgCtx)
		events, err := k.opt.Ifaces.Watch(wctx, []string{name})
		if err != nil {
			cancel()
			return fmt.Errorf("keeper: watch interface %s: %w", name, err)
		}
		k.mu.Lock()
		k.ifWatch[name] = cancel
		k.mu.Unlock()
		k.refreshLink(name)
		k.bgWG.Add(1)
		go func() { defer k.bgWG.Done(); k.netEvents(wctx, events) }()
	}
	return nil
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
				k.log.Info("interface "+ev.Kind.String(), "interface", ev.Interface)
			}
			for _, g := range k.groupList() {
				if g.iface() != ev.Interface {
					continue
				}
				if ev.Kind == netif.AddrAdded || ev.Kind == netif.AddrRemoved {
					if !g.ownsAddr(ev.Prefix.Addr()) {
						continue
					}
					g.markDirty()
				}
				g.poke()
			}
		}
	}
}

// startChecks starts every tracked check of cfg that is not already running
// with the same settings. Statuses of unchanged checks are kept, so a reload
// does not reset rise/fall or priorities.
func (k *Keeper) startChecks(cfg config.Config) error {
	tracked := map[string]bool{}
	for _, g := range cfg.Groups {
		for _, t := range g.Track {
			tracked[t.Check] = true
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range tracked {
			if !yield(n) {
				return
			}
		}
	}) {
		c := cfg.Checks[name]
		k.mu.Lock()
		rc := k.running[name]
		k.mu.Unlock()
		if rc != nil && reflect.DeepEqual(rc.cfg, c) {
			continue
		}
		probe, err := k.opt.Probes(name, c)
		if err != nil {
			return fmt.Errorf("keeper: checks.%s: %w", name, err)
		}
		if rc != nil {
			// Keep the last status until the new run reports: an unknown
			// check counts as down, and the drop in priority would hand a
			// held VIP to a peer on every reload.
			k.stopCheck(name, true)
		}
		r := checks.NewRunner(k.clk, k.log)
		// File and interface checks also run at once on inotify/netlink
		// events; the others are polled.
		r.Add(name, c, probe, checks.WithTrigger(checks.NewTrigger(c)))
		r.OnRun(func(name string, ok bool, took time.Duration) { k.obs.CheckRun(name, ok, took) })
		cctx, cancel := context.WithCancel(k.bgCtx)
		rc = &runningCheck{cfg: c, cancel: cancel, done: make(chan struct{})}
		k.mu.Lock()
		k.running[name] = rc
		k.mu.Unlock()
		k.bgWG.Add(1)
		go func() {
			defer k.bgWG.Done()
			defer close(rc.done)
			r.Run(cctx, k.onCheck)
		}()
	}
	k.stopChecks(tracked)
	return nil
}

// stopChecks stops every running check not in keep (nil: all).
func (k *Keeper) stopChecks(keep map[string]bool) {
	k.mu.Lock()
	var stop []string
	for name := range k.running {
		if !keep[name] {
			stop = append(stop, name)
		}
	}
	k.mu.Unlock()
	for _, name := range stop {
		k.stopCheck(name, false)
	}
}

// stopCheck stops a running check and, unless keepStatus, forgets its
// status.
func (k *Keeper) stopCheck(name string, keepStatus bool) {
	k.mu.Lock()
	rc := k.running[name]
	delete(k.running, name)
	k.mu.Unlock()
	if rc == nil {
		return
	}
	rc.cancel()
	<-rc.done
	if keepStatus {
		return
	}
	k.mu.Lock()
	delete(k.statuses, name)
	k.mu.Unlock()
}

func (k *Keeper) onCheck(st checks.Status) {
	k.mu.Lock()
	k.statuses[st.Name] = st
	k.mu.Unlock()
	k.obs.CheckState(st.Name, st.Up)
	if st.Up {
		k.log.Info("check up", "check", st.Name, "took", st.Duration.Round(time.Millisecond))
	} else {
		k.log.Warn("check down", "check", st.Name, "err", st.Err)
	}
	for _, g := range k.groupList() {
		if g.tracks(st.Name) {
			g.poke()
		}
	}
}

// health returns what a group's candidacy depends on.
func (k *Keeper) health(gc config.Group) (prio int, fault bool, failing []string, ready bool) {
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
	return prio, fault || !up, failing, ready && known
}

// Ready reports whether the lease is live and every group has decided its
// first state (for /readyz and systemd READY=1).
func (k *Keeper) Ready() (bool, string) {
	if !k.session.Current().Live(k.clk.Now()) {
		return false, "no live etcd lease"
	}
	for _, g := range k.groupList() {
		if g.currentState() == "" {
			return false, "group " + g.name + " has no state yet"
		}
	}
	return true, ""
}

// Summary is a one-line status for systemd's STATUS=.
func (k *Keeper) Summary() string {
	var parts []string
	for _, g := range k.groupList() {
		s := g.currentState()
		if s == "" {
			s = "INIT"
		}
		parts = append(parts, g.name+"="+s)
	}
	lease := "lease live"
	if !k.session.Current().Live(k.clk.Now()) {
		lease = "no lease"
	}
	return strings.Join(parts, " ") + "; " + lease
}

// Alive reports whether every group loop has run within maxAge; the systemd
// watchdog is fed only while this holds, so a hung loop gets vipd restarted.
func (k *Keeper) Alive(maxAge time.Duration) bool {
	now := k.clk.Now()
	for _, g := range k.groupList() {
		if now.Sub(g.lastLoop()) > maxAge {
			return false
		}
	}
	return true
}

// ErrNeedsRestart is returned by Reload for changes it cannot apply live.
var ErrNeedsRestart = errors.New("keeper: change needs a restart")

// Reload applies a new, validated configuration. Groups whose interface and
// addresses are unchanged keep running (a held VIP is not dropped) with the
// new settings; groups with other addresses are restarted; removed groups
// release; new ones start. Checks with unchanged settings keep their state.
// Changing the node name or etcd settings needs a restart.
func (k *Keeper) Reload(cfg config.Config) error {
	k.mu.Lock()
	old := k.cfg
	running := k.groupCtx != nil
	k.mu.Unlock()
	if !running {
		return fmt.Errorf("keeper: reload before Run")
	}
	if cfg.Node != old.Node {
		return fmt.Errorf("%w: node %q -> %q", ErrNeedsRestart, old.Node, cfg.Node)
	}
	if !reflect.DeepEqual(cfg.Etcd, old.Etcd) {
		return fmt.Errorf("%w: etcd settings changed", ErrNeedsRestart)
	}
	for _, gc := range cfg.Groups {
		for _, t := range gc.Track {
			if _, err := k.opt.Probes(t.Check, cfg.Checks[t.Check]); err != nil {
				return fmt.Errorf("keeper: checks.%s: %w", t.Check, err)
			}
		}
	}
	if err := k.watchInterfaces(cfg.Groups); err != nil {
		return err
	}
	if err := k.startChecks(cfg); err != nil {
		return err
	}

	wanted := map[string]config.Group{}
	for _, gc := range cfg.Groups {
		wanted[gc.Name] = gc
	}
	var stop []*group
	k.mu.Lock()
	for name, g := range k.groups {
		gc, keep := wanted[name]
		if keep && sameAddresses(g.config(), gc) {
			if !reflect.DeepEqual(g.config(), gc) {
				g.update(gc)
				k.log.Info("group reconfigured", "group", name)
			}
			continue
		}
		stop = append(stop, g)
		delete(k.groups, name)
	}
	k.mu.Unlock()
	for _, g := range stop {
		g.cancel()
		<-g.done
		k.log.Info("group stopped by reload", "group", g.name)
	}
	k.mu.Lock()
	for _, gc := range cfg.Groups {
		if _, ok := k.groups[gc.Name]; !ok {
			k.startGroupLocked(gc)
			k.log.Info("group started by reload", "group", gc.Name)
		}
	}
	k.cfg = cfg
	k.mu.Unlock()
	return nil
}

func sameAddresses(a, b config.Group) bool {
	return a.Interface == b.Interface && slices.Equal(a.Prefixes, b.Prefixes)
}
