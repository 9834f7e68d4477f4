package testbed

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ProbeResult is one client probe: when it started and who answered
// ("" if nobody: error, timeout or non-200).
type ProbeResult struct {
	Start   time.Time
	Node    string
	Latency time.Duration
}

// OK reports whether some node answered.
func (p ProbeResult) OK() bool { return p.Node != "" }

// ParseProbeLine parses one vipd-probe output line:
// "<start unix nanos> <node|-> [latency µs]".
func ParseProbeLine(line string) (ProbeResult, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return ProbeResult{}, fmt.Errorf("bad probe line %q", line)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return ProbeResult{}, fmt.Errorf("bad probe time in %q", line)
	}
	r := ProbeResult{Start: time.Unix(0, ns)}
	if f[1] != "-" {
		r.Node = f[1]
	}
	if len(f) > 2 {
		if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
			r.Latency = time.Duration(us) * time.Microsecond
		}
	}
	return r, nil
}

// Timeline is a set of probe results sorted by start time.
type Timeline []ProbeResult

// NewTimeline sorts a copy of rs by start time.
func NewTimeline(rs []ProbeResult) Timeline {
	t := slices.Clone(rs)
	sort.SliceStable(t, func(i, j int) bool { return t[i].Start.Before(t[j].Start) })
	return t
}

// Window returns the probes started in [from, to) (zero to: no end).
func (t Timeline) Window(from, to time.Time) Timeline {
	i := sort.Search(len(t), func(i int) bool { return !t[i].Start.Before(from) })
	j := len(t)
	if !to.IsZero() {
		j = sort.Search(len(t), func(i int) bool { return !t[i].Start.Before(to) })
	}
	if j < i {
		j = i
	}
	return t[i:j]
}

// Outage describes the longest run of unanswered probes.
type Outage struct {
	Duration time.Duration // first failed probe → next answered probe (or last probe of the window)
	Start    time.Time     // start of the first failed probe
	End      time.Time     // start of the first answered probe after the run (zero if none)
	Failed   int           // probes in the run
}

func (o Outage) String() string {
	if o.Failed == 0 {
		return "none"
	}
	s := fmt.Sprintf("%v (%d probes)", o.Duration.Round(time.Millisecond), o.Failed)
	if o.End.IsZero() {
		s += ", not over"
	}
	return s
}

// LongestOutage finds the longest run of consecutive unanswered probes in
// t. Its duration runs from the start of the first failed probe to the start
// of the next answered one; a run still going at the end of t ends at the
// last probe's start. Resolution is the probe interval (10 ms).
func (t Timeline) LongestOutage() Outage {
	var best Outage
	for i := 0; i < len(t); {
		if t[i].OK() {
			i++
			continue
		}
		j := i
		for j < len(t) && !t[j].OK() {
			j++
		}
		o := Outage{Start: t[i].Start, Failed: j - i}
		if j < len(t) {
			o.End = t[j].Start
			o.Duration = o.End.Sub(o.Start)
		} else {
			o.Duration = t[j-1].Start.Sub(o.Start)
		}
		if o.Duration > best.Duration || (o.Duration == best.Duration && o.Failed > best.Failed) {
			best = o
		}
		i = j
	}
	return best
}

// FirstAnswerFrom returns the first probe answered by node.
func (t Timeline) FirstAnswerFrom(node string) (ProbeResult, bool) {
	for _, p := range t {
		if p.Node == node {
			return p, true
		}
	}
	return ProbeResult{}, false
}

// SwitchedTo returns the start of the first probe answered by node after
// which every answered probe in t was answered by node: the moment the
// client's answers switched to node for good.
func (t Timeline) SwitchedTo(node string) (time.Time, bool) {
	var at time.Time
	found := false
	for _, p := range t {
		switch {
		case p.Node == node:
			if !found {
				at, found = p.Start, true
			}
		case p.OK():
			found = false
		}
	}
	return at, found
}

// Counts returns how many probes each node answered ("-" for none).
func (t Timeline) Counts() map[string]int {
	c := map[string]int{}
	for _, p := range t {
		n := p.Node
		if n == "" {
			n = "-"
		}
		c[n]++
	}
	return c
}

// Rate is the probe rate achieved (probes per second over the span).
func (t Timeline) Rate() float64 {
	if len(t) < 2 {
		return 0
	}
	return float64(len(t)-1) / t[len(t)-1].Start.Sub(t[0].Start).Seconds()
}
