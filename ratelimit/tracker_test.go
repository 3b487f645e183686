package ratelimit

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustTracker(t testing.TB, cfg TrackerConfig) *Tracker {
	t.Helper()
	tr, err := NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

var attacker = netip.MustParsePrefix("198.51.100.66/32")

// failN records n failures from src, one per second starting at start,
// and returns the last decision.
func failN(tr *Tracker, src netip.Prefix, n int, start time.Duration) Decision {
	var d Decision
	for i := range n {
		d = tr.Fail(src, ReasonAuthFailure, at(start+time.Duration(i)*time.Second))
	}
	return d
}

func TestTrackerDefaults(t *testing.T) {
	c := DefaultTrackerConfig()
	if c.Threshold != 10 || c.Window != time.Minute || c.BlockFor != 10*time.Minute ||
		c.Escalate != 4 || c.MaxBlock != 24*time.Hour || c.Decay != 24*time.Hour ||
		c.DemoteAt != 5 || c.TrustAfter != 3 || c.MaxSources != 100_000 ||
		c.BudgetTrusted != 4 || c.BudgetUnknown != 1 || c.BudgetDemoted != 0.25 {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTrackerThreshold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n         int
		spacing   time.Duration
		wantBlock bool
	}{
		{"10 in 10s: no block", 10, time.Second, false},
		{"11 in 11s: block", 11, time.Second, true},
		{"11 in 55s: block", 11, 5500 * time.Millisecond, true},
		{"11 spread over 2 minutes: no block", 11, 12 * time.Second, false},
		{"100 spread over 100 minutes: no block", 100, time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := mustTracker(t, TrackerConfig{})
			var d Decision
			blocks := 0
			for i := range tc.n {
				d = tr.Fail(attacker, ReasonMalformed, at(time.Duration(i)*tc.spacing))
				if d.Block {
					blocks++
				}
			}
			if (blocks > 0) != tc.wantBlock || blocks > 1 {
				t.Fatalf("blocks = %d, last decision %+v", blocks, d)
			}
			if tc.wantBlock {
				if d.Duration != 10*time.Minute || d.Level != 1 || d.Prefix != attacker ||
					d.Reason != ReasonMalformed || d.Failures != 11 || d.WouldBlock ||
					!d.Until.Equal(at(time.Duration(tc.n-1)*tc.spacing+10*time.Minute)) {
					t.Fatalf("block decision %+v", d)
				}
			}
		})
	}
}

func TestTrackerWindowSlides(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	// 10 failures at t=0: window full but not over.
	for range 10 {
		if d := tr.Fail(attacker, ReasonAuthFailure, t0); d.Block {
			t.Fatal("blocked at 10")
		}
	}
	// 61 s later they have left the window: 10 more do not block.
	for range 10 {
		if d := tr.Fail(attacker, ReasonAuthFailure, at(61*time.Second)); d.Block {
			t.Fatalf("blocked with expired failures: %+v", d)
		}
	}
	// 56 s after the first batch (inside 15/16 of the window) the old ones
	// still count.
	tr2 := mustTracker(t, TrackerConfig{})
	for range 10 {
		tr2.Fail(attacker, ReasonAuthFailure, t0)
	}
	if d := tr2.Fail(attacker, ReasonAuthFailure, at(56*time.Second)); !d.Block {
		t.Fatalf("not blocked with 11 failures in 56 s: %+v", d)
	}
}

func TestTrackerEscalationAndDecay(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	want := []time.Duration{10 * time.Minute, 40 * time.Minute, 160 * time.Minute, 640 * time.Minute, 24 * time.Hour, 24 * time.Hour}
	start := time.Duration(0)
	for lvl, dur := range want {
		d := failN(tr, attacker, 11, start)
		if !d.Block || d.Level != lvl+1 || d.Duration != dur {
			t.Fatalf("offence %d: %+v, want level %d for %v", lvl+1, d, lvl+1, dur)
		}
		// During the block failures are not counted.
		d2 := tr.Fail(attacker, ReasonAuthFailure, at(start+11*time.Second))
		if !d2.AlreadyBlocked || d2.Block || !d2.Until.Equal(d.Until) || d2.Trust != TrustDemoted {
			t.Fatalf("failure during block: %+v", d2)
		}
		start += 11*time.Second + dur // right after the block ends
	}
	// Decay: 24 h after the end of the last block the level is forgotten.
	st, ok := tr.State(attacker, at(start))
	if !ok || st.Level != 6 {
		t.Fatalf("state %+v", st)
	}
	d := failN(tr, attacker, 11, start+24*time.Hour)
	if !d.Block || d.Level != 1 || d.Duration != 10*time.Minute {
		t.Fatalf("after decay: %+v, want a first-level block", d)
	}
	// A repeat just before the decay period escalates.
	tr2 := mustTracker(t, TrackerConfig{})
	failN(tr2, attacker, 11, 0)
	d = failN(tr2, attacker, 11, 10*time.Second+10*time.Minute+24*time.Hour-20*time.Second)
	if d.Level != 2 {
		t.Fatalf("repeat before decay: %+v", d)
	}
}

func TestTrackerNeverBlock(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{NeverBlock: []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8::10/128"),
	}})
	for _, src := range []netip.Prefix{
		netip.MustParsePrefix("192.0.2.9/32"),
		netip.MustParsePrefix("2001:db8::/64"), // contains a never-block host
	} {
		for i := range 50 {
			d := tr.Fail(src, ReasonAuthFailure, at(time.Duration(i)*time.Millisecond))
			if d.Block || d.WouldBlock || d.Demoted || d.Exempt != ExemptNeverBlock || d.Prefix != src {
				t.Fatalf("%v: %+v", src, d)
			}
		}
		if _, ok := tr.State(src, t0); ok {
			t.Fatalf("%v: never-block source recorded", src)
		}
		if tr.Budget(src, t0) != 1 || !tr.NeverBlocked(src) {
			t.Fatalf("%v: budget %v", src, tr.Budget(src, t0))
		}
	}
	if tr.NeverBlocked(attacker) || tr.NeverBlocked(netip.Prefix{}) {
		t.Fatal("NeverBlocked too broad")
	}
	if d := failN(tr, attacker, 11, 0); !d.Block {
		t.Fatal("others not blocked")
	}
}

// Convict blocks at once, with the escalation of Fail's blocks; a
// NeverBlock source is exempt and nothing is recorded.
func TestTrackerConvict(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{NeverBlock: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}})
	d := tr.Convict(attacker, ReasonRegisterBruteforce, t0)
	if !d.Block || d.Level != 1 || d.Duration != 10*time.Minute || d.Reason != ReasonRegisterBruteforce {
		t.Fatalf("first conviction: %+v", d)
	}
	if d := tr.Convict(attacker, ReasonRegisterBruteforce, at(time.Minute)); !d.AlreadyBlocked || d.Block {
		t.Fatalf("inside the block: %+v", d)
	}
	// A conviction after the block escalates like a second block.
	if d := tr.Convict(attacker, ReasonRegisterBruteforce, at(11*time.Minute)); !d.Block || d.Level != 2 || d.Duration != 40*time.Minute {
		t.Fatalf("second conviction: %+v", d)
	}
	// And the failure window's blocks share the level.
	if d := failN(tr, attacker, 11, 52*time.Minute); !d.Block || d.Level != 3 {
		t.Fatalf("block after convictions: %+v", d)
	}
	carrier := netip.MustParsePrefix("203.0.113.5/32")
	if d := tr.Convict(carrier, ReasonRegisterBruteforce, t0); d.Block || d.Exempt != ExemptNeverBlock {
		t.Fatalf("never-block source: %+v", d)
	}
	if _, ok := tr.State(carrier, t0); ok {
		t.Fatal("never-block source recorded")
	}
	obs := mustTracker(t, TrackerConfig{Observe: true})
	if d := obs.Convict(attacker, ReasonRegisterBruteforce, t0); d.Block || !d.WouldBlock {
		t.Fatalf("observe: %+v", d)
	}
}

func TestTrackerObserve(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{Observe: true})
	d := failN(tr, attacker, 11, 0)
	if d.Block || !d.WouldBlock || d.Duration != 10*time.Minute || d.Level != 1 {
		t.Fatalf("observe: %+v", d)
	}
	// Observe mode changes nothing but the log: the source is not
	// demoted, during the would-be block or with failures in the window.
	if tr.Trust(attacker, at(11*time.Second)) != TrustUnknown || tr.Budget(attacker, at(11*time.Second)) != 1 {
		t.Fatalf("observe mode demoted: trust %v", tr.Trust(attacker, at(11*time.Second)))
	}
	// Logged once: the would-be block period suppresses repeats.
	if d := tr.Fail(attacker, ReasonAuthFailure, at(20*time.Second)); !d.AlreadyBlocked || d.WouldBlock {
		t.Fatalf("observe repeat: %+v", d)
	}
	// Escalation is tracked as if blocked.
	d = failN(tr, attacker, 11, 11*time.Second+10*time.Minute)
	if !d.WouldBlock || d.Level != 2 || d.Duration != 40*time.Minute {
		t.Fatalf("observe escalation: %+v", d)
	}
	// Switching observe off on reload keeps the state: next block level 3.
	if err := tr.Update(TrackerConfig{}); err != nil {
		t.Fatal(err)
	}
	d = failN(tr, attacker, 11, 22*time.Second+50*time.Minute)
	if !d.Block || d.Level != 3 {
		t.Fatalf("after observe off: %+v", d)
	}
}

func TestTrackerTrust(t *testing.T) {
	pbx := netip.MustParsePrefix("192.0.2.50/32")
	tr := mustTracker(t, TrackerConfig{})
	if tr.Trust(pbx, t0) != TrustUnknown || tr.Budget(pbx, t0) != 1 {
		t.Fatal("unknown source not TrustUnknown")
	}
	for i, want := range []Trust{TrustUnknown, TrustUnknown, TrustTrusted, TrustTrusted} {
		if got := tr.Success(pbx, at(time.Duration(i)*time.Minute)); got != want {
			t.Fatalf("success %d: trust %v, want %v", i+1, got, want)
		}
	}
	if b := tr.Budget(pbx, at(5*time.Minute)); b != 4 {
		t.Fatalf("trusted budget %v", b)
	}
	// A few failures keep it trusted; the 5th in the window demotes.
	base := 10 * time.Minute
	for i := range 5 {
		d := tr.Fail(pbx, ReasonBackend403, at(base+time.Duration(i)*time.Second))
		if i < 4 && (d.Trust != TrustTrusted || d.Demoted) {
			t.Fatalf("failure %d: %+v", i+1, d)
		}
		if i == 4 && (d.Trust != TrustDemoted || !d.Demoted || d.Block) {
			t.Fatalf("failure 5: %+v", d)
		}
	}
	if b := tr.Budget(pbx, at(base+5*time.Second)); b != 0.25 {
		t.Fatalf("demoted budget %v", b)
	}
	// When the failures leave the window, the earlier trust returns.
	if got := tr.Trust(pbx, at(base+2*time.Minute)); got != TrustTrusted {
		t.Fatalf("after the window: %v", got)
	}
	// Trust is forgotten TrustFor after the last success.
	if got := tr.Trust(pbx, at(3*time.Minute+24*time.Hour)); got != TrustUnknown {
		t.Fatalf("after TrustFor: %v", got)
	}
	// A block wipes earned trust.
	tr.Success(attacker, t0)
	tr.Success(attacker, t0)
	tr.Success(attacker, t0)
	failN(tr, attacker, 11, time.Second)
	st, _ := tr.State(attacker, at(11*time.Second+10*time.Minute))
	if st.Successes != 0 || st.Trust != TrustUnknown || st.Level != 1 {
		t.Fatalf("after block: %+v", st)
	}
}

// TestTrackerUpdateWindow: failures carry over a Window change and expire
// one new Window later, whether the window grows or shrinks.
func TestTrackerUpdateWindow(t *testing.T) {
	for _, w := range []time.Duration{10 * time.Minute, 10 * time.Second} {
		tr := mustTracker(t, TrackerConfig{})
		for range 10 {
			tr.Fail(attacker, ReasonAuthFailure, t0)
		}
		if err := tr.Update(TrackerConfig{Window: w}); err != nil {
			t.Fatal(err)
		}
		if st, _ := tr.State(attacker, at(time.Second)); st.Failures != 10 {
			t.Fatalf("window %v: %d failures carried over, want 10", w, st.Failures)
		}
		if st, _ := tr.State(attacker, at(time.Second+w)); st.Failures != 0 {
			t.Fatalf("window %v: %d failures one window later, want 0", w, st.Failures)
		}
		tr2 := mustTracker(t, TrackerConfig{})
		for range 10 {
			tr2.Fail(attacker, ReasonAuthFailure, t0)
		}
		_ = tr2.Update(TrackerConfig{Window: w})
		if d := tr2.Fail(attacker, ReasonAuthFailure, at(time.Second)); !d.Block {
			t.Fatalf("window %v: 11th failure after reload did not block: %+v", w, d)
		}
	}
}

func TestTrackerWeights(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{Weights: map[string]int{ReasonScannerUA: 11, "ignored": 0}})
	if d := tr.Fail(attacker, ReasonScannerUA, t0); !d.Block || d.Failures != 11 {
		t.Fatalf("weighted reason: %+v", d)
	}
	other := netip.MustParsePrefix("198.51.100.67/32")
	for range 100 {
		if d := tr.Fail(other, "ignored", t0); d.Block || d.Failures != 0 {
			t.Fatalf("zero-weight reason: %+v", d)
		}
	}
}

func TestTrackerInvalidAndForget(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	if d := tr.Fail(netip.Prefix{}, "x", t0); d != (Decision{Reason: "x"}) {
		t.Fatalf("invalid prefix: %+v", d)
	}
	if tr.Success(netip.Prefix{}, t0) != TrustUnknown || tr.Trust(netip.Prefix{}, t0) != TrustUnknown || tr.Forget(netip.Prefix{}) {
		t.Fatal("invalid prefix handled")
	}
	if _, ok := tr.State(netip.Prefix{}, t0); ok {
		t.Fatal("State of invalid prefix")
	}
	if tr.Stats().Len != 0 {
		t.Fatal("invalid prefix stored")
	}
	failN(tr, attacker, 11, 0)
	if !tr.Forget(attacker) || tr.Forget(attacker) {
		t.Fatal("Forget should succeed once")
	}
	if d := failN(tr, attacker, 11, 20*time.Second); !d.Block || d.Level != 1 {
		t.Fatalf("after Forget: %+v", d)
	}
	// Unmasked prefixes are masked: one /64 is one source.
	a := netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 64)
	b := netip.PrefixFrom(netip.MustParseAddr("2001:db8::2"), 64)
	tr.Fail(a, "x", t0)
	if d := tr.Fail(b, "x", t0); d.Failures != 2 || d.Prefix.String() != "2001:db8::/64" {
		t.Fatalf("unmasked: %+v", d)
	}
}

func TestTrackerClockBack(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	failN(tr, attacker, 5, time.Hour)
	// Failures stamped earlier land in the newest slot and still count.
	d := failN(tr, attacker, 6, 0)
	if !d.Block || d.Failures != 11 {
		t.Fatalf("clock back: %+v", d)
	}
}

func TestTrackerConfigErrors(t *testing.T) {
	for _, cfg := range []TrackerConfig{
		{Threshold: -1},
		{Window: -time.Second},
		{Window: 10},
		{BlockFor: -1},
		{Escalate: 0.5},
		{MaxBlock: time.Minute},
		{DemoteAt: -1},
		{TrustAfter: -1},
		{TrustFor: -1},
		{Decay: -1},
		{BudgetDemoted: -1},
		{MaxSources: -1},
		{PromoteAge: -1},
		{Weights: map[string]int{"x": -1}},
		{Weights: map[string]int{"x": 70000}},
		{NeverBlock: []netip.Prefix{{}}},
	} {
		if _, err := NewTracker(cfg); err == nil {
			t.Errorf("NewTracker(%+v) accepted", cfg)
		}
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", cfg)
		}
	}
	tr := mustTracker(t, TrackerConfig{})
	if err := tr.Update(TrackerConfig{Escalate: 0.5}); err == nil {
		t.Fatal("bad Update accepted")
	}
	if tr.Config().Escalate != 4 {
		t.Fatal("failed Update changed the config")
	}
}

// TestTrackerPrepareApply: Prepare reports every error and changes
// nothing; the configuration changes at Apply.
func TestTrackerPrepareApply(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	if _, err := tr.Prepare(TrackerConfig{Threshold: -1}); err == nil {
		t.Fatal("Prepare accepted a negative Threshold")
	}
	u, err := tr.Prepare(TrackerConfig{Threshold: 3, MaxSources: 64})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Config().Threshold != 10 || tr.Stats().Capacity == 64 {
		t.Fatal("Prepare changed the config")
	}
	u.Apply()
	if tr.Config().Threshold != 3 || tr.Stats().Capacity != 64 {
		t.Fatalf("Apply: %+v %+v", tr.Config(), tr.Stats())
	}
}

// TestTrackerFlood: 1e6 spoofed sources with one failure each against a
// table of 10 000. The table stays bounded; blocked, trusted and
// established sources keep their records.
func TestTrackerFlood(t *testing.T) {
	const capacity, flood = 10_000, 1_000_000
	tr := mustTracker(t, TrackerConfig{MaxSources: capacity})
	pbx := netip.MustParsePrefix("192.0.2.50/32")
	slow := netip.MustParsePrefix("192.0.2.51/32") // a brute forcer, 3 failures so far
	for i := range 3 {
		tr.Success(pbx, at(time.Duration(i)*time.Second))
	}
	failN(tr, attacker, 11, 0)
	tr.Fail(slow, ReasonAuthFailure, t0)
	tr.Fail(slow, ReasonAuthFailure, at(2*time.Second)) // seen again: established
	tr.Fail(slow, ReasonAuthFailure, at(3*time.Second))
	for i := range flood {
		tr.Fail(v4(100+i), ReasonUnknownSource, at(5*time.Second+time.Duration(i)*time.Microsecond))
	}
	st := tr.Stats()
	if st.Len > capacity {
		t.Fatalf("tracker grew to %d (cap %d)", st.Len, capacity)
	}
	t.Logf("after flood: %+v", st)
	now := at(7 * time.Second)
	if tr.Trust(pbx, now) != TrustTrusted {
		t.Fatal("trusted source lost")
	}
	if s, ok := tr.State(attacker, now); !ok || s.Level != 1 || s.Until.IsZero() {
		t.Fatalf("blocked source lost: %+v %v", s, ok)
	}
	if s, ok := tr.State(slow, now); !ok || s.Failures != 3 {
		t.Fatalf("established failing source lost: %+v %v", s, ok)
	}
}

// TestTrackerConcurrent: many goroutines failing one source at one instant
// produce exactly one Block. Run with -race.
func TestTrackerConcurrent(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{MaxSources: 256})
	var blocks atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if tr.Fail(attacker, ReasonMalformed, t0).Block {
					blocks.Add(1)
				}
				tr.Fail(v4(w*1000+i), ReasonMalformed, t0)
				tr.Success(v4(i), t0)
				tr.Budget(v4(i), t0)
				if w == 0 && i%100 == 0 {
					_ = tr.Update(TrackerConfig{MaxSources: 256 + i})
				}
			}
		}()
	}
	wg.Wait()
	if blocks.Load() != 1 {
		t.Fatalf("%d blocks, want 1", blocks.Load())
	}
	for i := range tr.tab.shards {
		checkShard(t, &tr.tab.shards[i])
	}
}

func TestDecisionLogValue(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{})
	d := failN(tr, attacker, 11, 0)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("autoblock", "decision", d)
	for _, want := range []string{`"action":"block"`, `"prefix":"198.51.100.66/32"`, `"level":1`, `"trust":"demoted"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %s lacks %s", buf.String(), want)
		}
	}
	if TrustTrusted.String() != "trusted" || ExemptNeverBlock.String() != "never_block" || Trust(9).String() != "Trust(9)" {
		t.Error("String methods")
	}
}

func TestTrackerHitDoesNotAllocate(t *testing.T) {
	tr := mustTracker(t, TrackerConfig{Threshold: 1 << 20, DemoteAt: 1 << 20, MaxSources: 100})
	tr.Fail(attacker, ReasonMalformed, t0)
	if n := testing.AllocsPerRun(1000, func() { tr.Fail(attacker, ReasonMalformed, t0) }); n != 0 {
		t.Errorf("Fail allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { tr.Budget(attacker, t0) }); n != 0 {
		t.Errorf("Budget allocates %v times", n)
	}
}
