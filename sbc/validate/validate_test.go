package validate

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const sdpBody = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// build joins header lines into a message; "%BODY%" in a line is replaced
// by the length of body, so that Content-Length can be written either way.
func build(start string, headers []string, body string) []byte {
	var b strings.Builder
	b.WriteString(start + "\r\n")
	for _, h := range headers {
		b.WriteString(strings.ReplaceAll(h, "%BODY%", fmt.Sprint(len(body))) + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return []byte(b.String())
}

func inviteHeaders() []string {
	return []string{
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
		"Max-Forwards: 70",
		"To: Bob <sip:bob@example.com>",
		"From: Alice <sip:alice@example.org>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33.example.org",
		"CSeq: 314159 INVITE",
		"Contact: <sip:alice@192.0.2.1:5060>",
		"Content-Type: application/sdp",
		"Content-Length: %BODY%",
	}
}

// with returns the INVITE headers with every header named like one of
// repl replaced by it (or removed when repl is "Name:-"), and extra added
// at the end.
func with(repl []string, extra ...string) []string {
	hs := inviteHeaders()
	for _, r := range repl {
		name := r[:strings.IndexByte(r, ':')]
		for i, h := range hs {
			if strings.HasPrefix(h, name+":") {
				if strings.HasSuffix(r, ":-") {
					hs = append(hs[:i], hs[i+1:]...)
				} else {
					hs[i] = r
				}
				break
			}
		}
	}
	return append(hs, extra...)
}

func resHeaders() []string {
	return []string{
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
		"To: Bob <sip:bob@example.com>;tag=a6c85cf",
		"From: Alice <sip:alice@example.org>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33.example.org",
		"CSeq: 314159 INVITE",
		"Content-Length: 0",
	}
}

const inviteLine = "INVITE sip:bob@example.com SIP/2.0"

func TestMessages(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		dgram  string // as a datagram: Raw, parse, Request/Response
		stream string // without Raw; "" means the same as dgram
	}{
		{"typical INVITE", build(inviteLine, inviteHeaders(), sdpBody), "accept", ""},
		{"typical 200", build("SIP/2.0 200 OK", resHeaders(), ""), "accept", ""},
		{"empty", []byte{}, "drop:raw bad_start_line", "drop:parse"},

		// Duplicates, compact forms counting as the same header.
		{"dup To compact", build(inviteLine, with(nil, "t: <sip:carol@example.com>"), sdpBody), "400 dup_header_to", ""},
		{"dup From compact", build(inviteLine, with(nil, "f: <sip:carol@example.com>;tag=9"), sdpBody), "400 dup_header_from", ""},
		{"dup Call-ID compact", build(inviteLine, with(nil, "i: other@example.org"), sdpBody), "400 dup_header_call_id", ""},
		{"dup CSeq", build(inviteLine, with(nil, "CSeq: 314159 INVITE"), sdpBody), "400 dup_header_cseq", ""},
		{"dup Max-Forwards", build(inviteLine, with(nil, "Max-Forwards: 70"), sdpBody), "400 dup_header_max_forwards", ""},
		{"dup Content-Length compact same value", build(inviteLine, with(nil, "l: %BODY%"), sdpBody), "400 dup_header_content_length", ""},
		{"dup Content-Type compact", build(inviteLine, with(nil, "c: application/sdp"), sdpBody), "400 dup_header_content_type", ""},
		{"dup Expires", build(inviteLine, with(nil, "Expires: 60", "expires: 60"), sdpBody), "400 dup_header_expires", ""},
		{"two Contacts in INVITE", build(inviteLine, with(nil, "m: <sip:alice@192.0.2.9>"), sdpBody), "400 dup_header_contact", ""},
		{"two To values on one line", build(inviteLine, with([]string{"To: sip:bob@example.com, sip:carol@example.com"}), sdpBody), "drop:raw multiple_values", "drop:parse"},

		// Missing headers.
		// Without Via or CSeq sipgo cannot key a transaction: as a datagram
		// Raw drops it (sipgo would answer a stateless 400 itself).
		{"no Via", build(inviteLine, with([]string{"Via:-"}), sdpBody), "drop:raw missing_header_via", "400 missing_header_via"},
		{"no CSeq", build(inviteLine, with([]string{"CSeq:-"}), sdpBody), "drop:raw missing_header_cseq", "400 missing_header_cseq"},
		{"no Call-ID", build(inviteLine, with([]string{"Call-ID:-"}), sdpBody), "400 missing_header_call_id", ""},
		{"no From", build(inviteLine, with([]string{"From:-"}), sdpBody), "400 missing_header_from", ""},
		{"no Max-Forwards tolerated (RFC 2543)", build(inviteLine, with([]string{"Max-Forwards:-"}), sdpBody), "accept", ""},
		{"no Content-Type with a body", build(inviteLine, with([]string{"Content-Type:-"}), sdpBody), "400 missing_content_type", ""},

		// CSeq and Max-Forwards.
		{"CSeq method mismatch", build(inviteLine, with([]string{"CSeq: 1 OPTIONS"}), sdpBody), "400 cseq_method_mismatch", ""},
		{"CSeq at 2^31-1", build(inviteLine, with([]string{"CSeq: 2147483647 INVITE"}), sdpBody), "accept", ""},
		{"CSeq over 2^31-1", build(inviteLine, with([]string{"CSeq: 2147483648 INVITE"}), sdpBody), "drop:parse", ""},
		{"CSeq without method", build(inviteLine, with([]string{"CSeq: 1"}), sdpBody), "drop:parse", ""},
		{"CSeq two values", build(inviteLine, with([]string{"CSeq: 1 INVITE, 2 INVITE"}), sdpBody), "400 bad_cseq", ""},
		{"Max-Forwards 0", build(inviteLine, with([]string{"Max-Forwards: 0"}), sdpBody), "483 max_forwards_zero", ""},
		{"Max-Forwards 255", build(inviteLine, with([]string{"Max-Forwards: 255"}), sdpBody), "accept", ""},
		{"Max-Forwards 256", build(inviteLine, with([]string{"Max-Forwards: 256"}), sdpBody), "400 max_forwards_range", ""},
		{"Max-Forwards 300 on ACK is dropped", build("ACK sip:bob@example.com SIP/2.0",
			with([]string{"Max-Forwards: 300", "CSeq: 314159 ACK"}), sdpBody), "drop max_forwards_range", ""},

		// Version and start line.
		{"SIP/7.0", build("INVITE sip:bob@example.com SIP/7.0", inviteHeaders(), sdpBody), "505 bad_version", ""},
		{"lower-case version", build("INVITE sip:bob@example.com sip/2.0", inviteHeaders(), sdpBody), "accept", ""},
		{"version garbage", build("INVITE sip:bob@example.com SIP/x", inviteHeaders(), sdpBody), "drop:raw bad_start_line", "400 bad_version_syntax"},
		{"response version 1.0", build("SIP/1.0 200 OK", resHeaders(), ""), "drop bad_version", ""},
		{"status 99", build("SIP/2.0 099 Odd", resHeaders(), ""), "drop bad_status", ""},
		{"status 700", build("SIP/2.0 700 Odd", resHeaders(), ""), "drop bad_status", ""},
		{"status 4 digits", build("SIP/2.0 2000 OK", resHeaders(), ""), "drop:raw bad_start_line", "drop bad_status"},

		// Request-URI.
		{"tel R-URI", build("INVITE tel:+15551234567 SIP/2.0", inviteHeaders(), sdpBody), "accept", ""},
		{"unknown R-URI scheme", build("INVITE urn:service:sos SIP/2.0", inviteHeaders(), sdpBody), "416 unsupported_scheme", ""},
		{"R-URI with headers", build("INVITE sip:bob@example.com?Subject=x SIP/2.0", inviteHeaders(), sdpBody), "400 request_uri_headers", ""},
		{"R-URI IPv6 unbracketed", build("INVITE sip:bob@2001:db8::1 SIP/2.0", inviteHeaders(), sdpBody), "drop:raw ipv6_unbracketed", "drop:parse"},
		{"R-URI IPv6 bracketed", build("INVITE sip:bob@[2001:db8::1]:5060 SIP/2.0", inviteHeaders(), sdpBody), "accept", ""},
		{"R-URI bad host char", build("INVITE sip:bob@exa$mple.com SIP/2.0", inviteHeaders(), sdpBody), "400 bad_request_uri", ""},
		{"R-URI negative port", build("INVITE sip:bob@example.com:-1 SIP/2.0", inviteHeaders(), sdpBody), "400 bad_request_uri", ""},

		// Extensions.
		{"Require supported", build(inviteLine, with(nil, "Require: timer, 100rel", "Supported: replaces"), sdpBody), "accept", ""},
		{"Require unknown", build(inviteLine, with(nil, "Require: foo"), sdpBody), "420 bad_extension", ""},
		{"Require unknown on CANCEL is ignored", build("CANCEL sip:bob@example.com SIP/2.0",
			with([]string{"CSeq: 314159 CANCEL", "Content-Length: 0", "Content-Type:-"}, "Require: foo"), ""), "accept", ""},
		{"Require bad token", build(inviteLine, with(nil, "Require: fo o"), sdpBody), "400 bad_option_tag", ""},

		// Bodies.
		{"multipart INVITE", build(inviteLine, with([]string{"Content-Type: multipart/mixed;boundary=x"}), sdpBody), "accept", ""},
		{"INVITE with text body", build(inviteLine, with([]string{"Content-Type: text/plain"}), sdpBody), "415 unsupported_media_type", ""},
		{"MESSAGE with text body", build("MESSAGE sip:bob@example.com SIP/2.0",
			with([]string{"CSeq: 2 MESSAGE", "Content-Type: text/plain"}), "hello"), "accept", ""},
		{"Accept */*", build(inviteLine, with(nil, "Accept: text/plain, */*;q=0.1"), sdpBody), "accept", ""},
		{"Accept without SDP", build(inviteLine, with(nil, "Accept: text/plain"), sdpBody), "406 not_acceptable", ""},
		{"Content-Length larger than body", build(inviteLine, with([]string{"Content-Length: 900"}), sdpBody), "drop:raw content_length_mismatch", "drop:parse"},
		{"Content-Length smaller than body", build(inviteLine, with([]string{"Content-Length: 10"}), sdpBody), "accept", ""},
		{"Content-Length negative", build(inviteLine, with([]string{"Content-Length: -1"}), sdpBody), "drop:raw bad_content_length", "drop:parse"},
		{"Content-Length overflow", build(inviteLine, with([]string{"Content-Length: 99999999999999999999"}), sdpBody), "drop:raw bad_content_length", "drop:parse"},
		{"Content-Length folded", build(inviteLine, with([]string{"Content-Length:\r\n %BODY%"}), sdpBody), "accept", ""},
		{"Content-Length two numbers", build(inviteLine, with([]string{"Content-Length: 1 2"}), sdpBody), "drop:raw bad_content_length", "drop:parse"},
		{"Content-Type without subtype", build(inviteLine, with([]string{"Content-Type: sdp"}), sdpBody), "400 bad_content_type", ""},

		// Scalars (RFC 4475 3.1.2.4 with a CSeq sipgo can parse).
		{"Expires overlarge", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0"}, "Expires: 10000000000000000000000"), ""), "400 bad_expires", ""},
		{"Expires 2^32-1", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0"}, "Expires: 4294967295"), ""), "accept", ""},
		{"Expires date (RFC 2543)", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0"}, "Expires: Thu, 01 Dec 1994 16:00:00 GMT"), ""), "400 bad_expires", ""},
		{"Contact expires overlarge", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0", "Contact: <sip:a@192.0.2.1>\r\n  ;expires=280297596632815"}), ""),
			"400 contact_expires", ""},
		{"Session-Expires", build(inviteLine, with(nil, "x: 1800;refresher=uac", "Min-SE: 90"), sdpBody), "accept", ""},
		{"Session-Expires bad", build(inviteLine, with(nil, "Session-Expires: soon"), sdpBody), "400 bad_session_expires", ""},
		{"RSeq zero", build("PRACK sip:bob@example.com SIP/2.0",
			with([]string{"CSeq: 2 PRACK", "Content-Type:-", "Content-Length: 0"}, "RAck: 1 314159 INVITE"), ""), "accept", ""},
		{"RAck bad", build("PRACK sip:bob@example.com SIP/2.0",
			with([]string{"CSeq: 2 PRACK", "Content-Type:-", "Content-Length: 0"}, "RAck: 1 INVITE"), ""), "400 bad_rack", ""},
		{"response Retry-After overlarge", build("SIP/2.0 503 Service Unavailable", append(resHeaders(), "Retry-After: 949302838503028349304023988"), ""),
			"drop bad_retry_after", ""},
		{"response Retry-After with comment", build("SIP/2.0 503 Service Unavailable", append(resHeaders(), "Retry-After: 18000 (maintenance);duration=3600"), ""),
			"accept", ""},
		{"response Warning 4 digits", build("SIP/2.0 200 OK", append(resHeaders(), `Warning: 1812 overture "In Progress"`), ""), "drop bad_warning", ""},
		{"response Warning ok", build("SIP/2.0 200 OK", append(resHeaders(), `Warning: 301 isi.edu "Incompatible \"x\", y", 399 [::1]:5060 "z"`), ""), "accept", ""},
		{"response RSeq zero", build("SIP/2.0 180 Ringing", append(resHeaders(), "RSeq: 0"), ""), "drop bad_rseq", ""},

		// Contact.
		{"Contact wildcard REGISTER Expires 0", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0", "Contact: *"}, "Expires: 0"), ""), "accept", ""},
		{"Contact wildcard without Expires 0", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0", "Contact: *"}, "Expires: 60"), ""), "400 contact_wildcard", ""},
		{"Contact wildcard in INVITE", build(inviteLine, with([]string{"Contact: *"}), sdpBody), "400 contact_wildcard", ""},
		{"Contact tel", build(inviteLine, with([]string{"Contact: <tel:+15551234567>"}), sdpBody), "400 contact_scheme", ""},
		{"Contact unbracketed ?", build(inviteLine, with([]string{"Contact: sip:a@192.0.2.1?Route=x"}), sdpBody), "drop:raw unbracketed_uri", "accept"},
		{"Contact unbalanced quote", build(inviteLine, with([]string{`Contact: "Alice <sip:a@192.0.2.1>`}), sdpBody), "drop:raw unbalanced_quote", "drop:parse"},

		// Stray separators (Raw only: sipgo drops empty parameters).
		{"Contact ;;", build(inviteLine, with([]string{"Contact: <sip:a@192.0.2.1>;;x"}), sdpBody), "drop:raw stray_separator", "accept"},
		{"Contact ends with ;", build(inviteLine, with([]string{"Contact: <sip:a@192.0.2.1>; "}), sdpBody), "drop:raw stray_separator", "accept"},
		{"Contact ; then ; after a fold", build(inviteLine, with([]string{"Contact: <sip:a@192.0.2.1>;\r\n \r\n ;x"}), sdpBody), "drop:raw stray_separator", "accept"},
		{"Contact ; then param after a fold", build(inviteLine, with([]string{"Contact: <sip:a@192.0.2.1>;\r\n x=1"}), sdpBody), "accept", ""},
		{"Via ends with ;", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;"}), sdpBody), "drop:raw stray_separator", "accept"},
		{"Via ,,", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx,,SIP/2.0/UDP 192.0.2.2"}), sdpBody), "drop:raw stray_separator", "400 bad_via"},
		{"two Contacts in REGISTER", build("REGISTER sip:example.com SIP/2.0",
			with([]string{"CSeq: 1 REGISTER", "Content-Type:-", "Content-Length: 0", "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>;expires=60"}), ""), "accept", ""},
		{"; inside quotes and <>", build(inviteLine, with([]string{`To: "a;;b" <sip:bob@example.com;;x>`}), sdpBody), "accept", ""},

		// To / From.
		{"To tel", build(inviteLine, with([]string{"To: <tel:+15551234567>"}), sdpBody), "accept", ""},
		{"From http", build(inviteLine, with([]string{"From: <http://example.com>;tag=1"}), sdpBody), "400 bad_from", ""},

		// Via.
		{"Via without branch (RFC 2543)", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1"}), sdpBody), "accept", ""},
		{"Via without branch, From without tag", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1", "From: <sip:alice@example.org>"}), sdpBody),
			"drop:raw missing_from_tag", "accept"},
		{"Via without branch, From tag in the URI only", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1", "From: <sip:alice@example.org;tag=1>"}), sdpBody),
			"drop:raw missing_from_tag", "accept"},
		{"Via without branch, no From", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1", "From:-"}), sdpBody),
			"drop:raw missing_header_from", "400 missing_header_from"},
		{"branch without cookie, From tag", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1;branch=1234"}), sdpBody), "accept", ""},
		{"branch in the second Via value only", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1, SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKx",
			"From: <sip:alice@example.org>"}), sdpBody), "drop:raw missing_from_tag", "400 bad_via"},
		{"branch on a continuation line", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bKx",
			"From: <sip:alice@example.org>"}), sdpBody), "accept", ""},
		{"Branch in capitals is not sipgo's branch", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1;Branch=z9hG4bKx",
			"From: <sip:alice@example.org>"}), sdpBody), "drop:raw missing_from_tag", "accept"},
		{"compact Via and From", build(inviteLine, with([]string{"Via:-", "From:-"}, "v: SIP/2.0/UDP 192.0.2.1", "f: <sip:alice@example.org>;tag=7"), sdpBody), "accept", ""},
		{"response branch without cookie", build("SIP/2.0 200 OK", append([]string{"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=1"}, resHeaders()[1:]...), ""),
			"drop:raw bad_via", "accept"},
		{"response without CSeq", build("SIP/2.0 200 OK", resHeaders()[:4], ""), "drop:raw missing_header_cseq", "drop missing_header_cseq"},
		{"Via bare cookie", build(inviteLine, with([]string{"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK"}), sdpBody), "400 via_branch_bare_cookie", ""},
		{"Via version 3.0", build(inviteLine, with([]string{"Via: SIP/3.0/UDP 192.0.2.1;branch=z9hG4bKx"}), sdpBody), "400 bad_via", ""},
		{"Via IPv6", build(inviteLine, with([]string{"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx"}), sdpBody), "accept", ""},
		{"response without Via", build("SIP/2.0 200 OK", resHeaders()[1:], ""), "drop:raw missing_header_via", "drop missing_header_via"},

		// Call-ID.
		{"Call-ID with space", build(inviteLine, with([]string{"Call-ID: a b@example.org"}), sdpBody), "400 bad_call_id", ""},
		{"Call-ID two @", build(inviteLine, with([]string{"Call-ID: a@b@example.org"}), sdpBody), "400 bad_call_id", ""},

		// Control characters and line structure.
		{"bare LF inside a To value", build(inviteLine, with([]string{"To: <sip:bob@example.com>;tag=1\nFrom: <sip:evil@example.net>"}), sdpBody),
			"drop:raw bad_line_ending", "400 bad_to"},
		{"bare LF inside a generic value", build(inviteLine, with(nil, "Subject: hi\nX-Evil: 1"), sdpBody), "drop:raw bad_line_ending", "400 bad_char"},
		{"bare CR", build(inviteLine, with(nil, "Subject: hi\rthere"), sdpBody), "drop:raw bad_line_ending", "drop:parse"},
		{"NUL outside quotes", build(inviteLine, with(nil, "Subject: a\x00b"), sdpBody), "drop:raw bad_char", "400 bad_char"},
		{"NUL as a quoted-pair", build(inviteLine, with([]string{"To: \"a\\\x00b\" <sip:bob@example.com>"}), sdpBody), "accept", ""},
		{"BEL in a quoted string, unescaped", build(inviteLine, with([]string{"To: \"a\x07b\" <sip:bob@example.com>"}), sdpBody), "drop:raw bad_char", "400 bad_to"},
		{"header without colon", build(inviteLine, with(nil, "NoColonHere"), sdpBody), "drop:raw bad_header_line", "drop:parse"},
		{"header name with space", build(inviteLine, with(nil, "Bad Name: x"), sdpBody), "drop:raw bad_header_name", "400 bad_header_name"},
		{"continuation first", build(inviteLine, append([]string{" folded: x"}, inviteHeaders()...), sdpBody), "drop:raw bad_header_line", "accept"},
		{"no empty line", []byte("OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"), "drop:raw truncated", "drop:parse"},
		{"start line without CRLF", []byte("OPTIONS sip:bob@example.com SIP/2.0"), "drop:raw truncated", "drop:parse"},
		{"start line tab", build("INVITE\tsip:bob@example.com SIP/2.0", inviteHeaders(), sdpBody), "drop:raw bad_start_line", "drop:parse"},
		{"method with bad char", build("INV{TE sip:bob@example.com SIP/2.0", with([]string{"CSeq: 1 INV{TE"}), sdpBody), "drop:raw bad_start_line", "400 bad_method"},

		// Limits.
		{"too large", build(inviteLine, with(nil, "X-Pad: "+strings.Repeat("a", 17000)), sdpBody), "drop:raw too_large", "accept"},
		{"too many headers", build(inviteLine, with(nil, slices.Repeat([]string{"X-A: 1"}, 120)...), sdpBody), "drop:raw too_many_headers", "400 too_many_headers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := outcome(t, c.data, true); got != c.dgram {
				t.Errorf("datagram: got %q, want %q", got, c.dgram)
			}
			want := c.stream
			if want == "" {
				want = c.dgram
			}
			if got := outcome(t, c.data, false); got != want {
				t.Errorf("stream: got %q, want %q", got, want)
			}
		})
	}
}

// TestOptions covers the option semantics: nil is the default, an empty
// slice is "none".
func TestOptions(t *testing.T) {
	msg, err := sip.NewParser().ParseSIP(build(inviteLine, with(nil, "Require: timer"), sdpBody))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	if r := Request(req, Options{}); r != nil {
		t.Errorf("timer is a default extension: got %+v", r)
	}
	if r := Request(req, Options{SupportedExtensions: []string{}}); r == nil || r.Code != 420 || r.Header.Value() != "timer" {
		t.Errorf("no extension supported: want 420 Unsupported: timer, got %+v", r)
	}
	if r := Request(req, Options{AllowedSchemes: []string{"sips"}}); r == nil || r.Code != 416 {
		t.Errorf("sip not allowed: want 416, got %+v", r)
	}
	if r := Request(req, Options{BodyTypes: []string{"application/isup"}}); r == nil || r.Code != 415 ||
		r.Header.Name() != "Accept" || r.Header.Value() != "application/isup" {
		t.Errorf("sdp not allowed: want 415 Accept: application/isup, got %+v", r)
	}
	data := build(inviteLine, inviteHeaders(), sdpBody)
	if r := Raw(data, Options{MaxMessageSize: len(data) - 1}); r == nil || r.Why != "too_large" || r.Code != 513 || !r.Drop {
		t.Errorf("MaxMessageSize: want too_large, got %+v", r)
	}
	if r := Raw(data, Options{MaxMessageSize: len(data)}); r != nil {
		t.Errorf("MaxMessageSize at the size: got %+v", r)
	}
	if r := Raw(data, Options{MaxHeaders: 8}); r == nil || r.Why != "too_many_headers" {
		t.Errorf("MaxHeaders 8 on 9 headers: got %+v", r)
	}
	if r := Request(req, Options{MaxHeaders: 10}); r != nil {
		t.Errorf("MaxHeaders 10 on 10 headers: got %+v", r)
	}
	if r := Request(req, Options{MaxHeaders: 9}); r == nil || r.Why != "too_many_headers" {
		t.Errorf("MaxHeaders 9 on 10 headers: got %+v", r)
	}
}

func TestKeepAlive(t *testing.T) {
	for _, ka := range []string{"\r\n", "\r\n\r\n"} {
		if r := Raw([]byte(ka), Options{}); r != nil {
			t.Errorf("%q: got %+v", ka, r)
		}
	}
	if r := Raw([]byte("\r\n\r\n\r\n"), Options{}); r == nil || r.Why != "bad_start_line" {
		t.Errorf("6 bytes of CRLF: got %+v", r)
	}
}

func TestNil(t *testing.T) {
	if r := Request(nil, Options{}); r == nil || !r.Drop {
		t.Errorf("nil request: got %+v", r)
	}
	if r := Response(nil, Options{}); r == nil || !r.Drop {
		t.Errorf("nil response: got %+v", r)
	}
}

// TestBuiltMessages covers what sipgo's parser never produces but code
// may build: the checks must hold for any *sip.Request.
func TestBuiltMessages(t *testing.T) {
	base := func() *sip.Request {
		msg, err := sip.NewParser().ParseSIP(build(inviteLine, inviteHeaders(), sdpBody))
		if err != nil {
			t.Fatal(err)
		}
		return msg.(*sip.Request)
	}
	cases := []struct {
		name string
		mod  func(*sip.Request)
		why  string
	}{
		{"CSeq over 2^31-1", func(r *sip.Request) { r.CSeq().SeqNo = 1 << 31 }, "cseq_range"},
		{"IPv6 host without brackets", func(r *sip.Request) { r.Recipient.Host = "2001:db8::1" }, "ipv6_unbracketed"},
		{"LF in R-URI user", func(r *sip.Request) { r.Recipient.User = "bob\nX: y" }, "bad_request_uri"},
		{"LF in Via param", func(r *sip.Request) { r.Via().Params.Add("x", "1\n2") }, "bad_char"},
		{"Content-Length not the body's", func(r *sip.Request) {
			cl := sip.ContentLengthHeader(3)
			r.ReplaceHeader(&cl)
		}, "content_length_mismatch"},
		{"wildcard R-URI", func(r *sip.Request) { r.Recipient = sip.Uri{Scheme: "sip", Host: "*", Wildcard: true} }, "bad_request_uri"},
		{"empty method", func(r *sip.Request) { r.Method = "" }, "bad_method"},
		{"body too large", func(r *sip.Request) { r.SetBody(make([]byte, DefaultMaxMessageSize+1)) }, "too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := base()
			c.mod(req)
			if r := Request(req, Options{}); r == nil || r.Why != c.why {
				t.Errorf("got %+v, want %s", r, c.why)
			}
		})
	}
}

// TestWhysComplete checks that every Why is listed once and that each
// verdict's Drop shape differs only in Drop.
func TestWhysComplete(t *testing.T) {
	whys := Whys()
	seen := map[string]bool{}
	for _, w := range whys {
		if seen[w] {
			t.Errorf("duplicate Why %q", w)
		}
		seen[w] = true
		if w == "" || strings.ToLower(w) != w || strings.ContainsAny(w, " -") {
			t.Errorf("Why %q is not a snake_case label", w)
		}
	}
	for _, w := range []string{"dup_header_to", "cseq_method_mismatch", "max_forwards_zero", "bad_version",
		"unsupported_scheme", "content_length_mismatch", "too_large", "missing_header_via"} {
		if !seen[w] {
			t.Errorf("Whys() lacks %q", w)
		}
	}
	// Whys() returns a copy.
	whys[0] = "changed"
	if Whys()[0] == "changed" {
		t.Error("Whys() exposes its backing array")
	}
}

// TestNextSpecial: the eight-at-a-time scan finds the first special byte
// at every position of a word and of the tail, from every start, for
// every byte value, as a byte-by-byte scan would.
func TestNextSpecial(t *testing.T) {
	for c := 0; c < 256; c++ {
		for n := 0; n <= 19; n++ {
			for p := 0; p < n; p++ {
				b := bytes.Repeat([]byte("a"), n)
				b[p] = byte(c)
				for k := 0; k <= n; k++ {
					want := n
					for i := k; i < n; i++ {
						if isCTL(b[i]) || strings.IndexByte("\"<>?,;\\", b[i]) >= 0 {
							want = i
							break
						}
					}
					if got := nextSpecial(b, k); got != want {
						t.Fatalf("nextSpecial(%q, %d) = %d, want %d", b, k, got, want)
					}
				}
			}
		}
	}
}
