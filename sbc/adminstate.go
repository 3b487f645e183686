package sbc

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/policy"
)

// runtimeState is what the admin API changes at run time, outside the
// policy: a node drain, disabled trunks, drained targets (on the target,
// health.go). It survives reloads and ends with the process.
type runtimeState struct {
	drain atomic.Pointer[drainState]
	mu    sync.Mutex
	timer *time.Timer // ends the calls left at the drain's deadline
	// off holds the disabled trunks, meters the CPS meters by trunk:
	// copied on write (rare) under mu, read without a lock and without
	// allocating on the call path (a sync.Map's any key would).
	off     atomic.Pointer[map[string]bool]
	meters  atomic.Pointer[map[string]*rateMeter]
	applied atomic.Pointer[appliedPolicy]
}

// drainState is a node drain: since when, and until when calls in
// progress may go on.
type drainState struct {
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"`
}

// appliedPolicy is the policy in force and since when.
type appliedPolicy struct {
	Source  string    `json:"source"`
	Digest  string    `json:"digest"`
	Applied time.Time `json:"applied"`
}

func (rs *runtimeState) setApplied(p *policy.Policy) {
	rs.applied.Store(&appliedPolicy{Source: p.Source, Digest: p.Digest, Applied: time.Now().UTC()})
}

func (rs *runtimeState) trunkDisabled(name string) bool {
	m := rs.off.Load()
	return m != nil && (*m)[name]
}

// setTrunk enables or disables a trunk's new calls.
func (rs *runtimeState) setTrunk(name string, enabled bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := map[string]bool{}
	if old := rs.off.Load(); old != nil {
		maps.Copy(m, *old)
	}
	if enabled {
		delete(m, name)
	} else {
		m[name] = true
	}
	rs.off.Store(&m)
}

// startDrain starts (or restarts with a new deadline) a node drain; at
// the deadline, end is called for the calls left.
func (rs *runtimeState) startDrain(d time.Duration, end func()) drainState {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := time.Now().UTC()
	ds := &drainState{Since: now, Deadline: now.Add(d)}
	if old := rs.drain.Load(); old != nil {
		ds.Since = old.Since
	}
	if rs.timer != nil {
		rs.timer.Stop()
	}
	rs.drain.Store(ds)
	rs.timer = time.AfterFunc(d, func() {
		if rs.drain.Load() == ds {
			end()
		}
	})
	return *ds
}

// stopDrain ends a drain: new calls are taken again.
func (rs *runtimeState) stopDrain() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.timer != nil {
		rs.timer.Stop()
		rs.timer = nil
	}
	return rs.drain.Swap(nil) != nil
}

func (rs *runtimeState) meter(trunk string) *rateMeter {
	if m := rs.meters.Load(); m != nil {
		if r := (*m)[trunk]; r != nil {
			return r
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := map[string]*rateMeter{}
	if old := rs.meters.Load(); old != nil {
		if r := (*old)[trunk]; r != nil {
			return r
		}
		maps.Copy(m, *old)
	}
	r := &rateMeter{}
	m[trunk] = r
	rs.meters.Store(&m)
	return r
}

// rateMeter counts events per whole second: the count of the last
// complete second is the rate shown.
type rateMeter struct {
	mu        sync.Mutex
	sec       int64 // the second cur counts
	cur, prev int
}

func (m *rateMeter) add(now time.Time) {
	m.mu.Lock()
	m.roll(now.Unix())
	m.cur++
	m.mu.Unlock()
}

// lastSecond is the number of events in the last complete second.
func (m *rateMeter) lastSecond(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll(now.Unix())
	return m.prev
}

func (m *rateMeter) roll(sec int64) {
	switch {
	case sec == m.sec:
	case sec == m.sec+1:
		m.prev, m.cur, m.sec = m.cur, 0, sec
	default:
		m.prev, m.cur, m.sec = 0, 0, sec
	}
}
