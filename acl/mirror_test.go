package acl

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type memSink struct {
	mu    sync.Mutex
	set   map[netip.Prefix]bool
	fail  int // fail the next n calls
	syncs int
	ch    chan struct{}
}

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
	for _, e := range es {
		m.set[e.Prefix] = true
	}
	return nil
}

func (m *memSink) Add(e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.bump(); err != nil {
		return err
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
	go func() {
		Mirror(ctx, bl, sink, func(error) { mu.Lock(); errs++; mu.Unlock() })
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
}
