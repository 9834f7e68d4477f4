package peer

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

// Handler answers one authenticated call. from is the caller's claimed node
// name, body its request (valid JSON). The result is sent as JSON; an error
// is sent as a 500 carrying its text, except ErrUnknownOp (see the package
// doc). ctx is done when the caller goes away or Serve stops; a Handler
// must return promptly then, as Serve waits for it.
type Handler func(ctx context.Context, from string, op string, body json.RawMessage) (any, error)

// ServerConfig wires a Server. Key and Handler are required.
type ServerConfig struct {
	// Key is the cluster's shared key (LoadKey), at least MinKeyLen bytes.
	Key []byte
	// Handler answers authenticated calls.
	Handler Handler
	// Log receives refusals (Warn) and handler errors (Debug). Zero value:
	// no logging.
	Log *slog.Logger
	// Clock times nonce lifetimes and log rate limits. Zero value:
	// clock.Real.
	Clock clock.Clock
	// OnRefused, if set, is called once per refused request with its
	// reason (one of the Reason constants), for a metric. It must not
	// block.
	OnRefused func(reason string)
}

// Server answers peers' calls. Its nonces live as long as it does, so one
// Server may Serve again after a stop (or on several listeners at once)
// and keeps accepting the nonces it issued.
type Server struct {
	key       []byte
	handler   Handler
	log       *slog.Logger
	clk       clock.Clock
	onRefused func(string)
	// open holds nonces issued by /v1/nonce, earned those issued in
	// authenticated responses (see the package doc).
	open, earned *nonceStore
	// grace bounds how long Serve waits for calls in flight when it stops
	// before it closes their connections.
	grace time.Duration

	logMu   sync.Mutex
	logLast map[string]refusalLog
}

type refusalLog struct {
	at   time.Time
	held int // lines not written since at
}

// Server timeouts. A call's handler runs within writeTimeout.
const (
	readHeaderTimeout = 2 * time.Second
	readTimeout       = 5 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 8 << 10
	shutdownGrace     = time.Second
	// refusalLogEvery is the least time between two log lines of the same
	// refusal reason.
	refusalLogEvery = time.Second
	// maxErrorText bounds a handler error's text in a response.
	maxErrorText = 4 << 10
)

// NewServer returns a Server; Serve runs it.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnRefused == nil {
		cfg.OnRefused = func(string) {}
	}
	return &Server{
		key:       append([]byte(nil), cfg.Key...),
		handler:   cfg.Handler,
		log:       cfg.Log,
		clk:       cfg.Clock,
		onRefused: cfg.OnRefused,
		open:      newNonceStore(cfg.Clock, nonceTTL, maxNonces),
		earned:    newNonceStore(cfg.Clock, nonceTTL, maxNonces),
		grace:     shutdownGrace,
		logLast:   map[string]refusalLog{},
	}
}

// Serve answers calls on ln until ctx is done, then stops: it closes ln,
// lets calls in flight finish (their handlers' ctx is done; after a grace
// of a second their connections are closed), waits for every handler to
// return, and returns nil. It returns an error at once if the Key is too
// short or Handler is nil, and early if ln fails. Serve always closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := checkKey(s.key); err != nil {
		ln.Close()
		return err
	}
	if s.handler == nil {
		ln.Close()
		return errors.New("peer: server has no handler")
	}
	// inflight counts running handlers so Serve can wait for them: Close
	// does not. After stopped is set no handler starts.
	var (
		mu       sync.Mutex
		stopped  bool
		inflight sync.WaitGroup
	)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if stopped {
				mu.Unlock()
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
			inflight.Add(1)
			mu.Unlock()
			defer inflight.Done()
			s.serveHTTP(w, r)
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		cancel()
		<-done
	case err = <-done:
		srv.Close()
		err = fmt.Errorf("peer: serve: %w", err)
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	inflight.Wait()
	return err
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.refuse(w, r, ReasonMalformed, "method "+r.Method)
		return
	}
	switch {
	case r.URL.Path == pathNonce:
		s.serveNonce(w, r)
	case strings.HasPrefix(r.URL.Path, pathCall):
		s.serveCall(w, r, strings.TrimPrefix(r.URL.Path, pathCall))
	default:
		s.refuse(w, r, ReasonMalformed, "path")
	}
}

func (s *Server) serveNonce(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.refuse(w, r, ReasonMalformed, "body: "+err.Error())
		return
	}
	var req nonceRequest
	if json.Unmarshal(body, &req) != nil {
		s.refuse(w, r, ReasonMalformed, "nonce request body")
		return
	}
	// The challenge has a nonce's form: random from the client, and short.
	if _, ok := parseNonce(req.Challenge); !ok {
		s.refuse(w, r, ReasonMalformed, "challenge")
		return
	}
	n := s.open.issue().String()
	out, _ := json.Marshal(nonceResponse{Nonce: n})
	w.Header().Set(hdrMAC, fmt.Sprintf("%x", nonceMAC(s.key, req.Challenge, n)))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveCall(w http.ResponseWriter, r *http.Request, op string) {
	node := r.Header.Get(hdrNode)
	nonceText := r.Header.Get(hdrNonce)
	if !validName(op) {
		s.refuse(w, r, ReasonMalformed, "op")
		return
	}
	if !validName(node) {
		s.refuse(w, r, ReasonMalformed, "node")
		return
	}
	n, ok := parseNonce(nonceText)
	if !ok {
		s.refuse(w, r, ReasonMalformed, "nonce")
		return
	}
	got, ok := parseMAC(r.Header.Get(hdrMAC))
	if !ok {
		s.refuse(w, r, ReasonMalformed, "mac")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.refuse(w, r, ReasonMalformed, "body: "+err.Error())
		return
	}
	if !json.Valid(body) {
		s.refuse(w, r, ReasonMalformed, "body is not JSON")
		return
	}
	// The MAC first: a request without the key must not burn the nonce.
	if !hmac.Equal(got, requestMAC(s.key, node, op, nonceText, body)) {
		s.refuse(w, r, ReasonBadMAC, "")
		return
	}
	if !s.consume(n) {
		s.refuse(w, r, ReasonUnknownNonce, "")
		return
	}

	status, out := http.StatusOK, []byte(nil)
	result, err := s.handler(r.Context(), node, op, body)
	switch {
	case errors.Is(err, ErrUnknownOp):
		s.refused(r, ReasonUnknownOp, op)
		status, out = http.StatusUnauthorized, errorJSON(ReasonUnknownOp)
	case err != nil:
		s.log.Debug("peer handler failed", "from", node, "op", op, "err", err)
		status, out = http.StatusInternalServerError, errorJSON(err.Error())
	default:
		if out, err = json.Marshal(result); err != nil {
			status, out = http.StatusInternalServerError, errorJSON("peer: encode response: "+err.Error())
		} else if len(out) > maxBody {
			status, out = http.StatusInternalServerError, errorJSON(fmt.Sprintf("peer: response of %d bytes exceeds %d", len(out), maxBody))
		}
	}
	next := s.earned.issue().String()
	w.Header().Set(hdrNextNonce, next)
	w.Header().Set(hdrMAC, fmt.Sprintf("%x", responseMAC(s.key, node, op, nonceText, status, out, next)))
	writeJSON(w, status, out)
}

// consume takes n from whichever store issued it.
func (s *Server) consume(n nonce) bool {
	return s.earned.consume(n) || s.open.consume(n)
}

// refuse answers an unauthenticated 401 and reports it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason, detail string) {
	s.refused(r, reason, detail)
	writeJSON(w, http.StatusUnauthorized, errorJSON(reason))
}

// refused reports a refusal to OnRefused and, rate-limited, to the log.
func (s *Server) refused(r *http.Request, reason, detail string) {
	s.onRefused(reason)
	now := s.clk.Now()
	s.logMu.Lock()
	last, seen := s.logLast[reason]
	if seen && now.Sub(last.at) < refusalLogEvery {
		last.held++
		s.logLast[reason] = last
		s.logMu.Unlock()
		return
	}
	s.logLast[reason] = refusalLog{at: now}
	s.logMu.Unlock()
	attrs := []any{"reason", reason, "remote", r.RemoteAddr, "node", clip(r.Header.Get(hdrNode), 64)}
	if detail != "" {
		attrs = append(attrs, "detail", clip(detail, 128))
	}
	if last.held > 0 {
		attrs = append(attrs, "held_back", last.held)
	}
	s.log.Warn("peer request refused", attrs...)
}

func errorJSON(msg string) []byte {
	out, _ := json.Marshal(errorBody{Error: clip(msg, maxErrorText)})
	return out
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// clip shortens s to at most n bytes for a log line or a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
