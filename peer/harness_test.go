package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testNode = "node-a"

func testKey() []byte            { return []byte("c2VjcmV0LWtleS1mb3ItdGhlLXBlZXItdGVzdHMK") }
func otherKey() []byte           { return []byte("b3RoZXIta2V5LW5vdC10aGUtY2x1c3RlcnMta2V5") }
func testTimeout() time.Duration { return 2 * time.Second }

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// harness is a Server on a loopback port with an echoing handler that
// counts its calls and the refusals.
type harness struct {
	t       *testing.T
	srv     *Server
	addr    string
	calls   atomic.Int64
	started chan struct{} // one send per "block" or "linger" call that began
	// lingered is set when a "linger" call returns, well after its ctx
	// was done.
	lingered atomic.Bool

	mu      sync.Mutex
	refused map[string]int

	stop func() error // cancels Serve and returns its result
}

// echoReply is what the "echo" op answers.
type echoReply struct {
	From string          `json:"from"`
	Op   string          `json:"op"`
	Body json.RawMessage `json:"body"`
}

func startServer(t *testing.T, opts ...func(*ServerConfig)) *harness {
	t.Helper()
	h := &harness{t: t, refused: map[string]int{}, started: make(chan struct{}, 16)}
	cfg := ServerConfig{Key: testKey(), Handler: h.handle, Log: testLog(t), OnRefused: h.countRefusal}
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	h.srv = NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(ctx, ln) }()
	h.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("Serve did not return within 5s of cancel")
		}
	})
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

func (h *harness) handle(ctx context.Context, from, op string, body json.RawMessage) (any, error) {
	h.calls.Add(1)
	switch op {
	case "echo":
		return echoReply{From: from, Op: op, Body: body}, nil
	case "fail":
		return nil, errors.New("boom: disk on fire")
	case "block":
		h.started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	case "linger":
		h.started <- struct{}{}
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond)
		h.lingered.Store(true)
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("op %s: %w", op, ErrUnknownOp)
}

// waitStarted waits until a "block" or "linger" handler runs, failing the
// test if the call ends first or nothing happens.
func (h *harness) waitStarted(call <-chan error) {
	h.t.Helper()
	select {
	case <-h.started:
	case err := <-call:
		h.t.Fatalf("call ended before its handler ran: %v", err)
	case <-time.After(5 * time.Second):
		h.t.Fatal("handler did not start")
	}
}

func (h *harness) countRefusal(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refused[reason]++
}

// refusals returns a copy of the refusal counts.
func (h *harness) refusals() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.refused {
		out[k] = v
	}
	return out
}

func (h *harness) wantRefusals(want map[string]int) {
	h.t.Helper()
	got := h.refusals()
	if len(got) != len(want) {
		h.t.Errorf("refusals = %v, want %v", got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			h.t.Errorf("refusals = %v, want %v", got, want)
			return
		}
	}
}

func (h *harness) wantCalls(n int64) {
	h.t.Helper()
	if got := h.calls.Load(); got != n {
		h.t.Errorf("handler called %d times, want %d", got, n)
	}
}

func newTestClient(t *testing.T, key []byte) *Client {
	c := NewClient(ClientConfig{Node: testNode, Key: key, Timeout: testTimeout(), Log: testLog(t)})
	t.Cleanup(c.Close)
	return c
}

// sent is one request as a recorder saw it.
type sent struct {
	method string
	url    string
	path   string
	header http.Header
	body   []byte
}

// recorder is a RoundTripper that keeps a copy of every request and may
// rewrite request bodies before they go out.
type recorder struct {
	next   http.RoundTripper
	mutate func(path string, body []byte) []byte

	mu   sync.Mutex
	reqs []sent
}

// record makes c send through a recorder.
func record(c *Client) *recorder {
	r := &recorder{next: c.tr}
	c.hc.Transport = r
	return r
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, sent{req.Method, req.URL.String(), req.URL.Path, req.Header.Clone(), bytes.Clone(body)})
	r.mu.Unlock()
	if r.mutate != nil {
		body = r.mutate(req.URL.Path, body)
	}
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.GetBody = nil
	return r.next.RoundTrip(out)
}

// calls returns the recorded /v1/call requests and the number of nonce
// fetches.
func (r *recorder) split() (calls []sent, fetches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.reqs {
		if strings.HasPrefix(s.path, pathCall) {
			calls = append(calls, s)
		} else if s.path == pathNonce {
			fetches++
		}
	}
	return calls, fetches
}

// postRaw sends a request with a plain client and returns the status and
// body.
func postRaw(t *testing.T, method, url string, header http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: testTimeout()}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// wantRefusal checks a raw 401 and its reason.
func wantRefusal(t *testing.T, status int, body []byte, reason string) {
	t.Helper()
	var e errorBody
	if status != http.StatusUnauthorized || json.Unmarshal(body, &e) != nil || e.Error != reason {
		t.Errorf("got %d %s, want 401 with reason %q", status, body, reason)
	}
}
