package sbc

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
)

// sipgo reads its package-level default logger from many goroutines
// without synchronisation, so it is set exactly once, before any goroutine
// runs, to a handler that forwards to whatever the newest SBC installed
// (sipgoTarget); with none installed, records are discarded.
var sipgoTarget atomic.Pointer[handlerBox]

type handlerBox struct{ h slog.Handler }

func init() {
	sip.SetDefaultLogger(slog.New(forwardHandler{}))
}

type forwardHandler struct {
	attrs []slog.Attr
	group string
}

func (f forwardHandler) handler() slog.Handler {
	b := sipgoTarget.Load()
	if b == nil {
		return nil
	}
	h := b.h
	if f.group != "" {
		h = h.WithGroup(f.group)
	}
	if len(f.attrs) > 0 {
		h = h.WithAttrs(f.attrs)
	}
	return h
}

func (f forwardHandler) Enabled(ctx context.Context, l slog.Level) bool {
	h := f.handler()
	return h != nil && h.Enabled(ctx, l)
}

func (f forwardHandler) Handle(ctx context.Context, r slog.Record) error {
	if h := f.handler(); h != nil {
		return h.Handle(ctx, r)
	}
	return nil
}

func (f forwardHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return forwardHandler{attrs: append(append([]slog.Attr{}, f.attrs...), as...), group: f.group}
}

func (f forwardHandler) WithGroup(name string) slog.Handler {
	return forwardHandler{attrs: f.attrs, group: name}
}

// sipgoLogHandler wraps the SBC's handler for sipgo's own log lines. sipgo
// logs whole packets (attribute "data") at Error level when it fails to
// parse one, which turns a malformed-message flood into a disk-filling
// attack. This handler drops packet dumps, demotes sipgo's per-message
// errors (to Debug for parse failures, Warn for the others), and counts
// parse failures as drops; long values are cut by the boundHandler under
// it.
type sipgoLogHandler struct {
	next    slog.Handler
	onParse func(err string) // called once per "failed to parse" record, with its error (truncated)
}

func (h *sipgoLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Parse failures (logged by sipgo at Error) must be counted even when
	// they are not logged; below Error, only what the SBC's level shows.
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h *sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	level := r.Level
	if strings.HasPrefix(r.Message, "failed to parse") {
		if h.onParse != nil {
			h.onParse(parseError(r))
		}
		level = slog.LevelDebug
	} else if level >= slog.LevelError {
		// sipgo reports per-message problems (unmatched responses, write
		// failures) as errors; they are the peers' doing, not ours.
		level = slog.LevelWarn
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "data", "msg", "req", "res", "sipmsg":
			// packet or message dumps: never
			return true
		}
		out.AddAttrs(a) // bounded by next (boundHandler)
		return true
	})
	out.AddAttrs(slog.String("component", "sipgo"))
	return h.next.Handle(ctx, out)
}

// parseError is the error of a "failed to parse" record, bounded: it
// may quote the peer's bytes.
func parseError(r slog.Record) string {
	var e string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			e = a.Value.String()
			return false
		}
		return true
	})
	return truncate(e)
}

func (h *sipgoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithAttrs(as), onParse: h.onParse}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithGroup(name), onParse: h.onParse}
}

// A log line never carries more than maxLogValue bytes of any one value:
// request URIs, header values, reason phrases and sipgo's errors (which
// quote the start line) come from the peer, and one 8 KB Request-URI
// must not make an 8 KB line. boundHandler wraps the SBC's handler (its
// own lines and sipgo's) and cuts every value, however it is given
// (string, error, Stringer, any other value, in groups too), keeping the
// first maxLogValue bytes and a marker with the length of the whole.
const maxLogValue = 256

// boundHandler cuts long values (see maxLogValue) before next sees them.
type boundHandler struct{ next slog.Handler }

func newBoundHandler(h slog.Handler) slog.Handler {
	if b, ok := h.(*boundHandler); ok {
		return b
	}
	return &boundHandler{next: h}
}

func (h *boundHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *boundHandler) Handle(ctx context.Context, r slog.Record) error {
	if !needsBound(r) {
		// Nothing to cut: the record as it is, without copying its
		// attributes into a new one (an allocation past five).
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, truncate(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(boundAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// needsBound reports whether boundHandler.Handle changes anything of r.
func needsBound(r slog.Record) bool {
	if len(r.Message) > maxLogValue {
		return true
	}
	need := false
	r.Attrs(func(a slog.Attr) bool {
		if _, changed := boundAttrChanged(a); changed {
			need = true
			return false
		}
		return true
	})
	return need
}

func (h *boundHandler) WithAttrs(as []slog.Attr) slog.Handler {
	unchanged := true
	for _, a := range as {
		if _, changed := boundAttrChanged(a); changed {
			unchanged = false
			break
		}
	}
	if unchanged {
		// The handler owns as (slog.Handler.WithAttrs): it goes on as
		// it is when nothing in it is cut.
		return &boundHandler{next: h.next.WithAttrs(as)}
	}
	bs := make([]slog.Attr, len(as))
	for i, a := range as {
		bs[i] = boundAttr(a)
	}
	return &boundHandler{next: h.next.WithAttrs(bs)}
}

func (h *boundHandler) WithGroup(name string) slog.Handler {
	return &boundHandler{next: h.next.WithGroup(truncate(name))}
}

// boundAttr returns a with its key and value cut to maxLogValue bytes.
func boundAttr(a slog.Attr) slog.Attr {
	b, _ := boundAttrChanged(a)
	return b
}

// boundAttrChanged is boundAttr, and whether its result may differ from
// a: a key or value cut, a LogValuer resolved, a group (rebuilt).
func boundAttrChanged(a slog.Attr) (slog.Attr, bool) {
	changed := len(a.Key) > maxLogValue || a.Value.Kind() == slog.KindLogValuer
	a.Key = truncate(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); len(s) > maxLogValue {
			v = slog.StringValue(truncate(s))
			changed = true
		}
	case slog.KindGroup:
		changed = true
		g := v.Group()
		bs := make([]slog.Attr, len(g))
		for i, ga := range g {
			bs[i] = boundAttr(ga)
		}
		v = slog.GroupValue(bs...)
	case slog.KindAny:
		// Errors, Stringers and other values are rendered the way the
		// handlers would render them; only a long rendering is replaced
		// by its cut string (short ones keep their type: a JSON handler
		// may print a slice as an array).
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		default:
			s = fmt.Sprint(x)
		}
		if len(s) > maxLogValue {
			v = slog.StringValue(truncate(s))
			changed = true
		}
	}
	a.Value = v
	return a, changed
}

// truncate cuts s to maxLogValue bytes (never inside a UTF-8 sequence)
// and marks the cut with the length of the whole.
func truncate(s string) string {
	if len(s) <= maxLogValue {
		return s
	}
	cut := s[:maxLogValue]
	for i := 0; i < utf8.UTFMax && len(cut) > 0 && !utf8.ValidString(cut); i++ {
		cut = cut[:len(cut)-1]
	}
	return strings.ToValidUTF8(cut, "") + "…[" + strconv.Itoa(len(s)) + " bytes]"
}
