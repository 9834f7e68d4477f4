package keepalived

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Render writes the converted configuration as commented vipd YAML. source
// names the keepalived file in the header comment.
func (r *Result) Render(source string) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# vipd configuration converted from %s by `vipd import-keepalived`.\n", oneLine(source))
	p("# Read the notes it printed, then run: vipd check --config THIS_FILE\n")
	if r.Node != "" {
		p("node: %s\n", yq(r.Node))
	} else {
		p("# node: defaults to the hostname; it must differ on every node.\n")
	}
	p("etcd:\n")
	p("  # keepalived has no arbiter: list your etcd members (three or more).\n")
	p("  endpoints:\n")
	for _, e := range r.Endpoints {
		p("    - %s\n", yq(e))
	}
	if len(r.Checks) > 0 {
		p("checks:\n")
	}
	for _, c := range r.Checks {
		p("  %s:\n", yq(c.Name))
		switch {
		case c.Type == "interface" || strings.Contains(c.Script, ": "):
			p("    # %s\n", oneLine(c.Script))
		default:
			p("    # vrrp_script: %s\n", oneLine(c.Script))
		}
		p("    type: %s\n", c.Type)
		switch c.Type {
		case "process":
			p("    name: %s\n", yq(c.Process))
		case "interface":
			p("    name: %s\n", yq(c.Iface))
		case "file":
			p("    path: %s\n", yq(c.Path))
			p("    missing: zero\n")
		default:
			p("    command: %s\n", flowList(c.Command))
			p("    user: %s\n", yq(c.User))
		}
		if c.Interval > 0 {
			p("    interval: %s\n", dur(c.Interval))
		}
		if c.Timeout > 0 {
			p("    timeout: %s\n", dur(c.Timeout))
		}
		if c.Rise > 0 {
			p("    rise: %d\n", c.Rise)
		}
		if c.FastInterval > 0 {
			p("    fast_interval: %v\n", c.FastInterval)
		}
		if c.Fall > 0 {
			p("    fall: %d\n", c.Fall)
		}
		if c.InitFail {
			p("    init_fail: true\n")
		}
	}
	p("groups:\n")
	for _, g := range r.Groups {
		p("  - name: %s\n", yq(g.Name))
		if g.From != "" {
			p("    # %s\n", oneLine(g.From))
		}
		if g.Interface != "" {
			p("    interface: %s\n", yq(g.Interface))
		}
		p("    addresses: %s\n", addressList(g))
		if g.Label != "" {
			p("    label: %s\n", yq(g.Label))
		}
		if g.Scope != "" {
			p("    scope: %s\n", g.Scope)
		}
		p("    priority: %d\n", g.Priority)
		p("    preempt: %t\n", g.Preempt)
		if g.PreemptDelay > 0 {
			p("    preempt_delay: %s\n", dur(g.PreemptDelay))
		}
		if len(g.Track) > 0 {
			p("    track:\n")
			for _, t := range g.Track {
				if t.Reverse {
					p("      - {check: %s, weight: %d, reverse: true}\n", yq(t.Check), t.Weight)
				} else {
					p("      - {check: %s, weight: %d}\n", yq(t.Check), t.Weight)
				}
			}
		}
		var garp []string
		if g.GARP.Count > 0 {
			garp = append(garp, fmt.Sprintf("count: %d", g.GARP.Count))
		}
		if g.GARP.Interval > 0 {
			garp = append(garp, "interval: "+dur(g.GARP.Interval))
		}
		if g.GARP.Refresh > 0 {
			garp = append(garp, "refresh: "+dur(g.GARP.Refresh))
		}
		if len(garp) > 0 {
			p("    garp: {%s}\n", strings.Join(garp, ", "))
		}
		if len(g.Notify) > 0 {
			p("    notify:\n")
			for _, k := range []string{"master", "backup", "fault", "stop", "any"} {
				if argv, ok := g.Notify[k]; ok {
					p("      %s: %s\n", k, flowList(argv))
				}
			}
		}
	}
	return b.Bytes()
}

func dur(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	if d%time.Millisecond == 0 {
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// addressList writes a group's addresses as a flow list: a plain address
// on the group's interface, {address, interface} on another.
func addressList(g *Group) string {
	q := make([]string, len(g.Addresses))
	for i, a := range g.Addresses {
		q[i] = yq(a)
		if dev := g.AddressIfaces[a]; dev != "" {
			q[i] = fmt.Sprintf("{address: %s, interface: %s}", yq(a), yq(dev))
		}
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func flowList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = yq(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// plainRE matches strings safe as plain YAML scalars in block and flow
// context that do not read as a number.
var plainRE = regexp.MustCompile(`^[A-Za-z/_][A-Za-z0-9_./+=-]*(:[A-Za-z0-9_./+=-]+)*$`)

// yq quotes s for YAML unless it is safe plain. Go's quoting is a subset of
// YAML's double-quoted escapes.
func yq(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~":
		return strconv.Quote(s)
	}
	if plainRE.MatchString(s) || ipv4CIDRRE.MatchString(s) {
		return s
	}
	return strconv.Quote(s)
}

// ipv4CIDRRE matches an IPv4 prefix, a string (not a number) to YAML.
var ipv4CIDRRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$`)

// oneLine makes s fit a one-line comment or note: line breaks become
// blanks, other control characters \xNN.
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r':
			b.WriteByte(' ')
		case unicode.IsControl(r) && r != '\t':
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
