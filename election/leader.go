package election

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is proof of having created a group's leader key: the revision that
// created it and the lease it was created on. A claim is void as soon as
// the node's lease changes or the key is seen with another CreateRevision.
type Claim struct {
	Group     string
	CreateRev int64
	Lease     clientv3.LeaseID
}

// Leadership performs the per-group etcd writes of one node. Writes go
// through Batch, so many groups' writes share requests; reads use KV.
type Leadership struct {
	KV             clientv3.KV
	Batch          *Batcher
	Keys           Keys
	Node           string
	RequestTimeout time.Duration
}

func (l *Leadership) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(parent), l.RequestTimeout)
}

// Acquire creates the group's leader key on lease if, and only if, it is
// absent. won is false (and err nil) when another node holds it; holder
// then names that node as stored in the key.
func (l *Leadership) Acquire(ctx context.Context, group string, lease clientv3.LeaseID) (c Claim, won bool, holder string, err error) {
	if lease == 0 {
		return Claim{}, false, "", fmt.Errorf("election: acquire %s: no lease", group)
	}
	key := l.Keys.Leader(group)
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.Batch.Txn(rctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, l.Node, clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(key)})
	if err != nil {
		return Claim{}, false, "", fmt.Errorf("election: acquire %s: %w", group, err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			holder = string(kvs[0].Value)
		}
		return Claim{}, false, holder, nil
	}
	return Claim{Group: group, CreateRev: resp.Revision, Lease: lease}, true, l.Node, nil
}

// Resign deletes the leader key if it is still the one c created. Callers
// remove the VIPs first.
func (l *Leadership) Resign(ctx context.Context, c Claim) error {
	key := l.Keys.Leader(c.Group)
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	_, err := l.Batch.Txn(rctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", c.CreateRev)},
		[]clientv3.Op{clientv3.OpDelete(key)}, nil)
	if err != nil {
		return fmt.Errorf("election: resign %s: %w", c.Group, err)
	}
	return nil
}

// Verify reads the leader key linearizably and reports whether c is still
// the live claim. Used before re-binding a VIP after a stall.
func (l *Leadership) Verify(ctx context.Context, c Claim) (bool, error) {
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.KV.Get(rctx, l.Keys.Leader(c.Group))
	if err != nil {
		return false, fmt.Errorf("election: verify %s: %w", c.Group, err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	kv := resp.Kvs[0]
	return kv.CreateRevision == c.CreateRev && clientv3.LeaseID(kv.Lease) == c.Lease && string(kv.Value) == l.Node, nil
}

// Publish writes this node's candidate record for group on lease.
func (l *Leadership) Publish(ctx context.Context, group string, c Candidate, lease clientv3.LeaseID) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("election: publish %s: %w", group, err)
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	put := clientv3.OpPut(l.Keys.Candidate(group, l.Node), string(b), clientv3.WithLease(lease))
	if _, err := l.Batch.Txn(rctx, nil, []clientv3.Op{put}, nil); err != nil {
		return fmt.Errorf("election: publish %s: %w", group, err)
	}
	return nil
}
