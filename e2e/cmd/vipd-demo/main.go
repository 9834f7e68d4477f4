// Command vipd-demo shows vipd replacing the seed keepalived recipe, live, in
// network namespaces it creates (root only; `make demo`):
//
//	bin/vipd-demo --bin bin
//
// It builds the testbed (3-member etcd, web-node-1/2 with HAProxy and vipd, a
// client probing http://192.168.20.15/ every 10 ms), waits until web-node-1
// holds the VIP, stops HAProxy on web-node-1 (the VIP moves to web-node-2),
// starts it again (web-node-1 preempts back), and prints a live timeline and
// the measured client outage and failover time of each step, and runs
// `vipctl status` in web-node-1's namespace. Every namespace and process is
// removed on exit, on error and on Ctrl-C. No packet leaves the namespaces
// it creates. It ends by printing what a reader would try next.
//
// --stay keeps the testbed up after the steps, with web-node-1 holding,
// until Enter or Ctrl-C, and prints the commands to look at it from another
// terminal (vipctl status, the configs, the logs). --keep keeps the temp
// dir (configs, logs) after the teardown.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

func main() {
	bin := flag.String("bin", "bin", "directory with vipd, vipctl, etcd and vipd-probe (make build tools)")
	haproxy := flag.String("haproxy", "/usr/sbin/haproxy", "haproxy binary")
	hold := flag.Duration("hold", 2*time.Second, "how long to show each steady state")
	keep := flag.Bool("keep", false, "keep the temp dir with configs and logs")
	stay := flag.Bool("stay", false, "after the steps, keep the testbed up (web-node-1 holding) until Enter or Ctrl-C")
	examples := flag.String("examples", "deploy/examples/seed", "the shipped example configs the nodes run (web-node-1.yaml, web-node-2.yaml)")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "vipd-demo needs root: it creates network namespaces, veth pairs and a bridge.\n"+
			"Run it as root, e.g. `sudo make demo`. Nothing was changed.")
		os.Exit(1)
	}
	miss := testbed.Prereqs(*bin, *haproxy)
	if st, err := os.Stat(filepath.Join(*bin, "vipctl")); err != nil || st.IsDir() {
		miss = append(miss, filepath.Join(*bin, "vipctl"))
	}
	if len(miss) > 0 {
		fmt.Fprintf(os.Stderr, "vipd-demo: missing %s\n`make demo` builds the binaries and installs haproxy and iproute2 (make deps-demo).\n", strings.Join(miss, ", "))
		os.Exit(1)
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vipd-demo: %v\n", err)
		os.Exit(1)
	}
	stopSig := sync.OnceFunc(testbed.CloseOnSignal()) // Ctrl-C: tear everything down, exit 130
	defer stopSig()
	// With SIGPIPE notified, a closed stdout (`| head`) makes writes fail
	// instead of killing the demo before it can tear the testbed down.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	o := options{bin: absBin, binArg: *bin, haproxy: *haproxy, examples: *examples, hold: *hold, keep: *keep, stay: *stay, stopSig: stopSig}
	dir, err := run(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nvipd-demo: %v\n", err)
		os.Exit(1)
	}
	printNext(o, dir)
}

type options struct {
	bin, haproxy string
	examples     string // shipped example configs
	binArg       string // --bin as given, for the commands printed
	hold         time.Duration
	keep, stay   bool
	// stopSig uninstalls the handler that exits 130 on Ctrl-C, so that
	// --stay can take Ctrl-C as "done" and tear down as at the end.
	stopSig func()
}

// sudo is "sudo " when the demo was started through sudo, so the commands
// it prints for another terminal work as they are.
func sudo() string {
	if os.Getenv("SUDO_USER") != "" {
		return "sudo "
	}
	return ""
}

// printNext tells the reader what to try next: dir is the testbed's temp
// dir (kept with --keep, else gone).
func printNext(o options, dir string) {
	s := sudo()
	cfg := "deploy/examples/seed/web-node-1.yaml and web-node-2.yaml hold the demo's settings\n" +
		"                         (the demo's own copies, on eth0 with the testbed's pidfile and peer key, stay with --keep)"
	if o.keep {
		cfg = fmt.Sprintf("%s and %s (kept; logs in %s/)", filepath.Join(dir, testbed.Node1+"-vipd.yaml"),
			filepath.Join(dir, testbed.Node2+"-vipd.yaml"), filepath.Join(dir, "logs"))
	}
	fmt.Printf(`
next
  each node's config     %s
  vipctl status          %smake demo DEMO_FLAGS=--stay   the testbed stays up after the steps (web-node-1
                         holding) until Enter, and the demo prints the vipctl command for another terminal
  keep configs and logs  %smake demo DEMO_FLAGS=--keep   (or both: DEMO_FLAGS="--stay --keep")
  every flag             %s/vipd-demo -h
`, cfg, s, s, o.binArg)
}

type demo struct {
	tb    *testbed.Testbed
	start time.Time
	mu    sync.Mutex
	steps []item // step events not yet printed
	stop  chan struct{}
	done  chan struct{}
}

// item is one timeline line; the live printer emits items in time order.
type item struct {
	at   time.Time
	text string
}

func (d *demo) t(at time.Time) string { return fmt.Sprintf("t+%6.2fs", at.Sub(d.start).Seconds()) }

// event queues a step event for the timeline (printed in time order).
func (d *demo) event(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.steps = append(d.steps, item{time.Now(), ">>> " + fmt.Sprintf(format, args...)})
}

// run runs the demo and tears the testbed down; it returns the testbed's
// temp dir.
func run(o options) (string, error) {
	hold := o.hold
	fmt.Println("vipd demo: seed scenario in network namespaces (everything stays inside them)")
	fmt.Println("  web-node-1 192.168.20.10 (priority 101), web-node-2 192.168.20.11 (priority 100)")
	fmt.Println("  VIP 192.168.20.15/24, etcd 192.168.20.2-4, client 192.168.20.100 probing http://192.168.20.15/ every 10 ms")
	fmt.Println()
	tb, err := testbed.New(testbed.Options{BinDir: o.bin, HAProxy: o.haproxy, KeepDir: o.keep})
	if err != nil {
		return "", err
	}
	failed := true
	defer func() {
		if failed {
			fmt.Fprintf(os.Stderr, "\n--- logs ---\n%s\n", tb.Logs(25))
		}
		fmt.Println("\ntearing down namespaces and processes...")
		if err := tb.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "teardown: %v\n", err)
		}
		if o.keep {
			fmt.Printf("configs and logs kept in %s\n", tb.Dir)
		}
	}()

	d := &demo{tb: tb, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	d.event("starting 3-member etcd cluster")
	if err := tb.StartEtcd(30 * time.Second); err != nil {
		return "", err
	}
	d.event("etcd healthy after %v; starting HAProxy on both nodes", tb.EtcdStartup.Round(time.Millisecond))
	for _, n := range tb.Nodes {
		if err := n.StartHAProxy(); err != nil {
			return "", err
		}
	}
	if err := tb.StartProbe(); err != nil {
		return "", err
	}
	go d.live()
	defer d.stopLive()
	d.event("starting vipd on both nodes")
	for _, n := range tb.Nodes {
		// The shipped example (HAProxy's process, event-driven, and its
		// health URL), adapted to the testbed.
		cfg, err := n.ExampleConfig(o.examples)
		if err != nil {
			return "", err
		}
		if err := n.StartVipdWithConfig(cfg); err != nil {
			return "", err
		}
	}
	n1 := tb.Node(testbed.Node1)
	if err := tb.WaitHolder(testbed.Node1, 20*time.Second); err != nil {
		return "", err
	}
	if _, err := tb.WaitAnswer(testbed.Node1, d.start, 5*time.Second); err != nil {
		return "", err
	}
	d.event("web-node-1 holds the VIP and answers the client")
	time.Sleep(hold)

	var summary []string
	// Step 1: HAProxy dies on the holder.
	t0 := time.Now()
	d.event("STEP 1: stopping HAProxy on web-node-1 (the holder)")
	if err := n1.StopHAProxy(); err != nil {
		return "", err
	}
	s1, err := d.measure("HAProxy stopped on web-node-1", t0, testbed.Node2, hold)
	if err != nil {
		return "", err
	}
	summary = append(summary, s1)

	// Step 2: HAProxy back: preempt.
	t1 := time.Now()
	d.event("STEP 2: starting HAProxy on web-node-1 again (priority 105 > 104 once both its checks pass: preempt)")
	if err := n1.StartHAProxy(); err != nil {
		return "", err
	}
	s2, err := d.measure("HAProxy back on web-node-1", t1, testbed.Node1, hold)
	if err != nil {
		return "", err
	}
	summary = append(summary, s2)
	d.stopLive()

	st := tb.Mon.Stats(d.start, time.Now())
	all := tb.Probes()
	fmt.Println("\nsummary")
	for _, s := range summary {
		fmt.Println("  " + s)
	}
	fmt.Printf("  two holders at once: %v in total (max %d holder) — the monitor watched netlink in both nodes\n",
		st.TwoHolders.Round(time.Millisecond), st.MaxHolders)
	fmt.Printf("  probes: %d at %.0f/s; keepalived seed config needed 5.5–6.6 s for step 1\n", len(all), all.Rate())

	// What an operator on web-node-1 would type, run where they would run
	// it: in web-node-1's namespace, with its config.
	n1cmd := []string{filepath.Join(o.bin, "vipctl"), "--config", n1.VipdConfigPath(), "status"}
	fmt.Printf("\n%s, in web-node-1's namespace:\n", "vipctl --config "+n1.VipdConfigPath()+" status")
	out, err := n1.NS.Run(context.Background(), n1cmd...)
	if err != nil {
		return "", err
	}
	fmt.Print(indent(out, "  "))
	if o.stay {
		stay(o, tb, n1cmd)
	}
	failed = false
	return tb.Dir, nil
}

// stay keeps the testbed up until Enter (or Ctrl-C, SIGTERM), telling the
// reader how to look at it from another terminal.
func stay(o options, tb *testbed.Testbed, vipctl []string) {
	s := sudo()
	n1, n2 := tb.Node(testbed.Node1), tb.Node(testbed.Node2)
	fmt.Printf(`
the testbed stays up, web-node-1 holding the VIP; from another terminal:
  vipctl status          %sip netns exec %s %s
  each node's config     %s
                         %s
  logs                   %s
  a shell on web-node-1  %sip netns exec %s bash   (ip -br addr shows the VIP on eth0)
press Enter (or Ctrl-C) to tear it down
`, s, n1.NS.Name, strings.Join(vipctl, " "), n1.VipdConfigPath(), n2.VipdConfigPath(), filepath.Join(tb.Dir, "logs")+"/", s, n1.NS.Name)
	o.stopSig() // Ctrl-C now means "done": tear down as after Enter
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	enter := make(chan struct{})
	go func() {
		// Without a terminal (stdin at EOF or unreadable) only a signal ends it.
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err == nil {
			close(enter)
		}
	}()
	select {
	case <-enter:
	case <-sig:
	}
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// measure waits for the VIP and the client's answers to move to want, shows
// the result for hold, and returns a one-line summary.
func (d *demo) measure(what string, t0 time.Time, want string, hold time.Duration) (string, error) {
	tb := d.tb
	if err := tb.WaitHolder(want, 10*time.Second); err != nil {
		return "", err
	}
	first, err := tb.WaitAnswer(want, t0, 5*time.Second)
	if err != nil {
		return "", err
	}
	time.Sleep(hold)
	add, _ := tb.Mon.EventAfter(want, true, t0)
	out := tb.Probes().Window(t0, time.Now()).LongestOutage()
	nb, nerr := tb.ClientNeigh()
	neigh := fmt.Sprintf("%v %s (%s)", nb.MAC, nb.State, tb.NodeByMAC(nb.MAC))
	if nerr != nil {
		neigh = nerr.Error()
	}
	outs := "none (< 10 ms)"
	if out.Failed > 0 {
		outs = fmt.Sprintf("%v (%d failed probes)", out.Duration.Round(time.Millisecond), out.Failed)
	}
	d.event("%s: VIP on %s after %v, client answered by %s after %v, client outage %s; client ARP entry for VIP: %s",
		what, want, add.Time.Sub(t0).Round(time.Millisecond), want, first.Start.Sub(t0).Round(time.Millisecond), outs, neigh)
	return fmt.Sprintf("%-30s failover %v  client outage %s", what+":", add.Time.Sub(t0).Round(time.Millisecond), outs), nil
}

// live prints the timeline in time order, about 200 ms behind real time
// (a probe's outcome is known up to 100 ms after it starts): every 100 ms
// bucket of probes (who answered the client, who held the VIP at the end of
// the bucket) when that changed or once a second, every VIP add/remove seen
// by the netlink monitor, and the demo's step events.
func (d *demo) live() {
	defer close(d.done)
	const bucket = 100 * time.Millisecond
	tb := d.tb
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	nextBucket := d.start.Add(bucket) // end of the next bucket to print
	printedEv := 0
	last, lastPrint := "", time.Time{}
	flush := func(watermark time.Time, final bool) {
		var items []item
		for ; !final && !nextBucket.After(watermark); nextBucket = nextBucket.Add(bucket) {
			c := tb.Probes().Window(nextBucket.Add(-bucket), nextBucket).Counts()
			var parts, sig []string
			for _, n := range []string{testbed.Node1, testbed.Node2, "-"} {
				if c[n] > 0 {
					sig = append(sig, n)
					name := n
					if n == "-" {
						name = "NO ANSWER"
					}
					parts = append(parts, fmt.Sprintf("%s x%d", name, c[n]))
				}
			}
			client := strings.Join(parts, ", ")
			if client == "" {
				continue // the probe has not started yet
			}
			holder := strings.Join(tb.Mon.HoldersAt(nextBucket), "+")
			if holder == "" {
				holder = "nobody"
			}
			line := fmt.Sprintf("client: %-36s VIP holder: %s", client, holder)
			// Print when who answers or who holds changes (not on count
			// jitter), and once a second.
			key := strings.Join(sig, ",") + "|" + holder
			if key != last || nextBucket.Sub(lastPrint) >= time.Second {
				items = append(items, item{nextBucket, line})
				last, lastPrint = key, nextBucket
			}
		}
		evs := tb.Mon.Events()
		for ; printedEv < len(evs) && (final || evs[printedEv].Time.Before(watermark)); printedEv++ {
			e := evs[printedEv]
			op := "removed from"
			if e.Added {
				op = "added on"
			}
			items = append(items, item{e.Time, fmt.Sprintf("*** VIP %s %s", op, e.Node)})
		}
		d.mu.Lock()
		i := 0
		for ; i < len(d.steps) && (final || d.steps[i].at.Before(watermark)); i++ {
			items = append(items, d.steps[i])
		}
		d.steps = d.steps[i:]
		d.mu.Unlock()
		sort.SliceStable(items, func(a, b int) bool { return items[a].at.Before(items[b].at) })
		for _, it := range items {
			fmt.Printf("%s  %s\n", d.t(it.at), it.text)
		}
	}
	for {
		select {
		case <-d.stop:
			flush(time.Now().Add(-150*time.Millisecond), false)
			flush(time.Now(), true)
			return
		case now := <-tick.C:
			flush(now.Add(-150*time.Millisecond), false)
		}
	}
}

func (d *demo) stopLive() {
	select {
	case <-d.stop:
		return
	default:
		close(d.stop)
	}
	<-d.done
}
