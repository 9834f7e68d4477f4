package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

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
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("checks: GET %s: status %s", e.URL, e.Status)
}

// NewHTTP returns a Probe that GETs rawURL and passes iff the response
// status is 2xx. The response body is drained (up to 64 KiB) and closed.
// Redirects are not followed (a 3xx fails, as keepalived's HTTP_GET).
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
	if client == nil {
		client = defaultHTTPClient()
	}
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
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return &StatusError{URL: shown, StatusCode: resp.StatusCode, Status: resp.Status}
		}
		return nil
	}
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

// NewProbe builds the Probe for one configured check. Only "http" is
// implemented; the other types return an error naming the type (the config
// validator rejects them before this is reached).
func NewProbe(c config.Check) (Probe, error) {
	switch c.Type {
	case "http":
		if c.URL == "" {
			return nil, errors.New("checks: http check needs a url")
		}
		u, err := url.Parse(c.URL)
		if err != nil {
			return nil, fmt.Errorf("checks: http check url: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("checks: http check url %q: want http://host[:port]/path or https://...", u.Redacted())
		}
		return NewHTTP(c.URL, nil), nil
	default:
		return nil, fmt.Errorf("checks: type %q not supported yet", c.Type)
	}
}
