package attack

import (
	"context"
	"math"
	"time"
)

// pacer spaces sends on a schedule fixed at the start of the run: send n
// (0-based) is due at start + n/rate. Late sends are caught up at once
// instead of shifting the schedule, so the average rate does not drift
// with scheduling delays (token pacing with a bucket that starts with one
// token). A rate <= 0 means no pacing.
type pacer struct {
	ctx   context.Context
	start time.Time
	end   time.Time
	rate  float64
	timer *time.Timer
}

func newPacer(ctx context.Context, start, end time.Time, rate float64) *pacer {
	if math.IsNaN(rate) || math.IsInf(rate, 0) {
		rate = 0
	}
	return &pacer{ctx: ctx, start: start, end: end, rate: rate}
}

// dueAt is when send n is due, relative to the start: n/rate seconds,
// rounded up to the nanosecond. So n+1 sends need at least n/rate
// seconds: a run of duration d sends at most floor(d·rate)+1.
func dueAt(n int, rate float64) time.Duration {
	s := float64(n) / rate
	if s*1e9 >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Ceil(s * 1e9))
}

// wait blocks until send n may go. It returns "" when it may, or why the
// run must stop instead (the end of the run or of the context comes
// first).
func (p *pacer) wait(n int) StopReason {
	for {
		select {
		case <-p.ctx.Done():
			return stopOf(p.ctx)
		default:
		}
		now := time.Now()
		if !now.Before(p.end) {
			return StopDuration
		}
		if p.rate <= 0 {
			return ""
		}
		due := p.start.Add(dueAt(n, p.rate))
		if !now.Before(due) {
			return ""
		}
		if !due.Before(p.end) {
			due = p.end
		}
		d := due.Sub(now)
		if p.timer == nil {
			p.timer = time.NewTimer(d)
		} else {
			p.timer.Reset(d)
		}
		select {
		case <-p.ctx.Done():
			p.timer.Stop()
			return stopOf(p.ctx)
		case <-p.timer.C:
		}
	}
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
