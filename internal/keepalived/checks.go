package keepalived

// Checks: vrrp_script, vrrp_track_process and track_file definitions, and
// the track_* entries that tie them to groups.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/vipd/vipd/config"
)

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
	for _, d := range entries(s) {
		switch d.Name {
		case "script":
			if len(d.Args) == 0 || strings.TrimSpace(strings.Join(d.Args, " ")) == "" {
				c.mark(d, Ignored, "no command; keepalived ignores it too")
				continue
			}
			script = d
			ch.Script = strings.Join(d.Args, " ")
			c.mark(d, Carried, "")
		case "interval", "timeout":
			if dur, ok := c.secondsArg(d); ok {
				switch {
				case dur == 0:
					dur = time.Second
					c.mark(d, Carried, "keepalived sets 0 to 1 s, and so does the importer")
				case dur < config.MinInterval:
					dur = config.MinInterval
					c.mark(d, Changed, fmt.Sprintf("%s %s is below vipd's minimum %v; %v written", d.Name, firstArg(d), config.MinInterval, config.MinInterval))
				}
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
	if len(argv) == 0 || argv[0] == "" {
		c.markTree(s, Ignored, "its script names no command; keepalived cannot run it either")
		return
	}
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
	for _, d := range entries(s) {
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
	// started or ended. vipd sees an exit at once too (pidfds): a
	// terminate delay is fall 2 with the delay as fast_interval (down one
	// delay after the exit, unless a process of that name is back); a
	// fork delay is rise counted in intervals.
	polls := func(d time.Duration) int { return max(1, int(math.Ceil(float64(d)/float64(ch.Interval)))) }
	if termDelay > 0 {
		// Down (fall − 1) fast intervals after the exit: at least the
		// delay, with fast_interval ≤ interval as vipd requires.
		ch.FastInterval = min(max(termDelay, 10*time.Millisecond), ch.Interval)
		ch.Fall = 1 + int(math.Ceil(float64(termDelay)/float64(ch.FastInterval)))
	}
	if forkDelay > 0 {
		ch.Rise = polls(forkDelay)
	}
	for _, d := range delayD {
		down := time.Duration(ch.Fall-1) * ch.FastInterval
		if d.Name == "terminate_delay" && down == termDelay {
			c.mark(d, Carried, fmt.Sprintf("→ fall %d, fast_interval %v: down %v after the exit is seen, as keepalived", ch.Fall, ch.FastInterval, down))
			continue
		}
		c.mark(d, Changed, fmt.Sprintf("→ rise %d at interval %v, fall %d with fast_interval %v: up (down) after about the delay; keepalived waits exactly the delay after the process event",
			max(ch.Rise, 1), ch.Interval, max(ch.Fall, 1), ch.FastInterval))
	}
	if len(refuse) > 0 {
		c.refusedTP[s.Args[0]] = strings.Join(refuse, ", ")
		c.processes[s.Args[0]] = &Check{pos: pos} // a placeholder: tracking it refuses the group
		return
	}
	ch.Name = c.newCheckName(s, s.Args[0], "_process")
	c.mark(s, Carried, "a process check by name: vipd sees an exit at once (pidfds), as keepalived's kernel process events; a new process is found on the next run (interval "+ch.Interval.String()+")")
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
	for _, d := range entries(s) {
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

type trackRef struct {
	d       *Directive
	check   *Check
	weight  int
	reverse bool
	kind    string // script, interface, process, file
	group   bool   // from the sync group
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
	for _, d := range entries(blk) {
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
			if why, refused := c.refusedTP[d.Name]; refused && blk.Name == "track_process" && ch.pos < pos {
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
			if !validIfName(d.Name) {
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
	var name string
	switch {
	case prog == "killall" && len(argv) == 3 && argv[1] == "-0":
		name = argv[2]
	case prog == "pidof" && len(argv) == 2:
		name = argv[1]
	}
	// A name with '/' is a path, which vipd's process check does not take
	// (killall and pidof match it differently): run the command instead.
	if name == "" || strings.HasPrefix(name, "-") || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
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
