package sbc

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/internal/meminfo"
	"github.com/sbc-project/sbc/policy"
)

// Go's garbage collector, paced for a SIP edge (server.gc_heap_floor,
// server.memory_limit).
//
// Go starts a collection when the heap has grown by GOGC % (100) over
// what the last one left live. The SBC's live heap is small for the
// garbage it makes: at 1,000 calls/s it is 60–100 MB (mostly the tombs of
// the last 32 s of ended calls) against ~55 kB allocated per call, so Go
// collected every 1.5 s, and each collection's marking (60–100 ms of CPU,
// on the idle core when there is one) was 15–25 % of the SBC's CPU per
// call; the extra assists and latency of a collection mid-burst failed
// steps of the max-CPS bisection on retransmissions (BENCHMARKS.md,
// "Pacing Go's collector"). The pacer keeps the heap's goal at least
// gc_heap_floor: after every collection it raises the GC percentage for
// the next cycle so that live × (1 + percent/100) ≥ floor, and leaves
// Go's own (GOGC) once the live heap is large enough that GOGC alone
// reaches the floor. Memory above the live heap is garbage the next
// collection frees; RSS settles near the floor at most rates.
//
// The floor is capped at a quarter of the memory the process may use
// (the cgroup's memory.max, else MemTotal), so that a small VM is not
// given a floor it cannot hold; memory_limit, when set, is Go's soft
// memory limit (debug.SetMemoryLimit), which wins over both.
//
// The settings are process-wide: an SBC applies them only when its
// Options.ManageGC is set (sbc run does), at Start and at every reload.

var gcPace struct {
	mu       sync.Mutex
	floor    uint64 // bytes; 0: off
	base     int    // GOGC at the first apply (Go's own percentage)
	percent  int    // the percentage last set
	running  bool   // the per-cycle hook is armed
	limit    int64  // the memory limit last set by the policy (0: none)
	touched  uint64 // bytes of heap prefaultHeap has touched (0: none yet)
	faulting bool   // a prefaultHeap is under way
	envLim   bool   // GOMEMLIMIT was set: the policy's limit does not apply
	huge     bool   // server.heap_huge_pages: prefaultHeap advises its block as huge pages
	started  bool
}

// gcSentinel is an object whose finalizer runs once after each
// collection that found it dead; it re-arms itself. It holds a pointer,
// so it is never a tiny allocation (whose finalizers may be late).
type gcSentinel struct {
	_ *gcSentinel
	_ [2]uintptr
}

// applyGC applies p's GC settings to the process when the SBC manages
// its collector (Options.ManageGC).
func (s *SBC) applyGC(p *policy.Policy) {
	if !s.manageGC {
		return
	}
	floor := int64(p.Server.GCHeapFloor)
	if floor < 0 {
		floor = 0
	}
	eff, changed := setGC(floor, int64(p.Server.MemoryLimit))
	gcPace.mu.Lock()
	gcPace.huge = p.Server.HugePages()
	gcPace.mu.Unlock()
	if changed {
		// Said once per change: the floor in force may be less than the
		// policy's (capped by the memory available), and GOMEMLIMIT
		// overrides memory_limit.
		s.log.Info("garbage collector paced", "gc_heap_floor", eff, "policy_gc_heap_floor", floor,
			"memory_limit", debug.SetMemoryLimit(-1), "gomemlimit", os.Getenv("GOMEMLIMIT"))
	}
	if n := prefaultDue(eff); n > 0 {
		go prefaultLoop(n, func(n uint64, took time.Duration, huge string) {
			s.log.Info("heap touched up to the GC floor", "bytes", n, "took", took.Round(time.Millisecond), "huge_pages", huge)
		})
	}
}

// prefaultLoop touches n bytes (prefaultDue's), then whatever a reload
// that raised the floor meanwhile made due (its own prefaultDue found
// this one under way), reporting each round.
func prefaultLoop(n uint64, done func(n uint64, took time.Duration, huge string)) {
	for n > 0 {
		t0 := time.Now()
		ok, huge := prefaultHeap(n)
		if !ok {
			return
		}
		done(n, time.Since(t0), huge)
		gcPace.mu.Lock()
		floor := gcPace.floor
		gcPace.mu.Unlock()
		n = prefaultDue(floor)
	}
}

// The heap up to the floor, touched once (prefaultHeap).
//
// A Go heap grows into fresh memory, and the first write to each fresh
// 4 KiB page is a page fault in which the kernel zeroes the page. An SBC
// with a floor grows its heap to the floor before it first collects, and
// reuses that memory from then on; until it gets there, every message's
// allocations fault. At 600 calls/s that was 28 % of the SBC's CPU
// (clear_page under the allocator's page faults, `perf`), and the
// faults are on the path of every message (BENCHMARKS.md, "The heap
// touched up to the floor"). Kamailio's answer is shm_force_alloc: its
// pool is touched at start. The SBC touches its heap up to the floor
// once, in the background after Start (and again when a reload raises
// the floor), so that RSS is at the floor from the start rather than
// after the first collection, where it would settle anyway.
//
// The block is advised as transparent huge pages before it is touched
// (server.heap_huge_pages, on by default): the heap every message
// allocates from is then mapped by 2 MiB pages, 256 for 512 MiB instead
// of 131,072 of 4 KiB. At 600 calls/s that cut the SBC's CPU per call
// by about a fifth and its latencies with it (BENCHMARKS.md, "The heap
// on huge pages"). The likely reason (this VM has no hardware counters
// to count it): a Go heap between collections walks through all of its
// free memory, so with small pages most allocations of fresh memory miss
// the TLB. The pages stay huge while the heap keeps them; memory
// the runtime's scavenger hands back to the kernel is released (and
// split) as before. The kernel must allow it: THP mode always or
// madvise (the log line says which); never leaves 4 KiB pages.

// prefaultDue is how many bytes prefaultHeap should touch for floor: the
// floor above what was touched already, 0 if nothing is due (no floor,
// GOGC=off, one under way).
func prefaultDue(floor uint64) uint64 {
	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	if lim := debug.SetMemoryLimit(-1); lim < math.MaxInt64 {
		floor = min(floor, uint64(max(lim, 0))/2) // room for the rest under a limit
	}
	if floor <= gcPace.touched || gcPace.base < 0 || gcPace.faulting {
		return 0
	}
	gcPace.faulting = true
	return floor - gcPace.touched
}

// prefaultHeap touches n bytes of new heap and gives them back to the
// heap as free memory that is already mapped. It reports whether it
// touched them (false: the floor went meanwhile), and how they were
// paged (hugePages). It does not hold gcPace.mu while it writes the
// pages (~1.4 s for 512 MiB here), so a reload's setGC does not wait for
// it; while it runs (gcPace.faulting), setPercentLocked records the
// percentage a reload or the per-cycle hook paces and leaves collection
// off, and prefaultHeap applies the percentage in force when it is done.
//
// The order keeps the runtime's background scavenger from handing the
// touched pages straight back to the kernel. It aims to retain what
// was in use at the last collection scaled by the ratio of the new heap
// goal to the last one (runtime/mgcscavenge.go). With collection off
// while the block is allocated and written, no cycle sees it live; the
// collection that frees it runs with collection still off (no goal: the
// scavenger keeps everything) and prepareSpans fills the same memory
// again; the last collection frees that with the paced percentage in
// force: both goals are then near the floor, and what was in use at
// that collection includes prepareSpans' n bytes.
func prefaultHeap(n uint64) (bool, string) {
	gcPace.mu.Lock()
	if gcPace.floor == 0 || gcPace.base < 0 {
		// The floor went since prefaultDue: what setGC paced
		// meanwhile was only recorded.
		gcPace.faulting = false
		debug.SetGCPercent(gcPace.percent)
		gcPace.mu.Unlock()
		return false, ""
	}
	debug.SetGCPercent(-1)
	huge := gcPace.huge
	gcPace.mu.Unlock()

	b := make([]byte, n)
	paged := hugePages(b, huge)
	page := os.Getpagesize()
	for i := 0; i < len(b); i += page {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	if prefaultTouchedHook != nil {
		prefaultTouchedHook(b)
	}
	// The block back to the heap (collection stays off for the rest of
	// the round), then the runtime's records of the spans a heap that
	// size holds, made in the memory the block leaves.
	b = nil
	runtime.GC()
	prepareSpans(n)

	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	gcPace.faulting = false
	debug.SetGCPercent(gcPace.percent)
	runtime.GC()
	gcPace.touched += n
	return true, paged
}

// hugePages advises b (not yet touched) as transparent huge pages when
// huge is set, and says how it is paged: "off" (not asked), "advised
// (THP mode)", "4 KiB pages (THP never)", or why the advice failed.
func hugePages(b []byte, huge bool) string {
	if !huge {
		return "off"
	}
	if err := adviseHugePages(b); err != nil {
		return "not advised: " + err.Error()
	}
	switch mode := thpMode(); mode {
	case "never":
		return "4 KiB pages (THP never)"
	case "":
		return "advised"
	default:
		return "advised (THP " + mode + ")"
	}
}

// The runtime's records of the heap's spans, made before they are needed
// (prepareSpans).
//
// The heap is carved into spans (8 KiB for objects up to 1 KiB, more
// for larger ones), and the runtime keeps a record of each outside the
// heap: its mspan (~170 bytes), an entry in the list of all spans, its
// allocation and mark bits. Records are reused once a collection frees
// their span, but the first time the heap holds so many spans each new
// record is written to fresh memory, a page fault. The touched block is
// one span; a heap that fills to a floor of 512 MiB in messages holds
// ~65,000. At 600 calls/s the SBC took 120–160 page faults a second for
// its first 25 s, and ~10,000 at its first collection (BENCHMARKS.md,
// "The runtime's span records made at start"). So after the block is
// touched and freed, prepareSpans allocates as much again in small
// objects (garbage at once, with collection off) and the round's forced
// collection frees them: the records are made then, in the memory the
// block left, not on the path of the first calls.

// spanSizes are the object sizes prepareSpans allocates: size classes
// whose spans are one 8 KiB page, as the most spans a heap of a given
// size can hold, from 16 bytes (the most allocation and mark bits a
// span needs) up.
var spanSizes = [...]int{16, 32, 48, 64, 96, 128, 256, 512, 1024}

// prepareSpansOff skips prepareSpans (a test's baseline).
var prepareSpansOff bool

// spanSink keeps prepareSpans' allocations from being optimised away
// (each replaces the one before, which is garbage from then on).
var spanSink struct {
	bytes []byte
	ptrs  []*byte
}

// prepareSpans allocates about n bytes in small objects, an equal share
// of each of spanSizes, half of them without pointers and half with (the
// runtime keeps the two kinds in spans of their own). Each is garbage as
// soon as the next is made; the caller has collection off, so they fill
// the heap until it collects.
func prepareSpans(n uint64) {
	if prepareSpansOff {
		return
	}
	per := n / uint64(2*len(spanSizes))
	for _, size := range spanSizes {
		for done := uint64(0); done < per; done += uint64(size) {
			spanSink.bytes = make([]byte, size)
		}
		for done := uint64(0); done < per; done += uint64(size) {
			spanSink.ptrs = make([]*byte, size/8)
		}
	}
	spanSink.bytes, spanSink.ptrs = nil, nil
}

// prefaultTouchedHook, when set (tests), runs in prefaultHeap with the
// block after its pages are written, before collection is back on.
var prefaultTouchedHook func(b []byte)

// setPercentLocked makes p the GC percentage: at once, or, while
// prefaultHeap has collection off, when it is done. Under gcPace.mu.
func setPercentLocked(p int) {
	gcPace.percent = p
	if !gcPace.faulting {
		debug.SetGCPercent(p)
	}
}

// setGC sets the process's GC floor and memory limit (bytes; 0: none). It
// returns the floor in force (capped) and whether it or the limit changed.
func setGC(floor, limit int64) (uint64, bool) {
	gcPace.mu.Lock()
	defer gcPace.mu.Unlock()
	if !gcPace.started {
		gcPace.started = true
		gcPace.base = debug.SetGCPercent(100)
		debug.SetGCPercent(gcPace.base)
		gcPace.percent = gcPace.base
		_, gcPace.envLim = os.LookupEnv("GOMEMLIMIT")
	}
	changed := false
	if !gcPace.envLim && limit != gcPace.limit {
		changed = true
		if limit > 0 {
			debug.SetMemoryLimit(limit)
		} else {
			debug.SetMemoryLimit(math.MaxInt64)
		}
		gcPace.limit = limit
	}
	f := uint64(max(floor, 0))
	if mem := memoryAvailable(); mem > 0 {
		f = min(f, mem/4)
	}
	changed = changed || f != gcPace.floor
	gcPace.floor = f
	if gcPace.base < 0 {
		return f, changed // GOGC=off: Go collects at the memory limit only
	}
	if f == 0 {
		if gcPace.percent != gcPace.base {
			setPercentLocked(gcPace.base)
		}
		return f, changed
	}
	paceLocked()
	if !gcPace.running {
		gcPace.running = true
		armGCSentinel()
	}
	return f, changed
}

func armGCSentinel() {
	runtime.SetFinalizer(new(gcSentinel), func(*gcSentinel) {
		gcPace.mu.Lock()
		defer gcPace.mu.Unlock()
		if gcPace.floor == 0 || gcPace.base < 0 {
			gcPace.running = false
			return
		}
		paceLocked()
		armGCSentinel()
	})
}

// gcLiveSample reads what the last collection left live.
var gcLiveSample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

// paceLocked sets the GC percentage for the next cycle from the live
// heap. Under gcPace.mu.
func paceLocked() {
	metrics.Read(gcLiveSample)
	live := uint64(0)
	if gcLiveSample[0].Value.Kind() == metrics.KindUint64 {
		live = gcLiveSample[0].Value.Uint64()
	}
	p := gcPercentFor(gcPace.floor, live, gcPace.base)
	// Small changes are not worth the heap lock: within an eighth.
	if d := p - gcPace.percent; d > gcPace.percent/8 || -d > gcPace.percent/8 {
		setPercentLocked(p)
	}
}

// maxGCPercent bounds the percentage the floor asks for (a tiny live heap
// right after start).
const maxGCPercent = 10000

// gcPercentFor is the GC percentage that makes the heap goal at least
// floor over live bytes live, and never less than base.
func gcPercentFor(floor, live uint64, base int) int {
	if live == 0 {
		live = 1 << 20
	}
	if floor <= live {
		return base
	}
	p := (floor - live) * 100 / live
	if p > maxGCPercent {
		return maxGCPercent
	}
	return max(base, int(p))
}

// memoryAvailable is what the process may use: its cgroup's memory.max
// when that is a number, else the machine's MemTotal (0: unknown).
func memoryAvailable() uint64 {
	var mem uint64
	if kb, ok := meminfo.KB("MemTotal"); ok {
		mem = kb << 10
	}
	if cg := cgroupMemoryMax(); cg > 0 && (mem == 0 || cg < mem) {
		mem = cg
	}
	return mem
}

// cgroupMemoryMax reads the cgroup v2 memory.max of this process (0:
// none or unknown).
func cgroupMemoryMax() uint64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		path, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		v, err := os.ReadFile("/sys/fs/cgroup" + strings.TrimSpace(path) + "/memory.max")
		if err != nil {
			return 0
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			return 0 // "max"
		}
		return n
	}
	return 0
}
