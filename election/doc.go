// Package election owns leadership in etcd: the node's single lease and its
// fence deadline, candidate records, the priority-weighted rank and backoff,
// and acquiring, resigning and watching per-group leader keys.
//
// Safety rests on the fence, not on etcd's notifications. A lease renewal
// sent at time S and acknowledged means the server's lease cannot expire
// before S+TTL: the server renewed at or after S, and etcd leader changes
// only extend leases. So a holder that drops its VIP by
// FenceDeadline(S, TTL, margin) never overlaps with a node that acquires
// after the server expired the lease. Session.Done or the KeepAlive channel
// fire only after the server expired the lease, which is too late.
//
// Leadership of a group is the key <prefix>/groups/<group>/leader, created
// with the node's lease only if absent (CreateRevision == 0), and deleted
// only by its creator (guarded by that CreateRevision). There is no queue
// (concurrency.Election's FIFO order is not wanted): when the key is
// vacant, candidates back off by rank × step so the best one wins.
//
// The writes of a node's many groups go through one Batcher, which packs
// concurrent calls into nested transactions: a failover of a thousand
// groups is a handful of etcd requests, not thousands.
package election
