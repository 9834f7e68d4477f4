package keepalived

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vipd/vipd/config"
)

// Set VIPD_UPDATE_GOLDEN=1 to rewrite the golden files from the current
// output (then review the diff).
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if os.Getenv("VIPD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (VIPD_UPDATE_GOLDEN=1 writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output:\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func convertFile(t *testing.T, name string, opts Options) *Result {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(name, string(src), opts)
	if err != nil {
		t.Fatalf("Convert(%s): %v", name, err)
	}
	return res
}

func notesText(file string, notes []Note) []byte {
	var b bytes.Buffer
	for _, n := range notes {
		b.WriteString(n.Format(file) + "\n")
	}
	return b.Bytes()
}

// The seed's two keepalived configs (copied from shared/seed) convert to the
// expected YAML, and only state, virtual_router_id and the etcd placeholder
// are reported.
func TestSeedGolden(t *testing.T) {
	for _, n := range []string{"1", "2"} {
		name := "seed-keepalived-" + n + ".conf"
		t.Run(name, func(t *testing.T) {
			res := convertFile(t, name, Options{})
			golden(t, filepath.Join("testdata", "seed-keepalived-"+n+".yaml"), res.Render(name))
			golden(t, filepath.Join("testdata", "seed-keepalived-"+n+".notes"), notesText(name, res.Notes))

			if len(res.Checks) != 1 || res.Checks[0].Type != "process" || res.Checks[0].Process != "haproxy" || res.Checks[0].Interval != 2*time.Second {
				t.Errorf("checks = %+v, want one process check on haproxy every 2s", res.Checks)
			}
			wantPrio := map[string]int{"1": 101, "2": 100}[n]
			g := res.Groups[0]
			if g.Name != "VI_1" || g.Interface != "ens160" || g.Priority != wantPrio || !g.Preempt ||
				!reflect.DeepEqual(g.Addresses, []string{"192.168.20.15/24"}) ||
				!reflect.DeepEqual(g.Track, []Track{{Check: "chk_haproxy", Weight: 2}}) {
				t.Errorf("group = %+v", g)
			}
			var dropped []string
			for _, no := range res.Notes {
				if !no.Carried {
					dropped = append(dropped, strings.Fields(no.Directive)[0])
				}
			}
			if !reflect.DeepEqual(dropped, []string{"state", "virtual_router_id"}) {
				t.Errorf("dropped %v, want [state virtual_router_id]", dropped)
			}
		})
	}
}

func TestFullGolden(t *testing.T) {
	res := convertFile(t, "full.conf", Options{Node: "lb-1", Endpoints: []string{"https://10.0.0.2:2379", "https://10.0.0.3:2379"}})
	golden(t, "testdata/full.yaml", res.Render("full.conf"))
	golden(t, "testdata/full.notes", notesText("full.conf", res.Notes))
}

func TestFullConversion(t *testing.T) {
	res := convertFile(t, "full.conf", Options{Node: "lb-1", Endpoints: []string{"https://10.0.0.2:2379"}})
	checks := map[string]*Check{}
	for _, c := range res.Checks {
		checks[c.Name] = c
	}
	if c := checks["chk_haproxy"]; c == nil || c.Type != "process" || c.Process != "haproxy" ||
		c.Interval != time.Second || c.Timeout != time.Second || c.Rise != 2 || c.Fall != 3 {
		t.Errorf("chk_haproxy = %+v, want process haproxy 1s/1s rise 2 fall 3", c)
	}
	if c := checks["chk_api"]; c == nil || c.Type != "exec" ||
		!reflect.DeepEqual(c.Command, []string{"/usr/local/bin/check-api", "--port", "8080", "with space"}) ||
		c.Interval != 500*time.Millisecond || c.User != "nobody" || !c.InitFail {
		t.Errorf("chk_api = %+v, want exec argv with the quoted word kept whole, every 500ms, as nobody, init_fail", c)
	}
	if c := checks["chk_pipe"]; c == nil || c.Type != "exec" ||
		!reflect.DeepEqual(c.Command, []string{"/bin/sh", "-c", "curl -sf http://127.0.0.1/ | grep -q ok"}) ||
		c.Interval != 3*time.Second || c.Timeout != 3*time.Second || c.User != DefaultExecUser {
		t.Errorf("chk_pipe = %+v, want sh -c, timeout clamped to the 3s interval, user vipd", c)
	}
	for _, n := range []string{"1", "2"} {
		if c := checks["if_eth"+n]; c == nil || c.Type != "interface" || c.Iface != "eth"+n {
			t.Errorf("if_eth%s = %+v, want an interface check on eth%s", n, c, n)
		}
	}
	if c := checks["chk_unused"]; c == nil || c.Type != "process" || c.Process != "nginx" {
		t.Errorf("chk_unused = %+v, want process nginx (pidof)", c)
	}

	if len(res.Groups) != 3 {
		t.Fatalf("groups = %d, want 3 (VI_web, VI_web_v6, VI_api)", len(res.Groups))
	}
	web, web6, api := res.Groups[0], res.Groups[1], res.Groups[2]
	if web.Name != "VI_web" || web.Interface != "eth0" || web.Priority != 150 || web.Preempt || web.PreemptDelay != 30*time.Second {
		t.Errorf("VI_web = %+v", web)
	}
	if !reflect.DeepEqual(web.Addresses, []string{"10.0.0.100/24", "10.0.0.101/32"}) {
		t.Errorf("VI_web addresses = %v, want the /24 and the default /32 (10.9.9.9 on eth1 dropped)", web.Addresses)
	}
	if !reflect.DeepEqual(web.Track, []Track{{"chk_haproxy", 20}, {"chk_api", -50}, {"if_eth1", 0}, {"if_eth2", -10}}) {
		t.Errorf("VI_web track = %v, want script weight 20, the per-track override -50, interfaces 0 and -10", web.Track)
	}
	wantNotify := map[string][]string{
		"master": {"/etc/keepalived/master.sh", "web"},
		"backup": {"/etc/keepalived/backup.sh"},
		"fault":  {"/bin/sh", "-c", "logger -t vrrp fault >> /tmp/log"},
		"stop":   {"/etc/keepalived/stop.sh"},
	}
	if !reflect.DeepEqual(web.Notify, wantNotify) {
		t.Errorf("VI_web notify = %v, want %v", web.Notify, wantNotify)
	}
	if web.Label != "eth0:vip" || web6.Label != "" {
		t.Errorf("labels = %q, %q; want eth0:vip on the IPv4 group only", web.Label, web6.Label)
	}
	if api.Scope != "link" || api.Label != "" {
		t.Errorf("VI_api scope %q label %q, want link and none", api.Scope, api.Label)
	}
	if web.GARP != (GARP{Count: 3, Interval: 2 * time.Second, Refresh: time.Minute}) {
		t.Errorf("VI_web garp = %+v, want count 3 (global), interval 2s, refresh 60s", web.GARP)
	}
	if web6.Name != "VI_web_v6" || !reflect.DeepEqual(web6.Addresses, []string{"2001:db8::100/64"}) || web6.Priority != 150 || !reflect.DeepEqual(web6.Track, web.Track) {
		t.Errorf("VI_web_v6 = %+v", web6)
	}
	if api.Name != "VI_api" || api.From != "VI:api" || !api.Preempt || api.GARP.Count != 10 ||
		!reflect.DeepEqual(api.Track, []Track{{"chk_pipe", 0}}) {
		t.Errorf("VI_api = %+v", api)
	}

	// Every directive that did not carry over is reported, with its line.
	wantDropped := map[string]int{
		"router_id LVS_DEVEL":                   3,
		"notification_email":                    4,
		"smtp_server 127.0.0.1":                 7,
		"enable_script_security":                8,
		"include /etc/keepalived/conf.d/*.conf": 12,
		"vrrp_sync_group VG_1":                  42,
		"state BACKUP":                          50,
		"virtual_router_id 51":                  52,
		"advert_int 1":                          54,
		"authentication":                        57,
		"unicast_src_ip 10.0.0.1":               61,
		"unicast_peer":                          62,
		"10.9.9.9/24 dev eth1":                  68,
		"chk_missing":                           76,
		"notify /etc/keepalived/notify.sh":      86,
		"smtp_alert":                            89,
		"virtual_router_id 52":                  94,
		"virtual_server 10.0.0.100 80":          105,
	}
	got := map[string]Note{}
	for _, n := range res.Notes {
		if !n.Carried {
			got[n.Directive] = n
		}
	}
	for d, line := range wantDropped {
		n, ok := got[d]
		if !ok {
			t.Errorf("%q (line %d) not reported", d, line)
			continue
		}
		if n.Line != line || n.Reason == "" || strings.Contains(n.Reason, "\n") {
			t.Errorf("%q reported as line %d reason %q, want line %d and a one-line reason", d, n.Line, n.Reason, line)
		}
	}
	if len(got) != len(wantDropped) {
		for d := range got {
			if _, ok := wantDropped[d]; !ok {
				t.Errorf("unexpected drop %q: %s", d, got[d].Reason)
			}
		}
	}
	for _, d := range []string{"state BACKUP", "virtual_router_id 51", "advert_int 1", "authentication", "unicast_peer"} {
		if r := got[d].Reason; !strings.Contains(r, "VRRP-only") && !strings.Contains(r, "etcd decides; ignored") {
			t.Errorf("%s: reason %q does not explain it is VRRP-only", d, r)
		}
	}
	if !strings.Contains(got["state BACKUP"].Reason, "etcd decides; ignored") {
		t.Errorf("state: reason %q", got["state BACKUP"].Reason)
	}
	// Changes worth reading are reported too.
	var carried []string
	for _, n := range res.Notes {
		if n.Carried {
			carried = append(carried, n.Directive+": "+n.Reason)
		}
	}
	for _, want := range []string{"10.0.0.101: no prefix length; written as 10.0.0.101/32", "mixes IPv4 and IPv6", "timeout 5s is longer than interval 3s",
		"shell syntax", "vrrp_script chk_unused: converted, but no vrrp_instance tracks it", "user/group after the script ignored",
		"eth1: → interface check if_eth1, tracked with weight 0", "vrrp_script chk_pipe: no user (keepalived ran it as keepalived_script or root): user: vipd written"} {
		found := false
		for _, c := range carried {
			found = found || strings.Contains(c, want)
		}
		if !found {
			t.Errorf("no note containing %q in %q", want, carried)
		}
	}
}

func TestScriptUser(t *testing.T) {
	src := "global_defs {\n script_user checker\n}\nvrrp_script a {\n script \"/bin/a\"\n}\n" +
		"vrrp_script b {\n script \"/bin/b\"\n user root\n}\nvrrp_script p {\n script \"killall -0 x\"\n user someone\n}\n" +
		"vrrp_instance I {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n }\n track_script {\n  a\n  b\n  p\n }\n}\n"
	res, err := Convert("k.conf", src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, c := range res.Checks {
		users[c.Name] = c.User
	}
	if want := map[string]string{"a": "checker", "b": "root", "p": ""}; !reflect.DeepEqual(users, want) {
		t.Errorf("users = %v, want %v", users, want)
	}
	text := string(notesText("k.conf", res.Notes))
	for _, w := range []string{"k.conf:2: note: script_user checker", "k.conf:7: note: vrrp_script b: user root: vipd must then run as root",
		"k.conf:13: not carried over: user someone: a process check runs no command"} {
		if !strings.Contains(text, w) {
			t.Errorf("notes lack %q:\n%s", w, text)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	cases := []struct{ src, want string }{
		{"vrrp_script x {\n  script \"killall -0 haproxy\n}\n", "k.conf:2: unterminated quoted string"},
		{"vrrp_instance VI_1 {\n  interface eth0\n}\n}\n", "k.conf:4: '}' without a matching '{'"},
		{"global_defs {\n}\nvrrp_instance VI_1 {\n  virtual_ipaddress {\n    10.0.0.1\n}\n", `k.conf:3: block "vrrp_instance" opened here is never closed`},
		{"! comment\n{\n", "k.conf:2: '{' without a directive before it"},
	}
	for _, c := range cases {
		_, err := Convert("k.conf", c.src, Options{})
		var pe *ParseError
		if !errors.As(err, &pe) || err.Error() != c.want {
			t.Errorf("Convert(%q) = %v, want ParseError %q", c.src, err, c.want)
		}
	}
	if _, err := Convert("k.conf", "global_defs {\n router_id x\n}\n", Options{}); !errors.Is(err, ErrNothingToConvert) || !strings.HasPrefix(err.Error(), "k.conf: ") {
		t.Errorf("no instance: %v, want ErrNothingToConvert naming the file", err)
	}
}

func TestParseSyntax(t *testing.T) {
	src := "# hash comment\n! bang comment\nvrrp_script s { # trailing\n" +
		"  script \"echo '#not a comment' \\\"q\\\" {x}\" ! trailing bang\n}\n" +
		"vrrp_instance VI_1\n{\n  virtual_ipaddress { 10.0.0.1/24 }\n}\n"
	top, err := Parse("k.conf", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 2 || top[0].Name != "vrrp_script" || top[1].Name != "vrrp_instance" || !top[1].HasBlock || top[1].Line != 6 {
		t.Fatalf("top = %+v", top)
	}
	script := top[0].Block[0]
	if script.Name != "script" || !reflect.DeepEqual(script.Args, []string{`echo '#not a comment' "q" {x}`}) || script.Line != 4 {
		t.Errorf("script = %+v", script)
	}
	vip := top[1].Block[0]
	if vip.Name != "virtual_ipaddress" || len(vip.Block) != 1 || vip.Block[0].Name != "10.0.0.1/24" {
		t.Errorf("one-line block = %+v", vip)
	}
}

func TestSplitCommand(t *testing.T) {
	cases := []struct {
		in    string
		argv  []string
		shell bool
	}{
		{"killall -0 haproxy", []string{"killall", "-0", "haproxy"}, false},
		{`/bin/check "a b" 'c d'e`, []string{"/bin/check", "a b", "c de"}, false},
		{"  spaced\targs  ", []string{"spaced", "args"}, false},
		{"test -f /run/x && exit 0", []string{"/bin/sh", "-c", "test -f /run/x && exit 0"}, true},
		{"echo $HOME", []string{"/bin/sh", "-c", "echo $HOME"}, true},
		{`echo "unclosed`, []string{"/bin/sh", "-c", `echo "unclosed`}, true},
	}
	for _, c := range cases {
		argv, shell := splitCommand(c.in)
		if !reflect.DeepEqual(argv, c.argv) || shell != c.shell {
			t.Errorf("splitCommand(%q) = %q, %v; want %q, %v", c.in, argv, shell, c.argv, c.shell)
		}
	}
	for in, want := range map[string]string{"killall -0 haproxy": "haproxy", "/usr/bin/killall -0 nginx": "nginx", "pidof sshd": "sshd"} {
		if got, ok := processName(strings.Fields(in)); !ok || got != want {
			t.Errorf("processName(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"killall haproxy", "killall -0 -u x y", "pidof -s x", "pgrep x"} {
		if got, ok := processName(strings.Fields(in)); ok {
			t.Errorf("processName(%q) = %q, want not a process check", in, got)
		}
	}
}

// Arguments with YAML-special characters survive rendering: decoding the
// output gives back the same argv.
func TestRenderQuotesArgv(t *testing.T) {
	argv := []string{"/opt/x", "-0", "yes", "on", "a: b", "[x]", "#c", "100", "1.5", "null", "", "tab\there", `q"uote`, "ünï", "x,y", "{z}", "key:val"}
	r := &Result{Endpoints: []string{"http://127.0.0.1:2379"},
		Checks: []*Check{{Name: "c", Type: "exec", Command: argv, Script: "multi\nline"}},
		Groups: []*Group{{Name: "g", From: "g", Interface: "eth0", Addresses: []string{"10.0.0.1/32", "2001:db8::1/128"}, Priority: 100,
			Notify: map[string][]string{"master": argv}}}}
	var got struct {
		Checks map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"checks"`
		Groups []struct {
			Addresses []string            `yaml:"addresses"`
			Notify    map[string][]string `yaml:"notify"`
		} `yaml:"groups"`
	}
	out := r.Render("x\ny.conf")
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(got.Checks["c"].Command, argv) || !reflect.DeepEqual(got.Groups[0].Notify["master"], argv) {
		t.Errorf("argv round trip: got %q / %q, want %q\n%s", got.Checks["c"].Command, got.Groups[0].Notify["master"], argv, out)
	}
	if !reflect.DeepEqual(got.Groups[0].Addresses, []string{"10.0.0.1/32", "2001:db8::1/128"}) {
		t.Errorf("addresses = %q", got.Groups[0].Addresses)
	}
}

// A converted config without vrrp_script uses only keys the current schema
// has, so config.Parse must accept it today.
func TestConfigParsesWithoutChecks(t *testing.T) {
	src := "vrrp_instance VI_1 {\n interface ens160\n priority 101\n nopreempt\n preempt_delay 2.5\n" +
		" virtual_ipaddress {\n  192.168.20.15/24 label ens160:vip scope link\n }\n notify_master \"/usr/local/bin/cloud-move-ip --ip 192.168.20.15\"\n" +
		" garp_master_delay 1\n garp_master_repeat 3\n garp_master_refresh 30\n}\n"
	res, err := Convert("k.conf", src, Options{Node: "web-node-1", Endpoints: []string{"http://127.0.0.1:2379"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(bytes.NewReader(res.Render("k.conf")))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, res.Render("k.conf"))
	}
	g := cfg.Groups[0]
	if cfg.Node != "web-node-1" || g.Preempt || g.PreemptDelay != 2500*time.Millisecond || g.Priority != 101 ||
		g.Label != "ens160:vip" || g.Scope != "link" ||
		g.GARP.Count != 3 || g.GARP.Interval != time.Second || g.GARP.Refresh != 30*time.Second ||
		!reflect.DeepEqual(g.Notify.Master, []string{"/usr/local/bin/cloud-move-ip", "--ip", "192.168.20.15"}) {
		t.Errorf("decoded group = %+v", g)
	}
}

// The full conversion (exec, process and interface checks, two address
// families, label, scope, notify, garp) validates with config.Parse too.
func TestFullConfigParses(t *testing.T) {
	res := convertFile(t, "full.conf", Options{Node: "lb-1", Endpoints: []string{"https://10.0.0.2:2379"}})
	cfg, err := config.Parse(bytes.NewReader(res.Render("full.conf")))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, res.Render("full.conf"))
	}
	if len(cfg.Groups) != 3 || len(cfg.Checks) != 6 {
		t.Errorf("decoded %d groups, %d checks; want 3 and 6", len(cfg.Groups), len(cfg.Checks))
	}
	if c := cfg.Checks["chk_api"]; c.Type != "exec" || c.User != "nobody" || !c.InitFail || len(c.Command) != 4 {
		t.Errorf("chk_api = %+v", c)
	}
	if c := cfg.Checks["if_eth2"]; c.Type != "interface" || c.Name != "eth2" {
		t.Errorf("if_eth2 = %+v", c)
	}
}

// The seed conversions decode and validate with vipd's own config.Parse.
func TestSeedConfigParses(t *testing.T) {
	for _, name := range []string{"seed-keepalived-1.conf", "seed-keepalived-2.conf"} {
		res := convertFile(t, name, Options{Node: "web-node-1"})
		cfg, err := config.Parse(bytes.NewReader(res.Render(name)))
		if err != nil {
			t.Fatalf("%s: config.Parse: %v\n%s", name, err, res.Render(name))
		}
		ch, ok := cfg.Checks["chk_haproxy"]
		if !ok || ch.Type != "process" || ch.Interval != 2*time.Second {
			t.Errorf("%s: checks = %+v", name, cfg.Checks)
		}
		if g := cfg.Groups[0]; g.Name != "VI_1" || len(g.Track) != 1 || g.Track[0].Weight != 2 {
			t.Errorf("%s: group = %+v", name, g)
		}
	}
}
