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
		for _, w := range []string{conf + ":11: ignored: state ", "etcd decides who holds the group", conf + ":12: ignored: virtual_router_id 51: VRRP's own machinery",
			conf + ": 17 lines: 15 carried, 2 ignored, 0 changed, 0 dropped, 0 refused"} {
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

// Exit statuses: 3 names what cannot be carried (and writes nothing
// unless --skip-refused), 4 is --strict with something changed or
// dropped; --report lists every line.
func TestImportKeepalivedExitStatus(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "vrrp_instance VI_1 {\n interface eth0\n priority 101\n virtual_ipaddress {\n  10.0.0.1/24\n }\n}\n"
	changed := "vrrp_instance VI_1 {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n }\n notify_master /bin/m\n}\n"
	refused := good + "vrrp_instance VI_2 {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n  10.0.0.3/24\n }\n}\n"
	noVIP := "vrrp_instance cloud {\n interface eth0\n notify_master /usr/local/bin/move-ip\n}\n"
	etcd := []string{"--etcd", "http://10.0.0.9:2379", "--node", "n1"}
	cases := []struct {
		name, src string
		flags     []string
		code      int
		stdout    bool
		want      []string
	}{
		{"faithful", good, []string{"--strict"}, 0, true, []string{": 7 lines: 7 carried"}},
		{"changed, not strict", changed, nil, 0, true, []string{":6: changed: notify_master /bin/m: runs as vipd's user"}},
		{"changed, strict", changed, []string{"--strict"}, exitNotStrict, true, []string{"--strict", "changed or dropped"}},
		{"refused", refused, nil, exitRefused, false, []string{":8: refused: vrrp_instance VI_2: cannot be carried: 10.0.0.1 is also an address of vrrp_instance VI_1",
			"no configuration written"}},
		{"refused, skipped", refused, []string{"--skip-refused"}, exitRefused, true, []string{"refused groups above were left out"}},
		{"no VIP", noVIP, nil, 0, true, []string{":1: carried: vrrp_instance cloud: no virtual_ipaddress: group cloud has no addresses"}},
		{"report", good, []string{"--report"}, 0, true, []string{"every line:\n   1 carried | vrrp_instance VI_1 {\n", "   3 carried | priority 101\n"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conf := write(strings.ReplaceAll(c.name, " ", "_")+".conf", c.src)
			var out, errb bytes.Buffer
			args := append(append([]string{"import-keepalived"}, etcd...), c.flags...)
			code := realMain(append(args, conf), &out, &errb)
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, errb.String())
			}
			if (out.Len() > 0) != c.stdout {
				t.Errorf("stdout %q, want output: %v", out.String(), c.stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if out.Len() > 0 {
				if _, err := config.Parse(bytes.NewReader(out.Bytes())); err != nil {
					t.Errorf("the written YAML fails vipd check: %v\n%s", err, out.String())
				}
			}
		})
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
