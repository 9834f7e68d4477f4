package keeper

import (
	"testing"
	"time"
)

func TestReleaseTimer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		p    releasePass
		want time.Duration // -1: nothing observed
	}
	bound := func(now, down int, present, hold bool) releasePass {
		var d time.Time
		if down >= 0 {
			d = at(down)
		}
		return releasePass{Now: at(now), DownSince: d, WasBound: true, Present: present, Hold: hold}
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"down, released in the same pass", []step{
			{bound(0, -1, true, true), -1},
			{bound(30, 20, false, false), 10 * time.Millisecond},
		}},
		{"down, a failed removal, removed a pass later", []step{
			{bound(30, 20, true, false), -1},
			{bound(50, 20, false, false), 30 * time.Millisecond},
		}},
		{"down but kept holding: a later release is not owed to it", []step{
			{bound(30, 20, true, true), -1},
			{bound(600000, 20, false, false), -1},
		}},
		{"a newer check down after an older one: timed from the newer", []step{
			{bound(10, 5, true, true), -1}, // a minor check, kept holding
			{bound(110, 100, false, false), 10 * time.Millisecond},
		}},
		{"check recovered before the release", []step{
			{bound(30, 20, true, false), -1},
			{bound(40, -1, false, false), -1},
		}},
		{"down while not bound (during the bind): not timed", []step{
			{releasePass{Now: at(30), DownSince: at(20), WasBound: false, Present: true}, -1},
			{bound(40, 20, false, false), -1},
		}},
		{"preempt delay: Hold until the challenger may take over, then released", []step{
			{bound(30, 20, true, true), -1},
			{bound(2030, 20, false, false), -1}, // owed to the preemption, kept as documented
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rt releaseTimer
			for i, s := range tc.steps {
				var d time.Duration
				var ok bool
				rt, d, ok = rt.next(s.p)
				got := time.Duration(-1)
				if ok {
					got = d
				}
				if got != s.want {
					t.Fatalf("step %d: observed %v, want %v", i, got, s.want)
				}
			}
		})
	}
}
