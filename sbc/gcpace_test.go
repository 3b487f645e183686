package sbc

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
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

// prefaultHeap leaves the touched bytes in the heap as free memory (not
// released to the kernel), restores the paced GC percentage, and is due
// again only for a higher floor.
func TestPrefaultHeap(t *testing.T) {
	const floor = 64 << 20
	prefaultFloor(t, floor)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/goal:bytes"}}
	runtime.GC()
	metrics.Read(sample)
	free0 := sample[0].Value.Uint64()
	// The block's own pages, while it is live: all resident once written
	// (the process's RSS is no measure in a test binary whose other
	// tests' memory the scavenger hands back meanwhile).
	resident, pages, known := 0, 0, false
	prefaultTouchedHook = func(b []byte) { resident, pages, known = residentPages(b) }
	t.Cleanup(func() { prefaultTouchedHook = nil })

	n := prefaultDue(floor)
	if n != floor {
		t.Fatalf("due %d bytes, want the floor %d", n, floor)
	}
	if again := prefaultDue(floor); again != 0 {
		t.Fatalf("a second prefault due (%d bytes) while one is under way", again)
	}
	if ok, _ := prefaultHeap(n); !ok {
		t.Fatal("prefaultHeap touched nothing")
	}
	if known && resident != pages {
		t.Errorf("%d of the block's %d pages resident after the writes (%d bytes were free in the heap before): the pages were not touched",
			resident, pages, free0)
	}
	metrics.Read(sample)
	if free := sample[0].Value.Uint64(); free < n*3/4 {
		t.Errorf("heap free (mapped, not released) %d after touching %d, was %d", free, n, free0)
	}
	gcPace.mu.Lock()
	paced := gcPace.percent
	gcPace.mu.Unlock()
	if p := debug.SetGCPercent(paced); p != paced {
		t.Errorf("GC percent %d after the prefault, want the paced %d", p, paced)
	}
	if goal := sample[1].Value.Uint64(); goal < floor/2 {
		t.Errorf("heap goal %d after the prefault, want near the floor %d", goal, floor)
	}
	if again := prefaultDue(floor); again != 0 {
		t.Errorf("prefault due again (%d bytes) for the same floor", again)
	}
	if more := prefaultDue(2 * floor); more != floor {
		t.Errorf("a doubled floor is due %d bytes, want %d", more, floor)
	}
	gcPace.mu.Lock()
	gcPace.faulting = false
	gcPace.mu.Unlock()
}

// A floor raised while the heap is being touched is touched too, once
// the first round is done.
func TestPrefaultLoopRaisedFloor(t *testing.T) {
	const floor = 32 << 20
	prefaultFloor(t, floor)
	n := prefaultDue(floor)
	// A reload doubles the floor while the first round is due: its own
	// prefaultDue finds one under way.
	if f, _ := setGC(2*floor, 0); f != 2*floor {
		t.Skipf("floor capped at %d", f)
	}
	if again := prefaultDue(2 * floor); again != 0 {
		t.Fatalf("second prefault due (%d bytes) while one is under way", again)
	}
	var rounds []uint64
	prefaultLoop(n, func(n uint64, _ time.Duration, _ string) { rounds = append(rounds, n) })
	gcPace.mu.Lock()
	touched, faulting := gcPace.touched, gcPace.faulting
	gcPace.mu.Unlock()
	if touched != 2*floor || faulting || len(rounds) != 2 || rounds[0] != floor || rounds[1] != floor {
		t.Fatalf("touched %d (want %d), under way %v, rounds %v", touched, 2*floor, faulting, rounds)
	}
}

// prefaultFloor sets a floor with nothing touched yet, and restores no
// floor after the test (skipping where GOGC, GOMEMLIMIT or the machine's
// memory would change what the test sees).
func prefaultFloor(t *testing.T, floor uint64) {
	t.Helper()
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		t.Skip("GOGC=off")
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set")
	}
	t.Cleanup(func() {
		_, _ = setGC(0, 0)
		gcPace.mu.Lock()
		gcPace.touched = 0
		gcPace.mu.Unlock()
	})
	if f, _ := setGC(int64(floor), 0); f != floor {
		t.Skipf("floor capped at %d", f)
	}
	gcPace.mu.Lock()
	gcPace.touched = 0
	gcPace.mu.Unlock()
}

// A reload while the heap is being touched neither waits for the pages
// to be written nor turns collection back on in the middle: what it
// paces is applied when the prefault is done. The same if the reload
// removes the floor.
func TestPrefaultReloadDuring(t *testing.T) {
	const floor = 32 << 20
	for _, c := range []struct {
		name     string
		newFloor int64
	}{{"floor raised", 2 * floor}, {"floor removed", 0}} {
		t.Run(c.name, func(t *testing.T) {
			prefaultFloor(t, floor)
			n := prefaultDue(floor)
			during := -2
			prefaultTouchedHook = func([]byte) {
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = setGC(c.newFloor, 0)
				}()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Error("setGC still waiting for the prefault after a minute")
					return
				}
				during = debug.SetGCPercent(-1) // collection is off: reads -1, changes nothing
			}
			t.Cleanup(func() { prefaultTouchedHook = nil })
			prefaultHeap(n)
			if during != -1 {
				t.Errorf("GC percent %d right after the reload, want -1 (off until the prefault is done)", during)
			}
			gcPace.mu.Lock()
			paced, faulting := gcPace.percent, gcPace.faulting
			gcPace.mu.Unlock()
			if got := debug.SetGCPercent(paced); got != paced || faulting {
				t.Errorf("GC percent %d after the prefault, want the reload's %d (under way: %v)", got, paced, faulting)
			}
			gcPace.mu.Lock()
			base := gcPace.base
			gcPace.mu.Unlock()
			if c.newFloor == 0 && paced != base {
				t.Errorf("GC percent %d after the floor went, want GOGC %d", paced, base)
			}
		})
	}
}
