package checks

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"

	"github.com/vipd/vipd/config"
)

// Probe is one run of a check. It returns nil when the check passed. The
// Runner gives every run a context whose deadline is the check's timeout; a
// Probe must return promptly once ctx is done (the Runner does not abandon a
// run, so a Probe that ignores ctx delays its check's next run and Run's
// return on shutdown).
type Probe func(ctx context.Context) error

// maxDrain bounds how much of a response body a check reads before closing
// it, so a misbehaving endpoint cannot keep a check busy streaming.
const maxDrain = 64 << 10

// StatusError is the error of an http check whose response was not 2xx.
type StatusError struct {
	// URL is the checked URL with any password redacted.
	URL string
	// StatusCode is the response's status code, e.g. 503.
	StatusCode int
	// Status is the response's status line, e.g. "503 Service Unavailable".
	Status string
	// Expect is the configured list of passing codes; empty means 2xx.
	Expect []int
}

func (e *StatusError) Error() string {
	if len(e.Expect) > 0 {
		return fmt.Sprintf("checks: GET %s: status %s, want one of %v", e.URL, e.Status, e.Expect)
	}
	return fmt.Sprintf("checks: GET %s: status %s", e.URL, e.Status)
}

// NewHTTP returns a Probe that GETs rawURL and passes iff the response
// status is 2xx. The response body is drained (up to 64 KiB) and closed.
// Redirects are not followed (a 3xx fails, as keepalived's HTTP_GET).
// It is NewHTTPWith with only a client.
//
// The run's timeout comes from ctx, not from the client.
//
// client may be nil, and that is the intended use: the default client turns
// keep-alive off, so every run opens a new connection. That costs one
// loopback handshake per run and buys an honest answer: HAProxy answers its
// monitor-uri with "Connection: close" anyway, and on a reload the old
// HAProxy process keeps serving the connections it already has while new
// connections (what clients through the VIP make) go to the new one; a
// reused connection could keep asking a draining process, or fail once on a
// connection the server closed while idle. The default client also ignores
// HTTP_PROXY and friends: a health check must talk to the service directly.
// A caller-supplied client is used as given (its redirect and keep-alive
// policy included); its Timeout should be zero so that ctx decides.
func NewHTTP(rawURL string, client *http.Client) Probe {
	return NewHTTPWith(rawURL, HTTPOptions{Client: client})
}

// HTTPOptions refine an http check.
type HTTPOptions struct {
	// ExpectStatus lists the status codes that pass. Empty: any 2xx.
	ExpectStatus []int
	// BodyContains, if not empty, must occur in the first 64 KiB of the
	// response body.
	BodyContains string
	// Client does the request; nil means the default client (see NewHTTP).
	Client *http.Client
}

// BodyError is the error of an http check whose response lacked the
// expected substring.
type BodyError struct {
	// URL is the checked URL with any password redacted.
	URL string
	// Want is the substring that was not found.
	Want string
}

func (e *BodyError) Error() string {
	return fmt.Sprintf("checks: GET %s: body does not contain %q", e.URL, e.Want)
}

// NewHTTPWith returns a Probe that GETs rawURL and passes iff the status is
// one of o.ExpectStatus (any 2xx if empty) and, if o.BodyContains is set,
// the first 64 KiB of the body contain it. Everything else is as NewHTTP.
func NewHTTPWith(rawURL string, o HTTPOptions) Probe {
	client := o.Client
	if client == nil {
		client = defaultHTTPClient()
	}
	expect := slices.Clone(o.ExpectStatus)
	want := []byte(o.BodyContains)
	shown := redact(rawURL)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return fmt.Errorf("checks: GET %s: %w", shown, err)
		}
		req.Header.Set("User-Agent", "vipd-check")
		resp, err := client.Do(req)
		if err != nil {
			// *url.Error repeats the method and URL; keep only its cause.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("checks: GET %s: %w", shown, err)
		}
		var body []byte
		if len(want) > 0 {
			body, err = io.ReadAll(io.LimitReader(resp.Body, maxDrain))
		} else {
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		}
		_ = resp.Body.Close()
		if !statusOK(resp.StatusCode, expect) {
			return &StatusError{URL: shown, StatusCode: resp.StatusCode, Status: resp.Status, Expect: expect}
		}
		if len(want) > 0 {
			if !bytes.Contains(body, want) {
				if err != nil {
					return fmt.Errorf("checks: GET %s: reading body: %w", shown, err)
				}
				return &BodyError{URL: shown, Want: string(want)}
			}
		}
		return nil
	}
}

func statusOK(code int, expect []int) bool {
	if len(expect) == 0 {
		return code >= 200 && code <= 299
	}
	return slices.Contains(expect, code)
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:              nil, // never via HTTP_PROXY
			DialContext:        (&net.Dialer{KeepAlive: -1}).DialContext,
			DisableKeepAlives:  true,
			DisableCompression: true,
			// No TLS handshake or header timeouts: ctx bounds the whole run.
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// redact hides a password in rawURL for logs and errors.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Redacted()
}

// httpClientFor builds the default client with c's TLS settings: ca_file
// replaces the system roots, insecure_skip_verify turns verification off.
func httpClientFor(c config.Check) (*http.Client, error) {
	client := defaultHTTPClient()
	if c.CAFile == "" && !c.InsecureSkipVerify {
		return client, nil
	}
	tc := &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the operator asked for it
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("checks: http check ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("checks: http check ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	client.Transport.(*http.Transport).TLSClientConfig = tc
	return client, nil
}
