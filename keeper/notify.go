package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vipd/vipd/election"
)

// notifier runs keepalived-style notify hooks: asynchronously, each with a
// timeout that kills its whole process group, so a slow or hung hook never
// delays the election or the address change.
type notifier struct {
	log *slog.Logger
	obs Observer
	wg  sync.WaitGroup
	// ctx ends every running hook when the daemon stops for good.
	ctx context.Context
	// running counts the hooks running now.
	running atomic.Int32
}

// hookEnv is what a hook learns from its environment.
type hookEnv struct {
	Group, Node, State, From string
	// Interfaces: the group's own first, then those its addresses name.
	Interfaces []string
	Addresses  []string
	Priority   int
}

func (e hookEnv) environ() []string {
	return append(os.Environ(),
		"VIPD_GROUP="+e.Group,
		"VIPD_NODE="+e.Node,
		"VIPD_STATE="+e.State,
		"VIPD_PREVIOUS_STATE="+e.From,
		"VIPD_INTERFACE="+strings.Join(e.Interfaces[:min(len(e.Interfaces), 1)], ""),
		"VIPD_INTERFACES="+strings.Join(e.Interfaces, " "),
		"VIPD_ADDRESSES="+strings.Join(e.Addresses, " "),
		"VIPD_PRIORITY="+strconv.Itoa(e.Priority),
	)
}

// anyHookArgv is the argv of the generic `notify.any` hook for a
// transition: keepalived's convention for an instance's `notify` script,
// four arguments after the configured ones: INSTANCE, the group name, the
// state and the priority. It returns nil when there is no hook or the
// state is not one keepalived reports (INIT).
func anyHookArgv(argv []string, group string, state election.State, prio int) []string {
	if len(argv) == 0 {
		return nil
	}
	switch state {
	case election.StateMaster, election.StateBackup, election.StateFault, election.StateStop:
	default:
		return nil
	}
	out := make([]string, 0, len(argv)+4)
	out = append(out, argv...)
	return append(out, "INSTANCE", group, string(state), strconv.Itoa(prio))
}

// run starts argv in the background. An empty argv does nothing.
func (n *notifier) run(argv []string, timeout time.Duration, env hookEnv) {
	if len(argv) == 0 {
		return
	}
	n.wg.Add(1)
	n.running.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.running.Add(-1)
		result := "ok"
		err := n.exec(argv, timeout, env)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			result = "timeout"
			n.log.Warn("notify hook timed out and was killed", "group", env.Group, "state", env.State, "command", argv[0], "timeout", timeout)
		case err != nil:
			result = "error"
			n.log.Warn("notify hook failed", "group", env.Group, "state", env.State, "command", argv[0], "err", err)
		default:
			n.log.Debug("notify hook done", "group", env.Group, "state", env.State, "command", argv[0])
		}
		n.obs.Notified(env.Group, env.State, result)
	}()
}

// outputGrace is how long a finished hook's output is waited for when a
// helper it left running still holds the output pipe.
const outputGrace = 100 * time.Millisecond

func (n *notifier) exec(argv []string, timeout time.Duration, env hookEnv) error {
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env.environ()
	// Own process group, so a timeout kills the hook's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The output goes to a pipe handed over as an *os.File, not an
	// io.Writer, so Wait waits for the hook's own exit and not for its
	// pipe to close: a helper the hook leaves running in the background
	// (`daemon &`, setsid) may hold the pipe as long as it lives, and
	// keepalived neither waits for such a helper nor kills it.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("keeper: notify %s: %w", argv[0], err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("keeper: notify %s: %w", argv[0], err)
	}
	out := &limitedWriter{w: &strings.Builder{}, n: 4096}
	drained := make(chan struct{})
	// Until every writer is gone, helpers included (a helper that writes
	// after its hook ended is read and dropped, never SIGPIPEd), or until
	// the daemon stops: closing r ends the read.
	stopRead := context.AfterFunc(n.ctx, func() { r.Close() })
	go func() {
		defer close(drained)
		defer stopRead()
		defer r.Close()
		_, _ = io.Copy(out, r)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
		if err != nil {
			err = fmt.Errorf("keeper: notify %s: %w", argv[0], err)
		}
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = context.DeadlineExceeded
		if n.ctx.Err() != nil {
			err = fmt.Errorf("keeper: notify %s: %w", argv[0], n.ctx.Err())
		}
	}
	grace := time.NewTimer(outputGrace)
	defer grace.Stop()
	select {
	case <-drained:
	case <-grace.C:
	}
	if s := out.String(); s != "" {
		n.log.Debug("notify hook output", "command", argv[0], "output", s)
	}
	return err
}

// wait blocks until every running hook has finished or been killed.
func (n *notifier) wait() { n.wg.Wait() }

// waitFor waits for running hooks, at most d.
func (n *notifier) waitFor(d time.Duration) {
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
