package main

// Review 17b (0332233): see the review report.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

// Finding: preflight parses the new configuration with the running
// binary's config.Load (KnownFields: strict) to compare what a handoff
// cannot carry. A configuration that uses a key the new binary introduces
// (the reason for many upgrades) is accepted by the new binary's
// `check --config`, but rejected by the old parser: every re-execution to
// that binary is refused, `systemctl reload` (and the package's
// postinstall) still succeeds, and the old binary goes on. The new
// binary should report the handoff-relevant settings itself.
func TestReview17bPreflightRejectsKeyNewInNextBinary(t *testing.T) {
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
	next := filepath.Join(dir, "next")
	// The next binary knows the new key and accepts the config.
	// (Fixed: the running vipd compares what the next binary reports with
	// `check --handoff`, not its own parse of the file.)
	b, _ := json.Marshal(handoffKeysOf(running))
	body := "#!/bin/sh\ncase \"$1\" in version) echo \"vipd 2.1\"; echo \"features: " + featureReexec + "\";; check) echo 'handoff: " + string(b) + "';; *) exit 1;; esac\n"
	if err := os.WriteFile(next, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(base+"feature_added_in_2_1: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := preflight(ctx, next, conf, running); err != nil {
		t.Errorf("re-execution to a binary that accepts the config refused by the running binary's parser: %v", err)
	}
}
