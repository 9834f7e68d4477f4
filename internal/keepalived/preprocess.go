package keepalived

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// keepalived reads its configuration a line at a time and rewrites each
// line before parsing it (lib/parser.c, read_line): comments are cut,
// a line starting "@ID " is kept only when ID is keepalived's config id
// (-i, default: the host name up to its first dot; "@^ID " keeps it when
// ID is not), "$NAME=VALUE" defines a parameter (a value ending in '\'
// continues on the next lines), "$NAME" or "${NAME}" is replaced by its
// value (recursively, at use time), and "~SEQ(VAR, START, STEP, END) TEXT"
// repeats TEXT with $VAR counting. preprocess does the same, so the
// converter sees what keepalived sees, and keeps each output line's
// source line number for the report.

// srcLine is one line as keepalived parses it, with the line of the
// source it came from.
type srcLine struct {
	text string
	line int
}

// ppResult is what preprocessing found besides the lines: the kind of
// every source line it consumed itself (definitions, lines for another
// host), and notes.
type ppResult struct {
	lines []srcLine
	kinds map[int]Kind
	notes []Note
	// conditional says whether the file had @ID lines.
	conditional bool
}

type definition struct {
	value     string // lines joined with "\n" for a multi-line definition
	multiline bool
}

// A queued line: text to process, or a definition to set first (for
// ~SEQ iterations).
type ppItem struct {
	text      string
	line      int
	setName   string
	setValue  string
	fromMacro bool // from a multi-line definition or a ~SEQ: already decommented
}

// maxLines bounds the lines preprocessing makes, so that a multi-line
// definition that expands to itself, or nested ~SEQs, end in an error.
const maxLines = 200000

// maxExpansions bounds parameter replacements on one line, so that a
// definition that refers to itself is an error rather than a hang.
const maxExpansions = 200

type preprocessor struct {
	file string
	id   string // keepalived's config id ("" matches no @ID line)
	defs map[string]*definition
	res  *ppResult
	// the multi-line definition being read, if any
	collecting *definition
	steps      int // lines processed, against maxLines
}

// preprocess rewrites src as keepalived's read_line does. id is the
// config id conditional lines are evaluated for.
func preprocess(file, src, id string) (*ppResult, error) {
	p := &preprocessor{file: file, id: id, defs: map[string]*definition{}, res: &ppResult{kinds: map[int]Kind{}}}
	raw := strings.Split(src, "\n")
	for i, text := range raw {
		line := i + 1
		text = strings.TrimRight(text, "\r")
		if p.collecting != nil {
			p.continueDefinition(text, line)
			continue
		}
		if err := p.process([]ppItem{{text: text, line: line}}); err != nil {
			return nil, err
		}
	}
	return p.res, nil
}

// continueDefinition adds a line to the multi-line definition being read.
func (p *preprocessor) continueDefinition(text string, line int) {
	d := p.collecting
	if text == "" {
		// An empty line ends the definition (a blank or comment line
		// does not).
		p.collecting = nil
		return
	}
	p.res.kinds[line] = Carried
	t := decomment(text)
	if t == "" {
		return
	}
	more := strings.HasSuffix(t, `\`)
	if more {
		t = strings.TrimRight(strings.TrimSuffix(t, `\`), " \t")
	}
	if t != "" {
		if d.value == "" {
			d.value = t
		} else {
			d.value += "\n" + t
		}
	}
	if !more {
		p.collecting = nil
	}
}

// process handles queued lines until none is left; expanding a
// multi-line definition or a ~SEQ puts more lines in front. The queue is
// a stack, the next line last, so that putting lines in front is cheap.
func (p *preprocessor) process(queue []ppItem) error {
	stack := make([]ppItem, 0, len(queue))
	for i := len(queue) - 1; i >= 0; i-- {
		stack = append(stack, queue[i])
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if p.steps++; p.steps > maxLines {
			return &ParseError{p.file, it.line, fmt.Sprintf("expands to more than %d lines (a definition that expands to itself, or nested ~SEQ?)", maxLines)}
		}
		if it.setName != "" {
			p.defs[it.setName] = &definition{value: it.setValue}
			continue
		}
		more, err := p.processLine(it)
		if err != nil {
			return err
		}
		for i := len(more) - 1; i >= 0; i-- {
			stack = append(stack, more[i])
		}
	}
	return nil
}

// processLine rewrites one line as keepalived's read_line: a conditional
// prefix, then a definition, a ~SEQ, or parameter replacement. It returns
// lines to process next (from a multi-line definition or a ~SEQ).
func (p *preprocessor) processLine(it ppItem) ([]ppItem, error) {
	line := it.line
	buf := it.text
	if it.fromMacro {
		// Lines of a definition were decommented when it was read.
		buf = strings.TrimLeft(buf, " \t")
	} else {
		buf = decomment(buf)
	}
	if buf == "" {
		return nil, nil
	}
	if buf[0] == '@' {
		p.res.conditional = true
		keep, rest, host := p.conditional(buf)
		if !keep {
			if k, seen := p.res.kinds[line]; !seen || k == Carried {
				p.res.kinds[line] = Ignored
			}
			p.res.notes = append(p.res.notes, Note{Line: line, Directive: oneLine(buf), Kind: Ignored,
				Reason: p.conditionalReason(host, buf)})
			return nil, nil
		}
		buf = rest
		if buf == "" {
			return nil, nil
		}
	}
	if name, value, ok := parseDefinition(buf); ok {
		p.res.kinds[line] = Carried
		d := &definition{value: value}
		if strings.HasSuffix(value, `\`) {
			if it.fromMacro {
				return nil, &ParseError{p.file, line, "a multi-line definition inside a multi-line definition is not supported by the importer"}
			}
			d.multiline = true
			d.value = strings.TrimRight(strings.TrimSuffix(value, `\`), " \t")
			p.collecting = d
		}
		p.defs[name] = d
		return nil, nil
	}
	if strings.HasPrefix(buf, "~SEQ") {
		p.res.kinds[line] = Carried
		return p.sequence(buf, line)
	}
	if strings.HasPrefix(buf, "~LST") {
		p.res.kinds[line] = Dropped
		p.res.notes = append(p.res.notes, Note{Line: line, Directive: oneLine(buf), Kind: Dropped,
			Reason: "~LST is not evaluated by the importer: write its lines out"})
		return nil, nil
	}
	var more []ppItem
	if buf[0] != '~' && strings.Contains(buf, "$") {
		out, rest, changed, err := p.replace(buf, line)
		if err != nil {
			return nil, err
		}
		if changed {
			// keepalived decomments the result once more, and does not
			// look for a conditional or a definition in it again.
			buf = decomment(out)
		}
		for _, r := range rest {
			more = append(more, ppItem{text: r, line: line, fromMacro: true})
		}
	}
	if name := undefinedBraced(buf); name != "" {
		id := p.id
		if id == "" {
			id = "(none)"
		}
		// keepalived leaves it as written and then reads its braces as a
		// block: the result is not what the file means. Usually a
		// template not filled in, or @ID lines for another config id.
		return nil, &ParseError{p.file, line, fmt.Sprintf("${%s} is not defined (config id %s): keepalived would read its braces as a block; define it with $%s=VALUE, fill in the template, or pass the config id its @ID lines are for (--config-id, --node)", name, id, name)}
	}
	if buf != "" {
		p.res.lines = append(p.res.lines, srcLine{text: buf, line: line})
	}
	return more, nil
}

// undefinedBraced returns the name of a ${NAME} left in buf outside double
// quotes (inside them, as in a script, it is only text).
func undefinedBraced(buf string) string {
	quote := false
	for i := 0; i+1 < len(buf); i++ {
		switch {
		case buf[i] == '\\':
			i++
		case buf[i] == '"':
			quote = !quote
		case !quote && buf[i] == '$' && buf[i+1] == '{':
			if name, _, _, ok := referenceAt(buf, i); ok {
				return name
			}
		}
	}
	return ""
}

// conditional evaluates an "@ID rest" or "@^ID rest" line: keep says
// whether the rest applies to this config id.
func (p *preprocessor) conditional(buf string) (keep bool, rest, host string) {
	reverse := strings.HasPrefix(buf, "@^")
	s := buf[1:]
	if reverse {
		s = buf[2:]
	}
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return false, "", s // nothing after the id: keepalived drops the line
	}
	host = s[:i]
	match := p.id != "" && host == p.id
	if match == reverse {
		return false, "", host
	}
	return true, strings.TrimLeft(s[i:], " \t"), host
}

func (p *preprocessor) conditionalReason(host, buf string) string {
	id := p.id
	if id == "" {
		id = "(none)"
	}
	if strings.HasPrefix(buf, "@^") {
		return fmt.Sprintf("for every host but %s; this conversion is for config id %s (--config-id, default --node)", host, id)
	}
	return fmt.Sprintf("for host %s; this conversion is for config id %s (--config-id, default --node)", host, id)
}

// parseDefinition recognises "$NAME=VALUE": NAME is letters, digits and
// '_', not starting with a digit, directly followed by '='.
func parseDefinition(buf string) (name, value string, ok bool) {
	if len(buf) < 3 || buf[0] != '$' || !(isAlpha(buf[1]) || buf[1] == '_') {
		return "", "", false
	}
	i := 2
	for i < len(buf) && (isAlnum(buf[i]) || buf[i] == '_') {
		i++
	}
	if i >= len(buf) || buf[i] != '=' {
		return "", "", false
	}
	return buf[1:i], strings.TrimLeft(buf[i+1:], " \t"), true
}

// replace substitutes defined parameters in buf, left to right, as
// keepalived's replace_param: a replaced value is scanned again from its
// start, so parameters in it are replaced too (at use time, with the
// definitions then in force). A multi-line definition referred to at the
// end of the line contributes its first line in place and returns the
// others in rest. changed is false when nothing was replaced.
func (p *preprocessor) replace(buf string, line int) (out string, rest []string, changed bool, err error) {
	i, n := 0, 0
	for {
		j := strings.IndexByte(buf[i:], '$')
		if j < 0 || i+j+1 >= len(buf) {
			return buf, rest, changed, nil
		}
		j += i
		name, params, end, ok := referenceAt(buf, j)
		if !ok {
			i = j + 1
			continue
		}
		value, multi, known, verr := p.lookup(name, params, line)
		if verr != nil {
			return "", nil, false, verr
		}
		if !known || (multi && end != len(buf)) {
			// Undefined parameters stay as written; a multi-line
			// definition is expanded only at the end of a line.
			i = end
			continue
		}
		if n++; n > maxExpansions {
			return "", nil, false, &ParseError{p.file, line, "parameter replacement does not end (a definition that refers to itself?)"}
		}
		if multi {
			lines := strings.Split(value, "\n")
			value, rest = lines[0], append(append([]string{}, lines[1:]...), rest...)
		}
		buf = buf[:j] + value + buf[end:]
		changed = true
		if t := strings.TrimLeft(value, " \t"); strings.HasPrefix(t, "~") {
			return buf, rest, changed, nil
		}
		i = j
	}
}

// referenceAt parses "$NAME" or "${NAME PARAMS}" at buf[j]. A bare
// reference must be followed by a blank, ',', ')' or the end of the line.
func referenceAt(buf string, j int) (name, params string, end int, ok bool) {
	k := j + 1
	braces := k < len(buf) && buf[k] == '{'
	if braces {
		k++
	}
	if k >= len(buf) || !(isAlpha(buf[k]) || buf[k] == '_') {
		return "", "", 0, false
	}
	s := k
	for k < len(buf) && (isAlnum(buf[k]) || buf[k] == '_') {
		k++
	}
	name = buf[s:k]
	if braces {
		ps := k
		for k < len(buf) && buf[k] != '}' && (buf[k] == ' ' || buf[k] == '\t' || isAlnum(buf[k]) || buf[k] == '_') {
			k++
		}
		if k >= len(buf) || buf[k] != '}' {
			return "", "", 0, false
		}
		params = strings.TrimSpace(buf[ps:k])
		return name, params, k + 1, true
	}
	if k < len(buf) && !strings.ContainsRune(" \t,)", rune(buf[k])) {
		return "", "", 0, false
	}
	return name, "", k, true
}

// lookup returns a parameter's value: a definition, or one of keepalived's
// predefined ones the importer can reproduce.
func (p *preprocessor) lookup(name, params string, line int) (value string, multi, known bool, err error) {
	if d, ok := p.defs[name]; ok && params == "" {
		return d.value, d.multiline, true, nil
	}
	switch name {
	case "_INSTANCE":
		return p.id, false, true, nil
	case "_HASH":
		return "#", false, true, nil
	case "_BANG":
		return "!", false, true, nil
	case "_PWD":
		dir, derr := filepath.Abs(filepath.Dir(p.file))
		if derr != nil {
			dir = filepath.Dir(p.file)
		}
		p.res.notes = append(p.res.notes, Note{Line: line, Directive: "${_PWD}", Kind: Changed,
			Reason: fmt.Sprintf("expanded to %s, the directory the importer read the file from; keepalived expands it to the file's directory on the node", dir)})
		return dir, false, true, nil
	case "_RANDOM", "_ENV":
		return "", false, false, &ParseError{p.file, line, fmt.Sprintf("${%s} depends on keepalived's run time and cannot be evaluated by the importer: replace it with its value", name)}
	}
	return "", false, false, nil
}

// sequence expands "~SEQ(VAR, START, STEP, END) TEXT" (or ~SEQx, with the
// value in hex) into TEXT once per value, $VAR set to the value.
func (p *preprocessor) sequence(buf string, line int) ([]ppItem, error) {
	bad := func(why string) error {
		return &ParseError{p.file, line, fmt.Sprintf("invalid ~SEQ %q: %s", buf, why)}
	}
	s := buf[4:]
	hex := strings.HasPrefix(s, "x")
	if hex {
		s = s[1:]
	}
	s = strings.TrimLeft(s, " \t")
	if !strings.HasPrefix(s, "(") {
		return nil, bad("want ~SEQ(VAR, START, STEP, END)")
	}
	closing := strings.IndexByte(s, ')')
	if closing < 0 {
		return nil, bad("no closing ')'")
	}
	args := strings.Split(s[1:closing], ",")
	text := strings.TrimLeft(s[closing+1:], " \t")
	v := strings.TrimSpace(args[0])
	if v == "" || !(isAlpha(v[0]) || v[0] == '_') {
		return nil, bad("no variable")
	}
	var nums []int64
	for _, a := range args[1:] {
		a = strings.TrimSpace(a)
		if r, _, changed, err := p.replace(a, line); err == nil && changed {
			a = strings.TrimSpace(r)
		}
		n, err := strconv.ParseInt(a, 0, 64)
		if err != nil {
			return nil, bad(fmt.Sprintf("%q is not a number", a))
		}
		nums = append(nums, n)
	}
	var start, step, end int64
	switch len(nums) {
	case 1:
		end = nums[0]
		start, step = 1, 1
		if end < 0 {
			start = -1
		}
		if end < 1 {
			step = -1
		}
	case 2:
		start, end = nums[0], nums[1]
		step = 1
		if start > end {
			step = -1
		}
	case 3:
		start, step, end = nums[0], nums[1], nums[2]
		if step == 0 || (start < end && step < 0) || (start > end && step > 0) {
			return nil, bad("the step does not lead from start to end")
		}
	default:
		return nil, bad("want one to three numbers")
	}
	if hex && (start < 0 || end < 0) {
		return nil, bad("~SEQx takes positive numbers")
	}
	var items []ppItem
	for n, i := start, 0; (step > 0 && n <= end) || (step < 0 && n >= end); n, i = n+step, i+1 {
		if i > 10000 {
			return nil, bad("more than 10000 values")
		}
		val := strconv.FormatInt(n, 10)
		if hex {
			val = strconv.FormatInt(n, 16)
		}
		items = append(items, ppItem{line: line, setName: v, setValue: val}, ppItem{text: text, line: line, fromMacro: true})
	}
	return items, nil
}

// decomment is keepalived's: leading blanks go, a '!' or '#' outside
// double quotes ends the line, "\#" and "\!" outside quotes are the
// characters themselves, trailing blanks go, and a trailing '\' (a
// continuation) is kept.
func decomment(s string) string {
	s = strings.TrimLeft(s, " \t")
	var b strings.Builder
	quote, cont := false, false
loop:
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quote = !quote
			b.WriteByte(c)
		case c == '\\' && i+1 < len(s):
			if !quote && (s[i+1] == '#' || s[i+1] == '!') {
				b.WriteByte(s[i+1])
			} else {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case c == '\\':
			cont = true
			break loop
		case !quote && (c == '!' || c == '#'):
			break loop
		default:
			b.WriteByte(c)
		}
	}
	out := strings.TrimRight(b.String(), " \t")
	if cont {
		out += `\`
	}
	return out
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }
