// Package keepalived reads a keepalived.conf and converts its VRRP part
// (vrrp_script and vrrp_instance) into a vipd configuration, listing every
// directive it could not carry over with a one-line reason.
package keepalived

import (
	"fmt"
	"strings"
)

// Directive is one keepalived statement: a keyword, its arguments, and the
// statements of its block if it opened one ("name args {").
type Directive struct {
	Name     string
	Args     []string
	Line     int
	HasBlock bool
	Block    []*Directive
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

// lex splits src into words, braces and line ends. Comments start with '!'
// or '#' outside quotes and run to the end of the line. Double-quoted
// strings may contain spaces, comment characters and braces; \" and \\
// are escapes inside them.
func lex(file, src string) ([]token, error) {
	var toks []token
	line := 1
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\n':
			toks = append(toks, token{tokEOL, "", line})
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '!' || c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '{':
			toks = append(toks, token{tokOpen, "{", line})
			i++
		case c == '}':
			toks = append(toks, token{tokClose, "}", line})
			i++
		case c == '"':
			start := line
			var b strings.Builder
			i++
			closed := false
			for i < len(src) {
				c := src[i]
				if c == '\n' {
					break
				}
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
				return nil, &ParseError{file, start, "unterminated quoted string"}
			}
			toks = append(toks, token{tokWord, b.String(), line})
		default:
			start := i
			for i < len(src) && !strings.ContainsRune(" \t\r\n{}\"!#", rune(src[i])) {
				i++
			}
			toks = append(toks, token{tokWord, src[start:i], line})
		}
	}
	toks = append(toks, token{tokEOL, "", line})
	return toks, nil
}

// Parse reads keepalived.conf syntax into a tree of directives. A
// statement is the words on one line; a '{' opens its block, which the
// matching '}' closes. file names the input in errors.
func Parse(file, src string) ([]*Directive, error) {
	toks, err := lex(file, src)
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
