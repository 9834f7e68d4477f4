package keeper

import (
	"net/netip"
	"time"
)

// Observer receives what the keeper does, for metrics. All methods must be
// cheap and must not block.
type Observer interface {
	GroupState(group, state string, priority int, holder bool)
	Transition(group, to string)
	Acquired(group string, sinceVacancy time.Duration)
	Announced(group string, ip netip.Addr)
	CheckState(name string, up bool)
	CheckRun(name string, ok bool, took time.Duration)
	Renewal(result string, took time.Duration)
	Notified(group, state, result string)
	// Conflict reports another host answering for one of the group's
	// VIPs, seen by the ARP probe before binding (garp.probe).
	Conflict(group string)
}

type nopObserver struct{}

func (nopObserver) GroupState(string, string, int, bool) {}
func (nopObserver) Transition(string, string)            {}
func (nopObserver) Acquired(string, time.Duration)       {}
func (nopObserver) Announced(string, netip.Addr)         {}
func (nopObserver) CheckState(string, bool)              {}
func (nopObserver) CheckRun(string, bool, time.Duration) {}
func (nopObserver) Renewal(string, time.Duration)        {}
func (nopObserver) Notified(string, string, string)      {}
func (nopObserver) Conflict(string)                      {}
