package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipd/vipd/config"
)

const seedDir = "../../internal/keepalived/testdata"

func TestImportKeepalivedSeed(t *testing.T) {
	for _, n := range []string{"1", "2"} {
		conf := filepath.Join(seedDir, "seed-keepalived-"+n+".conf")
		want, err := os.ReadFile(filepath.Join(seedDir, "seed-keepalived-"+n+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if code := realMain([]string{"import-keepalived", conf}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		// The golden file was rendered with the bare file name in its
		// header comment; everything after the header must match.
		got := strings.Replace(out.String(), conf, "seed-keepalived-"+n+".conf", 1)
		if got != string(want) {
			t.Errorf("%s: stdout\n%s\nwant\n%s", conf, got, want)
		}
		for _, w := range []string{conf + ":11: not carried over: state ", "etcd decides; ignored", conf + ":12: not carried over: virtual_router_id 51: VRRP-only"} {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("stderr %q does not contain %q", errb.String(), w)
			}
		}
		if strings.Contains(out.String(), "virtual_router_id") && !strings.HasPrefix(out.String(), "#") {
			t.Errorf("stdout is not clean YAML: %s", out.String())
		}
	}
}

// Flags may come before or after the file; the result passes `vipd check`.
func TestImportKeepalivedFlagsAndCheck(t *testing.T) {
	conf := filepath.Join(seedDir, "seed-keepalived-1.conf")
	var out, errb bytes.Buffer
	code := realMain([]string{"import-keepalived", "--node", "web-node-1", conf, "--etcd", "http://192.168.20.2:2379,http://192.168.20.3:2379"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "node: web-node-1\n") || !strings.Contains(out.String(), "    - http://192.168.20.3:2379\n") {
		t.Errorf("flags not applied:\n%s", out.String())
	}
	if strings.Contains(errb.String(), "placeholder") {
		t.Errorf("placeholder note despite --etcd: %s", errb.String())
	}
	path := filepath.Join(t.TempDir(), "vipd.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var cout, cerr bytes.Buffer
	if code := realMain([]string{"check", "--config", path}, &cout, &cerr); code != 0 {
		t.Fatalf("vipd check on the converted seed: exit %d: %s", code, cerr.String())
	}
	if !strings.Contains(cout.String(), "ok (1 groups, 1 checks, node web-node-1)") {
		t.Errorf("vipd check: %q", cout.String())
	}
	if _, err := config.Load(path); err != nil {
		t.Fatal(err)
	}
}

func TestImportKeepalivedErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("vrrp_instance VI_1 {\n  interface eth0\n  notify_master \"/x\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import-keepalived"}, 2, "usage: vipd import-keepalived"},
		{[]string{"import-keepalived", "a", "b"}, 2, "usage: vipd import-keepalived"},
		{[]string{"import-keepalived", filepath.Join(dir, "missing.conf")}, 1, "missing.conf"},
		{[]string{"import-keepalived", bad}, 1, bad + ":3: unterminated quoted string"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := realMain(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d stderr %q; want exit %d naming %q", c.args, code, errb.String(), c.code, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: wrote to stdout on error: %q", c.args, out.String())
		}
	}
}
