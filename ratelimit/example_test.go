package ratelimit_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sbc-project/sbc/ratelimit"
)

// Example wires the pieces the way the SBC's stages use them.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// Built from the policy snapshot (Update on reload).
	packets, _ := ratelimit.NewLimiter(ratelimit.LimiterConfig{
		Source: ratelimit.Limit{Rate: 200, Burst: 400}, // per-source packets/s, before the parser
	})
	invites, _ := ratelimit.NewLimiter(ratelimit.LimiterConfig{
		Source: ratelimit.Limit{Rate: 2, Burst: 4}, // per-source INVITE CPS
		Trunks: map[string]ratelimit.Limit{"carrier-a": {Rate: 50, Burst: 100}},
	})
	calls := ratelimit.NewConcurrency(map[string]int{"carrier-a": 1})
	tracker, _ := ratelimit.NewTracker(ratelimit.TrackerConfig{}) // defaults: 10 in 60s → 10m
	scanners, _ := ratelimit.NewScannerMatcher(ratelimit.DefaultScannerPatterns)

	peer := netip.MustParseAddr("198.51.100.7")
	src := ratelimit.SourceKey(peer)

	// Read filter: one cheap check per datagram.
	if !packets.Allow(src, now) {
		fmt.Println("drop: over packet budget")
	}

	// Admit: per-source CPS scaled by trust, per-trunk CPS, concurrent calls.
	budget := tracker.Budget(src, now)
	if ok, wait := invites.Check(src, now, 1, budget); !ok {
		fmt.Println("503, Retry-After:", ratelimit.RetryAfterSeconds(wait))
	}
	if ok, wait := invites.CheckTrunk("carrier-a", now, 1); !ok {
		fmt.Println("503, Retry-After:", ratelimit.RetryAfterSeconds(wait))
	}
	release, ok := calls.Acquire("carrier-a")
	fmt.Println("call admitted:", ok)
	_, ok = calls.Acquire("carrier-a")
	fmt.Println("second call admitted:", ok)
	release()

	// Watch: failures feed the tracker; a scanner User-Agent is one.
	if pattern, ok := scanners.Match("friendly-scanner"); ok {
		fmt.Println("scanner:", pattern)
	}
	var d ratelimit.Decision
	for i := range 11 {
		d = tracker.Fail(src, ratelimit.ReasonScannerUA, now.Add(time.Duration(i)*time.Second))
		if d.Demoted {
			fmt.Println("demoted after", d.Failures, "failures; budget", tracker.Budget(src, now.Add(5*time.Second)))
		}
	}
	if d.Block {
		fmt.Println("block", d.Prefix, "for", d.Duration, "level", d.Level, "reason", d.Reason)
	}
	// Output:
	// call admitted: true
	// second call admitted: false
	// scanner: friendly-scanner
	// demoted after 5 failures; budget 0.25
	// block 198.51.100.7/32 for 10m0s level 1 reason scanner_ua
}
