package acl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

type memSink struct {
	mu    sync.Mutex
	set   map[netip.Prefix]bool
	fail  int // fail the next n calls
	cap   int // room for this many entries; 0: unbounded
	syncs int
	adds  int // Add calls, refused ones included
	ch    chan struct{}
}

func (m *memSink) full() bool { return m.cap > 0 && len(m.set) >= m.cap }

func (m *memSink) bump() error {
	defer func() {
		select {
		case m.ch <- struct{}{}:
		default:
		}
	}()
	if m.fail > 0 {
		m.fail--
		return errors.New("sink down")
	}
	return nil
}

func (m *memSink) Sync(es []Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.bump(); err != nil {
		return err
	}
	m.syncs++
	m.set = map[netip.Prefix]bool{}
	var full *SinkFullError
	for _, e := range es {
		if m.full() {
			if full == nil {
				full = &SinkFullError{}
			}
			full.Missing = append(full.Missing, e.Prefix)
			continue
		}
		m.set[e.Prefix] = true
	}
	if full != nil {
		return fmt.Errorf("mem sink: %w", full)
	}
	return nil
}

func (m *memSink) Add(e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.bump(); err != nil {
		return err
	}
	m.adds++
	if !m.set[e.Prefix] && m.full() {
		return fmt.Errorf("mem sink: %w", ErrSinkFull)
	}
	m.set[e.Prefix] = true
	return nil
}

func (m *memSink) Remove(p netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.bump(); err != nil {
		return err
	}
	delete(m.set, p)
	return nil
}

func (m *memSink) has(p netip.Prefix) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.set[p]
}

func (m *memSink) counts() (size, syncs, adds int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.set), m.syncs, m.adds
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestMirrorFollowsBlocklist(t *testing.T) {
	bl := NewBlocklist(Options{})
	defer bl.Close()
	before := netip.MustParsePrefix("192.0.2.1/32")
	if err := bl.Add(Entry{Prefix: before, Reason: "x", Origin: OriginManual}); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{ch: make(chan struct{}, 1), fail: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var errs int
	var mu sync.Mutex
	mirror := NewMirror(bl, sink, MirrorOptions{OnError: func(error) { mu.Lock(); errs++; mu.Unlock() }})
	go func() {
		mirror.Run(ctx)
		close(done)
	}()
	waitFor(t, "snapshot synced after a failure", func() bool { return sink.has(before) })
	after := netip.MustParsePrefix("2001:db8::/64")
	if err := bl.Add(Entry{Prefix: after, Reason: "y", Origin: OriginAuto, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "added entry mirrored", func() bool { return sink.has(after) })
	bl.Remove(before)
	waitFor(t, "removed entry mirrored", func() bool { return !sink.has(before) })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if errs != 1 {
		t.Fatalf("errors reported %d, want 1", errs)
	}
	if st := mirror.Stats(); st.Syncs != 2 || st.Overflows != 0 || st.Missing != 0 {
		t.Fatalf("stats %+v, want 2 syncs (one failed), no overflow", st)
	}
}

// TestMirrorOverflow: a blocklist larger than the sink's room. The sink
// gets what fits (manual entries and wider prefixes first), the overflow is
// reported once, and the mirror does not resync or retry: a pending entry
// is installed when a removal frees room, and the end of the episode is
// reported once.
func TestMirrorOverflow(t *testing.T) {
	const room, extra = 50, 30
	bl := NewBlocklist(Options{})
	defer bl.Close()
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
	}
	// room+extra automatic /32s, a manual /32 and an automatic /16: the
	// last two go to the sink first.
	for i := range room + extra {
		mustAdd(t, bl, Entry{Prefix: addr(i), Reason: "auto", Origin: OriginAuto})
	}
	manualP := netip.MustParsePrefix("192.0.2.1/32")
	wide := netip.MustParsePrefix("198.18.0.0/16")
	mustAdd(t, bl, Entry{Prefix: manualP, Reason: "operator", Origin: OriginManual})
	mustAdd(t, bl, Entry{Prefix: wide, Reason: "auto", Origin: OriginAuto})

	sink := &memSink{ch: make(chan struct{}, 1), cap: room}
	var (
		mu      sync.Mutex
		reports []int
		errs    []error
	)
	m := NewMirror(bl, sink, MirrorOptions{
		OnError:    func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
		OnOverflow: func(n int) { mu.Lock(); reports = append(reports, n); mu.Unlock() },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	total := room + extra + 2
	waitFor(t, "first sync", func() bool { return m.Stats().Missing == total-room })
	if !sink.has(manualP) || !sink.has(wide) {
		t.Fatal("the manual entry and the /16 are not among those installed")
	}
	// More blocks while full: pending, no resync.
	for i := room + extra; i < room+extra+10; i++ {
		mustAdd(t, bl, Entry{Prefix: addr(i), Reason: "auto", Origin: OriginAuto})
	}
	waitFor(t, "adds while full", func() bool { return m.Stats().Missing == total+10-room })
	// A manual block while full is pending too, and promoted first.
	manual2 := netip.MustParsePrefix("192.0.2.2/32")
	mustAdd(t, bl, Entry{Prefix: manual2, Reason: "operator", Origin: OriginManual})
	waitFor(t, "manual add while full", func() bool { return m.Stats().Missing == total+11-room })
	// Remove an installed entry: the manual pending one takes its room.
	if !bl.Remove(wide) {
		t.Fatal("remove failed")
	}
	waitFor(t, "promotion", func() bool { return sink.has(manual2) })
	// Remove every automatic /32: all pending entries get in.
	for i := range room + extra + 10 {
		bl.Remove(addr(i))
	}
	waitFor(t, "room for all", func() bool { return m.Stats().Missing == 0 })
	waitFor(t, "sink equals the blocklist", func() bool {
		size, _, _ := sink.counts()
		return size == bl.Len() && sink.has(manualP) && sink.has(manual2)
	})
	// One more overflow episode after the first one ended.
	for i := range room {
		mustAdd(t, bl, Entry{Prefix: addr(1000 + i), Reason: "auto", Origin: OriginAuto})
	}
	waitFor(t, "second episode", func() bool { return m.Stats().Missing == 2 })

	st := m.Stats()
	_, syncs, adds := sink.counts()
	mu.Lock()
	defer mu.Unlock()
	if st.Syncs != 1 || syncs != 1 {
		t.Errorf("syncs: mirror %d, sink %d; want 1 (no resync on a full sink)", st.Syncs, syncs)
	}
	if want := []int{total - room, 0, 1}; !slices.Equal(reports, want) {
		t.Errorf("overflow reports %v, want %v (start with the number missing, end, start at the first one missing)", reports, want)
	}
	if st.Overflows != 2 {
		t.Errorf("overflows %d, want 2", st.Overflows)
	}
	if len(errs) != 0 {
		t.Errorf("errors reported: %v", errs)
	}
	t.Logf("stats %+v; sink Add calls %d", st, adds)
}
