package metrics

import (
	"net/netip"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vipd/vipd/checks"
	"github.com/vipd/vipd/election"
)

// Metrics is every vipd metric. Its methods are the observer interfaces the
// keeper, checks and lease session call.
type Metrics struct {
	groupHolder   *prometheus.GaugeVec
	groupPriority *prometheus.GaugeVec
	groupState    *prometheus.GaugeVec
	transitions   *prometheus.CounterVec
	checkUp       *prometheus.GaugeVec
	checkDuration *prometheus.HistogramVec
	renewals      *prometheus.CounterVec
	renewDuration prometheus.Histogram
	announcements *prometheus.CounterVec
	acquire       *prometheus.HistogramVec
	notifyRuns    *prometheus.CounterVec
	conflicts     *prometheus.CounterVec
	peerRelayed   *prometheus.CounterVec
	peerServed    *prometheus.CounterVec
	peerRefused   *prometheus.CounterVec
	holderMode    *prometheus.GaugeVec
	checkEvents   *prometheus.GaugeVec
	checkRelease  *prometheus.HistogramVec
	moverCalls    *prometheus.CounterVec
	moverDuration *prometheus.HistogramVec
}

// New creates the metrics and registers them, the build info and the Go and
// process collectors on reg. fenceRemaining is read at scrape time for
// vipd_lease_fence_remaining_seconds.
func New(reg prometheus.Registerer, version string, fenceRemaining func() float64) *Metrics {
	m := &Metrics{
		groupHolder: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_group_holder", Help: "1 if this node has the group's VIPs bound, else 0.",
		}, []string{"group"}),
		groupPriority: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_group_priority", Help: "Effective priority of this node in the group (base plus check weights).",
		}, []string{"group"}),
		groupState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_group_state", Help: "1 for the group's current state on this node (MASTER, BACKUP or FAULT), 0 for the others.",
		}, []string{"group", "state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_group_transitions_total", Help: "State transitions of the group on this node, by target state.",
		}, []string{"group", "to"}),
		checkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_check_up", Help: "1 if the health check is up (after rise/fall), else 0.",
		}, []string{"check"}),
		checkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vipd_check_duration_seconds", Help: "Duration of health check runs.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"check"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_lease_renewals_total", Help: "Lease grant and renewal attempts by result (ok, relayed, error, lost, granted, grant_error).",
		}, []string{"result"}),
		renewDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vipd_lease_renewal_duration_seconds", Help: "Round trip of lease grant and renewal attempts.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		announcements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_announcements_total", Help: "Announcement frames sent, by kind (garp_request, garp_reply, na).",
		}, []string{"group", "kind"}),
		acquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vipd_acquire_seconds", Help: "Time from seeing the group vacant to having its VIPs bound.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"group"}),
		notifyRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_notify_runs_total", Help: "Notify hook runs by target state and result (ok, error, timeout).",
		}, []string{"group", "state", "result"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_address_conflicts_total", Help: "Times another host was seen answering for a VIP before it was claimed.",
		}, []string{"group"}),
		peerRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_peer_relayed_total",
			Help: "Requests this node asked a peer to carry out (op: renew, resign, publish, promise), by peer and result (ok, promised, refused, refused_auth, bad_response, error, unreachable).",
		}, []string{"peer", "op", "result"}),
		peerServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_peer_served_total", Help: "Requests this node carried out for a peer, by peer, op and result (ok, error; promise: promised, refused).",
		}, []string{"peer", "op", "result"}),
		holderMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_failsafe_active",
			Help: "1 while this node holds the group's VIPs on its peers' promises alone (MASTER (failsafe): nobody can renew its etcd lease), else 0.",
		}, []string{"group"}),
		checkEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_check_events",
			Help: "1 for the event source a check runs on besides its interval (pidfd, inotify, netlink; interval: polled only, for its type or because the events failed), 0 for the others.",
		}, []string{"check", "source"}),
		checkRelease: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vipd_check_to_release_seconds",
			Help:    "Time from the check run that took a tracked check down (or into the state that lowers the priority) to the removal of the group's VIPs from this node, for releases while that check is still down.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"group"}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_peer_refused_total", Help: "Peer channel requests refused for failing authentication, by reason (malformed, bad_mac, unknown_nonce, unknown_op).",
		}, []string{"reason"}),
		moverCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_mover_calls_total",
			Help: "Cloud mover calls by group, op (assert, check) and result (ok; drift: a check found the addresses delivered elsewhere; error; timeout; fenced: cut short at the fence).",
		}, []string{"group", "op", "result"}),
		moverDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vipd_mover_call_duration_seconds",
			Help:    "Cloud mover call latency by group and op (assert, check).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"group", "op"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vipd_build_info", Help: "vipd build information; always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	fence := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vipd_lease_fence_remaining_seconds",
		Help: "Seconds until the fence deadline: VIPs must be gone by then unless the lease is renewed. Negative or 0 when no live lease.",
	}, fenceRemaining)
	reg.MustRegister(m.groupHolder, m.groupPriority, m.groupState, m.transitions, m.checkUp, m.checkDuration,
		m.renewals, m.renewDuration, m.announcements, m.acquire, m.notifyRuns, m.conflicts, m.peerRelayed, m.peerServed, m.peerRefused, m.holderMode, m.checkEvents, m.checkRelease, m.moverCalls, m.moverDuration, buildInfo, fence,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// GroupState records a group's current state, priority and whether its
// VIPs are bound here.
func (m *Metrics) GroupState(group string, state election.State, priority int, holder bool) {
	for _, s := range election.PublishedStates() {
		v := 0.0
		if s == state {
			v = 1
		}
		m.groupState.WithLabelValues(group, string(s)).Set(v)
	}
	m.groupPriority.WithLabelValues(group).Set(float64(priority))
	h := 0.0
	if holder {
		h = 1
	}
	m.groupHolder.WithLabelValues(group).Set(h)
}

// Transition counts a state change.
func (m *Metrics) Transition(group string, to election.State) {
	m.transitions.WithLabelValues(group, string(to)).Inc()
}

// Acquired records the time from vacancy to bound VIPs.
func (m *Metrics) Acquired(group string, d time.Duration) {
	m.acquire.WithLabelValues(group).Observe(d.Seconds())
}

// Announced counts the frames of one announcement round for ip.
func (m *Metrics) Announced(group string, ip netip.Addr) {
	if ip.Is4() {
		m.announcements.WithLabelValues(group, "garp_request").Inc()
		m.announcements.WithLabelValues(group, "garp_reply").Inc()
		return
	}
	m.announcements.WithLabelValues(group, "na").Inc()
}

// CheckState records a check's state (after rise/fall).
func (m *Metrics) CheckState(name string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.checkUp.WithLabelValues(name).Set(v)
}

// CheckRun records the duration of one check run.
func (m *Metrics) CheckRun(name string, _ bool, d time.Duration) {
	m.checkDuration.WithLabelValues(name).Observe(d.Seconds())
}

// CheckEvents records the event source a check now runs on.
func (m *Metrics) CheckEvents(name, source string) {
	for _, s := range checks.Sources() {
		v := 0.0
		if s == source {
			v = 1
		}
		m.checkEvents.WithLabelValues(name, s).Set(v)
	}
}

// CheckToRelease records how long a check going down took to remove a
// group's VIPs.
func (m *Metrics) CheckToRelease(group string, d time.Duration) {
	m.checkRelease.WithLabelValues(group).Observe(d.Seconds())
}

// Renewal counts a lease grant or renewal attempt.
func (m *Metrics) Renewal(result string, d time.Duration) {
	m.renewals.WithLabelValues(result).Inc()
	m.renewDuration.Observe(d.Seconds())
}

// Notified counts a notify hook run.
func (m *Metrics) Notified(group, state, result string) {
	m.notifyRuns.WithLabelValues(group, state, result).Inc()
}

// Conflict counts an address conflict seen before claiming.
func (m *Metrics) Conflict(group string) { m.conflicts.WithLabelValues(group).Inc() }

// PeerRelay counts one peer's answer to a request this node asked it to
// relay.
func (m *Metrics) PeerRelay(peer, op, result string) {
	m.peerRelayed.WithLabelValues(peer, op, result).Inc()
}

// PeerServed counts a request relayed for a peer.
func (m *Metrics) PeerServed(peer, op, result string) {
	m.peerServed.WithLabelValues(peer, op, result).Inc()
}

// PeerRefused counts a peer request refused for failing authentication.
func (m *Metrics) PeerRefused(reason string) { m.peerRefused.WithLabelValues(reason).Inc() }

// MoverCall records one cloud mover call.
func (m *Metrics) MoverCall(group, op, result string, took time.Duration) {
	m.moverCalls.WithLabelValues(group, op, result).Inc()
	m.moverDuration.WithLabelValues(group, op).Observe(took.Seconds())
}

// HolderMode records whether the group is held on the failsafe.
func (m *Metrics) HolderMode(group, mode string) {
	v := 0.0
	if mode == "failsafe" {
		v = 1
	}
	m.holderMode.WithLabelValues(group).Set(v)
}
