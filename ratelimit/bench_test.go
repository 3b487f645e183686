package ratelimit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// benchKeys are distinct /32 sources, built once outside the timers.
var benchKeys = func() []netip.Prefix {
	k := make([]netip.Prefix, 1<<20)
	for i := range k {
		k[i] = v4(i)
	}
	return k
}()

const benchCap = 100_000

func BenchmarkLimiterAllowHit(b *testing.B) {
	l := mustLimiter(b, LimiterConfig{Source: Limit{Rate: 1e9, Burst: 1 << 30}, MaxSources: benchCap})
	src := benchKeys[1]
	now := t0
	l.Allow(src, now)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(src, now)
	}
}

// BenchmarkLimiterAllowHitSpread: existing keys, 50 000 of them, so the
// lookups miss the CPU cache like real traffic from many sources.
func BenchmarkLimiterAllowHitSpread(b *testing.B) {
	l := mustLimiter(b, LimiterConfig{Source: Limit{Rate: 1e9, Burst: 1 << 30}, MaxSources: benchCap})
	const n = 50_000
	for i := range n {
		l.Allow(benchKeys[i], t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(benchKeys[i], t0)
		i++
		if i == n {
			i = 0
		}
	}
	if st := l.Stats(); st.Evictions != 0 {
		b.Fatalf("evictions during hit benchmark: %+v", st)
	}
}

func BenchmarkLimiterAllowHitParallel(b *testing.B) {
	l := mustLimiter(b, LimiterConfig{Source: Limit{Rate: 1e9, Burst: 1 << 30}, MaxSources: benchCap})
	const n = 50_000
	for i := range n {
		l.Allow(benchKeys[i], t0)
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919)) % n
		for pb.Next() {
			l.Allow(benchKeys[i], t0)
			i++
			if i == n {
				i = 0
			}
		}
	})
}

// BenchmarkLimiterAllowNewKeyEvict: every call is a new source in a full
// table, so every call evicts (a spoofed flood).
func BenchmarkLimiterAllowNewKeyEvict(b *testing.B) {
	l := mustLimiter(b, LimiterConfig{Source: Limit{Rate: 10, Burst: 20}, MaxSources: benchCap})
	for i := range benchCap {
		l.Allow(benchKeys[i], t0)
	}
	b.ReportAllocs()
	i := benchCap
	for b.Loop() {
		l.Allow(benchKeys[i&(len(benchKeys)-1)], t0)
		i++
	}
}

func BenchmarkLimiterAllowTrunk(b *testing.B) {
	l := mustLimiter(b, LimiterConfig{Trunks: map[string]Limit{"carrier-a": {Rate: 1e9, Burst: 1 << 30}, "carrier-b": {Rate: 1, Burst: 1}}})
	b.ReportAllocs()
	for b.Loop() {
		l.AllowTrunk("carrier-a", t0)
	}
}

func BenchmarkTrackerFail(b *testing.B) {
	tr := mustTracker(b, TrackerConfig{Threshold: 1 << 30, DemoteAt: 1 << 30})
	src := benchKeys[1]
	b.ReportAllocs()
	for b.Loop() {
		tr.Fail(src, ReasonMalformed, t0)
	}
}

// BenchmarkTrackerFailNewKeyEvict: one-failure spoofed sources in a full
// table.
func BenchmarkTrackerFailNewKeyEvict(b *testing.B) {
	tr := mustTracker(b, TrackerConfig{MaxSources: benchCap})
	for i := range benchCap {
		tr.Fail(benchKeys[i], ReasonUnknownSource, t0)
	}
	b.ReportAllocs()
	i := benchCap
	for b.Loop() {
		tr.Fail(benchKeys[i&(len(benchKeys)-1)], ReasonUnknownSource, t0)
		i++
	}
}

func BenchmarkTrackerFailNeverBlock(b *testing.B) {
	tr := mustTracker(b, TrackerConfig{NeverBlock: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	src := benchKeys[1]
	b.ReportAllocs()
	for b.Loop() {
		tr.Fail(src, ReasonMalformed, t0)
	}
}

func BenchmarkTrackerBudget(b *testing.B) {
	tr := mustTracker(b, TrackerConfig{})
	src := benchKeys[1]
	tr.Success(src, t0)
	b.ReportAllocs()
	for b.Loop() {
		tr.Budget(src, t0)
	}
}

func BenchmarkConcurrencyAcquireRelease(b *testing.B) {
	c := NewConcurrency(map[string]int{"carrier-a": 1 << 30})
	b.ReportAllocs()
	for b.Loop() {
		r, _ := c.Acquire("carrier-a")
		r()
	}
}

func BenchmarkScannerMatch(b *testing.B) {
	m, _ := NewScannerMatcher(DefaultScannerPatterns)
	for _, ua := range []struct{ name, ua string }{
		{"legit", "Asterisk PBX 20.5.2"},
		{"legit-long", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) JsSIP 3.10.1"},
		{"scanner", "friendly-scanner"},
		{"scanner-late", "Linphone/5.2.0 (belle-sip/5.2.0) sipcli/v1.8"},
	} {
		b.Run(ua.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.Match(ua.ua)
			}
		})
	}
}

// --- Alternatives measured for the design choice (BENCHMARKS.md (ratelimit)) ---

// GCRA step alone vs x/time/rate's AllowN on a stored limiter.
func BenchmarkAltGCRATake(b *testing.B) {
	g, _ := compile(Limit{Rate: 1e9, Burst: 1 << 30})
	tat := int64(0)
	now := t0.UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		tat, _, _ = g.take(tat, now, 1, 1)
	}
}

func BenchmarkAltXRateAllowN(b *testing.B) {
	l := rate.NewLimiter(rate.Limit(1e9), 1<<30)
	b.ReportAllocs()
	for b.Loop() {
		l.AllowN(t0, 1)
	}
}

// golang-lru Cache (one mutex) holding *rate.Limiter: hit and new key.
func BenchmarkAltLRUXRateHit(b *testing.B) {
	c, _ := lru.New[netip.Prefix, *rate.Limiter](benchCap)
	const n = 50_000
	for i := range n {
		c.Add(benchKeys[i], rate.NewLimiter(rate.Limit(1e9), 1<<30))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if l, ok := c.Get(benchKeys[i]); ok {
			l.AllowN(t0, 1)
		}
		i++
		if i == n {
			i = 0
		}
	}
}

func BenchmarkAltLRUXRateNewKeyEvict(b *testing.B) {
	c, _ := lru.New[netip.Prefix, *rate.Limiter](benchCap)
	for i := range benchCap {
		c.Add(benchKeys[i], rate.NewLimiter(10, 20))
	}
	b.ReportAllocs()
	i := benchCap
	for b.Loop() {
		k := benchKeys[i&(len(benchKeys)-1)]
		l, ok := c.Get(k)
		if !ok {
			l = rate.NewLimiter(10, 20)
			c.Add(k, l)
		}
		l.AllowN(t0, 1)
		i++
	}
}

func BenchmarkAlt2QXRateNewKeyEvict(b *testing.B) {
	c, _ := lru.New2Q[netip.Prefix, *rate.Limiter](benchCap)
	for i := range benchCap {
		c.Add(benchKeys[i], rate.NewLimiter(10, 20))
	}
	b.ReportAllocs()
	i := benchCap
	for b.Loop() {
		k := benchKeys[i&(len(benchKeys)-1)]
		l, ok := c.Get(k)
		if !ok {
			l = rate.NewLimiter(10, 20)
			c.Add(k, l)
		}
		l.AllowN(t0, 1)
		i++
	}
}

func BenchmarkAltLRUXRateHitParallel(b *testing.B) {
	c, _ := lru.New[netip.Prefix, *rate.Limiter](benchCap)
	const n = 50_000
	for i := range n {
		c.Add(benchKeys[i], rate.NewLimiter(rate.Limit(1e9), 1<<30))
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919)) % n
		for pb.Next() {
			if l, ok := c.Get(benchKeys[i]); ok {
				l.AllowN(t0, 1)
			}
			i++
			if i == n {
				i = 0
			}
		}
	})
}

// Unbounded baseline: a plain map behind one mutex (what "no cap" costs).
func BenchmarkAltMapMutexHit(b *testing.B) {
	var mu sync.Mutex
	m := make(map[netip.Prefix]int64)
	g, _ := compile(Limit{Rate: 1e9, Burst: 1 << 30})
	const n = 50_000
	for i := range n {
		m[benchKeys[i]] = 0
	}
	now := t0.UnixNano()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		mu.Lock()
		tat := m[benchKeys[i]]
		m[benchKeys[i]], _, _ = g.take(tat, now, 1, 1)
		mu.Unlock()
		i++
		if i == n {
			i = 0
		}
	}
}
