package election

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"sync"
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
	// Addresses[i] is the claim of the i-th address asked for (zero:
	// unclaimed).
	Addresses []AddressClaim
	// Released is true when the group is vacant and the view saw the last
	// claim of its leader key and of each address asked for end in a
	// graceful release (Leadership.Resign, which deletes only after the
	// VIPs are gone). False without that proof: after an expiry, a revoke
	// without resign, a delete by hand, or a claim the view never saw.
	Released bool
	// Rev is the etcd revision this state reflects.
	Rev int64
	// Synced is false until the first full listing has been applied, and
	// again while the watch is being re-established.
	Synced bool
}

type groupView struct {
	leader     LeaderInfo
	candidates map[string]Candidate
	handover   *Handover
	// leaderRev is the CreateRev of the last leader key seen (kept after
	// it is deleted); releasedRev the claim named by the released record.
	leaderRev, releasedRev int64
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
	// addrLast is the last claim seen of each address, kept after the
	// claim is deleted, to tell a graceful release from an expiry.
	addrLast map[netip.Addr]AddressClaim
	wonAt    map[string]time.Time // node -> when the watch last saw it create a leader key
}

// NewView returns a view; Run starts it.
func NewView(cli *clientv3.Client, keys Keys, clk clock.Clock, log *slog.Logger, onChange func(group string)) *View {
	return &View{cli: cli, keys: keys, clk: clk, log: log, onChange: onChange, groups: map[string]*groupView{}, drained: map[string]bool{}, addrs: map[netip.Addr]AddressClaim{}, addrLast: map[netip.Addr]AddressClaim{}, wonAt: map[string]time.Time{}}
}

// Group returns a copy of group's state, with the claims of addrs.
func (v *View) Group(name string, addrs []netip.Addr) GroupState {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := GroupState{Rev: v.rev, Synced: v.synced, Addresses: make([]AddressClaim, len(addrs))}
	for i, a := range addrs {
		st.Addresses[i] = v.addrs[a.Unmap()]
	}
	st.Released = v.releasedLocked(name, addrs)
	if g := v.groups[name]; g != nil {
		st.Leader = g.leader
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

// releasedLocked reports whether group's vacancy comes from graceful
// releases only (GroupState.Released).
func (v *View) releasedLocked(name string, addrs []netip.Addr) bool {
	g := v.groups[name]
	if g == nil || g.leader.Present || g.leaderRev == 0 || g.releasedRev != g.leaderRev {
		return false
	}
	for _, a := range addrs {
		a = a.Unmap()
		if v.addrs[a].Present() {
			return false
		}
		last, seen := v.addrLast[a]
		if !seen {
			return false
		}
		if lg := v.groups[last.Group]; lg == nil || lg.releasedRev != last.CreateRev {
			return false
		}
	}
	return true
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
			err = v.watch(ctx, rev+1)
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
	v.groups = map[string]*groupView{}
	v.drained = map[string]bool{}
	v.addrs = map[netip.Addr]AddressClaim{}
	v.addrLast = map[netip.Addr]AddressClaim{}
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
// notification on the watch stream.
const progressEvery = time.Second

func (v *View) watch(ctx context.Context, fromRev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := v.cli.Watch(wctx, v.keys.All(), clientv3.WithPrefix(), clientv3.WithRev(fromRev))
	// A progress request every second keeps client-to-member data on the
	// connection. When the path to the member breaks, that data goes
	// unacknowledged and the TCP user timeout gRPC sets (the keepalive
	// timeout; its pings come only every 10 s) aborts the connection, so
	// once the path heals the client reconnects afresh. Otherwise the old
	// connection lives on and every answer to this node waits behind the
	// member's TCP retransmission backoff, seconds after the heal.
	progressDone := make(chan struct{})
	defer func() { cancel(); <-progressDone }()
	go func() {
		defer close(progressDone)
		t := v.clk.NewTimer(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C():
				_ = v.cli.RequestProgress(wctx) // best effort; the watch reports failures
				t.Reset(progressEvery)
			}
		}
	}()
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		changed := map[string]bool{}
		var addrs []netip.Addr
		now := v.clk.Now()
		v.mu.Lock()
		for _, ev := range resp.Events {
			g, kind := v.applyLocked(ev.Type, ev.Kv)
			if kind == KeyLeader && ev.IsCreate() {
				v.wonAt[string(ev.Kv.Value)] = now
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
		if resp.Header.Revision > v.rev {
			v.rev = resp.Header.Revision
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
		prev := v.addrs[ip]
		if t == mvccpb.DELETE {
			delete(v.addrs, ip)
			return prev.Group, kind
		}
		a := parseAddressClaim(kv)
		if a.Lease == 0 {
			// vipd claims addresses on a lease only; one without would
			// block the address forever, so it is reported, and still
			// honoured: it is not vipd's to delete.
			v.log.Warn("address claim without a lease; the address stays blocked until an operator deletes the key", "key", key)
		}
		v.addrs[ip], v.addrLast[ip] = a, a
		return a.Group, kind
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
			g.leader = LeaderInfo{}
		} else {
			g.leader = leaderInfo(kv)
			g.leaderRev = kv.CreateRevision
		}
	case KeyReleased:
		var r Released
		if t == mvccpb.DELETE || json.Unmarshal(kv.Value, &r) != nil {
			g.releasedRev = 0
			break
		}
		g.releasedRev = r.CreateRev
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
		h.CreateRev = kv.CreateRevision
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
