package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

// Issue 17: the running vipd re-executes only a binary that says it takes
// over a handoff and accepts the configuration, and only a configuration
// that keeps what a handoff cannot carry over.
func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "vipd.yaml")
	base := "node: n1\netcd: {endpoints: [http://127.0.0.1:2379]}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.3/24]}]\n"
	if err := os.WriteFile(conf, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	running, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The new binary reads the config itself and says what it found
	// ($HANDOFF_LINE, set per case below, stands for its reading).
	good := script("good", `case "$1" in version) echo "vipd 2.0"; [ "$2" = --features ] && echo "features: `+featureReexec+`";; check) echo "ok"; echo "handoff: $HANDOFF_LINE";; *) exit 1;; esac`+"\n")
	older := script("older", `case "$1" in version) echo "vipd 0.9";; check) exit 0;; *) exit 1;; esac`+"\n")
	refuses := script("refuses", `case "$1" in version) echo "vipd 2.0"; echo "features: `+featureReexec+`";; check) echo "bad key"; exit 1;; esac`+"\n")
	broken := script("broken", "exit 127\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	line := func(k handoffKeys) {
		b, _ := json.Marshal(k)
		t.Setenv("HANDOFF_LINE", string(b))
	}
	same := handoffKeysOf(running)
	line(same)

	if v, err := preflight(ctx, good, conf, running); err != nil || v != "2.0" {
		t.Errorf("good binary: %q, %v", v, err)
	}
	for name, bin := range map[string]string{"older": older, "refuses the config": refuses, "broken": broken} {
		if _, err := preflight(ctx, bin, conf, running); err == nil {
			t.Errorf("%s: preflight passed", name)
		}
	}
	if _, err := preflight(ctx, older, conf, running); err == nil || !strings.Contains(err.Error(), "cannot take over in place") {
		t.Errorf("older binary: %v, want it named as unable to take over", err)
	}

	for _, c := range []struct {
		change func(*handoffKeys)
		want   string
	}{
		{func(k *handoffKeys) { k.Node = "n2" }, "node (n1 → n2)"},
		{func(k *handoffKeys) { k.Prefix = "/other" }, "etcd.prefix"},
		{func(k *handoffKeys) { k.LeaseTTL = 10 * time.Second }, "etcd.lease_ttl (3s → 10s)"},
		{func(k *handoffKeys) { k.PeerListen = "10.0.0.1:9843" }, "peer.listen"},
		{func(k *handoffKeys) { k.Failsafe = true }, "peer.failsafe (false → true)"},
	} {
		k := same
		c.change(&k)
		line(k)
		_, err := preflight(ctx, good, conf, running)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "systemctl restart vipd") {
			t.Errorf("config changing %s: %v", c.want, err)
		}
	}
	// A key only the new binary knows (review 17b): its reading of the
	// file counts, not this binary's, which would refuse the key.
	if err := os.WriteFile(conf, []byte(base+"feature_added_in_2_1: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	line(same)
	if _, err := preflight(ctx, good, conf, running); err != nil {
		t.Errorf("config with a key only the new binary knows: %v", err)
	}
	// A new binary that reads nothing back is not trusted.
	t.Setenv("HANDOFF_LINE", "")
	if _, err := preflight(ctx, good, conf, running); err == nil {
		t.Error("preflight passed without the new binary's settings")
	}
}

// `vipd check --handoff` prints the settings a re-execution compares, as
// the binary reads the file.
func TestCheckHandoff(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "vipd.yaml")
	y := "node: n1\netcd: {endpoints: [http://127.0.0.1:2379], lease_ttl: 6s}\ngroups: [{name: g, interface: eth0, addresses: [10.0.0.3/24]}]\n"
	if err := os.WriteFile(conf, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := realMain([]string{"check", "--config", conf, "--handoff"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	_, l, _ := strings.Cut(out.String(), "handoff: ")
	l, _, _ = strings.Cut(l, "\n")
	var k handoffKeys
	if err := json.Unmarshal([]byte(strings.TrimSpace(l)), &k); err != nil || k.Node != "n1" || k.LeaseTTL != 6*time.Second || k.Prefix != "/vipd" {
		t.Errorf("handoff line %q: %+v, %v", l, k, err)
	}
}

// `vipd version --features` names the handoff feature; plain `version`
// prints the version only, as before.
func TestVersionFeatures(t *testing.T) {
	var out, errb strings.Builder
	if code := realMain([]string{"version", "--features"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "features: "+featureReexec) {
		t.Errorf("version --features: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := realMain([]string{"version"}, &out, &errb); code != 0 || strings.Contains(out.String(), "features") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}
