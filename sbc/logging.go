package sbc

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

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
// attack. This handler drops packet dumps, truncates long values, demotes
// sipgo's per-message errors to Debug, and counts parse failures as drops.
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
		if a.Value.Kind() == slog.KindString && len(a.Value.String()) > 200 {
			a = slog.String(a.Key, a.Value.String()[:200]+"…")
		}
		out.AddAttrs(a)
		return true
	})
	out.AddAttrs(slog.String("component", "sipgo"))
	return h.next.Handle(ctx, out)
}

// parseError is the error of a "failed to parse" record, at most 200
// bytes: it may quote the peer's bytes.
func parseError(r slog.Record) string {
	var e string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			e = a.Value.String()
			return false
		}
		return true
	})
	if len(e) > 200 {
		e = strings.ToValidUTF8(e[:200], "") + "…"
	}
	return e
}

func (h *sipgoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithAttrs(as), onParse: h.onParse}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithGroup(name), onParse: h.onParse}
}
