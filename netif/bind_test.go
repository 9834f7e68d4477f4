package netif

import (
	"testing"
	"time"
)

func TestLifetimeUntil(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name string
		end  time.Time
		want time.Duration
		ok   bool
	}{
		{"1.95 s left: 1 s", now.Add(1950 * time.Millisecond), time.Second, true},
		{"rounded down to whole seconds", now.Add(3*time.Second + 900*time.Millisecond), 3 * time.Second, true},
		{"exactly a second", now.Add(time.Second), time.Second, true},
		{"just under a second left", now.Add(time.Second - time.Nanosecond), 0, false},
		{"past", now.Add(-time.Second), 0, false},
		{"zero end (a voided fence) gives nothing, not a wrapped huge lifetime", time.Time{}, 0, false},
		{"far future", now.Add(100*365*24*time.Hour + 500*time.Millisecond), 100 * 365 * 24 * time.Hour, true},
	}
	for _, c := range cases {
		got, ok := LifetimeUntil(now, c.end)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: LifetimeUntil = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestBindingBounds(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	b := Binding{Lifetime: 2 * time.Second, Issued: t0, Acked: t0.Add(30 * time.Millisecond)}
	if got := b.Ends(); !got.Equal(t0.Add(2*time.Second + 30*time.Millisecond)) {
		t.Errorf("Ends = +%v: must count from the ack", got.Sub(t0))
	}
	if got := b.GoneBy(); !got.Equal(b.Ends().Add(KernelExpiryLag)) {
		t.Errorf("GoneBy = +%v: must add the kernel's expiry lag", got.Sub(t0))
	}
	if got := b.ExpiresFrom(); !got.Equal(t0.Add(2*time.Second - KernelEarlyExpiry)) {
		t.Errorf("ExpiresFrom = +%v: must count from the issue, minus the early fuzz", got.Sub(t0))
	}
}
