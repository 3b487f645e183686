package acl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// Sink is a copy of the blocklist kept elsewhere: an XDP map, an nftables
// set. Add is an upsert, Remove is idempotent, Sync makes the sink hold
// exactly the given entries.
//
// A sink with a bounded capacity reports a lack of room, and nothing else,
// with ErrSinkFull: Add returns an error wrapping it when the entry does
// not fit, and Sync, when not every entry fits, installs what does (in the
// order given; entries it already holds may be kept first) and returns an
// error wrapping a *SinkFullError that names the others.
type Sink interface {
	Sync(entries []Entry) error
	Add(e Entry) error
	Remove(p netip.Prefix) error
}

// ErrSinkFull is wrapped by a Sink error that means "no room": the entry
// was not installed, and retrying will not help until something is
// removed.
var ErrSinkFull = errors.New("acl: mirror sink is full")

// SinkFullError is Sink.Sync's error when the sink holds only part of the
// entries: Missing lists the prefixes it could not install. It wraps
// ErrSinkFull.
type SinkFullError struct {
	Missing []netip.Prefix
}

func (e *SinkFullError) Error() string {
	return fmt.Sprintf("%v: %d entries not installed", ErrSinkFull, len(e.Missing))
}

// Unwrap returns ErrSinkFull.
func (e *SinkFullError) Unwrap() error { return ErrSinkFull }

// MirrorOptions configure a Mirror. The zero value is usable.
type MirrorOptions struct {
	// OnError receives each sink failure other than a lack of room; the
	// mirror then syncs the whole list again, with a backoff (100 ms
	// doubling up to 5 s) while the failures go on.
	OnError func(error)
	// OnOverflow is called when the sink runs out of room (missing > 0:
	// that many entries are blocked in user space only) and when it has
	// room for every entry again (missing == 0). It is not called while
	// the number merely changes: one report per episode.
	OnOverflow func(missing int)
}

// MirrorStats are a Mirror's counters.
type MirrorStats struct {
	// Syncs: full syncs of the sink attempted: the first, and one after
	// each resync of the change feed or sink failure (each retry counts).
	Syncs uint64
	// Overflows: times the sink ran out of room (episodes, as OnOverflow).
	Overflows uint64
	// Missing: blocklist entries the sink does not hold for lack of room
	// now.
	Missing int
}

// Mirror keeps a Sink equal to a Blocklist: the current entries first, then
// every change.
//
// Overflow policy. When the sink has no room (ErrSinkFull), the entries it
// cannot take stay in the blocklist, where the user-space filter still
// drops their traffic; the mirror holds them as pending, reports the
// episode once (OnOverflow, Stats) and does not resync or retry: a pending
// entry is installed when a removal frees room, manual entries first. A
// full sync sends the entries in the order manual before automatic, wider
// prefixes before narrower ones, older before newer, so that what the
// kernel holds when it cannot hold everything is what covers the most.
type Mirror struct {
	b    *Blocklist
	sink Sink
	opts MirrorOptions

	syncs, overflows atomic.Uint64
	missing          atomic.Int64

	// pending: entries not in the sink for lack of room, by origin
	// (manual ones are promoted first). Owned by Run's goroutine.
	pending [2]map[netip.Prefix]Entry
}

// NewMirror returns a mirror of b into sink; Run starts it.
func NewMirror(b *Blocklist, sink Sink, opts MirrorOptions) *Mirror {
	return &Mirror{b: b, sink: sink, opts: opts,
		pending: [2]map[netip.Prefix]Entry{{}, {}}}
}

// Stats returns the mirror's counters; safe to call at any time.
func (m *Mirror) Stats() MirrorStats {
	return MirrorStats{Syncs: m.syncs.Load(), Overflows: m.overflows.Load(), Missing: int(m.missing.Load())}
}

// Run mirrors until ctx ends or the blocklist closes. When the feed
// overflows (OpResync) or the sink fails with anything but ErrSinkFull,
// the whole list is synced again; a failing sink is retried with backoff
// (up to 5 s) and each error passed to OnError. Run may be called once.
func (m *Mirror) Run(ctx context.Context) {
	sub, snap := m.b.Subscribe(0)
	defer sub.Close()
	backoff := 100 * time.Millisecond
	resync := func(entries []Entry) bool {
		for {
			err := m.sync(entries)
			if err == nil {
				backoff = 100 * time.Millisecond
				return true
			}
			m.report(err)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			entries = sub.Resync()
		}
	}
	if !resync(snap) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-sub.C():
			if !ok {
				return
			}
			var err error
			switch ch.Op {
			case OpAdd:
				err = m.add(ch.Entry)
			case OpRemove:
				err = m.remove(ch.Entry.Prefix)
			case OpResync:
				if !resync(sub.Resync()) {
					return
				}
				continue
			}
			if err != nil {
				m.report(err)
				if !resync(sub.Resync()) {
					return
				}
			}
		}
	}
}

func (m *Mirror) report(err error) {
	if m.opts.OnError != nil {
		m.opts.OnError(err)
	}
}

func pendingIndex(o Origin) int {
	if o == OriginManual {
		return 0
	}
	return 1
}

// syncOrder sorts entries for a sync: manual before automatic, wider
// prefixes first, older first, then by address (deterministic).
func syncOrder(a, b Entry) int {
	return cmp.Or(
		cmp.Compare(pendingIndex(a.Origin), pendingIndex(b.Origin)),
		cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
		a.Created.Compare(b.Created),
		comparePrefix(a.Prefix, b.Prefix),
	)
}

// sync makes the sink hold entries, or as many as fit.
func (m *Mirror) sync(entries []Entry) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, syncOrder)
	err := m.sink.Sync(entries)
	m.syncs.Add(1)
	var full *SinkFullError
	if err != nil && !errors.As(err, &full) {
		return err
	}
	m.pending = [2]map[netip.Prefix]Entry{{}, {}}
	if full != nil {
		missing := make(map[netip.Prefix]bool, len(full.Missing))
		for _, p := range full.Missing {
			missing[p] = true
		}
		for _, e := range entries {
			if missing[e.Prefix] {
				m.pending[pendingIndex(e.Origin)][e.Prefix] = e
			}
		}
	}
	m.noteMissing()
	return nil
}

func (m *Mirror) pendingEntry(p netip.Prefix) (int, bool) {
	for i := range m.pending {
		if _, ok := m.pending[i][p]; ok {
			return i, true
		}
	}
	return 0, false
}

// add installs e, or keeps it pending when the sink has no room.
func (m *Mirror) add(e Entry) error {
	if i, ok := m.pendingEntry(e.Prefix); ok {
		delete(m.pending[i], e.Prefix) // the origin may have changed
		m.pending[pendingIndex(e.Origin)][e.Prefix] = e
		return nil
	}
	err := m.sink.Add(e)
	if errors.Is(err, ErrSinkFull) {
		m.pending[pendingIndex(e.Origin)][e.Prefix] = e
		m.noteMissing()
		return nil
	}
	return err
}

// remove uninstalls p (or forgets it if pending) and lets a pending entry
// take the room it freed.
func (m *Mirror) remove(p netip.Prefix) error {
	if i, ok := m.pendingEntry(p); ok {
		delete(m.pending[i], p)
		m.noteMissing()
		return nil
	}
	if err := m.sink.Remove(p); err != nil {
		return err
	}
	return m.promote()
}

// promote installs pending entries, manual ones first, until the sink is
// full again or none is left.
func (m *Mirror) promote() error {
	defer m.noteMissing()
	for i := range m.pending {
		for p, e := range m.pending[i] {
			err := m.sink.Add(e)
			if errors.Is(err, ErrSinkFull) {
				return nil
			}
			if err != nil {
				return err
			}
			delete(m.pending[i], p)
		}
	}
	return nil
}

// noteMissing publishes the number of pending entries and reports the
// start and the end of an overflow episode.
func (m *Mirror) noteMissing() {
	n := len(m.pending[0]) + len(m.pending[1])
	old := int(m.missing.Swap(int64(n)))
	switch {
	case old == 0 && n > 0:
		m.overflows.Add(1)
	case old > 0 && n == 0:
	default:
		return
	}
	if m.opts.OnOverflow != nil {
		m.opts.OnOverflow(n)
	}
}
