package audit

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/events"
)

// Config is an audit log's settings (policy [audit], converted by sbc).
type Config struct {
	// Events are the kinds written; empty: all of events.Kinds.
	Events []events.Kind
	// RedactFields names record members whose value is replaced by
	// Redacted: any of RedactableFields, or "detail.KEY" for one member
	// of detail.
	RedactFields []string
	// MaskDigits, when positive, masks caller_id and called_number: every
	// digit but the last MaskDigits becomes '*' (other characters stay).
	MaskDigits int

	// File is the path of the file output; empty: none.
	File string
	// MaxSize rotates the file when a record would take it over this many
	// bytes; 0: never.
	MaxSize int64
	// Keep is how many rotated files (FILE.1 … FILE.Keep) are kept.
	Keep int
	// Stdout, when not nil, is an output (os.Stdout in the SBC).
	Stdout io.Writer
	// Syslog is "udp://host:port" or "tcp://host:port"; empty: none.
	Syslog string
	// SyslogFacility is the RFC 5424 facility code (0–23).
	SyslogFacility int
	// Hostname and AppName fill RFC 5424's HOSTNAME and APP-NAME ("-"
	// when empty).
	Hostname, AppName string

	// QueueSize bounds each output's queue (records); 0: DefaultQueueSize.
	QueueSize int
	// Hooks count what the outputs do; nil members are skipped.
	Hooks Hooks
}

// Hooks report each output's records (output is "file", "stdout" or
// "syslog"). They are called from the output's goroutine, or from Emit
// for queue_full drops; they must not block.
type Hooks struct {
	// Written: a record was written.
	Written func(output string)
	// Dropped: a record was lost, with the reason: DropQueueFull,
	// DropWriteError or DropClosed.
	Dropped func(output, reason string)
}

// Reasons a record is dropped (values of Hooks.Dropped's reason).
const (
	DropQueueFull  = "queue_full"  // the output's queue was full (a slow disk or collector)
	DropWriteError = "write_error" // writing or encoding failed
	DropClosed     = "closed"      // the output was closed (a reload removed it, or shutdown)
)

// Output names.
const (
	OutputFile   = "file"
	OutputStdout = "stdout"
	OutputSyslog = "syslog"
)

// DefaultQueueSize is each output's queue bound when Config.QueueSize is 0.
const DefaultQueueSize = 4096

// Redacted replaces the value of a redacted field.
const Redacted = "[redacted]"

// RedactableFields are the record members redact_fields may name (and
// "detail.KEY").
var RedactableFields = []string{"session_id", "call_id", "caller_id", "called_number", "source_ip",
	"user_agent", "realm", "trunk", "actor", "reason", "duration_ms", "detail"}

// CheckRedactField reports whether name may be redacted.
func CheckRedactField(name string) error {
	if k, ok := strings.CutPrefix(name, "detail."); ok {
		if k == "" {
			return errors.New("detail. needs a key (detail.KEY)")
		}
		return nil
	}
	if slices.Contains(RedactableFields, name) {
		return nil
	}
	return fmt.Errorf("unknown field %q (want one of %s, or detail.KEY)", name, strings.Join(RedactableFields, ", "))
}

// Log is an audit log: an events.Sink writing to its outputs.
type Log struct {
	filter  map[events.Kind]bool // nil: every kind
	red     *redactor
	outputs []*output
	hooks   Hooks
}

// Open opens the outputs cfg names. Outputs of prev (a Log being
// replaced, or nil) that cfg names again are taken over as they are: the
// same file, queue and chain; their settings (MaxSize, Keep) are updated.
// Call prev.Retire(l) once l is in service to close the others.
func Open(cfg Config, prev *Log) (*Log, error) {
	l := &Log{hooks: cfg.Hooks, red: newRedactor(cfg.RedactFields, cfg.MaskDigits)}
	for _, f := range cfg.RedactFields {
		if err := CheckRedactField(f); err != nil {
			return nil, fmt.Errorf("audit: redact_fields: %w", err)
		}
	}
	if cfg.MaskDigits < 0 {
		return nil, errors.New("audit: mask_numbers must not be negative")
	}
	for _, k := range cfg.Events {
		if !k.Valid() {
			return nil, fmt.Errorf("audit: unknown event %q", k)
		}
		if l.filter == nil {
			l.filter = map[events.Kind]bool{}
		}
		l.filter[k] = true
	}
	qs := cfg.QueueSize
	if qs <= 0 {
		qs = DefaultQueueSize
	}
	reuse := func(key string) *output {
		if prev == nil {
			return nil
		}
		for _, o := range prev.outputs {
			if o.key == key {
				return o
			}
		}
		return nil
	}
	var opened []*output
	fail := func(err error) (*Log, error) {
		for _, o := range opened {
			o.close()
		}
		return nil, err
	}
	if cfg.File != "" {
		key := "file " + cfg.File
		if o := reuse(key); o != nil {
			o.w.(*fileWriter).set(cfg.MaxSize, cfg.Keep)
			l.outputs = append(l.outputs, o)
		} else {
			fw, seq, last, err := openFile(cfg.File, cfg.MaxSize, cfg.Keep)
			if err != nil {
				return fail(err)
			}
			o := startOutput(OutputFile, key, fw, qs, seq, last, cfg.Hooks)
			opened = append(opened, o)
			l.outputs = append(l.outputs, o)
		}
	}
	if cfg.Stdout != nil {
		key := fmt.Sprintf("stdout %p", cfg.Stdout)
		if o := reuse(key); o != nil {
			l.outputs = append(l.outputs, o)
		} else {
			o := startOutput(OutputStdout, key, &streamWriter{w: cfg.Stdout}, qs, 0, zeroHash, cfg.Hooks)
			opened = append(opened, o)
			l.outputs = append(l.outputs, o)
		}
	}
	if cfg.Syslog != "" {
		sw, err := newSyslogWriter(cfg.Syslog, cfg.SyslogFacility, cfg.Hostname, cfg.AppName)
		if err != nil {
			return fail(err)
		}
		key := "syslog " + sw.key()
		if o := reuse(key); o != nil {
			l.outputs = append(l.outputs, o)
		} else {
			o := startOutput(OutputSyslog, key, sw, qs, 0, zeroHash, cfg.Hooks)
			opened = append(opened, o)
			l.outputs = append(l.outputs, o)
		}
	}
	return l, nil
}

// Emit queues e for every output, unless the configuration filters its
// kind out. It never blocks: a full queue drops the record (counted).
func (l *Log) Emit(e events.Event) {
	if l.filter != nil && !l.filter[e.Kind] {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, o := range l.outputs {
		o.enqueue(item{ev: e, red: l.red})
	}
}

// Retire closes the outputs of l that next does not use (next may be
// nil: close them all), after writing what they have queued (bounded
// by closeTimeout each).
func (l *Log) Retire(next *Log) {
	if l == nil {
		return
	}
	var wg sync.WaitGroup
	for _, o := range l.outputs {
		if next != nil && slices.Contains(next.outputs, o) {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); o.close() }()
	}
	wg.Wait()
}

// Close writes what is queued and closes every output.
func (l *Log) Close() { l.Retire(nil) }

// Outputs names the Log's outputs, for logs and tests.
func (l *Log) Outputs() []string {
	var out []string
	for _, o := range l.outputs {
		out = append(out, o.name)
	}
	return out
}
