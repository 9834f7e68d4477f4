package checks

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	p, err := NewProbe(config.Check{Type: "tcp", Address: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := runProbe(t, p, 5*time.Second); err != nil {
		t.Fatalf("listening port: %v", err)
	}
	recv(t, accepted, "the connection")

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	err = runProbe(t, NewTCP(addr), 5*time.Second)
	if err == nil || !strings.HasPrefix(err.Error(), "checks: tcp connect "+addr) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: err = %v, want a checks: tcp connect error naming the address and refused", err)
	}

	// A run whose deadline has passed fails with the deadline.
	ctx, cancel := context.WithTimeout(t.Context(), -time.Second)
	defer cancel()
	err = NewTCP(ln.Addr().String())(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired deadline: err = %v, want DeadlineExceeded", err)
	}
}
