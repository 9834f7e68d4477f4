package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeDaemon struct {
	ready, alive atomic.Bool
	mu           sync.Mutex
	summary      string
}

func (f *fakeDaemon) Ready() (bool, string) { return f.ready.Load(), "test" }
func (f *fakeDaemon) Summary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.summary
}
func (f *fakeDaemon) Alive(time.Duration) bool { return f.alive.Load() }

// TestSystemdNotify runs systemdLoop against a datagram socket standing in
// for systemd's NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "300000") // 300ms: fed every 100ms while alive
	t.Setenv("WATCHDOG_PID", "")

	d := &fakeDaemon{summary: "VI_1=BACKUP; lease live"}
	d.alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { systemdLoop(ctx, d, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	defer func() { cancel(); <-done }()

	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-msgs:
				if m == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within %v", want, within)
			}
		}
	}
	expect("STATUS=VI_1=BACKUP; lease live", 2*time.Second)
	expect("WATCHDOG=1", time.Second)
	d.ready.Store(true)
	expect("READY=1", time.Second)

	// A hung group loop: the watchdog is no longer fed.
	d.alive.Store(false)
	time.Sleep(150 * time.Millisecond)
	for len(msgs) > 0 {
		<-msgs
	}
	deadline := time.After(500 * time.Millisecond)
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, "WATCHDOG") {
				t.Fatalf("watchdog fed while a loop is hung: %q", m)
			}
		case <-deadline:
			return
		}
	}
}
