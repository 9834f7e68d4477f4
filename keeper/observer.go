package keeper

import (
	"net/netip"
	"time"

	"github.com/vipd/vipd/election"
)

// Observer receives what the keeper does, for metrics. All methods must be
// cheap and must not block.
type Observer interface {
	// GroupState reports a group's state, priority, and whether a VIP of
	// the group may be on this host (bound, or a removal not yet
	// confirmed).
	GroupState(group string, state election.State, priority int, holder bool)
	Transition(group string, to election.State)
	Acquired(group string, sinceVacancy time.Duration)
	Announced(group string, ip netip.Addr)
	CheckState(name string, up bool)
	CheckRun(name string, ok bool, took time.Duration)
	// CheckEvents reports the event source a check runs on besides its
	// interval (checks.SourcePidfd, …; checks.SourceInterval: none).
	CheckEvents(name, source string)
	// CheckToRelease reports the time from the run that took a tracked
	// check down to the removal of the group's VIPs, for a release while
	// that check is still down.
	CheckToRelease(group string, d time.Duration)
	Renewal(result string, took time.Duration)
	Notified(group, state, result string)
	// Conflict reports another host answering for one of the group's
	// VIPs, seen by the ARP probe before binding (garp.probe).
	Conflict(group string)
	// HolderMode reports what a group's hold rests on beyond its own
	// renewals: "relay", "failsafe" or "" (see HolderMode).
	HolderMode(group, mode string)
	// PeerRelay reports one peer's answer to a request this node asked it
	// to relay (op: renew, resign, publish; result: ok, refused,
	// refused_auth, bad_response, error, unreachable).
	PeerRelay(peer, op, result string)
	// PeerServed reports a request this node relayed for a peer.
	PeerServed(peer, op, result string)
	// PeerRefused reports a peer request refused for failing
	// authentication (reason: malformed, bad_mac, unknown_nonce,
	// unknown_op).
	PeerRefused(reason string)
	// MoverCall reports one call of a group's cloud mover (op: assert,
	// check; result: ok, drift, error, timeout, fenced).
	MoverCall(group, op, result string, took time.Duration)
}

type nopObserver struct{}

func (nopObserver) GroupState(string, election.State, int, bool)    {}
func (nopObserver) Transition(string, election.State)               {}
func (nopObserver) Acquired(string, time.Duration)                  {}
func (nopObserver) Announced(string, netip.Addr)                    {}
func (nopObserver) CheckState(string, bool)                         {}
func (nopObserver) CheckRun(string, bool, time.Duration)            {}
func (nopObserver) CheckEvents(string, string)                      {}
func (nopObserver) CheckToRelease(string, time.Duration)            {}
func (nopObserver) Renewal(string, time.Duration)                   {}
func (nopObserver) Notified(string, string, string)                 {}
func (nopObserver) Conflict(string)                                 {}
func (nopObserver) PeerRelay(string, string, string)                {}
func (nopObserver) HolderMode(string, string)                       {}
func (nopObserver) PeerServed(string, string, string)               {}
func (nopObserver) PeerRefused(string)                              {}
func (nopObserver) MoverCall(string, string, string, time.Duration) {}
