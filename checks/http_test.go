package checks

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

func runProbe(t *testing.T, p Probe, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return p(ctx)
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		code    int
		wantErr bool
	}{
		{200, false},
		{204, false},
		{299, false},
		{301, true}, // redirects are not followed
		{404, true},
		{500, true},
		{503, true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.code == 301 {
					http.Redirect(w, r, "/ok", http.StatusMovedPermanently)
					return
				}
				w.WriteHeader(tt.code)
				_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
			}))
			defer srv.Close()
			err := runProbe(t, NewHTTP(srv.URL+"/healthz", nil), 5*time.Second)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("status %d: err = %v, want nil", tt.code, err)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("status %d: err = %v (%T), want *StatusError", tt.code, err, err)
			}
			if se.StatusCode != tt.code {
				t.Errorf("StatusCode = %d, want %d", se.StatusCode, tt.code)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "checks: ") || !strings.Contains(msg, http.StatusText(tt.code)) ||
				!strings.Contains(msg, "/healthz") {
				t.Errorf("error %q should start with %q and name the URL and status", msg, "checks: ")
			}
		})
	}
}

func TestHTTP503NamesStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	err := runProbe(t, NewHTTP(srv.URL, nil), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Fatalf("err = %v, want one naming 503 Service Unavailable", err)
	}
}

func TestHTTPTimeoutFromContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	err := runProbe(t, NewHTTP(srv.URL, nil), 100*time.Millisecond)
	if err == nil {
		t.Fatal("slow handler: err = nil, want timeout")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if !strings.HasPrefix(err.Error(), "checks: GET ") {
		t.Errorf("err = %q, want prefix %q", err, "checks: GET ")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("probe took %v; the ctx deadline did not bound it", took)
	}
}

func TestHTTPConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = runProbe(t, NewHTTP("http://"+addr+"/healthz", nil), 5*time.Second)
	if err == nil {
		t.Fatal("closed port: err = nil, want connection refused")
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !strings.HasPrefix(err.Error(), "checks: ") {
		t.Errorf("err = %v (%T), want a checks: error wrapping *net.OpError", err, err)
	}
}

// The default client turns keep-alive off: every run is a new connection
// that asks the server to close it.
func TestHTTPNoKeepAlive(t *testing.T) {
	var conns, closeReqs atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Close {
			closeReqs.Add(1)
		}
		if ua := r.Header.Get("User-Agent"); ua != "vipd-check" {
			t.Errorf("User-Agent = %q", ua)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := NewHTTP(srv.URL, nil)
	for range 3 {
		if err := runProbe(t, p, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if c, cr := conns.Load(), closeReqs.Load(); c != 3 || cr != 3 {
		t.Fatalf("3 runs used %d connections with %d Connection: close requests; want 3 and 3", c, cr)
	}
}

func TestHTTPRedactsPassword(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://admin:s3cret@", 1)
	err := runProbe(t, NewHTTP(u, nil), 5*time.Second)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err = %v, want an error without the password", err)
	}
}

func TestNewProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	p, err := NewProbe(config.Check{Type: "http", URL: srv.URL})
	if err != nil {
		t.Fatalf("http: %v", err)
	}
	if err := runProbe(t, p, 5*time.Second); err != nil {
		t.Fatalf("http probe against a 200 server: %v", err)
	}

	// Every type's required keys are checked again here (the validator
	// normally rejects these first); each error names the type's key.
	for _, tc := range []struct {
		c    config.Check
		want string
	}{
		{config.Check{Type: "bogus"}, `checks: type "bogus" not supported`},
		{config.Check{Type: ""}, `checks: type "" not supported`},
		{config.Check{Type: "tcp"}, `checks: tcp check address ""`},
		{config.Check{Type: "tcp", Address: "nohostport"}, `checks: tcp check address "nohostport"`},
		{config.Check{Type: "process"}, `checks: process check needs exactly one of pidfile and name`},
		{config.Check{Type: "process", Pidfile: "/x", Name: "x"}, `checks: process check needs exactly one of pidfile and name`},
		{config.Check{Type: "exec"}, `checks: exec check needs a command`},
		{config.Check{Type: "exec", Command: []string{"/bin/true"}, User: "no-such-user-vipd"}, `checks: exec check user "no-such-user-vipd"`},
		{config.Check{Type: "file"}, `checks: file check needs a path`},
		{config.Check{Type: "file", Path: "/x", Missing: "maybe"}, `checks: file check missing "maybe"`},
		{config.Check{Type: "interface"}, `checks: interface check needs a name`},
		{config.Check{Type: "http", URL: "https://127.0.0.1/", CAFile: "/nonexistent/ca.pem"}, `checks: http check ca_file`},
	} {
		_, err := NewProbe(tc.c)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want prefix %q", tc.c, err, tc.want)
		}
	}
	for _, c := range []config.Check{
		{Type: "tcp", Address: "127.0.0.1:1"},
		{Type: "process", Pidfile: "/run/x.pid"},
		{Type: "process", Name: "haproxy"},
		{Type: "file", Path: "/etc/vipd/w"},
		{Type: "file", Path: "/etc/vipd/w", Missing: "zero"},
		{Type: "interface", Name: "eth0"},
	} {
		if p, err := NewProbe(c); err != nil || p == nil {
			t.Errorf("%+v: NewProbe = %v, %v; want a probe", c, p, err)
		}
	}

	for _, u := range []string{"", "127.0.0.1:8404/healthz", "ftp://x/y", "http:///nohost", "http://[::1"} {
		if _, err := NewProbe(config.Check{Type: "http", URL: u}); err == nil || !strings.HasPrefix(err.Error(), "checks: ") {
			t.Errorf("url %q: err = %v, want a checks: error", u, err)
		}
	}
}
