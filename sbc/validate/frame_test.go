package validate

import (
	"strings"
	"testing"
)

func TestFrame(t *testing.T) {
	msg := func(hdrs, body string) string {
		return "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n" + hdrs + "\r\n" + body
	}
	one := msg("Content-Length: 5\r\n", "hello")
	cases := []struct {
		name string
		data string
		n    int    // length of the first message; 0: none yet or a verdict
		why  string // the verdict's Why
	}{
		{"whole", one, len(one), ""},
		{"two in a row", one + one, len(one), ""},
		{"no body", msg("Content-Length: 0\r\n", ""), len(msg("Content-Length: 0\r\n", "")), ""},
		{"header cut", one[:30], 0, ""},
		{"body cut", one[:len(one)-1], 0, ""},
		{"empty line cut", strings.TrimSuffix(msg("Content-Length: 0\r\n", ""), "\n"), 0, ""},
		{"compact form", msg("l: 5\r\n", "hello"), len(msg("l: 5\r\n", "hello")), ""},
		{"folded value", msg("Content-Length:\r\n  5\r\n", "hello"), len(msg("Content-Length:\r\n  5\r\n", "hello")), ""},
		{"twice, same value", msg("Content-Length: 5\r\nl: 5\r\n", "hello"), len(msg("Content-Length: 5\r\nl: 5\r\n", "hello")), ""},
		{"twice, different values", msg("Content-Length: 5\r\nContent-Length: 0\r\n", "hello"), 0, "dup_header_content_length"},
		{"missing", msg("", "hello"), 0, "missing_header_content_length"},
		{"not digits", msg("Content-Length: five\r\n", "hello"), 0, "bad_content_length"},
		{"negative", msg("Content-Length: -1\r\n", ""), 0, "bad_content_length"},
		{"empty value", msg("Content-Length: \r\n", ""), 0, "bad_content_length"},
		{"body over the limit", msg("Content-Length: 20000\r\n", ""), 0, "too_large"},
		{"huge value", msg("Content-Length: 99999999999999999999\r\n", ""), 0, "bad_content_length"},
		{"endless header", "INVITE sip:b SIP/2.0\r\nX: " + strings.Repeat("a", DefaultMaxMessageSize), 0, "too_large"},
		{"header over the limit", msg("X: "+strings.Repeat("a", DefaultMaxMessageSize)+"\r\nContent-Length: 0\r\n", ""), 0, "too_large"},
		{"line without colon ignored", msg("garbage\r\nContent-Length: 0\r\n", ""), len(msg("garbage\r\nContent-Length: 0\r\n", "")), ""},
		{"response", "SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", len("SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, r := Frame([]byte(c.data), Options{})
			why := ""
			if r != nil {
				why = r.Why
				if !r.Drop {
					t.Errorf("verdict %q without Drop", r.Why)
				}
			}
			if n != c.n || why != c.why {
				t.Errorf("Frame = %d, %q; want %d, %q", n, why, c.n, c.why)
			}
		})
	}
}

func TestFrameDoesNotAllocate(t *testing.T) {
	data := []byte("INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\nl: 5\r\n\r\nhello")
	if a := testing.AllocsPerRun(100, func() { Frame(data, Options{}) }); a != 0 {
		t.Fatalf("%v allocations per Frame", a)
	}
}
