package config

import (
	"errors"
	"strings"
	"testing"
)

// An unknown key is reported with its full path, its line and the key
// that was probably meant; every unknown key at once.
func TestUnknownKeysNameTheirPath(t *testing.T) {
	cases := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"key of another section", func(s string) string {
			return strings.Replace(s, "    rise: 2\n", "    rise: 2\n    interface: eth0\n", 1)
		}, []string{"checks.haproxy.interface: unknown key (line 16)", "an interface check names its interface with name:"}},
		{"typo in a check", func(s string) string { return strings.Replace(s, "interval: 200ms", "intreval: 200ms", 1) },
			[]string{"checks.haproxy.intreval: unknown key", "did you mean interval?"}},
		{"typo in a group", func(s string) string { return strings.Replace(s, "priority: 101", "priorty: 101", 1) },
			[]string{"groups[0] (VI_1).priorty: unknown key", "did you mean priority?"}},
		{"nested", func(s string) string { return strings.Replace(s, "refresh: 0s", "refesh: 0s", 1) },
			[]string{"groups[0] (VI_1).garp.refesh: unknown key", "did you mean refresh?"}},
		{"top level", func(s string) string { return "nodes: x\n" + s }, []string{"nodes: unknown key (line 1)", "did you mean node?"}},
		{"etcd", func(s string) string { return strings.Replace(s, "prefix: /vipd", "perfix: /vipd", 1) },
			[]string{"etcd.perfix: unknown key", "did you mean prefix?"}},
		{"track entry", func(s string) string { return strings.Replace(s, "weight: 2}", "wieght: 2}", 1) },
			[]string{"groups[0] (VI_1).track[0].wieght: unknown key", "did you mean weight?"}},
		{"keepalived habit", func(s string) string { return strings.Replace(s, "preempt: true", "nopreempt: true", 1) },
			[]string{"groups[0] (VI_1).nopreempt", "write preempt: false"}},
		{"nothing close", func(s string) string { return strings.Replace(s, "lease_ttl: 3s", "lease_ttl: 3s\n  zzzzzzzzzz: 1", 1) },
			[]string{"etcd.zzzzzzzzzz: unknown key", "valid keys here: dial_timeout, endpoints, lease_ttl, password_file, prefix, request_timeout, tls, username"}},
		{"all at once", func(s string) string {
			return strings.Replace(strings.Replace(s, "interval: 200ms", "intreval: 200ms", 1), "priority: 101", "priorty: 101", 1)
		}, []string{"checks.haproxy.intreval", "groups[0] (VI_1).priorty"}},
		{"group without a name", func(s string) string { return s + "  - {interface: eth0, adresses: [10.0.0.1/24]}\n" },
			[]string{"groups[1].adresses: unknown key", "did you mean addresses?"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.edit(seed)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "not found in type") {
				t.Errorf("error still names a Go type: %v", err)
			}
		})
	}
}

// Anchors, aliases and merge keys are followed, and valid keys pass.
func TestKnownKeysPass(t *testing.T) {
	src := strings.Replace(seed, "checks:\n", "x-common: &c {interval: 1s}\nchecks:\n", 1)
	if _, err := Parse(strings.NewReader(src)); err == nil || !strings.Contains(err.Error(), "x-common: unknown key") {
		t.Errorf("an unknown top-level key used as an anchor: %v", err)
	}
	merged := strings.Replace(seed, "garp: {count: 5, interval: 1s, refresh: 0s}", "garp: &g {count: 5, interval: 1s}\n    notify: {<<: {timeout: 5s}}", 1)
	merged = strings.Replace(merged, "    notify: {master: [], backup: [], fault: [], stop: []}\n", "", 1)
	if _, err := Parse(strings.NewReader(merged)); err != nil {
		t.Errorf("merge key: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"interval", "intreval", 2}, {"kitten", "sitting", 3}, {"priority", "priorty", 1}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}
