package peer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
)

// Wire constants. The header names are in canonical form.
const (
	pathNonce = "/v1/nonce"
	pathCall  = "/v1/call/"

	hdrNode      = "Vipd-Node"
	hdrNonce     = "Vipd-Nonce"
	hdrMAC       = "Vipd-Mac"
	hdrNextNonce = "Vipd-Next-Nonce"

	// maxBody bounds every request and response body.
	maxBody = 64 << 10
	// maxName bounds node names and ops.
	maxName = 253

	labelRequest  = "vipd-peer-v1 request"
	labelResponse = "vipd-peer-v1 response"
	labelNonce    = "vipd-peer-v1 nonce"
)

// Refusal reasons, as in a 401's body and passed to OnRefused.
const (
	ReasonMalformed    = "malformed"
	ReasonBadMAC       = "bad_mac"
	ReasonUnknownNonce = "unknown_nonce"
	ReasonUnknownOp    = "unknown_op"
)

var (
	// ErrRefused is wrapped by Call's error when the server refused the
	// call (the reason is in the message).
	ErrRefused = errors.New("peer: request refused")
	// ErrBadResponse is wrapped by Call's error when the response failed
	// authentication: no MAC, a wrong one, one bound to another call, or
	// too large to check.
	ErrBadResponse = errors.New("peer: response failed authentication")
	// ErrRemote is wrapped by Call's error when the remote Handler
	// returned an error; the message carries its text.
	ErrRemote = errors.New("peer: remote handler failed")
	// ErrUnknownOp is what a Handler returns (possibly wrapped) for an op
	// it does not serve. The caller's error then wraps it and ErrRefused.
	ErrUnknownOp = errors.New("peer: unknown op")
)

// nonce is a server-issued single-use value; on the wire it is 32
// lowercase hex digits.
type nonce [16]byte

func newNonce() nonce {
	var n nonce
	rand.Read(n[:]) // never fails: since Go 1.24 it crashes the program instead
	return n
}

func (n nonce) String() string { return hex.EncodeToString(n[:]) }

// parseNonce accepts only the canonical form, so one nonce has one
// spelling in MAC inputs.
func parseNonce(s string) (nonce, bool) {
	var n nonce
	if len(s) != 2*len(n) {
		return n, false
	}
	if _, err := hex.Decode(n[:], []byte(s)); err != nil || n.String() != s {
		return n, false
	}
	return n, true
}

// parseMAC decodes a Vipd-Mac header value.
func parseMAC(s string) ([]byte, bool) {
	if len(s) != 2*sha256.Size {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	return b, err == nil
}

// validName reports whether s is a usable node name or op: letters,
// digits, '_', '.' and '-', not starting with a punctuation mark (the rule
// config applies to node names).
func validName(s string) bool {
	if s == "" || len(s) > maxName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// mac computes HMAC-SHA256 under key of lines joined by "\n". Writes to a
// hash never fail.
func mac(key []byte, lines ...string) []byte {
	m := hmac.New(sha256.New, key)
	for i, l := range lines {
		if i > 0 {
			io.WriteString(m, "\n")
		}
		io.WriteString(m, l)
	}
	return m.Sum(nil)
}

func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func requestMAC(key []byte, node, op, nonce string, body []byte) []byte {
	return mac(key, labelRequest, node, op, nonce, bodyHash(body))
}

func responseMAC(key []byte, node, op, nonce string, status int, body []byte, next string) []byte {
	return mac(key, labelResponse, node, op, nonce, strconv.Itoa(status), bodyHash(body), next)
}

func nonceMAC(key []byte, challenge, nonce string) []byte {
	return mac(key, labelNonce, challenge, nonce)
}

// nonceRequest and nonceResponse are /v1/nonce's bodies; errorBody is a
// refusal's or a handler error's.
type (
	nonceRequest struct {
		Challenge string `json:"challenge"`
	}
	nonceResponse struct {
		Nonce string `json:"nonce"`
	}
	errorBody struct {
		Error string `json:"error"`
	}
)
