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

// conv converts src (a test's keepalived.conf) and fails on an error.
func conv(t *testing.T, src string, opts Options) *Result {
	t.Helper()
	res, err := Convert("k.conf", src, opts)
	if err != nil {
		t.Fatalf("Convert: %v\n%s", err, src)
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

// kindOf returns the kind of the report's line n.
func kindOf(t *testing.T, res *Result, n int) Kind {
	t.Helper()
	for _, l := range res.Lines {
		if l.Line == n {
			return l.Kind
		}
	}
	t.Fatalf("line %d not in the report:\n%s", n, res.FormatLines())
	return 0
}

// hasNote says whether a note of kind k on line has reason containing want.
func hasNote(res *Result, line int, k Kind, want string) bool {
	for _, n := range res.Notes {
		if n.Line == line && n.Kind == k && strings.Contains(n.Reason, want) {
			return true
		}
	}
	return false
}

// The seed's two keepalived configs (copied from shared/seed) convert to the
// expected YAML; state and virtual_router_id are ignored (etcd elects), and
// nothing is changed or dropped.
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
			var ignored []string
			for _, no := range res.Notes {
				switch no.Kind {
				case Ignored:
					ignored = append(ignored, strings.Fields(no.Directive)[0])
				case Changed, Dropped, Refused:
					if no.Directive != "etcd.endpoints" {
						t.Errorf("unexpected %s: %s", no.Kind, no.Format(name))
					}
				}
			}
			if !reflect.DeepEqual(ignored, []string{"state", "virtual_router_id"}) {
				t.Errorf("ignored %v, want [state virtual_router_id]", ignored)
			}
			withEtcd := convertFile(t, name, Options{Endpoints: []string{"http://192.168.20.2:2379"}})
			if !withEtcd.Faithful() {
				t.Errorf("the seed with --etcd is not faithful:\n%s", withEtcd.FormatNotes(name))
			}
		})
	}
}

func TestFullGolden(t *testing.T) {
	res := convertFile(t, "full.conf", Options{Node: "lb-1", Endpoints: []string{"https://10.0.0.2:2379", "https://10.0.0.3:2379"}})
	golden(t, "testdata/full.yaml", res.Render("full.conf"))
	golden(t, "testdata/full.notes", append(notesText("full.conf", res.Notes), []byte(res.FormatLines())...))
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
	// nopreempt with state BACKUP: preempt off, and keepalived ignores
	// preempt_delay with nopreempt.
	if web.Name != "VI_web" || web.Interface != "eth0" || web.Priority != 150 || web.Preempt || web.PreemptDelay != 0 {
		t.Errorf("VI_web = %+v", web)
	}
	if !reflect.DeepEqual(web.Addresses, []string{"10.0.0.100/24", "10.0.0.101/32"}) {
		t.Errorf("VI_web addresses = %v, want the /24 and the default /32", web.Addresses)
	}
	if !reflect.DeepEqual(web.Track, []Track{{"chk_haproxy", 20, false}, {"chk_api", -50, false}, {"if_eth1", 0, false}, {"if_eth2", -10, false}}) {
		t.Errorf("VI_web track = %v, want script weight 20, the per-track override -50, interfaces 0 and -10", web.Track)
	}
	wantNotify := map[string][]string{
		"master": {"/etc/keepalived/master.sh", "web"},
		"backup": {"/etc/keepalived/backup.sh"},
		"fault":  {"/bin/sh", "-c", "logger -t vrrp fault >> /tmp/log"},
		"stop":   {"/etc/keepalived/stop.sh"},
		"any":    {"/etc/keepalived/notify.sh"},
	}
	if !reflect.DeepEqual(web.Notify, wantNotify) {
		t.Errorf("VI_web notify = %v, want %v", web.Notify, wantNotify)
	}
	if len(web6.Notify) != 0 {
		t.Errorf("VI_web_v6 notify = %v: hooks stay on VI_web, or they would run twice", web6.Notify)
	}
	if web.Label != "eth0:vip" || web6.Label != "" {
		t.Errorf("labels = %q, %q; want eth0:vip on the IPv4 group only", web.Label, web6.Label)
	}
	if api.Scope != "link" || api.Label != "" {
		t.Errorf("VI_api scope %q label %q, want link and none", api.Scope, api.Label)
	}
	if web.GARP != (GARP{Count: 2, Interval: 2 * time.Second, Refresh: time.Minute}) {
		t.Errorf("VI_web garp = %+v, want a second round after 2s, refresh 60s", web.GARP)
	}
	if web6.Name != "VI_web_v6" || !reflect.DeepEqual(web6.Addresses, []string{"2001:db8::100/64"}) || web6.Priority != 150 || !reflect.DeepEqual(web6.Track, web.Track) {
		t.Errorf("VI_web_v6 = %+v", web6)
	}
	// garp_master_repeat 10 with keepalived's default delay of 5s.
	if api.Name != "VI_api" || api.From != "vrrp_instance VI:api" || !api.Preempt || api.GARP != (GARP{Count: 2, Interval: 5 * time.Second}) ||
		!reflect.DeepEqual(api.Track, []Track{{"chk_pipe", 0, false}}) {
		t.Errorf("VI_api = %+v", api)
	}

	want := map[int]Kind{
		3:  Ignored, // router_id
		4:  Dropped, // notification_email (smtp_alert is set)
		8:  Dropped, // enable_script_security
		41: Ignored, // state BACKUP
		43: Ignored, // virtual_router_id
		47: Ignored, // preempt_delay with nopreempt
		58: Changed, // 10.0.0.101 gets the group's label
		66: Ignored, // chk_missing
		76: Changed, // notify runs as vipd's user
		79: Dropped, // smtp_alert
		95: Dropped, // virtual_server
	}
	for line, k := range want {
		if got := kindOf(t, res, line); got != k {
			t.Errorf("line %d: %s, want %s", line, got, k)
		}
	}
	if res.Unhandled != 0 {
		t.Errorf("%d unhandled:\n%s", res.Unhandled, res.FormatNotes("full.conf"))
	}
}

func TestScriptUser(t *testing.T) {
	src := "global_defs {\n script_user checker\n}\nvrrp_script a {\n script \"/bin/a\"\n}\n" +
		"vrrp_script b {\n script \"/bin/b\"\n user root\n}\nvrrp_script p {\n script \"killall -0 x\"\n user someone\n}\n" +
		"vrrp_instance I {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n }\n track_script {\n  a\n  b\n  p\n }\n}\n"
	res := conv(t, src, Options{})
	users := map[string]string{}
	for _, c := range res.Checks {
		users[c.Name] = c.User
	}
	if want := map[string]string{"a": "checker", "b": "root", "p": ""}; !reflect.DeepEqual(users, want) {
		t.Errorf("users = %v, want %v", users, want)
	}
	text := string(notesText("k.conf", res.Notes))
	for _, w := range []string{"k.conf:2: carried: script_user checker", "k.conf:7: carried: vrrp_script b: user root: vipd must then run as root",
		"k.conf:13: ignored: user someone: a process check runs no command"} {
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
		{"$A=x $A\nvrrp_instance $A {\n}\n", "k.conf:2: parameter replacement does not end"},
		{"vrrp_instance I {\n priority ${_RANDOM 1 9}\n}\n", "k.conf:2: ${_RANDOM} depends on keepalived's run time"},
		{"~SEQ(N, 1, 0, 3) x\n", "k.conf:1: invalid ~SEQ"},
		{"~SEQ(A, 1, 1000) ~SEQ(B, 1, 1000) x\n", "k.conf:1: expands to more than"},
		{"$M= \\\nx \\\n$M\n\n$M\n", "k.conf:5: expands to more than"},
		{"@lb1 $IF=eth0\nvrrp_instance I {\n interface ${IF}\n}\n", "k.conf:3: ${IF} is not defined (config id (none))"},
	}
	for _, c := range cases {
		_, err := Convert("k.conf", c.src, Options{})
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), c.want) {
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
	if len(top) != 2 || top[0].Name != "vrrp_script" || top[1].Name != "vrrp_instance" || !top[1].HasBlock || top[1].Line != 6 || top[1].EndLine != 9 {
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
			Notify: map[string][]string{"master": argv, "any": argv}}}}
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
	if !reflect.DeepEqual(got.Checks["c"].Command, argv) || !reflect.DeepEqual(got.Groups[0].Notify["master"], argv) || !reflect.DeepEqual(got.Groups[0].Notify["any"], argv) {
		t.Errorf("argv round trip: got %q / %q, want %q\n%s", got.Checks["c"].Command, got.Groups[0].Notify["master"], argv, out)
	}
	if !reflect.DeepEqual(got.Groups[0].Addresses, []string{"10.0.0.1/32", "2001:db8::1/128"}) {
		t.Errorf("addresses = %q", got.Groups[0].Addresses)
	}
}

// A converted config decodes and validates with vipd's own config.Parse,
// with the values keepalived meant.
func TestConfigParsesWithoutChecks(t *testing.T) {
	src := "vrrp_instance VI_1 {\n interface ens160\n priority 101\n nopreempt\n preempt_delay 2.5\n" +
		" virtual_ipaddress {\n  192.168.20.15/24 label ens160:vip scope link\n }\n notify_master \"/usr/local/bin/cloud-move-ip --ip 192.168.20.15\"\n" +
		" garp_master_delay 1\n garp_master_repeat 3\n garp_master_refresh 30\n}\n"
	res := conv(t, src, Options{Node: "web-node-1", Endpoints: []string{"http://127.0.0.1:2379"}})
	cfg, err := config.Parse(bytes.NewReader(res.Render("k.conf")))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, res.Render("k.conf"))
	}
	g := cfg.Groups[0]
	// nopreempt (state BACKUP by default) makes keepalived ignore
	// preempt_delay.
	if cfg.Node != "web-node-1" || g.Preempt || g.PreemptDelay != 0 || g.Priority != 101 ||
		g.Label != "ens160:vip" || g.Scope != "link" ||
		g.GARP.Count != 2 || g.GARP.Interval != time.Second || g.GARP.Refresh != 30*time.Second ||
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
	if g := cfg.Groups[0]; len(g.Notify.Any) != 1 {
		t.Errorf("notify.any = %q", g.Notify.Any)
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
