package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/netif"
	"github.com/vipd/vipd/peer"
)

// IPRemover removes addresses by IP wherever they are bound.
type IPRemover interface {
	RemoveIPs(ips []netip.Addr) ([]netip.Prefix, error)
}

// Interfaces is everything the keeper needs of netif.Handle.
type Interfaces interface {
	VIPLinks
	LinkWatcher
	IPRemover
}

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
	// Movers makes each group's cloud mover (config.Mover); nil: none
	// (the daemon always sets it; tests without movers need not).
	Movers MoverFactory
	// Observer receives metrics events; nil means none.
	Observer Observer
	// Session overrides the lease timing derived from Config (tests).
	Session *election.SessionConfig
	// LeaseClient, if set, carries lease grants and renewals on a
	// connection of their own, so a storm of group writes (startup, a
	// failover of many groups) does not delay them. Default: Client.
	LeaseClient *clientv3.Client
	// KV, if set, carries the group writes and reads instead of Client's
	// (tests inject faults here). Default: Client.KV.
	KV clientv3.KV
	// Peer, if set, turns the peer channel on (docs/design.md §2.8).
	Peer *PeerOptions
	// PromiseFile, if set, is where the failsafe promises this node gives
	// are remembered across restarts within a boot (vipd uses
	// $STATE_DIRECTORY/promised, else the runtime directory's), so a
	// restart honours them whatever its new configuration. "" remembers nothing: a restart with the peer channel
	// on still waits a lease TTL, as always.
	PromiseFile string
	// Handoff, if set, is what the previous vipd image of this node left
	// when it re-executed in place: the keeper adopts its lease and claims
	// once etcd confirms them (see Handoff). Ignored unless it names this
	// node and is younger than the lease TTL.
	Handoff *Handoff
}

// PeerOptions wires the peer channel.
type PeerOptions struct {
	// Listener is where peers' requests are served; Run closes it.
	Listener net.Listener
	// Advertise is this node's endpoint (host:port) as peers reach it,
	// published in its candidate records.
	Advertise string
	// Key is the cluster's shared key (peer.LoadKey).
	Key []byte
	// Timeout bounds one call to a peer. Zero value: 2 × the etcd
	// request timeout (the peer makes one etcd request of its own).
	Timeout time.Duration
	// Failsafe lets this node keep its VIPs, while neither it nor a peer
	// can renew its lease, for as long as every member of the group
	// promises not to claim them (docs/design.md §2.9).
	Failsafe bool
}

// Keeper runs one reconcile loop per group on a shared lease and watch:
// it starts, reconfigures and retires group loops, and owns what they
// share (the lease, the view of etcd, the health part).
type Keeper struct {
	node    string
	clk     clock.Clock
	log     *slog.Logger
	ifaces  Interfaces
	session *election.Session
	view    *election.View
	health  *health
	env     *groupEnv
	obs     Observer

	mu       sync.Mutex
	cfg      config.Config
	groups   map[string]*group
	groupCtx context.Context // set by Run; parent of group loops
	stopping bool            // set once Run stops: no group starts after
	groupWG  sync.WaitGroup

	peers      *peers
	fs         *failsafe
	peerServer *peer.Server
	peerLn     net.Listener

	notify *notifier // set by Run
	// adopt is the previous image's handoff, when usable.
	adopt *Handoff
	// detaching: Run's end hands over instead of stopping (Detach);
	// handedOff is what it handed over, once Run has returned.
	detaching atomic.Bool
	handedOff Handoff
}

// ErrNeedsRestart is returned by Reload for changes it cannot apply live.
var ErrNeedsRestart = errors.New("keeper: change needs a restart")

// ErrStopping is returned by Reload once the keeper is stopping.
var ErrStopping = errors.New("keeper: stopping")

// New builds a keeper; Run starts it.
func New(opt Options) *Keeper {
	cfg := opt.Config
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	if opt.Probes == nil {
		opt.Probes = func(_ string, c config.Check) (checks.Probe, error) { return checks.NewProbe(c) }
	}
	log := opt.Log.With("node", cfg.Node)
	k := &Keeper{node: cfg.Node, clk: opt.Clock, log: log, ifaces: opt.Ifaces, obs: opt.Observer,
		cfg: cfg, groups: map[string]*group{}}
	keys := election.Keys{Prefix: cfg.Etcd.Prefix}
	scfg := election.SessionConfig{TTL: cfg.Etcd.LeaseTTL, RequestTimeout: cfg.Etcd.RequestTimeout}
	if opt.Session != nil {
		scfg = *opt.Session
	}
	leases := opt.Client
	if opt.LeaseClient != nil {
		leases = opt.LeaseClient
	}
	k.session = election.NewSession(leases.Lease, k.clk, scfg, log)
	mono, _ := clock.SystemMonotonic()
	if err := opt.Handoff.usable(cfg.Node, cfg.Etcd.Prefix, cfg.Etcd.LeaseTTL, opt.Peer != nil && opt.Peer.Failsafe, mono); err == nil {
		k.adopt = opt.Handoff.aged(mono - opt.Handoff.MonoAt)
		log.Info("adopting what the previous vipd image handed over", "lease", fmt.Sprintf("%x", opt.Handoff.Lease),
			"made", opt.Handoff.Made.Format(time.RFC3339Nano), "age", (mono - opt.Handoff.MonoAt).Round(time.Microsecond), "groups", len(opt.Handoff.Groups))
		k.session.Adopt(clientv3.LeaseID(opt.Handoff.Lease))
	} else if opt.Handoff != nil {
		log.Warn("the previous vipd image's handoff is not used; starting afresh", "reason", err)
	}
	k.session.OnRenew = func(r election.RenewResult, took time.Duration) {
		opt.Observer.Renewal(string(r), took)
		if r == election.RenewGranted && opt.Client != leases {
			// A new lease after a loss: etcd is reachable again through the
			// lease connection, so let the group connection retry at once
			// rather than after its reconnect backoff.
			opt.Client.ActiveConnection().ResetConnectBackoff()
		}
	}
	kv := opt.KV
	if kv == nil {
		kv = opt.Client.KV
	}
	lead := &election.Leadership{KV: kv, Keys: keys, Node: cfg.Node, RequestTimeout: cfg.Etcd.RequestTimeout,
		Batch: election.NewBatcher(kv, cfg.Etcd.RequestTimeout, 0, 0, log)}
	if leases != opt.Client {
		lead.Fallback = leases.KV
	}
	k.view = election.NewView(opt.Client, keys, k.clk, log, k.poke)
	var advertise string
	if po := opt.Peer; po != nil {
		timeout := po.Timeout
		if timeout == 0 {
			timeout = 2 * cfg.Etcd.RequestTimeout
		}
		k.peers = &peers{node: cfg.Node, log: log, obs: opt.Observer, timeout: cfg.Etcd.RequestTimeout,
			client: peer.NewClient(peer.ClientConfig{Node: cfg.Node, Key: po.Key, Timeout: timeout, Log: log, Clock: k.clk}),
			leases: leases.Lease, kv: kv, keys: keys, endpoints: k.view.Endpoints}
		k.peerServer = peer.NewServer(peer.ServerConfig{Key: po.Key, Handler: k.peers.serve, Log: log, Clock: k.clk,
			OnRefused: opt.Observer.PeerRefused})
		k.peerLn, advertise = po.Listener, po.Advertise
		k.session.Relay = k.peers.Renew
		lead.Relay = k.peers
		lead.PreferRelay = func() bool { return k.session.Current().Relayed }
		k.fs = newFailsafe(cfg.Node, k.clk, log, opt.Observer, k.peers, k.session, po.Failsafe, k.poke)
		k.peers.promise, k.peers.unpromise = k.fs.servePromise, k.fs.serveUnpromise
		if k.adopt != nil && k.adopt.StartWaitIn != nil {
			// The previous image's start-up wait goes on; the promises it
			// gave are in the promise record, read below.
			k.fs.startedUntil = k.clk.Now().Add(max(*k.adopt.StartWaitIn, 0))
		}
	}
	pf := promiseFile(opt.PromiseFile)
	left, err := pf.remaining()
	if err != nil {
		// A promise may stand that this run cannot read: wait as long as
		// one of this configuration's would last.
		log.Warn("cannot read the failsafe promise record; claiming nothing for a lease TTL", "err", err)
		left = k.session.Config().TTL
	}
	if left > 0 {
		if k.fs == nil {
			// Promised in an earlier run with the peer channel on: the
			// promise binds this run too.
			k.fs = newFailsafe(cfg.Node, k.clk, log, opt.Observer, nil, k.session, false, k.poke)
			k.fs.startedUntil = time.Time{}
		}
		if until := k.clk.Now().Add(left); until.After(k.fs.startedUntil) {
			k.fs.startedUntil = until
		}
		log.Warn("a failsafe promise given before this start may still stand; claiming nothing until it ends", "for", left.Round(time.Millisecond))
	}
	if k.fs != nil {
		k.fs.file = pf
	}
	k.view.OnAddress = k.pokeAddr
	k.health = newHealth(k.clk, log, opt.Observer, opt.Probes, opt.Ifaces)
	if k.adopt != nil {
		k.health.seed = seedChecks(k.adopt.Checks)
	}
	k.health.onCheck = k.checkChanged
	k.health.onNet = k.netEvent
	k.health.onResync = k.resync
	k.env = &groupEnv{
		node: cfg.Node, clk: k.clk, log: log, obs: opt.Observer,
		lease: k.session, ttl: k.session.Config().TTL, view: k.view, etcd: lead,
		links: opt.Ifaces, announce: opt.Announce, health: k.health.Of, movers: opt.Movers,
		timeout: 2 * cfg.Etcd.RequestTimeout, leave: k.leave, peerEndpoint: advertise, fs: k.fs,
		detaching: k.detachingNow,
	}
	return k
}

// Session exposes the node lease (for metrics and status).
func (k *Keeper) Session() *election.Session { return k.session }

// poke wakes group name, or every group for "".
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

// pokeAddr wakes the groups with VIP ip: a claim of it by a group of
// another name changed.
func (k *Keeper) pokeAddr(ip netip.Addr) {
	for _, g := range k.groupList() {
		if g.ownsAddr(ip) {
			g.poke()
		}
	}
}

// resync makes the groups on ifname re-check their VIPs: events of that
// interface may have been missed.
func (k *Keeper) resync(ifname string) {
	for _, g := range k.groupList() {
		if g.usesLink(ifname) {
			g.markDirty()
			g.poke()
		}
	}
}

// checkChanged wakes the groups that track check.
func (k *Keeper) checkChanged(check string) {
	for _, g := range k.groupList() {
		if g.tracks(check) {
			g.poke()
		}
	}
}

// netEvent wakes the groups on the event's interface; an address event
// concerns only the group owning that address, which re-checks its VIPs.
func (k *Keeper) netEvent(ev netif.Event) {
	for _, g := range k.groupList() {
		if !g.usesLink(ev.Interface) {
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

// loopsStarted reports whether Run has started the group loops.
func (k *Keeper) loopsStarted() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.groupCtx != nil
}

// RemoveAll removes every configured VIP from this host: every address
// with a configured VIP's IP, on any interface and with any prefix length.
// It is the startup cleanup and `vipd cleanup`; it reports how many
// addresses it removed.
//
// keep are spared: addresses a handed-over claim had bound, whose group
// decides.
func RemoveAll(ifaces IPRemover, groups []config.Group, log *slog.Logger, keep ...netip.Addr) (int, error) {
	var ips []netip.Addr
	for _, g := range groups {
		for _, p := range g.Prefixes {
			if !slices.Contains(keep, p.Addr()) {
				ips = append(ips, p.Addr())
			}
		}
	}
	removed, err := ifaces.RemoveIPs(ips)
	for _, p := range removed {
		log.Info("removed VIP", "address", p)
	}
	return len(removed), err
}

// Run removes stale VIPs, then runs checks, lease, watch and group loops
// until ctx is done. On the way out every group removes its VIPs, then
// resigns its keys, then the lease is revoked, so peers take over at once.
func (k *Keeper) Run(ctx context.Context) error {
	// The startup cleanup spares only what a handed-over claim had bound:
	// its group re-reads the claim and keeps it, or removes it.
	if _, err := RemoveAll(k.ifaces, k.cfg.Groups, k.log, k.adoptedBound()...); err != nil {
		return fmt.Errorf("keeper: startup cleanup: %w", err)
	}

	// Background parts outlive the group loops, so the loops can resign
	// through a working client after ctx is cancelled.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	hooksCtx, stopHooks := context.WithCancel(context.WithoutCancel(ctx))
	notify := &notifier{log: k.log, obs: k.obs, ctx: hooksCtx}
	k.env.hooks = notify
	k.mu.Lock()
	k.notify = notify
	k.mu.Unlock()
	var bgWG sync.WaitGroup
	defer func() {
		if !k.detaching.Load() {
			// Give stop hooks (and others still running) a moment, then
			// kill what is left: exit must not hang on a hook.
			notify.waitFor(hookGraceOnExit)
			stopHooks()
		}
		// Handing over, hooks still running are left to finish: the next
		// image must start at once, and a hook is not the daemon's to kill
		// when the daemon goes on. Their context ends once they have (this
		// process may go on: a failed exec).
		if k.detaching.Load() {
			go func() { notify.wait(); stopHooks() }()
		}
		stopBg()
		k.health.stop()
		bgWG.Wait()
		if !k.detaching.Load() {
			notify.wait()
		}
	}()

	k.health.start(bg)
	// The session stops before the lease is revoked, so it grants no new
	// lease while stop hooks still run.
	sessCtx, stopSession := context.WithCancel(bg)
	var sessWG sync.WaitGroup
	defer func() { stopSession(); sessWG.Wait() }()
	sessWG.Go(func() { k.session.Run(sessCtx) })
	bgWG.Go(func() { k.view.Run(bg) })
	if k.peerServer != nil {
		bgWG.Go(func() {
			if err := k.peerServer.Serve(bg, k.peerLn); err != nil {
				k.log.Error("peer channel stopped", "err", err)
			}
		})
		defer k.peers.client.Close()
		bgWG.Go(func() { k.fs.run(bg) })
	}
	bgWG.Go(func() { k.sweepLoop(bg) })
	if err := k.health.apply(k.cfg); err != nil {
		return err
	}
	if k.adopt != nil {
		k.awaitAdoption(ctx)
	}
	k.mu.Lock()
	k.groupCtx = ctx
	for _, gc := range k.cfg.Groups {
		k.startGroupLocked(gc, "")
	}
	k.startUnconfiguredLocked()
	// The handoff is for this start only: a group a reload adds later, or
	// the sweep starts, begins afresh.
	k.adopt = nil
	k.mu.Unlock()

	<-ctx.Done()
	k.mu.Lock()
	k.stopping = true // from here on no group starts, so Wait cannot race an Add
	k.mu.Unlock()
	k.groupWG.Wait()
	var checkStates map[string]checks.Status
	if k.detaching.Load() {
		checkStates = k.health.known() // before the checks stop
	}
	k.health.stopChecks(nil)
	stopSession()
	sessWG.Wait()
	if k.detaching.Load() {
		// Handed over: the lease stays, for the next image to renew.
		k.collectHandoff(checkStates)
		return nil
	}

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.env.timeout)
	defer cancel()
	if err := k.session.Revoke(rctx); err != nil {
		k.log.Warn("lease revoke on exit failed; keys expire with the lease", "err", err)
	}
	return nil
}

// hookGraceOnExit is how long vipd waits for running notify hooks when it
// stops, before killing them.
const hookGraceOnExit = 5 * time.Second

// startGroupLocked starts a group's loop unless the keeper is stopping;
// retiring, if set, starts it retiring. k.mu must be held.
func (k *Keeper) startGroupLocked(gc config.Group, retiring string) {
	if k.stopping {
		return
	}
	gctx, cancel := context.WithCancel(k.groupCtx)
	g := newGroup(k.env, gc, cancel)
	g.retiring = retiring
	if hg, ok := k.adopt.group(gc.Name); ok && k.groups[gc.Name] == nil {
		g.adopt(hg, k.clk.Now())
	}
	k.groups[gc.Name] = g
	k.groupWG.Add(1)
	go func() {
		defer k.groupWG.Done()
		defer close(g.done)
		defer cancel()
		g.run(gctx)
	}()
}

// sweepEvery is how often the keeper looks for keys of its own in etcd
// that no group loop of it owns.
const sweepEvery = 3 * time.Second

func (k *Keeper) sweepLoop(ctx context.Context) {
	t := k.clk.NewTimer(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		k.sweep()
		t.Reset(sweepEvery)
	}
}

// sweep starts a retiring loop for every group of which this node has keys
// on its current lease (a leader key, an address claim, a candidate
// record) but runs no loop: a write whose answer was lost that landed
// after its group had left. The loop releases and deletes them, as any
// retiring group does; a reload that adds the group meanwhile takes it
// over.
func (k *Keeper) sweep() {
	l := k.session.Current()
	if !l.Live(k.clk.Now()) {
		return
	}
	own := k.view.OwnKeys(k.node, l.ID)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopping || k.groupCtx == nil {
		return
	}
	for name, addrs := range own {
		if _, running := k.groups[name]; running {
			continue
		}
		gc := config.Group{Name: name}
		for _, a := range addrs {
			p := netip.PrefixFrom(a, a.BitLen())
			gc.Prefixes = append(gc.Prefixes, p)
			gc.Addresses = append(gc.Addresses, config.Address{CIDR: p.String()})
		}
		k.log.Warn("found keys of a group this node does not run; deleting them", "group", name, "addresses", gc.Addresses)
		k.startGroupLocked(gc, "keys of a group this node does not run")
	}
}

// leave removes a retiring group that has released everything; false if
// a reload wanted it back meanwhile (its loop then goes on).
func (k *Keeper) leave(g *group) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !g.isRetiring() {
		return false
	}
	if k.groups[g.name] == g {
		delete(k.groups, g.name)
	}
	return true
}

// Ready reports whether the lease is live and every group has decided its
// first state (for /readyz and systemd READY=1).
func (k *Keeper) Ready() (bool, string) {
	if !k.session.Current().Live(k.clk.Now()) {
		return false, "no live etcd lease"
	}
	if !k.loopsStarted() {
		return false, "group loops not started yet"
	}
	for _, g := range k.groupList() {
		if !g.isRetiring() && g.currentState() == election.StateInit {
			return false, "group " + g.name + " has no state yet"
		}
	}
	return true, ""
}

// GroupMode returns a running group's holder mode ("relay", "failsafe" or
// ""; see HolderMode), and whether the group runs.
func (k *Keeper) GroupMode(name string) (string, bool) {
	k.mu.Lock()
	g := k.groups[name]
	k.mu.Unlock()
	if g == nil {
		return "", false
	}
	_, mode := g.stateAndMode()
	return mode, true
}

// Summary is a one-line status for systemd's STATUS=.
func (k *Keeper) Summary() string {
	var parts []string
	for _, g := range k.groupList() {
		st, mode := g.stateAndMode()
		parts = append(parts, g.name+"="+withMode(st, mode))
	}
	lease := "lease live"
	switch l := k.session.Current(); {
	case !l.Live(k.clk.Now()):
		lease = "no lease"
	case l.Relayed:
		lease = "lease live (renewed by peers)"
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

// Reload applies a new, validated configuration. Every group keeps its
// loop: one whose interface and addresses are unchanged keeps its VIP
// bound with the new settings; one with other addresses releases and
// campaigns for the new ones; a removed group releases its keys and
// record, then leaves; new groups start. Checks with unchanged settings
// keep their state. Changing the node name or etcd settings needs a
// restart.
func (k *Keeper) Reload(cfg config.Config) error {
	k.mu.Lock()
	old, running, stopping := k.cfg, k.groupCtx != nil, k.stopping
	k.mu.Unlock()
	switch {
	case !running:
		return fmt.Errorf("keeper: reload before Run")
	case stopping:
		return ErrStopping
	case cfg.Node != old.Node:
		return fmt.Errorf("%w: node %q -> %q", ErrNeedsRestart, old.Node, cfg.Node)
	case !reflect.DeepEqual(cfg.Etcd, old.Etcd):
		return fmt.Errorf("%w: etcd settings changed", ErrNeedsRestart)
	}
	if err := k.health.validate(cfg); err != nil {
		return err
	}
	if err := k.health.apply(cfg); err != nil {
		return err
	}

	wanted := map[string]config.Group{}
	for _, gc := range cfg.Groups {
		wanted[gc.Name] = gc
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopping {
		return ErrStopping
	}
	for name, g := range k.groups {
		gc, keep := wanted[name]
		switch {
		case keep && (g.isRetiring() || !reflect.DeepEqual(g.config(), gc)):
			g.update(gc)
			k.log.Info("group reconfigured", "group", name)
		case !keep && !g.isRetiring():
			g.retire("group removed by reload")
			k.log.Info("group removed by reload; it releases and leaves", "group", name)
		}
	}
	for _, gc := range cfg.Groups {
		if _, ok := k.groups[gc.Name]; !ok {
			k.startGroupLocked(gc, "")
			k.log.Info("group started by reload", "group", gc.Name)
		}
	}
	k.cfg = cfg
	return nil
}
