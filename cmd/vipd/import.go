package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vipd/vipd/internal/keepalived"
)

// Exit statuses of import-keepalived beyond 0 (converted), 1 (unreadable,
// syntax error, or a result vipd check refuses) and 2 (usage).
const (
	// exitRefused: something cannot be carried faithfully (named on
	// stderr); no YAML is written unless --skip-refused.
	exitRefused = 3
	// exitNotStrict: --strict, and something was changed or dropped.
	exitNotStrict = 4
)

// importKeepalived converts a keepalived.conf: the vipd YAML on stdout,
// and on stderr every line that was not carried as written (ignored,
// changed, dropped or refused), each as file:line: kind: directive:
// reason, then a count of the lines by kind.
func importKeepalived(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipd import-keepalived", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "", "write node: NAME (default: leave it to the hostname); also the config id for @ID lines")
	configID := fs.String("config-id", "", "keepalived's config id (its -i) for @ID lines (default: --node, else this host's name up to the first dot, as keepalived)")
	etcd := fs.String("etcd", "", "etcd client URLs, comma-separated (default: a placeholder to edit)")
	strict := fs.Bool("strict", false, "exit 4 if anything was changed, dropped or refused")
	skip := fs.Bool("skip-refused", false, "write the groups that can be carried, leaving out the refused ones (still reported)")
	report := fs.Bool("report", false, "also print every line of the file with what became of it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vipd import-keepalived [--node NAME] [--config-id ID] [--etcd URL,...] [--strict] [--skip-refused] [--report] FILE > vipd.yaml")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "exit: 0 converted, 1 unreadable or invalid, 2 usage, 3 something cannot be carried (named), 4 --strict and something changed or dropped")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Allow flags after the file name too.
	rest := fs.Args()
	if len(rest) > 1 {
		file := rest[0]
		if err := fs.Parse(rest[1:]); err != nil {
			return 2
		}
		rest = append([]string{file}, fs.Args()...)
	}
	if len(rest) != 1 {
		fs.Usage()
		return 2
	}
	file := rest[0]
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	var endpoints []string
	for _, e := range strings.Split(*etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	id := *configID
	if id == "" && *node == "" {
		// keepalived's default config id: the host name up to its first dot.
		if h, err := os.Hostname(); err == nil {
			id, _, _ = strings.Cut(h, ".")
		}
	}
	res, err := keepalived.Convert(file, string(src), keepalived.Options{Node: *node, ConfigID: id, Endpoints: endpoints, SkipRefused: *skip})
	var pe *keepalived.ParseError
	switch {
	case errors.As(err, &pe):
		fmt.Fprintf(stderr, "vipd: parse error: %v\n", err)
		return 1
	case res == nil:
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	io.WriteString(stderr, res.FormatNotes(file))
	if *report {
		fmt.Fprintf(stderr, "%s: every line:\n%s", file, res.FormatLines())
	}
	fmt.Fprintf(stderr, "%s: %s\n", file, res.Summary())
	switch {
	case errors.Is(err, keepalived.ErrRefused):
		fmt.Fprintf(stderr, "vipd: %v: see the refused lines above; no configuration written (--skip-refused writes the rest)\n", err)
		return exitRefused
	case err != nil:
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(res.Render(file)); err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	if res.Refused {
		// --skip-refused: the rest was written, but not all of it.
		fmt.Fprintf(stderr, "vipd: %s: the refused groups above were left out\n", file)
		return exitRefused
	}
	if *strict && !res.Faithful() {
		fmt.Fprintf(stderr, "vipd: --strict: %s: some lines were changed or dropped (above)\n", file)
		return exitNotStrict
	}
	return 0
}
