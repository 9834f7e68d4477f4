// Package keepertest owns running real keepers in tests: each node is a
// keeper.Keeper on an in-process etcd member with a fakenet.Host as its
// interface table and a switchable health check. It is imported only by
// tests.
package keepertest
