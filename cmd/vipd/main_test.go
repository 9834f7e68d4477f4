package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckShippedExamples(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	// The examples name /etc/vipd/peer.key, which the package creates:
	// check them against a key of the test's own.
	dir := t.TempDir()
	key := filepath.Join(dir, "peer.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	peers := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "key_file: /etc/vipd/peer.key") {
			peers++
		}
		path := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "/etc/vipd/peer.key", key)), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if code := realMain([]string{"check", "--config", path}, &out, &errb); code != 0 {
			t.Errorf("vipd check %s: exit %d: %s", f, code, errb.String())
		}
	}
	if peers < 2 {
		t.Errorf("%d example configs turn the peer channel on, want the seed pair", peers)
	}
}

// vipd check says whether the peer channel and the failsafe are on, and
// fails on a peer key it cannot use, naming the key and the file.
func TestCheckPeerChannel(t *testing.T) {
	dir := t.TempDir()
	base := "node: n\netcd: {endpoints: [http://127.0.0.1:2379]}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.3/24]}]\n"
	good, short, open := filepath.Join(dir, "good.key"), filepath.Join(dir, "short.key"), filepath.Join(dir, "open.key")
	for p, c := range map[string]struct {
		body string
		mode os.FileMode
	}{good: {"0123456789abcdef0123456789abcdef", 0o600}, short: {"tooshort", 0o600}, open: {"0123456789abcdef0123456789abcdef", 0o644}} {
		if err := os.WriteFile(p, []byte(c.body), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		peer    string
		code    int
		out     string
		errWant string
	}{
		{"", 0, "peer channel: off", ""},
		{"peer: {listen: 10.0.0.1:9843, key_file: " + good + "}\n", 0, "peer channel: on, serving 10.0.0.1:9843, advertised to peers as 10.0.0.1:9843; failsafe off", ""},
		{"peer: {listen: 0.0.0.0:9843, advertise: 10.0.0.1:9843, key_file: " + good + ", failsafe: true}\n", 0, "advertised to peers as 10.0.0.1:9843; failsafe on", ""},
		{"peer: {listen: 10.0.0.1:9843, key_file: " + short + "}\n", 1, "", "peer.key_file"},
		{"peer: {listen: 10.0.0.1:9843, key_file: " + open + "}\n", 1, "", open},
		{"peer: {listen: 10.0.0.1:9843}\n", 1, "", "peer.key_file"},
		{"peer: {listen: 0.0.0.0:9843, key_file: " + good + "}\n", 1, "", "peer.advertise"},
		{"peer: {failsafe: true}\n", 1, "", "peer.listen"},
	}
	for i, c := range cases {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(base+c.peer), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := realMain([]string{"check", "--config", path}, &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.errWant) {
			t.Errorf("case %d (%q): exit %d, stdout %q, stderr %q; want exit %d, %q, %q", i, c.peer, code, out.String(), errb.String(), c.code, c.out, c.errWant)
		}
	}
}

// vipd check says what each group's mover does, and refuses a bad one
// naming the key.
func TestCheckMovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	y := `node: n
etcd: {endpoints: ["http://127.0.0.1:2379"]}
groups:
  - {name: A, interface: eth0, addresses: [10.0.0.3/24], mover: {type: aws, aws: {private_ip: true, elastic_ip: eipalloc-1}}}
  - {name: E, interface: eth0, addresses: [10.0.0.4/24], mover: {type: exec, command: [/usr/local/lib/vipd/move, hcloud]}}
  - {name: N, interface: eth0, addresses: [10.0.0.5/24]}
`
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := realMain([]string{"check", "--config", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"group A: mover aws: the addresses as secondary private IPs, Elastic IP eipalloc-1 to this instance's primary interface",
		"group E: mover exec /usr/local/lib/vipd/move hcloud, checked every 10s, each call at most 2s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("vipd check says\n%s\nwithout %q", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "group N:") {
		t.Errorf("a group without a mover is described: %s", out.String())
	}
}

func TestCheckRejectsBadConfig(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"node: n\netcd: {endpoints: [http://127.0.0.1:2379]}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.3/24], mover: {type: aws, aws: {route_tables: [main]}}}]\n", `groups[0] (g).mover.aws.route_tables[0]: "main"`},
		{"node: n\netcd: {endpoints: [http://127.0.0.1:2379]}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.300/24]}]\n", `groups[0] (g).addresses[0]: "10.0.0.300/24"`},
		{"node: n\netcd: {endpoints: [http://127.0.0.1:2379], lease_ttl: 1s}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.3/24]}]\n", "etcd.lease_ttl: 1s"},
		{"node: n\nbogus: 1\n", "bogus"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := realMain([]string{"check", "--config", path}, &out, &errb)
		if code == 0 {
			t.Errorf("case %d: exit 0 for a bad config", i)
		}
		if !strings.Contains(errb.String(), c.want) {
			t.Errorf("case %d: stderr %q does not name %q", i, errb.String(), c.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain(nil, &out, &errb); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if code := realMain([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "frobnicate") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errb.String())
	}
	if code := realMain([]string{"check", "--config", "/nonexistent/vipd.yaml"}, &out, &errb); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
	if code := realMain([]string{"run", "--log-format", "xml", "--config", "x"}, &out, &errb); code != 2 {
		t.Errorf("bad --log-format: exit %d, want 2", code)
	}
}
