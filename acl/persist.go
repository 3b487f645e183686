package acl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"io"
	"os"
	"time"
)

// StateVersion is the version number written in (and required of) a
// blocklist state file.
const StateVersion = 1

// maxStateSize bounds the state file Load reads.
const maxStateSize = 512 << 20

// stateFile is the JSON document of Save and Load:
//
//	{"version":1,"saved":"2026-01-02T15:04:05Z","entries":[
//	{"prefix":"192.0.2.0/24","reason":"sip-scan","origin":"auto","created":"…","expires":"…"}
//	]}
type stateFile struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Entries []Entry   `json:"entries"`
}

// Save writes the live entries to path as JSON, atomically: a temporary file
// in the same directory is written, fsynced and renamed over path, and the
// directory is fsynced.
func (b *Blocklist) Save(path string) error {
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	return writeState(path, b.tbl.Load(), b.now())
}

// Persist writes the state file (Options.StatePath) now if the entries
// changed since it was last written, and returns the error of that write:
// the synchronous path for a change whose requester must learn that it was
// not saved (a manual block), where the background saver can only log.
// Without a StatePath it does nothing. A failed write is still retried by
// the background saver.
func (b *Blocklist) Persist() error {
	if b.statePath == "" {
		return nil
	}
	_, err := b.flush()
	return err
}

// ProbeDir checks that state files can be written in dir, by creating
// and removing a temporary file there: a directory on a read-only file
// system, or one the process may not write, fails here instead of at the
// first save.
func ProbeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".sbc-write-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		os.Remove(name)
		return err
	}
	return os.Remove(name)
}

// Load reads a state file written by Save (or by the automatic persistence)
// and adds its entries as Add would (refreshing prefixes already held,
// sending add Changes). Entries already expired are skipped, and so are
// entries overlapping the never-block list (logged). It returns the number of
// entries added or refreshed.
//
// A missing file gives an error satisfying errors.Is(err, fs.ErrNotExist). A
// file that is not a valid state file (bad JSON, unknown field, wrong version,
// invalid entry, trailing data) gives an error wrapping ErrCorruptState and
// loads nothing; the caller may then start empty (note that with a StatePath
// the corrupt file is overwritten at the next change: move it aside first
// to keep it). If the blocklist fills up, the entries that fit are loaded and
// the error wraps ErrFull.
func (b *Blocklist) Load(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("acl: loading blocklist: %w", err)
	}
	defer f.Close()
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrCorruptState, path, fmt.Sprintf(format, args...))
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > maxStateSize {
		return 0, corrupt("file is %d bytes, more than the %d allowed", fi.Size(), maxStateSize)
	}
	dec := json.NewDecoder(io.LimitReader(f, maxStateSize))
	dec.DisallowUnknownFields()
	var st stateFile
	if err := dec.Decode(&st); err != nil {
		return 0, corrupt("%v", err)
	}
	if err := dec.Decode(&json.RawMessage{}); err != io.EOF {
		return 0, corrupt("trailing data after the JSON document")
	}
	if st.Version != StateVersion {
		return 0, corrupt("version %d, want %d", st.Version, StateVersion)
	}
	now := b.now()
	entries := make([]*Entry, 0, len(st.Entries))
	for i, e := range st.Entries {
		n, err := normalize(e, now, true)
		if err != nil {
			return 0, corrupt("entry %d: %v", i, err)
		}
		entries = append(entries, n)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, ErrClosed
	}
	t := b.tbl.Load()
	inPlace := len(entries) > 32
	if inPlace {
		t = t.Clone()
	}
	var (
		changes         []Change
		loaded, expired int
		skipped         int
		fullErr         error
	)
	for _, n := range entries {
		if n.expired(now) {
			expired++
			continue
		}
		store, err := b.merge(t, n, now)
		switch {
		case errors.Is(err, ErrNeverBlock):
			skipped++
			b.log.Warn("acl: blocklist entry not loaded", "path", path, "prefix", n.Prefix.String(), "err", err)
			continue
		case err != nil:
			fullErr = err
		}
		if fullErr != nil {
			break
		}
		loaded++
		if store == nil {
			continue
		}
		if inPlace {
			t.Insert(store.Prefix, newSlot(store))
		} else {
			t = t.InsertPersist(store.Prefix, newSlot(store))
		}
		b.noteExpiry(store)
		changes = append(changes, Change{Op: OpAdd, Entry: *store, Cause: CauseRequest})
	}
	if len(changes) > 0 {
		b.publish(t)
		for _, c := range changes {
			b.emit(c)
		}
	}
	if expired > 0 || skipped > 0 {
		b.log.Info("acl: blocklist loaded", "path", path, "loaded", loaded,
			"expired", expired, "never_block", skipped)
	}
	if fullErr != nil {
		return loaded, fmt.Errorf("acl: loading blocklist %s: %w", path, fullErr)
	}
	return loaded, nil
}

// writeState writes the live entries of t to path atomically.
func writeState(path string, t *table, now time.Time) error {
	list := listOf(t, now)
	var buf bytes.Buffer
	saved, _ := json.Marshal(now.Round(0).UTC())
	fmt.Fprintf(&buf, "{\"version\":%d,\"saved\":%s,\"entries\":[", StateVersion, saved)
	for i := range list {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
		line, err := json.Marshal(&list[i])
		if err != nil {
			return fmt.Errorf("acl: encoding blocklist entry %s: %w", list[i].Prefix, err)
		}
		buf.Write(line)
	}
	buf.WriteString("\n]}\n")
	if err := atomicfile.Write(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("acl: saving blocklist: %w", err)
	}
	return nil
}

// kickSave asks the saver to write soon. Caller holds mu.
func (b *Blocklist) kickSave() {
	if b.statePath == "" {
		return
	}
	select {
	case b.saveKick <- struct{}{}:
	default:
	}
}

// flush writes the state to StatePath if it changed since the last write,
// and reports whether it wrote.
func (b *Blocklist) flush() (bool, error) {
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	b.mu.Lock()
	t, v := b.tbl.Load(), b.version
	b.mu.Unlock()
	if v == b.savedVersion {
		return false, nil
	}
	if err := writeState(b.statePath, t, b.now()); err != nil {
		b.writeErrors.Add(1)
		return false, err
	}
	b.writes.Add(1)
	b.savedVersion = v
	return true, nil
}

// saveWait is how long the saver waits before writing, given when its
// last write started (zero: none yet) and how long it took: SaveDelay
// after a change, but no earlier than SaveInterval, and SaveCostFactor
// times the last write's duration, after the start of the last write.
func saveWait(delay, interval time.Duration, last time.Time, cost time.Duration, now time.Time) time.Duration {
	if last.IsZero() {
		return delay
	}
	gap := max(interval, SaveCostFactor*cost)
	return max(delay, last.Add(gap).Sub(now))
}

// saveLoop coalesces change notifications and writes the state file (see
// saveWait). A failed write is retried with a growing delay (up to a
// minute).
func (b *Blocklist) saveLoop() {
	defer close(b.saverDone)
	// The test hooks are read only after a change (they are set before
	// the first one).
	now := func() time.Time {
		if b.saveClock != nil {
			return b.saveClock()
		}
		return time.Now()
	}
	var (
		last    time.Time     // start of the last write
		cost    time.Duration // how long it took
		backoff time.Duration // after a failed write
	)
	for {
		select {
		case <-b.saveKick:
		case <-b.closing:
			return
		}
		wait := max(saveWait(b.saveDelay, b.saveInterval, last, cost, now()), backoff)
		if !b.sleep(wait) {
			return // Close writes the last state
		}
		start := now()
		wrote, err := b.flush()
		if wrote {
			last, cost = start, now().Sub(start)
		}
		if b.afterSave != nil {
			b.afterSave(err)
		}
		if err != nil {
			b.log.Error("acl: cannot save blocklist state", "path", b.statePath, "err", err)
			backoff = min(max(2*backoff, 2*b.saveDelay), time.Minute)
			select {
			case b.saveKick <- struct{}{}:
			default:
			}
			continue
		}
		backoff = 0
	}
}

// sleep waits d; false when the blocklist is closing.
func (b *Blocklist) sleep(d time.Duration) bool {
	if b.saveTimer != nil {
		select {
		case <-b.saveTimer(d):
			return true
		case <-b.closing:
			return false
		}
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-b.closing:
		return false
	}
}
