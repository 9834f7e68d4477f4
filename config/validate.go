package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Limits from keepalived, which operators migrate from.
const (
	MinPriority = 1
	MaxPriority = 255
	MaxWeight   = 253
	// MinLeaseTTL leaves room, inside one lease, for a kernel address
	// lifetime of at least 1 s plus the kernel's 1 s expiry slack, so a
	// killed vipd's VIP vanishes before its lease can expire.
	MinLeaseTTL = 3 * time.Second
	MinInterval = 10 * time.Millisecond
	// maxIfNameLen is IFNAMSIZ-1.
	maxIfNameLen = 15
)

// nameRE limits node and group names to characters safe in etcd keys and
// environment variables.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// supportedCheckTypes are the check types this build runs.
var supportedCheckTypes = map[string]bool{"http": true, "tcp": true, "process": true, "exec": true, "file": true, "interface": true}

// typeKeys lists the type-specific keys of a check that are set, each with
// the types it belongs to; validateChecks rejects a key set on another type.
func (ch *Check) typeKeys() []struct {
	key   string
	types []string
} {
	type tk = struct {
		key   string
		types []string
	}
	var out []tk
	add := func(set bool, key string, types ...string) {
		if set {
			out = append(out, tk{key, types})
		}
	}
	add(ch.URL != "", "url", "http")
	add(len(ch.ExpectStatus) > 0, "expect_status", "http")
	add(ch.BodyContains != "", "body_contains", "http")
	add(ch.CAFile != "", "ca_file", "http")
	add(ch.InsecureSkipVerify, "insecure_skip_verify", "http")
	add(ch.Address != "", "address", "tcp")
	add(ch.Pidfile != "", "pidfile", "process")
	add(ch.Name != "", "name", "process", "interface")
	add(len(ch.Command) > 0, "command", "exec")
	add(ch.User != "", "user", "exec")
	add(ch.Path != "", "path", "file")
	add(ch.Missing != "", "missing", "file")
	return out
}

// Validate checks the configuration and fills Group.Prefixes. It reports
// every problem at once, each naming its key and value, joined and wrapped
// in ErrInvalid.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if !nameRE.MatchString(c.Node) {
		bad("node", "%q must be letters, digits, '_', '.' or '-'", c.Node)
	}
	c.validateEtcd(bad)
	if l := c.Metrics.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("metrics.listen", "%q is not host:port: %v", l, err)
		}
	}
	c.validatePeer(bad)
	c.validateChecks(bad)
	c.validateGroups(bad)

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

func (c *Config) validatePeer(bad func(key, format string, args ...any)) {
	p := c.Peer
	switch {
	case p.Listen == "" && p.KeyFile == "" && p.Advertise == "" && !p.Failsafe:
		return // off
	case p.Listen == "":
		bad("peer.listen", "required when peer.key_file %q, peer.advertise %q or peer.failsafe %v is set (the peer channel is off without it)", p.KeyFile, p.Advertise, p.Failsafe)
	case p.KeyFile == "":
		bad("peer.key_file", "required with peer.listen %q: peers authenticate with a shared key (head -c 32 /dev/urandom | base64 > /etc/vipd/peer.key; chmod 600)", p.Listen)
	}
	if p.Listen != "" {
		host, _, err := net.SplitHostPort(p.Listen)
		if err != nil {
			bad("peer.listen", "%q is not host:port: %v", p.Listen, err)
		} else if ip, perr := netip.ParseAddr(host); p.Advertise == "" && (host == "" || (perr == nil && ip.IsUnspecified())) {
			bad("peer.advertise", "required when peer.listen %q does not name one address: peers must know where to reach this node", p.Listen)
		}
	}
	if p.Advertise != "" {
		host, port, err := net.SplitHostPort(p.Advertise)
		if err != nil || host == "" || port == "" || port == "0" {
			bad("peer.advertise", "%q is not host:port", p.Advertise)
		} else if ip, perr := netip.ParseAddr(host); perr == nil && ip.IsUnspecified() {
			bad("peer.advertise", "%q: peers cannot reach an unspecified address", p.Advertise)
		}
	}
}

func (c *Config) validateEtcd(bad func(key, format string, args ...any)) {
	e := &c.Etcd
	if len(e.Endpoints) == 0 {
		bad("etcd.endpoints", "at least one endpoint is required")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%q is not an http:// or https:// URL", ep)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") || (len(e.Prefix) > 1 && strings.HasSuffix(e.Prefix, "/")) {
		bad("etcd.prefix", "%q must start with '/' and not end with '/'", e.Prefix)
	}
	if e.LeaseTTL < MinLeaseTTL {
		bad("etcd.lease_ttl", "%v is below the minimum %v (the VIP's kernel lifetime, 1 s or more plus 1 s of kernel slack, must end inside the lease)", e.LeaseTTL, MinLeaseTTL)
	} else if e.LeaseTTL%time.Second != 0 {
		bad("etcd.lease_ttl", "%v is not a whole number of seconds (etcd leases are granted in seconds)", e.LeaseTTL)
	}
	if e.DialTimeout <= 0 {
		bad("etcd.dial_timeout", "%v must be positive", e.DialTimeout)
	}
	if e.RequestTimeout <= 0 {
		bad("etcd.request_timeout", "%v must be positive", e.RequestTimeout)
	} else if e.LeaseTTL >= MinLeaseTTL && e.RequestTimeout*2 >= e.LeaseTTL {
		bad("etcd.request_timeout", "%v must be shorter than half of etcd.lease_ttl %v, or one stuck renewal would eat the fence margin", e.RequestTimeout, e.LeaseTTL)
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("etcd.username", "username %q and password_file %q must be set together", e.Username, e.PasswordFile)
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		bad("etcd.tls.cert_file", "cert_file %q and key_file %q must be set together", e.TLS.CertFile, e.TLS.KeyFile)
	}
}

func (c *Config) validateChecks(bad func(key, format string, args ...any)) {
	for _, name := range sortedKeys(c.Checks) {
		ch := c.Checks[name]
		key := "checks." + name
		if !nameRE.MatchString(name) {
			bad(key, "check name %q must be letters, digits, '_', '.' or '-'", name)
		}
		switch {
		case ch.Type == "":
			bad(key+".type", "is required (one of: %s)", strings.Join(sortedKeys(supportedCheckTypes), ", "))
		case !supportedCheckTypes[ch.Type]:
			bad(key+".type", "%q is not a supported check type (supported: %s)", ch.Type, strings.Join(sortedKeys(supportedCheckTypes), ", "))
		}
		if supportedCheckTypes[ch.Type] {
			for _, k := range ch.typeKeys() {
				if !slices.Contains(k.types, ch.Type) {
					bad(key+"."+k.key, "is a key of %s checks, not of this %q check", strings.Join(k.types, " and "), ch.Type)
				}
			}
		}
		switch ch.Type {
		case "http":
			u, err := url.Parse(ch.URL)
			if ch.URL == "" {
				bad(key+".url", "is required for an http check")
			} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(key+".url", "%q is not an http:// or https:// URL", ch.URL)
			} else if u.Scheme == "http" && (ch.CAFile != "" || ch.InsecureSkipVerify) {
				bad(key+".url", "%q is plain http; ca_file and insecure_skip_verify need an https:// URL", ch.URL)
			}
			for j, code := range ch.ExpectStatus {
				if code < 100 || code > 599 {
					bad(fmt.Sprintf("%s.expect_status[%d]", key, j), "%d is not an HTTP status code (100..599)", code)
				}
			}
			if ch.CAFile != "" && ch.InsecureSkipVerify {
				bad(key+".insecure_skip_verify", "true contradicts %s.ca_file %q: verify with the CA or skip verification, not both", key, ch.CAFile)
			}
		case "tcp":
			if ch.Address == "" {
				bad(key+".address", "is required for a tcp check (host:port)")
			} else if host, port, err := net.SplitHostPort(ch.Address); err != nil || host == "" || port == "" {
				bad(key+".address", "%q is not host:port", ch.Address)
			}
		case "process":
			if (ch.Pidfile == "") == (ch.Name == "") {
				bad(key+".pidfile", "a process check needs exactly one of pidfile and name (pidfile %q, name %q)", ch.Pidfile, ch.Name)
			} else if ch.Name != "" && (strings.Contains(ch.Name, "/") || len(ch.Name) > 255) {
				bad(key+".name", "%q must be an executable name without '/'", ch.Name)
			}
		case "exec":
			if len(ch.Command) == 0 || ch.Command[0] == "" {
				bad(key+".command", "is required for an exec check and its first element must not be empty (got %q)", ch.Command)
			}
		case "file":
			if ch.Path == "" {
				bad(key+".path", "is required for a file check")
			}
			if ch.Missing != "down" && ch.Missing != "zero" {
				bad(key+".missing", "%q must be down or zero", ch.Missing)
			}
		case "interface":
			if ch.Name == "" {
				bad(key+".name", "is required for an interface check (the interface name)")
			} else if len(ch.Name) > maxIfNameLen || strings.ContainsAny(ch.Name, "/ ") {
				bad(key+".name", "%q is not a valid interface name", ch.Name)
			}
		}
		if ch.Interval < MinInterval {
			bad(key+".interval", "%v is below the minimum %v", ch.Interval, MinInterval)
		}
		if ch.Timeout <= 0 {
			bad(key+".timeout", "%v must be positive", ch.Timeout)
		} else if ch.Timeout > ch.Interval {
			bad(key+".timeout", "%v is longer than %s.interval %v", ch.Timeout, key, ch.Interval)
		}
		if ch.FastInterval < MinInterval {
			bad(key+".fast_interval", "%v is below the minimum %v", ch.FastInterval, MinInterval)
		} else if ch.FastInterval > ch.Interval {
			bad(key+".fast_interval", "%v is longer than %s.interval %v", ch.FastInterval, key, ch.Interval)
		}
		if ch.Rise < 1 {
			bad(key+".rise", "%d must be at least 1", ch.Rise)
		}
		if ch.Fall < 1 {
			bad(key+".fall", "%d must be at least 1", ch.Fall)
		}
	}
}

func (c *Config) validateGroups(bad func(key, format string, args ...any)) {
	if len(c.Groups) == 0 {
		bad("groups", "at least one group is required")
	}
	groupOf := map[string]string{}       // group name -> key of first use
	addrOwner := map[netip.Addr]string{} // address -> key of first use
	for i := range c.Groups {
		g := &c.Groups[i]
		key := fmt.Sprintf("groups[%d]", i)
		if g.Name != "" {
			key = fmt.Sprintf("groups[%d] (%s)", i, g.Name)
		}
		switch {
		case g.Name == "":
			bad(key+".name", "is required")
		case !nameRE.MatchString(g.Name):
			bad(key+".name", "%q must be letters, digits, '_', '.' or '-'", g.Name)
		case groupOf[g.Name] != "":
			bad(key+".name", "%q is already used by %s", g.Name, groupOf[g.Name])
		default:
			groupOf[g.Name] = key
		}
		validIf := func(k, name string) bool {
			if len(name) > maxIfNameLen || strings.ContainsAny(name, "/ \t") {
				bad(k, "%q is not a valid interface name", name)
				return false
			}
			return true
		}
		if g.Interface != "" {
			validIf(key+".interface", g.Interface)
		}
		g.Prefixes, g.Links = g.Prefixes[:0], g.Links[:0]
		for j, a := range g.Addresses {
			akey := fmt.Sprintf("%s.addresses[%d]", key, j)
			link := g.Interface
			if a.Interface != "" {
				if !validIf(akey+".interface", a.Interface) {
					continue
				}
				link = a.Interface
			} else if g.Interface == "" {
				bad(key+".interface", "is required: %s (%s) names no interface of its own", akey, a.CIDR)
				continue
			}
			if a.CIDR == "" {
				bad(akey+".address", "is required")
				continue
			}
			p, err := netip.ParsePrefix(a.CIDR)
			if err != nil {
				bad(akey, "%q is not an address in CIDR form (e.g. 192.168.20.15/24)", a.CIDR)
				continue
			}
			if p.Addr().Zone() != "" || p.Addr().IsUnspecified() || p.Addr().IsLoopback() || p.Addr().IsMulticast() {
				bad(akey, "%q cannot be a VIP", a.CIDR)
				continue
			}
			if prev, dup := addrOwner[p.Addr()]; dup {
				bad(akey, "%s is already configured at %s", p.Addr(), prev)
				continue
			}
			addrOwner[p.Addr()] = akey
			if len(g.Prefixes) > 0 && g.Prefixes[0].Addr().Is4() != p.Addr().Is4() {
				bad(akey, "%q mixes address families with %q; use one group per family", a.CIDR, g.Prefixes[0])
				continue
			}
			g.Prefixes = append(g.Prefixes, p)
			g.Links = append(g.Links, link)
		}
		if g.Priority < MinPriority || g.Priority > MaxPriority {
			bad(key+".priority", "%d is outside %d..%d", g.Priority, MinPriority, MaxPriority)
		}
		if s := strings.ToUpper(g.State); s != "" && s != "MASTER" && s != "BACKUP" {
			bad(key+".state", "%q must be MASTER or BACKUP (and is ignored: etcd decides)", g.State)
		}
		if g.PreemptDelay < 0 {
			bad(key+".preempt_delay", "%v must not be negative", g.PreemptDelay)
		}
		validateMover(key+".mover", g.Mover, g.Prefixes, c.Etcd.LeaseTTL, bad)
		if g.BackoffStep < 0 {
			bad(key+".backoff_step", "%v must not be negative", g.BackoffStep)
		}
		tracked := map[string]bool{}
		for j, t := range g.Track {
			tkey := fmt.Sprintf("%s.track[%d]", key, j)
			if _, ok := c.Checks[t.Check]; !ok {
				bad(tkey+".check", "%q is not defined under checks", t.Check)
			}
			if tracked[t.Check] {
				bad(tkey+".check", "%q is tracked twice", t.Check)
			}
			tracked[t.Check] = true
			if t.Weight < -MaxWeight || t.Weight > MaxWeight {
				bad(tkey+".weight", "%d is outside %d..%d", t.Weight, -MaxWeight, MaxWeight)
			}
		}
		if g.GARP.Count < 0 {
			bad(key+".garp.count", "%d must not be negative", g.GARP.Count)
		}
		if g.GARP.Interval <= 0 {
			bad(key+".garp.interval", "%v must be positive", g.GARP.Interval)
		}
		for state, argv := range map[string][]string{"master": g.Notify.Master, "backup": g.Notify.Backup, "fault": g.Notify.Fault, "stop": g.Notify.Stop, "any": g.Notify.Any} {
			if len(argv) > 0 && argv[0] == "" {
				bad(key+".notify."+state, "the command (first element) is empty")
			}
		}
		if g.Notify.Timeout < 0 {
			bad(key+".notify.timeout", "%v must not be negative", g.Notify.Timeout)
		}
		if g.GARP.Refresh < 0 {
			bad(key+".garp.refresh", "%v must not be negative", g.GARP.Refresh)
		}
		if g.GARP.ProbeWait < MinProbeWait || g.GARP.ProbeWait > MaxProbeWait {
			bad(key+".garp.probe_wait", "%v is outside %v..%v (it delays every bind)", g.GARP.ProbeWait, MinProbeWait, MaxProbeWait)
		}
		v6 := len(g.Prefixes) > 0 && !g.Prefixes[0].Addr().Is4()
		switch g.Scope {
		case "", "global":
		case "link", "host":
			if v6 {
				bad(key+".scope", "%q applies to IPv4 addresses only; the group has %v (IPv6 scope follows from the address)", g.Scope, g.Prefixes[0])
			}
		default:
			bad(key+".scope", "%q must be global, link or host", g.Scope)
		}
		if g.Label != "" {
			switch {
			case v6:
				bad(key+".label", "%q applies to IPv4 addresses only; the group has %v", g.Label, g.Prefixes[0])
			case len(g.Interfaces()) > 1:
				bad(key+".label", "%q labels the addresses of one interface; the group's are on %s (use one group per labelled interface)", g.Label, strings.Join(g.Interfaces(), " and "))
			case len(g.Interfaces()) == 1 && (!strings.HasPrefix(g.Label, g.Interfaces()[0]+":") || len(g.Label) == len(g.Interfaces()[0])+1):
				bad(key+".label", "%q must be the interface name %q, a colon and a suffix (e.g. %q)", g.Label, g.Interfaces()[0], g.Interfaces()[0]+":vip")
			case len(g.Label) > maxIfNameLen:
				bad(key+".label", "%q is %d bytes; the kernel allows %d", g.Label, len(g.Label), maxIfNameLen)
			case strings.ContainsAny(g.Label, " /\t\n"):
				bad(key+".label", "%q must not contain spaces or slashes", g.Label)
			}
		}
	}
}

// Warnings lists problems that do not stop vipd, such as a check no group
// tracks. Call after Validate.
func (c *Config) Warnings() []string {
	used := map[string]bool{}
	for _, g := range c.Groups {
		for _, t := range g.Track {
			used[t.Check] = true
		}
	}
	var w []string
	for _, name := range sortedKeys(c.Checks) {
		if !used[name] {
			w = append(w, fmt.Sprintf("checks.%s: not tracked by any group; it will not run", name))
		}
	}
	for i, g := range c.Groups {
		if g.State != "" {
			w = append(w, fmt.Sprintf("groups[%d] (%s).state: %q is ignored; etcd decides which node holds the group", i, g.Name, g.State))
		}
	}
	return w
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validateMover checks a group's mover section, with the group's
// addresses (a private IP or a route moves those) and the lease TTL (an
// exec mover's command is killed at the fence it starts with).
func validateMover(key string, m Mover, addrs []netip.Prefix, leaseTTL time.Duration, bad func(key, format string, args ...any)) {
	hasAddrs := len(addrs) > 0
	prefixed := func(k, v, prefix string) {
		if !strings.HasPrefix(v, prefix) || len(v) == len(prefix) {
			bad(k, "%q is not an ID of the form %s…", v, prefix)
		}
	}
	switch m.Type {
	case "":
		if len(m.Command) > 0 || !reflect.DeepEqual(m.AWS, AWSMover{}) {
			bad(key+".type", "is required with a mover's settings (aws or exec)")
		}
		return
	case "exec":
		if len(m.Command) == 0 {
			bad(key+".command", "is required for an exec mover")
		}
		if !reflect.DeepEqual(m.AWS, AWSMover{}) {
			bad(key+".aws", "is for the aws mover; this one is exec")
		}
		if m.Timeout >= leaseTTL {
			bad(key+".timeout", "%v is not shorter than etcd.lease_ttl %v: an exec mover's command is killed at the fence it starts with, less than a lease TTL away (raise etcd.lease_ttl for a slow CLI)", m.Timeout, leaseTTL)
		}
	case "aws":
		if len(m.Command) > 0 {
			bad(key+".command", "is for the exec mover; this one is aws")
		}
		a := m.AWS
		if !a.PrivateIP && a.ElasticIP == "" && len(a.RouteTables) == 0 {
			bad(key+".aws", "names nothing to move: set private_ip, elastic_ip or route_tables")
		}
		if (a.PrivateIP || len(a.RouteTables) > 0) && !hasAddrs {
			bad(key+".aws", "private_ip and route_tables move the group's addresses, and it has none")
		}
		if a.PrivateIP && hasAddrs && !addrs[0].Addr().Is4() {
			bad(key+".aws.private_ip", "moves IPv4 addresses (AssignPrivateIpAddresses); this group's are IPv6")
		}
		if a.NetworkInterface != "" {
			prefixed(key+".aws.network_interface", a.NetworkInterface, "eni-")
		}
		if a.ElasticIP != "" {
			prefixed(key+".aws.elastic_ip", a.ElasticIP, "eipalloc-")
		}
		for i, r := range a.RouteTables {
			prefixed(fmt.Sprintf("%s.aws.route_tables[%d]", key, i), r, "rtb-")
		}
		for k, e := range map[string]string{"endpoint": a.Endpoint, "imds_endpoint": a.IMDSEndpoint} {
			if u, err := url.Parse(e); e != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
				bad(key+".aws."+k, "%q is not an http(s) URL", e)
			}
		}
	default:
		bad(key+".type", "%q is not a mover type (aws, exec)", m.Type)
		return
	}
	if m.Interval < time.Second {
		bad(key+".interval", "%v is too short: at least 1s (a provider API call takes seconds)", m.Interval)
	}
	if m.Timeout <= 0 {
		bad(key+".timeout", "%v must be positive", m.Timeout)
	} else if m.Timeout > m.Interval {
		bad(key+".timeout", "%v is longer than mover.interval %v", m.Timeout, m.Interval)
	}
}
