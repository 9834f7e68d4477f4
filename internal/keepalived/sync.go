package keepalived

// vrrp_sync_group: instances that move together.

import (
	"cmp"
	"fmt"
	"strings"
)

// syncGroup is a vrrp_sync_group as read.
type syncGroup struct {
	d              *Directive
	pos            int
	name           string
	members        []*Directive // the member entries
	tracksD        []*Directive // track_* blocks, read once the instances are known
	hooks          map[string]*hookRef
	trackingWeight bool
}

// readSyncGroup reads a vrrp_sync_group: its members and hooks now (the
// member instances may come later), its tracks when the groups are built.
func (c *converter) readSyncGroup(d *Directive, pos int) {
	if len(d.Args) != 1 || !d.HasBlock {
		c.markTree(d, Ignored, "a vrrp_sync_group needs one name and a { } block; keepalived ignores this one too")
		return
	}
	sg := &syncGroup{d: d, pos: pos, name: d.Args[0], hooks: map[string]*hookRef{}}
	c.mark(d, Carried, "")
	for _, x := range entries(d) {
		switch x.Name {
		case "group":
			if !x.HasBlock {
				c.mark(x, Ignored, "expects a { } block of vrrp_instance names; keepalived ignores it")
				continue
			}
			c.mark(x, Carried, "")
			for _, m := range entries(x) {
				if prev := c.syncOf[m.Name]; prev != nil {
					c.mark(m, Ignored, fmt.Sprintf("already in vrrp_sync_group %s; keepalived ignores it here", prev.name))
					continue
				}
				c.syncOf[m.Name] = sg
				sg.members = append(sg.members, m)
			}
		case "track_script", "track_interface", "track_process", "track_file":
			sg.tracksD = append(sg.tracksD, x)
		case "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify":
			c.hook(x, sg.hooks, true, sg.name)
		case "global_tracking", "sync_group_tracking_weight":
			sg.trackingWeight = true
			c.mark(x, Carried, "")
		case "smtp_alert":
			if len(x.Args) == 0 || isTrue(x.Args[0]) {
				c.mark(x, Dropped, noEmail)
			} else {
				c.mark(x, Ignored, "sends no email, as vipd")
			}
		case "notify_priority_changes":
			c.mark(x, Ignored, "affects only keepalived's notify FIFO (reported with the FIFO)")
		default:
			c.markTree(x, Ignored, "not a vrrp_sync_group keyword keepalived knows (members go in a group { } block); keepalived ignores it too")
		}
	}
	c.syncs = append(c.syncs, sg)
}

// resolveSyncGroups merges each sync group's instances into one vipd group
// when that is faithful: a sync group is VIPs that move together, which
// is what a vipd group is, if they share an interface and their
// instances' settings agree. Otherwise it refuses the sync group by name.
func (c *converter) resolveSyncGroups() {
	for _, sg := range c.syncs {
		var members []*inst
		for _, m := range sg.members {
			in := c.instances[m.Name]
			if in == nil || in.sync != sg {
				c.mark(m, Ignored, "no vrrp_instance of this name; keepalived ignores it too")
				continue
			}
			c.mark(m, Carried, "")
			members = append(members, in)
		}
		if len(members) == 0 {
			c.markTree(sg.d, Ignored, "no member instance: keepalived removes this sync group, and so does the importer")
			continue
		}
		// The sync group's own tracks apply to every member, weights
		// included (keepalived: sync_group_tracking_init).
		var gtracks []*trackRef
		var refuse []string
		for _, blk := range sg.tracksD {
			gtracks = append(gtracks, c.tracks(blk, nil, true, sg.pos, &refuse)...)
		}
		first := members[0]
		for _, in := range members {
			for _, t := range gtracks {
				dupe := false
				for _, o := range in.tracks {
					dupe = dupe || o.check == t.check
				}
				if !dupe {
					in.tracks = append(in.tracks, t)
				}
			}
			refuse = append(refuse, in.refuse...)
			if in.prio != first.prio {
				refuse = append(refuse, fmt.Sprintf("its instances have different priorities (%s %d, %s %d)", first.name, first.prio, in.name, in.prio))
			}
			if in.preempt != first.preempt || in.delay != first.delay {
				refuse = append(refuse, fmt.Sprintf("its instances preempt differently (%s and %s)", first.name, in.name))
			}
			if c.garp.overlay(in.garp).vipdGARP() != c.garp.overlay(first.garp).vipdGARP() {
				refuse = append(refuse, fmt.Sprintf("its instances announce on different schedules (garp_master_* of %s and %s)", first.name, in.name))
			}
			if sg.trackingWeight && !sameTracks(in.tracks, first.tracks) {
				refuse = append(refuse, fmt.Sprintf("its instances track with different weights (%s and %s), each counting for its own instance", first.name, in.name))
			}
		}
		// Hooks: vipd runs one per state.
		hooks := map[string]*hookRef{}
		for state, h := range sg.hooks {
			hooks[state] = h
		}
		for _, in := range members {
			for _, state := range []string{"master", "backup", "fault", "stop", "any"} {
				h := in.hooks[state]
				if h == nil {
					continue
				}
				if prev := hooks[state]; prev != nil {
					refuse = append(refuse, fmt.Sprintf("it has two %s hooks (%s and %s): vipd runs one per state", hookName(state), ownerName(prev), ownerName(h)))
					continue
				}
				hooks[state] = h
			}
		}
		refuse = uniq(refuse)
		if len(refuse) > 0 {
			for _, in := range members {
				in.emitted = true // not on their own either: they move together
				forceTree(in.d, Refused)
				c.mark(in.d, Refused, "member of vrrp_sync_group "+sg.name+", which cannot be carried")
			}
			forceTree(sg.d, Refused)
			c.mark(sg.d, Refused, "cannot be carried: "+strings.Join(refuse, "; "))
			continue
		}
		// One group named after the sync group, holding every member's
		// addresses: they move together, as keepalived moves them.
		merged := &inst{d: sg.d, pos: first.pos, name: sg.name, iface: first.iface, prio: first.prio, master: first.master,
			preempt: first.preempt, delay: first.delay, garp: first.garp, hooks: hooks, sync: sg}
		var names []string
		for _, in := range members {
			names = append(names, in.name)
			if in.iface != first.iface {
				// Its addresses stay on its interface, and the group
				// tracks that interface: FAULT while it is down, as
				// the member instance's FAULT takes the sync group down.
				for _, a := range in.addrs {
					a.dev = cmp.Or(a.dev, in.iface)
				}
			}
			merged.addrs = append(merged.addrs, in.addrs...)
			for _, t := range in.tracks {
				dupe := false
				for _, o := range merged.tracks {
					dupe = dupe || o.check == t.check
				}
				if !dupe {
					merged.tracks = append(merged.tracks, t)
				}
			}
			in.emitted = true
		}
		c.mark(sg.d, Carried, fmt.Sprintf("→ group %s with the addresses of %s: one vipd group moves its addresses together, as a sync group", c.safeNameQuiet(sg.name), strings.Join(names, ", ")))
		c.emit(merged, "vrrp_sync_group "+sg.name+" ("+strings.Join(names, ", ")+")")
	}
}

func sameTracks(a, b []*trackRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].check != b[i].check || a[i].weight != b[i].weight || a[i].reverse != b[i].reverse {
			return false
		}
	}
	return true
}

func hookName(state string) string {
	if state == "any" {
		return "notify"
	}
	return "notify_" + state
}

func ownerName(h *hookRef) string {
	if h.group {
		return "vrrp_sync_group " + h.owner
	}
	return "vrrp_instance " + h.owner
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
