package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

// The long-running commands collect garbage less often, under a soft
// memory limit, and on two threads at least; an operator's GOGC,
// GOMEMLIMIT and GOMAXPROCS are left as they are.
func TestTuneRuntime(t *testing.T) {
	procs, gc, limit := runtime.GOMAXPROCS(0), debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs); debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })

	runtime.GOMAXPROCS(1)
	tuneRuntime(&cliEnv{getenv: func(string) string { return "" }})
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("GOMAXPROCS = %d on one CPU, want 2", got)
	}
	if got := debug.SetGCPercent(-1); got != 400 {
		t.Errorf("GOGC = %d, want 400", got)
	}
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Errorf("memory limit = %d, want %d", got, defaultMemoryLimit)
	}

	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
	tuneRuntime(&cliEnv{getenv: func(k string) string {
		return map[string]string{"GOGC": "100", "GOMEMLIMIT": "off", "GOMAXPROCS": "1"}[k]
	}})
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS = %d with GOMAXPROCS=1 set, want it left at 1", got)
	}
	if got := debug.SetGCPercent(-1); got != 100 {
		t.Errorf("GOGC = %d with GOGC set, want it left at 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit = %d with GOMEMLIMIT set, want it left alone", got)
	}
}
