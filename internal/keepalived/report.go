package keepalived

import (
	"fmt"
	"sort"
	"strings"
)

// Kind is what became of a line or directive of the source.
type Kind int

// The kinds, from harmless to fatal. A line's kind is the worst of the
// kinds of what it holds.
const (
	// Carried: converted with keepalived's behaviour (a note, if any,
	// only explains how).
	Carried Kind = iota
	// Ignored: has no effect on the VIPs in vipd, by design (VRRP's own
	// machinery, which the etcd election replaces) or because keepalived
	// ignores it too.
	Ignored
	// Changed: converted, with a stated difference in behaviour.
	Changed
	// Dropped: not converted; what it configured is lost (the reason
	// says what to do instead).
	Dropped
	// Refused: cannot be converted faithfully; the conversion fails
	// naming it (or, with SkipRefused, leaves its group out).
	Refused
)

func (k Kind) String() string {
	switch k {
	case Carried:
		return "carried"
	case Ignored:
		return "ignored"
	case Changed:
		return "changed"
	case Dropped:
		return "dropped"
	case Refused:
		return "refused"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Note is one thing to read about the conversion: a directive that was
// not carried as written, with why.
type Note struct {
	Line      int    // line in the input; 0 if none
	Directive string // the directive as written, e.g. "virtual_router_id 51"
	Reason    string // one line
	Kind      Kind
}

// Format renders the note as "file:line: kind: directive: reason".
func (n Note) Format(file string) string {
	if n.Line == 0 {
		return fmt.Sprintf("%s: %s: %s: %s", file, n.Kind, n.Directive, n.Reason)
	}
	return fmt.Sprintf("%s:%d: %s: %s: %s", file, n.Line, n.Kind, n.Directive, n.Reason)
}

// LineStatus is what became of one non-blank, non-comment line of the
// source.
type LineStatus struct {
	Line int
	Kind Kind
	Text string // the line as written, trimmed
}

// Count returns how many lines of the report have each kind.
func (r *Result) Count() map[Kind]int {
	m := map[Kind]int{}
	for _, l := range r.Lines {
		m[l.Kind]++
	}
	return m
}

// Summary is a one-line count of the report's lines by kind.
func (r *Result) Summary() string {
	m := r.Count()
	var parts []string
	for k := Carried; k <= Refused; k++ {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return fmt.Sprintf("%d lines: %s", len(r.Lines), strings.Join(parts, ", "))
}

// Faithful says whether nothing was changed, dropped or refused: what
// --strict requires.
func (r *Result) Faithful() bool {
	for _, l := range r.Lines {
		if l.Kind >= Changed {
			return false
		}
	}
	for _, n := range r.Notes {
		if n.Kind >= Changed {
			return false
		}
	}
	return true
}

// FormatNotes renders every note, one per line, in line order.
func (r *Result) FormatNotes(file string) string {
	var b strings.Builder
	for _, n := range r.Notes {
		b.WriteString(n.Format(file))
		b.WriteByte('\n')
	}
	return b.String()
}

// FormatLines renders the line report: every non-blank, non-comment line
// of the source with its kind.
func (r *Result) FormatLines() string {
	var b strings.Builder
	for _, l := range r.Lines {
		fmt.Fprintf(&b, "%4d %-7s | %s\n", l.Line, l.Kind, l.Text)
	}
	return b.String()
}

// lineReport works out every source line's kind: the worst kind of the
// directives that start on it and of what preprocessing did with it; a
// line with neither (a lone '}' or '{') has the kind of the block it
// belongs to. unaccounted lists lines nothing explains (a bug).
func lineReport(src string, top []*Directive, pp *ppResult) (out []LineStatus, unaccounted []int) {
	raw := strings.Split(src, "\n")
	kinds := map[int]Kind{}
	set := func(line int, k Kind) {
		if old, ok := kinds[line]; !ok || k > old {
			kinds[line] = k
		}
	}
	var walk func(ds []*Directive)
	walk = func(ds []*Directive) {
		for _, d := range ds {
			set(d.Line, d.kind)
			walk(d.Block)
		}
	}
	walk(top)
	for line, k := range pp.kinds {
		set(line, k)
	}
	// Blocks, innermost last, for lines that start no directive.
	var blocks []*Directive
	var collect func(ds []*Directive)
	collect = func(ds []*Directive) {
		for _, d := range ds {
			if d.HasBlock {
				blocks = append(blocks, d)
				collect(d.Block)
			}
		}
	}
	collect(top)
	sort.SliceStable(blocks, func(i, j int) bool { return blocks[i].EndLine-blocks[i].Line > blocks[j].EndLine-blocks[j].Line })
	for i, text := range raw {
		line := i + 1
		t := strings.TrimSpace(strings.TrimRight(text, "\r"))
		if decomment(t) == "" {
			continue
		}
		k, ok := kinds[line]
		if !ok {
			for _, b := range blocks { // widest first: the last match is the innermost
				if b.Line <= line && line <= b.EndLine {
					k, ok = b.kind, true
				}
			}
		}
		if !ok {
			unaccounted = append(unaccounted, line)
			k = Dropped
		}
		out = append(out, LineStatus{Line: line, Kind: k, Text: t})
	}
	return out, unaccounted
}
