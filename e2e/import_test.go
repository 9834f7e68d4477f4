package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// TestImportedSeedConfigs runs the seed's keepalived.conf files, converted
// by `vipd import-keepalived`, in the testbed: web-node-1 (101+2) holds,
// a stopped vipd hands over to web-node-2, the restarted one preempts
// back, and two nodes never hold at once. Only the interface name
// (ens160 → the testbed's eth0) is changed.
//
// The converted check is keepalived's `killall -0 haproxy` (a process
// check by name). The testbed's nodes share one PID namespace and run
// their HAProxy under node names (haproxy-1, haproxy-2), so that name is
// the one change besides the interface. HAProxy dying with this check is
// TestProcessCheckEvents' subject and the bench's vipd-seed column.
func TestImportedSeedConfigs(t *testing.T) {
	needAll(t)
	tb := newTestbed(t, testbed.Options{})
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	converted := map[string]string{}
	for i, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join("..", "internal", "keepalived", "testdata", []string{"seed-keepalived-1.conf", "seed-keepalived-2.conf"}[i])
		out, err := exec.Command(filepath.Join(binDir, "vipd"), "import-keepalived",
			"--node", n.Name, "--etcd", strings.Join(tb.Endpoints(), ","), conf).Output()
		if err != nil {
			t.Fatalf("import-keepalived %s: %v", conf, err)
		}
		yaml := strings.Replace(string(out), "interface: ens160", "interface: eth0", 1)
		yaml = strings.Replace(yaml, "name: haproxy\n", "name: "+n.HAProxyName()+"\n", 1)
		converted[n.Name] = yaml
		if err := n.StartVipdWithConfig(yaml); err != nil {
			t.Fatalf("%s with the converted config: %v\n%s", n.Name, err, yaml)
		}
	}
	if err := tb.StartProbe(); err != nil {
		t.Fatal(err)
	}
	n1 := tb.Node(testbed.Node1)
	t0 := time.Now()
	if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, n1.Vipd().LogTail(30))
	}
	time.Sleep(time.Second)
	if hs := tb.Holders(); len(hs) != 1 || hs[0] != testbed.Node1 {
		t.Fatalf("holders %v, want [web-node-1] (101+2 > 100+2)", hs)
	}

	tStop := time.Now()
	if err := n1.StopVipd(); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	moved, _ := tb.Mon.EventAfter(testbed.Node2, true, tStop)
	t.Logf("converted config: SIGTERM on web-node-1 → VIP on web-node-2 after %v", moved.Time.Sub(tStop).Round(time.Millisecond))
	if d := moved.Time.Sub(tStop); d > 500*time.Millisecond {
		t.Errorf("handover after SIGTERM took %v, want ≤ 0.5s", d)
	}

	if err := n1.StartVipdWithConfig(converted[n1.Name]); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := tb.Mon.Stats(t0, time.Now()); st.TwoHolders != 0 || st.MaxHolders > 1 {
		t.Errorf("two holders for %v", st.TwoHolders)
	}
}
