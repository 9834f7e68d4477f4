package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// clkTck is USER_HZ, the unit of the CPU times in /proc/<pid>/stat (100 on
// every Linux architecture vipd targets).
const clkTck = 100

// procSample is one reading of a process tree from /proc.
type procSample struct {
	At     time.Time
	Ticks  int64 // utime+stime(+cutime+cstime) over the tree, in clock ticks
	RSSkB  int64 // VmRSS summed over the tree
	AnonkB int64 // RssAnon (heap, stacks) summed over the tree
	Procs  int
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return parseStat(string(b))
}

// parseStat splits a /proc/<pid>/stat line; field 0 of the result is the
// state (field 3 of proc(5)).
func parseStat(s string) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("bad stat line %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return nil, fmt.Errorf("short stat line %q", s)
	}
	return f, nil
}

// cpuTicks returns utime+stime, and cutime+cstime (reaped children, e.g.
// keepalived's check scripts), from stat fields.
func cpuTicks(f []string) (self, children int64) {
	// proc(5): utime 14, stime 15, cutime 16, cstime 17; f[0] is field 3.
	get := func(field int) int64 { v, _ := strconv.ParseInt(f[field-3], 10, 64); return v }
	return get(14) + get(15), get(16) + get(17)
}

func ppidOf(f []string) int { v, _ := strconv.Atoi(f[1]); return v }

// rssKB reads VmRSS and RssAnon from /proc/<pid>/status.
func rssKB(pid int) (rss, anon int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	return parseVmRSS(string(b)), statusKB(string(b), "RssAnon:")
}

func parseVmRSS(s string) int64 { return statusKB(s, "VmRSS:") }

func statusKB(s, key string) int64 {
	for _, l := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// descendants lists pid and every live descendant of pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range ents {
		p, err := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		if err != nil {
			continue
		}
		f, err := statFields(p)
		if err != nil {
			continue
		}
		pp := ppidOf(f)
		children[pp] = append(children[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// sampleTree reads the CPU time and RSS of pid and (if tree) its
// descendants. Reaped children's CPU (cutime+cstime) counts too.
func sampleTree(pid int, tree bool) (procSample, error) {
	pids := []int{pid}
	if tree {
		pids = descendants(pid)
	}
	s := procSample{At: time.Now()}
	for i, p := range pids {
		f, err := statFields(p)
		if err != nil {
			if i == 0 {
				return s, err
			}
			continue // a short-lived child exited
		}
		self, ch := cpuTicks(f)
		s.Ticks += self + ch
		rss, anon := rssKB(p)
		s.RSSkB += rss
		s.AnonkB += anon
		s.Procs++
	}
	return s, nil
}

// footprint is CPU and RSS of a process (tree) over a window.
type footprint struct {
	Window       time.Duration
	CPUPercent   float64 // of one core
	RSSMeanMB    float64
	RSSMaxMB     float64
	AnonMaxMB    float64 // RssAnon: the part that is not the mapped binary and libraries
	Procs        int
	Err          error
	SampledEvery time.Duration
}

// measureFootprint samples the node's daemon (tree) every second for d.
func measureFootprint(n *testbed.Node, im impl, d time.Duration) footprint {
	p := im.proc(n)
	if !p.Running() {
		return footprint{Err: fmt.Errorf("%s not running on %s", im.key, n.Name)}
	}
	return measurePid(p.Pid(), im.tree, d)
}

// measurePid samples pid (tree) every second for d.
func measurePid(pid int, tree bool, d time.Duration) footprint {
	fp := footprint{SampledEvery: time.Second}
	first, err := sampleTree(pid, tree)
	if err != nil {
		fp.Err = err
		return fp
	}
	var sum float64
	n := 0
	last := first
	for time.Since(first.At) < d {
		time.Sleep(min(time.Second, d-time.Since(first.At)))
		s, err := sampleTree(pid, tree)
		if err != nil {
			fp.Err = err
			break
		}
		last = s
		mb := float64(s.RSSkB) / 1024
		sum += mb
		n++
		fp.RSSMaxMB = max(fp.RSSMaxMB, mb)
		fp.AnonMaxMB = max(fp.AnonMaxMB, float64(s.AnonkB)/1024)
		fp.Procs = max(fp.Procs, s.Procs)
	}
	fp.Window = last.At.Sub(first.At)
	if n > 0 {
		fp.RSSMeanMB = sum / float64(n)
	}
	if fp.Window > 0 {
		fp.CPUPercent = float64(last.Ticks-first.Ticks) / clkTck / fp.Window.Seconds() * 100
	}
	return fp
}

// cpuBetween is the CPU % of one core used between two samples.
func cpuBetween(a, b procSample) float64 {
	d := b.At.Sub(a.At).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(b.Ticks-a.Ticks) / clkTck / d * 100
}
