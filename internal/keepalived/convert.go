package keepalived

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vipd/vipd/config"
)

// Options fill what keepalived.conf does not say.
type Options struct {
	// Node is written as `node:` when set; otherwise vipd uses the hostname.
	Node string
	// ConfigID is keepalived's config id (its -i option), for which
	// "@ID" lines are evaluated. Empty: Node. When both are empty, no
	// "@ID" line applies (and "@^ID" lines all do).
	ConfigID string
	// Endpoints are the etcd client URLs. Empty: a placeholder, with a note.
	Endpoints []string
	// SkipRefused converts what can be converted and leaves out the
	// groups that cannot be carried (still reported, as refused).
	// Without it, a refusal makes Convert return ErrRefused.
	SkipRefused bool
}

// DefaultExecUser is written as the user of exec checks that had none:
// the packaged unit runs vipd as this user, and vipd switches users only
// when it runs as root.
const DefaultExecUser = "vipd"

// PlaceholderEndpoint is written when no etcd endpoints are given.
const PlaceholderEndpoint = "http://127.0.0.1:2379"

// Check is a converted vrrp_script, vrrp_track_process, track_file or
// track_interface.
type Check struct {
	Name     string
	Type     string   // "process", "exec", "file" or "interface"
	Process  string   // process check: the process name
	Iface    string   // interface check: the interface name
	Command  []string // exec check: argv
	User     string   // exec check: run as this user
	Path     string   // file check
	InitFail bool
	Script   string // what it was, for a comment
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	weight   int  // the default weight of tracks of it
	reverse  bool // the default reverse of tracks of it
	line     int
	d        *Directive
	pos      int // index of its top-level directive, for keepalived's definition order
}

// Track is a converted track entry.
type Track struct {
	Check   string
	Weight  int
	Reverse bool
}

// GARP holds the converted garp settings; zero fields are unset.
type GARP struct {
	Count    int
	Interval time.Duration
	Refresh  time.Duration
}

// Group is a converted vrrp_instance (or a vrrp_sync_group whose
// instances were merged).
type Group struct {
	Name         string
	From         string // what it was converted from, for a comment
	Interface    string
	Addresses    []string
	Priority     int
	Preempt      bool
	PreemptDelay time.Duration
	Track        []Track
	GARP         GARP
	Label        string              // IPv4 address label (keepalived `label`)
	Scope        string              // address scope (keepalived `scope`)
	Notify       map[string][]string // master|backup|fault|stop|any → argv
}

// Result is a converted configuration and what did not fit.
type Result struct {
	Node      string
	Endpoints []string
	Checks    []*Check
	Groups    []*Group
	// Notes explain every line that was not carried as written, and some
	// that were, in line order.
	Notes []Note
	// Lines is what became of every non-blank, non-comment line.
	Lines []LineStatus
	// Refused says something could not be carried (see Options.SkipRefused).
	Refused bool
	// Unhandled counts directives and lines the converter did not account
	// for; always 0 unless the importer has a bug.
	Unhandled int
}

// ErrNothingToConvert means the file has no vrrp_instance.
var ErrNothingToConvert = errors.New("no vrrp_instance found; nothing to convert")

// ErrRefused means some of the file cannot be carried faithfully; the
// Result's notes of Kind Refused say what and why.
var ErrRefused = errors.New("cannot be converted faithfully")

// ErrInvalidResult means the converted configuration does not pass vipd's
// own validation: an importer bug, or a value vipd refuses that the
// importer did not catch.
var ErrInvalidResult = errors.New("the converted configuration does not pass vipd check")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Convert parses src (named file in errors) and converts it. With a
// refusal it returns the Result (with the notes) and ErrRefused, unless
// opts.SkipRefused.
func Convert(file, src string, opts Options) (*Result, error) {
	id := opts.ConfigID
	if id == "" {
		id = opts.Node
	}
	pp, err := preprocess(file, src, id)
	if err != nil {
		return nil, err
	}
	top, err := parseLines(file, pp.lines)
	if err != nil {
		return nil, err
	}
	c := &converter{
		file: file,
		res:  &Result{Node: opts.Node, Endpoints: opts.Endpoints},
		opts: opts,
		// Definitions by name, as keepalived looks them up.
		scripts:   map[string]*Check{},
		processes: map[string]*Check{},
		files:     map[string]*Check{},
		refusedTP: map[string]string{},
		instances: map[string]*inst{},
		syncOf:    map[string]*syncGroup{},
	}
	c.res.Notes = append(c.res.Notes, pp.notes...)
	if pp.conditional {
		shown := id
		if shown == "" {
			shown = "(none: only @^ID lines apply)"
		}
		c.res.Notes = append(c.res.Notes, Note{Directive: "@ID lines", Kind: Carried,
			Reason: "evaluated for config id " + shown + ", as keepalived -i " + id + " would"})
	}
	if len(c.res.Endpoints) == 0 {
		c.res.Endpoints = []string{PlaceholderEndpoint}
		c.res.Notes = append(c.res.Notes, Note{Directive: "etcd.endpoints", Kind: Changed,
			Reason: "keepalived has no arbiter; " + PlaceholderEndpoint + " written as a placeholder: list your etcd members (three or more; --etcd)"})
	}
	c.email = emailEnabled(top)
	c.defined = map[string]bool{}
	for _, d := range top {
		if len(d.Args) > 0 {
			c.defined[d.Name+" "+d.Args[0]] = true
		}
	}

	// global_defs first: its vrrp_garp_* are defaults for every instance
	// and its script_user the default user of scripts, wherever it is.
	for _, d := range top {
		if d.Name == "global_defs" {
			c.globalDefs(d)
		}
	}
	// Sync groups are matched to instances by name after reading, so
	// their order does not matter.
	for pos, d := range top {
		if d.Name == "vrrp_sync_group" {
			c.readSyncGroup(d, pos)
		}
	}
	instances := 0
	for pos, d := range top {
		switch d.Name {
		case "global_defs", "vrrp_sync_group":
		case "vrrp_script":
			c.vrrpScript(d, pos)
		case "vrrp_track_process":
			c.trackProcessDef(d, pos)
		case "track_file", "vrrp_track_file":
			c.trackFileDef(d, pos)
		case "vrrp_instance":
			instances++
			c.vrrpInstance(d, pos)
		default:
			k, reason := topReason(d.Name)
			c.markTree(d, k, reason)
		}
	}
	if instances == 0 {
		return nil, fmt.Errorf("%s: %w", file, ErrNothingToConvert)
	}
	c.resolveSyncGroups()
	c.emitGroups()
	c.finish(top)

	var unaccounted []int
	c.res.Lines, unaccounted = lineReport(src, top, pp)
	for _, l := range unaccounted {
		c.res.Unhandled++
		c.res.Notes = append(c.res.Notes, Note{Line: l, Directive: "line", Kind: Dropped,
			Reason: "not accounted for by the importer (a bug: please report it)"})
	}
	sort.SliceStable(c.res.Notes, func(i, j int) bool { return c.res.Notes[i].Line < c.res.Notes[j].Line })

	for _, n := range c.res.Notes {
		if n.Kind == Refused {
			c.res.Refused = true
		}
	}
	if len(c.res.Groups) == 0 && !c.res.Refused {
		return nil, fmt.Errorf("%s: %w", file, ErrNothingToConvert)
	}
	if c.res.Refused && (!opts.SkipRefused || len(c.res.Groups) == 0) {
		return c.res, fmt.Errorf("%s: %w", file, ErrRefused)
	}
	// Whatever is written must pass vipd's own validation: the same code
	// path as `vipd check`, without touching the network.
	if _, err := config.Parse(bytes.NewReader(c.res.Render(file))); err != nil {
		return c.res, fmt.Errorf("%s: %w: %v", file, ErrInvalidResult, err)
	}
	return c.res, nil
}

type converter struct {
	file string
	res  *Result
	opts Options

	scripts   map[string]*Check // by vrrp_script name
	processes map[string]*Check // by vrrp_track_process name
	files     map[string]*Check // by track_file name
	refusedTP map[string]string // vrrp_track_process that cannot be carried → why
	checkName map[string]bool   // vipd check names in use

	insts     []*inst
	instances map[string]*inst
	syncs     []*syncGroup
	syncOf    map[string]*syncGroup // instance name → its sync group

	garp garpCfg // from global_defs
	// groupPos orders groups as their instances are in the file.
	groupPos map[*Group]int
	// scriptUser is global_defs' script_user, the default user of exec
	// checks.
	scriptUser string
	email      bool // keepalived sends VRRP email
	// defined has "KEYWORD NAME" of every top-level definition, to tell
	// "not defined" from "defined later".
	defined map[string]bool
}

// mark records what became of d, with a note when reason is set. A
// directive keeps the worst kind it was given.
func (c *converter) mark(d *Directive, k Kind, reason string) {
	if !d.marked || k > d.kind {
		d.kind = k
	}
	d.marked = true
	if reason != "" {
		c.res.Notes = append(c.res.Notes, Note{Line: d.Line, Directive: d.String(), Reason: reason, Kind: k})
	}
}

// markTree marks d with a note and everything in its block with the same
// kind, silently.
func (c *converter) markTree(d *Directive, k Kind, reason string) {
	c.mark(d, k, reason)
	var walk func(ds []*Directive)
	walk = func(ds []*Directive) {
		for _, x := range ds {
			if !x.marked || k > x.kind {
				x.kind = k
			}
			x.marked = true
			walk(x.Block)
		}
	}
	walk(d.Block)
}

// forceTree gives d and everything under it kind k, whatever they had:
// for a group that is not written at all.
func forceTree(d *Directive, k Kind) {
	d.kind, d.marked = k, true
	for _, x := range d.Block {
		forceTree(x, k)
	}
}

// finish accounts for every directive nothing marked (a bug), and notes
// checks no group tracks.
func (c *converter) finish(top []*Directive) {
	var walk func(ds []*Directive)
	walk = func(ds []*Directive) {
		for _, d := range ds {
			if !d.marked {
				c.res.Unhandled++
				c.mark(d, Dropped, "not handled by the importer (a bug: please report it)")
			}
			walk(d.Block)
		}
	}
	walk(top)
	used := map[string]bool{}
	for _, g := range c.res.Groups {
		for _, t := range g.Track {
			used[t.Check] = true
		}
	}
	var kept []*Check
	for _, ch := range c.res.Checks {
		if used[ch.Name] {
			kept = append(kept, ch)
			continue
		}
		switch ch.Type {
		case "interface":
			// Made for a track entry that did not survive: not written.
		default:
			kept = append(kept, ch)
			if ch.d != nil {
				c.mark(ch.d, Carried, "converted, but no group written tracks it, so vipd will not run it")
			}
		}
	}
	c.res.Checks = kept
}

// emailEnabled says whether keepalived sends VRRP email: smtp_alert
// (or smtp_alert_vrrp) in global_defs, an instance or a sync group.
func emailEnabled(top []*Directive) bool {
	on := func(d *Directive) bool {
		return len(d.Args) == 0 || isTrue(d.Args[0])
	}
	for _, d := range top {
		for _, x := range d.Block {
			switch {
			case d.Name == "global_defs" && (x.Name == "smtp_alert" || x.Name == "smtp_alert_vrrp") && on(x):
				return true
			case (d.Name == "vrrp_instance" || d.Name == "vrrp_sync_group") && x.Name == "smtp_alert" && on(x):
				return true
			}
		}
	}
	return false
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "on", "true", "yes":
		return true
	}
	return false
}

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

func (c *converter) globalDefs(gd *Directive) {
	c.mark(gd, Carried, "")
	for _, d := range gd.Block {
		switch d.Name {
		case "vrrp_garp_master_repeat", "vrrp_garp_master_delay", "vrrp_garp_master_refresh", "vrrp_garp_master_refresh_repeat":
			c.garpDirective(d, strings.TrimPrefix(d.Name, "vrrp_"), &c.garp, true)
		case "vrrp_min_garp":
			if len(d.Args) == 0 || isTrue(d.Args[0]) {
				c.garp.delay = &garpSetting{d, 0}
				c.garp.repeat = &garpSetting{d, 1}
				c.mark(d, Carried, "no second round: garp.count: 1 for every group")
			} else {
				c.mark(d, Carried, "")
			}
		case "vrrp_garp_interval", "vrrp_gna_interval":
			if f, err := strconv.ParseFloat(firstArg(d), 64); err == nil && f == 0 {
				c.mark(d, Ignored, "0 is keepalived's default: no spacing between frames, as vipd")
				continue
			}
			k, reason := globalReason(d.Name, c.email)
			c.mark(d, k, reason)
		case "script_user":
			if len(d.Args) == 0 {
				c.mark(d, Ignored, "no user name; keepalived ignores it too")
				continue
			}
			c.scriptUser = d.Args[0]
			c.mark(d, Carried, "→ user: of every exec check without its own user")
			if len(d.Args) > 1 {
				c.mark(d, Changed, "the group is not carried: exec checks run with the user's own groups")
			}
		default:
			k, reason := globalReason(d.Name, c.email)
			c.markTree(d, k, reason)
		}
	}
}

func firstArg(d *Directive) string {
	if len(d.Args) == 0 {
		return ""
	}
	return d.Args[0]
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

// uintArg reads keepalived's unsigned integer argument (garp_master_*).
func (c *converter) uintArg(d *Directive) (int, bool) {
	return c.intArg(d, 0, math.MaxInt32)
}

// newCheckName returns a vipd check name for a keepalived definition
// named name, unique among checks.
func (c *converter) newCheckName(d *Directive, name, suffix string) string {
	if c.checkName == nil {
		c.checkName = map[string]bool{}
	}
	n := c.safeName(d, name)
	if c.checkName[n] {
		n += suffix
		for i := 2; c.checkName[n]; i++ {
			n = fmt.Sprintf("%s%s%d", c.safeName(d, name), suffix, i)
		}
	}
	c.checkName[n] = true
	return n
}

func (c *converter) vrrpScript(s *Directive, pos int) {
	if len(s.Args) != 1 || !s.HasBlock {
		c.markTree(s, Ignored, "a vrrp_script needs one name and a { } block; keepalived ignores this one too")
		return
	}
	if _, dup := c.scripts[s.Args[0]]; dup {
		c.markTree(s, Ignored, "defined twice; keepalived uses the first definition, and so does the importer")
		return
	}
	c.mark(s, Carried, "")
	ch := &Check{line: s.Line, d: s, pos: pos}
	var script, userDir *Directive
	for _, d := range s.Block {
		switch d.Name {
		case "script":
			if len(d.Args) == 0 {
				c.mark(d, Ignored, "no command; keepalived ignores it too")
				continue
			}
			script = d
			ch.Script = strings.Join(d.Args, " ")
			c.mark(d, Carried, "")
		case "interval", "timeout":
			if dur, ok := c.secondsArg(d); ok {
				if d.Name == "interval" {
					ch.Interval = dur
				} else {
					ch.Timeout = dur
				}
				c.mark(d, Carried, "")
			}
		case "rise", "fall":
			if n, ok := c.intArg(d, 1, 1000000); ok {
				if d.Name == "rise" {
					ch.Rise = n
				} else {
					ch.Fall = n
				}
				c.mark(d, Carried, "")
			}
		case "weight":
			w, rev, ok := c.weightArgs(d, d.Args)
			if ok {
				ch.weight, ch.reverse = w, rev
				c.mark(d, Carried, "")
			}
		case "user":
			if len(d.Args) == 0 {
				c.mark(d, Ignored, "no user name; keepalived ignores it too")
				continue
			}
			ch.User = d.Args[0]
			userDir = d
			c.mark(d, Carried, "")
			if len(d.Args) > 1 {
				c.mark(d, Changed, "the group is not carried: exec checks run with the user's own groups")
			}
		case "init_fail":
			ch.InitFail = true
			c.mark(d, Carried, "")
		default:
			c.markTree(d, Ignored, "not a vrrp_script keyword keepalived knows; keepalived ignores it too")
		}
	}
	if script == nil {
		c.markTree(s, Ignored, "has no script; keepalived ignores it, and so does the importer")
		return
	}
	ch.Name = c.newCheckName(s, s.Args[0], "_script")
	argv, shell := splitCommand(ch.Script)
	if name, ok := processName(argv); ok && !shell {
		ch.Type, ch.Process = "process", name
		if userDir != nil {
			c.mark(userDir, Ignored, "a process check runs no command, so it has no user")
		}
		ch.User = ""
		c.mark(script, Carried, fmt.Sprintf("→ a process check on %q: up while a process of that name runs, what %s tested", name, argv[0]))
	} else {
		ch.Type, ch.Command = "exec", argv
		if shell {
			c.mark(script, Carried, "has shell syntax: run through /bin/sh -c, as keepalived runs it through the shell")
		}
		switch {
		case ch.User != "":
		case c.scriptUser != "":
			ch.User = c.scriptUser
		default:
			ch.User = DefaultExecUser
			c.mark(s, Changed, "no user: keepalived ran it as keepalived_script or root; user: "+DefaultExecUser+
				" written, the account the packaged unit runs vipd as, which can run checks only as itself")
		}
		if ch.User == "root" {
			c.mark(s, Carried, "user root: vipd must then run as root; under the packaged unit (user vipd) this check cannot start")
		}
	}
	if ch.Interval > 0 && ch.Timeout > ch.Interval {
		c.mark(s, Changed, fmt.Sprintf("timeout %v is longer than interval %v, which vipd refuses; timeout set to the interval", ch.Timeout, ch.Interval))
		ch.Timeout = ch.Interval
	} else if ch.Interval == 0 && ch.Timeout > time.Second {
		ch.Interval = ch.Timeout
		c.mark(s, Changed, fmt.Sprintf("timeout %v is longer than keepalived's default interval 1s, which vipd refuses; interval set to %v", ch.Timeout, ch.Timeout))
	}
	c.scripts[s.Args[0]] = ch
	c.res.Checks = append(c.res.Checks, ch)
}

// trackProcessDef converts a vrrp_track_process into a process check by
// name, or refuses what a process check cannot test.
func (c *converter) trackProcessDef(s *Directive, pos int) {
	if len(s.Args) != 1 || !s.HasBlock {
		c.markTree(s, Ignored, "a vrrp_track_process needs one name and a { } block; keepalived ignores this one too")
		return
	}
	if _, dup := c.processes[s.Args[0]]; dup {
		c.markTree(s, Ignored, "defined twice; the first definition is used")
		return
	}
	c.mark(s, Carried, "")
	ch := &Check{Type: "process", line: s.Line, d: s, pos: pos, Interval: time.Second}
	var procD *Directive
	var refuse []string
	var termDelay, forkDelay time.Duration
	var delayD []*Directive
	for _, d := range s.Block {
		switch d.Name {
		case "process":
			if len(d.Args) == 0 {
				c.mark(d, Ignored, "no process name; keepalived ignores it too")
				continue
			}
			procD = d
			ch.Process = d.Args[0]
			ch.Script = "vrrp_track_process: " + strings.Join(d.Args, " ")
			if len(d.Args) > 1 {
				refuse = append(refuse, "it matches the process's parameters (the full command line), which a process check does not read")
				c.mark(d, Refused, "parameters: keepalived then matches the full command line; vipd's process check matches the name only")
			} else if strings.Contains(ch.Process, "/") {
				refuse = append(refuse, "its process name has a '/'")
				c.mark(d, Refused, "a process name with '/': keepalived compares it with the process name (no '/') unless full_command; vipd's process check takes a name without '/'")
			} else {
				c.mark(d, Carried, "")
			}
		case "param_match", "full_command":
			refuse = append(refuse, d.Name+" (matching the command line)")
			c.mark(d, Refused, "matches the process's command line; vipd's process check matches the name only: use an exec check, e.g. [pgrep, -f, ...]")
		case "quorum":
			n, ok := c.intArg(d, 1, 65535)
			if !ok {
				continue
			}
			if n > 1 {
				refuse = append(refuse, fmt.Sprintf("quorum %d", n))
				c.mark(d, Refused, fmt.Sprintf("needs %d processes; vipd's process check passes with one: use an exec check, e.g. [/bin/sh, -c, 'test \"$(pgrep -xc NAME)\" -ge %d']", n, n))
			} else {
				c.mark(d, Carried, "")
			}
		case "quorum_max":
			refuse = append(refuse, "quorum_max")
			c.mark(d, Refused, "fails when too many processes run; vipd's process check cannot count processes: use an exec check with pgrep -c")
		case "weight":
			if w, rev, ok := c.weightArgs(d, d.Args); ok {
				ch.weight, ch.reverse = w, rev
				c.mark(d, Carried, "")
			}
		case "delay", "terminate_delay", "fork_delay":
			dur, ok := c.secondsArg(d)
			if !ok {
				continue
			}
			if d.Name != "fork_delay" {
				termDelay = dur
			}
			if d.Name != "terminate_delay" {
				forkDelay = dur
			}
			delayD = append(delayD, d)
		default:
			c.markTree(d, Ignored, "not a vrrp_track_process keyword keepalived knows; keepalived ignores it too")
		}
	}
	if procD == nil {
		c.markTree(s, Ignored, "no process: keepalived ignores this vrrp_track_process, and so does the importer")
		return
	}
	// keepalived waits these delays before it believes a process
	// started or ended; vipd counts polls: the closest is rise/fall of
	// that many intervals.
	polls := func(d time.Duration) int { return max(1, int(math.Ceil(float64(d)/float64(ch.Interval)))) }
	if termDelay > 0 {
		ch.Fall = polls(termDelay)
	}
	if forkDelay > 0 {
		ch.Rise = polls(forkDelay)
	}
	for _, d := range delayD {
		c.mark(d, Changed, fmt.Sprintf("→ rise %d / fall %d polls at interval %v: down (up) after that many polls, about the delay; keepalived waits exactly the delay after the process event",
			max(ch.Rise, 1), max(ch.Fall, 1), ch.Interval))
	}
	if len(refuse) > 0 {
		c.refusedTP[s.Args[0]] = strings.Join(refuse, ", ")
		c.processes[s.Args[0]] = nil
		return
	}
	ch.Name = c.newCheckName(s, s.Args[0], "_process")
	c.mark(s, Changed, "carried as a process check by name: vipd polls the process table every "+ch.Interval.String()+
		"; keepalived hears of process starts and exits at once (kernel process events)")
	c.processes[s.Args[0]] = ch
	c.res.Checks = append(c.res.Checks, ch)
}

// trackFileDef converts a track_file (vrrp_track_file) into a file check.
func (c *converter) trackFileDef(s *Directive, pos int) {
	if len(s.Args) != 1 || !s.HasBlock {
		c.markTree(s, Ignored, "a track_file needs one name and a { } block; keepalived ignores this one too")
		return
	}
	if _, dup := c.files[s.Args[0]]; dup {
		c.markTree(s, Ignored, "defined twice; the first definition is used")
		return
	}
	c.mark(s, Carried, "")
	ch := &Check{Type: "file", line: s.Line, d: s, pos: pos, weight: 1}
	for _, d := range s.Block {
		switch d.Name {
		case "file":
			if len(d.Args) == 0 {
				c.mark(d, Ignored, "no file; keepalived ignores it too")
				continue
			}
			ch.Path = d.Args[0]
			ch.Script = "track_file: " + ch.Path
			c.mark(d, Changed, "→ a file check (missing: zero, as keepalived): an empty file or one not starting with a number is down in vipd, 0 in keepalived")
		case "weight":
			if w, rev, ok := c.weightArgs(d, d.Args); ok {
				ch.weight, ch.reverse = w, rev
				c.mark(d, Carried, "")
			}
		case "init_file":
			val, overwrite := 0, false
			for _, a := range d.Args {
				if a == "overwrite" {
					overwrite = true
				} else if n, err := strconv.Atoi(a); err == nil {
					val = n
				}
			}
			if val == 0 && !overwrite {
				c.mark(d, Carried, "creates the file with 0 when missing; vipd reads a missing file as 0 (missing: zero), the same")
			} else {
				c.mark(d, Dropped, fmt.Sprintf("keepalived writes %d to the file at start%s; vipd does not write it: create it from the OS (e.g. systemd-tmpfiles)", val,
					map[bool]string{true: " even when it exists", false: " when it is missing"}[overwrite]))
			}
		default:
			c.markTree(d, Ignored, "not a track_file keyword keepalived knows; keepalived ignores it too")
		}
	}
	if ch.Path == "" {
		c.markTree(s, Ignored, "no file: keepalived ignores this track_file, and so does the importer")
		return
	}
	ch.Name = c.newCheckName(s, s.Args[0], "_file")
	c.files[s.Args[0]] = ch
	c.res.Checks = append(c.res.Checks, ch)
}

// weightArgs reads "N [reverse]" (keepalived: -254..254, ±254 taken as
// ±253).
func (c *converter) weightArgs(d *Directive, args []string) (int, bool, bool) {
	if len(args) == 0 {
		c.mark(d, Ignored, "no weight; keepalived ignores it too")
		return 0, false, false
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < -254 || n > 254 {
		c.mark(d, Ignored, fmt.Sprintf("weight %q is not an integer in -254..254; keepalived ignores it too", args[0]))
		return 0, false, false
	}
	n = min(max(n, -253), 253)
	rev := false
	for _, a := range args[1:] {
		if a == "reverse" {
			rev = true
		} else {
			c.mark(d, Ignored, fmt.Sprintf("unknown weight option %q; keepalived ignores it too", a))
		}
	}
	return n, rev, true
}

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
	noVIP      *Directive
	tracks     []*trackRef
	hooks      map[string]*hookRef // master backup fault stop any
	garp       garpCfg
	dontTrackD *Directive // dont_track_primary
	// noPrefixNoted: the /32 of an address without a length was noted.
	noPrefixNoted bool
	sync          *syncGroup
	refuse        []string // why it cannot be carried
	emitted       bool
	groupName     string
	v6GroupName   string
}

type vaddr struct {
	d        *Directive
	p        netip.Prefix
	dev      string
	label    string
	scope    string
	excluded bool
}

type trackRef struct {
	d       *Directive
	check   *Check
	weight  int
	reverse bool
	kind    string // script, interface, process, file
	group   bool   // from the sync group
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
	for _, x := range d.Block {
		switch x.Name {
		case "interface":
			if len(x.Args) < 1 || len(x.Args[0]) > 15 {
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
			in.noVIP = x
			c.mark(x, Carried, "")
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
	if len(in.addrs) == 0 {
		why := "it has no virtual_ipaddress: a vipd group needs at least one address; a group that only runs hooks (as cloud configs use, the hook moving the address) is not supported yet"
		in.refuse = append(in.refuse, why)
	}
}

// addressInterface works out the interface the group binds its addresses
// on. keepalived puts an address on its dev (default: the instance's
// interface) and tracks every such interface as well as its own VRRP
// interface (unless dont_track_primary): FAULT while one is down. When
// every address is on one other interface, the group binds them there
// and an interface check keeps the VRRP interface's FAULT; addresses on
// several interfaces need per-address interfaces, which vipd lacks.
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
		in.refuse = append(in.refuse, fmt.Sprintf("addresses on several interfaces (%s; the instance on %s): needs per-address interface, not supported yet", strings.Join(others, ", "), in.iface))
		for _, a := range in.addrs {
			if a.dev != "" && a.dev != in.iface {
				c.mark(a.d, Refused, fmt.Sprintf("on %s, not the instance's interface %s: a vipd group binds all its addresses on one interface", a.dev, in.iface))
			}
		}
		if in.dontTrackD != nil {
			c.mark(in.dontTrackD, Refused, "")
		}
	case len(devs) == 1 && !devs[in.iface]:
		vrrpIface := in.iface
		for dev := range devs {
			in.iface = dev
		}
		if in.dontTrackD != nil {
			c.mark(in.dontTrackD, Carried, fmt.Sprintf("keepalived then ignores %s's link; it still tracks %s, where the addresses are, and so does vipd (the group's interface)", vrrpIface, in.iface))
		} else {
			t := &trackRef{d: in.ifaceD, kind: "interface", check: c.interfaceCheckFor(in.ifaceD, vrrpIface)}
			in.tracks = append(in.tracks, t)
		}
		how := "tracked with interface check if_" + vrrpIface + ": FAULT while it is down, as keepalived"
		if in.dontTrackD != nil {
			how = "not tracked (dont_track_primary)"
		}
		c.mark(in.ifaceD, Carried, fmt.Sprintf("keepalived's VRRP interface; every address is on %s (dev), so the group binds them there, as keepalived does, and %s is %s", in.iface, vrrpIface, how))
	default:
		if in.dontTrackD != nil {
			k, reason := instanceReason("dont_track_primary")
			c.mark(in.dontTrackD, k, reason)
		}
	}
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
	for _, d := range blk.Block {
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
		a := &vaddr{d: d, p: p, excluded: excluded}
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
	}
}

// tracks reads a track_script, track_interface, track_process or
// track_file block of an instance or sync group. Definitions must come
// before the instance in the file: keepalived looks them up as it reads.
func (c *converter) tracks(blk *Directive, in *inst, group bool, pos int, refuse *[]string) []*trackRef {
	if !blk.HasBlock {
		c.markTree(blk, Ignored, "expects a { } block; keepalived ignores it")
		return nil
	}
	c.mark(blk, Carried, "")
	var out []*trackRef
	for _, d := range blk.Block {
		t := &trackRef{d: d, group: group}
		var args []string
		switch blk.Name {
		case "track_script", "track_process", "track_file":
			var defs map[string]*Check
			what := map[string]string{"track_script": "vrrp_script", "track_process": "vrrp_track_process", "track_file": "track_file"}[blk.Name]
			t.kind = strings.TrimPrefix(blk.Name, "track_")
			switch blk.Name {
			case "track_script":
				defs = c.scripts
			case "track_process":
				defs = c.processes
			default:
				defs = c.files
			}
			ch, ok := defs[d.Name]
			if why, refused := c.refusedTP[d.Name]; refused && blk.Name == "track_process" {
				c.mark(d, Refused, "vrrp_track_process "+d.Name+" cannot be carried: "+why)
				*refuse = append(*refuse, "it tracks vrrp_track_process "+d.Name+", which cannot be carried ("+why+")")
				continue
			}
			if !ok || ch == nil || ch.pos > pos {
				reason := fmt.Sprintf("no %s of this name: keepalived ignores it too", what)
				later := c.defined[what+" "+d.Name] || (what == "track_file" && c.defined["vrrp_track_file "+d.Name])
				if (ok && ch != nil) || (!ok && later) {
					reason = fmt.Sprintf("%s %s is defined after this, and keepalived looks it up as it reads: it ignores this entry (it logs that it is not found), and so does the importer",
						what, d.Name)
				}
				c.markTree(d, Ignored, reason)
				continue
			}
			t.check, t.weight, t.reverse = ch, ch.weight, ch.reverse
			args = d.Args
		case "track_interface":
			t.kind = "interface"
			if len(d.Name) > 15 {
				c.mark(d, Ignored, "not an interface name; keepalived ignores it")
				continue
			}
			t.check = c.interfaceCheck(d)
			args = d.Args
		}
		if len(args) > 0 {
			if args[0] != "weight" {
				c.mark(d, Ignored, fmt.Sprintf("unknown option %q; keepalived ignores it and uses the default weight", args[0]))
			} else if w, rev, ok := c.weightArgs(d, args[1:]); ok {
				t.weight, t.reverse = w, rev
			}
		}
		dupe := false
		for _, o := range out {
			dupe = dupe || o.check == t.check
		}
		if in != nil {
			for _, o := range in.tracks {
				dupe = dupe || o.check == t.check
			}
		}
		if dupe {
			c.mark(d, Ignored, "tracked twice; keepalived uses the first entry, and so does the importer")
			continue
		}
		c.mark(d, Carried, "")
		if t.kind == "interface" && t.weight == 0 {
			c.mark(d, Carried, "→ interface check "+t.check.Name+": FAULT while it is down, as keepalived")
		}
		out = append(out, t)
	}
	if in != nil {
		in.tracks = append(in.tracks, out...)
	}
	return out
}

// interfaceCheck returns the interface check for track_interface IF,
// shared by every group that tracks it.
func (c *converter) interfaceCheck(d *Directive) *Check {
	return c.interfaceCheckFor(d, d.Name)
}

func (c *converter) interfaceCheckFor(d *Directive, iface string) *Check {
	for _, x := range c.res.Checks {
		if x.Type == "interface" && x.Iface == iface {
			return x
		}
	}
	ch := &Check{Type: "interface", Iface: iface, Script: "track_interface " + iface, line: d.Line}
	ch.Name = c.newCheckName(d, "if_"+iface, "_if")
	c.res.Checks = append(c.res.Checks, ch)
	return ch
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

// syncGroup is a vrrp_sync_group as read.
type syncGroup struct {
	d              *Directive
	pos            int
	name           string
	members        []*Directive // the member entries
	tracksD        []*Directive // track_* blocks, read once the instances are known
	hooks          map[string]*hookRef
	trackingWeight bool
	email          bool
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
	for _, x := range d.Block {
		switch x.Name {
		case "group":
			if !x.HasBlock {
				c.mark(x, Ignored, "expects a { } block of vrrp_instance names; keepalived ignores it")
				continue
			}
			c.mark(x, Carried, "")
			for _, m := range x.Block {
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
			if in.iface != first.iface {
				var on []string
				for _, m := range members {
					on = append(on, m.name+" on "+m.iface)
				}
				refuse = append(refuse, fmt.Sprintf("its instances are on several interfaces (%s): needs per-address interface, not supported yet", strings.Join(on, ", ")))
			}
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
	}
	if addrs[0].p.Addr().Is6() {
		return
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
	pre := ""
	if typ == "GROUP" {
		prio = "0"
		// keepalived calls a sync group's script with STOP never.
		pre = `[ "$3" = STOP ] && exit 0; `
	}
	script := fmt.Sprintf(`%s%s %s %s "$3" %s`, pre, cmd, typ, shellQuote(h.owner), prio)
	note := fmt.Sprintf("→ notify.any through /bin/sh -c, so the script gets what keepalived passes: %s %s STATE %s", typ, h.owner, strings.Trim(prio, `"`))
	if typ == "GROUP" {
		note += " (and no STOP)"
	}
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

// intArg reads an integer as keepalived's lenient readers do (strtol,
// "ignore_error"): a number followed by anything else counts as that
// number, with a warning, and text without a number as 0; a value out of
// lo..hi is ignored, and so is the directive.
func (c *converter) intArg(d *Directive, lo, hi int) (int, bool) {
	if len(d.Args) < 1 {
		c.mark(d, Ignored, "no value; keepalived ignores it too")
		return 0, false
	}
	n, rest := leadingInt(d.Args[0])
	if n < int64(lo) || n > int64(hi) {
		c.mark(d, Ignored, fmt.Sprintf("%q is not an integer in %d..%d; keepalived ignores it too", d.Args[0], lo, hi))
		return 0, false
	}
	if rest != "" {
		c.mark(d, Carried, fmt.Sprintf("keepalived reads %q as %d (it warns: invalid number), and so does the importer", d.Args[0], n))
	}
	return int(n), true
}

// leadingInt is strtol's reading of s: blanks, a sign and digits; rest is
// what follows them (all of s when there is no number: then 0).
func leadingInt(s string) (n int64, rest string) {
	t := strings.TrimLeft(s, " \t")
	i := 0
	if i < len(t) && (t[i] == '-' || t[i] == '+') {
		i++
	}
	j := i
	for j < len(t) && t[j] >= '0' && t[j] <= '9' {
		j++
	}
	if j == i {
		return 0, s
	}
	v, err := strconv.ParseInt(t[:j], 10, 64)
	if err != nil {
		return math.MaxInt64, t[j:]
	}
	return v, t[j:]
}

// secondsArg reads keepalived seconds (integer or decimal) as a duration,
// rounded to the millisecond. As keepalived, a number followed by other
// text counts as the number, with a warning.
func (c *converter) secondsArg(d *Directive) (time.Duration, bool) {
	if len(d.Args) < 1 {
		c.mark(d, Ignored, "no value; keepalived ignores it too")
		return 0, false
	}
	m := leadingDecimalRE.FindStringSubmatch(d.Args[0])
	f, err := 0.0, error(nil)
	if m != nil {
		f, err = strconv.ParseFloat(m[1], 64)
	}
	if m == nil || err != nil || f > 1e6 {
		c.mark(d, Ignored, fmt.Sprintf("%q is not a number of seconds; keepalived ignores it too", d.Args[0]))
		return 0, false
	}
	if len(m[0]) != len(d.Args[0]) {
		c.mark(d, Carried, fmt.Sprintf("keepalived reads %q as %s s (it warns: invalid number), and so does the importer", d.Args[0], m[1]))
	}
	return time.Duration(math.Round(f*1000)) * time.Millisecond, true
}

var leadingDecimalRE = regexp.MustCompile(`^[ \t]*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)`)

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
