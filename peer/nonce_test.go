package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

func TestNonceStore(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	s := newNonceStore(fake, nonceTTL, 3)

	t.Run("single use", func(t *testing.T) {
		n := s.issue()
		if !s.consume(n) {
			t.Fatal("fresh nonce refused")
		}
		if s.consume(n) {
			t.Fatal("nonce accepted twice")
		}
		if s.consume(newNonce()) {
			t.Fatal("unissued nonce accepted")
		}
	})
	t.Run("lifetime", func(t *testing.T) {
		a, b := s.issue(), s.issue()
		fake.Advance(nonceTTL)
		if !s.consume(a) {
			t.Error("nonce refused at exactly its lifetime")
		}
		fake.Advance(time.Nanosecond)
		if s.consume(b) {
			t.Error("nonce accepted past its lifetime")
		}
	})
	t.Run("expired dropped on issue", func(t *testing.T) {
		s.issue()
		s.issue()
		fake.Advance(nonceTTL + time.Nanosecond)
		s.issue()
		if got := s.outstanding(); got != 1 {
			t.Errorf("%d outstanding, want 1", got)
		}
		fake.Advance(nonceTTL + time.Nanosecond)
	})
	t.Run("oldest evicted at the cap", func(t *testing.T) {
		ns := []nonce{s.issue(), s.issue(), s.issue(), s.issue()}
		if got := s.outstanding(); got != 3 {
			t.Errorf("%d outstanding, want the cap 3", got)
		}
		if s.consume(ns[0]) {
			t.Error("oldest nonce survived the cap")
		}
		for _, n := range ns[1:] {
			if !s.consume(n) {
				t.Error("a newer nonce was evicted")
			}
		}
	})
}

func TestClientNoncePool(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	c := NewClient(ClientConfig{Node: testNode, Key: testKey(), Clock: fake})
	defer c.Close()
	var put []string
	for range poolSize + 2 {
		n := heldNonce{value: newNonce().String(), verified: true, got: fake.Now()}
		put = append(put, n.value)
		c.put("a:1", n)
		fake.Advance(100 * time.Millisecond)
	}
	// The two oldest were dropped; the rest come out oldest first.
	for i, want := range put[2:4] {
		if n, ok := c.take("a:1"); !ok || n.value != want {
			t.Fatalf("take %d = %v, %v; want %s", i, n.value, ok, want)
		}
	}
	if _, ok := c.take("b:1"); ok {
		t.Error("took a nonce held for another endpoint")
	}
	fake.Advance(poolMaxAge)
	if n, ok := c.take("a:1"); ok {
		t.Errorf("took %s after the pool age", n.value)
	}
}

// syncBuffer is a log sink for a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		m := map[string]any{}
		json.Unmarshal([]byte(l), &m)
		out = append(out, m)
	}
	return out
}

func TestRefusalLogRateLimited(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	var buf syncBuffer
	var counted int
	s := NewServer(ServerConfig{Key: testKey(), Clock: fake,
		Log:       slog.New(slog.NewJSONHandler(&buf, nil)),
		OnRefused: func(string) { counted++ },
		Handler:   func(context.Context, string, string, json.RawMessage) (any, error) { return nil, nil },
	})
	req := httptest.NewRequest("POST", pathCall+"echo", nil)
	req.RemoteAddr = "192.0.2.7:4711"
	req.Header.Set(hdrNode, "node-x")
	for range 3 {
		s.refused(req, ReasonBadMAC, "")
	}
	s.refused(req, ReasonMalformed, "nonce")
	fake.Advance(refusalLogEvery)
	s.refused(req, ReasonBadMAC, "")

	if counted != 5 {
		t.Errorf("OnRefused called %d times, want 5", counted)
	}
	lines := buf.lines()
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3: %v", len(lines), lines)
	}
	first, last := lines[0], lines[2]
	if first["level"] != "WARN" || first["reason"] != ReasonBadMAC || first["remote"] != "192.0.2.7:4711" || first["node"] != "node-x" {
		t.Errorf("first line %v lacks level, reason, remote or node", first)
	}
	if lines[1]["reason"] != ReasonMalformed {
		t.Errorf("another reason's line was held back: %v", lines[1])
	}
	if last["reason"] != ReasonBadMAC || last["held_back"] != float64(2) {
		t.Errorf("line after a second = %v, want bad_mac with held_back 2", last)
	}
}
