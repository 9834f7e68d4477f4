package main

import (
	"bufio"
	"strconv"
	"strings"
)

// promSample is one metric line of Prometheus text exposition.
type promSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// parseProm parses the text exposition format (comments skipped; no
// timestamps expected). Lines it cannot parse are skipped.
func parseProm(text string) []promSample {
	var out []promSample
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		var s promSample
		rest := l
		if i := strings.IndexByte(l, '{'); i >= 0 {
			j := strings.LastIndexByte(l, '}')
			if j < i {
				continue
			}
			s.Name = l[:i]
			s.Labels = parseLabels(l[i+1 : j])
			rest = strings.TrimSpace(l[j+1:])
		} else {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			s.Name, rest = f[0], f[1]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.Value = v
		out = append(out, s)
	}
	return out
}

func parseLabels(s string) map[string]string {
	m := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		k := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var b strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		m[k] = b.String()
		if i+1 >= len(s) {
			break
		}
		s = strings.TrimLeft(s[i+1:], ", ")
	}
	return m
}

// sumBy sums the samples named name, grouped by label (all together if label
// is "").
func sumBy(ss []promSample, name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		if s.Name == name {
			out[s.Labels[label]] += s.Value
		}
	}
	return out
}

func value(ss []promSample, name string) float64 {
	v := 0.0
	for _, s := range ss {
		if s.Name == name {
			v += s.Value
		}
	}
	return v
}
