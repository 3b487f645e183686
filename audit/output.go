package audit

import (
	"crypto/sha256"
	"io"
	"sync"
	"time"

	"github.com/sbc-project/sbc/events"
)

// closeTimeout bounds how long closing an output waits for its queue to
// be written.
const closeTimeout = 5 * time.Second

// item is a queued event with the redaction in force when it was emitted.
type item struct {
	ev  events.Event
	red *redactor
}

// record is what a writer writes: the line and what syslog needs of it.
type record struct {
	line []byte // JSON, ending in '\n'
	seq  uint64
	kind events.Kind
	ts   time.Time
}

// writer is an output's medium. Its methods are called from the output's
// goroutine only.
type writer interface {
	write(r record) error
	// flush is called when the queue is empty (fsync for a file).
	flush() error
	close() error
}

// output is one output with its queue, goroutine and chain.
type output struct {
	name  string
	key   string // identity across reloads
	w     writer
	q     chan item
	hooks Hooks

	// mu orders enqueue against close: once closed is set (under the
	// write lock) no item enters q, so the goroutine's last drain sees
	// everything that was queued.
	mu       sync.RWMutex
	closed   bool
	stop     chan struct{}
	exited   chan struct{}
	stopOnce sync.Once

	chain chain // the goroutine's
}

func startOutput(name, key string, w writer, qs int, seq uint64, last [sha256.Size]byte, h Hooks) *output {
	o := &output{name: name, key: key, w: w, q: make(chan item, qs), hooks: h,
		stop: make(chan struct{}), exited: make(chan struct{}), chain: chain{seq: seq, prev: last}}
	go o.run()
	return o
}

func (o *output) dropped(reason string) {
	if o.hooks.Dropped != nil {
		o.hooks.Dropped(o.name, reason)
	}
}

// enqueue never blocks.
func (o *output) enqueue(it item) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		o.dropped(DropClosed)
		return
	}
	select {
	case o.q <- it:
		o.mu.RUnlock()
	default:
		o.mu.RUnlock()
		o.dropped(DropQueueFull)
	}
}

func (o *output) run() {
	defer close(o.exited)
	for {
		select {
		case it := <-o.q:
			o.write(it)
			o.drain()
		case <-o.stop:
			// Nothing enters q any more (closed is set): write what
			// is there and close.
			o.drain()
			_ = o.w.close()
			return
		}
	}
}

// drain writes what is queued, then flushes.
func (o *output) drain() {
	for {
		select {
		case it := <-o.q:
			o.write(it)
		default:
			if err := o.w.flush(); err != nil {
				o.dropped(DropWriteError)
			}
			return
		}
	}
}

func (o *output) write(it item) {
	m := it.red.record(it.ev)
	line, next, err := o.chain.seal(m)
	if err == nil {
		err = o.w.write(record{line: line, seq: next.seq, kind: it.ev.Kind, ts: it.ev.Time})
	}
	if err != nil {
		o.dropped(DropWriteError)
		return
	}
	o.chain = next
	if o.hooks.Written != nil {
		o.hooks.Written(o.name)
	}
}

// close stops the output after its queue is written (bounded).
func (o *output) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.stopOnce.Do(func() { close(o.stop) })
	select {
	case <-o.exited:
	case <-time.After(closeTimeout):
	}
}

// streamWriter writes lines to an io.Writer (stdout).
type streamWriter struct{ w io.Writer }

func (s *streamWriter) write(r record) error {
	_, err := s.w.Write(r.line)
	return err
}
func (s *streamWriter) flush() error { return nil }
func (s *streamWriter) close() error { return nil }
