package config

import (
	"net/netip"
	"time"
)

// Config is one vipd node's configuration file.
type Config struct {
	// Node is this node's name in etcd. Zero value: the hostname.
	Node string `yaml:"node"`
	// Etcd says how to reach the arbiter.
	Etcd Etcd `yaml:"etcd"`
	// Metrics configures the Prometheus/health HTTP listener.
	Metrics Metrics `yaml:"metrics"`
	// Checks are the named health checks groups may track.
	Checks map[string]Check `yaml:"checks"`
	// Groups are the VIP groups this node stands for. At least one.
	Groups []Group `yaml:"groups"`
}

// Etcd is the etcd client configuration.
type Etcd struct {
	// Endpoints are etcd client URLs. Required, at least one.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix for all vipd keys. Zero value: "/vipd".
	Prefix string `yaml:"prefix"`
	// LeaseTTL is the node lease TTL, in whole seconds, at least 3s.
	// Zero value: 3s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// DialTimeout bounds connecting to an endpoint. Zero value: 2s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds one lease renewal or key request, so a stuck
	// member is abandoned for another endpoint quickly. Zero value: 500ms;
	// must be shorter than LeaseTTL/2.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// Username for etcd auth; requires PasswordFile. Zero value: no auth.
	Username string `yaml:"username"`
	// PasswordFile holds the etcd password (trailing newline ignored).
	PasswordFile string `yaml:"password_file"`
	// TLS configures client TLS. Zero value: plain TCP.
	TLS TLS `yaml:"tls"`
}

// TLS holds client TLS files (PEM).
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Metrics configures the HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen is host:port. "" turns the listener off. Default "127.0.0.1:9842".
	Listen string `yaml:"listen"`
}

// Check is one named health check.
type Check struct {
	// Type is http | tcp | process | exec. Required.
	Type string `yaml:"type"`
	// URL is the http check's URL (e.g. HAProxy's monitor-uri). Required for http.
	URL string `yaml:"url"`
	// Interval between runs. Zero value: 1s. Minimum 10ms.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one run; must not exceed Interval. Zero value: Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is the number of consecutive successes that turn a down check up.
	// Zero value: 1.
	Rise int `yaml:"rise"`
	// Fall is the number of consecutive failures that turn an up check down.
	// Zero value: 1.
	Fall int `yaml:"fall"`
}

// Group is one VIP group: a set of addresses that move together.
type Group struct {
	// Name identifies the group in etcd; unique. Required.
	Name string `yaml:"name"`
	// Interface the addresses are bound to. Required.
	Interface string `yaml:"interface"`
	// Addresses are the VIPs in CIDR form (192.168.20.15/24). At least one.
	Addresses []string `yaml:"addresses"`
	// Priority is the base priority, 1..255. Zero value: 100.
	Priority int `yaml:"priority"`
	// Preempt lets a better candidate take the VIP from a worse holder.
	// Default true (keepalived's default).
	Preempt bool `yaml:"preempt"`
	// PreemptDelay is how long a better candidate must have been present
	// before the holder yields. Zero value: at once.
	PreemptDelay time.Duration `yaml:"preempt_delay"`
	// BackoffStep is the wait per rank before claiming a vacant group.
	// Zero value: 100ms.
	BackoffStep time.Duration `yaml:"backoff_step"`
	// Track lists the checks that adjust this group's priority.
	Track []Track `yaml:"track"`
	// GARP configures gratuitous ARP after the VIP is bound.
	GARP GARP `yaml:"garp"`
	// Notify lists commands run on state changes (argv lists).
	Notify Notify `yaml:"notify"`

	// Prefixes are Addresses parsed by Validate.
	Prefixes []netip.Prefix `yaml:"-"`
}

// Track ties a check to a group's priority.
type Track struct {
	// Check names an entry of Config.Checks. Required.
	Check string `yaml:"check"`
	// Weight is added to the priority while the check is up (if > 0) or
	// subtracted while it is down (if < 0); 0 puts the group in FAULT
	// while the check is down. Range -253..253. Zero value: 0 (FAULT).
	Weight int `yaml:"weight"`
}

// GARP configures gratuitous ARP announcements.
type GARP struct {
	// Count is the number of rounds sent after acquiring. Zero value: 5.
	Count int `yaml:"count"`
	// Interval between rounds. Zero value: 1s.
	Interval time.Duration `yaml:"interval"`
	// Refresh re-announces periodically while holding. Zero: never.
	Refresh time.Duration `yaml:"refresh"`
}

// Notify lists argv commands run on transitions, as keepalived's
// notify_master, notify_backup, notify_fault and notify_stop. They run in
// the background (never delaying a failover) with VIPD_GROUP, VIPD_NODE,
// VIPD_STATE, VIPD_PREVIOUS_STATE, VIPD_INTERFACE, VIPD_ADDRESSES and
// VIPD_PRIORITY in their environment. No shell unless the argv names one.
type Notify struct {
	Master []string `yaml:"master"`
	Backup []string `yaml:"backup"`
	Fault  []string `yaml:"fault"`
	Stop   []string `yaml:"stop"`
	// Timeout kills a hook (and its process group) that runs longer.
	// Zero value: 30s.
	Timeout time.Duration `yaml:"timeout"`
}
