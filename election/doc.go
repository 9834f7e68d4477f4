// Package election owns leadership in etcd: the node's single lease and its
// fence deadline, candidate records, the priority-weighted rank and backoff,
// and acquiring, resigning, inspecting and watching each group's leader key
// and its addresses' claims. The safety argument is in docs/design.md §2.
//
// Safety rests on the fence, not on etcd's notifications. A lease renewal
// sent at time S and acknowledged means the server's lease cannot expire
// before S+TTL: the server renewed at or after S, and etcd leader changes
// only extend leases. So a holder that drops its VIP by
// FenceDeadline(S, TTL, margin) never overlaps with a node that acquires
// after the server expired the lease. Session.Done or the KeepAlive channel
// fire only after the server expired the lease, which is too late. A system
// suspend (seen as CLOCK_BOOTTIME running ahead of CLOCK_MONOTONIC) voids
// the fence until a renewal sent after the resume succeeds.
//
// Holding a group is a Claim: the key <prefix>/groups/<group>/leader and
// one key <prefix>/addresses/<ip> per VIP, created in one transaction on the
// node's lease only if all are absent, so "never two holders" holds per
// address whatever the groups are called. Keys are deleted only by their
// creator, each guarded by the claim's CreateRevision, and a resign records
// the graceful release so peers need not wait out the old holder's kernel
// expiry lag. There is no queue (concurrency.Election's FIFO order is not
// wanted): when a group is vacant, candidates back off by rank × step so the
// best one wins.
//
// The writes of a node's many groups go through one Batcher, which packs
// concurrent calls into nested transactions and keeps the writes to one key
// in call order: a failover of a thousand groups is a handful of etcd
// requests, not thousands. Candidate records are written guarded by their
// ModRevision, so a write whose answer was lost and that lands late cannot
// overwrite a newer one.
package election
