package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

// ClientConfig wires a Client. Node and Key are required.
type ClientConfig struct {
	// Node is this node's name, sent with every call.
	Node string
	// Key is the cluster's shared key (LoadKey), at least MinKeyLen bytes.
	Key []byte
	// Timeout bounds one Call, nonce fetch, dial and retry included.
	// Zero value: 500ms.
	Timeout time.Duration
	// Log receives retries (Debug). Zero value: no logging.
	Log *slog.Logger
	// Clock ages the unused nonces kept per endpoint. Zero value:
	// clock.Real.
	Clock clock.Clock
}

// Client calls peers' Servers. It is safe for concurrent use.
type Client struct {
	node    string
	key     []byte
	timeout time.Duration
	log     *slog.Logger
	clk     clock.Clock
	tr      *http.Transport
	hc      *http.Client

	mu    sync.Mutex
	pools map[string][]heldNonce // by endpoint, oldest first
}

// heldNonce is a nonce the client holds for later use. verified is false
// for one from /v1/nonce whose MAC did not check: it may still be sent,
// but no response to a call carrying it is accepted.
type heldNonce struct {
	value    string
	verified bool
	got      time.Time
}

const (
	defaultTimeout = 500 * time.Millisecond
	// poolSize bounds the unused nonces kept per endpoint.
	poolSize = 8
	// poolMaxAge is how long, by the client's clock, a held nonce is used.
	// The server's limit is nonceTTL from issue, which was before the
	// client got it; the margin covers the time in flight.
	poolMaxAge = nonceTTL / 2
	// clientIdleTimeout is below the server's idleTimeout, so the client
	// drops an idle connection before the server would close it under a
	// call (a POST is not retried on a fresh connection).
	clientIdleTimeout = idleTimeout / 2
)

// NewClient returns a Client. Errors in cfg (a short key, a bad node name)
// are reported by Call.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		MaxIdleConnsPerHost:    poolSize,
		IdleConnTimeout:        clientIdleTimeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHeaderBytes,
		Protocols:              protocols,
	}
	return &Client{
		node:    cfg.Node,
		key:     append([]byte(nil), cfg.Key...),
		timeout: cfg.Timeout,
		log:     cfg.Log,
		clk:     cfg.Clock,
		tr:      tr,
		hc: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		pools: map[string][]heldNonce{},
	}
}

// Close closes the client's idle connections. The Client stays usable.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Call sends req as JSON to op at endpoint (host:port) and decodes the
// answer into resp (unless resp is nil). The errors wrap ErrRefused,
// ErrBadResponse or ErrRemote as the package doc says, or are transport
// or encoding errors. A call refused for its nonce is sent once more with
// a fresh one.
func (c *Client) Call(ctx context.Context, endpoint, op string, req, resp any) error {
	if err := c.check(endpoint, op); err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("peer: call %s at %s: encode request: %w", op, endpoint, err)
	}
	if len(body) > maxBody {
		return fmt.Errorf("peer: call %s at %s: request of %d bytes exceeds %d", op, endpoint, len(body), maxBody)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	n, ok := c.take(endpoint)
	if !ok {
		if n, err = c.fetchNonce(ctx, endpoint); err != nil {
			return fmt.Errorf("peer: call %s at %s: %w", op, endpoint, err)
		}
	}
	reason, err := c.attempt(ctx, endpoint, op, n, body, resp)
	if reason != ReasonUnknownNonce {
		return err
	}
	c.log.Debug("peer refused the nonce; retrying with a fresh one", "endpoint", endpoint, "op", op)
	if n, err = c.fetchNonce(ctx, endpoint); err != nil {
		return fmt.Errorf("peer: call %s at %s: %w", op, endpoint, err)
	}
	_, err = c.attempt(ctx, endpoint, op, n, body, resp)
	return err
}

func (c *Client) check(endpoint, op string) error {
	if err := checkKey(c.key); err != nil {
		return err
	}
	if !validName(c.node) {
		return fmt.Errorf("peer: node name %q must be letters, digits, '_', '.' or '-'", c.node)
	}
	if !validName(op) {
		return fmt.Errorf("peer: op %q must be letters, digits, '_', '.' or '-'", op)
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		return fmt.Errorf("peer: endpoint %q: %w", endpoint, err)
	}
	return nil
}

// attempt sends one call carrying n. When the server refused it, reason
// says why.
func (c *Client) attempt(ctx context.Context, endpoint, op string, n heldNonce, body []byte, resp any) (reason string, err error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("peer: call %s at %s: "+format, append([]any{op, endpoint}, args...)...)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+endpoint+pathCall+op, bytes.NewReader(body))
	if err != nil {
		return "", fail("%w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set(hdrNode, c.node)
	hreq.Header.Set(hdrNonce, n.value)
	hreq.Header.Set(hdrMAC, fmt.Sprintf("%x", requestMAC(c.key, c.node, op, n.value, body)))
	status, header, out, err := c.do(hreq)
	if err != nil {
		return "", fail("%w", err)
	}

	macText := header.Get(hdrMAC)
	if macText == "" {
		if status == http.StatusUnauthorized {
			reason := refusalReason(out)
			return reason, fail("%w (%s)", ErrRefused, reason)
		}
		return "", fail("%w: status %d without a MAC", ErrBadResponse, status)
	}
	next := header.Get(hdrNextNonce)
	got, ok := parseMAC(macText)
	if !ok || !hmac.Equal(got, responseMAC(c.key, c.node, op, n.value, status, out, next)) {
		return "", fail("%w: wrong MAC (status %d)", ErrBadResponse, status)
	}
	if !n.verified {
		return "", fail("%w: the nonce did not come from the server", ErrBadResponse)
	}
	if _, ok := parseNonce(next); ok {
		c.put(endpoint, heldNonce{value: next, verified: true, got: c.clk.Now()})
	}

	switch status {
	case http.StatusOK:
		if resp == nil {
			return "", nil
		}
		if err := json.Unmarshal(out, resp); err != nil {
			return "", fail("decode response: %w", err)
		}
		return "", nil
	case http.StatusInternalServerError:
		var e errorBody
		if json.Unmarshal(out, &e) != nil {
			return "", fail("%w: undecodable error", ErrRemote)
		}
		return "", fail("%w: %s", ErrRemote, e.Error)
	case http.StatusUnauthorized:
		reason := refusalReason(out)
		if reason == ReasonUnknownOp {
			return reason, fail("%w (%s): %w", ErrRefused, reason, ErrUnknownOp)
		}
		return reason, fail("%w (%s)", ErrRefused, reason)
	default:
		return "", fail("unexpected status %d", status)
	}
}

// fetchNonce asks endpoint for a fresh nonce, with a random challenge the
// answer must be MAC'd with.
func (c *Client) fetchNonce(ctx context.Context, endpoint string) (heldNonce, error) {
	challenge := newNonce().String()
	body, _ := json.Marshal(nonceRequest{Challenge: challenge})
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+endpoint+pathNonce, bytes.NewReader(body))
	if err != nil {
		return heldNonce{}, fmt.Errorf("nonce: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	status, header, out, err := c.do(hreq)
	if err != nil {
		return heldNonce{}, fmt.Errorf("nonce: %w", err)
	}
	if status == http.StatusUnauthorized {
		return heldNonce{}, fmt.Errorf("nonce: %w (%s)", ErrRefused, refusalReason(out))
	}
	var nr nonceResponse
	if status != http.StatusOK || json.Unmarshal(out, &nr) != nil {
		return heldNonce{}, fmt.Errorf("nonce: %w: status %d", ErrBadResponse, status)
	}
	if _, ok := parseNonce(nr.Nonce); !ok {
		return heldNonce{}, fmt.Errorf("nonce: %w: malformed nonce", ErrBadResponse)
	}
	got, ok := parseMAC(header.Get(hdrMAC))
	verified := ok && hmac.Equal(got, nonceMAC(c.key, challenge, nr.Nonce))
	return heldNonce{value: nr.Nonce, verified: verified, got: c.clk.Now()}, nil
}

// do sends hreq and reads the whole response, refusing one over maxBody.
func (c *Client) do(hreq *http.Request) (int, http.Header, []byte, error) {
	hresp, err := c.hc.Do(hreq)
	if err != nil {
		return 0, nil, nil, err
	}
	defer hresp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(hresp.Body, maxBody+1))
	if err != nil {
		return 0, nil, nil, err
	}
	if len(out) > maxBody {
		return 0, nil, nil, fmt.Errorf("%w: response body exceeds %d bytes", ErrBadResponse, maxBody)
	}
	return hresp.StatusCode, hresp.Header, out, nil
}

// take returns the oldest usable nonce held for endpoint, dropping those
// too old to use.
func (c *Client) take(endpoint string) (heldNonce, bool) {
	now := c.clk.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	pool := c.pools[endpoint]
	for len(pool) > 0 && now.Sub(pool[0].got) > poolMaxAge {
		pool = pool[1:]
	}
	if len(pool) == 0 {
		delete(c.pools, endpoint)
		return heldNonce{}, false
	}
	c.pools[endpoint] = pool[1:]
	return pool[0], true
}

// put keeps n for a later call to endpoint, dropping the oldest beyond
// poolSize.
func (c *Client) put(endpoint string, n heldNonce) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pool := append(c.pools[endpoint], n)
	if len(pool) > poolSize {
		pool = append([]heldNonce(nil), pool[len(pool)-poolSize:]...)
	}
	c.pools[endpoint] = pool
}

// refusalReason reads the reason from an (unauthenticated) refusal body,
// keeping only a well-formed one.
func refusalReason(body []byte) string {
	var e errorBody
	if json.Unmarshal(body, &e) != nil || len(e.Error) > 32 || !validName(e.Error) {
		return "unreadable reason"
	}
	return e.Error
}
