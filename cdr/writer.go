package cdr

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Writer.
type Config struct {
	// File is the path of the JSON-lines file (appended to).
	File string
	// MaxSize rotates the file before a line would take it past this
	// many bytes (a file holds at least one line). 0: never.
	MaxSize int64
	// MaxFiles is how many rotated files (FILE.1 newest … FILE.N) are
	// kept; 0 truncates the file at rotation.
	MaxFiles int
	// Queue bounds the lines waiting for the file; default 4096.
	Queue int
	// OnError, if set, is told of each write, sync or rotation error
	// (from the writer's goroutine).
	OnError func(error)
}

// Stats are a Writer's counters.
type Stats struct {
	Written uint64 // records written to the file
	Dropped uint64 // records refused because the queue was full, or after Close
	Failed  uint64 // records lost to a write error
	Rotated uint64 // rotations done
}

// Writer appends records to a file from a goroutine of its own; Write
// never blocks.
type Writer struct {
	cfg  Config
	q    chan []byte
	done chan struct{}

	mu     sync.RWMutex // guards closed against Write's send
	closed bool

	f    *os.File
	size int64

	written, dropped, failed, rotated atomic.Uint64
}

// Open opens (creating it 0640 if missing) the file and starts the writer.
func Open(cfg Config) (*Writer, error) {
	if cfg.File == "" {
		return nil, errors.New("cdr: no file")
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	w := &Writer{cfg: cfg, q: make(chan []byte, cfg.Queue), done: make(chan struct{})}
	if err := w.open(); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *Writer) open() error {
	if err := os.MkdirAll(filepath.Dir(w.cfg.File), 0o750); err != nil {
		return fmt.Errorf("cdr: %w", err)
	}
	f, err := os.OpenFile(w.cfg.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("cdr: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("cdr: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Marshal encodes r as one JSON line (with its newline).
func Marshal(r *Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write queues one encoded line (Marshal's output). It reports false,
// counting the record as dropped, when the queue is full or the Writer
// closed.
func (w *Writer) Write(line []byte) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Add(1)
		return false
	}
	select {
	case w.q <- line:
		return true
	default:
		w.dropped.Add(1)
		return false
	}
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Dropped: w.dropped.Load(), Failed: w.failed.Load(), Rotated: w.rotated.Load()}
}

// Close writes what is queued (waiting at most timeout), syncs and closes
// the file.
func (w *Writer) Close(timeout time.Duration) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.q)
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-time.After(timeout):
		return errors.New("cdr: close timed out with records queued")
	}
}

func (w *Writer) run() {
	defer close(w.done)
	defer func() {
		if w.f != nil {
			w.report(w.f.Sync())
			w.report(w.f.Close())
		}
	}()
	for line := range w.q {
		w.write(line)
		// Sync once the queue is empty: a burst costs one fsync.
		if len(w.q) == 0 && w.f != nil {
			w.report(w.f.Sync())
		}
	}
}

func (w *Writer) write(line []byte) {
	if w.f == nil {
		// A failed rotation left no file: try again.
		if err := w.open(); err != nil {
			w.failed.Add(1)
			w.report(err)
			return
		}
	}
	if w.cfg.MaxSize > 0 && w.size > 0 && w.size+int64(len(line)) > w.cfg.MaxSize {
		if err := w.rotate(); err != nil {
			w.failed.Add(1)
			w.report(err)
			return
		}
	}
	n, err := w.f.Write(line)
	w.size += int64(n)
	if err != nil {
		w.failed.Add(1)
		w.report(fmt.Errorf("cdr: %w", err))
		return
	}
	w.written.Add(1)
}

// rotate shifts FILE.i to FILE.i+1 (the oldest beyond MaxFiles goes),
// FILE to FILE.1, and opens a new FILE.
func (w *Writer) rotate() error {
	w.report(w.f.Sync())
	if err := w.f.Close(); err != nil {
		w.report(err)
	}
	w.f = nil
	name := w.cfg.File
	if w.cfg.MaxFiles == 0 {
		if err := os.Truncate(name, 0); err != nil {
			return fmt.Errorf("cdr: rotate: %w", err)
		}
	} else {
		_ = os.Remove(name + "." + strconv.Itoa(w.cfg.MaxFiles))
		for i := w.cfg.MaxFiles - 1; i >= 1; i-- {
			from := name + "." + strconv.Itoa(i)
			if _, err := os.Stat(from); err == nil {
				if err := os.Rename(from, name+"."+strconv.Itoa(i+1)); err != nil {
					return fmt.Errorf("cdr: rotate: %w", err)
				}
			}
		}
		if err := os.Rename(name, name+".1"); err != nil {
			return fmt.Errorf("cdr: rotate: %w", err)
		}
	}
	w.rotated.Add(1)
	return w.open()
}

func (w *Writer) report(err error) {
	if err != nil && w.cfg.OnError != nil {
		w.cfg.OnError(err)
	}
}
