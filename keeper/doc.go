// Package keeper owns the reconcile loop of each VIP group and their
// lifecycle: each pass reads the group's inputs (health, lease, the view of
// its keys, what it holds), asks the pure Decide function what to do, and
// applies the answer to etcd and the interface in the order the safety
// argument requires (docs/design.md §2): acquire is keys, then address,
// then announcement; release is announcements stopped, the address removed
// and confirmed gone (or its kernel lifetime certainly over), then the keys.
// Every failed step is retried until it converges.
//
// The keeper starts, reconfigures and retires group loops (a group removed
// by a reload releases its keys and record before it leaves) and owns what
// they share: the node lease, the view of etcd, and the health part, which
// runs the tracked checks and the link watches and wakes the groups that
// depend on them.
package keeper
