package main

import "testing"

func TestParseProm(t *testing.T) {
	ss := parseProm(`# HELP x
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1
etcd_server_proposals_committed_total 4.2e+01
`)
	by := sumBy(ss, "grpc_server_handled_total", "grpc_method")
	if by["Range"] != 13 || by["Txn"] != 3 {
		t.Fatalf("by method: %v", by)
	}
	if v := value(ss, "etcd_server_proposals_committed_total"); v != 42 {
		t.Fatalf("proposals %v", v)
	}
}

func TestProcParse(t *testing.T) {
	f, err := parseStat("123 (a b) S 1 123 123 0 -1 4194560 100 0 0 0 7 5 2 1 20 0 1 0 100 0 0")
	if err != nil {
		t.Fatal(err)
	}
	self, ch := cpuTicks(f)
	if self != 12 || ch != 3 || ppidOf(f) != 1 {
		t.Fatalf("self %d children %d ppid %d", self, ch, ppidOf(f))
	}
	if v := parseVmRSS("Name:\tx\nVmRSS:\t  1234 kB\n"); v != 1234 {
		t.Fatalf("rss %d", v)
	}
}
