package keeper

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// R4: a hook that leaves a detached (setsid) child holding its stdout
// makes cmd.Wait block on the output pipe: the timeout's process-group
// kill cannot reach the child, exec waits on <-done, and notifier.wait()
// (the last step of Keeper.Run) blocks until the child exits. No
// cmd.WaitDelay bounds it.
func TestReviewDetachedChildBlocksHookWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{log: slog.New(slog.NewTextHandler(io.Discard, nil)), obs: nopObserver{}, ctx: ctx}
	// keepalived-era notify scripts do this: start something in the background.
	n.run([]string{"/bin/sh", "-c", "setsid sleep 4 & exit 0"}, 200*time.Millisecond, hookEnv{Group: "VI_1", State: "MASTER"})
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cancel() // as Keeper.Run's stopBg
	n.wait()
	if d := time.Since(start); d > time.Second {
		t.Errorf("notifier.wait() blocked %v after the hook's timeout and the daemon's cancel", d.Round(time.Millisecond))
	}
}

type countObs struct {
	nopObserver
	results chan string
}

func (o countObs) Notified(_, _, result string) { o.results <- result }

// R9: a hook that starts a long-lived helper with plain `&` (common in
// keepalived notify_master scripts) is reported as timed out and its
// helper SIGKILLed at notify.timeout, because Wait waits for the helper's
// copy of the stdout pipe; keepalived neither waits nor kills it.
func TestReviewBackgroundedHelperKilled(t *testing.T) {
	obs := countObs{results: make(chan string, 1)}
	n := &notifier{log: slog.New(slog.NewTextHandler(io.Discard, nil)), obs: obs, ctx: context.Background()}
	pidf := t.TempDir() + "/pid"
	n.run([]string{"/bin/sh", "-c", "sleep 30 & echo $! > " + pidf + "; exit 0"}, 300*time.Millisecond, hookEnv{Group: "VI_1", State: "MASTER"})
	res := <-obs.results
	b, _ := os.ReadFile(pidf)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	time.Sleep(200 * time.Millisecond)
	st, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
	alive := len(st) > 0 && !strings.Contains(string(st), ") Z ")
	t.Logf("result %q, helper alive %v stat %s", res, alive, st)
	if res != "ok" || !alive {
		t.Errorf("hook exited 0 at once, yet result=%q and helper alive=%v", res, alive)
	}
	n.wait()
}

// A hook's output is still logged, and a hook that outlives its timeout
// is still reported as such and killed with its process group.
func TestHookOutputAndTimeout(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	obs := countObs{results: make(chan string, 1)}
	n := &notifier{log: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		obs: obs, ctx: context.Background()}
	n.run([]string{"/bin/sh", "-c", "echo said-ok"}, time.Second, hookEnv{Group: "VI_1", State: "MASTER"})
	if res := <-obs.results; res != "ok" {
		t.Errorf("result %q, want ok", res)
	}
	start := time.Now()
	n.run([]string{"/bin/sh", "-c", "echo said-hung; sleep 30"}, 200*time.Millisecond, hookEnv{Group: "VI_1", State: "BACKUP"})
	if res := <-obs.results; res != "timeout" {
		t.Errorf("result %q, want timeout", res)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a hung hook took %v to be killed", d)
	}
	n.wait()
	mu.Lock()
	defer mu.Unlock()
	for _, w := range []string{"said-ok", "said-hung"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("output %q not logged: %s", w, logs.String())
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
