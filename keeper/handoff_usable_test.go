package keeper

import (
	"testing"
	"time"

	"github.com/vipd/vipd/election"
)

// Which handoffs the next image adopts, and how it ages them: pure.
func TestHandoffUsable(t *testing.T) {
	ttl := 3 * time.Second
	good := Handoff{Node: "n1", Lease: 7, Prefix: "/vipd", TTL: ttl, Failsafe: true, MonoAt: 10 * time.Second}
	cases := []struct {
		name string
		edit func(*Handoff)
		mono time.Duration
		ok   bool
	}{
		{"fresh", func(*Handoff) {}, 10*time.Second + 50*time.Millisecond, true},
		{"a TTL old, the lease may be gone", func(*Handoff) {}, 13*time.Second + time.Millisecond, false},
		{"made later than now (another boot)", func(*Handoff) {}, 9 * time.Second, false},
		{"no monotonic clock now", func(*Handoff) {}, 0, false},
		{"no monotonic clock then", func(h *Handoff) { h.MonoAt = 0 }, time.Second, false},
		{"another node", func(h *Handoff) { h.Node = "n2" }, 10 * time.Second, false},
		{"no lease", func(h *Handoff) { h.Lease = 0 }, 10 * time.Second, false},
		{"another prefix", func(h *Handoff) { h.Prefix = "/other" }, 10 * time.Second, false},
		{"another TTL", func(h *Handoff) { h.TTL = 10 * time.Second }, 10 * time.Second, false},
		{"failsafe changed", func(h *Handoff) { h.Failsafe = false }, 10 * time.Second, false},
	}
	for _, c := range cases {
		h := good
		c.edit(&h)
		if err := h.usable("n1", "/vipd", ttl, true, c.mono); (err == nil) != c.ok {
			t.Errorf("%s: usable = %v, want ok %v", c.name, err, c.ok)
		}
	}
	var nilH *Handoff
	if nilH.usable("n1", "/vipd", ttl, true, time.Second) == nil {
		t.Error("no handoff is usable")
	}

	h := Handoff{FenceIn: 2 * time.Second, Groups: []HandoffGroup{{GoneByIn: time.Second}, {GoneByIn: 100 * time.Millisecond}, {}}}
	a := h.aged(300 * time.Millisecond)
	if a.FenceIn != 1700*time.Millisecond || a.Groups[0].GoneByIn != 700*time.Millisecond ||
		a.Groups[1].GoneByIn <= 0 || a.Groups[2].GoneByIn != 0 || h.Groups[0].GoneByIn != time.Second {
		t.Errorf("aged: %+v (original %+v): want the fence and lifetimes 300 ms shorter, a passed one still known (> 0), an unknown one unknown, the original untouched", a, h)
	}
	if a.StartWaitIn != nil {
		t.Errorf("aged: an unknown start-up wait became %v", *a.StartWaitIn)
	}
	w := time.Second
	h.StartWaitIn = &w
	if a := h.aged(300 * time.Millisecond); a.StartWaitIn == nil || *a.StartWaitIn != 700*time.Millisecond || w != time.Second {
		t.Errorf("aged: start-up wait %v (original %v), want 700ms and the original untouched", a.StartWaitIn, w)
	}
}

func TestHeldSettled(t *testing.T) {
	c := &election.Claim{CreateRev: 3}
	cases := []struct {
		h    Held
		want bool
	}{
		{Held{}, false},
		{Held{Claim: c}, true},
		{Held{Claim: c, Fresh: true}, false},
		{Held{Claim: c, Resigning: true}, false},
		{Held{Claim: c, Lapsed: true}, false},
		{Held{Claim: c, Partial: true}, false},
		{Held{Claim: c, Unsure: true}, false},
		{Held{Claim: c, Resigned: 2}, true},
	}
	for _, tc := range cases {
		if got := tc.h.settled(); got != tc.want {
			t.Errorf("%+v: settled = %v, want %v", tc.h, got, tc.want)
		}
	}
}
