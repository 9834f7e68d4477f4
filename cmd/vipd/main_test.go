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
	for _, f := range files {
		var out, errb bytes.Buffer
		if code := realMain([]string{"check", "--config", f}, &out, &errb); code != 0 {
			t.Errorf("vipd check %s: exit %d: %s", f, code, errb.String())
		}
	}
}

func TestCheckRejectsBadConfig(t *testing.T) {
	cases := []struct{ yaml, want string }{
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
