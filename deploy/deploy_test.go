// Package deploy holds no code: its tests check the shipped systemd unit,
// alert rules and dashboard with the real tools (systemd-analyze, promtool).
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vipd/vipd/internal/prereq"
)

// metricNames are the metrics vipd exports (metrics/); dashboards and alerts
// may use only these (histograms also as _bucket, _sum and _count).
func metricNames() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{"vipd_group_holder", "vipd_group_priority", "vipd_group_state",
		"vipd_group_transitions_total", "vipd_check_up", "vipd_lease_renewals_total",
		"vipd_lease_fence_remaining_seconds", "vipd_announcements_total", "vipd_build_info",
		"vipd_failsafe_active", "vipd_peer_relayed_total", "vipd_peer_served_total", "vipd_peer_refused_total",
		"vipd_check_events"} {
		m[n] = true
	}
	m["vipd_mover_calls_total"] = true
	for _, h := range []string{"vipd_check_duration_seconds", "vipd_acquire_seconds", "vipd_check_to_release_seconds", "vipd_mover_call_duration_seconds"} {
		for _, s := range []string{"", "_bucket", "_sum", "_count"} {
			m[h+s] = true
		}
	}
	return m
}

var vipdMetricRE = regexp.MustCompile(`\bvipd_[a-z_]+\b`)

func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		prereq.Missing(t, "%s not installed (Debian package: %s)", tool, map[string]string{"promtool": "prometheus", "systemd-analyze": "systemd"}[tool])
	}
	return p
}

// buildVipd builds cmd/vipd into dir and returns its path.
func buildVipd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "vipd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/vipd")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/vipd: %v\n%s", err, out)
	}
	return bin
}

// verifyUnit runs systemd-analyze verify on the unit text, installed as
// vipd.service in a temp dir. It returns the tool's output and error.
func verifyUnit(t *testing.T, dir, unit string) (string, error) {
	t.Helper()
	path := filepath.Join(dir, "vipd.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	return string(out), err
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` on the shipped unit.
// verify insists that every Exec*= binary exists and is executable, and
// /usr/bin/vipd is not installed on a build machine, so the test builds
// vipd and verifies a copy of the unit whose /usr/bin/vipd paths point at
// that build; nothing else in the unit is changed. Any output counts as a
// failure: verify reports unknown keys and bad values as warnings only.
func TestSystemdUnitVerifies(t *testing.T) {
	need(t, "systemd-analyze")
	src, err := os.ReadFile("systemd/vipd.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := buildVipd(t, dir)
	unit := strings.ReplaceAll(string(src), "/usr/bin/vipd", bin)
	if out, err := verifyUnit(t, dir, unit); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The harness itself must catch mistakes: a misspelt key and a missing
	// binary are both reported.
	if out, _ := verifyUnit(t, dir, strings.Replace(unit, "Type=notify", "Type=notfy", 1)); !strings.Contains(out, "notfy") {
		t.Errorf("verify did not report a bad Type=: %q", out)
	}
	if out, err := verifyUnit(t, dir, strings.ReplaceAll(unit, bin, "/nonexistent/vipd")); err == nil {
		t.Errorf("verify accepted a missing ExecStart binary: %q", out)
	}

	// The offline security score stays in systemd's "OK" band.
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", filepath.Join(dir, "vipd.service")).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for vipd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 3.0 {
		t.Errorf("exposure level %.1f > 3.0; hardening was lost:\n%s", score, out)
	}
}

// unitKeys parses a unit into section.key → values.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

// The settings the design depends on are present with these values.
func TestSystemdUnitSettings(t *testing.T) {
	keys := unitKeys(t, "systemd/vipd.service")
	want := map[string]string{
		"Service.Type":                    "notify",
		"Service.NotifyAccess":            "main",
		"Service.WatchdogSec":             "10s",
		"Service.Restart":                 "always",
		"Service.RestartSec":              "1s",
		"Service.ExecStart":               "/usr/bin/vipd run --config /etc/vipd/vipd.yaml",
		"Service.ExecStopPost":            "/usr/bin/vipd cleanup --config /etc/vipd/vipd.yaml",
		"Service.User":                    "vipd",
		"Service.Group":                   "vipd",
		"Service.AmbientCapabilities":     "CAP_NET_ADMIN CAP_NET_RAW",
		"Service.CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.ProtectKernelTunables":   "yes",
		"Service.ProtectControlGroups":    "yes",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
		"Service.RuntimeDirectory":        "vipd", // $RUNTIME_DIRECTORY: vipd.lock, one vipd per host
		"Unit.StartLimitIntervalSec":      "0",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", k, got, v)
		}
	}
	// Process checks read other users' /proc entries; exec checks may be
	// JIT runtimes; vipd needs its own network namespace view.
	for _, k := range []string{"Service.ProtectProc", "Service.PrivateNetwork", "Service.MemoryDenyWriteExecute", "Service.PrivateUsers", "Service.IPAddressDeny"} {
		if v, ok := keys[k]; ok {
			t.Errorf("%s=%v would break vipd or its checks", k, v)
		}
	}
}

func TestAlertRules(t *testing.T) {
	promtool := need(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "vipd-alerts.yml"},
		{"test", "rules", "vipd-alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The alert rules use only real metric names and cover the required alerts.
func TestAlertRulesNames(t *testing.T) {
	data, err := os.ReadFile("prometheus/vipd-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	known := metricNames()
	for _, n := range vipdMetricRE.FindAllString(string(data), -1) {
		if !known[n] {
			t.Errorf("vipd-alerts.yml uses unknown metric %s", n)
		}
	}
	for _, a := range []string{"VipdGroupNoHolder", "VipdGroupTwoHolders", "VipdFenceMarginLow", "VipdFlapping", "VipdCheckDown", "VipdLeaseRenewErrors",
		"VipdHoldingWithoutEtcd", "VipdLeaseRelayed"} {
		if !strings.Contains(string(data), "alert: "+a+"\n") {
			t.Errorf("alert %s missing", a)
		}
	}
}

// dashboardExprs returns every PromQL expression in the dashboard: panel
// target exprs and templating queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("grafana/vipd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/vipd-dashboard.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(s, "vipd_"))) {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	sort.Strings(exprs)
	return exprs
}

func TestDashboardMetricNames(t *testing.T) {
	exprs := dashboardExprs(t)
	if len(exprs) < 10 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	known := metricNames()
	used := map[string]bool{}
	for _, e := range exprs {
		names := vipdMetricRE.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("expression uses no vipd metric: %s", e)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("unknown metric %s in %s", n, e)
			}
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
		}
	}
	for _, n := range []string{"vipd_group_holder", "vipd_group_priority", "vipd_group_state", "vipd_lease_fence_remaining_seconds",
		"vipd_lease_renewals_total", "vipd_check_up", "vipd_check_duration_seconds", "vipd_group_transitions_total"} {
		if !used[n] {
			t.Errorf("dashboard does not show %s", n)
		}
	}
}

// Every dashboard expression is valid PromQL: promtool checks them as the
// expressions of a generated rule file (Grafana's variables substituted).
func TestDashboardPromQL(t *testing.T) {
	promtool := need(t, "promtool")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, e := range dashboardExprs(t) {
		if strings.HasPrefix(e, "label_values(") {
			continue // a Grafana function, not PromQL
		}
		e = strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*").Replace(e)
		n++
		fmt.Fprintf(&b, "      - record: dashboard:expr%d\n        expr: %s\n", n, strconv.Quote(e))
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("SUCCESS: %d rules found", n)) {
		t.Errorf("promtool check rules on the dashboard's expressions: %v\n%s\n%s", err, out, b.String())
	}
}
