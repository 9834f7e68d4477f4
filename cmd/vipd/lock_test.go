package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/runlock"
)

// While another vipd holds the runtime directory's lock, `vipd run` and
// `vipd cleanup` exit 1 with one line naming the holder and touch nothing:
// run never dials etcd (its endpoint is a closed loopback port, so a dial
// would retry for seconds) and cleanup removes nothing.
func TestRefusesWhileLocked(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vipd.yaml")
	if err := os.WriteFile(cfg, []byte(`node: n
etcd: {endpoints: [http://127.0.0.1:1]}
metrics: {listen: ""}
groups: [{name: g, interface: vipdtest0, addresses: [10.255.0.15/24]}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(dir, "run")
	lk, err := runlock.Acquire(runDir)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	lockFile := filepath.Join(runDir, runlock.FileName)
	want := fmt.Sprintf("vipd: another vipd (pid %d) is running: %s is locked\n", os.Getpid(), lockFile)

	refused := func(t *testing.T, args ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		done := make(chan int, 1)
		// Without the lock, run would start (and keep) retrying etcd.
		go func() { done <- realMain(args, &out, &errb) }()
		var code int
		select {
		case code = <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("vipd %s still running after 2 s: it did not refuse", args[0])
		}
		if code != 1 {
			t.Errorf("vipd %s: exit %d, want 1", args[0], code)
		}
		if errb.String() != want {
			t.Errorf("vipd %s: stderr %q, want %q", args[0], errb.String(), want)
		}
		if out.Len() != 0 {
			t.Errorf("vipd %s: stdout %q, want nothing", args[0], out.String())
		}
		// The holder's PID is still in the file.
		if b, err := os.ReadFile(lockFile); err != nil || string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
			t.Errorf("lock file after vipd %s: %q, %v", args[0], b, err)
		}
	}
	t.Run("run", func(t *testing.T) { refused(t, "run", "--config", cfg, "--runtime-dir", runDir) })
	t.Run("cleanup", func(t *testing.T) { refused(t, "cleanup", "--config", cfg, "--runtime-dir", runDir) })
	t.Run("RUNTIME_DIRECTORY", func(t *testing.T) {
		// As systemd sets it with RuntimeDirectory= (a list: the first counts).
		t.Setenv("RUNTIME_DIRECTORY", runDir+":"+filepath.Join(dir, "other"))
		refused(t, "run", "--config", cfg)
	})
	t.Run("check", func(t *testing.T) {
		// check takes no lock: ExecStartPre may run it next to a vipd.
		var out, errb bytes.Buffer
		if code := realMain([]string{"check", "--config", cfg, "--runtime-dir", runDir}, &out, &errb); code != 0 {
			t.Errorf("vipd check while locked: exit %d: %s", code, errb.String())
		}
	})
}

// A runtime directory that cannot be created is an error of its own, not
// a claim that another vipd runs.
func TestRuntimeDirUnusable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := realMain([]string{"cleanup", "--config", "/nonexistent/vipd.yaml", "--runtime-dir", filepath.Join(file, "run")}, &out, &errb)
	if code != 1 || !strings.HasPrefix(errb.String(), "vipd: runlock: ") || strings.Contains(errb.String(), "another vipd") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}
