package acl

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sameEntries(t *testing.T, got, want []Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Prefix != w.Prefix || g.Reason != w.Reason || g.Origin != w.Origin ||
			!g.Created.Equal(w.Created) || !g.Expires.Equal(w.Expires) {
			t.Errorf("entry %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "blocklist.json")
	clk := newClock()
	b := newTestBlocklist(t, clk)
	mustAdd(t, b, manual("192.0.2.0/24", "ticket 42 \"quoted\" \n newline ünïcode"))
	mustAdd(t, b, auto("198.51.100.7/32", "sip-scan", t0.Add(time.Hour)))
	mustAdd(t, b, auto("203.0.113.9/32", "short", t0.Add(10*time.Second)))
	mustAdd(t, b, manual("2001:db8:1:2::/64", ""))
	mustAdd(t, b, auto("::/0", "everything v6", t0.Add(time.Hour)))
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	// Only the file itself is left in the directory (no temp files).
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files", len(ents))
	}

	b2 := newTestBlocklist(t, clk)
	n, err := b2.Load(path)
	if err != nil || n != 5 {
		t.Fatalf("Load = %d, %v", n, err)
	}
	sameEntries(t, b2.List(), b.List())

	// Later, the short entry has expired: it is not loaded.
	clk2 := newClock()
	clk2.Advance(time.Minute)
	b3 := newTestBlocklist(t, clk2)
	if n, err := b3.Load(path); err != nil || n != 4 {
		t.Fatalf("Load later = %d, %v", n, err)
	}
	if b3.Blocked(netip.MustParseAddr("203.0.113.9")) {
		t.Error("expired entry loaded")
	}

	// Entries overlapping the never-block list are skipped.
	b4 := newTestBlocklist(t, clk)
	if _, err := b4.SetNeverBlock(pfxs("192.0.2.1/32")); err != nil {
		t.Fatal(err)
	}
	if n, err := b4.Load(path); err != nil || n != 4 || b4.Blocked(netip.MustParseAddr("192.0.2.5")) {
		t.Fatalf("Load with never-block = %d, %v", n, err)
	}
}

func TestLoadMany(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bl.json")
	b := newTestBlocklist(t, newClock())
	for i := range 300 {
		mustAdd(t, b, manual(fmt.Sprintf("10.0.%d.%d/32", i/256, i%256), "x"))
	}
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	b2 := newTestBlocklist(t, newClock())
	mustAdd(t, b2, manual("10.0.0.0/32", "already there"))
	sub, _ := b2.Subscribe(1000)
	if n, err := b2.Load(path); err != nil || n != 300 {
		t.Fatalf("Load = %d, %v", n, err)
	}
	sameEntries(t, b2.List(), b.List())
	if got := len(sub.C()); got != 300 {
		t.Errorf("%d changes queued, want 300", got)
	}

	small := NewBlocklist(Options{MaxEntries: 100})
	defer small.Close()
	n, err := small.Load(path)
	if !errors.Is(err, ErrFull) || n != 100 || small.Len() != 100 {
		t.Errorf("Load into a small blocklist = %d, %v; Len %d", n, err, small.Len())
	}
}

func TestLoadCorrupt(t *testing.T) {
	good := `{"version":1,"saved":"2026-03-01T12:00:00Z","entries":[
{"prefix":"192.0.2.0/24","origin":"manual"}
]}`
	tests := []struct {
		name, data string
	}{
		{"empty", ""},
		{"not json", "hello"},
		{"truncated", good[:len(good)-5]},
		{"trailing data", good + "{}"},
		{"wrong version", strings.Replace(good, `"version":1`, `"version":2`, 1)},
		{"no version", `{"entries":[]}`},
		{"unknown field", strings.Replace(good, `"origin"`, `"colour":"red","origin"`, 1)},
		{"bad prefix", strings.Replace(good, "192.0.2.0/24", "192.0.2.0/33", 1)},
		{"empty prefix", strings.Replace(good, `"192.0.2.0/24"`, `""`, 1)},
		{"bad origin", strings.Replace(good, `"manual"`, `"robot"`, 1)},
		{"no origin", strings.Replace(good, `,"origin":"manual"`, ``, 1)},
		{"bad time", strings.Replace(good, `"origin":"manual"`, `"origin":"manual","expires":"yesterday"`, 1)},
		{"long reason", strings.Replace(good, `"origin"`, `"reason":"`+strings.Repeat("x", MaxReasonLen+1)+`","origin"`, 1)},
		{"entries not a list", `{"version":1,"entries":{}}`},
		{"array", `[]`},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
		if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
			t.Fatal(err)
		}
		b := newTestBlocklist(t, newClock())
		n, err := b.Load(path)
		if !errors.Is(err, ErrCorruptState) || n != 0 || b.Len() != 0 {
			t.Errorf("%s: Load = %d, %v; Len %d; want ErrCorruptState and nothing loaded", tc.name, n, err, b.Len())
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", tc.name, err)
		}
	}
	// The good document loads (the table above really tests corruption).
	path := filepath.Join(dir, "good")
	os.WriteFile(path, []byte(good), 0o644)
	b := newTestBlocklist(t, newClock())
	if n, err := b.Load(path); err != nil || n != 1 {
		t.Errorf("good file: Load = %d, %v", n, err)
	}
	// A missing file is not corruption.
	_, err := b.Load(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrCorruptState) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestAutoSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bl.json")
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Millisecond, SaveInterval: time.Millisecond})
	saved := make(chan error, 100)
	b.afterSave = func(err error) { saved <- err }
	mustAdd(t, b, manual("192.0.2.1/32", "one"))
	mustAdd(t, b, manual("192.0.2.2/32", "two"))
	b.Remove(netip.MustParsePrefix("192.0.2.1/32"))
	// Wait for a save that has the last change.
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-saved:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("state never saved")
		}
		b2 := NewBlocklist(Options{})
		b2.Load(path)
		l := b2.List()
		b2.Close()
		if len(l) == 1 && l[0].Reason == "two" {
			break
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAutoSaveFlushOnClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bl.json")
	// A save delay far longer than the test: only Close can write.
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Hour})
	for i := range 50 {
		mustAdd(t, b, manual(fmt.Sprintf("192.0.2.%d/32", i), "x"))
	}
	mustAdd(t, b, manual("2001:db8::/64", "last change"))
	want := b.List()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := NewBlocklist(Options{})
	defer b2.Close()
	if _, err := b2.Load(path); err != nil {
		t.Fatal(err)
	}
	sameEntries(t, b2.List(), want)
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files", len(ents))
	}

	// No change since the start: Close does not write (a corrupt file the
	// caller failed to load is not overwritten by an empty list).
	corrupt := filepath.Join(dir, "corrupt.json")
	os.WriteFile(corrupt, []byte("garbage"), 0o644)
	b3 := NewBlocklist(Options{StatePath: corrupt, SaveDelay: time.Hour})
	if _, err := b3.Load(corrupt); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("Load = %v", err)
	}
	if err := b3.Close(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(corrupt); string(data) != "garbage" {
		t.Error("unchanged blocklist overwrote the state file on Close")
	}
}

func TestAutoSaveError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "bl.json")
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Hour})
	mustAdd(t, b, manual("192.0.2.1/32", "x"))
	if err := b.Close(); err == nil {
		t.Error("Close did not report the failed save")
	}
}

// Persist writes at once and reports a failed write to its caller; the
// background saver (an hour away here) could only log it.
func TestPersistReportsFailedSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bl.json")
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Hour})
	defer b.Close()
	mustAdd(t, b, manual("192.0.2.1/32", "x"))
	if err := b.Persist(); err != nil {
		t.Fatal(err)
	}
	b2 := NewBlocklist(Options{})
	if n, err := b2.Load(path); err != nil || n != 1 {
		t.Fatalf("state after Persist: Load = %d, %v", n, err)
	}
	b2.Close()

	// The directory becomes a file: no state file can be written in it,
	// even as root.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, b, manual("192.0.2.2/32", "y"))
	if err := b.Persist(); err == nil {
		t.Fatal("Persist did not report the failed write")
	}
	if err := b.Persist(); err == nil {
		t.Fatal("a second Persist forgot the unsaved change")
	}

	os.Remove(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.Persist(); err != nil {
		t.Fatalf("Persist once writable again: %v", err)
	}
	b3 := NewBlocklist(Options{})
	defer b3.Close()
	if n, err := b3.Load(path); err != nil || n != 2 {
		t.Fatalf("state after the retry: Load = %d, %v", n, err)
	}
	if err := NewBlocklist(Options{}).Persist(); err != nil {
		t.Fatalf("Persist without a StatePath: %v", err)
	}
}

func TestProbeDir(t *testing.T) {
	dir := t.TempDir()
	if err := ProbeDir(dir); err != nil {
		t.Fatalf("writable directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the probe left %d files behind", len(ents))
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if err := ProbeDir(file); err == nil {
		t.Error("a regular file probed as a writable directory")
	}
	if err := ProbeDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory probed as writable")
	}
}

// TestSaveCoalescedUnderChurn drives the background saver with a timer the
// test fires: however many changes arrive, the file is written once per
// timer, and the saver waits SaveDelay before its first write and
// SaveInterval between writes (not SaveDelay again).
func TestSaveCoalescedUnderChurn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bl.json")
	const delay, interval, rounds, churn = time.Second, time.Minute, 3, 500
	b := NewBlocklist(Options{StatePath: path, SaveDelay: delay, SaveInterval: interval, Logger: slog.New(slog.DiscardHandler)})
	type timerReq struct {
		d  time.Duration
		ch chan time.Time
	}
	reqs := make(chan timerReq, 16) // buffered: the saver never blocks on the test
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b.saveClock = func() time.Time { return clock } // writes take no time: the interval rules
	b.saveTimer = func(d time.Duration) <-chan time.Time {
		ch := make(chan time.Time, 1)
		reqs <- timerReq{d, ch}
		return ch
	}
	saved := make(chan error, 16)
	b.afterSave = func(err error) { saved <- err }
	n := 0
	for r := range rounds {
		for range churn {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 32)
			mustAdd(t, b, Entry{Prefix: p, Reason: "churn", Origin: OriginAuto})
			if n%3 == 0 {
				b.Remove(p)
			}
			n++
		}
		var req timerReq
		select {
		case req = <-reqs:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the saver asked for no timer", r)
		}
		want := interval
		if r == 0 {
			want = delay
		}
		if req.d != want {
			t.Errorf("round %d: the saver waits %v, want %v", r, req.d, want)
		}
		req.ch <- clock
		if err := <-saved; err != nil {
			t.Fatal(err)
		}
	}
	st := b.Stats()
	if st.StateWrites != rounds {
		t.Errorf("%d writes for %d changes, want %d", st.StateWrites, rounds*churn, rounds)
	}
	want := b.List()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().StateWrites; got != rounds {
		t.Errorf("Close wrote again (%d writes) although nothing changed since the last write", got)
	}
	b2 := NewBlocklist(Options{})
	defer b2.Close()
	if _, err := b2.Load(path); err != nil {
		t.Fatal(err)
	}
	sameEntries(t, b2.List(), want)
	t.Logf("%d changes, %d writes", rounds*churn+rounds*churn/3, st.StateWrites)
}

// TestSaveCoalescedRealTimers: with real timers, thousands of changes made
// while an interval runs are written at most twice: once SaveDelay after
// the first change, once by Close.
func TestSaveCoalescedRealTimers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bl.json")
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Millisecond, SaveInterval: time.Hour,
		Logger: slog.New(slog.DiscardHandler)})
	const changes = 3000
	for i := range changes {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)
		mustAdd(t, b, Entry{Prefix: p, Reason: "churn", Origin: OriginAuto})
		if i%2 == 1 {
			b.Remove(p)
		}
	}
	want := b.List()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.StateWrites < 1 || st.StateWrites > 2 {
		t.Errorf("%d writes for %d changes, want 1 or 2", st.StateWrites, changes*3/2)
	}
	b2 := NewBlocklist(Options{})
	defer b2.Close()
	if _, err := b2.Load(path); err != nil {
		t.Fatal(err)
	}
	sameEntries(t, b2.List(), want)
	t.Logf("%d changes, %d writes", changes*3/2, st.StateWrites)
}

func TestSaveWait(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := time.Second
	tests := []struct {
		name       string
		last       time.Time
		cost       time.Duration
		now        time.Time
		want       time.Duration
		delay, ivl time.Duration
	}{
		{"first write", time.Time{}, 0, t0, s, s, 10 * s},
		{"right after a write", t0, 0, t0, 10 * s, s, 10 * s},
		{"interval partly run", t0, 0, t0.Add(4 * s), 6 * s, s, 10 * s},
		{"interval over: the delay", t0, 0, t0.Add(time.Hour), s, s, 10 * s},
		{"costly write: 20x its time", t0, 2 * s, t0.Add(2 * s), 38 * s, s, 10 * s},
		{"cheap write: the interval", t0, 10 * time.Millisecond, t0, 10 * s, s, 10 * s},
	}
	for _, tc := range tests {
		if got := saveWait(tc.delay, tc.ivl, tc.last, tc.cost, tc.now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
