package ratelimit

import (
	"fmt"
	"math"
	"time"
)

// Limit is a token-bucket rate: on average Rate events per second, with
// bursts of up to Burst events after a quiet period.
//
// Rate <= 0 or +Inf disables the limit (everything is allowed); this is the
// zero value, so an absent policy key means "no limit". With Rate > 0,
// Burst < 1 is treated as 1.
type Limit struct {
	Rate  float64
	Burst int
}

// Unlimited reports whether l lets everything through.
func (l Limit) Unlimited() bool { return !(l.Rate > 0) || math.IsInf(l.Rate, 1) }

// String formats l as "rate/s burst n" or "unlimited".
func (l Limit) String() string {
	if l.Unlimited() {
		return "unlimited"
	}
	return fmt.Sprintf("%g/s burst %d", l.Rate, max(l.Burst, 1))
}

// maxWindow bounds burst/rate so that time arithmetic in ns cannot
// overflow: about 36 years.
const maxWindow = int64(1) << 60

// Never is the retry-after reported for a request that can never succeed
// (more events asked for at once than the burst allows).
const Never = time.Duration(math.MaxInt64)

// gcra is a compiled Limit. The bucket state is one int64, the
// "theoretical arrival time" (TAT) of the generic cell rate algorithm: the
// bucket is full when tat <= now, and holds (window-(tat-now))/interval
// tokens otherwise. One word per key, integer arithmetic, and the wait
// until a denied request would pass falls out directly.
type gcra struct {
	unlimited bool
	interval  int64 // ns per event
	window    int64 // burst × interval
	burst     int64
}

func compile(l Limit) (gcra, error) {
	if math.IsNaN(l.Rate) {
		return gcra{}, fmt.Errorf("rate is NaN")
	}
	if l.Unlimited() {
		return gcra{unlimited: true}, nil
	}
	if l.Burst < 0 {
		return gcra{}, fmt.Errorf("negative burst %d", l.Burst)
	}
	b := int64(max(l.Burst, 1))
	iv := math.Round(1e9 / l.Rate)
	if l.Rate > 1e9 {
		return gcra{}, fmt.Errorf("rate %g/s above 1e9/s", l.Rate)
	}
	if iv*float64(b) > float64(maxWindow) {
		return gcra{}, fmt.Errorf("burst %d at %g/s spans more than %v", b, l.Rate, time.Duration(maxWindow))
	}
	return gcra{interval: int64(iv), window: int64(iv) * b, burst: b}, nil
}

// scaled returns the event interval for a budget multiplier: a budget of
// 2 halves the interval (twice the rate) and so doubles the burst, because
// the window (burst × interval) stays fixed. Bad multipliers count as 1.
func (g *gcra) scaled(budget float64) int64 {
	if budget == 1 || !(budget > 0) || math.IsInf(budget, 1) {
		return g.interval
	}
	iv := int64(float64(g.interval) / budget)
	return max(iv, 1)
}

// take asks for n events at now from the bucket whose state is tat. It
// returns the new state, whether the events are allowed, and when denied
// how long until they would be. A denial changes the state only to
// normalise a bucket left "more than empty" by a clock that stepped back:
// otherwise the source would be stuck until the clock caught up.
//
// A budget below 1 slows a source down, it never shuts it out: when the
// scaled interval is longer than the window (burst × budget < 1, say a
// burst of 2 at budget 0.25), the bucket still holds one event, so the
// source gets one event per scaled interval (rate × budget) instead of
// Never.
func (g *gcra) take(tat, now, n int64, budget float64) (int64, bool, time.Duration) {
	if g.unlimited || n <= 0 {
		return tat, true, 0
	}
	iv := g.scaled(budget)
	win := max(g.window, iv)
	tat = min(tat, now+win) // an empty bucket is empty, never emptier
	if n > win/iv {
		return tat, false, Never
	}
	t := max(tat, now) // a clock that stepped back never refunds tokens
	nt := t + n*iv
	if d := nt - now - win; d > 0 {
		return tat, false, time.Duration(d)
	}
	return nt, true, 0
}

// rescale converts a bucket state under old to the same number of missing
// tokens under g (clamped to g's burst): what a policy reload keeps.
func (g *gcra) rescale(old *gcra, tat, now int64) int64 {
	if tat <= now || g.unlimited {
		return tat
	}
	debt := tat - now
	if !old.unlimited && old.interval != g.interval {
		debt = int64(float64(debt) * float64(g.interval) / float64(old.interval))
	}
	return now + min(debt, g.window)
}

// startTat is the state of a new key that starts with only b tokens.
func (g *gcra) startTat(now int64, b int, budget float64) int64 {
	iv := g.scaled(budget)
	have := min(int64(b), g.window/iv)
	return now + g.window - have*iv
}

// RetryAfterSeconds turns a wait returned by Check/CheckTrunk into the
// delta-seconds of a SIP Retry-After header: rounded up, at least 1, at
// most 3600 (Never gives 3600). A wait <= 0 gives 0 (nothing to wait for).
func RetryAfterSeconds(wait time.Duration) int {
	const maxRetry = 3600
	if wait <= 0 {
		return 0
	}
	if wait >= maxRetry*time.Second {
		return maxRetry
	}
	s := int((wait + time.Second - 1) / time.Second)
	return max(s, 1)
}
