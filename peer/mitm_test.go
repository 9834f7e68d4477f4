package peer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// mitm is an HTTP proxy between a client and a Server that may rewrite or
// replace what passes through. It sees everything on the wire but has no
// key.
type mitm struct {
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu sync.Mutex
	// onResponse rewrites a forwarded response; nil passes it on.
	onResponse func(*http.Response) error
	// answer, if set, answers a request itself (true) instead of
	// forwarding it.
	answer func(w http.ResponseWriter, r *http.Request) bool
}

func newMITM(t *testing.T, target string) *mitm {
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil}
	m := &mitm{}
	m.rp = &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			m.mu.Lock()
			f := m.onResponse
			m.mu.Unlock()
			if f == nil {
				return nil
			}
			return f(resp)
		},
	}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		f := m.answer
		m.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		m.rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { m.srv.Close(); tr.CloseIdleConnections() })
	return m
}

func (m *mitm) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *mitm) set(onResponse func(*http.Response) error, answer func(http.ResponseWriter, *http.Request) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onResponse, m.answer = onResponse, answer
}

// captured is a response as it went by.
type captured struct {
	status int
	header http.Header
	body   []byte
}

func capture(resp *http.Response) (captured, error) {
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return captured{}, err
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return captured{resp.StatusCode, resp.Header.Clone(), body}, nil
}

func (c captured) writeTo(w http.ResponseWriter) {
	for k, v := range c.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
	w.WriteHeader(c.status)
	w.Write(c.body)
}

// onCalls applies f to responses to calls only, not to nonce fetches.
func onCalls(f func(*http.Response) error) func(*http.Response) error {
	return func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, pathCall) {
			return nil
		}
		return f(resp)
	}
}

func setBody(resp *http.Response, body []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
}

func TestForgedResponseRejected(t *testing.T) {
	h := startServer(t)
	for _, tc := range []struct {
		name    string
		rewrite func(*http.Response) error
	}{
		{"body", func(resp *http.Response) error {
			c, err := capture(resp)
			setBody(resp, bytes.Replace(c.body, []byte(`"renew"`), []byte(`"grant"`), 1))
			return err
		}},
		{"status", func(resp *http.Response) error {
			resp.StatusCode, resp.Status = http.StatusInternalServerError, "500 Internal Server Error"
			setBody(resp, []byte(`{"error":"no"}`))
			return nil
		}},
		{"next nonce", func(resp *http.Response) error {
			resp.Header.Set(hdrNextNonce, newNonce().String())
			return nil
		}},
		{"MAC stripped", func(resp *http.Response) error {
			resp.Header.Del(hdrMAC)
			return nil
		}},
		{"MAC garbled", func(resp *http.Response) error {
			resp.Header.Set(hdrMAC, "zz"+resp.Header.Get(hdrMAC)[2:])
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMITM(t, h.addr)
			m.set(onCalls(tc.rewrite), nil)
			c := newTestClient(t, testKey())
			var got echoReply
			err := c.Call(context.Background(), m.addr(), "echo", "renew", &got)
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			if got.Op != "" {
				t.Errorf("decoded a rejected answer: %+v", got)
			}
			// The client kept no nonce from the forged answer.
			if _, ok := c.take(m.addr()); ok {
				t.Error("client kept the next nonce of a rejected answer")
			}
		})
	}
	// Control: the same proxy passing everything through works.
	m := newMITM(t, h.addr)
	c := newTestClient(t, testKey())
	if err := c.Call(context.Background(), m.addr(), "echo", "renew", nil); err != nil {
		t.Fatalf("through an honest proxy: %v", err)
	}
}

func TestReplayedResponseRejected(t *testing.T) {
	h := startServer(t)
	m := newMITM(t, h.addr)
	c := newTestClient(t, testKey())
	ctx := context.Background()

	var (
		mu  sync.Mutex // the proxy's goroutines write what they saw
		old captured
	)
	m.set(onCalls(func(resp *http.Response) error {
		c, err := capture(resp)
		mu.Lock()
		defer mu.Unlock()
		old = c
		return err
	}), nil)
	var got echoReply
	if err := c.Call(ctx, m.addr(), "echo", "same", &got); err != nil {
		t.Fatal(err)
	}
	// The second, identical call reaches the server but gets the first
	// call's answer.
	m.set(onCalls(func(resp *http.Response) error {
		mu.Lock()
		defer mu.Unlock()
		resp.Body.Close()
		resp.Header = old.header.Clone()
		resp.StatusCode = old.status
		setBody(resp, old.body)
		return nil
	}), nil)
	if err := c.Call(ctx, m.addr(), "echo", "same", &got); !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrBadResponse", err)
	}
	h.wantCalls(2)
}

// A client that restarted holds no nonces. A man in the middle who
// recorded an earlier exchange hands it the old nonce and then the old
// answer, whose MAC is valid for that nonce; only the challenge on the
// nonce fetch shows the nonce is not fresh.
func TestStaleNonceAfterRestartRejected(t *testing.T) {
	h := startServer(t)
	m := newMITM(t, h.addr)
	ctx := context.Background()

	var (
		mu                sync.Mutex // the proxy's goroutines write what they saw
		oldNonce, oldCall captured
		replayed          int
	)
	m.set(func(resp *http.Response) error {
		c, err := capture(resp)
		mu.Lock()
		defer mu.Unlock()
		if resp.Request.URL.Path == pathNonce {
			oldNonce = c
		} else {
			oldCall = c
		}
		return err
	}, nil)
	first := newTestClient(t, testKey())
	if err := first.Call(ctx, m.addr(), "echo", "promise", nil); err != nil {
		t.Fatal(err)
	}

	m.set(nil, func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		replayed++
		if r.URL.Path == pathNonce {
			oldNonce.writeTo(w)
		} else {
			oldCall.writeTo(w)
		}
		return true
	})
	restarted := newTestClient(t, testKey())
	var got echoReply
	err := restarted.Call(ctx, m.addr(), "echo", "promise", &got)
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrBadResponse", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if replayed != 2 {
		t.Errorf("proxy answered %d requests, want 2 (nonce, call)", replayed)
	}
	h.wantCalls(1)
}

func TestNoRedirects(t *testing.T) {
	h := startServer(t)
	var followed int
	var mu sync.Mutex
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		followed++
		mu.Unlock()
	}))
	defer target.Close()
	m := newMITM(t, h.addr)
	m.set(nil, func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
		return true
	})
	c := newTestClient(t, testKey())
	if err := c.Call(context.Background(), m.addr(), "echo", 1, nil); !errors.Is(err, ErrBadResponse) {
		t.Errorf("err = %v, want ErrBadResponse", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if followed != 0 {
		t.Errorf("client followed %d redirects", followed)
	}
}
