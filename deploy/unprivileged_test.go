package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/prereq"
)

// TestRunsUnprivilegedWithTwoCapabilities proves what the unit relies on:
// vipd needs no root, only CAP_NET_ADMIN and CAP_NET_RAW. In a network
// namespace the test creates (a veth pair, a real etcd on the namespace's
// loopback), vipd runs as nobody with exactly those two capabilities
// (ambient, as the unit grants them) and must win its group, bind the VIP
// with a kernel lifetime, announce it, hold the lock in its runtime
// directory (a second vipd refuses), and remove the VIP on SIGTERM. As a
// control, `vipd cleanup` as nobody without the capabilities must fail to
// remove an address. Every packet stays inside the namespace.
func TestRunsUnprivilegedWithTwoCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to create a network namespace")
	}
	for _, tool := range []string{"ip", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			prereq.Missing(t, "%s not installed", tool)
		}
	}
	if testing.Short() {
		t.Skip("builds etcd; skipped with -short")
	}
	dir := t.TempDir()
	// nobody must reach the binary and the config.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vipd := buildVipd(t, dir)
	etcd := filepath.Join(dir, "etcd")
	if out, err := exec.Command("go", "build", "-o", etcd, "../e2e/cmd/etcd").CombinedOutput(); err != nil {
		t.Fatalf("go build e2e/cmd/etcd: %v\n%s", err, out)
	}

	ns := fmt.Sprintf("vipd-deploy-%d", os.Getpid())
	ipc := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip -n %s %s: %v\n%s", ns, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipc("link", "set", "lo", "up")
	ipc("link", "add", "vd0", "type", "veth", "peer", "name", "vd1")
	ipc("link", "set", "vd0", "up")
	ipc("link", "set", "vd1", "up")
	ipc("addr", "add", "10.250.0.1/24", "dev", "vd1")

	start := func(name string, args ...string) (*exec.Cmd, *syncBuffer) {
		t.Helper()
		out := &syncBuffer{}
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // no-op once it exited
		return cmd, out
	}
	_, etcdOut := start("etcd", etcd, "--name", "e", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "e=http://127.0.0.1:2380", "--log-level", "error")

	cfg := filepath.Join(dir, "vipd.yaml")
	if err := os.WriteFile(cfg, []byte(`node: unpriv
etcd: {endpoints: [http://127.0.0.1:2379], lease_ttl: 3s}
metrics: {listen: ""}
groups:
  - name: G
    interface: vd0
    addresses: [10.250.0.15/24]
    garp: {count: 2, interval: 100ms}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// As the unit does (RuntimeDirectory=vipd): a runtime directory owned
	// by vipd's user, passed as $RUNTIME_DIRECTORY, for vipd.lock.
	runDir := filepath.Join(dir, "run")
	if err := os.Mkdir(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(runDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RUNTIME_DIRECTORY", runDir)
	asNobody := func(caps bool, args ...string) []string {
		a := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
		if caps {
			a = append(a, "--inh-caps=-all,+net_admin,+net_raw", "--ambient-caps=-all,+net_admin,+net_raw",
				"--bounding-set=-all,+net_admin,+net_raw")
		} else {
			a = append(a, "--inh-caps=-all", "--bounding-set=-all")
		}
		return append(append(a, vipd), args...)
	}

	// Control: without the capabilities, nobody cannot touch addresses.
	ipc("addr", "add", "10.250.0.15/24", "dev", "vd0")
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, asNobody(false, "cleanup", "--config", cfg)...)...).CombinedOutput()
	if err == nil || !strings.Contains(ipc("-br", "addr", "show", "dev", "vd0"), "10.250.0.15/24") {
		t.Fatalf("vipd cleanup without capabilities removed the address or succeeded: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "runlock") || strings.Contains(string(out), "another vipd") {
		t.Fatalf("vipd cleanup without capabilities failed on its lock, not on netlink:\n%s", out)
	}
	// With them, cleanup works.
	out, err = exec.Command("ip", append([]string{"netns", "exec", ns}, asNobody(true, "cleanup", "--config", cfg)...)...).CombinedOutput()
	if err != nil || strings.Contains(ipc("-br", "addr", "show", "dev", "vd0"), "10.250.0.15/24") {
		t.Fatalf("vipd cleanup with CAP_NET_ADMIN: %v\n%s", err, out)
	}

	// The daemon, unprivileged: wins G and binds the VIP with a lifetime.
	run, runOut := start("vipd", asNobody(true, "run", "--config", cfg)...)
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	lftRE := regexp.MustCompile(`inet 10\.250\.0\.15/24 .*\n\s+valid_lft (\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := lftRE.FindStringSubmatch(ipc("addr", "show", "dev", "vd0")); m != nil {
			if m[1] == "forever" {
				t.Fatalf("VIP bound without a kernel lifetime (the dead-man's switch): %q", m[0])
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("unprivileged vipd exited (%v) before binding the VIP\nvipd:\n%s\netcd:\n%s", err, runOut, etcdOut)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("VIP not bound within 20 s by unprivileged vipd\nvipd:\n%s\netcd:\n%s", runOut, etcdOut)
		}
	}
	// The process is nobody with exactly the two capabilities.
	pid := vipdPID(t, run.Process.Pid)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nUid:\t65534\t65534\t65534\t65534\n", "\nCapEff:\t0000000000003000\n", "\nCapAmb:\t0000000000003000\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("vipd /proc/%d/status lacks %q:\n%s", pid, strings.TrimSpace(want), status)
		}
	}
	// It holds the one-vipd-per-host lock in the runtime directory, and a
	// second vipd refuses to start, naming it.
	if b, err := os.ReadFile(filepath.Join(runDir, "vipd.lock")); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(pid) {
		t.Errorf("%s/vipd.lock: %q, %v; want vipd's pid %d", runDir, b, err, pid)
	}
	out, err = exec.Command("ip", append([]string{"netns", "exec", ns}, asNobody(true, "run", "--config", cfg)...)...).CombinedOutput()
	if want := fmt.Sprintf("vipd: another vipd (pid %d) is running: %s/vipd.lock is locked\n", pid, runDir); err == nil || string(out) != want {
		t.Errorf("second vipd run: %v, output %q; want exit 1 and %q", err, out, want)
	}
	// It announced (CAP_NET_RAW): no announce error was logged.
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(runOut.String(), "announcement failed") {
		t.Errorf("announcement failed without root:\n%s", runOut)
	}

	// SIGTERM: the VIP goes.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vipd exited with %v\n%s", err, runOut)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("vipd did not stop within 10 s of SIGTERM\n%s", runOut)
	}
	if strings.Contains(ipc("-br", "addr", "show", "dev", "vd0"), "10.250.0.15") {
		t.Errorf("VIP still bound after SIGTERM")
	}
}

// vipdPID finds the vipd process under `ip netns exec` → setpriv (both
// exec in place, so it is normally the same pid).
func vipdPID(t *testing.T, pid int) int {
	t.Helper()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "vipd" {
		t.Fatalf("process %d is %q, not vipd (%v)", pid, comm, err)
	}
	return pid
}

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
