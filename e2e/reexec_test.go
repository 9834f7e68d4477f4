package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
	"github.com/vipd/vipd/internal/prereq"
)

// TestReexecInPlace (issue 17): `systemctl reload vipd` (SIGUSR2) on the
// holder re-executes vipd in place, with the same binary and with a new
// version of it: the same process goes on, no VIP moves, no client
// connection breaks, never two holders. A binary the running vipd's check
// refuses is not executed. One that passes the check but fails to run
// leaves no VIP without a live fence: it goes by its kernel lifetime and
// the lease, and the peer takes over.
func TestReexecInPlace(t *testing.T) {
	needAll(t)
	next := filepath.Join(binDir, "vipd-next")
	if _, err := os.Stat(next); err != nil {
		prereq.Missing(t, "needs %s (make tools): %v", next, err)
	}
	tb := newTestbed(t, testbed.Options{})
	res := &results{t: t, title: "re-execution in place (issue 17)"}
	defer res.log()
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	// web-node-1 runs vipd from its own copy, which the test replaces as
	// a package upgrade does (a new file renamed over the old).
	installed := filepath.Join(tb.Dir, "vipd-web-node-1")
	install := func(data []byte) {
		t.Helper()
		tmp := installed + ".new"
		if err := os.WriteFile(tmp, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, installed); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) []byte {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	install(read(filepath.Join(binDir, "vipd")))
	n1.VipdBinary = installed
	if err := tb.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.WaitAnswer(testbed.Node1, time.Now(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	pid := n1.Vipd().Pid()

	reexec := func(what, wantVersion string) {
		t.Helper()
		conns := tb.StartKeepAlive(8, 50*time.Millisecond)
		time.Sleep(500 * time.Millisecond)
		t0 := time.Now()
		if err := n1.Vipd().Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		start, ok := waitLog(n1, t0, "vipd starting", 10*time.Second)
		if !ok {
			t.Fatalf("%s: the next image never started\n%s", what, n1.Vipd().LogTail(30))
		}
		adopted, ok := waitLog(n1, start.Time, "lease adopted from the previous vipd image: renewed", 10*time.Second)
		if !ok {
			t.Fatalf("%s: the next image never renewed the adopted lease\n%s", what, n1.Vipd().LogTail(30))
		}
		ready, ok := waitLog(n1, start.Time, "ready: every group has a state and the lease is live", 10*time.Second)
		if !ok {
			t.Fatalf("%s: the next image never got ready\n%s", what, n1.Vipd().LogTail(30))
		}
		time.Sleep(10 * time.Second) // past a lease TTL: the kernel lifetimes set before were refreshed
		ka := conns.Stop()
		st := tb.Mon.Stats(t0, time.Now())
		out := tb.Probes().Window(t0, time.Now()).LongestOutage()
		if !n1.Vipd().Running() || n1.Vipd().Pid() != pid {
			t.Errorf("%s: vipd on web-node-1 is not the same process (pid %d, running %v)", what, pid, n1.Vipd().Running())
		}
		if got := start.Attrs["version"]; got != wantVersion {
			t.Errorf("%s: the next image runs version %q, want %q", what, got, wantVersion)
		}
		if st.Changes != 0 || st.TwoHolders != 0 || out.Failed > 0 {
			t.Errorf("%s: %d VIP changes, %v with two holders, client outage %v; want none", what, st.Changes, st.TwoHolders, out)
		}
		if ka.Broken > 0 {
			t.Errorf("%s: %d of %d long-lived connections broke (%d requests): %v", what, ka.Broken, ka.Conns, ka.Requests, ka.Failures)
		}
		if hooks := logSince(n1, t0, "state change"); len(hooks) > 0 {
			t.Errorf("%s: state changes logged across the re-execution: %v", what, states(n1, t0))
		}
		res.add(what+": SIGUSR2 → next image started / renewed the lease / ready", fmt.Sprintf("%v / %v / %v", ms(start.Time.Sub(t0)), ms(adopted.Time.Sub(t0)), ms(ready.Time.Sub(t0))),
			fmt.Sprintf("same pid (asserted); version %s (asserted); ready is checked every 1 s", wantVersion))
		relists := len(logSince(n1, t0, "group watch interrupted; re-listing"))
		if relists > 0 {
			t.Errorf("%s: the next image's watch re-listed %d times in 10 s (a quiet cluster taken for a stalled watch)", what, relists)
		}
		res.add(what+": watch re-lists in the 10 s after", relists, "0 (asserted)")
		res.add(what+": VIP changes / outage / broken connections", fmt.Sprintf("%d / %v / %d of %d (%d requests)", st.Changes, out, ka.Broken, ka.Conns, ka.Requests),
			"0 / none / 0 (asserted)")
	}
	version := func(bin string) string {
		t.Helper()
		out, err := runOut(bin, "version")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(strings.TrimSpace(out), "vipd ")
	}
	reexec("reload, same binary", version(installed))
	install(read(next))
	reexec("upgrade to a new version", version(next))

	// A binary that does not start: refused before anything is handed over.
	install([]byte("#!/bin/sh\nexit 1\n"))
	t1 := time.Now()
	if err := n1.Vipd().Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitLog(n1, t1, "re-execution refused; this vipd goes on", 15*time.Second); !ok {
		t.Fatalf("a broken binary was not refused\n%s", n1.Vipd().LogTail(20))
	}
	time.Sleep(time.Second)
	if st := tb.Mon.Stats(t1, time.Now()); st.Changes != 0 || !n1.Vipd().Running() {
		t.Errorf("refused binary: %d VIP changes, vipd running %v; want 0, running", st.Changes, n1.Vipd().Running())
	}
	res.add("broken binary: re-execution refused", "vipd goes on, 0 VIP changes", "asserted")

	// A binary that passes the check but fails to run once executed: the
	// VIP goes with its kernel lifetime (no image refreshes it), the lease
	// expires, web-node-2 takes over; never two holders.
	script := "#!/bin/sh\ncase \"$1\" in\n  version) echo vipd broken; echo \"features: reexec-handoff-1\";;\n  check) exec " +
		filepath.Join(binDir, "vipd") + " \"$@\";;\n  *) exit 1;;\nesac\n"
	install([]byte(script))
	t2 := time.Now()
	if err := n1.Vipd().Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := n1.Vipd().Wait(10 * time.Second); err == nil && n1.Vipd().Running() {
		t.Fatal("the failing next image is still running")
	}
	if err := tb.WaitHolder(testbed.Node2, 15*time.Second); err != nil {
		t.Fatalf("web-node-2 did not take over after the next image failed: %v\n%s", err, n2.Vipd().LogTail(20))
	}
	del, _ := tb.Mon.EventAfter(testbed.Node1, false, t2)
	add, _ := tb.Mon.EventAfter(testbed.Node2, true, t2)
	st := tb.Mon.Stats(t2, time.Now())
	if st.TwoHolders != 0 {
		t.Errorf("failed next image: %v with two holders", st.TwoHolders)
	}
	res.add("next image fails to run: VIP gone from web-node-1 / on web-node-2", fmt.Sprintf("%v / %v", ms(del.Time.Sub(t2)), ms(add.Time.Sub(t2))),
		fmt.Sprintf("kernel lifetime, then lease expiry + grace; two holders %v (asserted 0)", ms(st.TwoHolders)))
	whole := tb.Mon.Stats(time.Time{}, time.Now())
	if whole.TwoHolders != 0 {
		t.Errorf("two holders for %v over the run", whole.TwoHolders)
	}
}

// runOut runs a binary on the host (no network: `vipd version`).
func runOut(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	return string(out), err
}
