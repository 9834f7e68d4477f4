package execmover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vipd/vipd/keeper"
)

// ExitNotHere is the exit status of a check that finds the addresses
// delivered elsewhere (0: here; anything else: unknown, an error).
const ExitNotHere = 3

// maxOutput bounds the command output kept for the log.
const maxOutput = 4096

// minLeft is the least time before the deadline for a command to start.
const minLeft = 50 * time.Millisecond

// Mover runs argv for each call.
type Mover struct {
	argv []string
	log  *slog.Logger
	// timeoutBin is timeout(1), which kills the command at the deadline
	// even when vipd is frozen; "" where it is missing (vipd alone kills
	// it then).
	timeoutBin string
	now        func() time.Time
}

// New returns a mover that runs argv.
func New(argv []string, log *slog.Logger) *Mover {
	bin, err := exec.LookPath("timeout")
	if err != nil {
		log.Warn("timeout(1) not found: a mover command is killed at the fence by vipd only, which a frozen vipd cannot do", "err", err)
		bin = ""
	}
	return &Mover{argv: argv, log: log, timeoutBin: bin, now: time.Now}
}

// Assert runs the command with VIPD_MOVER_ACTION=assert.
func (m *Mover) Assert(ctx context.Context, mv keeper.Move) error {
	_, err := m.run(ctx, "assert", mv)
	return err
}

// Check runs the command with VIPD_MOVER_ACTION=check: exit 0 means here,
// ExitNotHere elsewhere.
func (m *Mover) Check(ctx context.Context, mv keeper.Move) (bool, error) {
	code, err := m.run(ctx, "check", mv)
	if code == ExitNotHere {
		return false, nil
	}
	return err == nil, err
}

// Env is the command's environment beyond vipd's own.
func Env(action string, mv keeper.Move, now time.Time) []string {
	addrs := make([]string, len(mv.Addresses))
	for i, p := range mv.Addresses {
		addrs[i] = p.String()
	}
	in := max(mv.Deadline.Sub(now), 0)
	return []string{
		"VIPD_MOVER_ACTION=" + action,
		"VIPD_GROUP=" + mv.Group,
		"VIPD_NODE=" + mv.Node,
		"VIPD_ADDRESSES=" + strings.Join(addrs, " "),
		"VIPD_LEASE=" + strconv.FormatInt(mv.Lease, 16),
		"VIPD_DEADLINE=" + mv.Deadline.UTC().Format(time.RFC3339Nano),
		"VIPD_DEADLINE_IN=" + strconv.FormatFloat(in.Seconds(), 'f', 3, 64),
	}
}

// run runs the command; code is its exit status (-1 if it did not exit).
func (m *Mover) run(ctx context.Context, action string, mv keeper.Move) (code int, err error) {
	now := m.now()
	argv := m.argv
	if !mv.Deadline.IsZero() {
		in := mv.Deadline.Sub(now)
		if in < minLeft || (mv.Live != nil && !mv.Live()) {
			return -1, fmt.Errorf("execmover: %s: the fence has passed (or is %v away)", action, in.Round(time.Millisecond))
		}
		if m.timeoutBin != "" {
			// Whole milliseconds, rounded down: never past the deadline
			// (and never 0, which timeout(1) reads as no timeout).
			ms := in.Milliseconds()
			argv = append([]string{m.timeoutBin, "--signal=KILL", fmt.Sprintf("%d.%03ds", ms/1000, ms%1000)}, argv...)
		}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), Env(action, mv, now)...)
	var out bytes.Buffer
	lw := &limited{w: &out, n: maxOutput} // one writer: exec then writes from one goroutine
	cmd.Stdout, cmd.Stderr = lw, lw
	// Its own process group, killed whole: helpers it started go too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 100 * time.Millisecond
	err = cmd.Run()
	if cmd.Process != nil {
		// Whatever it left running goes too: a helper that outlived it
		// could act after the fence (timeout(1) ends with the command).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		err = nil // it succeeded; a helper held its output open, and is killed
	}
	output := strings.TrimSpace(out.String())
	if output != "" {
		m.log.Debug("mover command output", "action", action, "output", output)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case ctx.Err() != nil:
		return -1, fmt.Errorf("execmover: %s: %w", action, context.Cause(ctx))
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
		if code == ExitNotHere && action == "check" {
			return code, nil
		}
		return code, fmt.Errorf("execmover: %s: exit status %d: %s", action, code, lastLine(output))
	}
	return -1, fmt.Errorf("execmover: %s: %w", action, err)
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// limited writes at most n bytes to w and drops the rest.
type limited struct {
	w *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
