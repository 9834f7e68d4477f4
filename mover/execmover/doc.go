// Package execmover owns the exec mover: a command that makes a cloud
// provider deliver a group's addresses to this node (any provider with a
// CLI: docs/cloud.md), run by the holder synchronously, with the group,
// node, addresses, lease and deadline in its environment, and killed with
// its whole process group at the fence, by vipd and by a timeout(1) of its
// own, so that a frozen vipd cannot leave it running past the fence.
package execmover
