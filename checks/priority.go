package checks

import "github.com/vipd/vipd/config"

// Priority bounds of an effective priority. 255 is VRRP's "address owner"
// value and 0 means "resigning", so, as in keepalived, a tracked priority is
// kept within 1..254.
const (
	MinPriority = 1
	MaxPriority = 254
)

// Tracked is one check as seen by a group: its weight in that group and its
// current debounced state.
type Tracked struct {
	// Name of the check (a key of config.Config.Checks).
	Name string
	// Weight from config.Track: > 0 added while up, < 0 added (so
	// subtracted) while down, 0 puts the group in FAULT while down.
	Weight int
	// Up is the debounced state; ignored unless Known.
	Up bool
	// Known is false until the check has produced a result. An unknown
	// check counts as down.
	Known bool
}

// EffectivePriority folds tracked checks into a group's priority the way
// keepalived folds track_script weights:
//
//	prio = base + Σ(weight > 0 && up ? weight : 0) + Σ(weight < 0 && down ? weight : 0)
//
// clamped to MinPriority..MaxPriority. A weight-0 check that is down sets
// fault (the node must not be a candidate, and a holder resigns). A check
// that is not Known yet counts as down, so a node that has not finished its
// first runs neither claims bonus weight nor escapes FAULT.
//
// failing lists the names of every down (or unknown) tracked check, whatever
// its weight, in the order given; it is nil when all are up.
func EffectivePriority(base int, tracked []Tracked) (prio int, fault bool, failing []string) {
	prio = base
	for _, t := range tracked {
		up := t.Known && t.Up
		if !up {
			failing = append(failing, t.Name)
		}
		switch {
		case t.Weight > 0 && up:
			prio += t.Weight
		case t.Weight < 0 && !up:
			prio += t.Weight
		case t.Weight == 0 && !up:
			fault = true
		}
	}
	return min(max(prio, MinPriority), MaxPriority), fault, failing
}

// TrackedChecks pairs a group's track list with the Runner's statuses (as
// returned by Runner.Snapshot). A check missing from statuses is not Known
// yet and so counts as down.
func TrackedChecks(track []config.Track, statuses map[string]Status) []Tracked {
	out := make([]Tracked, 0, len(track))
	for _, tr := range track {
		st, known := statuses[tr.Check]
		out = append(out, Tracked{Name: tr.Check, Weight: tr.Weight, Up: known && st.Up, Known: known})
	}
	return out
}
