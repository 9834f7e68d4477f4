package keepalived

// vrrp_instance: reading an instance, and keepalived's rules that change
// what its settings mean.

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// inst is a vrrp_instance as read, before it becomes a group.
type inst struct {
	d    *Directive
	pos  int
	name string

	iface      string
	ifaceD     *Directive
	master     bool
	stateD     *Directive
	prio       int
	prioD      *Directive
	preempt    bool
	nopreemptD *Directive // the nopreempt in force, if any
	delay      time.Duration
	delayD     *Directive
	addrs      []*vaddr
	tracks     []*trackRef
	hooks      map[string]*hookRef // master backup fault stop any
	garp       garpCfg
	dontTrackD *Directive // dont_track_primary
	// noPrefixNoted: the /32 of an address without a length was noted.
	noPrefixNoted bool
	sync          *syncGroup
	refuse        []string // why it cannot be carried
	emitted       bool
}

type vaddr struct {
	d     *Directive
	p     netip.Prefix
	dev   string
	label string
	scope string
}

type hookRef struct {
	d     *Directive
	argv  []string
	shell bool
	group bool   // from a vrrp_sync_group
	owner string // the instance or sync group name keepalived passes
}

func (c *converter) vrrpInstance(d *Directive, pos int) {
	if len(d.Args) != 1 || !d.HasBlock {
		c.markTree(d, Ignored, "a vrrp_instance needs one name and a { } block; keepalived ignores this one too")
		return
	}
	name := d.Args[0]
	if _, dup := c.instances[name]; dup {
		forceTree(d, Refused)
		c.mark(d, Refused, "a second vrrp_instance of this name (keepalived refuses it too)")
		return
	}
	in := &inst{d: d, pos: pos, name: name, preempt: true, hooks: map[string]*hookRef{}, sync: c.syncOf[name]}
	c.instances[name] = in
	c.insts = append(c.insts, in)
	c.mark(d, Carried, "")
	for _, x := range entries(d) {
		switch x.Name {
		case "interface":
			if len(x.Args) < 1 || !validIfName(x.Args[0]) {
				c.mark(x, Ignored, "not an interface name; keepalived ignores it too")
				continue
			}
			in.iface, in.ifaceD = x.Args[0], x
			c.mark(x, Carried, "")
		case "state":
			c.state(in, x)
		case "priority":
			// keepalived reads it strictly, and an invalid one is the
			// default 100 ("Priority not valid! ... Using default 100").
			n, rest := leadingInt(firstArg(x))
			if rest != "" || n < 1 || n > 255 {
				n = 100
				c.mark(x, Carried, fmt.Sprintf("%q is not a priority keepalived accepts: it uses its default 100, and so does the importer", firstArg(x)))
			}
			in.prio, in.prioD = int(n), x
			c.mark(x, Carried, "")
		case "virtual_ipaddress", "virtual_ipaddress_excluded":
			c.addresses(x, in)
		case "no_virtual_ipaddress":
			c.mark(x, Carried, "") // no addresses: a group for hooks (emit says so)
		case "track_script", "track_interface", "track_process", "track_file":
			c.tracks(x, in, false, pos, &in.refuse)
		case "nopreempt":
			in.preempt, in.nopreemptD = false, x
			c.mark(x, Carried, "")
		case "preempt":
			in.preempt, in.nopreemptD = true, nil
			c.mark(x, Carried, "")
		case "preempt_delay":
			if dur, ok := c.secondsArg(x); ok {
				in.delay, in.delayD = dur, x
				c.mark(x, Carried, "")
			}
		case "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify":
			c.hook(x, in.hooks, false, name)
		case "garp_master_repeat", "garp_master_delay", "garp_master_refresh", "garp_master_refresh_repeat":
			c.garpDirective(x, x.Name, &in.garp, false)
		case "smtp_alert":
			if len(x.Args) == 0 || isTrue(x.Args[0]) {
				c.mark(x, Dropped, noEmail)
			} else {
				c.mark(x, Ignored, "sends no email, as vipd")
			}
		case "dont_track_primary":
			in.dontTrackD = x // judged once the addresses' interface is known
		default:
			k, reason := instanceReason(x.Name)
			c.markTree(x, k, reason)
		}
	}
	c.resolveInstance(in)
}

// state reads `state`: keepalived takes it as the start state only, but
// MASTER also changes other settings (resolveInstance).
func (c *converter) state(in *inst, x *Directive) {
	const why = "etcd decides who holds the group: the healthy node with the highest effective priority, as keepalived converges to"
	switch a := firstArg(x); a {
	case "MASTER":
		in.master, in.stateD = true, x
		c.mark(x, Ignored, why)
	case "BACKUP":
		if in.master {
			c.mark(x, Ignored, "state previously set as MASTER; keepalived ignores this BACKUP too")
			return
		}
		c.mark(x, Ignored, why)
	default:
		c.mark(x, Ignored, fmt.Sprintf("keepalived takes %q as BACKUP (it knows only MASTER and BACKUP, in capitals); %s", a, why))
	}
}

// resolveInstance applies keepalived's own rules (vrrp.c,
// vrrp_complete_instance) that change what an instance's settings mean.
func (c *converter) resolveInstance(in *inst) {
	if in.prioD == nil {
		// "If no priority has been set, derive it from the initial state"
		in.prio = 100
		if in.master {
			in.prio = 255
			c.mark(in.stateD, Carried, "no priority: keepalived makes a MASTER without a priority the address owner, priority 255")
		}
	}
	owner := in.prio == 255
	if owner && in.prioD != nil {
		c.mark(in.prioD, Changed, "255 is keepalived's address owner, which always wins; vipd's effective priorities stop at 254 on every node, so another node reaching 254 ties with it")
	}
	if !in.preempt && in.nopreemptD != nil {
		switch {
		case owner:
			in.preempt = true
			c.mark(in.nopreemptD, Changed, "keepalived clears nopreempt for the address owner (priority 255): preempt: true, as keepalived behaves")
		case in.master:
			in.preempt = true
			c.mark(in.nopreemptD, Changed, `keepalived clears nopreempt with state MASTER (it logs "nopreempt will not work with initial state MASTER - clearing"): preempt: true, as keepalived behaves`)
		}
	}
	if in.delayD != nil && in.delay > 0 {
		switch {
		case in.master:
			in.delay = 0
			c.mark(in.delayD, Changed, `keepalived clears preempt_delay with state MASTER (it logs "preempt delay will not work with initial state MASTER - clearing"): not written`)
		case !in.preempt:
			in.delay = 0
			c.mark(in.delayD, Ignored, "keepalived ignores preempt_delay with nopreempt")
		}
	}
	// Weighted tracking is ignored by keepalived for the address owner
	// and for sync group members without sync_group_tracking_weight.
	syncNoWeight := in.sync != nil && !in.sync.trackingWeight
	if owner || syncNoWeight {
		why := "the address owner (priority 255)"
		if syncNoWeight {
			why = "a member of vrrp_sync_group " + in.sync.name + " without sync_group_tracking_weight"
		}
		var kept []*trackRef
		for _, t := range in.tracks {
			if t.weight == 0 {
				kept = append(kept, t)
				continue
			}
			switch {
			case t.kind == "interface" && syncNoWeight && !owner:
				t.weight, t.reverse = 0, false
				c.mark(t.d, Changed, "keepalived tracks it with weight 0 (FAULT while down) in "+why+`: it logs "ignoring weight of tracked interface"`)
				kept = append(kept, t)
			case t.kind == "file" && t.weight == 1:
				t.weight = 0
				c.mark(t.d, Changed, "keepalived tracks it with weight 0 (FAULT unless 0) in "+why)
				kept = append(kept, t)
			case t.kind == "process" && !owner:
				kept = append(kept, t) // keepalived keeps process weights
			default:
				c.mark(t.d, Ignored, "keepalived ignores weighted tracking in "+why+" (it logs that it is ignoring it); vipd does too")
			}
		}
		in.tracks = kept
	}
	if in.iface == "" {
		in.refuse = append(in.refuse, "it has no interface (keepalived finds one from unicast_src_ip; vipd needs interface:)")
	}
	c.addressInterface(in)
}

// addressInterface works out the interface the group binds its addresses
// on. keepalived puts an address on its dev (default: the instance's
// interface) and tracks every such interface as well as its own VRRP
// interface (unless dont_track_primary): FAULT while one is down. When
// every address is on one other interface, the group binds them there
// and an interface check keeps the VRRP interface's FAULT; addresses on
// several interfaces each name theirs, and vipd puts the group in FAULT
// while any interface it uses is down, as keepalived.
func (c *converter) addressInterface(in *inst) {
	if in.iface == "" {
		if in.dontTrackD != nil {
			c.mark(in.dontTrackD, Ignored, "the instance has no interface")
		}
		return
	}
	devs := map[string]bool{}
	var others []string
	for _, a := range in.addrs {
		dev := a.dev
		if dev == "" {
			dev = in.iface
		}
		if !devs[dev] {
			devs[dev] = true
		}
		if dev != in.iface {
			others = append(others, fmt.Sprintf("%s on %s", a.p.Addr(), dev))
		}
	}
	switch {
	case len(devs) > 1:
		c.ownInterfaceTracks(in, in.iface)
		for _, a := range in.addrs {
			if a.dev != "" && a.dev != in.iface {
				c.mark(a.d, Carried, fmt.Sprintf("on %s, the address's own interface (its `interface:` in the group), as keepalived's dev", a.dev))
			}
		}
		if in.dontTrackD != nil {
			if devs[in.iface] {
				c.mark(in.dontTrackD, Changed, fmt.Sprintf("vipd puts a group in FAULT while an interface it binds an address on is down, and addresses sit on %s (keepalived with dont_track_primary ignores its link)", in.iface))
			} else {
				// No address on the VRRP interface: the group names
				// none, and tracks only the addresses' interfaces.
				for _, a := range in.addrs {
					a.dev = cmp.Or(a.dev, in.iface)
				}
				c.mark(in.dontTrackD, Carried, fmt.Sprintf("the group has no interface of its own: it tracks those of its addresses (%s), not %s, as keepalived", strings.Join(others, ", "), in.iface))
				in.iface = ""
			}
		}
	case len(devs) == 1 && !devs[in.iface]:
		vrrpIface := in.iface
		for dev := range devs {
			in.iface = dev
		}
		c.ownInterfaceTracks(in, vrrpIface)
		if in.dontTrackD != nil {
			c.mark(in.dontTrackD, Carried, fmt.Sprintf("keepalived then ignores %s's link; it still tracks %s, where the addresses are, and so does vipd (the group's interface)", vrrpIface, in.iface))
		} else if !tracksInterface(in, vrrpIface) {
			t := &trackRef{d: in.ifaceD, kind: "interface", check: c.interfaceCheckFor(in.ifaceD, vrrpIface)}
			in.tracks = append(in.tracks, t)
		}
		how := "tracked with interface check if_" + vrrpIface + ": FAULT while it is down, as keepalived"
		if in.dontTrackD != nil {
			how = "not tracked (dont_track_primary)"
		}
		c.mark(in.ifaceD, Carried, fmt.Sprintf("keepalived's VRRP interface; every address is on %s (dev), so the group binds them there, as keepalived does, and %s is %s", in.iface, vrrpIface, how))
	default:
		c.ownInterfaceTracks(in, in.iface)
		if in.dontTrackD != nil {
			k, reason := instanceReason("dont_track_primary")
			c.mark(in.dontTrackD, k, reason)
		}
	}
}

// ownInterfaceTracks applies keepalived's rule for a track_interface
// entry naming an interface it tracks anyway, the one its addresses are
// on or its VRRP interface (unless dont_track_primary): it is tracked
// with weight 0 (FAULT while down), whatever weight the entry gives.
func (c *converter) ownInterfaceTracks(in *inst, vrrpIface string) {
	for _, t := range in.tracks {
		if t.kind != "interface" || t.weight == 0 {
			continue
		}
		own := t.check.Iface == in.iface || (t.check.Iface == vrrpIface && in.dontTrackD == nil)
		if own {
			c.mark(t.d, Changed, fmt.Sprintf("keepalived tracks %s with weight 0 anyway (its addresses' or its VRRP interface), which replaces this weight: FAULT while it is down, no weight while up", t.check.Iface))
			t.weight, t.reverse = 0, false
		}
	}
}

func tracksInterface(in *inst, iface string) bool {
	for _, t := range in.tracks {
		if t.kind == "interface" && t.check.Iface == iface {
			return true
		}
	}
	return false
}

// addresses reads virtual_ipaddress entries: ADDR[/LEN] [dev IF]
// [label L] [scope S] [brd B] and flags.
func (c *converter) addresses(blk *Directive, in *inst) {
	if !blk.HasBlock {
		c.markTree(blk, Ignored, "expects a { } block of addresses; keepalived ignores it")
		return
	}
	c.mark(blk, Carried, "")
	excluded := blk.Name == "virtual_ipaddress_excluded"
	for _, d := range entries(blk) {
		p, err := netip.ParsePrefix(d.Name)
		if err != nil {
			a, aerr := netip.ParseAddr(d.Name)
			if aerr != nil {
				c.markTree(d, Ignored, "not an IP address or address/prefix; keepalived ignores it too")
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
			if !in.noPrefixNoted {
				in.noPrefixNoted = true
				c.mark(d, Carried, fmt.Sprintf("no prefix length: %s, as keepalived adds it (and the next ones without a length)", p))
			}
		}
		if ad := p.Addr(); ad.Zone() != "" || ad.IsUnspecified() || ad.IsLoopback() || ad.IsMulticast() {
			in.refuse = append(in.refuse, fmt.Sprintf("%s cannot be a VIP in vipd", p))
			c.mark(d, Refused, fmt.Sprintf("%s: vipd binds no unspecified, loopback or multicast address", p))
			continue
		}
		if owner := c.addrOwner[p.Addr()]; owner != "" && owner != in.name {
			in.refuse = append(in.refuse, fmt.Sprintf("%s is also an address of vrrp_instance %s: vipd holds an address in one group only", p.Addr(), owner))
			c.mark(d, Refused, "also an address of vrrp_instance "+owner)
			continue
		}
		a := &vaddr{d: d, p: p}
		for _, prev := range in.addrs {
			if prev.p.Addr() == p.Addr() {
				c.mark(d, Ignored, "the same address again in this instance; it is bound once")
				a = nil
				break
			}
		}
		if a == nil {
			continue
		}
		c.mark(d, Carried, "")
		for i := 0; i < len(d.Args); i++ {
			opt := d.Args[i]
			val := ""
			if i+1 < len(d.Args) {
				val = d.Args[i+1]
			}
			switch opt {
			case "dev":
				if !validIfName(val) {
					in.refuse = append(in.refuse, fmt.Sprintf("dev %q of %s is not an interface name", val, p))
					c.mark(d, Refused, fmt.Sprintf("dev %q: not an interface name", val))
				}
				a.dev = val
				i++
			case "label":
				if p.Addr().Is6() {
					c.mark(d, Ignored, "label on an IPv6 address: keepalived ignores it (Linux has no IPv6 labels)")
				} else {
					a.label = val
				}
				i++
			case "scope":
				switch val {
				case "global", "link", "host", "site", "nowhere":
				default:
					c.mark(d, Ignored, fmt.Sprintf("scope %q is not a scope keepalived knows; it ignores it", val))
					i++
					continue
				}
				if p.Addr().Is6() {
					c.mark(d, Ignored, "scope on an IPv6 address: keepalived ignores it (the address decides)")
				} else {
					a.scope = val
				}
				i++
			case "brd", "broadcast":
				c.mark(d, Dropped, fmt.Sprintf("%s %s: vipd sets no broadcast address (as keepalived without brd)", opt, val))
				i++
			case "peer", "preferred_lft":
				c.mark(d, Dropped, fmt.Sprintf("%s %s: vipd adds the address without it", opt, val))
				i++
			case "home", "-nodad", "mngtmpaddr", "noprefixroute", "autojoin":
				c.mark(d, Dropped, fmt.Sprintf("address flag %s: vipd adds the address without it", opt))
			case "no_track":
				c.mark(d, Changed, "no_track: vipd puts back a VIP removed by hand; keepalived with no_track leaves it off")
			case "use_vmac":
				c.mark(d, Ignored, "a virtual MAC for VRRP; vipd announces the node's own MAC")
			default:
				c.mark(d, Ignored, fmt.Sprintf("option %q: keepalived ignores an unknown option too", opt))
			}
		}
		if excluded {
			c.mark(d, Carried, "an excluded address (left out of VRRP adverts) is just another VIP of the group in vipd")
		}
		in.addrs = append(in.addrs, a)
		c.addrOwner[p.Addr()] = in.name
	}
}

// hook reads a notify_* or notify directive.
func (c *converter) hook(d *Directive, hooks map[string]*hookRef, group bool, owner string) {
	if len(d.Args) == 0 {
		c.mark(d, Ignored, "no command; keepalived ignores it too")
		return
	}
	state := strings.TrimPrefix(d.Name, "notify_")
	if d.Name == "notify" {
		state = "any"
	}
	argv, shell := splitCommand(d.Args[0])
	if len(argv) == 0 || argv[0] == "" {
		c.mark(d, Ignored, "names no command; keepalived cannot run it either")
		return
	}
	if hooks[state] != nil {
		c.mark(d, Ignored, "a second "+d.Name+": keepalived keeps the first (\"script already specified - ignoring\"), and so does the importer")
		return
	}
	hooks[state] = &hookRef{d: d, argv: argv, shell: shell, group: group, owner: owner}
	c.mark(d, Carried, "")
	if shell {
		c.mark(d, Carried, "has shell syntax: run through /bin/sh -c, as keepalived runs it through the shell")
	}
	if len(d.Args) > 1 {
		c.mark(d, Changed, "user "+strings.Join(d.Args[1:], " ")+" not carried: hooks run as vipd's user (vipd under the packaged unit)")
	} else {
		who := "root or keepalived_script"
		if c.scriptUser != "" {
			who = c.scriptUser + " (script_user)"
		}
		c.mark(d, Changed, "runs as vipd's user (vipd under the packaged unit: no root, no sudo); keepalived ran it as "+who)
	}
}

// validIfName says whether s can name a Linux interface: 1 to 15 bytes,
// no '/', blank or control character.
func validIfName(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}
