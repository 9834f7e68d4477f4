package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// The whole-suite table: every fault scenario adds one row (dual holding,
// time without holder, longest client outage, pass/fail), and TestSafety
// logs the table at its end, so `make e2e` prints one table for the suite.

type suiteRow struct {
	scenario       string
	dual, noHolder time.Duration
	outage         testbed.Outage
	result, note   string
}

var suite struct {
	mu   sync.Mutex
	rows []suiteRow
}

func suiteAdd(r suiteRow) {
	suite.mu.Lock()
	suite.rows = append(suite.rows, r)
	suite.mu.Unlock()
}

func suiteTable() string {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	hdr := []string{"scenario", "dual ms", "no-holder ms", "client outage ms", "result", "notes"}
	var cells [][]string
	for _, r := range suite.rows {
		out := "0"
		if r.outage.Failed > 0 {
			out = strconv.FormatInt(r.outage.Duration.Milliseconds(), 10)
			if r.outage.End.IsZero() {
				out += "+"
			}
		}
		cells = append(cells, []string{r.scenario, strconv.FormatInt(r.dual.Milliseconds(), 10),
			strconv.FormatInt(r.noHolder.Milliseconds(), 10), out, r.result, r.note})
	}
	w := make([]int, len(hdr))
	for i, h := range hdr {
		w[i] = len([]rune(h))
	}
	for _, c := range cells {
		for i := range c {
			w[i] = max(w[i], len([]rune(c[i])))
		}
	}
	var b strings.Builder
	line := func(c []string) {
		b.WriteString("|")
		for i := range c {
			fmt.Fprintf(&b, " %s%s |", c[i], strings.Repeat(" ", w[i]-len([]rune(c[i]))))
		}
		b.WriteString("\n")
	}
	b.WriteString("fault suite: never two holders (dual ms asserted 0 unless made by hand, see notes)\n")
	line(hdr)
	sep := make([]string, len(hdr))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, c := range cells {
		line(c)
	}
	return b.String()
}

// resultOf names a finished (sub)test's outcome for the table.
func resultOf(t *testing.T) string {
	switch {
	case t.Skipped():
		return "SKIP"
	case t.Failed():
		return "FAIL"
	}
	return "pass"
}

// logLine is one line of vipd's slog text output.
type logLine struct {
	Time  time.Time
	Level string
	Msg   string
	Attrs map[string]string
	Raw   string
}

// parseLogfmt splits `k=v k="quoted v"` pairs.
func parseLogfmt(s string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(s); {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		j := strings.IndexByte(s[i:], '=')
		if j < 0 {
			break
		}
		key := s[i : i+j]
		i += j + 1
		var val string
		if i < len(s) && s[i] == '"' {
			k := i + 1
			for k < len(s) && s[k] != '"' {
				if s[k] == '\\' {
					k++
				}
				k++
			}
			if k >= len(s) {
				k = len(s) - 1
			}
			if v, err := strconv.Unquote(s[i : k+1]); err == nil {
				val = v
			} else {
				val = s[i+1 : k]
			}
			i = k + 1
		} else {
			k := strings.IndexByte(s[i:], ' ')
			if k < 0 {
				k = len(s) - i
			}
			val = s[i : i+k]
			i += k
		}
		m[key] = val
	}
	return m
}

// vipdLog parses a node's vipd log; lines that are not slog lines (the
// testbed's start/exit markers) are skipped.
func vipdLog(n *testbed.Node) []logLine {
	f, err := os.Open(n.VipdLogPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		raw := sc.Text()
		if !strings.HasPrefix(raw, "time=") {
			continue
		}
		a := parseLogfmt(raw)
		tm, err := time.Parse(time.RFC3339Nano, a["time"])
		if err != nil {
			continue
		}
		out = append(out, logLine{Time: tm, Level: a["level"], Msg: a["msg"], Attrs: a, Raw: raw})
	}
	return out
}

// logSince returns n's log lines at or after t with message msg ("" = any).
func logSince(n *testbed.Node, t time.Time, msg string) []logLine {
	var out []logLine
	for _, l := range vipdLog(n) {
		// slog stamps with millisecond precision.
		if l.Time.Before(t.Truncate(time.Millisecond)) || (msg != "" && l.Msg != msg) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// waitLog waits until n logs msg at or after t.
func waitLog(n *testbed.Node, t time.Time, msg string, timeout time.Duration) (logLine, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if ls := logSince(n, t, msg); len(ls) > 0 {
			return ls[0], true
		}
		if time.Now().After(deadline) {
			return logLine{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fenceFromLog reconstructs the holder's fence deadline from its "lease
// renewal failed" lines in [from, to]: each says how far the fence was
// (fence_in) when it was logged. It returns the deadline of the last such
// line, how many lines there were, and the spread of the deadlines they
// imply (a few ms when no renewal succeeded in between).
func fenceFromLog(n *testbed.Node, from, to time.Time) (deadline time.Time, lines int, spread time.Duration) {
	var lo, hi time.Time
	for _, l := range logSince(n, from, "lease renewal failed") {
		if l.Time.After(to) {
			break
		}
		d, err := time.ParseDuration(l.Attrs["fence_in"])
		if err != nil {
			continue
		}
		dl := l.Time.Add(d)
		if lines == 0 || dl.Before(lo) {
			lo = dl
		}
		if lines == 0 || dl.After(hi) {
			hi = dl
		}
		deadline = dl
		lines++
	}
	return deadline, lines, hi.Sub(lo)
}
