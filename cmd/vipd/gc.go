package main

import (
	"os"
	"runtime/debug"
)

// defaultGOGC is the garbage collector target vipd runs with when the
// environment sets none. An idle vipd keeps about 1.5 MB of live heap, so
// Go's default (GOGC=100, which also means a heap goal of at least 4 MB)
// lets the heap grow to 2-3 times its live size before each collection.
// At 50 the goal is at least 2 MB and 1.5 times the live heap: idle RSS
// peaks about 1 MB lower (issue #7, target 20 MB), for collections about
// twice as often, which at idle cost a few hundredths of a percent of a
// core. The metric go_gc_gogc_percent shows the value in effect.
const defaultGOGC = 50

// gcPercent returns the GOGC vipd sets, or false when the operator chose
// one (GOGC in the environment, e.g. Environment=GOGC=100 in a systemd
// drop-in): then the Go runtime's own reading of it stands. An empty GOGC
// counts as unset, as it does for the runtime. GOMEMLIMIT is left to the
// runtime either way.
func gcPercent(lookupEnv func(string) (string, bool)) (int, bool) {
	if v, set := lookupEnv("GOGC"); set && v != "" {
		return 0, false
	}
	return defaultGOGC, true
}

// setGCPercent applies gcPercent to the running process.
func setGCPercent() {
	if p, ok := gcPercent(os.LookupEnv); ok {
		debug.SetGCPercent(p)
	}
}
