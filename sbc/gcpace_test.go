package sbc

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		floor, live uint64
		base, want  int
	}{
		{512 * mib, 64 * mib, 100, 700},       // 64 MiB × 8 = 512 MiB
		{512 * mib, 128 * mib, 100, 300},      // 128 × 4
		{512 * mib, 400 * mib, 100, 100},      // GOGC alone reaches the floor
		{512 * mib, 1024 * mib, 100, 100},     // above the floor: GOGC
		{512 * mib, 128 * mib, 400, 400},      // never below GOGC
		{512 * mib, 0, 100, maxGCPercent},     // nothing live yet: counted as 1 MiB, bounded
		{1 << 40, 1 << 20, 100, maxGCPercent}, // bounded
		{512 * mib, 512 * mib, 100, 100},      // equal
		{512*mib + 1, 512 * mib, 50, 50},      // a byte short: base
		{600 * mib, 200 * mib, 100, 200},      // 200 × 3
		{600 * mib, 300 * mib, 100, 100},      // 300 × 2
		{600 * mib, 250 * mib, 100, 140},      // rounded down
		{600 * mib, 250 * mib, 0, 140},        // GOGC=0 floor-paced too
		{600 * mib, 700 * mib, 0, 0},          // GOGC=0 above the floor
		{64 * mib, 1 * mib, 100, 6300},        // small floor
		{math.MaxUint32, 1 << 31, 100, 100},   // ~2x: GOGC
		{3 << 30, 1 << 30, 100, 200},          // GiB scale
		{3 << 30, 1<<30 + 1<<29, 100, 100},    // 1.5 GiB live: GOGC
		{1 << 30, 100 * mib, 100, 924},        // 1 GiB over 100 MiB
		{1 << 30, 1000 * mib, 100, 100},       // close to the floor
		{1 << 30, 10 * mib, 100, 10000},       // bounded at maxGCPercent
		{1 << 30, 20 * mib, 100, 5020},        // under the bound
		{1 << 30, 20 * mib, 6000, 6000},       // GOGC above it
		{0, 20 * mib, 100, 100},               // no floor
		{0, 0, 100, 100},                      // no floor, nothing live
		{16 * mib, 20 * mib, 100, 100},        // minimum floor, above it
		{16 * mib, 4 * mib, 100, 300},         // minimum floor
		{16 * mib, 2 * mib, 300, 700},         // minimum floor over GOGC
		{16 * mib, 1 * mib, 2000, 2000},       // GOGC wins
		{16 * mib, 1, 100, maxGCPercent},      // 1 byte live: bounded
	} {
		if got := gcPercentFor(c.floor, c.live, c.base); got != c.want {
			t.Errorf("gcPercentFor(floor %d, live %d, base %d) = %d, want %d", c.floor, c.live, c.base, got, c.want)
		}
	}
}

// setGC raises Go's GC percentage while the live heap is under the floor,
// keeps doing so after collections (the per-cycle hook), gives Go's own
// back when the floor goes, and sets and clears the memory limit.
func TestSetGC(t *testing.T) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set: the policy's limit does not apply")
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		t.Skip("GOGC=off")
	}
	percent := func() int {
		p := debug.SetGCPercent(base)
		debug.SetGCPercent(p)
		return p
	}
	t.Cleanup(func() { _, _ = setGC(0, 0) })

	if _, changed := setGC(1<<30, 2<<30); !changed { // a test process has far less than 1 GiB live
		t.Fatal("setGC reported no change")
	}
	if mem := memoryAvailable(); mem > 0 && mem/4 < 1<<30 {
		t.Logf("floor capped at %d (a quarter of %d)", mem/4, mem)
	}
	p := percent()
	if p <= base {
		t.Fatalf("GC percent %d with a 1 GiB floor, want above GOGC %d", p, base)
	}
	if lim := debug.SetMemoryLimit(-1); lim != 2<<30 {
		t.Fatalf("memory limit %d, want %d", lim, 2<<30)
	}
	// Collections re-arm the hook, which keeps the percentage paced.
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	gcPace.mu.Lock()
	running, pc := gcPace.running, gcPace.percent
	gcPace.mu.Unlock()
	if !running || pc <= base {
		t.Fatalf("after collections: hook running %v, percent %d", running, pc)
	}

	if _, changed := setGC(0, 0); !changed {
		t.Fatal("removing the floor and limit reported no change")
	}
	if _, changed := setGC(0, 0); changed {
		t.Fatal("the same settings again reported a change")
	}
	if p := percent(); p != base {
		t.Fatalf("GC percent %d after the floor went, want GOGC %d", p, base)
	}
	if lim := debug.SetMemoryLimit(-1); lim != math.MaxInt64 {
		t.Fatalf("memory limit %d after it went, want none", lim)
	}
}
