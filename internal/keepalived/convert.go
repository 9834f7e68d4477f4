package keepalived

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options fill what keepalived.conf does not say.
type Options struct {
	// Node is written as `node:` when set; otherwise vipd uses the hostname.
	Node string
	// Endpoints are the etcd client URLs. Empty: a placeholder, with a note.
	Endpoints []string
}

// DefaultExecUser is written as the user of exec checks that had none:
// the packaged unit runs vipd as this user, and vipd switches users only
// when it runs as root.
const DefaultExecUser = "vipd"

// PlaceholderEndpoint is written when no etcd endpoints are given.
const PlaceholderEndpoint = "http://127.0.0.1:2379"

// Note is one thing the conversion could not carry over, or changed.
type Note struct {
	Line      int    // line in the input; 0 if none
	Directive string // the directive as written, e.g. "virtual_router_id 51"
	Reason    string // one line
	// Carried is true when the directive was converted but with a change
	// worth reading (a default prefix, a shell wrapper); false when it was
	// dropped.
	Carried bool
}

// Format renders the note as "file:line: directive: reason".
func (n Note) Format(file string) string {
	kind := "not carried over"
	if n.Carried {
		kind = "note"
	}
	if n.Line == 0 {
		return fmt.Sprintf("%s: %s: %s: %s", file, kind, n.Directive, n.Reason)
	}
	return fmt.Sprintf("%s:%d: %s: %s: %s", file, n.Line, kind, n.Directive, n.Reason)
}

// Check is a converted vrrp_script.
type Check struct {
	Name     string
	Type     string   // "process", "exec" or "interface"
	Process  string   // process check: the process name
	Iface    string   // interface check: the interface name
	Command  []string // exec check: argv
	User     string   // exec check: run as this user
	InitFail bool
	Script   string // the original script string, for a comment
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	weight   int // the script's weight; goes onto track entries
	line     int
}

// Track is a converted track_script entry.
type Track struct {
	Check  string
	Weight int
}

// GARP holds the converted garp_master_* settings; zero fields are unset.
type GARP struct {
	Count    int
	Interval time.Duration
	Refresh  time.Duration
}

// Group is a converted vrrp_instance.
type Group struct {
	Name         string
	From         string // the vrrp_instance name
	Interface    string
	Addresses    []string
	Priority     int
	Preempt      bool
	PreemptDelay time.Duration
	Track        []Track
	GARP         GARP
	Label        string              // IPv4 address label (keepalived `label`)
	Scope        string              // address scope (keepalived `scope`)
	Notify       map[string][]string // master|backup|fault|stop → argv
}

// Result is a converted configuration and what did not fit.
type Result struct {
	Node      string
	Endpoints []string
	Checks    []*Check
	Groups    []*Group
	Notes     []Note
}

// ErrNothingToConvert means the file has no vrrp_instance.
var ErrNothingToConvert = errors.New("no vrrp_instance found; nothing to convert")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Convert parses src (named file in errors) and converts it.
func Convert(file, src string, opts Options) (*Result, error) {
	top, err := Parse(file, src)
	if err != nil {
		return nil, err
	}
	c := &converter{res: &Result{Node: opts.Node, Endpoints: opts.Endpoints}, scripts: map[string]*Check{}}
	if len(c.res.Endpoints) == 0 {
		c.res.Endpoints = []string{PlaceholderEndpoint}
		c.res.Notes = append(c.res.Notes, Note{Directive: "etcd.endpoints", Carried: true,
			Reason: "keepalived has no arbiter; " + PlaceholderEndpoint + " written as a placeholder: list your etcd members (three or more; --etcd)"})
	}
	// Globals first: vrrp_garp_* in global_defs are defaults for every
	// instance, and scripts may be defined after the instances using them.
	for _, d := range top {
		switch d.Name {
		case "global_defs":
			c.globalDefs(d)
		case "vrrp_script":
			c.vrrpScript(d)
		}
	}
	instances := 0
	for _, d := range top {
		switch d.Name {
		case "global_defs", "vrrp_script":
		case "vrrp_instance":
			instances++
			c.vrrpInstance(d)
		default:
			c.drop(d, topLevelReason(d.Name))
		}
	}
	if instances == 0 {
		return nil, fmt.Errorf("%s: %w", file, ErrNothingToConvert)
	}
	used := map[string]bool{}
	for _, g := range c.res.Groups {
		for _, t := range g.Track {
			used[t.Check] = true
		}
	}
	for _, ch := range c.res.Checks {
		if !used[ch.Name] {
			c.res.Notes = append(c.res.Notes, Note{Line: ch.line, Directive: "vrrp_script " + ch.Name, Carried: true,
				Reason: "converted, but no vrrp_instance tracks it, so vipd will not run it"})
		}
	}
	sort.SliceStable(c.res.Notes, func(i, j int) bool { return c.res.Notes[i].Line < c.res.Notes[j].Line })
	return c.res, nil
}

type converter struct {
	res     *Result
	scripts map[string]*Check // by vrrp_script name
	garp    GARP              // from global_defs
	// scriptUser is global_defs' script_user, the default user of exec
	// checks.
	scriptUser string
}

func (c *converter) drop(d *Directive, reason string) {
	c.res.Notes = append(c.res.Notes, Note{Line: d.Line, Directive: d.String(), Reason: reason})
}

func (c *converter) note(d *Directive, reason string) {
	c.res.Notes = append(c.res.Notes, Note{Line: d.Line, Directive: d.String(), Reason: reason, Carried: true})
}

func (c *converter) globalDefs(gd *Directive) {
	for _, d := range gd.Block {
		switch d.Name {
		case "vrrp_garp_master_repeat", "vrrp_garp_master_delay", "vrrp_garp_master_refresh":
			c.garpDirective(d, strings.TrimPrefix(d.Name, "vrrp_"), &c.garp)
		case "script_user":
			if len(d.Args) == 0 {
				c.drop(d, "no user name")
				continue
			}
			c.scriptUser = d.Args[0]
			c.note(d, "→ user: of every exec check without its own user; notify hooks run as vipd's user")
			if len(d.Args) > 1 {
				c.drop(d, "the group is not carried: exec checks run with the user's own groups")
			}
		default:
			c.drop(d, globalReason(d.Name))
		}
	}
}

// garpDirective applies one garp_master_* directive (name without any
// vrrp_ prefix: global_defs sets defaults, vrrp_instance overrides) to g.
func (c *converter) garpDirective(d *Directive, name string, g *GARP) {
	switch name {
	case "garp_master_repeat":
		if n, ok := c.intArg(d, 0, 1000); ok {
			g.Count = n
		}
	case "garp_master_delay":
		if dur, ok := c.secondsArg(d); ok {
			c.setGARPInterval(d, g, dur)
		}
	case "garp_master_refresh":
		if dur, ok := c.secondsArg(d); ok {
			g.Refresh = dur
		}
	}
}

// setGARPInterval maps garp_master_delay (keepalived: a second burst that
// many seconds after the first; 0 = no second burst) onto garp.interval.
func (c *converter) setGARPInterval(d *Directive, g *GARP, dur time.Duration) {
	if dur == 0 {
		c.note(d, "0 (no second burst) has no vipd equivalent; garp.interval left at its default, set garp.count: 1 for a single round")
		return
	}
	g.Interval = dur
	c.note(d, "→ garp.interval: keepalived sends a second burst after this delay; vipd sends garp.count rounds garp.interval apart")
}

func (c *converter) vrrpScript(s *Directive) {
	if len(s.Args) != 1 {
		c.drop(s, "vrrp_script needs exactly one name")
		return
	}
	if !s.HasBlock {
		c.drop(s, "vrrp_script without a { } block")
		return
	}
	ch := &Check{Name: c.safeName(s, s.Args[0]), line: s.Line}
	var script, userDir *Directive
	for _, d := range s.Block {
		switch d.Name {
		case "script":
			if len(d.Args) == 0 {
				c.drop(d, "script without a command")
				continue
			}
			script = d
			ch.Script = strings.Join(d.Args, " ")
		case "interval":
			if dur, ok := c.secondsArg(d); ok {
				ch.Interval = dur
			}
		case "timeout":
			if dur, ok := c.secondsArg(d); ok {
				ch.Timeout = dur
			}
		case "rise":
			if n, ok := c.intArg(d, 1, 1000000); ok {
				ch.Rise = n
			}
		case "fall":
			if n, ok := c.intArg(d, 1, 1000000); ok {
				ch.Fall = n
			}
		case "weight":
			if len(d.Args) == 2 && d.Args[1] == "reverse" {
				c.drop(d, "weight ... reverse (priority falls while the script succeeds) has no vipd equivalent; weight not carried over")
				continue
			}
			if n, ok := c.intArg(d, -253, 253); ok {
				ch.weight = n
			}
		case "user":
			if len(d.Args) == 0 {
				c.drop(d, "no user name")
				continue
			}
			ch.User = d.Args[0]
			userDir = d
			if len(d.Args) > 1 {
				c.drop(d, "the group is not carried: exec checks run with the user's own groups")
			}
		case "init_fail":
			ch.InitFail = true
		default:
			c.drop(d, "unknown vrrp_script directive")
		}
	}
	if script == nil {
		c.drop(s, "vrrp_script has no script; not converted")
		return
	}
	argv, shell := splitCommand(ch.Script)
	if name, ok := processName(argv); ok && !shell {
		ch.Type, ch.Process = "process", name
		if userDir != nil {
			c.drop(userDir, "a process check runs no command, so it has no user")
		}
		ch.User = ""
	} else {
		ch.Type, ch.Command = "exec", argv
		if shell {
			c.note(script, "has shell syntax; run through /bin/sh -c")
		}
		switch {
		case ch.User != "":
		case c.scriptUser != "":
			ch.User = c.scriptUser
		default:
			ch.User = DefaultExecUser
			c.note(s, "no user (keepalived ran it as keepalived_script or root): user: "+DefaultExecUser+
				" written, the account the packaged unit runs vipd as, which can run checks only as itself")
		}
		if ch.User == "root" {
			c.note(s, "user root: vipd must then run as root; under the packaged unit (user vipd) this check cannot start")
		}
	}
	if ch.Interval > 0 && ch.Timeout > ch.Interval {
		c.note(s, fmt.Sprintf("timeout %v is longer than interval %v, which vipd refuses; timeout set to the interval", ch.Timeout, ch.Interval))
		ch.Timeout = ch.Interval
	} else if ch.Interval == 0 && ch.Timeout > time.Second {
		ch.Interval = ch.Timeout
		c.note(s, fmt.Sprintf("timeout %v is longer than keepalived's default interval 1s, which vipd refuses; interval set to %v", ch.Timeout, ch.Timeout))
	}
	if _, dup := c.scripts[s.Args[0]]; dup {
		c.drop(s, "defined twice; the first definition is used")
		return
	}
	c.scripts[s.Args[0]] = ch
	c.res.Checks = append(c.res.Checks, ch)
}

// processName recognises "killall -0 NAME" and "pidof NAME", which test that
// a process runs, and returns NAME.
func processName(argv []string) (string, bool) {
	if len(argv) == 0 {
		return "", false
	}
	prog := argv[0]
	if i := strings.LastIndexByte(prog, '/'); i >= 0 {
		prog = prog[i+1:]
	}
	switch {
	case prog == "killall" && len(argv) == 3 && argv[1] == "-0" && !strings.HasPrefix(argv[2], "-"):
		return argv[2], true
	case prog == "pidof" && len(argv) == 2 && !strings.HasPrefix(argv[1], "-"):
		return argv[1], true
	}
	return "", false
}

func (c *converter) vrrpInstance(inst *Directive) {
	if len(inst.Args) != 1 {
		c.drop(inst, "vrrp_instance needs exactly one name")
		return
	}
	g := &Group{From: inst.Args[0], Name: c.safeName(inst, inst.Args[0]), Priority: 100, Preempt: true,
		GARP: c.garp, Notify: map[string][]string{}}
	for _, d := range inst.Block {
		switch d.Name {
		case "interface":
			if len(d.Args) != 1 {
				c.drop(d, "interface takes one name")
				continue
			}
			g.Interface = d.Args[0]
		case "priority":
			if n, ok := c.intArg(d, 1, 255); ok {
				g.Priority = n
			}
		case "virtual_ipaddress", "virtual_ipaddress_excluded":
			c.addresses(d, g, inst)
		case "track_script":
			c.trackScripts(d, g)
		case "track_interface":
			c.trackInterfaces(d, g)
		case "nopreempt":
			g.Preempt = false
		case "preempt":
			g.Preempt = true
		case "preempt_delay":
			if dur, ok := c.secondsArg(d); ok {
				g.PreemptDelay = dur
			}
		case "notify_master", "notify_backup", "notify_fault", "notify_stop":
			c.notify(d, g)
		case "garp_master_repeat", "garp_master_delay", "garp_master_refresh":
			c.garpDirective(d, d.Name, &g.GARP)
		default:
			c.drop(d, instanceReason(d.Name))
		}
	}
	if g.Interface == "" {
		c.drop(inst, "has no interface; set groups[].interface by hand")
	}
	if len(g.Addresses) == 0 {
		c.drop(inst, "has no usable virtual_ipaddress; set groups[].addresses by hand")
	}
	// vipd groups hold one address family; keepalived instances may mix
	// (IPv6 usually under virtual_ipaddress_excluded). Split them.
	var v4, v6 []string
	for _, a := range g.Addresses {
		if netip.MustParsePrefix(a).Addr().Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4) > 0 && len(v6) > 0 {
		g6 := *g
		g6.Name = g.Name + "_v6"
		g.Addresses, g6.Addresses = v4, v6
		g6.Label = ""
		if g6.Scope != "global" {
			g6.Scope = ""
		}
		c.note(inst, fmt.Sprintf("mixes IPv4 and IPv6 addresses; vipd groups hold one family, so the IPv6 ones go to group %s (the two may be held by different nodes)", g6.Name))
		c.res.Groups = append(c.res.Groups, g, &g6)
		return
	}
	c.res.Groups = append(c.res.Groups, g)
}

func (c *converter) addresses(blk *Directive, g *Group, inst *Directive) {
	if !blk.HasBlock {
		c.drop(blk, "expects a { } block of addresses")
		return
	}
	for _, d := range blk.Block {
		p, err := netip.ParsePrefix(d.Name)
		if err != nil {
			a, aerr := netip.ParseAddr(d.Name)
			if aerr != nil {
				c.drop(d, "not an IP address or address/prefix")
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
			c.note(d, fmt.Sprintf("no prefix length; written as %s (keepalived's default). Use the subnet's prefix if the VIP should have a subnet route", p))
		}
		skip := false
		for i := 0; i < len(d.Args); i++ {
			switch opt := d.Args[i]; opt {
			case "dev":
				if i+1 < len(d.Args) {
					if dev := d.Args[i+1]; g.Interface != "" && dev != g.Interface {
						c.drop(d, fmt.Sprintf("on %s, not the instance's interface %s; a vipd group binds all its addresses on one interface: make another group for %s", dev, g.Interface, dev))
						skip = true
					}
					i++
				}
			case "label", "scope":
				if i+1 < len(d.Args) {
					c.labelScope(d, g, p, opt, d.Args[i+1])
				}
				i++
			case "brd", "broadcast":
				c.note(d, fmt.Sprintf("option %q ignored: vipd adds the address with the kernel's defaults", opt))
				i++
			default:
				c.note(d, fmt.Sprintf("option %q ignored", opt))
			}
		}
		if skip {
			continue
		}
		if blk.Name == "virtual_ipaddress_excluded" {
			c.note(d, "an excluded address (not in VRRP adverts) is just another VIP of the group in vipd")
		}
		g.Addresses = append(g.Addresses, p.String())
	}
}

// labelScope carries an address's label or scope onto the group, where
// vipd keeps one of each for all its addresses.
func (c *converter) labelScope(d *Directive, g *Group, p netip.Prefix, opt, val string) {
	cur := &g.Label
	if opt == "scope" {
		cur = &g.Scope
		switch val {
		case "global", "link", "host":
		default:
			c.drop(d, fmt.Sprintf("scope %q: vipd supports global, link and host", val))
			return
		}
		if p.Addr().Is6() && val != "global" {
			c.drop(d, fmt.Sprintf("scope %q: IPv6 addresses take their scope from the address", val))
			return
		}
	} else if p.Addr().Is6() {
		c.drop(d, "label: Linux has no labels on IPv6 addresses")
		return
	}
	switch *cur {
	case "":
		*cur = val
		c.note(d, fmt.Sprintf("%s %q applies to every address of the group in vipd", opt, val))
	case val:
	default:
		c.drop(d, fmt.Sprintf("%s %q: a vipd group has one %s for all its addresses; %q (from an earlier address) is kept", opt, val, opt, *cur))
	}
}

func (c *converter) trackScripts(blk *Directive, g *Group) {
	if !blk.HasBlock {
		c.drop(blk, "expects a { } block of vrrp_script names")
		return
	}
	for _, d := range blk.Block {
		ch, ok := c.scripts[d.Name]
		if !ok {
			c.drop(d, "no vrrp_script of this name")
			continue
		}
		w := ch.weight
		switch {
		case len(d.Args) == 0:
		case len(d.Args) >= 2 && d.Args[0] == "weight":
			n, err := strconv.Atoi(d.Args[1])
			if err != nil || n < -253 || n > 253 {
				c.drop(d, "weight must be an integer in -253..253; the script's weight is used")
				break
			}
			w = n
			if len(d.Args) > 2 {
				c.drop(d, "weight ... reverse has no vipd equivalent; the weight is used as written")
			}
		default:
			c.drop(d, "unknown track_script option; ignored")
		}
		dupe := false
		for _, t := range g.Track {
			dupe = dupe || t.Check == ch.Name
		}
		if dupe {
			c.drop(d, "tracked twice; the first entry is used")
			continue
		}
		g.Track = append(g.Track, Track{Check: ch.Name, Weight: w})
	}
}

// trackInterfaces turns track_interface entries into interface checks
// (shared by every instance that tracks the same interface).
func (c *converter) trackInterfaces(blk *Directive, g *Group) {
	if !blk.HasBlock {
		c.drop(blk, "expects a { } block of interface names")
		return
	}
	for _, d := range blk.Block {
		w := 0 // keepalived: an interface without weight faults the instance
		if len(d.Args) > 0 {
			if len(d.Args) < 2 || d.Args[0] != "weight" {
				c.drop(d, "unknown track_interface option; not converted")
				continue
			}
			n, err := strconv.Atoi(d.Args[1])
			if err != nil || n < -253 || n > 253 {
				c.drop(d, "weight must be an integer in -253..253; not converted")
				continue
			}
			w = n
			if len(d.Args) > 2 {
				c.drop(d, "weight ... reverse has no vipd equivalent; the weight is used as written")
			}
		}
		name := c.safeName(d, "if_"+d.Name)
		var ch *Check
		for _, x := range c.res.Checks {
			if x.Name == name {
				ch = x
			}
		}
		if ch == nil {
			ch = &Check{Name: name, Type: "interface", Iface: d.Name, Script: "track_interface " + d.Name, line: d.Line}
			c.res.Checks = append(c.res.Checks, ch)
		} else if ch.Type != "interface" {
			c.drop(d, fmt.Sprintf("a vrrp_script is already named %s; not converted", name))
			continue
		}
		dupe := false
		for _, t := range g.Track {
			dupe = dupe || t.Check == name
		}
		if dupe {
			c.drop(d, "tracked twice; the first entry is used")
			continue
		}
		g.Track = append(g.Track, Track{Check: name, Weight: w})
		c.note(d, fmt.Sprintf("→ interface check %s, tracked with weight %d", name, w))
	}
}

func (c *converter) notify(d *Directive, g *Group) {
	if len(d.Args) == 0 {
		c.drop(d, "no command")
		return
	}
	argv, shell := splitCommand(d.Args[0])
	if shell {
		c.note(d, "has shell syntax; run through /bin/sh -c")
	}
	if len(d.Args) > 1 {
		c.note(d, "user/group after the script ignored: hooks run as vipd's user")
	}
	g.Notify[strings.TrimPrefix(d.Name, "notify_")] = argv
}

func (c *converter) safeName(d *Directive, name string) string {
	if nameRE.MatchString(name) {
		return name
	}
	safe := []byte(name)
	for i, b := range safe {
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || (i > 0 && strings.IndexByte("_.-", b) >= 0)
		if !ok {
			safe[i] = '_'
		}
	}
	if len(safe) > 0 && safe[0] == '_' {
		safe = append([]byte("x"), safe...)
	}
	c.note(d, fmt.Sprintf("name %q renamed %q (vipd names are letters, digits, '_', '.', '-')", name, safe))
	return string(safe)
}

func (c *converter) intArg(d *Directive, lo, hi int) (int, bool) {
	if len(d.Args) != 1 {
		c.drop(d, "takes one integer")
		return 0, false
	}
	n, err := strconv.Atoi(d.Args[0])
	if err != nil || n < lo || n > hi {
		c.drop(d, fmt.Sprintf("%q is not an integer in %d..%d", d.Args[0], lo, hi))
		return 0, false
	}
	return n, true
}

// secondsArg reads keepalived seconds (integer or decimal) as a duration,
// rounded to the millisecond.
func (c *converter) secondsArg(d *Directive) (time.Duration, bool) {
	if len(d.Args) != 1 {
		c.drop(d, "takes one number of seconds")
		return 0, false
	}
	f, err := strconv.ParseFloat(d.Args[0], 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || f > 1e6 {
		c.drop(d, fmt.Sprintf("%q is not a number of seconds", d.Args[0]))
		return 0, false
	}
	return time.Duration(math.Round(f*1000)) * time.Millisecond, true
}

// splitCommand turns a keepalived script string into argv. keepalived
// splits on blanks and honours single and double quotes; anything with
// shell syntax is wrapped in /bin/sh -c instead (shell = true).
func splitCommand(s string) (argv []string, shell bool) {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "|&;<>()$`*?~\n\\") {
		return []string{"/bin/sh", "-c", s}, true
	}
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else {
				cur.WriteByte(ch)
			}
		case ch == '\'' || ch == '"':
			quote, inWord = ch, true
		case ch == ' ' || ch == '\t':
			if inWord {
				argv = append(argv, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if quote != 0 {
		return []string{"/bin/sh", "-c", s}, true
	}
	if inWord {
		argv = append(argv, cur.String())
	}
	return argv, false
}

const vrrpOnly = "VRRP-only; vipd elects the holder through etcd, no VRRP packets are sent (ignored)"

func instanceReason(name string) string {
	switch name {
	case "state":
		return "etcd decides; ignored (the initial holder is the healthy node with the highest effective priority)"
	case "virtual_router_id":
		return "VRRP-only; groups are named, not numbered: the group name is the key in etcd (ignored)"
	case "advert_int":
		return "VRRP-only; failover speed comes from the check interval and etcd.lease_ttl (ignored)"
	case "authentication":
		return "VRRP-only; secure etcd instead (etcd.tls, etcd.username/password_file) (ignored)"
	case "unicast_peer", "unicast_src_ip", "unicast_ttl", "mcast_src_ip", "unicast_fault_no_peer", "check_unicast_src":
		return "VRRP-only; nodes never talk to each other, only to etcd, so there is no peer list (ignored)"
	case "version", "vrrp_version", "use_vmac", "vmac_xmit_base", "native_ipv6", "accept", "no_accept",
		"strict_mode", "garp_lower_prio_delay", "garp_lower_prio_repeat", "lower_prio_no_advert",
		"higher_prio_send_advert", "skip_check_adv_addr", "old_unicast_checksum", "kernel_rx_buf_size",
		"dont_track_primary":
		return vrrpOnly
	case "track_process", "track_bfd":
		return "not converted; express it as a check (process or exec) and track that check"
	case "track_file":
		return "not converted; define a file check (type: file, path: ...) and track it"
	case "notify":
		return "vipd has per-state hooks only; use notify_master/backup/fault/stop"
	case "notify_deleted", "notify_master_rx_lower_pri", "notify_priority_changes":
		return "no vipd equivalent"
	case "smtp_alert":
		return "vipd sends no email; use a notify hook or the Prometheus alerts"
	case "virtual_routes", "virtual_rules":
		return "vipd manages addresses only; add routes/rules from a notify hook"
	case "garp_master_refresh_repeat":
		return "each garp refresh sends one round; no repeat count"
	case "lvs_sync_daemon_interface", "debug":
		return "not used by vipd (ignored)"
	}
	return "unknown vrrp_instance directive; not converted"
}

func topLevelReason(name string) string {
	switch name {
	case "include":
		return "not followed: convert the included file separately, or concatenate the files first"
	case "vrrp_sync_group":
		return "vipd groups fail over independently; put addresses that must move together into one group"
	case "virtual_server", "virtual_server_group":
		return "LVS/IPVS load balancing is out of vipd's scope (keep HAProxy or ipvsadm for it)"
	case "static_ipaddress", "static_routes", "static_rules":
		return "static addresses and routes belong in the OS network configuration"
	case "vrrp_track_process", "vrrp_track_file", "track_file", "bfd_instance", "linkbeat_interfaces":
		return "not converted; express it as an exec check and track that check"
	case "net_namespace", "instance":
		return "run one vipd per namespace/instance instead"
	}
	if strings.HasPrefix(name, "@") {
		return "host-conditional lines are not evaluated; convert each host's file"
	}
	return "unknown top-level directive; not converted"
}

func globalReason(name string) string {
	switch {
	case name == "router_id":
		return "vipd names the node with node: (default: the hostname; --node)"
	case name == "enable_script_security" || name == "script_user":
		return "checks and hooks run as vipd's user (vipd in the packaged unit)"
	case strings.HasPrefix(name, "notification_email") || strings.HasPrefix(name, "smtp_"):
		return "vipd sends no email; use a notify hook or the Prometheus alerts"
	case strings.HasPrefix(name, "vrrp_"):
		return vrrpOnly
	}
	return "not used by vipd (ignored)"
}
