package checks

import (
	"fmt"
	"strings"
	"testing"
)

// results parses a run script: '+' is a success, '-' a failure.
func results(t *testing.T, script string) []bool {
	t.Helper()
	out := make([]bool, 0, len(script))
	for _, c := range script {
		switch c {
		case '+':
			out = append(out, true)
		case '-':
			out = append(out, false)
		case ' ':
		default:
			t.Fatalf("bad script char %q", c)
		}
	}
	return out
}

// trace renders the state after each result: 'U' up, 'D' down, and marks a
// change with '!' after the letter.
func trace(s State, rs []bool, rise, fall int) string {
	var b strings.Builder
	for _, ok := range rs {
		var changed bool
		s, changed = s.Observe(ok, rise, fall)
		if !s.Known {
			b.WriteString("?")
		} else if s.Up {
			b.WriteString("U")
		} else {
			b.WriteString("D")
		}
		if changed {
			b.WriteString("!")
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

func TestStateObserve(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		script     string
		want       string
	}{
		// The first result decides immediately, whatever rise/fall say.
		{"first success decides", 5, 5, "+", "U!"},
		{"first failure decides", 5, 5, "-", "D!"},
		{"first success then holds", 2, 2, "+ + +", "U! U U"},

		// rise 1 / fall 1: every flip is a change.
		{"rise1 fall1 follows results", 1, 1, "+ - + + - -", "U! D! U! U D! D"},
		{"zero rise/fall act as 1", 0, 0, "+ - +", "U! D! U!"},
		{"negative rise/fall act as 1", -3, -1, "- + -", "D! U! D!"},

		// rise 2 / fall 2.
		{"fall 2 needs two failures", 2, 2, "+ - -", "U! U D!"},
		{"rise 2 needs two successes", 2, 2, "- + +", "D! D U!"},
		{"full cycle", 2, 2, "+ + - - - + + +", "U! U U D! D D U! U"},
		{"success resets failure streak", 2, 2, "+ - + - + -", "U! U U U U U"},
		{"failure resets success streak", 2, 2, "- + - + - +", "D! D D D D D"},
		{"flap while up then fall", 2, 2, "+ - + - -", "U! U U U D!"},
		{"flap while down then rise", 2, 2, "- + - + +", "D! D D D U!"},
		{"streak restarts after change", 2, 2, "+ - - + - +", "U! U D! D D D"},

		// Asymmetric thresholds (seed uses 2/2; keepalived users often 3/1).
		{"rise 3 fall 1", 3, 1, "- + + + - + +", "D! D D U! D! D D"},
		{"rise 1 fall 3", 1, 3, "+ - - + - - - +", "U! U U U U U D! U!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := trace(State{}, results(t, tt.script), tt.rise, tt.fall)
			if got != tt.want {
				t.Errorf("rise %d fall %d script %q:\n got  %s\n want %s", tt.rise, tt.fall, tt.script, got, tt.want)
			}
		})
	}
}

// A flapping check that alternates never reaches a threshold above 1, for
// any length of flapping, in either starting state.
func TestStateObserveLongFlapNeverChanges(t *testing.T) {
	for _, first := range []bool{true, false} {
		for _, th := range []int{2, 3, 5} {
			t.Run(fmt.Sprintf("first=%v/threshold=%d", first, th), func(t *testing.T) {
				s, _ := State{}.Observe(first, th, th)
				ok := !first
				for i := range 1000 {
					var changed bool
					s, changed = s.Observe(ok, th, th)
					if changed || s.Up != first {
						t.Fatalf("run %d: changed=%v up=%v, want no change from up=%v", i, changed, s.Up, first)
					}
					ok = !ok
				}
			})
		}
	}
}

func TestStateZeroValueIsUnknown(t *testing.T) {
	var s State
	if s.Known || s.Up {
		t.Fatalf("zero State = %+v, want unknown and not up", s)
	}
}

// init_fail: the check starts known and down; a first success does not
// decide, it takes rise successes; failures keep it down without a change.
func TestStateInitFail(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		script     string
		want       string
	}{
		{"rise 1 comes up at first success", 1, 1, "+ -", "U! D!"},
		{"rise 2 needs two successes", 2, 2, "+ +", "D U!"},
		{"failures are no change", 3, 1, "- - + + +", "D D D D U!"},
		{"streak reset by a failure", 2, 1, "+ - + +", "D D D U!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState(true)
			if !s.Known || s.Up {
				t.Fatalf("NewState(true) = %+v, want known and down", s)
			}
			got := trace(s, results(t, tt.script), tt.rise, tt.fall)
			if got != tt.want {
				t.Errorf("rise %d fall %d script %q:\n got  %s\n want %s", tt.rise, tt.fall, tt.script, got, tt.want)
			}
		})
	}
	if s := NewState(false); s != (State{}) {
		t.Errorf("NewState(false) = %+v, want the zero State", s)
	}
}

func TestStateFalling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		results string // '+' pass, '-' fail
		fall    int
		want    bool
	}{
		{"unknown", "", 2, false},
		{"up", "+", 2, false},
		{"up, one failure of two", "+ -", 2, true},
		{"down after two", "+ - -", 2, false},
		{"failure then pass", "+ - +", 2, false},
		{"fall 1: down at once", "+ -", 1, false},
		{"down, rising", "- +", 2, false},
	} {
		var s State
		for _, r := range results(t, tc.results) {
			s, _ = s.Observe(r, 2, tc.fall)
		}
		if got := s.Falling(); got != tc.want {
			t.Errorf("%s: Falling() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
