package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Tests of the keys issue 4 added: group label and scope, garp probe and
// probe_wait.

const addrBase = `
node: n1
etcd: {endpoints: ["http://127.0.0.1:2379"]}
groups:
  - name: g
    interface: eth0
    addresses: [%ADDR%]
%EXTRA%`

func parseAddrCfg(addr, extra string) (Config, error) {
	y := strings.NewReplacer("%ADDR%", addr, "%EXTRA%", extra).Replace(addrBase)
	return Parse(strings.NewReader(y))
}

func TestLabelScopeProbeDefaultsAndValues(t *testing.T) {
	c, err := parseAddrCfg("192.168.20.15/24", "")
	if err != nil {
		t.Fatal(err)
	}
	g := c.Groups[0]
	if g.Label != "" || g.Scope != "global" || g.GARP.Probe || g.GARP.ProbeWait != DefaultProbeWait {
		t.Errorf("defaults: label %q scope %q probe %v probe_wait %v; want \"\", global, false, %v",
			g.Label, g.Scope, g.GARP.Probe, g.GARP.ProbeWait, DefaultProbeWait)
	}
	c, err = parseAddrCfg("192.168.20.15/24, 192.168.20.16/24",
		"    label: \"eth0:vip\"\n    scope: link\n    garp: {count: 3, interval: 100ms, probe: true, probe_wait: 80ms}\n")
	if err != nil {
		t.Fatal(err)
	}
	g = c.Groups[0]
	if g.Label != "eth0:vip" || g.Scope != "link" || !g.GARP.Probe || g.GARP.ProbeWait != 80*time.Millisecond {
		t.Errorf("got label %q scope %q probe %v probe_wait %v", g.Label, g.Scope, g.GARP.Probe, g.GARP.ProbeWait)
	}
	// IPv6 groups: global scope is fine, probe is accepted (and ignored).
	if _, err := parseAddrCfg("fd00:20::15/64", "    scope: global\n    garp: {probe: true}\n"); err != nil {
		t.Errorf("IPv6 group with scope global: %v", err)
	}
}

func TestLabelScopeProbeErrors(t *testing.T) {
	cases := []struct {
		name, addr, extra string
		want              []string
	}{
		{"label of another interface", "192.168.20.15/24", "    label: \"eth1:vip\"\n", []string{"groups[0] (g).label", `"eth1:vip"`, `"eth0"`}},
		{"label without colon", "192.168.20.15/24", "    label: eth0vip\n", []string{"groups[0] (g).label", `"eth0vip"`, "colon"}},
		{"label bare interface", "192.168.20.15/24", "    label: \"eth0:\"\n", []string{"groups[0] (g).label", `"eth0:"`}},
		{"label too long", "192.168.20.15/24", "    label: \"eth0:0123456789ab\"\n", []string{"groups[0] (g).label", `"eth0:0123456789ab"`, "17 bytes", "15"}},
		{"label with space", "192.168.20.15/24", "    label: \"eth0:a b\"\n", []string{"groups[0] (g).label", "spaces"}},
		{"label on IPv6", "fd00:20::15/64", "    label: \"eth0:vip\"\n", []string{"groups[0] (g).label", "IPv4", "fd00:20::15/64"}},
		{"unknown scope", "192.168.20.15/24", "    scope: site\n", []string{"groups[0] (g).scope", `"site"`, "global, link or host"}},
		{"link scope on IPv6", "fd00:20::15/64", "    scope: link\n", []string{"groups[0] (g).scope", `"link"`, "IPv4"}},
		{"probe_wait too long", "192.168.20.15/24", "    garp: {probe: true, probe_wait: 2s}\n", []string{"groups[0] (g).garp.probe_wait", "2s", "10ms..500ms"}},
		{"probe_wait too short", "192.168.20.15/24", "    garp: {probe: true, probe_wait: 1ms}\n", []string{"groups[0] (g).garp.probe_wait", "1ms"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseAddrCfg(tc.addr, tc.extra)
			if err == nil {
				t.Fatal("accepted, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
