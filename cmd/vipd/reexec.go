package main

// Re-execution in place: `systemctl reload vipd` (SIGUSR2) replaces the
// running vipd image with the binary now installed, re-reading the
// configuration, without moving a VIP (docs/design.md §2.10). The running
// image checks the new binary and configuration first, then detaches its
// keeper (no VIP removed, no key deleted, the lease not revoked) and execs
// the binary in the same process, handing over the lease and claims (an
// unlinked file's descriptor) and the one-vipd-per-host lock (its
// descriptor). If the exec
// fails, this image adopts what it handed over and goes on.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/runlock"
	"github.com/vipd/vipd/keeper"
)

// Environment variables through which one image hands over to the next.
const (
	envHandoffFD = "VIPD_HANDOFF_FD"
	envLockFD    = "VIPD_LOCK_FD"
)

// reexec is a re-execution the running image was asked for: the binary,
// and what the keeper handed over once it detached.
type reexec struct {
	bin     string
	handoff keeper.Handoff
}

// featureReexec is what `vipd version --features` prints for a binary
// that takes over a handoff: an older one would not (it would refuse the
// handed-over lock and exit, a crash for the node).
const featureReexec = "reexec-handoff-1"

// preflightTimeout bounds each check of the new binary.
const preflightTimeout = 10 * time.Second

// preflight checks that bin runs, can take over a handoff, and accepts the
// configuration at cfgPath, and that the configuration keeps what a handoff
// cannot carry over; it returns bin's version. The keeper detaches only
// after this: a binary that cannot start must not be handed the VIPs.
func preflight(ctx context.Context, bin, cfgPath string, running config.Config) (string, error) {
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return strings.TrimSpace(string(out)), nil
	}
	v, err := run("version", "--features")
	if err != nil {
		return "", err
	}
	first, rest, _ := strings.Cut(v, "\n")
	if !slices.Contains(strings.Fields(strings.TrimPrefix(rest, "features:")), featureReexec) {
		return "", fmt.Errorf("%s (%s) cannot take over in place: use `systemctl restart vipd` (the VIPs move)", bin, first)
	}
	out, err := run("check", "--config", cfgPath, "--handoff")
	if err != nil {
		return "", err
	}
	// The settings as the new binary reads the file (it may know keys,
	// or defaults, that this one does not).
	var next handoffKeys
	_, line, found := strings.Cut(out, "handoff: ")
	line, _, _ = strings.Cut(line, "\n")
	if !found || json.Unmarshal([]byte(line), &next) != nil {
		return "", fmt.Errorf("%s check --handoff: no settings line in %q", bin, out)
	}
	if err := handoverable(handoffKeysOf(running), next); err != nil {
		return "", err
	}
	return strings.TrimPrefix(first, "vipd "), nil
}

// handoffKeys are the settings a handoff cannot carry over a change of:
// the lease and keys were made with them, the membership records written
// for them.
type handoffKeys struct {
	Node       string        `json:"node"`
	Prefix     string        `json:"etcd_prefix"`
	LeaseTTL   time.Duration `json:"etcd_lease_ttl"`
	PeerListen string        `json:"peer_listen"`
	Failsafe   bool          `json:"peer_failsafe"`
}

func handoffKeysOf(c config.Config) handoffKeys {
	return handoffKeys{Node: c.Node, Prefix: c.Etcd.Prefix, LeaseTTL: c.Etcd.LeaseTTL, PeerListen: c.Peer.Listen, Failsafe: c.Peer.Failsafe}
}

// handoverable says whether a node running with cfg can hand over to one
// with next: the lease, its keys and the membership records must mean the
// same to both.
func handoverable(cfg, next handoffKeys) error {
	var changed []string
	add := func(key string, a, b any) {
		if a != b {
			changed = append(changed, fmt.Sprintf("%s (%v → %v)", key, a, b))
		}
	}
	add("node", cfg.Node, next.Node)
	add("etcd.prefix", cfg.Prefix, next.Prefix)
	add("etcd.lease_ttl", cfg.LeaseTTL, next.LeaseTTL)
	add("peer.listen", cfg.PeerListen, next.PeerListen)
	add("peer.failsafe", cfg.Failsafe, next.Failsafe)
	if len(changed) > 0 {
		return fmt.Errorf("the new configuration changes %s, which a re-execution cannot carry over: use `systemctl restart vipd` (the VIPs move)", strings.Join(changed, ", "))
	}
	return nil
}

// hooksWait bounds how long a re-execution waits for running notify hooks.
const hooksWait = 30 * time.Second

// selfPath is the binary to re-execute: the absolute path this one was
// started as (the unit's /usr/bin/vipd: a symlink there is followed
// anew), else the executable (os.Executable drops the " (deleted)" /proc
// shows for a replaced one).
func selfPath() (string, error) {
	if filepath.IsAbs(os.Args[0]) {
		return os.Args[0], nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find the vipd binary: %w", err)
	}
	return p, nil
}

// reexecLoop waits for SIGUSR2 and, if the new binary and configuration
// pass preflight and the keeper can hand over, asks run to re-execute:
// request records the binary, then the keeper detaches and ctx is
// cancelled by stop.
func reexecLoop(ctx context.Context, cfgPath string, running config.Config, k *keeper.Keeper, log *slog.Logger, request func(bin string) bool) {
	usr2 := make(chan os.Signal, 1)
	// Never signal.Stop: a second reload may come while this image hands
	// over; once nothing reads the channel, further ones are dropped.
	signal.Notify(usr2, syscall.SIGUSR2)
	for {
		select {
		case <-ctx.Done():
			return
		case <-usr2:
		}
		bin, err := selfPath()
		var next string
		if err == nil {
			next, err = preflight(ctx, bin, cfgPath, running)
		}
		if err == nil {
			err = waitHooks(ctx, k)
		}
		if err == nil {
			err = k.CanDetach()
		}
		if err != nil {
			log.Error("re-execution refused; this vipd goes on", "err", err)
			continue
		}
		log.Info("re-executing in place: handing the VIPs over to the next vipd image", "binary", bin, "from_version", version, "to_version", next)
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
		if request(bin) {
			return
		}
	}
}

// waitHooks waits until no notify hook runs (at most hooksWait): a hook
// running across the exec would lose its timeout and its output.
func waitHooks(ctx context.Context, k *keeper.Keeper) error {
	deadline := time.Now().Add(hooksWait)
	for k.HooksRunning() > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d notify hooks still running after %v", k.HooksRunning(), hooksWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// execSelf execs req.bin in this process with the handoff in an unlinked
// file of dir (the runtime directory; a file, not a memfd, which the
// unit's system call filter may not allow) and the lock's descriptor kept
// open. It returns only if the exec failed.
func execSelf(req *reexec, lk *runlock.Lock, dir string) error {
	data, err := json.Marshal(req.handoff)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".handoff-*")
	if err != nil {
		return fmt.Errorf("handoff file: %w", err)
	}
	defer f.Close()
	os.Remove(f.Name()) // only the descriptor is handed on
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("handoff file: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("handoff file: %w", err)
	}
	for _, fd := range []uintptr{f.Fd(), lk.Fd()} {
		if _, err := unix.FcntlInt(fd, unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keeping descriptor %d open across exec: %w", fd, err)
		}
	}
	env := []string{envHandoffFD + "=" + strconv.Itoa(int(f.Fd())), envLockFD + "=" + strconv.Itoa(int(lk.Fd()))}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, envHandoffFD+"=") && !strings.HasPrefix(e, envLockFD+"=") {
			env = append(env, e)
		}
	}
	err = syscall.Exec(req.bin, os.Args, env)
	// Still here: the exec failed. Close-on-exec again for the lock.
	_, _ = unix.FcntlInt(lk.Fd(), unix.F_SETFD, unix.FD_CLOEXEC)
	return fmt.Errorf("exec %s: %w", req.bin, err)
}

// inherited takes what the previous image handed over through the
// environment, if it did: the lock and the handoff. The variables are
// removed, so that hooks and checks do not see them.
func inherited(log *slog.Logger, lockDir string) (*runlock.Lock, *keeper.Handoff) {
	lockFD, hasLock := os.LookupEnv(envLockFD)
	handoffFD, hasHandoff := os.LookupEnv(envHandoffFD)
	os.Unsetenv(envLockFD)
	os.Unsetenv(envHandoffFD)
	var lk *runlock.Lock
	if hasLock {
		n, err := strconv.Atoi(lockFD)
		if err == nil && n > 2 {
			lk, err = runlock.Inherit(uintptr(n), lockDir) // closes it on failure
		} else if err == nil {
			err = fmt.Errorf("%s=%d: not a handed-over descriptor", envLockFD, n)
		}
		if err != nil {
			log.Warn("the lock handed over by the previous vipd image is unusable; taking it afresh", "err", err)
		}
	}
	if !hasHandoff {
		return lk, nil
	}
	h, err := readHandoff(handoffFD)
	if err != nil {
		log.Warn("the handoff of the previous vipd image is unreadable; starting afresh", "err", err)
		return lk, nil
	}
	return lk, h
}

func readHandoff(fdText string) (*keeper.Handoff, error) {
	n, err := strconv.Atoi(fdText)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", envHandoffFD, fdText)
	}
	f := os.NewFile(uintptr(n), "vipd-handoff")
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, err
	}
	var h keeper.Handoff
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, err
	}
	if h.Node == "" {
		return nil, errors.New("empty handoff")
	}
	return &h, nil
}
