// Command vipd-bench measures vipd against keepalived in the e2e namespace
// testbed (see README.md): client-visible failover outage and dual-holding
// time per scenario over N runs, idle footprint of both daemons, and vipd
// at 10/100/1000 groups against a real 3-member etcd. It prints a table and
// writes a Markdown report. It needs root; every packet stays inside the
// namespaces it creates. Timings are reported, never asserted.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

type options struct {
	bin       string
	n         int
	out       string
	impls     []string
	scenarios map[string]bool
	idle      time.Duration
	cut       time.Duration
	sizes     []int
	steady    time.Duration
	perf      bool
	keep      bool
	logs      string
	settle    time.Duration
}

// saveLogs copies the testbed's process logs to o.logs/<name>.
func saveLogs(o options, tb *testbed.Testbed, name string) {
	if o.logs == "" || tb.Dir == "" {
		return
	}
	dst := filepath.Join(o.logs, name)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		logf("logs: %v", err)
		return
	}
	files, _ := filepath.Glob(filepath.Join(tb.Dir, "logs", "*.log"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644)
		}
	}
}

func main() {
	var o options
	var impls, scen, sizes string
	flag.StringVar(&o.bin, "bin", "bin", "directory with vipd, vipctl, etcd, vipd-probe")
	flag.IntVar(&o.n, "n", 10, "runs per cell")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "Markdown report to write (\"\" = none)")
	flag.StringVar(&impls, "impls", "keepalived,keepalived-tuned,keepalived-track,vipd,vipd-seed", "columns: keepalived, keepalived-tuned, keepalived-track (haproxy rows), vipd, vipd-seed (haproxy rows)")
	flag.StringVar(&scen, "scenarios", "haproxy,haproxy-kill,haproxy-health,haproxy-reload,haproxy-newpid,stop,restart,restart-bare,lan-carrier,lan-linkdown,partition,etcd-frozen,etcd-cut,handover", "rows (comma-separated; \"\" = none)")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "idle footprint window (0 = skip)")
	flag.DurationVar(&o.cut, "cut", 6*time.Second, "how long a node stays cut off in the LAN-drop and partition rows")
	flag.StringVar(&sizes, "scale", "10,100,1000", "group counts for the scale run (\"\" = skip)")
	flag.DurationVar(&o.steady, "steady", 30*time.Second, "steady-state window of the scale run")
	flag.BoolVar(&o.perf, "perf", true, "record a perf profile of the scale holder at the largest size (if perf is installed)")
	flag.StringVar(&examplesDir, "examples", examplesDir, "shipped example configs (web-node-1.yaml, web-node-2.yaml)")
	flag.DurationVar(&o.settle, "settle", 0, "wait after each steady state before the next event (0 = per daemon: keepalived 2s, vipd 1s)")
	flag.BoolVar(&o.keep, "keep", false, "keep testbed temp dirs (logs)")
	flag.StringVar(&o.logs, "logs", "", "copy every testbed's logs/ here before teardown (\"\" = don't)")
	flag.Parse()
	o.impls = splitList(impls)
	o.scenarios = map[string]bool{}
	for _, s := range splitList(scen) {
		o.scenarios[s] = true
	}
	for _, s := range splitList(sizes) {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			fatalf("--scale: bad group count %q", s)
		}
		o.sizes = append(o.sizes, v)
	}
	for _, k := range o.impls {
		if _, ok := impls_[k]; !ok {
			fatalf("--impls: unknown %q", k)
		}
	}
	if miss := testbed.Prereqs(o.bin, ""); len(miss) > 0 {
		fatalf("missing: %v (run `make bench` as root)", miss)
	}
	if len(o.impls) > 0 {
		for _, k := range o.impls {
			if strings.HasPrefix(k, "keepalived") {
				if _, err := os.Stat(testbed.KeepalivedBinary); err != nil {
					fatalf("keepalived not installed (%s): apt-get install keepalived", testbed.KeepalivedBinary)
				}
			}
		}
	}
	stop := testbed.CloseOnSignal()
	defer stop()
	rep := run(o)
	text := rep.markdown()
	fmt.Println(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			fatalf("write %s: %v", o.out, err)
		}
		logf("wrote %s", o.out)
	}
	if rep.fatal != nil {
		fmt.Fprintf(os.Stderr, "vipd-bench: %v\n", rep.fatal)
		os.Exit(1)
	}
}

var impls_ = impls

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

var t0 = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vipd-bench: "+format+"\n", args...)
	os.Exit(2)
}

// report collects everything measured.
type report struct {
	opts    options
	started time.Time
	wall    time.Duration
	machine [][2]string
	cells   map[string]map[string]cell // scenario → impl → cell
	idle    map[string][2]footprint    // impl → holder, backup
	scale   []scaleResult
	notes   []string
	fatal   error
}

func run(o options) *report {
	rep := &report{opts: o, started: time.Now(), cells: map[string]map[string]cell{}, idle: map[string][2]footprint{}}
	rep.machine = machineInfo(o.bin)
	defer func() { rep.wall = time.Since(rep.started) }()
	for _, k := range o.impls {
		if err := runColumn(rep, impls[k]); err != nil {
			rep.notes = append(rep.notes, fmt.Sprintf("%s column aborted: %v", k, err))
			logf("%s column aborted: %v", k, err)
			if !errors.Is(err, errCannotRunHere) {
				rep.fatal = err
			}
		}
	}
	if len(o.sizes) > 0 {
		tb, err := testbed.New(testbed.Options{BinDir: o.bin, KeepDir: o.keep, Logf: logf})
		if err != nil {
			rep.fatal = err
			return rep
		}
		res, err := runScale(tb, scaleOpts{sizes: o.sizes, steady: o.steady, perf: o.perf, logf: logf})
		rep.scale = res
		saveLogs(o, tb, "scale")
		if err != nil {
			rep.fatal = err
			rep.notes = append(rep.notes, "scale run aborted: "+err.Error())
		}
		if cerr := tb.Close(); cerr != nil {
			logf("close: %v", cerr)
		}
	}
	return rep
}

// errCannotRunHere marks a column that cannot be measured in the testbed
// for a documented reason: a note in the report, not a failed bench.
var errCannotRunHere = errors.New("cannot run in the testbed")

func runColumn(rep *report, im impl) (err error) {
	o := rep.opts
	tb, err := testbed.New(testbed.Options{BinDir: o.bin, KeepDir: o.keep, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		tb.StopAllKeepalived()
		saveLogs(o, tb, im.key)
		if cerr := tb.Close(); cerr != nil {
			logf("close: %v", cerr)
		}
	}()
	if im.key == "vipd" {
		if err := checkEndpoints(tb); err != nil {
			return err
		}
	}
	if strings.HasPrefix(im.key, "vipd") || o.scenarios["etcd-frozen"] {
		// keepalived does not use etcd; the etcd-frozen row freezes it
		// beside keepalived all the same.
		if err := tb.StartEtcd(30 * time.Second); err != nil {
			return err
		}
	}
	if o.settle > 0 {
		im.settle = o.settle
	}
	b := &bed{tb: tb, im: im, n1: tb.Node(testbed.Node1), n2: tb.Node(testbed.Node2), cut: o.cut, logf: logf}
	if err := b.steady(); err != nil {
		return fmt.Errorf("first steady state: %w\n%s", err, tb.Logs(30))
	}
	if im.key == "keepalived-track" {
		if log := b.n1.Keepalived().LogTail(200); strings.Contains(log, testbed.KeepalivedNoProcessEvents) {
			return fmt.Errorf("%w: keepalived logs %q: the kernel's process connector delivers process events only to sockets in the initial network namespace, and the testbed runs keepalived in each node's, so vrrp_track_process never sees HAProxy exit there (keepalived in a container with its own network namespace has the same limit)", errCannotRunHere, testbed.KeepalivedNoProcessEvents)
		}
	}
	for _, sc := range scenarios {
		if !o.scenarios[sc.key] || (sc.only != "" && sc.only != im.key) || (im.rows != nil && !im.rows[sc.key]) {
			continue
		}
		var c cell
		for i := range o.n {
			s := b.runOnce(sc)
			c.Samples = append(c.Samples, s)
			status := "ok"
			if s.Err != nil {
				status = "ERROR " + s.Err.Error()
			}
			logf("%s %-12s run %d/%d: outage %v, VIP on web-node-2 after %v, two holders %v (after restore %v), outage after restore %v, %d VIP events: %s",
				im.key, sc.key, i+1, o.n, s.Outage.Round(time.Millisecond), s.Failover.Round(time.Millisecond), s.Dual.Round(time.Millisecond),
				s.DualBack.Round(time.Millisecond), s.PostOut.Round(time.Millisecond), s.Changes, status)
		}
		if rep.cells[sc.key] == nil {
			rep.cells[sc.key] = map[string]cell{}
		}
		rep.cells[sc.key][im.key] = c
	}
	if o.idle > 0 {
		if err := b.steady(); err != nil {
			rep.notes = append(rep.notes, fmt.Sprintf("%s: not steady before the idle measurement (measured anyway): %v", im.key, err))
			logf("%s: not steady before idle measurement: %v", im.key, err)
		}
		logf("%s: idle footprint over %v", im.key, o.idle)
		var fps [2]footprint
		done := make(chan struct{})
		go func() { fps[1] = measureFootprint(b.n2, im, o.idle); close(done) }()
		fps[0] = measureFootprint(b.n1, im, o.idle)
		<-done
		rep.idle[im.key] = fps
		logf("%s idle: holder %.2f%% CPU %.1f MB RSS; backup %.2f%% CPU %.1f MB", im.key, fps[0].CPUPercent, fps[0].RSSMaxMB, fps[1].CPUPercent, fps[1].RSSMaxMB)
	}
	return nil
}
