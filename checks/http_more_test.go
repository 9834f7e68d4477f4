package checks

import (
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

func TestHTTPExpectStatusAndBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte("status: ready\n"))
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("status: ready (but 503)"))
		case "/big":
			// The substring comes after 64 KiB: not searched.
			_, _ = w.Write([]byte(strings.Repeat("x", maxDrain) + "ready"))
		}
	}))
	defer srv.Close()
	tests := []struct {
		name    string
		path    string
		opts    HTTPOptions
		wantErr string // "" = pass
	}{
		{"default 2xx", "/nocontent", HTTPOptions{}, ""},
		{"expect 200 gets 204", "/nocontent", HTTPOptions{ExpectStatus: []int{200}}, "status 204 No Content, want one of [200]"},
		{"expect 200 gets 200", "/ok", HTTPOptions{ExpectStatus: []int{200}}, ""},
		{"expect a 503", "/down", HTTPOptions{ExpectStatus: []int{503}}, ""},
		{"expect list", "/nocontent", HTTPOptions{ExpectStatus: []int{200, 204}}, ""},
		{"body found", "/ok", HTTPOptions{BodyContains: "ready"}, ""},
		{"body missing", "/ok", HTTPOptions{BodyContains: "leader"}, `body does not contain "leader"`},
		{"status checked before body", "/down", HTTPOptions{BodyContains: "ready"}, "503"},
		{"body beyond 64 KiB not searched", "/big", HTTPOptions{BodyContains: "ready"}, `body does not contain "ready"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runProbe(t, NewHTTPWith(srv.URL+tt.path, tt.opts), 5*time.Second)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want pass", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "checks: GET ") {
				t.Fatalf("err = %v, want a checks: GET error containing %q", err, tt.wantErr)
			}
		})
	}
	var be *BodyError
	err := runProbe(t, NewHTTPWith(srv.URL+"/ok", HTTPOptions{BodyContains: "nope"}), 5*time.Second)
	if !errors.As(err, &be) || be.Want != "nope" {
		t.Errorf("err = %v (%T), want *BodyError", err, err)
	}
}

func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHTTPSCAFileAndInsecure(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	ca := writeCA(t, srv)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		c       config.Check
		newErr  string
		wantErr string
	}{
		{"system roots do not know the test CA", config.Check{Type: "http", URL: srv.URL}, "", "certificate"},
		{"ca_file verifies", config.Check{Type: "http", URL: srv.URL, CAFile: ca, BodyContains: "ok"}, "", ""},
		{"insecure skips verification", config.Check{Type: "http", URL: srv.URL, InsecureSkipVerify: true}, "", ""},
		{"garbage ca_file", config.Check{Type: "http", URL: srv.URL, CAFile: garbage}, "no PEM certificate", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProbe(tt.c)
			if tt.newErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.newErr) || !strings.HasPrefix(err.Error(), "checks: ") {
					t.Fatalf("NewProbe err = %v, want one containing %q", err, tt.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = runProbe(t, p, 5*time.Second)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want pass", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
