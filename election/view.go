package election

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/clock"
)

// LeaderInfo is a group's leader key as last seen.
type LeaderInfo struct {
	Present   bool
	Node      string
	CreateRev int64
	Lease     clientv3.LeaseID
}

// GroupState is one group's leader and candidates as last seen.
type GroupState struct {
	Leader     LeaderInfo
	Candidates []Candidate
	// Handover is a pending planned switchover, nil if none.
	Handover *Handover
	// Addresses holds the claim of each address asked for that is
	// claimed; an address absent from it is unclaimed.
	Addresses map[netip.Addr]AddressClaim
	// Members holds the membership record of each address asked for that
	// has one (docs/design.md §2.9).
	Members map[netip.Addr]Members
	// Prior is, while a leader key is present, the vacancy its claim
	// replaced: the latest end of an earlier claim of the leader key or
	// of any address claimed with it, as this view saw it (see Vacancy).
	// A node that has just won a claim binds only once that vacancy is
	// graceful or old enough (keeper.ExpiryGrace).
	Prior Vacancy
	// Rev is the etcd revision this state reflects.
	Rev int64
	// Synced is false until the first full listing has been applied, and
	// again while the watch is being re-established.
	Synced bool
}

// Vacancy is the end of a claim as a view saw it: when the view saw the
// key go (on its own clock), and whether a graceful release (Resign: the
// VIPs were confirmed gone before the keys) ended it. A vacancy the view
// did not see (it happened before the view's last listing) counts as not
// graceful, seen at the listing.
type Vacancy struct {
	At       time.Time
	Graceful bool
}

// ended records the end of one key's claim.
type ended struct {
	Vacancy
	rev       int64 // the revision that deleted the key
	createRev int64 // the claim's create revision
	group     string
}

type groupView struct {
	leader     LeaderInfo
	candidates map[string]Candidate
	handover   *Handover
	// vacated is how the last leader key ended; prior how the one before
	// the current leader key ended (recorded at its creation).
	vacated ended
	prior   Vacancy
	// released is the last graceful release recorded for the group.
	released struct{ rev, createRev int64 }
	// lastAddrs are the addresses last claimed for the group.
	lastAddrs map[netip.Addr]struct{}
}

// Re-listing after a failed list or watch backs off from relistMin,
// doubling, to relistMax: a member without a leader fails every request at
// once, and a tight re-list loop against a struggling cluster only adds
// load. The cap stays short because groups wait on the view (a standby
// cannot see a vacancy without it).
const (
	relistMin = 100 * time.Millisecond
	relistMax = 1600 * time.Millisecond
)

// View mirrors every group's leader key and candidate records from one
// prefix watch (one watch per node, not per group). Bad records are logged
// and ignored.
type View struct {
	cli  *clientv3.Client
	keys Keys
	clk  clock.Clock
	log  *slog.Logger
	// onChange is called with the group whose state changed, or "" when
	// every group may have changed (resync). It must not block.
	onChange func(group string)
	// OnAddress, if set before Run, is also called with the address of
	// every address claim that changed: a group of another name may be
	// waiting for it. It must not block.
	OnAddress func(ip netip.Addr)

	mu      sync.Mutex
	rev     int64
	synced  bool
	groups  map[string]*groupView
	drained map[string]bool
	addrs   map[netip.Addr]AddressClaim
	members map[netip.Addr]Members
	// addrEnded is how each address's last claim ended; addrPrior how the
	// claim before the current one ended (recorded at its creation).
	addrEnded map[netip.Addr]ended
	addrPrior map[netip.Addr]Vacancy
	// byGroup indexes the current claims by the group they name.
	byGroup map[string]map[netip.Addr]struct{}
	// listedAt is when the last listing was applied: vacancies before it
	// were not seen.
	listedAt time.Time
	wonAt    map[string]time.Time // node -> when the watch last saw it create a leader key
}

// NewView returns a view; Run starts it.
func NewView(cli *clientv3.Client, keys Keys, clk clock.Clock, log *slog.Logger, onChange func(group string)) *View {
	v := &View{cli: cli, keys: keys, clk: clk, log: log, onChange: onChange, wonAt: map[string]time.Time{}}
	v.resetLocked()
	return v
}

// resetLocked forgets everything but LastWin, before a listing.
func (v *View) resetLocked() {
	v.groups = map[string]*groupView{}
	v.drained = map[string]bool{}
	v.addrs = map[netip.Addr]AddressClaim{}
	v.members = map[netip.Addr]Members{}
	v.addrEnded = map[netip.Addr]ended{}
	v.addrPrior = map[netip.Addr]Vacancy{}
	v.byGroup = map[string]map[netip.Addr]struct{}{}
	v.listedAt = v.clk.Now()
}

// Group returns a copy of group's state, with the claims of addrs.
func (v *View) Group(name string, addrs []netip.Addr) GroupState {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := GroupState{Rev: v.rev, Synced: v.synced, Addresses: make(map[netip.Addr]AddressClaim, len(addrs)),
		Members: map[netip.Addr]Members{}}
	for _, a := range addrs {
		a = a.Unmap()
		if c, ok := v.addrs[a]; ok {
			st.Addresses[a] = c
		}
		if m, ok := v.members[a]; ok {
			st.Members[a] = m
		}
	}
	if g := v.groups[name]; g != nil {
		st.Leader = g.leader
		if g.leader.Present {
			st.Prior = v.priorLocked(g, addrs)
		}
		if g.handover != nil {
			h := *g.handover
			st.Handover = &h
		}
		for _, c := range g.candidates {
			st.Candidates = append(st.Candidates, c)
		}
	}
	return st
}

// Endpoints returns the peer channel endpoint of every node with one in
// any candidate record the view holds (node name -> host:port). The view
// keeps what it last listed while its watch is broken, which is when the
// endpoints are needed.
func (v *View) Endpoints() map[string]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]string{}
	for _, g := range v.groups {
		for _, c := range g.candidates {
			if c.Peer != "" {
				out[c.Node] = c.Peer
			}
		}
	}
	return out
}

// Claims returns the addresses claimed for group by node on lease, sorted.
func (v *View) Claims(group, node string, lease clientv3.LeaseID) []netip.Addr {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []netip.Addr
	for ip := range v.byGroup[group] {
		if a := v.addrs[ip]; a.Node == node && a.Lease == lease {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// OwnKeys returns, for every group, the addresses node has claimed on
// lease and whether it has a leader key or a candidate record there: what
// this node holds in etcd, so it can find keys of groups it no longer runs.
func (v *View) OwnKeys(node string, lease clientv3.LeaseID) map[string][]netip.Addr {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string][]netip.Addr{}
	if lease == 0 || !v.synced {
		return out
	}
	for name, g := range v.groups {
		if (g.leader.Present && g.leader.Node == node && g.leader.Lease == lease) ||
			(g.candidates[node].Node == node && clientv3.LeaseID(g.candidates[node].Lease) == lease) {
			out[name] = out[name]
		}
	}
	for ip, a := range v.addrs {
		if a.Node == node && a.Lease == lease && a.Group != "" {
			out[a.Group] = append(out[a.Group], ip)
		}
	}
	for _, ips := range out {
		slices.SortFunc(ips, netip.Addr.Compare)
	}
	return out
}

// priorLocked combines the vacancy the current leader key replaced with
// those of the addresses (of addrs) claimed with it: the latest, graceful
// only if all were.
func (v *View) priorLocked(g *groupView, addrs []netip.Addr) Vacancy {
	p := g.prior
	for _, a := range addrs {
		a = a.Unmap()
		c, ok := v.addrs[a]
		if !ok || c.CreateRev != g.leader.CreateRev {
			continue
		}
		ap, seen := v.addrPrior[a]
		if !seen {
			ap = Vacancy{At: v.listedAt}
		}
		if ap.At.After(p.At) {
			p.At = ap.At
		}
		p.Graceful = p.Graceful && ap.Graceful
	}
	return p
}

// LastWin returns when the watch last saw node create a leader key (take
// a group), on this node's clock; zero if never. A full listing carries
// no such news, so only watched events count.
func (v *View) LastWin(node string) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.wonAt[node]
}

// Drained reports whether node is marked drained, and whether the view is
// synced (an unsynced view keeps the last known answer).
func (v *View) Drained(node string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.drained[node]
}

// Run lists and watches the prefix until ctx is done, re-listing after any
// watch failure (compaction, lost leader, broken stream).
func (v *View) Run(ctx context.Context) {
	wait := relistMin
	for ctx.Err() == nil {
		rev, err := v.list(ctx)
		if err == nil {
			wait = relistMin
			err = v.watch(ctx, rev)
		}
		v.mu.Lock()
		v.synced = false
		v.mu.Unlock()
		v.onChange("")
		if ctx.Err() != nil {
			return
		}
		v.log.Warn("group watch interrupted; re-listing", "err", err, "retry_in", wait)
		t := v.clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		wait = min(wait*2, relistMax)
	}
}

func (v *View) list(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 2*time.Second)
	defer cancel()
	resp, err := v.cli.Get(rctx, v.keys.All(), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.resetLocked()
	for _, kv := range resp.Kvs {
		v.applyLocked(mvccpb.PUT, kv)
	}
	v.rev = resp.Header.Revision
	v.synced = true
	v.mu.Unlock()
	v.onChange("")
	return resp.Header.Revision, nil
}

// progressEvery is how often the view asks its member for a progress
// notification on the watch stream; after staleAfter requests without any
// answer on the stream the watch counts as stalled and the view re-lists.
// A watch can stall silently (its member defragmenting, its disk stuck, cut
// from the quorum without noticing yet) while the node's other requests
// reach healthy members; a claim won then could never be confirmed.
const (
	progressEvery = time.Second
	staleAfter    = 3
)

// errWatchStalled: the watch stream answered none of several progress
// requests.
var errWatchStalled = errors.New("election: watch stalled: no answer to progress requests")

// watch applies the changes after the listing at revision listed. It
// starts at listed itself, not one past it, and skips that revision's
// events (the listing has them): etcd answers a progress request only
// once a watcher's start revision is reached, so a watch one past the
// store's revision gets no answer in a quiet cluster, and would be taken
// for stalled until the next write.
func (v *View) watch(ctx context.Context, listed int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := v.cli.Watch(wctx, v.keys.All(), clientv3.WithPrefix(), clientv3.WithRev(listed))
	// A progress request every second keeps client-to-member data on the
	// connection. When the path to the member breaks, that data goes
	// unacknowledged and the TCP user timeout gRPC sets (the keepalive
	// timeout; its pings come only every 10 s) aborts the connection, so
	// once the path heals the client reconnects afresh. Otherwise the old
	// connection lives on and every answer to this node waits behind the
	// member's TCP retransmission backoff, seconds after the heal.
	progressDone := make(chan struct{})
	defer func() { cancel(); <-progressDone }()
	var unanswered atomic.Int32 // progress requests since the stream last said anything
	var stalled atomic.Bool
	go func() {
		defer close(progressDone)
		t := v.clk.NewTimer(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C():
				if unanswered.Add(1) > staleAfter {
					stalled.Store(true)
					cancel()
					return
				}
				_ = v.cli.RequestProgress(wctx) // best effort; the watch reports failures
				t.Reset(progressEvery)
			}
		}
	}()
	for resp := range wch {
		unanswered.Store(0)
		if err := resp.Err(); err != nil {
			return err
		}
		changed := map[string]bool{}
		var addrs []netip.Addr
		now := v.clk.Now()
		v.mu.Lock()
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= listed {
				continue // in the listing already
			}
			g, kind := v.applyLocked(ev.Type, ev.Kv)
			if kind == KeyLeader && ev.IsCreate() {
				v.wonAt[string(ev.Kv.Value)] = now
			}
			if kind == KeyMembers {
				// The groups with this address (whatever their name here)
				// re-check who may claim it.
				if ip, ok := v.keys.ParseMembers(string(ev.Kv.Key)); ok {
					addrs = append(addrs, ip)
				}
			}
			if kind == KeyAddress {
				if ip, ok := v.keys.ParseAddress(string(ev.Kv.Key)); ok {
					addrs = append(addrs, ip)
				}
				if g == "" {
					changed[""] = true // a claim naming no group: wake every group
				}
			}
			if kind == KeyDrained {
				changed[""] = true // a drain mark concerns every group of that node
			} else if g != "" {
				changed[g] = true
			}
		}
		// The header's revision is the store's, which etcd may send ahead
		// of the events a catching-up watch has delivered so far (it sends
		// at most 1000 revisions of events per response). Only a progress
		// notification says every event up to its revision was delivered.
		seen := v.rev
		if resp.IsProgressNotify() {
			seen = resp.Header.Revision
		} else if n := len(resp.Events); n > 0 {
			seen = resp.Events[n-1].Kv.ModRevision
		}
		if seen > v.rev {
			v.rev = seen
		}
		v.mu.Unlock()
		if changed[""] {
			v.onChange("")
		} else {
			for g := range changed {
				v.onChange(g)
			}
		}
		if v.OnAddress != nil {
			for _, ip := range addrs {
				v.OnAddress(ip)
			}
		}
	}
	if stalled.Load() {
		return errWatchStalled
	}
	return ctx.Err()
}

// applyLocked applies one key change and returns the group and kind it
// touched (for an address claim: the group it names, or named before a
// delete).
func (v *View) applyLocked(t mvccpb.Event_EventType, kv *mvccpb.KeyValue) (string, KeyKind) {
	key := string(kv.Key)
	group, kind, node := v.keys.Parse(key)
	switch kind {
	case KeyAddress:
		ip, _ := v.keys.ParseAddress(key)
		prev, had := v.addrs[ip]
		if had {
			delete(v.byGroup[prev.Group], ip)
			if len(v.byGroup[prev.Group]) == 0 {
				delete(v.byGroup, prev.Group)
			}
		}
		if t == mvccpb.DELETE {
			delete(v.addrs, ip)
			if had {
				e := ended{Vacancy: Vacancy{At: v.clk.Now()}, rev: kv.ModRevision, createRev: prev.CreateRev, group: prev.Group}
				if g := v.groups[prev.Group]; g != nil {
					e.Graceful = g.released.rev == e.rev && g.released.createRev == e.createRev
				}
				v.addrEnded[ip] = e
			}
			return prev.Group, kind
		}
		a := parseAddressClaim(kv)
		if a.Lease == 0 {
			// vipd claims addresses on a lease only; one without would
			// block the address forever, so it is reported, and still
			// honoured: it is not vipd's to delete.
			v.log.Warn("address claim without a lease; the address stays blocked until an operator deletes the key", "key", key)
		}
		if !had || prev.CreateRev != a.CreateRev {
			// A new claim: remember how the one before it ended.
			if e, seen := v.addrEnded[ip]; seen {
				v.addrPrior[ip] = e.Vacancy
			} else {
				v.addrPrior[ip] = Vacancy{At: v.listedAt}
			}
		}
		v.addrs[ip] = a
		if v.byGroup[a.Group] == nil {
			v.byGroup[a.Group] = map[netip.Addr]struct{}{}
		}
		v.byGroup[a.Group][ip] = struct{}{}
		g := v.groups[a.Group]
		if g == nil {
			g = &groupView{candidates: map[string]Candidate{}}
			v.groups[a.Group] = g
		}
		if g.lastAddrs == nil {
			g.lastAddrs = map[netip.Addr]struct{}{}
		}
		g.lastAddrs[ip] = struct{}{}
		return a.Group, kind
	case KeyMembers:
		ip, _ := v.keys.ParseMembers(key)
		if t == mvccpb.DELETE {
			delete(v.members, ip)
			return "", kind
		}
		m, err := parseMembers(kv.Value, kv.ModRevision)
		if err != nil {
			// Still a record: it keeps out every node (none is listed),
			// until a member's claim or an operator replaces it.
			v.log.Warn("malformed address membership record; it admits no node", "key", key, "value", truncate(kv.Value, 80), "err", err)
		}
		v.members[ip] = m
		return "", kind
	case KeyUnknown:
		v.log.Debug("ignoring unknown key", "key", key)
		return "", kind
	case KeyDrained:
		if t == mvccpb.DELETE {
			delete(v.drained, node)
		} else {
			v.drained[node] = true
		}
		return "", kind
	}
	g := v.groups[group]
	if g == nil {
		g = &groupView{candidates: map[string]Candidate{}}
		v.groups[group] = g
	}
	switch kind {
	case KeyLeader:
		if t == mvccpb.DELETE {
			if g.leader.Present {
				g.vacated = ended{Vacancy: Vacancy{At: v.clk.Now()}, rev: kv.ModRevision, createRev: g.leader.CreateRev, group: group}
				g.vacated.Graceful = g.released.rev == g.vacated.rev && g.released.createRev == g.vacated.createRev
			}
			g.leader = LeaderInfo{}
			break
		}
		if !g.leader.Present || g.leader.CreateRev != kv.CreateRevision {
			// A new claim: remember how the one before it ended.
			g.prior = Vacancy{At: v.listedAt}
			if g.vacated.rev != 0 {
				g.prior = g.vacated.Vacancy
			}
		}
		g.leader = leaderInfo(kv)
	case KeyReleased:
		var r Released
		if t == mvccpb.DELETE || json.Unmarshal(kv.Value, &r) != nil {
			g.released.rev, g.released.createRev = 0, 0
			break
		}
		g.released.rev, g.released.createRev = kv.ModRevision, r.CreateRev
		// The release and the deletes it records share a revision; the
		// deletes may have been applied first.
		if g.vacated.rev == kv.ModRevision && g.vacated.createRev == r.CreateRev {
			g.vacated.Graceful = true
		}
		for ip := range g.lastAddrs {
			if e := v.addrEnded[ip]; e.rev == kv.ModRevision && e.createRev == r.CreateRev && e.group == group {
				e.Graceful = true
				v.addrEnded[ip] = e
			}
		}
	case KeyCandidate:
		if t == mvccpb.DELETE {
			delete(g.candidates, node)
			break
		}
		var c Candidate
		if err := json.Unmarshal(kv.Value, &c); err != nil || c.Node != node {
			v.log.Warn("ignoring malformed candidate record", "key", key, "value", truncate(kv.Value, 80), "err", err)
			delete(g.candidates, node)
			break
		}
		if kv.Lease == 0 {
			// vipd publishes candidates on the node's lease only; a record
			// without one would stand (and preempt) forever.
			v.log.Warn("ignoring candidate record without a lease", "key", key)
			delete(g.candidates, node)
			break
		}
		c.Lease, c.ModRev = kv.Lease, kv.ModRevision
		g.candidates[node] = c
	case KeyHandover:
		if t == mvccpb.DELETE {
			g.handover = nil
			break
		}
		var h Handover
		if err := json.Unmarshal(kv.Value, &h); err != nil || h.From == "" {
			v.log.Warn("ignoring malformed handover request", "key", key, "value", truncate(kv.Value, 80), "err", err)
			g.handover = nil
			break
		}
		if kv.Lease == 0 {
			// vipctl writes handovers on a lease of --hold seconds; one
			// without a lease would keep the old holder out forever.
			v.log.Warn("ignoring handover request without a lease", "key", key)
			g.handover = nil
			break
		}
		h.Rev = kv.ModRevision
		g.handover = &h
	}
	return group, kind
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
