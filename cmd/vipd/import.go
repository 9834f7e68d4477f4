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

// importKeepalived converts a keepalived.conf: the vipd YAML on stdout, and
// on stderr every directive that was not carried over (or was changed),
// each as file:line: directive: reason. Exit 0 when a config was written,
// 1 when the file cannot be read or parsed, 2 on usage errors.
func importKeepalived(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipd import-keepalived", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "", "write node: NAME (default: leave it to the hostname)")
	etcd := fs.String("etcd", "", "etcd client URLs, comma-separated (default: a placeholder to edit)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vipd import-keepalived [--node NAME] [--etcd URL,...] FILE > vipd.yaml")
		fs.PrintDefaults()
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
	res, err := keepalived.Convert(file, string(src), keepalived.Options{Node: *node, Endpoints: endpoints})
	if err != nil {
		var pe *keepalived.ParseError
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "vipd: parse error: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "vipd: %v\n", err)
		}
		return 1
	}
	if _, err := stdout.Write(res.Render(file)); err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	if len(res.Notes) > 0 {
		fmt.Fprintf(stderr, "%d directive(s) not carried over or changed:\n", len(res.Notes))
	}
	for _, n := range res.Notes {
		fmt.Fprintln(stderr, n.Format(file))
	}
	return 0
}
