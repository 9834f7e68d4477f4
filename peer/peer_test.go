package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

func TestRoundTrip(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	ctx := context.Background()

	var got echoReply
	if err := c.Call(ctx, h.addr, "echo", map[string]int{"lease": 42}, &got); err != nil {
		t.Fatal(err)
	}
	want := echoReply{From: testNode, Op: "echo", Body: json.RawMessage(`{"lease":42}`)}
	if got.From != want.From || got.Op != want.Op || !bytes.Equal(got.Body, want.Body) {
		t.Errorf("reply = %+v (body %s), want %+v (body %s)", got, got.Body, want, want.Body)
	}
	// A nil request is sent as JSON null; a nil resp discards the answer.
	if err := c.Call(ctx, h.addr, "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	h.wantCalls(2)
	h.wantRefusals(map[string]int{})
}

func TestSteadyStateOneRoundTrip(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	for i := range 5 {
		if err := c.Call(context.Background(), h.addr, "echo", i, nil); err != nil {
			t.Fatal(err)
		}
	}
	calls, fetches := rec.split()
	if len(calls) != 5 || fetches != 1 {
		t.Errorf("5 calls took %d call requests and %d nonce fetches, want 5 and 1", len(calls), fetches)
	}
}

func TestConcurrentCalls(t *testing.T) {
	const n = 50
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	// The first burst fetches nonces; the second draws on those the
	// first one's answers left, which no two calls may share.
	for burst := range 2 {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var got echoReply
				if err := c.Call(context.Background(), h.addr, "echo", i, &got); err != nil {
					t.Errorf("burst %d call %d: %v", burst, i, err)
					return
				}
				if string(got.Body) != fmt.Sprint(i) {
					t.Errorf("burst %d call %d answered with body %s", burst, i, got.Body)
				}
			})
		}
		wg.Wait()
	}
	// One request per call: no call met a used nonce and retried.
	calls, fetches := rec.split()
	if len(calls) != 2*n {
		t.Errorf("%d calls made %d call requests, want %d", 2*n, len(calls), 2*n)
	}
	if fetches > 2*n-poolSize {
		t.Errorf("%d nonce fetches: the second burst used no held nonce", fetches)
	}
	seen := map[string]bool{}
	for _, s := range calls {
		v := s.header.Get(hdrNonce)
		if seen[v] {
			t.Errorf("nonce %s sent twice", v)
		}
		seen[v] = true
	}
	h.wantCalls(2 * n)
	h.wantRefusals(map[string]int{})
}

func TestWrongKeyRefused(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, otherKey())
	err := c.Call(context.Background(), h.addr, "echo", 1, nil)
	if !errors.Is(err, ErrRefused) || errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
	if !strings.Contains(err.Error(), ReasonBadMAC) {
		t.Errorf("err = %v, want the reason %s in it", err, ReasonBadMAC)
	}
	h.wantCalls(0)
	h.wantRefusals(map[string]int{ReasonBadMAC: 1})
}

func TestReplayRefused(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	if err := c.Call(context.Background(), h.addr, "echo", "renew", nil); err != nil {
		t.Fatal(err)
	}
	calls, _ := rec.split()
	if len(calls) != 1 {
		t.Fatalf("recorded %d calls, want 1", len(calls))
	}
	orig := calls[0]
	for range 2 {
		status, header, body := postRaw(t, orig.method, orig.url, orig.header, orig.body)
		wantRefusal(t, status, body, ReasonUnknownNonce)
		if header.Get(hdrNextNonce) != "" {
			t.Error("a refusal handed out a nonce")
		}
	}
	h.wantCalls(1)
	h.wantRefusals(map[string]int{ReasonUnknownNonce: 2})
}

// fetchRaw gets a nonce with a plain client.
func fetchRaw(t *testing.T, addr string) string {
	t.Helper()
	body, _ := json.Marshal(nonceRequest{Challenge: newNonce().String()})
	status, _, out := postRaw(t, http.MethodPost, "http://"+addr+pathNonce, nil, body)
	var nr nonceResponse
	if status != http.StatusOK || json.Unmarshal(out, &nr) != nil {
		t.Fatalf("nonce fetch: %d %s", status, out)
	}
	return nr.Nonce
}

// signedHeader returns the headers of a call of op with body under key.
func signedHeader(key []byte, op, n string, body []byte) http.Header {
	h := http.Header{}
	h.Set(hdrNode, testNode)
	h.Set(hdrNonce, n)
	h.Set(hdrMAC, fmt.Sprintf("%x", requestMAC(key, testNode, op, n, body)))
	return h
}

func TestTamperedBodyRefused(t *testing.T) {
	h := startServer(t)
	url := "http://" + h.addr + pathCall + "echo"
	n := fetchRaw(t, h.addr)
	good := []byte(`{"lease":"7"}`)
	header := signedHeader(testKey(), "echo", n, good)

	status, _, body := postRaw(t, http.MethodPost, url, header, []byte(`{"lease":"8"}`))
	wantRefusal(t, status, body, ReasonBadMAC)
	h.wantCalls(0)

	// The forged request did not burn the nonce: the genuine one still
	// goes through, once, and its answer is MAC'd for it.
	status, rh, body := postRaw(t, http.MethodPost, url, header, good)
	if status != http.StatusOK {
		t.Fatalf("genuine request after a forged one: %d %s", status, body)
	}
	want := responseMAC(testKey(), testNode, "echo", n, status, body, rh.Get(hdrNextNonce))
	if got, _ := parseMAC(rh.Get(hdrMAC)); !bytes.Equal(got, want) {
		t.Error("response MAC does not verify")
	}
	h.wantCalls(1)
	h.wantRefusals(map[string]int{ReasonBadMAC: 1})
}

func TestTamperedInFlightRefused(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	rec.mutate = func(path string, body []byte) []byte {
		if strings.HasPrefix(path, pathCall) {
			return bytes.Replace(body, []byte("10"), []byte("99"), 1)
		}
		return body
	}
	err := c.Call(context.Background(), h.addr, "echo", map[string]int{"ttl": 10}, nil)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
	h.wantCalls(0)
	h.wantRefusals(map[string]int{ReasonBadMAC: 1})
}

func TestNonceExpiry(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	h := startServer(t, func(c *ServerConfig) { c.Clock = fake })
	c := newTestClient(t, testKey())
	rec := record(c)
	ctx := context.Background()
	if err := c.Call(ctx, h.addr, "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
	// The client holds the nonce the answer brought; by the server's
	// clock it is now too old.
	fake.Advance(nonceTTL + time.Millisecond)
	if err := c.Call(ctx, h.addr, "echo", 2, nil); err != nil {
		t.Fatalf("call after expiry: %v", err)
	}
	calls, fetches := rec.split()
	if len(calls) != 3 || fetches != 2 {
		t.Errorf("made %d call requests and %d fetches, want 3 (one refused) and 2", len(calls), fetches)
	}
	h.wantCalls(2)
	h.wantRefusals(map[string]int{ReasonUnknownNonce: 1})

	// Within the lifetime the held nonce is used as is.
	fake.Advance(nonceTTL)
	if err := c.Call(ctx, h.addr, "echo", 3, nil); err != nil {
		t.Fatal(err)
	}
	if calls, fetches := rec.split(); len(calls) != 4 || fetches != 2 {
		t.Errorf("made %d call requests and %d fetches, want 4 and 2", len(calls), fetches)
	}
	h.wantRefusals(map[string]int{ReasonUnknownNonce: 1})
}

func TestUnauthenticatedRefused(t *testing.T) {
	h := startServer(t)
	call := "http://" + h.addr + pathCall + "echo"
	n := fetchRaw(t, h.addr)
	good := signedHeader(testKey(), "echo", n, []byte(`1`))
	with := func(k, v string) http.Header {
		x := good.Clone()
		x.Set(k, v)
		return x
	}
	for _, tc := range []struct {
		name   string
		method string
		url    string
		header http.Header
		body   string
		reason string
	}{
		{"no headers", "POST", call, nil, `1`, ReasonMalformed},
		{"GET", "GET", call, good, ``, ReasonMalformed},
		{"unknown path", "POST", "http://" + h.addr + "/v2/call/echo", good, `1`, ReasonMalformed},
		{"bad op", "POST", "http://" + h.addr + pathCall + "-echo", good, `1`, ReasonMalformed},
		{"bad node", "POST", call, with(hdrNode, "a b"), `1`, ReasonMalformed},
		{"uppercase nonce", "POST", call, with(hdrNonce, strings.ToUpper(n)), `1`, ReasonMalformed},
		{"short mac", "POST", call, with(hdrMAC, "abcd"), `1`, ReasonMalformed},
		{"not JSON", "POST", call, good, `{`, ReasonMalformed},
		{"too large", "POST", call, good, `"` + strings.Repeat("x", maxBody) + `"`, ReasonMalformed},
		{"nonce without challenge", "POST", "http://" + h.addr + pathNonce, nil, `{}`, ReasonMalformed},
		{"other node", "POST", call, with(hdrNode, "node-b"), `1`, ReasonBadMAC},
		{"signed for another op", "POST", "http://" + h.addr + pathCall + "fail", good, `1`, ReasonBadMAC},
		{"unissued nonce", "POST", call, signedHeader(testKey(), "echo", newNonce().String(), []byte(`1`)), `1`, ReasonUnknownNonce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.refusals()[tc.reason]
			status, header, body := postRaw(t, tc.method, tc.url, tc.header, []byte(tc.body))
			wantRefusal(t, status, body, tc.reason)
			if header.Get(hdrMAC) != "" {
				t.Error("refusal carries a MAC")
			}
			if got := h.refusals()[tc.reason]; got != before+1 {
				t.Errorf("%s counted %d times, want %d", tc.reason, got, before+1)
			}
		})
	}
	h.wantCalls(0)
	// None of the refusals burnt the issued nonce.
	status, _, body := postRaw(t, "POST", call, good, []byte(`1`))
	if status != http.StatusOK {
		t.Errorf("genuine request after refusals: %d %s", status, body)
	}
}

func TestHandlerErrors(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	ctx := context.Background()

	err := c.Call(ctx, h.addr, "fail", nil, nil)
	if !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "boom: disk on fire") {
		t.Errorf("err = %v, want ErrRemote with the handler's text", err)
	}
	err = c.Call(ctx, h.addr, "nope", nil, nil)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrUnknownOp) {
		t.Errorf("err = %v, want ErrRefused and ErrUnknownOp", err)
	}
	// Both answers were authenticated and brought a next nonce: one fetch.
	if _, fetches := rec.split(); fetches != 1 {
		t.Errorf("%d nonce fetches, want 1", fetches)
	}
	h.wantCalls(2)
	h.wantRefusals(map[string]int{ReasonUnknownOp: 1})
}

func TestAnonymousFloodKeepsEarnedNonces(t *testing.T) {
	h := startServer(t)
	c := newTestClient(t, testKey())
	rec := record(c)
	ctx := context.Background()
	if err := c.Call(ctx, h.addr, "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
	for range maxNonces + 10 {
		h.srv.open.issue()
	}
	if got := h.srv.open.outstanding(); got != maxNonces {
		t.Errorf("%d anonymous nonces outstanding, want the cap %d", got, maxNonces)
	}
	if err := c.Call(ctx, h.addr, "echo", 2, nil); err != nil {
		t.Fatal(err)
	}
	if calls, fetches := rec.split(); len(calls) != 2 || fetches != 1 {
		t.Errorf("made %d call requests and %d fetches, want 2 and 1", len(calls), fetches)
	}
	h.wantRefusals(map[string]int{})
}

func TestServeStops(t *testing.T) {
	base := runtime.NumGoroutine()
	h := startServer(t)
	c := newTestClient(t, testKey())
	ctx := context.Background()
	if err := c.Call(ctx, h.addr, "echo", 1, nil); err != nil { // leaves a kept-alive connection
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", h.addr) // a connection that never sends
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	defer c.Close()
	h.srv.grace = 200 * time.Millisecond // the idle connection waits it out

	blocked := make(chan error, 1)
	go func() { blocked <- c.Call(ctx, h.addr, "block", nil, nil) }()
	h.waitStarted(blocked)

	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Serve took %v to stop", took)
	}
	// The handler saw ctx done and its answer still went out.
	if err := <-blocked; !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("blocked call: %v, want ErrRemote with context canceled", err)
	}
	if conn, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		conn.Close()
		t.Error("listener still accepts after Serve returned")
	}
	// Serve closed the connections it had, idle ones included: the
	// client's kept-alive one (else its read loop would outlive the
	// server, seen below) and the one that never sent.
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("silent connection read %v, want EOF: the server kept it open", err)
	}

	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before the server started:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeWaitsForHandlers(t *testing.T) {
	h := startServer(t)
	h.srv.grace = 10 * time.Millisecond
	c := newTestClient(t, testKey())
	lingering := make(chan error, 1)
	go func() { lingering <- c.Call(context.Background(), h.addr, "linger", nil, nil) }()
	h.waitStarted(lingering)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if !h.lingered.Load() {
		t.Error("Serve returned before a handler that outlived the grace")
	}
}

func TestServeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"short key", ServerConfig{Key: []byte("short"), Handler: func(context.Context, string, string, json.RawMessage) (any, error) { return nil, nil }}, "5 bytes, need at least 32"},
		{"no handler", ServerConfig{Key: testKey()}, "no handler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = NewServer(tc.cfg).Serve(context.Background(), ln)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Serve = %v, want an error with %q", err, tc.want)
			}
			if _, err := ln.Accept(); err == nil {
				t.Error("Serve left the listener open")
			}
		})
	}
}

func TestClientConfigErrors(t *testing.T) {
	h := startServer(t)
	for _, tc := range []struct {
		name     string
		node     string
		key      []byte
		endpoint string
		op       string
	}{
		{"short key", testNode, []byte("short"), h.addr, "echo"},
		{"bad node", "node a", testKey(), h.addr, "echo"},
		{"bad op", testNode, testKey(), h.addr, "echo/x"},
		{"no port", testNode, testKey(), "127.0.0.1", "echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClient(ClientConfig{Node: tc.node, Key: tc.key})
			defer c.Close()
			if err := c.Call(context.Background(), tc.endpoint, tc.op, nil, nil); err == nil || !strings.HasPrefix(err.Error(), "peer: ") {
				t.Errorf("Call = %v, want a peer: error", err)
			}
		})
	}
	h.wantCalls(0)
	h.wantRefusals(map[string]int{})
}

func TestClientTimeout(t *testing.T) {
	h := startServer(t)
	c := NewClient(ClientConfig{Node: testNode, Key: testKey(), Timeout: 100 * time.Millisecond})
	defer c.Close()
	start := time.Now()
	err := c.Call(context.Background(), h.addr, "block", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("call took %v with a 100ms timeout", took)
	}
}
