package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vipd/vipd/e2e/testbed"
)

// examplesDir holds the shipped example configs (deploy/examples/seed).
var examplesDir = "deploy/examples/seed"

// vipdConfig is the shipped example config of the node, adapted to the
// testbed (testbed.Node.ExampleConfig). Everything else is as shipped
// (metrics on 127.0.0.1:9842 inside the node's namespace).
func vipdConfig(n *testbed.Node) string {
	conf, err := n.ExampleConfig(examplesDir)
	if err != nil {
		panic(err)
	}
	return conf
}

// seedConfig is the seed's keepalived.conf of the node converted by
// `vipd import-keepalived` (with the testbed's etcd), adapted as the
// example is (testbed.Node.Adapt: eth0, the process name haproxy → the
// node's HAProxyName, the peer channel).
func seedConfig(n *testbed.Node) string {
	seed := map[string]string{testbed.Node1: "seed-keepalived-1.conf", testbed.Node2: "seed-keepalived-2.conf"}[n.Name]
	out, err := exec.Command(filepath.Join(n.Bed().Opts.BinDir, "vipd"), "import-keepalived", "--node", n.Name,
		"--etcd", strings.Join(n.Bed().Endpoints(), ","), filepath.Join(seedDir, seed)).Output()
	if err != nil {
		panic(fmt.Sprintf("import-keepalived %s: %v", seed, err))
	}
	return n.Adapt(string(out))
}

// seedDir holds the seed's keepalived.conf files.
var seedDir = "internal/keepalived/testdata"

// checkEndpoints verifies the example's endpoints are the testbed's.
func checkEndpoints(tb *testbed.Testbed) error {
	b, err := os.ReadFile(filepath.Join(examplesDir, testbed.Node1+".yaml"))
	if err != nil {
		return err
	}
	for _, ep := range tb.Endpoints() {
		if !strings.Contains(string(b), ep) {
			return fmt.Errorf("example config %s lacks testbed endpoint %s; adapt vipdConfig", testbed.Node1, ep)
		}
	}
	return nil
}

// scaleVIP is the VIP of scale group i: 10.200.x.y/32 on eth0 (a /32 per
// group, so each is its own primary address and removing one never takes
// others with it).
func scaleVIP(i int) string { return fmt.Sprintf("10.200.%d.%d", i/250, i%250+1) }

// scaleConfig is a synthetic config with groups groups, one VIP each, no
// checks, metrics on 127.0.0.1:9842 inside the node's namespace (read by the
// bench from inside that namespace for Go runtime numbers).
func scaleConfig(node, prefix string, endpoints []string, groups, priority int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node: %s\netcd:\n  endpoints: [%s]\n  prefix: %s\n  lease_ttl: 3s\n  dial_timeout: 2s\nmetrics: {listen: \"127.0.0.1:9842\"}\ngroups:\n",
		node, strings.Join(endpoints, ", "), prefix)
	for i := range groups {
		fmt.Fprintf(&b, "  - name: g%04d\n    interface: eth0\n    addresses: [%s/32]\n    priority: %d\n    preempt: true\n    garp: {count: 1, interval: 1s}\n",
			i, scaleVIP(i), priority)
	}
	return b.String()
}
