package checks

import (
	"slices"
	"testing"

	"github.com/vipd/vipd/config"
)

func up(name string, w int) Tracked   { return Tracked{Name: name, Weight: w, Up: true, Known: true} }
func down(name string, w int) Tracked { return Tracked{Name: name, Weight: w, Up: false, Known: true} }
func unknown(name string, w int) Tracked {
	return Tracked{Name: name, Weight: w, Known: false}
}

func TestEffectivePriority(t *testing.T) {
	tests := []struct {
		name        string
		base        int
		tracked     []Tracked
		wantPrio    int
		wantFault   bool
		wantFailing []string
	}{
		// The seed scenario (DESIGN.md): chk_haproxy weight 2, priorities 101|100.
		{"seed node1 haproxy up", 101, []Tracked{up("haproxy", 2)}, 103, false, nil},
		{"seed node1 haproxy down", 101, []Tracked{down("haproxy", 2)}, 101, false, []string{"haproxy"}},
		{"seed node2 haproxy up", 100, []Tracked{up("haproxy", 2)}, 102, false, nil},
		{"seed node2 haproxy down", 100, []Tracked{down("haproxy", 2)}, 100, false, []string{"haproxy"}},

		{"no tracked checks", 100, nil, 100, false, nil},

		// Negative weights subtract while down and do nothing while up.
		{"negative weight up", 100, []Tracked{up("db", -20)}, 100, false, nil},
		{"negative weight down", 100, []Tracked{down("db", -20)}, 80, false, []string{"db"}},
		{"mixed weights", 100, []Tracked{up("a", 5), down("b", 3), down("c", -10), up("d", -7)}, 95, false, []string{"b", "c"}},

		// Weight 0: FAULT while down, no effect while up.
		{"weight 0 up", 100, []Tracked{up("must", 0)}, 100, false, nil},
		{"weight 0 down is fault", 100, []Tracked{down("must", 0)}, 100, true, []string{"must"}},
		{"weight 0 down among others", 101, []Tracked{up("haproxy", 2), down("must", 0)}, 103, true, []string{"must"}},

		// Unknown (not yet run) counts as down.
		{"unknown positive weight gets no bonus", 101, []Tracked{unknown("haproxy", 2)}, 101, false, []string{"haproxy"}},
		{"unknown negative weight subtracts", 100, []Tracked{unknown("db", -30)}, 70, false, []string{"db"}},
		{"unknown weight 0 is fault", 100, []Tracked{unknown("must", 0)}, 100, true, []string{"must"}},
		{"up without known is unknown", 101, []Tracked{{Name: "haproxy", Weight: 2, Up: true}}, 101, false, []string{"haproxy"}},

		// Clamping to 1..254.
		{"clamp high", 250, []Tracked{up("a", 10)}, 254, false, nil},
		{"clamp base 255", 255, nil, 254, false, nil},
		{"exactly 254", 252, []Tracked{up("a", 2)}, 254, false, nil},
		{"clamp low", 10, []Tracked{down("a", -50)}, 1, false, []string{"a"}},
		{"clamp low to 1 not 0", 20, []Tracked{down("a", -20)}, 1, false, []string{"a"}},
		{"exactly 1", 21, []Tracked{down("a", -20)}, 1, false, []string{"a"}},
		{"sum beyond range both ways", 100, []Tracked{up("a", 253), down("b", -253)}, 100, false, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prio, fault, failing := EffectivePriority(tt.base, tt.tracked)
			if prio != tt.wantPrio || fault != tt.wantFault || !slices.Equal(failing, tt.wantFailing) {
				t.Errorf("EffectivePriority(%d, %+v) = %d, %v, %q; want %d, %v, %q",
					tt.base, tt.tracked, prio, fault, failing, tt.wantPrio, tt.wantFault, tt.wantFailing)
			}
		})
	}
}

// The seed's failover decision: node 1 healthy beats node 2; node 1 with
// HAProxy dead loses to a healthy node 2.
func TestEffectivePrioritySeedOrdering(t *testing.T) {
	n1up, _, _ := EffectivePriority(101, []Tracked{up("haproxy", 2)})
	n1down, _, _ := EffectivePriority(101, []Tracked{down("haproxy", 2)})
	n2up, _, _ := EffectivePriority(100, []Tracked{up("haproxy", 2)})
	if !(n1up > n2up && n2up > n1down) {
		t.Fatalf("want n1up > n2up > n1down, got %d, %d, %d", n1up, n2up, n1down)
	}
}

func TestTrackedChecks(t *testing.T) {
	track := []config.Track{{Check: "haproxy", Weight: 2}, {Check: "db", Weight: -5}, {Check: "new", Weight: 0}}
	statuses := map[string]Status{
		"haproxy": {Name: "haproxy", Up: true},
		"db":      {Name: "db", Up: false},
		"other":   {Name: "other", Up: true},
	}
	got := TrackedChecks(track, statuses)
	want := []Tracked{
		{Name: "haproxy", Weight: 2, Up: true, Known: true},
		{Name: "db", Weight: -5, Up: false, Known: true},
		{Name: "new", Weight: 0, Up: false, Known: false},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("TrackedChecks = %+v, want %+v", got, want)
	}
	prio, fault, failing := EffectivePriority(101, got)
	if prio != 98 || !fault || !slices.Equal(failing, []string{"db", "new"}) {
		t.Fatalf("EffectivePriority = %d, %v, %q; want 98, true, [db new]", prio, fault, failing)
	}
}
