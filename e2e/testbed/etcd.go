package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func (tb *Testbed) initialCluster() string {
	var parts []string
	for _, m := range tb.Etcd {
		parts = append(parts, fmt.Sprintf("%s=http://%s:%d", m.Name, m.IP, peerPort))
	}
	return strings.Join(parts, ",")
}

// Endpoints are the etcd client URLs.
func (tb *Testbed) Endpoints() []string {
	var eps []string
	for _, m := range tb.Etcd {
		eps = append(eps, m.ClientURL())
	}
	return eps
}

// ClientURL is the member's client URL.
func (m *EtcdMember) ClientURL() string { return fmt.Sprintf("http://%s:%d", m.IP, EtcdPort) }

// Start starts the member (initial-cluster-state new on a fresh data dir,
// which etcd ignores once the member has data).
func (m *EtcdMember) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc.Running() {
		return fmt.Errorf("%s already running", m.Name)
	}
	tb := m.tb
	p, err := startProc(m.NS, m.Name, tb.logPath(m.Name), nil, tb.bin("etcd"),
		"--name", m.Name,
		"--data-dir", filepath.Join(tb.Dir, m.Name+".etcd"),
		"--listen-peer-urls", fmt.Sprintf("http://%s:%d", m.IP, peerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://%s:%d", m.IP, peerPort),
		"--listen-client-urls", fmt.Sprintf("http://%s:%d,http://127.0.0.1:%d", m.IP, EtcdPort, EtcdPort),
		"--advertise-client-urls", m.ClientURL(),
		"--initial-cluster", tb.initialCluster(),
		"--initial-cluster-state", "new",
		"--initial-cluster-token", fmt.Sprintf("%s%d-%d", NamePrefix, os.Getpid(), tb.seq),
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--unsafe-no-fsync",
		"--log-level", "warn",
		"--log-outputs", "stderr",
	)
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// Proc is the member's current process (nil if never started).
func (m *EtcdMember) Proc() *Proc { m.mu.Lock(); defer m.mu.Unlock(); return m.proc }

// Stop stops the member gracefully (SIGTERM).
func (m *EtcdMember) Stop() error {
	if p := m.Proc(); p != nil {
		return p.Stop(5 * time.Second)
	}
	return nil
}

// Kill SIGKILLs the member.
func (m *EtcdMember) Kill() error {
	if p := m.Proc(); p != nil {
		return p.Kill()
	}
	return nil
}

// Healthy asks the member's /health from the client namespace.
func (m *EtcdMember) Healthy(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code, body, err := HTTPGet(ctx, m.tb.Client.NS, m.ClientURL()+"/health")
	return err == nil && code == 200 && strings.Contains(body, `"health":"true"`)
}

// StartEtcd starts all members and waits until every one reports healthy
// (over the LAN, from the client namespace).
func (tb *Testbed) StartEtcd(timeout time.Duration) error {
	t0 := time.Now()
	for _, m := range tb.Etcd {
		if err := m.Start(); err != nil {
			return err
		}
	}
	for _, m := range tb.Etcd {
		err := pollHTTP(tb.Client.NS, m.ClientURL()+"/health", timeout-time.Since(t0), func(code int, body string) bool {
			return code == 200 && strings.Contains(body, `"health":"true"`)
		})
		if err != nil {
			return fmt.Errorf("etcd %s: %w\n%s", m.Name, err, m.Proc().LogTail(20))
		}
	}
	tb.EtcdStartup = time.Since(t0)
	tb.logf("etcd cluster healthy after %v", tb.EtcdStartup.Round(time.Millisecond))
	return nil
}

// Freeze sends SIGSTOP to the member; Thaw sends SIGCONT. A frozen member
// keeps its sockets open and answers nothing, as a hung process would.
func (m *EtcdMember) Freeze() error {
	p := m.Proc()
	if p == nil {
		return fmt.Errorf("%s never started", m.Name)
	}
	return p.Signal(syscall.SIGSTOP)
}

// Thaw resumes a frozen member (no-op if it is not running).
func (m *EtcdMember) Thaw() error {
	p := m.Proc()
	if !p.Running() {
		return nil
	}
	return p.Signal(syscall.SIGCONT)
}

// FreezeEtcd SIGSTOPs every member, one right after the other: nobody can
// reach etcd until ThawEtcd.
func (tb *Testbed) FreezeEtcd() error {
	var errs []error
	for _, m := range tb.Etcd {
		if err := m.Freeze(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ThawEtcd SIGCONTs every running member.
func (tb *Testbed) ThawEtcd() error {
	var errs []error
	for _, m := range tb.Etcd {
		if err := m.Thaw(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillEtcd SIGKILLs every member (a frozen one too) and waits for each to
// be reaped; StartEtcd starts them again on their data.
func (tb *Testbed) KillEtcd() error {
	var errs []error
	for _, m := range tb.Etcd {
		if err := m.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
