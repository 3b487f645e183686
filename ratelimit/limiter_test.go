package ratelimit

import (
	"math"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustLimiter(t testing.TB, cfg LimiterConfig) *Limiter {
	t.Helper()
	l, err := NewLimiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func at(d time.Duration) time.Time { return t0.Add(d) }

// step is one call in a limiter script.
type step struct {
	at     time.Duration
	n      int
	budget float64
	ok     bool
	wait   time.Duration // checked when !ok
}

func TestLimiterSource(t *testing.T) {
	src := netip.MustParsePrefix("192.0.2.1/32")
	for _, tc := range []struct {
		name  string
		limit Limit
		steps []step
	}{
		{"burst then rate", Limit{Rate: 1, Burst: 3}, []step{
			{0, 1, 1, true, 0},
			{0, 1, 1, true, 0},
			{0, 1, 1, true, 0},
			{0, 1, 1, false, time.Second},
			{500 * time.Millisecond, 1, 1, false, 500 * time.Millisecond},
			{time.Second, 1, 1, true, 0},
			{time.Second, 1, 1, false, time.Second},
			{10 * time.Second, 3, 1, true, 0}, // refilled, capped at burst 3
			{10 * time.Second, 1, 1, false, time.Second},
		}},
		{"all or nothing", Limit{Rate: 10, Burst: 5}, []step{
			{0, 4, 1, true, 0},
			{0, 2, 1, false, 100 * time.Millisecond},
			{0, 1, 1, true, 0},
			{0, 6, 1, false, Never}, // more than the burst: never
			{0, 0, 1, true, 0},
			{0, -3, 1, true, 0},
		}},
		{"budget scales rate and burst", Limit{Rate: 2, Burst: 2}, []step{
			{0, 4, 2, true, 0}, // budget 2: burst 4
			{0, 1, 2, false, 250 * time.Millisecond},
			{250 * time.Millisecond, 1, 2, true, 0},
			{250 * time.Millisecond, 1, 1, false, 500 * time.Millisecond}, // same debt at budget 1
			{10 * time.Second, 1, 0.5, true, 0},                           // budget ½: burst 1, 1 per second
			{10 * time.Second, 1, 0.5, false, time.Second},
			{20 * time.Second, 2, 0.5, false, Never},
			{20 * time.Second, 2, math.NaN(), true, 0}, // bad budget counts as 1
			{30 * time.Second, 2, -1, true, 0},
			{30 * time.Second, 1, math.Inf(1), false, 500 * time.Millisecond},
		}},
		// A budget that scales the burst below one event slows the source
		// to rate × budget; it never shuts it out (the REGISTER of a
		// demoted source used to get Never: Retry-After 3600).
		{"budget below one event", Limit{Rate: 2, Burst: 2}, []step{
			{0, 1, 0.25, true, 0}, // burst 2 × 0.25 = ½: one event still fits
			{0, 1, 0.25, false, 2 * time.Second},
			{time.Second, 1, 0.25, false, time.Second},
			{2 * time.Second, 1, 0.25, true, 0}, // 0.5/s
			{2 * time.Second, 2, 0.25, false, Never},
			{10 * time.Second, 1, 1, true, 0}, // full again at budget 1
			{10 * time.Second, 1, 1, true, 0},
			{10 * time.Second, 1, 1, false, 500 * time.Millisecond},
		}},
		// A clock stepping back neither refunds tokens nor leaves the
		// bucket stuck until the clock catches up: it stays empty for
		// one fill time.
		{"clock going back", Limit{Rate: 1, Burst: 2}, []step{
			{10 * time.Second, 2, 1, true, 0},
			{5 * time.Second, 1, 1, false, time.Second},
			{6 * time.Second, 1, 1, true, 0},
			{6 * time.Second, 1, 1, false, time.Second},
		}},
		{"zero limit is unlimited", Limit{}, []step{
			{0, 1000, 1, true, 0},
			{0, 1000, 1, true, 0},
		}},
		{"burst 0 counts as 1", Limit{Rate: 1}, []step{
			{0, 1, 1, true, 0},
			{0, 1, 1, false, time.Second},
		}},
		{"high rate", Limit{Rate: 1e6, Burst: 1000}, []step{
			{0, 1000, 1, true, 0},
			{0, 1, 1, false, time.Microsecond},
			{time.Millisecond, 1000, 1, true, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustLimiter(t, LimiterConfig{Source: tc.limit})
			for i, s := range tc.steps {
				ok, wait := l.Check(src, at(s.at), s.n, s.budget)
				if ok != s.ok {
					t.Fatalf("step %d (%+v): ok = %v", i, s, ok)
				}
				if !ok && wait != s.wait {
					t.Fatalf("step %d (%+v): wait = %v, want %v", i, s, wait, s.wait)
				}
				if ok && wait != 0 {
					t.Fatalf("step %d: allowed with wait %v", i, wait)
				}
			}
		})
	}
}

func TestLimiterAllowWrappers(t *testing.T) {
	l := mustLimiter(t, LimiterConfig{Source: Limit{Rate: 1, Burst: 2}, Trunks: map[string]Limit{"a": {Rate: 1, Burst: 2}}})
	src := netip.MustParsePrefix("2001:db8::/64")
	if a, b, c := l.Allow(src, t0), l.Allow(src, t0), l.Allow(src, t0); !a || !b || c {
		t.Fatalf("Allow: got %v, %v, %v; want true, true, false", a, b, c)
	}
	if l.AllowN(src, at(time.Second), 2) || !l.AllowN(src, at(2*time.Second), 2) {
		t.Fatal("AllowN: want false then true")
	}
	if !l.AllowTrunk("a", t0) || !l.AllowTrunkN("a", t0, 1) || l.AllowTrunk("a", t0) {
		t.Fatal("AllowTrunk: want true, true, false")
	}
	// Other sources are independent, and so are the tables.
	if !l.AllowN(netip.MustParsePrefix("2001:db8:0:1::/64"), t0, 2) {
		t.Fatal("second source limited by the first")
	}
	// An invalid key is always allowed and never stored.
	for range 10 {
		if !l.Allow(netip.Prefix{}, t0) {
			t.Fatal("invalid prefix denied")
		}
	}
	if n := l.Stats().Len; n != 2 {
		t.Fatalf("table holds %d keys, want 2", n)
	}
}

func TestLimiterTrunks(t *testing.T) {
	l := mustLimiter(t, LimiterConfig{Trunks: map[string]Limit{
		"carrier-a": {Rate: 10, Burst: 2},
		"carrier-b": {Rate: 1, Burst: 1},
		"open":      {},
	}})
	for i, s := range []struct {
		trunk string
		at    time.Duration
		n     int
		ok    bool
		wait  time.Duration
	}{
		{"carrier-a", 0, 2, true, 0},
		{"carrier-a", 0, 1, false, 100 * time.Millisecond},
		{"carrier-b", 0, 1, true, 0},
		{"carrier-b", 0, 1, false, time.Second},
		{"carrier-a", 100 * time.Millisecond, 1, true, 0},
		{"carrier-a", 100 * time.Millisecond, 3, false, Never},
		{"open", 0, 1 << 30, true, 0},
		{"unknown", 0, 1 << 30, true, 0},
		{"carrier-b", 0, 0, true, 0},
	} {
		ok, wait := l.CheckTrunk(s.trunk, at(s.at), s.n)
		if ok != s.ok || (!ok && wait != s.wait) {
			t.Fatalf("step %d %+v: ok=%v wait=%v", i, s, ok, wait)
		}
	}
}

func TestLimiterUpdateKeepsState(t *testing.T) {
	src := netip.MustParsePrefix("198.51.100.9/32")
	cfg := LimiterConfig{
		Source: Limit{Rate: 1, Burst: 5},
		Trunks: map[string]Limit{"a": {Rate: 1, Burst: 5}, "b": {Rate: 1, Burst: 1}},
	}
	l := mustLimiter(t, cfg)
	if !l.AllowN(src, t0, 5) || !l.AllowTrunkN("a", t0, 5) || !l.AllowTrunk("b", t0) {
		t.Fatal("initial burst denied")
	}
	// Reload with a higher rate; "b" removed, "c" added.
	cfg.Source = Limit{Rate: 2, Burst: 5}
	cfg.Trunks = map[string]Limit{"a": {Rate: 2, Burst: 5}, "c": {Rate: 1, Burst: 1}}
	if err := l.Update(cfg); err != nil {
		t.Fatal(err)
	}
	// The spent buckets stay spent: the 5 s of debt is repaid at 2/s from
	// now on: after 0.5 s, one event.
	if l.Allow(src, t0) || l.AllowTrunk("a", t0) {
		t.Fatal("reload refilled a spent bucket")
	}
	ok, wait := l.Check(src, t0, 1, 1)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("after reload: ok=%v wait=%v, want wait 500ms", ok, wait)
	}
	if !l.Allow(src, at(500*time.Millisecond)) || !l.AllowTrunk("a", at(500*time.Millisecond)) {
		t.Fatal("new rate not applied")
	}
	if !l.AllowTrunkN("b", t0, 100) {
		t.Fatal("removed trunk still limited")
	}
	if !l.AllowTrunk("c", t0) || l.AllowTrunk("c", t0) {
		t.Fatal("added trunk not limited")
	}
	// A bad config changes nothing.
	bad := cfg
	bad.Source = Limit{Rate: math.NaN()}
	if err := l.Update(bad); err == nil {
		t.Fatal("NaN rate accepted")
	}
	if l.Allow(src, at(500*time.Millisecond)) {
		t.Fatal("failed update changed the limit")
	}
	// Resize.
	cfg.MaxSources = 1000
	if err := l.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Capacity != 1000 || st.Len != 1 {
		t.Fatalf("after resize: %+v", st)
	}
	if l.Allow(src, at(500*time.Millisecond)) {
		t.Fatal("resize lost the source's state")
	}
}

// TestLimiterPrepareApply: Prepare reports every error and changes
// nothing; the limits change at Apply.
func TestLimiterPrepareApply(t *testing.T) {
	src := netip.MustParsePrefix("198.51.100.9/32")
	l := mustLimiter(t, LimiterConfig{Source: Limit{Rate: 1, Burst: 1}})
	if _, err := l.Prepare(LimiterConfig{Source: Limit{Rate: math.NaN()}}); err == nil {
		t.Fatal("Prepare accepted a NaN rate")
	}
	if _, err := l.Prepare(LimiterConfig{MaxSources: -1}); err == nil {
		t.Fatal("Prepare accepted a negative MaxSources")
	}
	u, err := l.Prepare(LimiterConfig{Source: Limit{Rate: 1, Burst: 3}, Trunks: map[string]Limit{"a": {Rate: 1, Burst: 1}}, MaxSources: 50})
	if err != nil {
		t.Fatal(err)
	}
	if l.AllowN(src, t0, 2) || !l.AllowTrunkN("a", t0, 2) || l.Stats().Capacity == 50 {
		t.Fatal("Prepare changed the limits")
	}
	u.Apply()
	if !l.AllowN(src, at(10*time.Second), 3) || l.AllowTrunkN("a", t0, 2) || l.Stats().Capacity != 50 {
		t.Fatal("Apply did not install the prepared limits")
	}
}

// TestLimiterUpdateLowerRate: lowering the rate must not hand an empty
// bucket tokens back, and a half-spent bucket keeps its missing tokens.
func TestLimiterUpdateLowerRate(t *testing.T) {
	empty, half := v4(1), v4(2)
	cfg := LimiterConfig{Source: Limit{Rate: 1, Burst: 4}, Trunks: map[string]Limit{"a": {Rate: 1, Burst: 4}}}
	l := mustLimiter(t, cfg)
	l.AllowN(empty, t0, 4)
	l.AllowN(half, t0, 2)
	l.AllowTrunkN("a", t0, 4)
	cfg.Source = Limit{Rate: 0.5, Burst: 4}
	cfg.Trunks = map[string]Limit{"a": {Rate: 0.5, Burst: 4}}
	if err := l.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if ok, wait := l.Check(empty, t0, 1, 1); ok || wait != 2*time.Second {
		t.Fatalf("empty bucket after lowering the rate: ok=%v wait=%v, want wait 2s", ok, wait)
	}
	if ok, wait := l.CheckTrunk("a", t0, 1); ok || wait != 2*time.Second {
		t.Fatalf("empty trunk bucket after lowering the rate: ok=%v wait=%v, want wait 2s", ok, wait)
	}
	if !l.AllowN(half, t0, 2) || l.Allow(half, t0) {
		t.Fatal("half-spent bucket did not keep its 2 tokens")
	}
	// Lowering the burst clamps: still empty, refills to the new burst.
	cfg.Source = Limit{Rate: 0.5, Burst: 1}
	if err := l.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if ok, wait := l.Check(empty, t0, 1, 1); ok || wait != 2*time.Second {
		t.Fatalf("after lowering the burst: ok=%v wait=%v, want wait 2s", ok, wait)
	}
}

func TestLimiterConfigErrors(t *testing.T) {
	for _, cfg := range []LimiterConfig{
		{Source: Limit{Rate: math.NaN()}},
		{Source: Limit{Rate: 1, Burst: -1}},
		{Source: Limit{Rate: 2e9, Burst: 1}},
		{Source: Limit{Rate: 1e-9, Burst: 1 << 30}},
		{Trunks: map[string]Limit{"x": {Rate: 1, Burst: -2}}},
		{PromoteAge: -time.Second},
		{MaxSources: -1},
		{PressureBurst: -1},
	} {
		if _, err := NewLimiter(cfg); err == nil {
			t.Errorf("NewLimiter(%+v) accepted", cfg)
		}
	}
}

func TestLimiterPressureBurst(t *testing.T) {
	// One shard of 64 slots, burst 10 at 1/s.
	cfg := LimiterConfig{Source: Limit{Rate: 1, Burst: 10}, MaxSources: 64, Shards: 1}
	l := mustLimiter(t, cfg)
	// Fill the table with sources that spent their burst.
	for i := range 64 {
		if !l.AllowN(v4(i), t0, 10) {
			t.Fatal("fill denied")
		}
	}
	// A newcomer evicts a source whose bucket is not full: it gets 1 token.
	nc := v4(1000)
	if !l.Allow(nc, t0) {
		t.Fatal("newcomer under pressure denied its first event")
	}
	if l.Allow(nc, t0) {
		t.Fatal("newcomer under pressure got more than PressureBurst")
	}
	if st := l.Stats(); st.Pressured != 1 || st.Evictions != 1 {
		t.Fatalf("stats %+v, want 1 pressured eviction", st)
	}
	// Ten seconds later every old bucket is full again: evicting one loses
	// nothing and the next newcomer gets its full burst.
	nc2 := v4(2000)
	if !l.AllowN(nc2, at(10*time.Second), 10) {
		t.Fatal("newcomer in calm times did not get its burst")
	}
	if st := l.Stats(); st.Pressured != 1 || st.Evictions != 2 {
		t.Fatalf("stats %+v, want 2 evictions, 1 pressured", st)
	}
	// A configured PressureBurst.
	cfg.PressureBurst = 3
	l2 := mustLimiter(t, cfg)
	for i := range 64 {
		l2.AllowN(v4(i), t0, 10)
	}
	if !l2.AllowN(nc, t0, 3) || l2.Allow(nc, t0) {
		t.Fatal("PressureBurst 3 not honoured")
	}
}

// TestLimiterFlood: 1e6 spoofed sources, each sending twice, against a
// table of 10 000. The table stays bounded, established sources keep their
// (spent) state, trunk buckets are untouched, and each spoofed source gets
// at most one event through once the table is under pressure.
func TestLimiterFlood(t *testing.T) {
	const capacity, flood = 10_000, 1_000_000
	l := mustLimiter(t, LimiterConfig{
		Source:     Limit{Rate: 1, Burst: 20},
		Trunks:     map[string]Limit{"carrier": {Rate: 1, Burst: 20}},
		MaxSources: capacity,
	})
	established := []netip.Prefix{
		netip.MustParsePrefix("203.0.113.1/32"),
		netip.MustParsePrefix("2001:db8:aa::/64"),
	}
	for _, src := range established {
		if !l.AllowN(src, t0, 10) { // spend half the burst
			t.Fatal("established source denied")
		}
		if !l.Allow(src, at(2*time.Second)) { // seen again later: established
			t.Fatal("established source denied")
		}
	}
	if !l.AllowTrunkN("carrier", t0, 20) {
		t.Fatal("trunk denied")
	}

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	passed := 0
	for i := range flood {
		now := at(3*time.Second + time.Duration(i)*time.Microsecond) // 1M pps for 1 s
		src := v4(100 + i)
		for range 2 {
			if l.Allow(src, now) {
				passed++
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)

	st := l.Stats()
	if st.Len > capacity {
		t.Fatalf("table grew to %d keys (cap %d)", st.Len, capacity)
	}
	// While filling, newcomers get a full burst (2 events each); after
	// that every eviction drops a spent bucket and newcomers get one.
	if max := 2*capacity + (flood - capacity); passed > max {
		t.Fatalf("%d flood events passed, want at most %d", passed, max)
	}
	if st.Pressured < flood-capacity {
		t.Fatalf("pressured evictions %d, want ≥ %d", st.Pressured, flood-capacity)
	}
	if grew := int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc); grew > 16<<20 {
		t.Fatalf("heap grew by %d bytes during the flood", grew)
	}
	t.Logf("flood: %d events of %d passed; %+v; heap %+d KiB", passed, 2*flood, st, (int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))>>10)

	// Established sources kept their state: 11 spent by t=2s, 4 s of
	// refill by t=4s: 13 tokens, where a fresh bucket would have 20.
	for _, src := range established {
		if !l.AllowN(src, at(4*time.Second), 13) || l.Allow(src, at(4*time.Second)) {
			t.Fatalf("established source %v lost its bucket in the flood", src)
		}
	}
	// The trunk bucket is exactly as spent as before (refill only).
	if !l.AllowTrunkN("carrier", at(4*time.Second), 4) || l.AllowTrunk("carrier", at(4*time.Second)) {
		t.Fatal("trunk bucket changed by the flood")
	}
}

func TestLimiterProtect(t *testing.T) {
	l := mustLimiter(t, LimiterConfig{Source: Limit{Rate: 1, Burst: 5}, MaxSources: 64, Shards: 1})
	pbx := netip.MustParsePrefix("192.0.2.200/32")
	if l.Protect(pbx) {
		t.Fatal("Protect of an unknown source reported true")
	}
	l.AllowN(pbx, t0, 5)
	if !l.Protect(pbx) {
		t.Fatal("Protect of a known source reported false")
	}
	for i := range 10_000 { // no time passes: nothing else is promoted
		l.Allow(v4(i), t0)
	}
	if l.Allow(pbx, t0) {
		t.Fatal("protected source evicted: its spent bucket was reset")
	}
	if l.Protect(netip.Prefix{}) {
		t.Fatal("Protect of an invalid prefix reported true")
	}
}

// TestLimiterConcurrent: many goroutines on one source and one trunk at a
// fixed time must together get exactly the burst, and hammering distinct
// keys must keep the table consistent. Run with -race.
func TestLimiterConcurrent(t *testing.T) {
	const workers, perWorker, burst = 8, 2000, 1000
	l := mustLimiter(t, LimiterConfig{
		Source:     Limit{Rate: 1, Burst: burst},
		Trunks:     map[string]Limit{"t": {Rate: 1, Burst: burst}},
		MaxSources: 512,
	})
	hot := netip.MustParsePrefix("192.0.2.1/32")
	var srcOK, trunkOK atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if l.Allow(hot, t0) {
					srcOK.Add(1)
				}
				if l.AllowTrunk("t", t0) {
					trunkOK.Add(1)
				}
				l.Allow(v4(1000+w*perWorker+i), t0)
				if i%500 == 0 && w == 0 {
					_ = l.Update(LimiterConfig{
						Source:     Limit{Rate: 1, Burst: burst},
						Trunks:     map[string]Limit{"t": {Rate: 1, Burst: burst}},
						MaxSources: 512 + i,
					})
				}
			}
		}()
	}
	wg.Wait()
	if srcOK.Load() != burst || trunkOK.Load() != burst {
		t.Fatalf("allowed source %d, trunk %d; want %d each", srcOK.Load(), trunkOK.Load(), burst)
	}
	for i := range l.tab.shards {
		checkShard(t, &l.tab.shards[i])
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want int
	}{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{90 * time.Second, 90},
		{2 * time.Hour, 3600},
		{Never, 3600},
	} {
		if got := RetryAfterSeconds(tc.in); got != tc.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestLimitString(t *testing.T) {
	if s := (Limit{}).String(); s != "unlimited" {
		t.Error(s)
	}
	if s := (Limit{Rate: 2.5, Burst: 0}).String(); s != "2.5/s burst 1" {
		t.Error(s)
	}
}

func TestLimiterHitDoesNotAllocate(t *testing.T) {
	l := mustLimiter(t, LimiterConfig{Source: Limit{Rate: 1e6, Burst: 1e6}, Trunks: map[string]Limit{"a": {Rate: 1e6, Burst: 1e6}}, MaxSources: 100})
	src := v4(1)
	l.Allow(src, t0)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(src, t0) }); n != 0 {
		t.Errorf("Allow (hit) allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { l.AllowTrunk("a", t0) }); n != 0 {
		t.Errorf("AllowTrunk allocates %v times", n)
	}
	for i := range 200 { // fill: later inserts evict
		l.Allow(v4(i), t0)
	}
	// AllocsPerRun rounds down; count mallocs over many evictions instead.
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range 200_000 {
		l.Allow(v4(1000+i), t0)
	}
	runtime.ReadMemStats(&m1)
	if n := m1.Mallocs - m0.Mallocs; n > 20 {
		t.Errorf("200 000 evicting inserts made %d allocations", n)
	}
}

// TestMemoryPerSource measures the heap a full table costs per source and
// checks it against the figure documented in the configs.
func TestMemoryPerSource(t *testing.T) {
	const n = 100_000
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	h0 := heap()
	l := mustLimiter(t, LimiterConfig{Source: Limit{Rate: 1, Burst: 1}, MaxSources: n})
	for i := range n {
		l.Allow(v4(i), t0)
	}
	h1 := heap()
	tr := mustTracker(t, TrackerConfig{MaxSources: n})
	for i := range n {
		tr.Fail(v4(i), ReasonMalformed, t0)
	}
	h2 := heap()
	lb, tb := float64(h1-h0)/n, float64(h2-h1)/n
	t.Logf("heap per source: limiter %.0f B, tracker %.0f B", lb, tb)
	if lb > 150 || tb > 200 {
		t.Errorf("heap per source: limiter %.0f B (doc: about 100), tracker %.0f B (doc: about 170)", lb, tb)
	}
	runtime.KeepAlive(l)
	runtime.KeepAlive(tr)
}
