package execmover

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/keeper"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func script(t *testing.T, body string) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mover")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{p}
}

func move(deadline time.Time) keeper.Move {
	return keeper.Move{Group: "VI_1", Node: "web-node-1", Lease: 0x5aed,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.1.50/24"), netip.MustParsePrefix("10.0.1.51/24")}, Deadline: deadline}
}

func TestAssertEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	m := New(script(t, "env | grep ^VIPD_ | sort > "+out+"\n"), quiet())
	deadline := time.Now().Add(2 * time.Second)
	if err := m.Assert(context.Background(), move(deadline)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VIPD_MOVER_ACTION=assert", "VIPD_GROUP=VI_1", "VIPD_NODE=web-node-1",
		"VIPD_ADDRESSES=10.0.1.50/24 10.0.1.51/24", "VIPD_LEASE=5aed", "VIPD_DEADLINE=" + deadline.UTC().Format(time.RFC3339Nano), "VIPD_DEADLINE_IN="} {
		if !strings.Contains(string(b), want) {
			t.Errorf("environment lacks %q:\n%s", want, b)
		}
	}
	var in float64
	if i := strings.Index(string(b), "VIPD_DEADLINE_IN="); i < 0 {
		t.Fatal("no VIPD_DEADLINE_IN")
	} else if _, err := fmt.Sscan(string(b[i+len("VIPD_DEADLINE_IN="):]), &in); err != nil || in <= 1 || in > 2 {
		t.Errorf("VIPD_DEADLINE_IN %v (%v), want the seconds left before the deadline 2 s ahead", in, err)
	}
}

func TestCheckExitStatus(t *testing.T) {
	deadline := time.Now().Add(5 * time.Second)
	cases := []struct {
		exit     string
		here, ok bool
	}{{"0", true, true}, {"3", false, true}, {"1", false, false}}
	for _, c := range cases {
		m := New(script(t, "test \"$VIPD_MOVER_ACTION\" = check || exit 9\necho provider says $0 >&2\nexit "+c.exit+"\n"), quiet())
		here, err := m.Check(context.Background(), move(deadline))
		if here != c.here || (err == nil) != c.ok {
			t.Errorf("exit %s: here %v, err %v; want here %v, error %v", c.exit, here, err, c.here, !c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "provider says") {
			t.Errorf("exit %s: error %v does not carry the command's output", c.exit, err)
		}
	}
}

// At the fence the command dies with its whole process group: by vipd's
// context, and by its own timeout(1) when vipd cannot act (frozen: here a
// context that never ends).
func TestKilledAtTheFence(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		pidFile := filepath.Join(t.TempDir(), "child")
		m := New(script(t, "sleep 30 &\necho $! > "+pidFile+"\nwait\n"), quiet())
		if m.timeoutBin == "" && frozen {
			t.Fatal("timeout(1) not found (coreutils): the frozen case cannot be covered")
		}
		deadline := time.Now().Add(300 * time.Millisecond)
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if !frozen {
			ctx, cancel = context.WithDeadline(context.Background(), deadline)
		}
		start := time.Now()
		err := m.Assert(ctx, move(deadline))
		cancel()
		took := time.Since(start)
		if err == nil || took > 2*time.Second {
			t.Fatalf("frozen=%v: returned after %v with %v; want an error at the fence (300ms)", frozen, took, err)
		}
		b, _ := os.ReadFile(pidFile)
		var pid int
		if _, perr := fmt.Sscan(strings.TrimSpace(string(b)), &pid); perr != nil {
			t.Fatalf("no child pid recorded: %q", b)
		}
		for end := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			if !alive(pid) {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("frozen=%v: the command's child %d outlived the fence", frozen, pid)
			}
		}
	}
}

func TestRefusesPastTheFence(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	m := New(script(t, "touch "+ran+"\n"), quiet())
	if err := m.Assert(context.Background(), move(time.Now().Add(-time.Millisecond))); err == nil {
		t.Fatal("an assert past the fence succeeded")
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the command ran past the fence")
	}
}

// alive reports whether pid runs (a zombie, killed and not yet reaped by
// whoever adopted it, does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) == 0 || f[0] != "Z"
}

// A command that exits and leaves a helper behind: the helper is killed
// with its process group when the command ends, so it cannot act later
// (after the fence).
func TestHelperLeftBehindIsKilled(t *testing.T) {
	dir := t.TempDir()
	pidFile, acted := filepath.Join(dir, "helper"), filepath.Join(dir, "acted")
	m := New(script(t, "(sleep 0.5; touch "+acted+") > /dev/null 2>&1 &\necho $! > "+pidFile+"\nexit 0\n"), quiet())
	if err := m.Assert(context.Background(), move(time.Now().Add(5*time.Second))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(acted); err == nil {
		t.Fatal("the helper the command left behind acted after the command ended")
	}
}

// Too little time left: the command does not start (a stall between the
// keeper's check and the run; timeout(1) would read 0 as no timeout).
func TestRefusesTooCloseToTheFence(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	m := New(script(t, "touch "+ran+"\n"), quiet())
	mv := move(time.Now().Add(300 * time.Microsecond))
	if err := m.Assert(context.Background(), mv); err == nil {
		t.Fatal("an assert 0.3 ms before the fence ran")
	}
	mv = move(time.Now().Add(5 * time.Second))
	mv.Live = func() bool { return false } // a suspend ended the fence early
	if err := m.Assert(context.Background(), mv); err == nil {
		t.Fatal("an assert after the fence ended (Live false) ran")
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the command ran")
	}
}
