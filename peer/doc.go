// Package peer owns the authenticated request/response channel between
// vipd nodes: the wire protocol, the cluster's shared key, the server that
// answers peers' calls and the client that makes them. A node that cannot
// reach etcd uses it to have a peer relay its lease renewals and failsafe
// promises; what the calls mean belongs to the caller's Handler, not here.
//
// # Wire
//
// HTTP/1.1 over plain TCP, POST only, JSON bodies of at most 64 KiB each
// way. Every refusal is a 401 whose JSON body {"error": reason} names one
// of "malformed", "bad_mac", "unknown_nonce" or "unknown_op". The server
// sets header, read, write and idle timeouts; the client follows no
// redirects, uses no proxy and bounds each call (dial included) by its
// Timeout.
//
//	POST /v1/nonce       {"challenge": C}  →  {"nonce": N}, Vipd-Mac: T
//	POST /v1/call/<op>   Vipd-Node, Vipd-Nonce, Vipd-Mac; body = request
//	                     →  status, Vipd-Mac, Vipd-Next-Nonce; body = answer
//
// Node names and ops are letters, digits, '_', '.' and '-' (as node names
// in the config), so no field of a MAC input can contain its separator.
//
// # Authentication
//
// All nodes share one secret key (LoadKey; at least 32 bytes, in a file
// only its owner may read). Every MAC is hex HMAC-SHA256 under that key of
// lines joined by "\n", the first line naming what is signed, so no MAC is
// valid as another kind:
//
//	request:  "vipd-peer-v1 request", node, op, nonce, hex(sha256(body))
//	response: "vipd-peer-v1 response", node, op, nonce, status code,
//	          hex(sha256(body)), next nonce
//	nonce:    "vipd-peer-v1 nonce", challenge, nonce
//
// node is the caller's name and nonce the one its request carried, so a
// response is bound to the request it answers. The key authenticates
// membership of the cluster, not which node speaks: any key holder can
// claim any node name. Bodies are not encrypted; put no secrets in them.
//
// # Replay
//
// Nodes' clocks are not assumed to agree, so freshness comes from nonces
// the server issues: 16 random bytes, hex, each accepted once and only
// within 10 s (by the server's clock.Clock) of issue. The server checks a
// call's MAC (hmac.Equal) before it consumes the nonce, so a forged request
// cannot burn a nonce someone else holds; a call whose nonce is not
// outstanding is refused "unknown_nonce" and its handler does not run. Every
// authenticated response carries Vipd-Next-Nonce, a fresh nonce issued to
// the caller, so a client that calls a peer at least every few seconds
// pays one round trip per call: it keeps a few unused nonces per endpoint
// (each used once, dropped after 5 s of its own time) and asks /v1/nonce
// only when it has none. On an "unknown_nonce" refusal it fetches a fresh
// nonce and tries once more.
//
// /v1/nonce needs no key, but it answers the caller's random challenge
// with a nonce MAC. Without that, a man in the middle could hand a client
// a nonce it had used before (after a restart emptied its memory) and
// then replay the recorded answer to the old call, whose MAC is valid for
// that nonce. The client checks the nonce MAC before it accepts a response
// to a call carrying that nonce, not before sending: a node with the wrong
// key still reaches the server, which refuses it "bad_mac" and counts it,
// so a key mismatch shows in the server's metrics.
//
// The server keeps at most 2048 nonces issued by /v1/nonce and 2048 issued
// in responses (4096 in all), evicting the oldest of the same kind, so a
// flood of anonymous /v1/nonce requests cannot evict the nonces that
// clients hold from authenticated answers.
//
// Limits: the channel is not confidential, and a man in the middle can
// delay a call by up to the nonce lifetime, drop it, or deliver it and
// then forge an "unknown_nonce" refusal so that the client sends it again:
// ops must tolerate running twice, as they must tolerate a lost answer.
//
// # Errors and refusals
//
// A Handler error reaches the caller as a 500 whose body carries the
// error's text, MAC'd like any answer; the client returns it wrapping
// ErrRemote. A Handler that returns ErrUnknownOp gets an authenticated
// "unknown_op" refusal; the client's error wraps both ErrRefused and
// ErrUnknownOp. Any other refusal is unauthenticated and surfaces as
// ErrRefused; a response that fails its MAC, lacks one or is too large
// surfaces as ErrBadResponse. The server logs each refusal at Warn (at
// most one line per second per reason, counting the ones it held back)
// and reports it to ServerConfig.OnRefused for a metric.
//
// Time: nonce lifetimes and log rate limits use the injected clock.Clock;
// socket timeouts, the call timeout and the shutdown grace are real time,
// as only real deadlines bound the net/http stack.
package peer
