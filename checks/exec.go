package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vipd/vipd/config"
)

// Exec check limits.
const (
	// maxExecOutput bounds the combined stdout and stderr an exec check
	// keeps for its debug log; the rest is discarded.
	maxExecOutput = 4 << 10
	// maxExecErrOutput bounds the output quoted in a failed run's error.
	maxExecErrOutput = 256
	// execWaitDelay bounds the wait for the output pipes after the command
	// exited or was killed (a background child that escaped the process
	// group may hold them open).
	execWaitDelay = time.Second
)

// execPath is the PATH of an exec check's command; the rest of vipd's
// environment is not passed on.
const execPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExitError is the error of an exec check whose command exited non-zero.
type ExitError struct {
	// Argv0 is the command.
	Argv0 string
	// Code is the exit status, or -1 if a signal ended it.
	Code int
	// Output is the start of the command's combined output, truncated.
	Output string
}

func (e *ExitError) Error() string {
	if e.Output != "" {
		return fmt.Sprintf("checks: exec %s: exit status %d: %s", e.Argv0, e.Code, e.Output)
	}
	return fmt.Sprintf("checks: exec %s: exit status %d", e.Argv0, e.Code)
}

// NewExec returns a Probe that runs argv (no shell: argv[0] is the program,
// and a name without '/' is looked up in vipd's PATH; a shell runs only if
// the operator names one) and passes iff it exits 0. The command runs:
//
//   - as username, with that user's groups. "" means "nobody" when vipd
//     runs as root, and vipd's own user otherwise (under the shipped unit,
//     the unprivileged "vipd"). It never runs as root unless username is
//     "root" (vipd must be root to switch users; if vipd runs as another
//     user, only that user is possible).
//   - in its own process group, in /, with only
//     PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin in
//     its environment, and stdin from /dev/null.
//   - until the run's timeout: then the whole process group is SIGKILLed.
//
// Its combined output (the first 4 KiB) is logged at debug level through
// the Runner's logger; a failed run's error quotes its start.
//
// The user is looked up when NewExec is called, so an unknown user is a
// startup error, not a check that fails forever.
func NewExec(argv []string, username string) (Probe, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("checks: exec check needs a command, got %q", argv)
	}
	if username == "" {
		username = config.DefaultExecUser
		if os.Geteuid() != 0 {
			// Already unprivileged: run as ourselves rather than fail
			// to switch to nobody.
			if u, err := user.Current(); err == nil {
				username = u.Username
			}
		}
	}
	cred, err := credentialFor(username)
	if err != nil {
		return nil, err
	}
	argv = slices.Clone(argv)
	return func(ctx context.Context) error {
		return runExec(ctx, argv, username, cred)
	}, nil
}

// credentialFor returns the credential to run a command as username, or
// nil when that is the user vipd already runs as.
func credentialFor(username string) (*syscall.Credential, error) {
	u, err := user.Lookup(username)
	if err != nil {
		return nil, fmt.Errorf("checks: exec check user %q: %w", username, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("checks: exec check user %q: non-numeric uid %q or gid %q", username, u.Uid, u.Gid)
	}
	euid := os.Geteuid()
	if uint64(euid) == uid {
		return nil, nil
	}
	if euid != 0 {
		return nil, fmt.Errorf("checks: exec check user %q (uid %d): vipd runs as uid %d, not root, and cannot switch users", username, uid, euid)
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

func runExec(ctx context.Context, argv []string, username string, cred *syscall.Credential) error {
	log := logFrom(ctx)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{execPath}
	out := &limitedBuffer{max: maxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	// On timeout kill the whole process group, not only argv[0]: a shell
	// script's children must not outlive the run.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execWaitDelay
	start := time.Now()
	err := cmd.Run()
	output := out.String()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	log.Debug("exec check ran", "argv", argv, "user", username, "exit", code,
		"took", time.Since(start).Round(time.Millisecond), "output", output)
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("checks: exec %s: killed the process group after the timeout: %w", argv[0], ctx.Err())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return &ExitError{Argv0: argv[0], Code: ee.ExitCode(), Output: truncate(string(bytes.TrimSpace([]byte(output))), maxExecErrOutput)}
	case errors.Is(err, exec.ErrWaitDelay):
		// Exited 0, but something it started kept the output open.
		if code == 0 {
			return nil
		}
		return &ExitError{Argv0: argv[0], Code: code, Output: truncate(output, maxExecErrOutput)}
	default:
		return fmt.Errorf("checks: exec %s: %w", argv[0], err)
	}
}

// limitedBuffer keeps the first max bytes written to it and counts the
// rest. os/exec writes to it from its copying goroutine.
type limitedBuffer struct {
	mu      sync.Mutex
	max     int
	buf     bytes.Buffer
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		b.buf.Write(p[:room])
	}
	b.dropped += len(p) - max(room, 0)
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("%s…(%d more bytes dropped)", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}
