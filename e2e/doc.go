// Package e2e holds vipd's namespace-tier scenarios: real etcd 3.7, HAProxy
// and vipd in network namespaces built by e2e/testbed, observed from a client
// namespace. They need root and the binaries from `make build tools`; `make
// e2e` builds them and runs `go test ./e2e/...`.
//
// Network rule: every packet stays inside namespaces the testbed created, or
// on loopback; the traffic-generating tools refuse to run in the host's
// network namespace.
package e2e
