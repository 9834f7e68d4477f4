package checks

import "github.com/vipd/vipd/config"

// Priority bounds of an effective priority. 255 is VRRP's "address owner"
// value and 0 means "resigning", so, as in keepalived, a tracked priority is
// kept within 1..254.
const (
	MinPriority = 1
	MaxPriority = 254
)

// fileFault is keepalived's track_file floor: a value × weight at or below
// it puts the group in FAULT instead of lowering its priority.
const fileFault = -254

// Tracked is one check as seen by a group: its weight in that group and its
// current debounced state.
type Tracked struct {
	// Name of the check (a key of config.Config.Checks).
	Name string
	// Weight from config.Track: > 0 added while up, < 0 added (so
	// subtracted) while down, 0 puts the group in FAULT while down.
	Weight int
	// Reverse from config.Track inverts the weight's effect (keepalived
	// `weight N reverse`); see EffectivePriority.
	Reverse bool
	// Up is the debounced state; ignored unless Known.
	Up bool
	// Known is false until the check has produced a result. An unknown
	// check counts as whichever of up and down is worse for the group.
	Known bool
	// Value is the number the check read (the file check); used only
	// when Valued and the check is up.
	Value int
	// Valued marks a check whose Value multiplies its weight.
	Valued bool
}

// contribution is what one tracked check adds to the priority and whether
// it puts the group in FAULT, for a given up/down state, following
// keepalived's vrrp_track.c (weight_multiplier is -1 with reverse):
//
//	weight 0:  FAULT while down (reverse: while up)
//	weight >0: +weight while up   (reverse: −weight while up)
//	weight <0: weight while down  (reverse: −weight, an increase, while down)
//
// A valued (file) check that is up adds value × weight (reverse: negated),
// capped at 253, and is FAULT at or below −254; with weight 0 a non-zero
// value is FAULT (reverse: a zero value), as keepalived's track_file.
func (t Tracked) contribution(up bool) (add int, fault bool) {
	m := 1
	if t.Reverse {
		m = -1
	}
	if t.Valued && up {
		if t.Weight == 0 {
			return 0, (t.Value != 0) != t.Reverse
		}
		s := t.Value * t.Weight * m
		if s <= fileFault {
			return 0, true
		}
		return min(s, config.MaxWeight), false
	}
	switch {
	case t.Weight == 0:
		return 0, up == t.Reverse
	case t.Weight > 0 && up:
		return t.Weight * m, false
	case t.Weight < 0 && !up:
		return t.Weight * m, false
	}
	return 0, false
}

// EffectivePriority folds tracked checks into a group's priority the way
// keepalived folds track_script (and track_file) weights:
//
//	prio = base + Σ contribution (see Tracked), clamped to MinPriority..MaxPriority
//
// With no reverse and no values that is
//
//	prio = base + Σ(weight > 0 && up ? weight : 0) + Σ(weight < 0 && down ? weight : 0)
//
// A weight-0 check that is down sets fault (the node must not be a
// candidate, and a holder resigns). A check that is not Known yet counts as
// whichever state is worse: it claims no bonus, takes every penalty either
// state would, and is FAULT if either state would be (so an unknown plain
// check counts as down, and an unknown `weight 0 reverse` check as FAULT).
//
// failing lists, in the order given, every tracked check that is down or
// unknown, or whose state puts the group in FAULT; it is nil when none is.
func EffectivePriority(base int, tracked []Tracked) (prio int, fault bool, failing []string) {
	prio = base
	for _, t := range tracked {
		var add int
		var f bool
		if t.Known {
			add, f = t.contribution(t.Up)
		} else {
			addUp, fUp := t.contribution(true)
			addDown, fDown := t.contribution(false)
			add, f = min(addUp, addDown), fUp || fDown
		}
		prio += add
		fault = fault || f
		if !t.Known || !t.Up || f {
			failing = append(failing, t.Name)
		}
	}
	return min(max(prio, MinPriority), MaxPriority), fault, failing
}

// Hurts reports whether the check's known state is its worse one: it
// adds less to the priority than the other state would, or puts the group
// in FAULT (for reverse, that is while up).
func (t Tracked) Hurts() bool {
	if !t.Known {
		return false
	}
	add, f := t.contribution(t.Up)
	other, _ := t.contribution(!t.Up)
	return f || add < other
}

// TrackedChecks pairs a group's track list with the Runner's statuses (as
// returned by Runner.Snapshot). A check missing from statuses is not Known
// yet (see EffectivePriority).
func TrackedChecks(track []config.Track, statuses map[string]Status) []Tracked {
	out := make([]Tracked, 0, len(track))
	for _, tr := range track {
		st, known := statuses[tr.Check]
		out = append(out, Tracked{
			Name: tr.Check, Weight: tr.Weight, Reverse: tr.Reverse,
			Up: known && st.Up, Known: known,
			Value: st.Value, Valued: known && st.Valued,
		})
	}
	return out
}
