package sbc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sbc-project/sbc/internal/sipua"
)

type longStringer struct{ n int }

func (l longStringer) String() string { return strings.Repeat("s", l.n) }

// checkBoundedJSON fails t for any line of a JSON log whose message or
// any value (in groups too) is longer than a cut value can be, and
// returns how many values carried the cut marker.
func checkBoundedJSON(t *testing.T, log string) (cut int) {
	t.Helper()
	limit := maxLogValue + len("…[1000000000 bytes]")
	var walk func(line int, key string, v any)
	walk = func(line int, key string, v any) {
		switch x := v.(type) {
		case string:
			if len(x) > limit {
				t.Errorf("line %d: %s is %d bytes: %.80s…", line, key, len(x), x)
			}
			if strings.Contains(x, "…[") && strings.HasSuffix(x, " bytes]") {
				cut++
			}
		case map[string]any:
			for k, e := range x {
				walk(line, key+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(line, key, e)
			}
		}
	}
	for i, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %.200s", i+1, err, l)
		}
		walk(i+1, "", m)
	}
	return cut
}

func TestBoundHandlerCutsEveryKindOfValue(t *testing.T) {
	var buf syncBuffer
	lg := slog.New(newBoundHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	long := strings.Repeat("a", 8000)
	// A multi-byte rune across the cut: the cut value stays valid UTF-8.
	utf := strings.Repeat("é", maxLogValue)
	lg = lg.With("with", long)
	lg.WithGroup("g").Info(long, "s", long, "err", errors.New(long), "str", longStringer{9000},
		"any", []string{long}, "short", []string{"x", "y"}, slog.Group("grp", "inner", long), "utf", utf)
	out := buf.String()
	if cut := checkBoundedJSON(t, out); cut != 8 {
		t.Errorf("%d values cut, want 8 (message, with, s, err, str, any, grp.inner, utf):\n%s", cut, out)
	}
	if !strings.Contains(out, `"short":["x","y"]`) {
		t.Errorf("a short slice lost its shape: %s", out)
	}
	if !strings.Contains(out, "…[8000 bytes]") || !strings.Contains(out, "…[9000 bytes]") {
		t.Errorf("no marker with the original length: %s", out)
	}
	var m map[string]any
	_ = json.Unmarshal([]byte(out), &m)
	if u, _ := m["g"].(map[string]any)["utf"].(string); !utf8.ValidString(u) || !strings.HasPrefix(u, "éé") {
		t.Errorf("cut UTF-8 value %q", u)
	}
}

// Finding (issue 12): one 8 KB Request-URI made an 8 KB log line (sipgo's
// error for a request without CSeq quotes the start line; the SBC's own
// "call setup" line carried the request-URI user). Whatever a peer
// sends, on UDP or TCP, from a trunk or a stranger, no value of any line
// is longer than maxLogValue (and the cut says how long it was), and the
// trunk's calls still work.
func TestLogLinesBoundedUnderLongFields(t *testing.T) {
	var buf syncBuffer
	lg := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, envOpts{log: lg, headers: `[headers]
unknown_source_action = "reject"`})
	long := strings.Repeat("a", 8000)
	// The messages of one sender; tag keeps their transactions apart.
	msgs := func(tag string) []string {
		head := func(n int) string {
			return fmt.Sprintf("Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bK-%s%d\r\nFrom: <sip:a@b>;tag=%d\r\nTo: <sip:b@c>\r\nCall-ID: %s-%d\r\nMax-Forwards: 70\r\n", tag, n, n, tag, n)
		}
		return []string{
			"INVITE sip:" + long + "@x SIP/2.0\r\n" + head(1) + "Content-Length: 0\r\n\r\n",                   // no CSeq
			"INVITE sip:" + long + "@x SIP/2.0\r\n" + head(2) + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", // routed
			"OPTIONS sip:x SIP/2.0\r\n" + head(3) + "CSeq: 1 OPTIONS\r\nUser-Agent: " + long + "\r\nContent-Length: 0\r\n\r\n",
			"BYE sip:" + long + "@x SIP/2.0\r\n" + head(4) + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
			"SIP/2.0 200 " + long[:1000] + "\r\n" + head(5) + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
			"INVITE sip:x SIP/2.0\r\n" + head(6) + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" + long, // bytes after the message
			long, // not SIP
		}
	}
	tcpAddr, _ := e.sbc.ListenAddr("external", "tcp")
	for _, ip := range []string{callerIP, strangerIP} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", tcpAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs("tcp" + ip) {
			_, _ = c.Write([]byte(m))
		}
		defer c.Close()
	}
	stranger := e.newCaller(strangerIP + ":0")
	for _, c := range []*sipua.Caller{e.caller, stranger} {
		for _, m := range msgs("udp" + c.Addr()) {
			_ = c.Send(e.ctx, []byte(m), e.ext)
		}
	}
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	// The routed INVITE's "call setup" line names its request-URI user,
	// from UDP and from TCP.
	e.eventually("the long messages logged", func() bool {
		return strings.Count(buf.String(), `"ruri_user":"aaaaaaaa`) >= 2
	})
	if cut := checkBoundedJSON(t, buf.String()); cut == 0 {
		t.Fatal("no value was cut: the long fields were not logged at all")
	}
}

// A record or With with nothing to cut goes through as it is: the same
// line as without the bound handler, and no copy of its attributes.
func TestBoundHandlerPassesShortRecordsThrough(t *testing.T) {
	var a, b bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, at slog.Attr) slog.Attr {
		if at.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return at
	}}
	plain := slog.New(slog.NewJSONHandler(&a, opts)).With("call", "c1", "trunk", "t")
	bound := slog.New(newBoundHandler(slog.NewJSONHandler(&b, opts))).With("call", "c1", "trunk", "t")
	args := []any{"result", "answered", "ended_by", "caller", "source", "127.0.0.1:5060", "a_call_id", "x@y",
		"b_call_id", "z", "target", "127.0.0.2:5060", "setup_ms", 12, "err", errors.New("short"), "grp", slog.GroupValue(slog.Int("n", 1))}
	plain.Info("call ended", args...)
	bound.Info("call ended", args...)
	if a.String() != b.String() {
		t.Fatalf("bound line differs:\n%s\n%s", a.String(), b.String())
	}
	if raceEnabled {
		// The race detector makes sync.Pool drop items at random (slog's
		// buffers come from one): allocation counts are not comparable.
		return
	}
	next := slog.NewJSONHandler(io.Discard, opts)
	h := newBoundHandler(next)
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "call ended", 0)
	r.Add("a", 1, "b", "2", "c", 3, "d", "4", "e", 5, "f", "6", "g", 7)
	own := testing.AllocsPerRun(50, func() { _ = next.Handle(context.Background(), r) })
	if n := testing.AllocsPerRun(50, func() { _ = h.Handle(context.Background(), r) }); n != own {
		t.Errorf("%v allocations handling a record with nothing to cut, the handler alone %v", n, own)
	}
}
