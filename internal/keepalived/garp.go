package keepalived

// Gratuitous ARP: keepalived's announcement schedule and vipd's.

import (
	"fmt"
	"time"
)

// garpSetting is one garp_master_* value and where it was set.
type garpSetting struct {
	d   *Directive
	val int
}

// garpCfg holds the garp_master_* settings given (nil: not given).
type garpCfg struct {
	delay, repeat, refresh, refreshRepeat *garpSetting
}

func (g garpCfg) overlay(o garpCfg) garpCfg {
	if o.delay != nil {
		g.delay = o.delay
	}
	if o.repeat != nil {
		g.repeat = o.repeat
	}
	if o.refresh != nil {
		g.refresh = o.refresh
	}
	if o.refreshRepeat != nil {
		g.refreshRepeat = o.refreshRepeat
	}
	return g
}

func (g garpCfg) explicit() bool {
	return g.delay != nil || g.repeat != nil || g.refresh != nil || g.refreshRepeat != nil
}

// keepalived's defaults (vrrp.h: VRRP_GARP_DELAY, VRRP_GARP_REP).
const (
	kaGARPDelay  = 5
	kaGARPRepeat = 5
)

// vipdGARP maps keepalived's announcement schedule onto vipd's. keepalived
// sends garp_master_repeat frames per address at once, the same again
// garp_master_delay seconds later (none with 0), then
// garp_master_refresh_repeat every garp_master_refresh seconds. vipd
// sends count rounds interval apart, each a GARP request and a reply per
// address (an NA for IPv6), then one round every refresh: count 2 and
// interval = the delay give the same times.
func (g garpCfg) vipdGARP() GARP {
	if !g.explicit() {
		return GARP{}
	}
	delay := kaGARPDelay
	if g.delay != nil {
		delay = g.delay.val
	}
	out := GARP{Count: 1}
	if delay > 0 {
		out.Count, out.Interval = 2, time.Duration(delay)*time.Second
	}
	if g.refresh != nil && g.refresh.val > 0 {
		out.Refresh = time.Duration(g.refresh.val) * time.Second
	}
	return out
}

// garpDirective reads one garp_master_* directive (name without any
// vrrp_ prefix: global_defs sets defaults, vrrp_instance overrides).
func (c *converter) garpDirective(d *Directive, name string, g *garpCfg, global bool) {
	n, ok := c.uintArg(d)
	if !ok {
		return
	}
	s := &garpSetting{d, n}
	scope := "this group"
	if global {
		scope = "every group without its own"
	}
	switch name {
	case "garp_master_delay":
		g.delay = s
		if n == 0 {
			c.mark(d, Carried, "no second round: garp.count: 1 for "+scope)
		} else {
			c.mark(d, Carried, fmt.Sprintf("→ garp: {count: 2, interval: %ds} for %s: a second round %d s after the first, when keepalived sends its second burst", n, scope, n))
		}
	case "garp_master_repeat", "garp_master_refresh_repeat":
		if n == 0 {
			n = 1 // keepalived: "must be greater than 0, setting to 1"
		}
		if name == "garp_master_repeat" {
			g.repeat = s
		} else {
			g.refreshRepeat = s
		}
		if n > 2 {
			c.mark(d, Changed, fmt.Sprintf("vipd sends each round as one GARP request and one reply per address (2 frames; an NA for IPv6), not %d frames", n))
		} else {
			c.mark(d, Carried, fmt.Sprintf("each vipd round is a GARP request and a reply per address (2 frames), at least keepalived's %d", n))
		}
	case "garp_master_refresh":
		g.refresh = s
		if n == 0 {
			c.mark(d, Carried, "0: no periodic announcement, as vipd's default")
		} else {
			c.mark(d, Carried, fmt.Sprintf("→ garp.refresh: %ds, counted from the last round as keepalived counts from its second burst", n))
		}
	}
}
