package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/peer"
)

// The peer channel's operations (docs/design.md §2.8). A peer carries out
// a request for the node that sent it, under that node's authenticated
// name, and never on its own initiative.
const (
	opRenew   = "renew"   // KeepAliveOnce of the caller's lease
	opResign  = "resign"  // the caller's guarded resign of a claim
	opPublish = "publish" // the caller's guarded candidate record write
)

type renewRequest struct {
	Lease int64 `json:"lease"`
}

type renewReply struct {
	// TTL is the lease's TTL after the peer's renewal, in seconds.
	TTL int64 `json:"ttl"`
	// Gone: etcd answered that the lease does not exist.
	Gone bool `json:"gone,omitempty"`
}

type resignRequest struct {
	Group     string       `json:"group"`
	CreateRev int64        `json:"create_rev"`
	Addrs     []netip.Addr `json:"addrs"`
	Graceful  bool         `json:"graceful"`
}

type publishRequest struct {
	Group     string             `json:"group"`
	Candidate election.Candidate `json:"candidate"`
	Lease     int64              `json:"lease"`
	Expect    int64              `json:"expect"`
}

type publishReply struct {
	Written bool  `json:"written"`
	ModRev  int64 `json:"mod_rev"`
}

// peers is this node's side of the peer channel: it asks peers to relay
// its lease renewals and its few writes when its own etcd requests fail
// (election.RelayFunc, election.Relayer), and serves the same for them.
type peers struct {
	node    string
	client  *peer.Client
	log     *slog.Logger
	obs     Observer
	timeout time.Duration // one etcd request of ours, when serving
	leases  election.LeaseClient
	kv      clientv3.KV
	keys    election.Keys
	// endpoints lists the peers to ask: node -> host:port, from the
	// candidate records in the view.
	endpoints func() map[string]string

	// promise and unpromise serve the failsafe's ops.
	promise, unpromise func(ctx context.Context, from string, body json.RawMessage) (any, error)

	mu sync.Mutex
	// good is the node that last relayed for us: asked first.
	good string
}

// targets returns the peers to ask, the one that last helped first.
func (p *peers) targets() []string {
	eps := p.endpoints()
	delete(eps, p.node)
	nodes := make([]string, 0, len(eps))
	for n := range eps {
		nodes = append(nodes, n)
	}
	p.mu.Lock()
	good := p.good
	p.mu.Unlock()
	sort.Slice(nodes, func(i, j int) bool {
		if (nodes[i] == good) != (nodes[j] == good) {
			return nodes[i] == good
		}
		return nodes[i] < nodes[j]
	})
	if len(nodes) > maxRelayPeers {
		nodes = nodes[:maxRelayPeers]
	}
	out := make([]string, 0, 2*len(nodes))
	for _, n := range nodes {
		out = append(out, n, eps[n])
	}
	return out
}

// maxRelayPeers bounds how many peers one relayed request goes to at once.
const maxRelayPeers = 3

// relayResult is one peer's answer to a relayed request.
type relayResult struct {
	node string
	err  error
	v    any
}

// fanOut sends op to the peers at once and returns the first answer for
// which accept is true, cancelling the others; else every error, joined.
func (p *peers) fanOut(ctx context.Context, op string, req any, reply func() any, accept func(any) bool) (any, error) {
	ts := p.targets()
	if len(ts) == 0 {
		return nil, errors.New("keeper: no peer with a peer channel endpoint known")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan relayResult, len(ts)/2)
	for i := 0; i < len(ts); i += 2 {
		node, ep := ts[i], ts[i+1]
		go func() {
			v := reply()
			err := p.client.Call(ctx, ep, op, req, v)
			results <- relayResult{node: node, err: err, v: v}
		}()
	}
	var errs []error
	for range len(ts) / 2 {
		r := <-results
		result := "ok"
		if r.err != nil {
			result = relayErrorLabel(r.err)
		}
		if r.err == nil && !accept(r.v) {
			result = "refused"
		}
		p.obs.PeerRelay(r.node, op, result)
		if r.err == nil && accept(r.v) {
			p.mu.Lock()
			p.good = r.node
			p.mu.Unlock()
			return r.v, nil
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.node, r.err))
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("keeper: %s: no peer could carry it out", op)
	}
	return nil, fmt.Errorf("keeper: %s through peers: %w", op, errors.Join(errs...))
}

func relayErrorLabel(err error) string {
	switch {
	case errors.Is(err, peer.ErrRefused):
		return "refused_auth"
	case errors.Is(err, peer.ErrBadResponse):
		return "bad_response"
	case errors.Is(err, peer.ErrRemote):
		return "error"
	}
	return "unreachable"
}

// Renew is the session's RelayFunc: the first peer that renews the lease
// wins; a peer that finds it gone is believed (it can only make this node
// drop its VIPs).
func (p *peers) Renew(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	gone := false
	v, err := p.fanOut(ctx, opRenew, renewRequest{Lease: int64(id)}, func() any { return new(renewReply) },
		func(v any) bool {
			r := v.(*renewReply)
			gone = gone || r.Gone
			return r.Gone || r.TTL > 0
		})
	if err != nil {
		return nil, err
	}
	r := v.(*renewReply)
	if r.Gone {
		return nil, fmt.Errorf("keeper: a peer found lease %x gone: %w", int64(id), rpctypes.ErrLeaseNotFound)
	}
	return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: r.TTL}, nil
}

// RelayResign implements election.Relayer.
func (p *peers) RelayResign(ctx context.Context, c election.Claim, graceful bool) error {
	_, err := p.fanOut(ctx, opResign, resignRequest{Group: c.Group, CreateRev: c.CreateRev, Addrs: c.Addrs, Graceful: graceful},
		func() any { return new(struct{}) }, func(any) bool { return true })
	return err
}

// RelayPublish implements election.Relayer.
func (p *peers) RelayPublish(ctx context.Context, group string, c election.Candidate, lease clientv3.LeaseID, expect int64) (election.PublishResult, error) {
	v, err := p.fanOut(ctx, opPublish, publishRequest{Group: group, Candidate: c, Lease: int64(lease), Expect: expect},
		func() any { return new(publishReply) }, func(any) bool { return true })
	if err != nil {
		return election.PublishResult{}, err
	}
	r := v.(*publishReply)
	return election.PublishResult{Written: r.Written, ModRev: r.ModRev}, nil
}

// serve is the peer.Handler: it carries out a peer's request with this
// node's own etcd connections, under the peer's authenticated name.
func (p *peers) serve(ctx context.Context, from, op string, body json.RawMessage) (any, error) {
	if op == opPromise && p.promise != nil {
		return p.promise(ctx, from, body)
	}
	if op == opUnpromise && p.unpromise != nil {
		return p.unpromise(ctx, from, body)
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), p.timeout)
	defer cancel()
	switch op {
	case opRenew:
		var req renewRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Lease == 0 {
			return nil, fmt.Errorf("keeper: renew: bad request: %v", err)
		}
		resp, err := p.leases.KeepAliveOnce(ctx, clientv3.LeaseID(req.Lease))
		p.obs.PeerServed(from, op, resultLabel(err))
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			return renewReply{Gone: true}, nil
		case err != nil:
			return nil, fmt.Errorf("keeper: renew lease %x for %s: %w", req.Lease, from, err)
		}
		return renewReply{TTL: resp.TTL}, nil
	case opResign:
		var req resignRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Group == "" || req.CreateRev == 0 {
			return nil, fmt.Errorf("keeper: resign: bad request: %v", err)
		}
		ops, err := p.keys.ResignOps(from, election.Claim{Group: req.Group, CreateRev: req.CreateRev, Addrs: req.Addrs}, req.Graceful)
		if err != nil {
			return nil, err
		}
		_, err = p.kv.Txn(ctx).Then(ops...).Commit()
		p.obs.PeerServed(from, op, resultLabel(err))
		if err != nil {
			return nil, fmt.Errorf("keeper: resign %s for %s: %w", req.Group, from, err)
		}
		p.log.Info("relayed a resign", "for", from, "group", req.Group, "create_rev", req.CreateRev)
		return struct{}{}, nil
	case opPublish:
		var req publishRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Group == "" || req.Lease == 0 {
			return nil, fmt.Errorf("keeper: publish: bad request: %v", err)
		}
		if req.Candidate.Node != from {
			return nil, fmt.Errorf("keeper: publish: %s sent a record of %q", from, req.Candidate.Node)
		}
		cmps, then, els, err := p.keys.PublishTxn(from, req.Group, req.Candidate, clientv3.LeaseID(req.Lease), req.Expect)
		if err != nil {
			return nil, err
		}
		resp, err := p.kv.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		p.obs.PeerServed(from, op, resultLabel(err))
		if err != nil {
			return nil, fmt.Errorf("keeper: publish %s for %s: %w", req.Group, from, err)
		}
		r := election.PublishResultOf(election.TxnResult{Succeeded: resp.Succeeded, Responses: resp.Responses, Revision: resp.Header.Revision})
		return publishReply{Written: r.Written, ModRev: r.ModRev}, nil
	}
	return nil, fmt.Errorf("keeper: %w: %q", peer.ErrUnknownOp, op)
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
