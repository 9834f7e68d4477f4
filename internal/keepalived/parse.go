// Package keepalived reads a keepalived.conf as keepalived reads it
// (preprocess.go: comments, @ID lines, $NAME definitions, ~SEQ) and
// converts its VRRP part into a vipd configuration. Every directive, and
// every line, ends up carried, ignored, changed, dropped or refused, each
// with a one-line reason (report.go); what cannot be carried faithfully
// fails the conversion by name rather than being approximated.
//
// Files: parse.go (syntax), convert.go (the walk, global_defs, numbers),
// checks.go (scripts and tracking), instance.go (vrrp_instance and
// keepalived's rules for it), sync.go (vrrp_sync_group), garp.go
// (announcement schedules), emit.go (groups), keywords.go (what becomes of
// the rest), yaml.go (rendering).
package keepalived

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Directive is one keepalived statement: a keyword, its arguments, and the
// statements of its block if it opened one ("name args {").
type Directive struct {
	Name     string
	Args     []string
	Line     int
	HasBlock bool
	Block    []*Directive
	// EndLine is the line of the '}' closing the block (0 without one).
	EndLine int

	// What the conversion did with it, for the report.
	kind      Kind
	marked    bool
	blockRead bool // a handler read the block entry by entry
}

// String renders the directive as it appeared (without its block).
func (d *Directive) String() string {
	parts := append([]string{d.Name}, d.Args...)
	for i, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t") {
			parts[i] = fmt.Sprintf("%q", p)
		}
	}
	return strings.Join(parts, " ")
}

// ParseError is a syntax error at a line of the input.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

type tokKind int

const (
	tokWord tokKind = iota
	tokOpen
	tokClose
	tokEOL
)

type token struct {
	kind tokKind
	text string
	line int
}

// lex splits preprocessed lines into words and braces, with a line end
// after each line. Comments are gone (preprocess cut them). Double-quoted
// strings may contain spaces and braces; \" and \\ are escapes inside
// them.
func lex(file string, lines []srcLine) ([]token, error) {
	var toks []token
	last := 1
	for _, sl := range lines {
		src, line := sl.text, sl.line
		last = line
		if !utf8.ValidString(src) {
			return nil, &ParseError{file, line, "not valid UTF-8 (vipd's configuration is UTF-8 text): convert the file, e.g. with iconv"}
		}
		i := 0
		for i < len(src) {
			c := src[i]
			switch {
			case c == ' ' || c == '\t' || c == '\r':
				i++
			case c == '{':
				toks = append(toks, token{tokOpen, "{", line})
				i++
			case c == '}':
				toks = append(toks, token{tokClose, "}", line})
				i++
			case c == '"':
				var b strings.Builder
				i++
				closed := false
				for i < len(src) {
					c := src[i]
					if c == '\\' && i+1 < len(src) && (src[i+1] == '"' || src[i+1] == '\\') {
						b.WriteByte(src[i+1])
						i += 2
						continue
					}
					if c == '"' {
						closed = true
						i++
						break
					}
					b.WriteByte(c)
					i++
				}
				if !closed {
					return nil, &ParseError{file, line, "unterminated quoted string"}
				}
				toks = append(toks, token{tokWord, b.String(), line})
			default:
				start := i
				for i < len(src) && !strings.ContainsRune(" \t\r{}\"", rune(src[i])) {
					i++
				}
				toks = append(toks, token{tokWord, src[start:i], line})
			}
		}
		toks = append(toks, token{tokEOL, "", line})
	}
	toks = append(toks, token{tokEOL, "", last})
	return toks, nil
}

// Parse reads keepalived.conf syntax into a tree of directives. A
// statement is the words on one line; a '{' opens its block, which the
// matching '}' closes. file names the input in errors. Lines are first
// rewritten as keepalived does (comments, @ID lines for no config id,
// $NAME definitions; see preprocess).
func Parse(file, src string) ([]*Directive, error) {
	pp, err := preprocess(file, src, "")
	if err != nil {
		return nil, err
	}
	return parseLines(file, pp.lines)
}

func parseLines(file string, lines []srcLine) ([]*Directive, error) {
	toks, err := lex(file, lines)
	if err != nil {
		return nil, err
	}
	type frame struct {
		open *Directive // nil for the top level
		list *[]*Directive
	}
	var top []*Directive
	stack := []frame{{nil, &top}}
	var cur *Directive // statement being collected on this line
	for _, t := range toks {
		f := &stack[len(stack)-1]
		switch t.kind {
		case tokWord:
			if cur == nil {
				cur = &Directive{Name: t.text, Line: t.line}
				*f.list = append(*f.list, cur)
			} else {
				cur.Args = append(cur.Args, t.text)
			}
		case tokOpen:
			if cur == nil {
				// keepalived allows the brace on the next line:
				// "vrrp_instance VI_1\n{". Attach it to the statement
				// just before, if that one has no block yet.
				l := *f.list
				if len(l) == 0 || l[len(l)-1].HasBlock {
					return nil, &ParseError{file, t.line, "'{' without a directive before it"}
				}
				cur = l[len(l)-1]
			}
			cur.HasBlock = true
			stack = append(stack, frame{cur, &cur.Block})
			cur = nil
		case tokClose:
			if len(stack) == 1 {
				return nil, &ParseError{file, t.line, "'}' without a matching '{'"}
			}
			stack[len(stack)-1].open.EndLine = t.line
			stack = stack[:len(stack)-1]
			cur = nil
		case tokEOL:
			cur = nil
		}
	}
	if len(stack) > 1 {
		open := stack[len(stack)-1].open
		return nil, &ParseError{file, open.Line, fmt.Sprintf("block %q opened here is never closed", open.Name)}
	}
	return top, nil
}
