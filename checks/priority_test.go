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
		// The seed scenario: chk_haproxy weight 2, priorities 101|100.
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

func rev(t Tracked) Tracked { t.Reverse = true; return t }

func valued(name string, w, v int) Tracked {
	return Tracked{Name: name, Weight: w, Up: true, Known: true, Value: v, Valued: true}
}

// keepalived `weight N reverse` (vrrp_track.c: weight_multiplier -1): a
// positive weight is subtracted while up, a negative one added while down,
// and weight 0 is FAULT while up.
func TestEffectivePriorityReverse(t *testing.T) {
	tests := []struct {
		name        string
		base        int
		tracked     []Tracked
		wantPrio    int
		wantFault   bool
		wantFailing []string
	}{
		{"positive reverse up subtracts", 100, []Tracked{rev(up("standby", 10))}, 90, false, nil},
		{"positive reverse down no effect", 100, []Tracked{rev(down("standby", 10))}, 100, false, []string{"standby"}},
		{"negative reverse down adds", 100, []Tracked{rev(down("db", -10))}, 110, false, []string{"db"}},
		{"negative reverse up no effect", 100, []Tracked{rev(up("db", -10))}, 100, false, nil},
		{"zero reverse up is fault", 100, []Tracked{rev(up("peer-alive", 0))}, 100, true, []string{"peer-alive"}},
		{"zero reverse down is fine", 100, []Tracked{rev(down("peer-alive", 0))}, 100, false, []string{"peer-alive"}},
		// The relative effect is the same as without reverse, inverted:
		// up vs down differ by |weight| in the other direction.
		{"reverse clamps low", 5, []Tracked{rev(up("a", 253))}, 1, false, nil},
		{"reverse clamps high", 250, []Tracked{rev(down("a", -253))}, 254, false, []string{"a"}},
		{"mixed with plain", 100, []Tracked{up("haproxy", 2), rev(up("standby", 5)), rev(down("db", -3))}, 100, false, []string{"db"}},

		// Unknown counts as the worse state: no bonus, every penalty,
		// FAULT if either state is.
		{"unknown reverse positive takes the penalty", 100, []Tracked{rev(unknown("standby", 10))}, 90, false, []string{"standby"}},
		{"unknown reverse negative gets no bonus", 100, []Tracked{rev(unknown("db", -10))}, 100, false, []string{"db"}},
		{"unknown reverse zero is fault", 100, []Tracked{rev(unknown("peer", 0))}, 100, true, []string{"peer"}},
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

// keepalived track_file: an up file check adds value × weight (capped at
// 253; at or below −254 FAULT); with weight 0 a non-zero value is FAULT. A
// file check that is down (missing file, bad content) counts as a plain
// down check.
func TestEffectivePriorityFileValue(t *testing.T) {
	tests := []struct {
		name      string
		base      int
		tracked   []Tracked
		wantPrio  int
		wantFault bool
	}{
		{"value 0", 100, []Tracked{valued("w", 10, 0)}, 100, false},
		{"value 1 weight 10", 100, []Tracked{valued("w", 10, 1)}, 110, false},
		{"value 3 weight 10", 100, []Tracked{valued("w", 10, 3)}, 130, false},
		{"negative value", 100, []Tracked{valued("w", 10, -2)}, 80, false},
		{"negative weight drains", 100, []Tracked{valued("maint", -50, 1)}, 50, false},
		{"value × weight capped at 253", 1, []Tracked{valued("w", 100, 5)}, 254, false},
		{"−253 is a priority", 254, []Tracked{valued("w", -253, 1)}, 1, false},
		{"−254 is fault", 254, []Tracked{valued("w", -127, 2)}, 254, true},
		{"far below is fault", 100, []Tracked{valued("w", -100, 254)}, 100, true},
		{"weight 0 value 0 fine", 100, []Tracked{valued("w", 0, 0)}, 100, false},
		{"weight 0 value non-zero fault", 100, []Tracked{valued("w", 0, 7)}, 100, true},
		{"weight 0 negative value fault", 100, []Tracked{valued("w", 0, -1)}, 100, true},
		{"reverse negates", 100, []Tracked{rev(valued("w", 10, 2))}, 80, false},
		{"reverse weight 0 value 0 fault", 100, []Tracked{rev(valued("w", 0, 0))}, 100, true},
		{"reverse weight 0 value 1 fine", 100, []Tracked{rev(valued("w", 0, 1))}, 100, false},
		// Down (missing file with missing: down): a plain down check.
		{"down positive weight", 100, []Tracked{{Name: "w", Weight: 10, Known: true, Valued: false}}, 100, false},
		{"down negative weight", 100, []Tracked{{Name: "w", Weight: -10, Known: true}}, 90, false},
		{"down weight 0", 100, []Tracked{{Name: "w", Weight: 0, Known: true}}, 100, true},
		// A value on a down check is ignored.
		{"value ignored while down", 100, []Tracked{{Name: "w", Weight: 10, Known: true, Value: 5, Valued: true}}, 100, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prio, fault, _ := EffectivePriority(tt.base, tt.tracked)
			if prio != tt.wantPrio || fault != tt.wantFault {
				t.Errorf("EffectivePriority(%d, %+v) = %d, %v; want %d, %v", tt.base, tt.tracked, prio, fault, tt.wantPrio, tt.wantFault)
			}
		})
	}
}

func TestTrackedChecksCarriesReverseAndValue(t *testing.T) {
	track := []config.Track{{Check: "standby", Weight: 10, Reverse: true}, {Check: "w", Weight: 5}}
	statuses := map[string]Status{
		"standby": {Name: "standby", Up: true},
		"w":       {Name: "w", Up: true, Value: 3, Valued: true},
	}
	got := TrackedChecks(track, statuses)
	want := []Tracked{
		{Name: "standby", Weight: 10, Reverse: true, Up: true, Known: true},
		{Name: "w", Weight: 5, Up: true, Known: true, Value: 3, Valued: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("TrackedChecks = %+v, want %+v", got, want)
	}
	if prio, fault, _ := EffectivePriority(100, got); prio != 105 || fault {
		t.Fatalf("EffectivePriority = %d, %v; want 105 (100 − 10 + 3×5), false", prio, fault)
	}
}

func TestTrackedHurts(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   Tracked
		want bool
	}{
		{"unknown", Tracked{Weight: 2}, false},
		{"weight 2 up", Tracked{Weight: 2, Known: true, Up: true}, false},
		{"weight 2 down", Tracked{Weight: 2, Known: true}, true},
		{"weight -5 down", Tracked{Weight: -5, Known: true}, true},
		{"weight -5 up", Tracked{Weight: -5, Known: true, Up: true}, false},
		{"weight 0 down: FAULT", Tracked{Known: true}, true},
		{"weight 0 up", Tracked{Known: true, Up: true}, false},
		{"weight 2 reverse up", Tracked{Weight: 2, Reverse: true, Known: true, Up: true}, true},
		{"weight 2 reverse down", Tracked{Weight: 2, Reverse: true, Known: true}, false},
		{"weight 0 reverse up: FAULT", Tracked{Reverse: true, Known: true, Up: true}, true},
	} {
		if got := tc.tr.Hurts(); got != tc.want {
			t.Errorf("%s: Hurts() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
