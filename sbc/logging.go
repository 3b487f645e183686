package sbc

import (
	"context"
	"log/slog"
	"strings"
)

// sipgoLogHandler wraps the SBC's handler for sipgo's own log lines. sipgo
// logs whole packets (attribute "data") at Error level when it fails to
// parse one, which turns a malformed-message flood into a disk-filling
// attack. This handler drops packet dumps, truncates long values, demotes
// sipgo's per-message errors to Debug, and counts parse failures as drops.
type sipgoLogHandler struct {
	next    slog.Handler
	onParse func() // called once per "failed to parse" record
}

func (h *sipgoLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Parse failures must be counted even when they are not logged.
	return true
}

func (h *sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	level := r.Level
	if strings.HasPrefix(r.Message, "failed to parse") {
		if h.onParse != nil {
			h.onParse()
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

func (h *sipgoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithAttrs(as), onParse: h.onParse}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{next: h.next.WithGroup(name), onParse: h.onParse}
}
