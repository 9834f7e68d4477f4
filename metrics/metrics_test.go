package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsAfterScriptedTransitions(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "v1.2.3", func() float64 { return 1.75 })

	// web-node-1 of the seed: BACKUP at 103, wins, binds, announces twice,
	// HAProxy dies (101), releases to BACKUP.
	m.GroupState("VI_1", "BACKUP", 103, false)
	m.Transition("VI_1", "BACKUP")
	m.Acquired("VI_1", 3*time.Millisecond)
	m.GroupState("VI_1", "MASTER", 103, true)
	m.Transition("VI_1", "MASTER")
	m.Announced("VI_1", netip.MustParseAddr("192.168.20.15"))
	m.Announced("VI_1", netip.MustParseAddr("192.168.20.15"))
	m.Announced("VI_1", netip.MustParseAddr("2001:db8::15"))
	m.CheckState("haproxy", true)
	m.CheckRun("haproxy", true, 2*time.Millisecond)
	m.CheckRun("haproxy", false, 150*time.Millisecond)
	m.CheckState("haproxy", false)
	m.GroupState("VI_1", "BACKUP", 101, false)
	m.Transition("VI_1", "BACKUP")
	m.Renewal("ok", time.Millisecond)
	m.Renewal("ok", time.Millisecond)
	m.Renewal("error", 500*time.Millisecond)
	m.Notified("VI_1", "MASTER", "timeout")
	// Cut from etcd: renewed by a peer, then held on promises.
	m.Renewal("relayed", 2*time.Millisecond)
	m.PeerRelay("web-node-2", "renew", "ok")
	m.PeerRelay("web-node-2", "promise", "promised")
	m.PeerServed("web-node-2", "renew", "error")
	m.PeerRefused("bad_mac")
	m.HolderMode("VI_1", "failsafe")
	m.HolderMode("VI_2", "relay")

	want := `
# HELP vipd_group_holder 1 if this node has the group's VIPs bound, else 0.
# TYPE vipd_group_holder gauge
vipd_group_holder{group="VI_1"} 0
# HELP vipd_group_priority Effective priority of this node in the group (base plus check weights).
# TYPE vipd_group_priority gauge
vipd_group_priority{group="VI_1"} 101
# HELP vipd_group_state 1 for the group's current state on this node (MASTER, BACKUP or FAULT), 0 for the others.
# TYPE vipd_group_state gauge
vipd_group_state{group="VI_1",state="BACKUP"} 1
vipd_group_state{group="VI_1",state="FAULT"} 0
vipd_group_state{group="VI_1",state="MASTER"} 0
# HELP vipd_group_transitions_total State transitions of the group on this node, by target state.
# TYPE vipd_group_transitions_total counter
vipd_group_transitions_total{group="VI_1",to="BACKUP"} 2
vipd_group_transitions_total{group="VI_1",to="MASTER"} 1
# HELP vipd_announcements_total Announcement frames sent, by kind (garp_request, garp_reply, na).
# TYPE vipd_announcements_total counter
vipd_announcements_total{group="VI_1",kind="garp_reply"} 2
vipd_announcements_total{group="VI_1",kind="garp_request"} 2
vipd_announcements_total{group="VI_1",kind="na"} 1
# HELP vipd_check_up 1 if the health check is up (after rise/fall), else 0.
# TYPE vipd_check_up gauge
vipd_check_up{check="haproxy"} 0
# HELP vipd_lease_renewals_total Lease grant and renewal attempts by result (ok, relayed, error, lost, granted, grant_error).
# TYPE vipd_lease_renewals_total counter
vipd_lease_renewals_total{result="error"} 1
vipd_lease_renewals_total{result="ok"} 2
vipd_lease_renewals_total{result="relayed"} 1
# HELP vipd_lease_fence_remaining_seconds Seconds until the fence deadline: VIPs must be gone by then unless the lease is renewed. Negative or 0 when no live lease.
# TYPE vipd_lease_fence_remaining_seconds gauge
vipd_lease_fence_remaining_seconds 1.75
# HELP vipd_notify_runs_total Notify hook runs by target state and result (ok, error, timeout).
# TYPE vipd_notify_runs_total counter
vipd_notify_runs_total{group="VI_1",result="timeout",state="MASTER"} 1
# HELP vipd_build_info vipd build information; always 1.
# TYPE vipd_build_info gauge
# HELP vipd_failsafe_active 1 while this node holds the group's VIPs on its peers' promises alone (MASTER (failsafe): nobody can renew its etcd lease), else 0.
# TYPE vipd_failsafe_active gauge
vipd_failsafe_active{group="VI_1"} 1
vipd_failsafe_active{group="VI_2"} 0
# HELP vipd_peer_relayed_total Requests this node asked a peer to carry out (op: renew, resign, publish, promise), by peer and result (ok, promised, refused, refused_auth, bad_response, error, unreachable).
# TYPE vipd_peer_relayed_total counter
vipd_peer_relayed_total{op="promise",peer="web-node-2",result="promised"} 1
vipd_peer_relayed_total{op="renew",peer="web-node-2",result="ok"} 1
# HELP vipd_peer_served_total Requests this node carried out for a peer, by peer, op and result (ok, error; promise: promised, refused).
# TYPE vipd_peer_served_total counter
vipd_peer_served_total{op="renew",peer="web-node-2",result="error"} 1
# HELP vipd_peer_refused_total Peer channel requests refused for failing authentication, by reason (malformed, bad_mac, unknown_nonce, unknown_op).
# TYPE vipd_peer_refused_total counter
vipd_peer_refused_total{reason="bad_mac"} 1
`
	names := []string{"vipd_group_holder", "vipd_group_priority", "vipd_group_state", "vipd_group_transitions_total",
		"vipd_announcements_total", "vipd_check_up", "vipd_lease_renewals_total", "vipd_lease_fence_remaining_seconds",
		"vipd_notify_runs_total", "vipd_failsafe_active", "vipd_peer_relayed_total", "vipd_peer_served_total", "vipd_peer_refused_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.acquire); n != 1 {
		t.Errorf("acquire histogram series = %d, want 1", n)
	}
	if n := testutil.CollectAndCount(m.checkDuration); n != 1 {
		t.Errorf("check duration series = %d, want 1", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "vipd_build_info" {
			found = true
			lbls := mf.GetMetric()[0].GetLabel()
			if lbls[1].GetName() != "version" || lbls[1].GetValue() != "v1.2.3" {
				t.Errorf("build info labels %v", lbls)
			}
		}
	}
	if !found {
		t.Error("vipd_build_info missing")
	}
}

func TestMetricsAreLintClean(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "dev", func() float64 { return 0 })
	m.GroupState("g", "MASTER", 1, true)
	m.Transition("g", "MASTER")
	m.Acquired("g", time.Millisecond)
	m.Announced("g", netip.MustParseAddr("10.0.0.1"))
	m.CheckState("c", true)
	m.CheckRun("c", true, time.Millisecond)
	m.Renewal("ok", time.Millisecond)
	m.Notified("g", "MASTER", "ok")
	m.Conflict("g")
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "vipd_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, "dev", func() float64 { return 0 })
	ready, reason := false, "no live etcd lease"
	srv := httptest.NewServer(Handler(reg, func() (bool, string) { return ready, reason }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no live etcd lease") {
		t.Errorf("/readyz before ready = %d %q", code, body)
	}
	ready = true
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "vipd_build_info") {
		t.Errorf("/metrics = %d, lacks build info", code)
	}
}
