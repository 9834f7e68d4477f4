package keepalived

// Writing groups: addresses with their label and scope, hooks, names.

import (
	"fmt"
	"sort"
	"strings"
)

// emitGroups turns every instance not in a sync group into a group, or
// refuses it by name.
func (c *converter) emitGroups() {
	for _, in := range c.insts {
		if in.emitted {
			continue
		}
		in.emitted = true
		if len(in.refuse) > 0 {
			c.refuseInstance(in)
			continue
		}
		c.emit(in, "")
	}
	// Groups are written in file order.
	sort.SliceStable(c.res.Groups, func(i, j int) bool { return c.groupPos[c.res.Groups[i]] < c.groupPos[c.res.Groups[j]] })
}

func (c *converter) refuseInstance(in *inst) {
	forceTree(in.d, Refused)
	c.mark(in.d, Refused, "cannot be carried: "+strings.Join(uniq(in.refuse), "; "))
}

// emit writes the group (or the two, one per address family) for an
// instance or a merged sync group.
func (c *converter) emit(in *inst, from string) {
	if len(in.refuse) > 0 {
		c.refuseInstance(in)
		return
	}
	name := c.safeName(in.d, in.name)
	for _, g := range c.res.Groups {
		if g.Name == name {
			forceTree(in.d, Refused)
			c.mark(in.d, Refused, fmt.Sprintf("its vipd name %s is taken by another group", name))
			return
		}
	}
	if from == "" {
		from = "vrrp_instance " + in.name
	}
	garp := c.garp.overlay(in.garp)
	g := &Group{Name: name, From: from, Interface: in.iface, Priority: in.prio, Preempt: in.preempt, PreemptDelay: in.delay,
		GARP: garp.vipdGARP(), Notify: map[string][]string{}}
	if garp.explicit() && garp.delay == nil {
		// The schedule is keepalived's, so its default delay counts.
		d := garp.repeat
		if d == nil || (garp.refresh != nil && garp.refresh.d.Line < d.d.Line) {
			d = garp.refresh
		}
		if d == nil {
			d = garp.refreshRepeat
		}
		c.mark(d.d, Carried, fmt.Sprintf("keepalived's default garp_master_delay %d applies to %s: garp: {count: 2, interval: %ds}", kaGARPDelay, name, kaGARPDelay))
	}
	if g.Name == in.name {
		g.From = ""
		if strings.HasPrefix(from, "vrrp_sync_group") {
			g.From = from
		}
	}
	for _, t := range in.tracks {
		g.Track = append(g.Track, Track{Check: t.check.Name, Weight: t.weight, Reverse: t.reverse})
	}
	var v4, v6 []*vaddr
	for _, a := range in.addrs {
		if a.p.Addr().Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	c.hooks(in, g)
	if len(in.addrs) == 0 {
		hooks := "its hooks"
		if len(g.Notify) == 0 {
			hooks = "nothing (it has no hooks either): only `vipctl status` shows who holds it"
		}
		c.mark(in.d, Carried, fmt.Sprintf("no virtual_ipaddress: group %s has no addresses; its holder (MASTER) runs %s, as keepalived's MASTER does. Such a group has no failsafe hold: cut from etcd, it leaves MASTER by its fence", name, hooks))
	}
	switch {
	case len(v4) > 0 && len(v6) > 0:
		g6 := *g
		g6.Name = g.Name + "_v6"
		g6.From = from + " (its IPv6 addresses)"
		g6.Notify = map[string][]string{}
		g6.Track = append([]Track{}, g.Track...)
		c.setAddresses(g, v4)
		c.setAddresses(&g6, v6)
		what := "instance"
		if in.sync != nil {
			what = "sync group"
		}
		hooksNote := ""
		if len(g.Notify) > 0 {
			hooksNote = "; the hooks stay on " + g.Name + " only, or they would run twice"
		}
		c.mark(in.d, Changed, fmt.Sprintf("this %s has IPv4 and IPv6 addresses and a vipd group holds one family: the IPv6 ones go to group %s, with the same priority and checks, so the same node wins both; but the two are elected separately and may sit on different nodes for moments during a failover%s", what, g6.Name, hooksNote))
		c.addGroup(g, in.pos)
		c.addGroup(&g6, in.pos)
	case len(v6) > 0:
		c.setAddresses(g, v6)
		c.addGroup(g, in.pos)
	default:
		c.setAddresses(g, v4)
		c.addGroup(g, in.pos)
	}
}

func (c *converter) addGroup(g *Group, pos int) {
	if c.groupPos == nil {
		c.groupPos = map[*Group]int{}
	}
	c.groupPos[g] = pos
	c.res.Groups = append(c.res.Groups, g)
}

// setAddresses puts addresses on g with their label and scope: vipd has
// one label and one scope per group, so a differing one is reported.
func (c *converter) setAddresses(g *Group, addrs []*vaddr) {
	for _, a := range addrs {
		g.Addresses = append(g.Addresses, a.p.String())
		if a.dev != "" && a.dev != g.Interface {
			if g.AddressIfaces == nil {
				g.AddressIfaces = map[string]string{}
			}
			g.AddressIfaces[a.p.String()] = a.dev
		}
	}
	if len(addrs) == 0 || addrs[0].p.Addr().Is6() {
		return
	}
	if len(g.AddressIfaces) > 0 {
		// vipd labels the addresses of a group on one interface.
		for _, a := range addrs {
			if a.label != "" {
				c.mark(a.d, Dropped, fmt.Sprintf("label %q: the group's addresses are on several interfaces, and vipd labels only a group on one (the address gets its interface's own label)", a.label))
				a.label = ""
			}
		}
	}
	// The label: the first valid one; vipd requires IF:suffix.
	for _, a := range addrs {
		if a.label == "" {
			continue
		}
		switch {
		case !strings.HasPrefix(a.label, g.Interface+":") || len(a.label) == len(g.Interface)+1:
			c.mark(a.d, Dropped, fmt.Sprintf("label %q does not start with the interface name %q and a colon, which vipd requires (as ip(8) does): the address gets the interface's own label", a.label, g.Interface))
			a.label = ""
		case len(a.label) > 15 || strings.ContainsAny(a.label, " /\t"):
			c.mark(a.d, Ignored, fmt.Sprintf("label %q is not a valid label; keepalived removes it too", a.label))
			a.label = ""
		case g.Label == "":
			g.Label = a.label
		}
	}
	if g.Label != "" {
		for _, a := range addrs {
			switch a.label {
			case g.Label:
				if len(addrs) > 1 {
					c.mark(a.d, Carried, fmt.Sprintf("label %q is the group's, for every address", g.Label))
				}
			case "":
				c.mark(a.d, Changed, fmt.Sprintf("gets the group's label %q: a vipd group has one label for all its addresses (keepalived: none on this one)", g.Label))
			default:
				c.mark(a.d, Changed, fmt.Sprintf("gets the group's label %q, not %q: a vipd group has one label for all its addresses", g.Label, a.label))
			}
		}
	}
	scope := ""
	for _, a := range addrs {
		if a.scope != "" && a.scope != "global" {
			scope = a.scope
			break
		}
	}
	if scope == "" {
		return
	}
	if scope != "link" && scope != "host" {
		for _, a := range addrs {
			if a.scope == scope {
				c.mark(a.d, Dropped, fmt.Sprintf("scope %s: vipd supports global, link and host; the address is global", scope))
			}
		}
		return
	}
	g.Scope = scope
	for _, a := range addrs {
		switch a.scope {
		case scope:
		case "", "global":
			c.mark(a.d, Changed, fmt.Sprintf("gets the group's scope %s: a vipd group has one scope for all its addresses (keepalived: global on this one)", scope))
		default:
			c.mark(a.d, Changed, fmt.Sprintf("gets the group's scope %s, not %s: a vipd group has one scope for all its addresses", scope, a.scope))
		}
	}
}

// hooks carries an instance's (or merged sync group's) hooks onto g.
func (c *converter) hooks(in *inst, g *Group) {
	for _, state := range []string{"master", "backup", "fault", "stop"} {
		if h := in.hooks[state]; h != nil {
			g.Notify[state] = h.argv
		}
	}
	h := in.hooks["any"]
	if h == nil {
		return
	}
	typ := "INSTANCE"
	if h.group {
		typ = "GROUP"
	}
	argv, note := anyHook(h, typ, g.Name)
	g.Notify["any"] = argv
	if note != "" {
		c.mark(h.d, Carried, note)
	} else {
		c.mark(h.d, Carried, "→ notify.any: vipd appends INSTANCE "+g.Name+" STATE PRIORITY, keepalived's arguments")
	}
}

// anyHook returns notify.any's argv for a generic notify script that
// keepalived calls as SCRIPT TYPE NAME STATE PRIORITY, given that vipd
// calls it with INSTANCE GROUP STATE PRIORITY appended. When the type or
// name differ (a sync group's script, a renamed instance) a /bin/sh -c
// wrapper passes keepalived's.
func anyHook(h *hookRef, typ, group string) ([]string, string) {
	if typ == "INSTANCE" && h.owner == group {
		if !h.shell {
			return h.argv, ""
		}
		// keepalived appends the arguments to the shell command.
		return []string{"/bin/sh", "-c", h.argv[2] + ` "$@"`, "notify"}, "→ notify.any: run through /bin/sh -c with vipd's four arguments appended to the command, as keepalived appends them"
	}
	var cmd string
	if h.shell {
		cmd = h.argv[2]
	} else {
		q := make([]string, len(h.argv))
		for i, a := range h.argv {
			q[i] = shellQuote(a)
		}
		cmd = strings.Join(q, " ")
	}
	prio := `"$4"`
	if typ == "GROUP" {
		// keepalived passes a sync group's script priority 0, STOP
		// included (sent on shutdown since keepalived 2.0).
		prio = "0"
	}
	script := fmt.Sprintf(`%s %s %s "$3" %s`, cmd, typ, shellQuote(h.owner), prio)
	note := fmt.Sprintf("→ notify.any through /bin/sh -c, so the script gets what keepalived passes: %s %s STATE %s", typ, h.owner, strings.Trim(prio, `"`))
	return []string{"/bin/sh", "-c", script, "notify"}, note
}

// shellQuote quotes s for /bin/sh when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`|&;<>()*?[]#~=%{}!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// safeName makes name a valid vipd name, noting a change.
func (c *converter) safeName(d *Directive, name string) string {
	safe := c.safeNameQuiet(name)
	if safe != name && d != nil {
		c.mark(d, Carried, fmt.Sprintf("name %q written as %q (vipd names are letters, digits, '_', '.', '-')", name, safe))
	}
	return safe
}

func (c *converter) safeNameQuiet(name string) string {
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
	if len(safe) == 0 || safe[0] == '_' {
		safe = append([]byte("x"), safe...)
	}
	return string(safe)
}
