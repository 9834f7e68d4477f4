package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// seed is the starting contract's example for web-node-1 (docs/design.md: its keys keep working as written).
const seed = `
node: web-node-1
etcd:
  endpoints: [http://192.168.20.2:2379]
  prefix: /vipd
  lease_ttl: 3s
  dial_timeout: 2s
metrics: {listen: "127.0.0.1:9842"}
checks:
  haproxy:
    type: http
    url: http://127.0.0.1:8404/healthz
    interval: 200ms
    timeout: 150ms
    rise: 2
    fall: 2
groups:
  - name: VI_1
    interface: ens160
    addresses: [192.168.20.15/24]
    priority: 101
    preempt: true
    preempt_delay: 0s
    track: [{check: haproxy, weight: 2}]
    garp: {count: 5, interval: 1s, refresh: 0s}
    notify: {master: [], backup: [], fault: [], stop: []}
`

func TestParseSeed(t *testing.T) {
	c, err := Parse(strings.NewReader(seed))
	if err != nil {
		t.Fatalf("seed config rejected: %v", err)
	}
	g := c.Groups[0]
	if g.Name != "VI_1" || g.Priority != 101 || !g.Preempt || g.Interface != "ens160" {
		t.Errorf("group decoded wrong: %+v", g)
	}
	if len(g.Prefixes) != 1 || g.Prefixes[0].String() != "192.168.20.15/24" {
		t.Errorf("Prefixes = %v", g.Prefixes)
	}
	if ch := c.Checks["haproxy"]; ch.Interval != 200*time.Millisecond || ch.Timeout != 150*time.Millisecond || ch.Rise != 2 {
		t.Errorf("check decoded wrong: %+v", ch)
	}
	if c.Etcd.LeaseTTL != 3*time.Second || c.Etcd.RequestTimeout != DefaultRequestTimeout {
		t.Errorf("etcd decoded wrong: %+v", c.Etcd)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("unexpected warnings %v", w)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(`
node: n1
etcd: {endpoints: ["http://127.0.0.1:2379"]}
groups: [{name: g, interface: eth0, addresses: [10.0.0.1/24]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Groups[0]
	if !g.Preempt {
		t.Error("preempt should default to true")
	}
	if g.Priority != DefaultPriority || g.BackoffStep != DefaultBackoffStep || g.GARP.Count != DefaultGARPCount || g.GARP.Interval != DefaultGARPInterval {
		t.Errorf("group defaults wrong: %+v", g)
	}
	if c.Etcd.Prefix != "/vipd" || c.Etcd.LeaseTTL != 3*time.Second || c.Metrics.Listen != DefaultMetricsListen {
		t.Errorf("defaults wrong: %+v %+v", c.Etcd, c.Metrics)
	}
	c2, err := Parse(strings.NewReader(`
node: n1
etcd: {endpoints: ["http://127.0.0.1:2379"]}
metrics: {listen: ""}
groups: [{name: g, interface: eth0, addresses: [10.0.0.1/24], preempt: false}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Groups[0].Preempt {
		t.Error("explicit preempt: false was lost")
	}
	if c2.Metrics.Listen != "" {
		t.Error(`explicit metrics.listen: "" must turn the listener off`)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(string) string
		want []string // every substring must appear in the error
	}{
		{"unknown key", func(s string) string { return strings.Replace(s, "lease_ttl: 3s", "lease_ttl: 3s\n  leese: 1", 1) }, []string{"leese"}},
		{"bad CIDR", func(s string) string { return strings.Replace(s, "192.168.20.15/24", "192.168.20.315/24", 1) }, []string{"groups[0] (VI_1).addresses[0]", "192.168.20.315/24"}},
		{"missing interface", func(s string) string { return strings.Replace(s, "interface: ens160", "interface: \"\"", 1) }, []string{"groups[0] (VI_1).interface", "required"}},
		{"lease_ttl too short", func(s string) string { return strings.Replace(s, "lease_ttl: 3s", "lease_ttl: 1s", 1) }, []string{"etcd.lease_ttl", "1s", "3s"}},
		{"lease_ttl fractional", func(s string) string { return strings.Replace(s, "lease_ttl: 3s", "lease_ttl: 3500ms", 1) }, []string{"etcd.lease_ttl", "3.5s", "whole"}},
		{"unknown check", func(s string) string { return strings.Replace(s, "check: haproxy", "check: nginx", 1) }, []string{"track[0].check", `"nginx"`}},
		{"duplicate group", func(s string) string {
			return s + "  - {name: VI_1, interface: ens160, addresses: [192.168.20.16/24]}\n"
		}, []string{"groups[1] (VI_1).name", "already used by groups[0]"}},
		{"same address twice", func(s string) string {
			return s + "  - {name: VI_2, interface: ens160, addresses: [192.168.20.15/24]}\n"
		}, []string{"groups[1] (VI_2).addresses[0]", "192.168.20.15", "groups[0] (VI_1).addresses[0]"}},
		{"timeout longer than interval", func(s string) string { return strings.Replace(s, "timeout: 150ms", "timeout: 300ms", 1) }, []string{"checks.haproxy.timeout", "300ms", "200ms"}},
		{"fast_interval longer than interval", func(s string) string {
			return strings.Replace(s, "timeout: 150ms", "timeout: 150ms\n    fast_interval: 250ms", 1)
		}, []string{"checks.haproxy.fast_interval", "250ms", "200ms"}},
		{"fast_interval below the minimum", func(s string) string {
			return strings.Replace(s, "timeout: 150ms", "timeout: 150ms\n    fast_interval: 5ms", 1)
		}, []string{"checks.haproxy.fast_interval", "5ms", "10ms"}},
		{"priority out of range", func(s string) string { return strings.Replace(s, "priority: 101", "priority: 256", 1) }, []string{"priority", "256", "1..255"}},
		{"weight out of range", func(s string) string { return strings.Replace(s, "weight: 2", "weight: 300", 1) }, []string{"weight", "300"}},
		{"no endpoints", func(s string) string { return strings.Replace(s, "[http://192.168.20.2:2379]", "[]", 1) }, []string{"etcd.endpoints"}},
		{"bad endpoint", func(s string) string { return strings.Replace(s, "http://192.168.20.2:2379", "192.168.20.2:2379", 1) }, []string{"etcd.endpoints[0]", "192.168.20.2:2379"}},
		{"bad check type", func(s string) string { return strings.Replace(s, "type: http", "type: carrier-pigeon", 1) }, []string{"checks.haproxy.type", "carrier-pigeon"}},
		{"bad duration", func(s string) string { return strings.Replace(s, "interval: 200ms", "interval: soon", 1) }, []string{"soon"}},
		{"mixed families", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", "[192.168.20.15/24, 2001:db8::15/64]", 1)
		}, []string{"addresses[1]", "mixes address families"}},
		{"mover: unknown type", func(s string) string { return s + "    mover: {type: gcp}\n" }, []string{"groups[0] (VI_1).mover.type", `"gcp"`, "aws, exec"}},
		{"mover: settings without a type", func(s string) string { return s + "    mover: {command: [/bin/true]}\n" }, []string{"mover.type", "required"}},
		{"mover: exec without a command", func(s string) string { return s + "    mover: {type: exec}\n" }, []string{"mover.command", "required"}},
		{"mover: exec timeout not shorter than lease_ttl", func(s string) string {
			return s + "    mover: {type: exec, command: [/bin/true], interval: 10s, timeout: 3s}\n"
		}, []string{"mover.timeout", "3s", "etcd.lease_ttl 3s"}},
		{"mover: aws private_ip with IPv6", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", "[2001:db8::15/64]", 1) + "    mover: {type: aws, aws: {private_ip: true}}\n"
		}, []string{"mover.aws.private_ip", "IPv6"}},
		{"mover: timeout longer than interval", func(s string) string {
			return s + "    mover: {type: exec, command: [/bin/true], interval: 2s, timeout: 3s}\n"
		}, []string{"mover.timeout", "3s", "mover.interval 2s"}},
		{"mover: aws with nothing to move", func(s string) string { return s + "    mover: {type: aws}\n" }, []string{"mover.aws", "private_ip, elastic_ip or route_tables"}},
		{"mover: aws IDs", func(s string) string {
			return s + "    mover: {type: aws, aws: {elastic_ip: eip-1, route_tables: [rtb-1, main], network_interface: i-1}}\n"
		}, []string{`mover.aws.elastic_ip: "eip-1"`, `mover.aws.route_tables[1]: "main"`, `mover.aws.network_interface: "i-1"`}},
		{"mover: aws private IP of a group without addresses", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", "[]", 1) + "    mover: {type: aws, aws: {private_ip: true}}\n"
		}, []string{"mover.aws", "has none"}},
		{"lease_ttl 2s leaves no room for a kernel lifetime", func(s string) string { return strings.Replace(s, "lease_ttl: 3s", "lease_ttl: 2s", 1) }, []string{"etcd.lease_ttl", "2s", "3s", "kernel"}},
		{"empty generic notify command", func(s string) string {
			return strings.Replace(s, "notify: {master: [], backup: [], fault: [], stop: []}", `notify: {any: ["", x]}`, 1)
		}, []string{"groups[0] (VI_1).notify.any", "empty"}},
		{"address interface not a name", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", `[192.168.20.15/24, {address: 10.1.0.5/24, interface: "eth 1"}]`, 1)
		}, []string{"groups[0] (VI_1).addresses[1].interface", `"eth 1"`}},
		{"address mapping without an address", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", `[192.168.20.15/24, {interface: eth1}]`, 1)
		}, []string{"groups[0] (VI_1).addresses[1].address", "required"}},
		{"address mapping key misspelt", func(s string) string {
			return strings.Replace(s, "[192.168.20.15/24]", `[192.168.20.15/24, {adress: 10.1.0.5/24, interface: eth1}]`, 1)
		}, []string{"groups[0] (VI_1).addresses[1].adress", "address"}},
		{"no group interface for an address without one", func(s string) string {
			s = strings.Replace(s, "interface: ens160", "", 1)
			return strings.Replace(s, "[192.168.20.15/24]", `[{address: 10.1.0.5/24, interface: eth1}, 192.168.20.15/24]`, 1)
		}, []string{"groups[0] (VI_1).interface", "required", "addresses[1] (192.168.20.15/24)"}},
		{"label over two interfaces", func(s string) string {
			s = strings.Replace(s, "[192.168.20.15/24]", `[192.168.20.15/24, {address: 10.1.0.5/24, interface: eth1}]`, 1)
			return strings.Replace(s, "priority: 101", "priority: 101\n    label: ens160:vip", 1)
		}, []string{"groups[0] (VI_1).label", "ens160 and eth1"}},
		{"request timeout vs ttl", func(s string) string {
			return strings.Replace(s, "dial_timeout: 2s", "dial_timeout: 2s\n  request_timeout: 2s", 1)
		}, []string{"etcd.request_timeout", "2s", "3s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.edit(seed)))
			if err == nil {
				t.Fatal("config accepted, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Issue 15: addresses on their own interfaces (keepalived's `dev`, and
// sync groups), and groups without addresses.
func TestAddressPlacement(t *testing.T) {
	y := strings.Replace(seed, "[192.168.20.15/24]", "[192.168.20.15/24, {address: 10.1.0.5/24, interface: eth1}, {address: 192.168.20.16/24}]", 1)
	y += "  - {name: hooks, priority: 100}\n"
	y += "  - {name: other, addresses: [{address: 10.2.0.5/24, interface: eth2}]}\n"
	c, err := Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Groups[0]
	if got := strings.Join(g.Links, ","); got != "ens160,eth1,ens160" {
		t.Errorf("Links = %s, want ens160,eth1,ens160", got)
	}
	if got := strings.Join(g.Interfaces(), ","); got != "ens160,eth1" {
		t.Errorf("Interfaces() = %s", got)
	}
	if got := strings.Join(g.AddressStrings(), ","); got != "192.168.20.15/24,10.1.0.5/24,192.168.20.16/24" {
		t.Errorf("AddressStrings() = %s", got)
	}
	if h := c.Groups[1]; len(h.Prefixes) != 0 || len(h.Interfaces()) != 0 {
		t.Errorf("group without addresses: %+v", h)
	}
	if o := c.Groups[2]; strings.Join(o.Interfaces(), ",") != "eth2" {
		t.Errorf("group whose only address names its interface: Interfaces() = %v", o.Interfaces())
	}
	// Written back, an address on the group's interface is a plain string.
	out, err := yaml.Marshal(g.Addresses)
	if err != nil {
		t.Fatal(err)
	}
	if want := "- 192.168.20.15/24\n- address: 10.1.0.5/24\n  interface: eth1\n- 192.168.20.16/24\n"; string(out) != want {
		t.Errorf("marshalled:\n%s\nwant:\n%s", out, want)
	}
}

func TestNotifyAnyDecodes(t *testing.T) {
	c, err := Parse(strings.NewReader(strings.Replace(seed, "notify: {master: [], backup: [], fault: [], stop: []}",
		"notify: {master: [/bin/m], any: [/etc/keepalived/notify.sh, x]}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Groups[0].Notify; len(n.Any) != 2 || n.Any[0] != "/etc/keepalived/notify.sh" || len(n.Master) != 1 {
		t.Errorf("notify = %+v", n)
	}
}

func TestWarningsForUntrackedCheck(t *testing.T) {
	c, err := Parse(strings.NewReader(strings.Replace(seed, "track: [{check: haproxy, weight: 2}]", "track: []", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "checks.haproxy") {
		t.Errorf("Warnings() = %v, want one naming checks.haproxy", w)
	}
}

// withCheck replaces the seed's haproxy check body with body (YAML lines at
// the check's indentation).
func withCheck(body string) string {
	old := `    type: http
    url: http://127.0.0.1:8404/healthz
`
	return strings.Replace(seed, old, body, 1)
}

func TestCheckTypesAccepted(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		check func(t *testing.T, ch Check)
	}{
		{"http with status, body and https CA", "    type: http\n    url: https://127.0.0.1:8443/healthz\n    expect_status: [200, 204]\n    body_contains: ok\n    ca_file: /etc/vipd/ca.pem\n", func(t *testing.T, ch Check) {
			if len(ch.ExpectStatus) != 2 || ch.BodyContains != "ok" || ch.CAFile != "/etc/vipd/ca.pem" {
				t.Errorf("http keys decoded wrong: %+v", ch)
			}
		}},
		{"https insecure", "    type: http\n    url: https://127.0.0.1:8443/\n    insecure_skip_verify: true\n", nil},
		{"tcp", "    type: tcp\n    address: 127.0.0.1:80\n", func(t *testing.T, ch Check) {
			if ch.Address != "127.0.0.1:80" {
				t.Errorf("address = %q", ch.Address)
			}
		}},
		{"tcp ipv6", "    type: tcp\n    address: \"[::1]:80\"\n", nil},
		{"process pidfile", "    type: process\n    pidfile: /run/haproxy.pid\n", nil},
		{"process name", "    type: process\n    name: haproxy\n", nil},
		{"exec user left to the runner", "    type: exec\n    command: [/usr/bin/true]\n", func(t *testing.T, ch Check) {
			if ch.User != "" {
				t.Errorf("exec user = %q, want empty (nobody under root, vipd's own user otherwise)", ch.User)
			}
		}},
		{"exec as root when asked", "    type: exec\n    command: [/bin/sh, -c, 'exit 0']\n    user: root\n", func(t *testing.T, ch Check) {
			if ch.User != "root" {
				t.Errorf("exec user = %q, want root", ch.User)
			}
		}},
		{"file defaults to missing down", "    type: file\n    path: /etc/vipd/weight\n", func(t *testing.T, ch Check) {
			if ch.Missing != "down" {
				t.Errorf("missing = %q, want down", ch.Missing)
			}
		}},
		{"file missing zero", "    type: file\n    path: /etc/vipd/weight\n    missing: zero\n", nil},
		{"interface", "    type: interface\n    name: eth1\n", nil},
		{"init_fail", "    type: tcp\n    address: 127.0.0.1:80\n    init_fail: true\n", func(t *testing.T, ch Check) {
			if !ch.InitFail {
				t.Error("init_fail lost")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(withCheck(tc.body)))
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c.Checks["haproxy"])
			}
		})
	}
}

func TestCheckTypeValidation(t *testing.T) {
	cases := []struct {
		name string
		body string
		want []string
	}{
		{"tcp without address", "    type: tcp\n", []string{"checks.haproxy.address", "required"}},
		{"tcp bad address", "    type: tcp\n    address: localhost\n", []string{"checks.haproxy.address", `"localhost"`, "host:port"}},
		{"url on a tcp check", "    type: tcp\n    address: 127.0.0.1:80\n    url: http://x/\n", []string{"checks.haproxy.url", "http", `"tcp"`}},
		{"address on an http check", "    type: http\n    url: http://127.0.0.1/\n    address: 127.0.0.1:80\n", []string{"checks.haproxy.address", "tcp", `"http"`}},
		{"process with neither", "    type: process\n", []string{"checks.haproxy.pidfile", "exactly one", "name"}},
		{"process with both", "    type: process\n    pidfile: /run/x.pid\n    name: x\n", []string{"checks.haproxy.pidfile", "exactly one", `"/run/x.pid"`, `"x"`}},
		{"process name with slash", "    type: process\n    name: /usr/sbin/haproxy\n", []string{"checks.haproxy.name", "/usr/sbin/haproxy"}},
		{"exec without command", "    type: exec\n", []string{"checks.haproxy.command", "required"}},
		{"exec empty argv0", "    type: exec\n    command: [\"\", x]\n", []string{"checks.haproxy.command", "first element"}},
		{"user on a file check", "    type: file\n    path: /x\n    user: root\n", []string{"checks.haproxy.user", "exec", `"file"`}},
		{"file without path", "    type: file\n", []string{"checks.haproxy.path", "required"}},
		{"file missing bogus", "    type: file\n    path: /x\n    missing: maybe\n", []string{"checks.haproxy.missing", `"maybe"`}},
		{"interface without name", "    type: interface\n", []string{"checks.haproxy.name", "required"}},
		{"interface name too long", "    type: interface\n    name: averyveryverylongname\n", []string{"checks.haproxy.name", "averyveryverylongname"}},
		{"pidfile on an interface check", "    type: interface\n    name: eth0\n    pidfile: /x\n", []string{"checks.haproxy.pidfile", "process", `"interface"`}},
		{"bad expect_status", "    type: http\n    url: http://127.0.0.1/\n    expect_status: [200, 42]\n", []string{"checks.haproxy.expect_status[1]", "42"}},
		{"ca_file on plain http", "    type: http\n    url: http://127.0.0.1/\n    ca_file: /ca.pem\n", []string{"checks.haproxy.url", "https"}},
		{"ca_file and insecure", "    type: http\n    url: https://127.0.0.1/\n    ca_file: /ca.pem\n    insecure_skip_verify: true\n", []string{"checks.haproxy.insecure_skip_verify", "/ca.pem"}},
		{"unknown type lists supported", "    type: ping\n", []string{"checks.haproxy.type", `"ping"`, "interface", "exec"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(withCheck(tc.body)))
			if err == nil {
				t.Fatal("config accepted, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTrackReverseAndWeightBounds(t *testing.T) {
	for _, tc := range []struct {
		track string
		ok    bool
	}{
		{"{check: haproxy, weight: 253}", true},
		{"{check: haproxy, weight: -253}", true},
		{"{check: haproxy, weight: 254}", false},
		{"{check: haproxy, weight: -254}", false},
		{"{check: haproxy, weight: 2, reverse: true}", true},
		{"{check: haproxy, weight: 0, reverse: true}", true},
	} {
		_, err := Parse(strings.NewReader(strings.Replace(seed, "{check: haproxy, weight: 2}", tc.track, 1)))
		if (err == nil) != tc.ok {
			t.Errorf("track %s: err = %v, want ok=%v", tc.track, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "track[0].weight") {
			t.Errorf("track %s: error %q does not name track[0].weight", tc.track, err)
		}
	}
	c, err := Parse(strings.NewReader(strings.Replace(seed, "{check: haproxy, weight: 2}", "{check: haproxy, weight: 2, reverse: true}", 1)))
	if err != nil || !c.Groups[0].Track[0].Reverse {
		t.Fatalf("reverse not decoded: %v %+v", err, c.Groups)
	}
}

func TestGroupStateAcceptedWithWarning(t *testing.T) {
	for _, st := range []string{"MASTER", "BACKUP", "backup"} {
		c, err := Parse(strings.NewReader(strings.Replace(seed, "priority: 101", "priority: 101\n    state: "+st, 1)))
		if err != nil {
			t.Fatalf("state %s rejected: %v", st, err)
		}
		w := c.Warnings()
		if len(w) != 1 || !strings.Contains(w[0], "groups[0] (VI_1).state") || !strings.Contains(w[0], st) || !strings.Contains(w[0], "etcd decides") {
			t.Errorf("state %s: Warnings() = %q, want one naming the key, the value and that etcd decides", st, w)
		}
	}
	_, err := Parse(strings.NewReader(strings.Replace(seed, "priority: 101", "priority: 101\n    state: LEADER", 1)))
	if err == nil || !strings.Contains(err.Error(), "groups[0] (VI_1).state") || !strings.Contains(err.Error(), "LEADER") {
		t.Errorf("state LEADER: err = %v, want one naming the key and value", err)
	}
}

func TestMoverDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(seed + "    mover: {type: exec, command: [/bin/true]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Groups[0].Mover; m.Interval != 10*time.Second || m.Timeout != 2*time.Second {
		t.Errorf("exec mover defaults: interval %v, timeout %v; want 10s and 2s (lease_ttl 3s less 1s)", m.Interval, m.Timeout)
	}
	c, err = Parse(strings.NewReader(seed + "    mover: {type: aws, aws: {private_ip: true}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Groups[0].Mover; m.Interval != 10*time.Second || m.Timeout != 5*time.Second {
		t.Errorf("aws mover defaults: interval %v, timeout %v; want 10s and 5s", m.Interval, m.Timeout)
	}
}
