package election

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Members is an address's membership as its holder last recorded it
// (<prefix>/members/<ip>, no lease; docs/design.md §2.9): the nodes whose
// promises a failsafe hold of the address needs, and so the only nodes
// that may claim it while the record stands. A holder writes it in the
// transaction that creates its claim and keeps it current while it holds
// (guarded by the claim); a graceful resign deletes it with the claim.
// After a claim that ended otherwise (an expiry, possibly during a
// failsafe hold) it stays, and keeps every other node out.
type Members struct {
	// Nodes maps each member to its peer channel endpoint ("" if none).
	Nodes map[string]string `json:"nodes"`
	// ModRev is the key's ModRevision (0: no record), from its metadata.
	ModRev int64 `json:"-"`
}

// Present reports whether a record exists.
func (m Members) Present() bool { return m.ModRev != 0 }

// Admits reports whether node may claim the address: there is no record,
// or node is in it.
func (m Members) Admits(node string) bool {
	if !m.Present() {
		return true
	}
	_, ok := m.Nodes[node]
	return ok
}

// Names returns the member names, sorted.
func (m Members) Names() []string {
	out := slices.Collect(maps.Keys(m.Nodes))
	sort.Strings(out)
	return out
}

// SameNodes reports whether a and b list the same nodes and endpoints.
func SameNodes(a, b map[string]string) bool { return maps.Equal(a, b) }

func parseMembers(value []byte, modRev int64) (Members, error) {
	m := Members{ModRev: modRev}
	if err := json.Unmarshal(value, &m); err != nil {
		return m, err
	}
	return m, nil
}

// membersOps are the compares and operation that make an Acquire (or a
// membership update) replace each address's membership record with want,
// only if the record is still the one the caller saw (seen: ModRevision
// by address, 0 for none). A nil want deletes the record instead: a
// holder without the failsafe clears a membership nobody will rely on,
// so it does not keep newer nodes out after this holder.
func (k Keys) membersOps(addrs []netip.Addr, want map[string]string, seen map[netip.Addr]int64) ([]clientv3.Cmp, []clientv3.Op, error) {
	var val []byte
	if want != nil {
		b, err := json.Marshal(Members{Nodes: want})
		if err != nil {
			return nil, nil, err
		}
		val = b
	}
	cmps := make([]clientv3.Cmp, 0, len(addrs))
	ops := make([]clientv3.Op, 0, len(addrs))
	for _, a := range addrs {
		key := k.Members(a)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", seen[a.Unmap()]))
		if want == nil {
			ops = append(ops, clientv3.OpDelete(key))
		} else {
			ops = append(ops, clientv3.OpPut(key, string(val)))
		}
	}
	return cmps, ops, nil
}

// WriteMembers replaces the membership records of c's addresses with want,
// if c still holds every address and each record is still the one seen.
// Written reports whether it did; the revision is the records' new
// ModRevision.
func (l *Leadership) WriteMembers(ctx context.Context, c Claim, want map[string]string, seen map[netip.Addr]int64) (written bool, rev int64, err error) {
	cmps, ops, err := l.Keys.membersOps(c.Addrs, want, seen)
	if err != nil {
		return false, 0, fmt.Errorf("election: members of %s: %w", c.Group, err)
	}
	for _, a := range c.Addrs {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(l.Keys.Address(a)), "=", c.CreateRev))
	}
	rctx, cancel := l.ctx(ctx)
	defer cancel()
	resp, err := l.Batch.Txn(rctx, cmps, ops, nil)
	if err != nil {
		return false, 0, fmt.Errorf("election: members of %s: %w", c.Group, err)
	}
	return resp.Succeeded, resp.Revision, nil
}
