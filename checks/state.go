package checks

// State is the rise/fall hysteresis state of one check. The zero value is a
// check that has not produced a result yet (Known false).
//
// As in keepalived, the first result decides at once: a check whose first
// run succeeds is up, one whose first run fails is down. Afterwards an up
// check goes down after fall consecutive failures, and a down check goes up
// after rise consecutive successes; a result that agrees with the current
// state resets the opposite streak.
type State struct {
	// Known reports whether the check has produced at least one result.
	Known bool
	// Up is the debounced state; meaningful only when Known.
	Up bool

	successes int // consecutive successes while down
	failures  int // consecutive failures while up
}

// NewState returns the state a check starts in. Without initFail that is
// the zero State: unknown, and the first result decides at once. With
// initFail (keepalived's init_fail) the check starts known and down, so a
// first success does not decide: it takes rise successes to come up, as
// for any down check, and failures keep it down without a change.
func NewState(initFail bool) State {
	if initFail {
		return State{Known: true}
	}
	return State{}
}

// Observe folds one result (ok = the run succeeded) into s and returns the
// next state and whether Known or Up changed. rise and fall below 1 are
// treated as 1 (the config.Check zero values).
func (s State) Observe(ok bool, rise, fall int) (next State, changed bool) {
	rise, fall = max(rise, 1), max(fall, 1)
	if !s.Known {
		return State{Known: true, Up: ok}, true
	}
	switch {
	case s.Up && ok:
		s.failures = 0
	case s.Up && !ok:
		s.failures++
		if s.failures >= fall {
			return State{Known: true, Up: false}, true
		}
	case !s.Up && ok:
		s.successes++
		if s.successes >= rise {
			return State{Known: true, Up: true}, true
		}
	default: // down and failing
		s.successes = 0
	}
	return s, false
}

// Falling reports an up check that has failed at least once but fewer
// than fall times in a row: the Runner re-checks it at its fast interval.
func (s State) Falling() bool { return s.Known && s.Up && s.failures > 0 }
