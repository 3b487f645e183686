package validate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// addSeeds seeds a fuzz target with every corpus message (when the
// corpora are there) and a few built ones.
func addSeeds(f *testing.F) {
	dir := filepath.Join("..", "..", "..", "shared", "corpora")
	for _, pat := range []string{"rfc4475/*.dat", "rfc5118/*", "rfc5118/wire/*.sip"} {
		files, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, file := range files {
			if st, err := os.Stat(file); err != nil || st.IsDir() {
				continue
			}
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add(build(inviteLine, inviteHeaders(), sdpBody))
	f.Add(build("SIP/2.0 200 OK", resHeaders(), ""))
	f.Add(build("REGISTER sip:example.com SIP/2.0",
		with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0", "Contact: *"}, "Expires: 0", "Require: timer"), ""))
	f.Add([]byte("\r\n\r\n"))
}

// FuzzRaw: Raw never panics, always drops what it flags, and is a pure
// function of its input.
func FuzzRaw(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Raw(data, Options{})
		if r != nil && !r.Drop {
			t.Fatalf("Raw verdict %q without Drop", r.Why)
		}
		if r2 := Raw(data, Options{}); r2 != r {
			t.Fatalf("Raw not deterministic: %v then %v", r, r2)
		}
	})
}

// FuzzParseValidate runs the datagram path: Raw, sipgo's parser, then
// Request or Response. Nothing may panic (a panic inside sipgo's parser
// shows here too). A request that passes everything must not carry a bare
// CR or LF, or a control character outside a quoted string, in what the
// B2BUA would write from it: that is header injection towards a backend.
func FuzzParseValidate(f *testing.F) {
	addSeeds(f)
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		rawVerdict := Raw(data, Options{})
		// The stream parser (TCP, TLS) must not panic either.
		stream := parser.NewSIPStream()
		_ = stream.ParseSIPStream(data, func(m sip.Message) { validateMsg(m) })
		stream.Close()

		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		var r *Result
		switch m := msg.(type) {
		case *sip.Request:
			r = Request(m, Options{})
		case *sip.Response:
			r = Response(m, Options{})
			if r != nil && !r.Drop {
				t.Fatalf("Response verdict %q without Drop", r.Why)
			}
		}
		if r != nil {
			return
		}
		// Accepted by the stream path (no Raw): the serialised headers
		// must be clean. (Raw is not required to have passed: the stream
		// path must be safe on its own.)
		out := []byte(msg.String())
		end := bytes.Index(out, []byte("\r\n\r\n"))
		if end < 0 {
			t.Fatalf("serialised message has no header end: %q", out)
		}
		if bad := injection(out[:end+2]); bad >= 0 {
			t.Fatalf("accepted message (Raw: %v) serialises with a stray control byte at %d: %q", rawVerdict, bad, out[:end+2])
		}
	})
}

func validateMsg(m sip.Message) *Result {
	switch m := m.(type) {
	case *sip.Request:
		return Request(m, Options{})
	case *sip.Response:
		return Response(m, Options{})
	}
	return nil
}

// injection returns the offset of a CR or LF not in a CRLF pair, or of a
// control character outside a quoted string, or -1.
func injection(hdr []byte) int {
	inQ, esc := false, false
	for i := 0; i < len(hdr); i++ {
		c := hdr[i]
		if c == '\r' {
			if i+1 >= len(hdr) || hdr[i+1] != '\n' {
				return i
			}
			i++
			inQ, esc = false, false
			continue
		}
		if c == '\n' {
			return i
		}
		if esc {
			esc = false
			continue
		}
		switch {
		case inQ && c == '\\':
			esc = true
		case c == '"':
			inQ = !inQ
		case isCTL(c) && !inQ:
			return i
		case isCTL(c) && inQ:
			return i // unescaped inside quotes
		}
	}
	return -1
}

// FuzzFrame: Frame never panics and never claims more than data holds; a
// framed message is framed the same alone; and a framed message that
// passes Raw is exactly one message to sipgo's stream parser (the SBC
// hands sipgo one framed message at a time: if the two disagreed, sipgo
// would wait for bytes that belong to the next one).
func FuzzFrame(f *testing.F) {
	addSeeds(f)
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		n, r := Frame(data, Options{})
		if r != nil && (!r.Drop || n != 0) {
			t.Fatalf("Frame verdict %q with n=%d Drop=%v", r.Why, n, r.Drop)
		}
		if n < 0 || n > len(data) {
			t.Fatalf("Frame = %d for %d bytes", n, len(data))
		}
		if n == 0 {
			return
		}
		if n2, r2 := Frame(data[:n], Options{}); n2 != n || r2 != nil {
			t.Fatalf("the framed message alone: %d %v, want %d", n2, r2, n)
		}
		if Raw(data[:n], Options{}) != nil {
			return
		}
		var msgs int
		err := parser.NewSIPStream().ParseSIPStream(data[:n], func(sip.Message) { msgs++ })
		if err == nil && msgs != 1 {
			t.Fatalf("sipgo's stream parser found %d messages in one framed message", msgs)
		}
		if errors.Is(err, sip.ErrParseSipPartial) {
			t.Fatalf("sipgo's stream parser wants more bytes after a framed message: %q", data[:n])
		}
	})
}
