package config

import (
	"net/netip"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is one vipd node's configuration file.
type Config struct {
	// Node is this node's name in etcd. Zero value: the hostname.
	Node string `yaml:"node"`
	// Etcd says how to reach the arbiter.
	Etcd Etcd `yaml:"etcd"`
	// Metrics configures the Prometheus/health HTTP listener.
	Metrics Metrics `yaml:"metrics"`
	// Peer configures the peer channel, through which a node cut from
	// etcd has its peers renew its lease and relay its writes. Zero
	// value: off.
	Peer Peer `yaml:"peer"`
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

// Peer configures the authenticated channel between vipd nodes
// (docs/design.md §2.8). Every node of a group needs it for a holder cut
// from etcd to keep its VIPs.
type Peer struct {
	// Listen is host:port to serve peers on. Zero value: the channel is
	// off. Requires KeyFile.
	Listen string `yaml:"listen"`
	// Advertise is host:port as peers reach this node, published in its
	// candidate records. Zero value: Listen, which must then name a
	// specific address (not 0.0.0.0 or ::).
	Advertise string `yaml:"advertise"`
	// KeyFile holds the cluster's shared key (at least 32 bytes, readable
	// only by its owner), the same file on every node. Requires Listen.
	KeyFile string `yaml:"key_file"`
	// Failsafe lets a holder keep its VIPs while nobody can reach etcd,
	// for as long as every other member of the group (as last recorded in
	// etcd) answers on the peer channel that it cannot reach etcd either
	// and promises not to claim them. Zero value: false (the holder
	// removes its VIPs at its fence when its lease cannot be renewed, as
	// without the peer channel). Requires Listen.
	Failsafe bool `yaml:"failsafe"`
}

// Endpoint is where peers reach this node: Advertise, else Listen.
func (p Peer) Endpoint() string {
	if p.Advertise != "" {
		return p.Advertise
	}
	return p.Listen
}

// Metrics configures the HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen is host:port. "" turns the listener off. Default "127.0.0.1:9842".
	Listen string `yaml:"listen"`
}

// Check is one named health check. The common keys (type, interval,
// timeout, rise, fall, init_fail) apply to every type; the others belong to
// one type each, and setting a key on a check of another type is an error.
type Check struct {
	// Type is http | tcp | process | exec | file | interface. Required.
	Type string `yaml:"type"`
	// URL is the http check's URL (e.g. HAProxy's monitor-uri). Required for http.
	URL string `yaml:"url"`
	// Interval between runs. Zero value: 1s. Minimum 10ms. The process,
	// file and interface checks also run at once on an event (the watched
	// process exiting, seen through a pidfd; inotify; netlink), so for
	// them the interval is only a safety net.
	Interval time.Duration `yaml:"interval"`
	// FastInterval is the wait before re-checking an up check that has
	// just failed, until it has failed Fall times in a row or passes
	// (HAProxy's fastinter): with fall 2, a failure is confirmed after one
	// FastInterval instead of one Interval. Must not exceed Interval;
	// minimum 10ms. Zero value: Interval (keepalived's behaviour). Rise is
	// always counted on the Interval.
	FastInterval time.Duration `yaml:"fast_interval"`
	// Timeout of one run; must not exceed Interval. Zero value: Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is the number of consecutive successes that turn a down check up.
	// Zero value: 1.
	Rise int `yaml:"rise"`
	// Fall is the number of consecutive failures that turn an up check down.
	// Zero value: 1.
	Fall int `yaml:"fall"`
	// InitFail starts the check as down (keepalived init_fail): it then
	// needs Rise successes to come up. Default false: the first result
	// decides at once, up or down.
	InitFail bool `yaml:"init_fail"`

	// ExpectStatus lists the http status codes that pass. Empty: any 2xx.
	ExpectStatus []int `yaml:"expect_status"`
	// BodyContains, if set, must occur in the http response body (the first
	// 64 KiB are searched).
	BodyContains string `yaml:"body_contains"`
	// CAFile is a PEM bundle that verifies an https check's server instead
	// of the system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify turns off https certificate verification.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`

	// Address is the tcp check's host:port. Required for tcp.
	Address string `yaml:"address"`

	// Pidfile names the process check's pidfile: up while that process is
	// alive and not a zombie. Exactly one of Pidfile and Name for process.
	Pidfile string `yaml:"pidfile"`
	// Name is the process check's executable name (any live, non-zombie
	// process in vipd's PID namespace with that comm or executable basename;
	// what keepalived's `killall -0 NAME` did), or the interface check's
	// interface name (required for interface).
	Name string `yaml:"name"`

	// Command is the exec check's argv (no shell unless argv names one);
	// exit status 0 passes. Required for exec.
	Command []string `yaml:"command"`
	// User runs the exec check's command as this user. Zero value: nobody
	// when vipd runs as root, vipd's own user otherwise (under the shipped
	// unit: vipd). Running as root needs an explicit `user: root`.
	User string `yaml:"user"`

	// Path is the file check's file (keepalived track_file): its content
	// is an integer that multiplies the track weight. Required for file.
	Path string `yaml:"path"`
	// Missing says what an absent file means: "down" (the check fails) or
	// "zero" (reads as 0, keepalived's behaviour). Zero value: "down".
	Missing string `yaml:"missing"`
}

// Group is one VIP group: a set of addresses that move together.
type Group struct {
	// Name identifies the group in etcd; unique. Required.
	Name string `yaml:"name"`
	// Interface the addresses are bound to, unless an address names its
	// own; its link going down puts the group in FAULT (keepalived's VRRP
	// interface). Required when an address uses it; may be empty only when
	// every address names its interface, or the group has none.
	Interface string `yaml:"interface"`
	// Addresses are the VIPs, which move together: "192.168.20.15/24" on
	// Interface, or {address: 10.1.0.5/24, interface: eth1} on another
	// (keepalived's `dev`; several interfaces make a keepalived sync group
	// one group). Zero value: none, a group that elects a holder for its
	// notify hooks only (keepalived instances whose hook moves a cloud
	// address). One address family per group.
	Addresses []Address `yaml:"addresses"`
	// Priority is the base priority, 1..255. Zero value: 100.
	Priority int `yaml:"priority"`
	// State is keepalived's MASTER|BACKUP start state, accepted so migrated
	// configs load, and ignored with a warning: etcd decides the holder.
	State string `yaml:"state"`
	// Preempt lets this node, when it is the better candidate, take the VIP
	// from a worse holder (false = keepalived's nopreempt). Default true.
	Preempt bool `yaml:"preempt"`
	// PreemptDelay is how long this node must have been the better
	// candidate before the holder yields to it (as keepalived, the setting
	// of the node taking over counts). Zero value: at once.
	PreemptDelay time.Duration `yaml:"preempt_delay"`
	// BackoffStep is the wait per rank before claiming a vacant group.
	// Zero value: 100ms.
	BackoffStep time.Duration `yaml:"backoff_step"`
	// Track lists the checks that adjust this group's priority.
	Track []Track `yaml:"track"`
	// GARP configures gratuitous ARP after the VIP is bound.
	GARP GARP `yaml:"garp"`
	// Label is the IPv4 address label of every address of the group, as
	// keepalived's `virtual_ipaddress { ... label eth0:vip }`: the
	// interface name, a colon and a suffix, at most 15 bytes. IPv4 groups
	// only (Linux has no IPv6 labels). Zero value: none (the kernel
	// labels the address with the interface name).
	Label string `yaml:"label"`
	// Scope is the address scope of every address of the group: global,
	// link or host (keepalived's `scope`). Only global for IPv6 groups
	// (the kernel derives an IPv6 scope from the address). Zero value:
	// global.
	Scope string `yaml:"scope"`
	// Notify lists commands run on state changes (argv lists).
	Notify Notify `yaml:"notify"`
	// Mover moves the group's addresses at a cloud provider, where a
	// gratuitous ARP moves nothing (docs/cloud.md). Zero value: none.
	Mover Mover `yaml:"mover"`

	// Prefixes are Addresses parsed by Validate, and Links the interface
	// each is bound to (Links[i] for Prefixes[i]).
	Prefixes []netip.Prefix `yaml:"-"`
	Links    []string       `yaml:"-"`
}

// Address is one VIP of a group. In YAML it is either a scalar, the
// address in CIDR form on the group's interface, or a mapping naming its
// own interface.
type Address struct {
	// CIDR is the address and its prefix length (192.168.20.15/24).
	// Required.
	CIDR string `yaml:"address"`
	// Interface the address is bound to. Zero value: the group's.
	Interface string `yaml:"interface"`
}

// UnmarshalYAML accepts "A/P" as well as {address: A/P, interface: IF}.
func (a *Address) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = Address{}
		return n.Decode(&a.CIDR)
	}
	type plain Address // no methods: avoids recursion
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*a = Address(p)
	return nil
}

// MarshalYAML writes the scalar form when the address has no interface
// of its own.
func (a Address) MarshalYAML() (any, error) {
	if a.Interface == "" {
		return a.CIDR, nil
	}
	type plain Address
	return plain(a), nil
}

// Addrs returns the scalar form of each CIDR, for tests and tools that
// build configs in Go.
func Addrs(cidrs ...string) []Address {
	out := make([]Address, len(cidrs))
	for i, c := range cidrs {
		out[i] = Address{CIDR: c}
	}
	return out
}

// Interfaces lists every interface the group uses, its own first (if
// set), then those its addresses name, without repeats (an empty name,
// unknown, is left out). Call after Validate.
func (g Group) Interfaces() []string {
	var out []string
	if g.Interface != "" {
		out = append(out, g.Interface)
	}
	for _, l := range g.Links {
		if l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// AddressStrings returns each address in CIDR form, as written.
func (g Group) AddressStrings() []string {
	out := make([]string, len(g.Addresses))
	for i, a := range g.Addresses {
		out[i] = a.CIDR
	}
	return out
}

// Track ties a check to a group's priority.
type Track struct {
	// Check names an entry of Config.Checks. Required.
	Check string `yaml:"check"`
	// Weight is added to the priority while the check is up (if > 0) or
	// subtracted while it is down (if < 0); 0 puts the group in FAULT
	// while the check is down. Range -253..253. Zero value: 0 (FAULT).
	// For a file check the file's value multiplies the weight.
	Weight int `yaml:"weight"`
	// Reverse inverts the weight's effect (keepalived `weight N reverse`):
	// a positive weight is subtracted while the check is up, a negative one
	// added while it is down, and weight 0 means FAULT while the check is up.
	Reverse bool `yaml:"reverse"`
}

// GARP configures gratuitous ARP announcements.
type GARP struct {
	// Count is the number of rounds sent after acquiring. Zero value: 5.
	Count int `yaml:"count"`
	// Interval between rounds. Zero value: 1s.
	Interval time.Duration `yaml:"interval"`
	// Refresh re-announces periodically while holding. Zero: never.
	Refresh time.Duration `yaml:"refresh"`
	// Probe sends ARP probes (RFC 5227 §2.1.1: sender IP 0.0.0.0) for each
	// IPv4 VIP after winning the group and before binding it, and listens
	// for ProbeWait: another host answering for a VIP is reported as an
	// address conflict (log and vipd_address_conflicts_total). vipd still
	// binds the VIP, since etcd made this node the holder; the report is
	// for the operator to remove the stray address. IPv6 groups ignore it.
	// Default false.
	Probe bool `yaml:"probe"`
	// ProbeWait is how long a probe listens; it delays every bind by that
	// much, so it counts against the failover time. 10ms..500ms.
	// Zero value: 50ms.
	ProbeWait time.Duration `yaml:"probe_wait"`
}

// Limits and default of GARP.ProbeWait.
const (
	DefaultProbeWait = 50 * time.Millisecond
	MinProbeWait     = 10 * time.Millisecond
	MaxProbeWait     = 500 * time.Millisecond
)

// Notify lists argv commands run on transitions, as keepalived's
// notify_master, notify_backup, notify_fault and notify_stop. They run in
// the background (never delaying a failover) with VIPD_GROUP, VIPD_NODE,
// VIPD_STATE, VIPD_PREVIOUS_STATE, VIPD_INTERFACE (the group's, or the first
// an address names), VIPD_INTERFACES (every one), VIPD_ADDRESSES and
// VIPD_PRIORITY in their environment. No shell unless the argv names one.
// Mover makes a cloud provider deliver a group's addresses to its holder:
// called by the holder only, inside its fence, after the VIPs are bound;
// re-checked while it holds and asserted again on drift; never undone on
// release (the next holder takes the addresses over).
type Mover struct {
	// Type is "aws" (the EC2 API) or "exec" (a command, for every other
	// provider). Zero value: no mover.
	Type string `yaml:"type"`
	// Interval is how often the holder re-checks the provider, asserting
	// again if the addresses are not delivered to it. Zero value: 10s.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one call (the fence bounds it too). At most Interval.
	// Zero value: 5s, or Interval if shorter.
	Timeout time.Duration `yaml:"timeout"`
	// Command is the exec mover's argv (no shell unless argv names one).
	// It is run with VIPD_MOVER_ACTION=assert (make the provider deliver
	// the addresses here; exit 0 when done) or check (exit 0: delivered
	// here, exit 3: not, anything else: unknown), and the group, node,
	// addresses, lease and deadline in its environment. Required for exec.
	Command []string `yaml:"command"`
	// AWS configures the aws mover.
	AWS AWSMover `yaml:"aws"`
}

// AWSMover is the aws mover's part: what to move to this instance's
// network interface, and where to find the API.
type AWSMover struct {
	// Region is the EC2 region. Zero value: this instance's, from the
	// instance metadata service (IMDSv2).
	Region string `yaml:"region"`
	// NetworkInterface is the ENI (eni-…) the addresses move to. Zero
	// value: this instance's primary interface, from IMDSv2.
	NetworkInterface string `yaml:"network_interface"`
	// PrivateIP moves the group's addresses as secondary private IPs to
	// the interface (AssignPrivateIpAddresses, with reassignment).
	PrivateIP bool `yaml:"private_ip"`
	// ElasticIP is an Elastic IP's allocation ID (eipalloc-…) associated
	// with the interface (AssociateAddress, with reassociation), on the
	// group's first address, or the interface's primary one if the group
	// has none. Zero value: none.
	ElasticIP string `yaml:"elastic_ip"`
	// RouteTables (rtb-…) each get a route for every group address (a
	// /32, or /128) to the interface (ReplaceRoute, CreateRoute if
	// absent): a VIP outside the VPC's range. Zero value: none.
	RouteTables []string `yaml:"route_tables"`
	// Endpoint overrides the EC2 API endpoint (a VPC endpoint). Zero
	// value: the region's.
	Endpoint string `yaml:"endpoint"`
	// IMDSEndpoint overrides the instance metadata service's address.
	// Zero value: the SDK's default.
	IMDSEndpoint string `yaml:"imds_endpoint"`
}

type Notify struct {
	Master []string `yaml:"master"`
	Backup []string `yaml:"backup"`
	Fault  []string `yaml:"fault"`
	Stop   []string `yaml:"stop"`
	// Any runs on every transition to MASTER, BACKUP, FAULT or STOP,
	// alongside that state's own hook (both start at once, neither
	// waits for the other), as keepalived's generic `notify`
	// script: with four arguments appended to the argv, keepalived's
	// convention: INSTANCE, the group name, the new state and the
	// effective priority (for STOP, the last one reported). The
	// environment is the same as the other hooks'.
	Any []string `yaml:"any"`
	// Timeout kills a hook (and its process group) that runs longer. A
	// hook is done when it exits, whatever helpers it left running.
	// Zero value: 30s.
	Timeout time.Duration `yaml:"timeout"`
}
