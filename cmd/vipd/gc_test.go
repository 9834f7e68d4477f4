package main

import "testing"

func TestGCPercent(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	if p, ok := gcPercent(env(nil)); !ok || p != defaultGOGC {
		t.Errorf("no GOGC: got %d, %v; want %d, true", p, ok, defaultGOGC)
	}
	if p, ok := gcPercent(env(map[string]string{"GOGC": ""})); !ok || p != defaultGOGC {
		t.Errorf("empty GOGC: got %d, %v; want %d, true", p, ok, defaultGOGC)
	}
	for _, v := range []string{"100", "off", "200"} {
		if _, ok := gcPercent(env(map[string]string{"GOGC": v})); ok {
			t.Errorf("GOGC=%q: vipd overrode the operator's choice", v)
		}
	}
	if p, ok := gcPercent(env(map[string]string{"GOMEMLIMIT": "64MiB"})); !ok || p != defaultGOGC {
		t.Errorf("GOMEMLIMIT only: got %d, %v; want %d, true", p, ok, defaultGOGC)
	}
}
