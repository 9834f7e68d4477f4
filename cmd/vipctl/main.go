// Command vipctl is the vipd operator CLI: it reads and writes vipd's keys
// in etcd directly.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/internal/etcdclient"
)

var version = "dev"

const usage = `usage: vipctl [flags] <command> [flags]

commands:
  status [--json]                       every group: holder, its addresses and interface, lease time left, candidates
  handover GROUP [--to NODE] [--hold D] planned switchover; waits for the new holder
  drain NODE                            NODE stops standing for every group (survives restarts)
  undrain NODE                          NODE stands again
  version

flags (all commands; before or after the command, as etcdctl and kubectl take them):
  --config FILE       read etcd settings from a vipd config (default /etc/vipd/vipd.yaml)
  --endpoints URLS    comma-separated etcd endpoints (instead of --config)
  --prefix PREFIX     key prefix with --endpoints (default /vipd)
  --timeout D         how long to wait for etcd and for the result (default 10s)
`

func main() { os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr)) }

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "vipctl", version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fs := flag.NewFlagSet("vipctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, on stdout for -h
	cfgPath := fs.String("config", "/etc/vipd/vipd.yaml", "vipd config file")
	endpoints := fs.String("endpoints", "", "comma-separated etcd endpoints")
	prefix := fs.String("prefix", config.DefaultPrefix, "key prefix (with --endpoints)")
	asJSON := fs.Bool("json", false, "print JSON (status)")
	to := fs.String("to", "", "handover target node (default: the best other candidate)")
	hold := fs.Duration("hold", time.Minute, "handover: how long the old holder is kept from preempting back")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for etcd and for the result")
	// Flags may come before the command, between the command and its
	// arguments, or after them: `vipctl --config F status` and `vipctl
	// status --config F` are the same. One flag set for all commands, so a
	// flag's value (the F of --config F) is never taken for the command.
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	} else if err != nil {
		fmt.Fprint(stderr, usage) // fs printed what was wrong
		return 2
	}
	if len(pos) == 0 {
		fmt.Fprintf(stderr, "vipctl: no command\n%s", usage)
		return 2
	}
	cmd := pos[0]
	pos = pos[1:]
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "vipctl", version)
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "status", "handover", "drain", "undrain":
	default:
		fmt.Fprintf(stderr, "vipctl: unknown command %q\n%s", cmd, usage)
		return 2
	}
	wantArgs := map[string]int{"status": 0, "handover": 1, "drain": 1, "undrain": 1}[cmd]
	if len(pos) != wantArgs {
		fmt.Fprintf(stderr, "vipctl %s: want %d argument(s), got %d\n%s", cmd, wantArgs, len(pos), usage)
		return 2
	}
	ec := config.Default().Etcd
	if *endpoints != "" {
		ec.Endpoints = strings.Split(*endpoints, ",")
		ec.Prefix = *prefix
	} else {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "vipctl: %s: %v\n", *cfgPath, err)
			return 1
		}
		ec = cfg.Etcd
	}
	cli, err := etcdclient.New(ec, zap.NewNop())
	if err != nil {
		fmt.Fprintf(stderr, "vipctl: %v\n", err)
		return 1
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	keys := election.Keys{Prefix: ec.Prefix}
	var err2 error
	switch cmd {
	case "status":
		var st []GroupStatus
		if st, err2 = Status(ctx, cli, keys); err2 == nil {
			if *asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(st)
			} else {
				printStatus(stdout, st)
			}
		}
	case "handover":
		var res HandoverResult
		if res, err2 = Handover(ctx, cli, keys, pos[0], *to, *hold); err2 == nil {
			fmt.Fprintf(stdout, "%s: %s -> %s in %v; %s will not preempt back for %v\n",
				pos[0], res.From, res.To, res.Took.Round(time.Millisecond), res.From, *hold)
		} else if res.To != "" {
			err2 = fmt.Errorf("%w (%s holds %s after %v)", err2, res.To, pos[0], res.Took.Round(time.Millisecond))
		}
	case "drain":
		var held []string
		if held, err2 = Drain(ctx, cli, keys, pos[0]); err2 == nil {
			fmt.Fprintf(stdout, "%s drained; it holds no group now (was holding: %s)\n", pos[0], orNone(held))
		}
	case "undrain":
		if err2 = Undrain(ctx, cli, keys, pos[0]); err2 == nil {
			fmt.Fprintf(stdout, "%s undrained; it stands for its groups again\n", pos[0])
		}
	}
	if err2 != nil {
		if errors.Is(err2, context.DeadlineExceeded) && !errors.Is(err2, ErrHandoverFailed) {
			fmt.Fprintf(stderr, "vipctl: etcd %s unreachable or too slow (--timeout %v): %v\n", strings.Join(ec.Endpoints, ","), *timeout, err2)
		} else {
			fmt.Fprintf(stderr, "vipctl: %v\n", err2)
		}
		return 1
	}
	return 0
}

// parseInterspersed parses args with fs, taking flags wherever they are,
// and returns the positional arguments (the command first) in order. A
// lone "--" ends the flags: everything after it is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag, or after a "--" it consumed.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// GroupStatus is one group in `vipctl status --json` (a stable format).
type GroupStatus struct {
	Group string `json:"group"`
	// Holder is the node in the leader key, "" when vacant.
	Holder string `json:"holder"`
	// Addresses and Interface are the group's VIPs (CIDR form) and the
	// interface they are bound on, as the holder's candidate record has
	// them (a vacant group's: the best candidate's that has them). Empty
	// when no record says (a vipd older than the fields).
	Addresses       []string          `json:"addresses"`
	Interface       string            `json:"interface"`
	LeaseTTLSeconds int64             `json:"lease_ttl_seconds"`
	Candidates      []CandidateStatus `json:"candidates"`
}

// CandidateStatus is one candidate record.
type CandidateStatus struct {
	Node     string   `json:"node"`
	Priority int      `json:"priority"`
	State    string   `json:"state"`
	Mode     string   `json:"mode,omitempty"` // "relay": its peers renew its lease
	Failing  []string `json:"failing"`
	Drained  bool     `json:"drained"`
	// Waiting: the node may not claim yet (it waits out a promise, a
	// lease TTL after its start); holders do not yield to it until then.
	Waiting bool `json:"waiting,omitempty"`
	// Interface and Addresses are the group as this node's config has it.
	Interface string   `json:"interface,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// Status reads every group under keys.
func Status(ctx context.Context, cli *clientv3.Client, keys election.Keys) ([]GroupStatus, error) {
	resp, err := cli.Get(ctx, keys.Groups(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	by := map[string]*GroupStatus{}
	get := func(name string) *GroupStatus {
		if by[name] == nil {
			by[name] = &GroupStatus{Group: name, Candidates: []CandidateStatus{}}
		}
		return by[name]
	}
	leases := map[string]int64{}
	for _, kv := range resp.Kvs {
		group, kind, node := keys.Parse(string(kv.Key))
		switch kind {
		case election.KeyLeader:
			g := get(group)
			g.Holder = string(kv.Value)
			leases[group] = kv.Lease
		case election.KeyCandidate:
			var c election.Candidate
			if json.Unmarshal(kv.Value, &c) != nil {
				c = election.Candidate{Node: node, State: "INVALID"}
			}
			g := get(group)
			g.Candidates = append(g.Candidates, CandidateStatus{Node: node, Priority: c.Priority, State: string(c.State), Mode: c.Mode, Failing: orEmpty(c.Failing), Drained: c.Drained, Waiting: c.Waiting,
				Interface: c.Interface, Addresses: c.Addresses})
		}
	}
	var out []GroupStatus
	for name, g := range by {
		if id := leases[name]; id != 0 {
			if ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(id)); err == nil {
				g.LeaseTTLSeconds = ttl.TTL
			}
		}
		sort.Slice(g.Candidates, func(i, j int) bool {
			a, b := g.Candidates[i], g.Candidates[j]
			return election.Better(election.Candidate{Node: a.Node, Priority: a.Priority}, election.Candidate{Node: b.Node, Priority: b.Priority})
		})
		g.Addresses, g.Interface = groupPlace(g)
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out, nil
}

// groupPlace is the group's addresses and interface: from the holder's
// record, or, vacant (or the holder's record predates the fields), from
// the best-ranked candidate's that has them. Candidates are sorted.
func groupPlace(g *GroupStatus) ([]string, string) {
	for _, c := range g.Candidates {
		if c.Node == g.Holder && len(c.Addresses) > 0 {
			return c.Addresses, c.Interface
		}
	}
	for _, c := range g.Candidates {
		if len(c.Addresses) > 0 {
			return c.Addresses, c.Interface
		}
	}
	return []string{}, ""
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func printStatus(w io.Writer, st []GroupStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tHOLDER\tADDRESSES\tINTERFACE\tLEASE\tNODE\tPRIORITY\tSTATE\tFAILING")
	for _, g := range st {
		holder, lease := g.Holder, fmt.Sprintf("%ds", g.LeaseTTLSeconds)
		if holder == "" {
			holder, lease = "(vacant)", "-"
		}
		addrs, iface := strings.Join(g.Addresses, ","), g.Interface
		if addrs == "" {
			addrs = "-"
		}
		if iface == "" {
			iface = "-"
		}
		if len(g.Candidates) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n", g.Group, holder, addrs, iface, lease)
		}
		for i, c := range g.Candidates {
			name, h, a, f, l := g.Group, holder, addrs, iface, lease
			if i > 0 {
				name, h, a, f, l = "", "", "", "", ""
			}
			failing := strings.Join(c.Failing, ",")
			if failing == "" {
				failing = "-"
			}
			state := c.State
			if c.Mode != "" {
				state += " (" + c.Mode + ")"
			}
			if c.Drained {
				state += " (drained)"
			}
			if c.Waiting {
				state += " (waiting)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, h, a, f, l, c.Node, c.Priority, state, failing)
		}
	}
	tw.Flush()
}
