package acl

import (
	"errors"
	"fmt"
	"io/fs"
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
	b := NewBlocklist(Options{StatePath: path, SaveDelay: time.Millisecond})
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
