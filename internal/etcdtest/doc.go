// Package etcdtest owns in-process etcd members for tests: a real etcd
// server (go.etcd.io/etcd/server/v3/embed) on loopback, started per test
// and stopped in t.Cleanup. It is imported only by tests.
package etcdtest
