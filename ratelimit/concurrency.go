package ratelimit

import (
	"sync/atomic"
)

// Concurrency counts calls in progress per trunk against a cap: a
// non-blocking counting semaphore per trunk name (no queue: a call over
// the cap is refused at once, the caller answers 503). Safe for concurrent
// use; Acquire and release are lock-free.
type Concurrency struct {
	m atomic.Pointer[map[string]*semaphore]
}

type semaphore struct {
	limit atomic.Int64 // <= 0: unlimited (still counted)
	inUse atomic.Int64
}

// NewConcurrency builds a Concurrency with a cap per trunk name (see
// SetLimits).
func NewConcurrency(limits map[string]int) *Concurrency {
	c := &Concurrency{}
	c.SetLimits(limits)
	return c
}

// SetLimits replaces the caps on a policy reload. A trunk present before
// and after keeps its count of calls in progress; lowering its cap below
// that count refuses new calls until enough have ended, and ends none. A
// cap <= 0 means unlimited but counted. Trunks absent from limits are
// neither limited nor counted; calls acquired on a trunk that was dropped
// release against its old counter harmlessly.
func (c *Concurrency) SetLimits(limits map[string]int) {
	var old map[string]*semaphore
	if p := c.m.Load(); p != nil {
		old = *p
	}
	m := make(map[string]*semaphore, len(limits))
	for name, lim := range limits {
		s := old[name]
		if s == nil {
			s = &semaphore{}
		}
		s.limit.Store(int64(lim))
		m[name] = s
	}
	c.m.Store(&m)
}

func noRelease() {}

// Acquire takes one call slot of trunk. ok is false when the trunk is at
// its cap; release is then nil. Otherwise release gives the slot back and
// must be called exactly once when the call ends; further calls do
// nothing (it is idempotent and safe from any goroutine). An unknown trunk
// is always admitted, with a release that does nothing.
func (c *Concurrency) Acquire(trunk string) (release func(), ok bool) {
	s := (*c.m.Load())[trunk]
	if s == nil {
		return noRelease, true
	}
	for {
		n := s.inUse.Load()
		if lim := s.limit.Load(); lim > 0 && n >= lim {
			return nil, false
		}
		if s.inUse.CompareAndSwap(n, n+1) {
			break
		}
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			s.inUse.Add(-1)
		}
	}, true
}

// InUse reports the calls in progress on trunk (0 for unknown trunks).
func (c *Concurrency) InUse(trunk string) int {
	if s := (*c.m.Load())[trunk]; s != nil {
		return int(s.inUse.Load())
	}
	return 0
}

// Limit reports trunk's cap (0: unlimited or unknown).
func (c *Concurrency) Limit(trunk string) int {
	if s := (*c.m.Load())[trunk]; s != nil {
		return int(max(s.limit.Load(), 0))
	}
	return 0
}
