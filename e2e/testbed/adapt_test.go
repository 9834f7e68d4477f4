package testbed

import (
	"strings"
	"testing"
)

func TestWithPeer(t *testing.T) {
	const section = "peer:\n  listen: 192.168.20.10:9843\n  key_file: /tmp/tb/peer.key\n  failsafe: true\n"
	base := "node: web-node-1\netcd:\n  endpoints: [http://192.168.20.2:2379]\n  tls: {key_file: \"\"}\ngroups:\n  - name: VI_1\n"
	got := withPeer(base, section, "/tmp/tb/peer.key")
	if !strings.HasSuffix(got, "\n"+section) || !strings.HasPrefix(got, base) {
		t.Errorf("no peer section: appended wrongly:\n%s", got)
	}
	shipped := "node: web-node-1\netcd:\n  endpoints: [http://192.168.20.2:2379]\n  tls:\n    key_file: /etc/vipd/etcd.key\npeer:\n  listen: 192.168.20.10:9843\n  # the same file on every node\n  key_file: /etc/vipd/peer.key\n  failsafe: true\ngroups: []\n"
	got = withPeer(shipped, section, "/tmp/tb/peer.key")
	want := strings.Replace(shipped, "key_file: /etc/vipd/peer.key", "key_file: /tmp/tb/peer.key", 1)
	if got != want {
		t.Errorf("peer section present: got\n%s\nwant\n%s", got, want)
	}
}
