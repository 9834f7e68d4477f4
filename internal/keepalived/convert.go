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
	// FastInterval is the re-check after a failure (a process check's
	// terminate_delay); zero: not written.
	FastInterval time.Duration
	weight       int  // the default weight of tracks of it
	reverse      bool // the default reverse of tracks of it
	line         int
	d            *Directive
	pos          int // index of its top-level directive, for keepalived's definition order
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
	Name      string
	From      string // what it was converted from, for a comment
	Interface string
	Addresses []string
	// AddressIfaces is the interface of each address not on Interface
	// (keepalived's `dev`, or a sync group member's interface).
	AddressIfaces map[string]string
	Priority      int
	Preempt       bool
	PreemptDelay  time.Duration
	Track         []Track
	GARP          GARP
	Label         string              // IPv4 address label (keepalived `label`)
	Scope         string              // address scope (keepalived `scope`)
	Notify        map[string][]string // master|backup|fault|stop|any → argv
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
		addrOwner: map[netip.Addr]string{},
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
	addrOwner map[netip.Addr]string // address → the instance that has it
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
	var walk func(parent *Directive, ds []*Directive)
	walk = func(parent *Directive, ds []*Directive) {
		for _, d := range ds {
			switch {
			case d.marked:
			case parent != nil && !parent.blockRead:
				// "priority 100 {": keepalived reads a block where none
				// belongs as unknown keywords and skips them.
				c.markTree(d, Ignored, fmt.Sprintf("in a block after %s, which takes none; keepalived ignores it too", parent.Name))
			default:
				c.res.Unhandled++
				c.mark(d, Dropped, "not handled by the importer (a bug: please report it)")
			}
			walk(d, d.Block)
		}
	}
	walk(nil, top)
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

// entries returns d's block for a handler that reads it entry by entry;
// an entry nothing marked is then an importer bug (finish), while one in
// a block no handler reads ("priority 100 {") is keepalived's garbage.
func entries(d *Directive) []*Directive {
	d.blockRead = true
	return d.Block
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

func (c *converter) globalDefs(gd *Directive) {
	c.mark(gd, Carried, "")
	for _, d := range entries(gd) {
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

// uintArg reads keepalived's unsigned integer argument (garp_master_*).
func (c *converter) uintArg(d *Directive) (int, bool) {
	return c.intArg(d, 0, math.MaxInt32)
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
