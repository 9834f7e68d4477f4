package testbed

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/nscheck"
)

// Proc is a process the testbed started inside one of its namespaces
// (through `ip netns exec`, which execs in place: the PID is the program's).
type Proc struct {
	Name    string // e.g. "vipd@web-node-1"
	LogPath string // combined stdout/stderr (stderr only if stdout is piped)
	Started time.Time

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	mu   sync.Mutex
	err  error // exit status, after done
}

// startProc runs argv inside ns, appending output to logPath. If stdout is
// non-nil it receives the program's stdout instead of the log.
func startProc(ns *Netns, name, logPath string, stdout io.Writer, argv ...string) (*Proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "==== %s start %s: %s (netns %s)\n", time.Now().UTC().Format(time.RFC3339Nano), name, strings.Join(argv, " "), ns.Name)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	cmd.Env = append(os.Environ(), nscheck.HostEnv+"="+strconv.FormatUint(hostIno, 10))
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = lf
	// Killed with us if the test binary dies; leftovers are also swept.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, Started: time.Now(), cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		fmt.Fprintf(lf, "==== %s exit %s: %v\n", time.Now().UTC().Format(time.RFC3339Nano), name, exitString(err))
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitErr is the exit status (nil for status 0); valid after Done.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the process (no-op once it has exited).
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return errors.New(p.Name + " is not running")
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Stop sends SIGTERM (and SIGCONT, in case it is frozen), waits up to
// timeout, then SIGKILLs. It returns an error if SIGKILL was needed.
func (p *Proc) Stop(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.Wait(timeout); err == nil {
		return nil
	}
	p.Kill()
	return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, timeout)
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Proc) Kill() error {
	if !p.Running() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	return p.Wait(10 * time.Second)
}

// LogTail returns the last n lines of the process log.
func (p *Proc) LogTail(n int) string { return tailFile(p.LogPath, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
