package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Logs returns the last n lines of every process log, for failure reports.
func (tb *Testbed) Logs(n int) string {
	if tb.Dir == "" {
		return ""
	}
	files, _ := filepath.Glob(filepath.Join(tb.Dir, "logs", "*.log"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "probe-timeline.log") {
			continue
		}
		fmt.Fprintf(&b, "----- %s (last %d lines) -----\n%s\n", filepath.Base(f), n, tailFile(f, n))
	}
	fmt.Fprintf(&b, "----- holder events -----\n")
	for _, e := range tb.Mon.Events() {
		fmt.Fprintf(&b, "%s\n", e)
	}
	return b.String()
}

// Close stops every process (vipd gracefully first, so it releases the VIP),
// deletes the namespaces and the temp dir, and releases the testbed lock.
// It is idempotent and safe on a partly built testbed.
func (tb *Testbed) Close() error {
	tb.closeOne.Do(func() {
		var errs []error
		tb.StopProbe()
		for _, n := range tb.Nodes {
			if err := n.StopVipd(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, n := range tb.Nodes {
			n.KillHAProxy()
		}
		for _, m := range tb.Etcd {
			m.Kill()
		}
		if tb.Mon != nil {
			tb.Mon.stop()
		}
		for i := len(tb.all) - 1; i >= 0; i-- {
			if err := tb.all[i].delete(); err != nil {
				errs = append(errs, err)
			}
		}
		tb.probeMu.Lock()
		if tb.probeLog != nil {
			tb.probeLog.Close()
		}
		tb.probeMu.Unlock()
		if tb.Dir != "" && !tb.Opts.KeepDir {
			if err := os.RemoveAll(tb.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		if tb.lock != nil {
			tb.lock.Close() // releases the flock
		}
		openMu.Lock()
		delete(open, tb)
		openMu.Unlock()
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}

// CloseOnSignal closes every open testbed and exits (status 130) on SIGINT
// or SIGTERM, so Ctrl-C never leaves namespaces or processes behind. It
// returns a function that uninstalls the handler.
func CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "\n%v: tearing down testbeds...\n", sig)
			openMu.Lock()
			var tbs []*Testbed
			for tb := range open {
				tbs = append(tbs, tb)
			}
			openMu.Unlock()
			for _, tb := range tbs {
				tb.Close()
			}
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
