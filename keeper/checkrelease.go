package keeper

import "time"

// releaseTimer times a tracked check going down on a holder to its VIPs
// coming off (vipd_check_to_release_seconds). It is a pure fold over the
// group loop's passes (next); the loop only gathers the inputs.
type releaseTimer struct {
	// seen is the latest check-down time already taken in.
	seen time.Time
	// pending is when a check went down while the VIPs were bound, until
	// the VIPs come off (observed) or a pass decides to keep holding
	// regardless (that check did not cause a release).
	pending time.Time
}

// releasePass is what one pass of the group loop saw and did.
type releasePass struct {
	Now time.Time
	// DownSince is the latest time one of the tracked checks that now
	// lower the priority or cause FAULT went down (Health.DownSince);
	// zero when none does.
	DownSince time.Time
	// WasBound: the VIPs were bound as a holder's before the pass.
	WasBound bool
	// Present: a VIP may still be on the host after the pass (a removal
	// that failed is not a removal).
	Present bool
	// Hold: the pass decided to keep holding.
	Hold bool
}

// next folds one pass in and returns the new state and, when this pass
// took the VIPs off after a check went down while they were bound, the
// time since that check went down.
func (rt releaseTimer) next(p releasePass) (releaseTimer, time.Duration, bool) {
	if p.DownSince.IsZero() {
		return releaseTimer{}, 0, false // every check is fine again
	}
	if p.DownSince.After(rt.seen) {
		rt.seen = p.DownSince
		if p.WasBound {
			rt.pending = p.DownSince
		}
	}
	switch {
	case rt.pending.IsZero():
		return rt, 0, false
	case p.WasBound && !p.Present:
		d := p.Now.Sub(rt.pending)
		rt.pending = time.Time{}
		return rt, max(d, 0), true
	case p.Hold:
		// It went down and the holder kept the VIPs: not what a later
		// release is owed to.
		rt.pending = time.Time{}
	}
	return rt, 0, false
}
