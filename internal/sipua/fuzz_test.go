package sipua

import (
	"bytes"
	"net"
	"testing"
)

func FuzzParseRaw(f *testing.F) {
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n l: 3\r\nContent-Length: 2\r\n\r\nabc"))
	f.Add([]byte("SIP/2.0 200 OK\r\ni: x\r\n\r\n"))
	f.Add([]byte("\n\n\nSIP/2.0 99999999999999999999 X\n\n"))
	f.Add([]byte{0, 0xff, '\r', '\n', ':'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := parseRaw(raw)
		if len(m.Body) > len(raw) {
			t.Fatalf("body longer than message")
		}
		_ = m.Header("content-length")
		_ = m.CSeqMethod()
		_ = m.Head()
	})
}

// FuzzStreamFraming feeds arbitrary bytes in arbitrary chunks: framing must
// never panic, never buffer more than its bound, and never invent bytes.
func FuzzStreamFraming(f *testing.F) {
	f.Add([]byte("OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcMESSAGE sip:a SIP/2.0\r\nl: 0\r\n\r\n"), uint8(5))
	f.Add([]byte("\r\n\r\nX\r\nContent-Length: 99999999\r\n\r\n"), uint8(1))
	f.Add([]byte("A\r\nContent-Length: -1\r\n\r\n"), uint8(200))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		r := newRecorder(0)
		la := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
		ra := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
		n := int(chunk) + 1
		total := 0
		for i := 0; i < len(stream); i += n {
			for _, m := range r.feed("TCP", la, ra, stream[i:min(i+n, len(stream))]) {
				if !bytes.Contains(stream, m.Raw) {
					t.Fatalf("framed bytes not in the stream: %q", m.Raw)
				}
				total += len(m.Raw)
			}
		}
		if total > len(stream) {
			t.Fatalf("framed %d bytes out of %d", total, len(stream))
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, b := range r.streams {
			if b.Len() > maxStreamBuffer {
				t.Fatalf("buffered %d bytes", b.Len())
			}
		}
	})
}
