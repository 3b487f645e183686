package srtp

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// relayAddrs are what the tests anchor on: documentation addresses, so
// they cannot be confused with any address of a fixture (Chrome's o= says
// 127.0.0.1). No packet goes there; they are text.
var (
	relay4 = netip.MustParseAddr("192.0.2.10")
	relay6 = netip.MustParseAddr("2001:db8::10")
)

// originalAddresses collects every IP address and every port ≥1024 that
// the original SDP text shows (c=, o=, m=, a=rtcp, candidates, raddr,
// rport), the things topology hiding must not let through.
func originalAddresses(t *testing.T, raw string) (ips []string, ports []string) {
	t.Helper()
	for line := range strings.SplitSeq(raw, "\n") {
		line = strings.TrimSpace(line)
		f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '=' })
		for i, tok := range f {
			if a, err := netip.ParseAddr(tok); err == nil && !a.IsUnspecified() {
				ips = append(ips, tok)
			}
			isPortField := (strings.HasPrefix(line, "m=") && i == 2) ||
				(strings.HasPrefix(line, "a=rtcp:") && i == 1) ||
				(strings.HasPrefix(line, "a=candidate") && i == 6) ||
				(i > 0 && f[i-1] == "rport")
			if strings.HasPrefix(line, "a=rtcp:") && i == 1 {
				tok = strings.TrimPrefix(tok, "rtcp:")
			}
			if n, err := strconv.Atoi(tok); isPortField && err == nil && n >= 1024 {
				ports = append(ports, tok)
			}
		}
	}
	return ips, ports
}

func tokens(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == ':' || r == '/' || r == '\r' || r == '\n' || r == '=' || r == ';'
	})
}

// keptAttributes is what Rewrite must carry over unchanged, in order.
func keptAttributes(attrs []sdp.Attribute) []string {
	var out []string
	for _, a := range attrs {
		if !slices.Contains(droppedAttributes, strings.ToLower(a.Key)) {
			out = append(out, a.String())
		}
	}
	return out
}

func TestRewriteFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/sdp/*.sdp")
	if err != nil || len(files) < 6 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			in, err := ParseSDP(raw)
			if err != nil {
				t.Fatal(err)
			}
			relay := relay4
			if strings.Contains(file, "ipv6") {
				relay = relay6
			}
			origin := NewOrigin("", relay)
			anchor := Anchor{Addr: relay, Origin: origin}
			ourCrypto := map[int]string{}
			for i, md := range in.MediaDescriptions {
				_, mux := md.Attribute("rtcp-mux")
				ma := MediaAnchor{Port: 41000 + 2*i, RTCPPort: 41001 + 2*i}
				if mux {
					ma.RTCPPort = ma.Port
				}
				if slices.Contains(md.MediaName.Protos, "SAVP") || slices.Contains(md.MediaName.Protos, "SAVPF") {
					c, _ := GenerateCrypto(1, AES_CM_128_HMAC_SHA1_80)
					ma.Attributes = []sdp.Attribute{sdp.NewAttribute("crypto", c.String())}
					ma.Proto = "RTP/SAVP"
					ourCrypto[i] = c.String()
				}
				anchor.Media = append(anchor.Media, ma)
			}
			out, err := Rewrite(in, anchor)
			if err != nil {
				t.Fatal(err)
			}
			body, err := out.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			text := string(body)
			// The output is strict SDP.
			var strict sdp.SessionDescription
			if err := strict.Unmarshal(body); err != nil {
				t.Fatalf("output does not parse strictly: %v\n%s", err, text)
			}

			// Topology hiding: nothing of the original side's addresses.
			ips, ports := originalAddresses(t, string(raw))
			if len(ips) == 0 {
				t.Fatal("fixture has no address?")
			}
			for _, ip := range ips {
				if strings.Contains(text, ip) {
					t.Errorf("original address %s survives:\n%s", ip, text)
				}
			}
			toks := tokens(text)
			for _, p := range ports {
				if slices.Contains(toks, p) {
					t.Errorf("original port %s survives:\n%s", p, text)
				}
			}
			for _, key := range []string{"a=candidate", "a=ice-", "a=fingerprint", "a=setup", "a=tls-id", "raddr", "baresip"} {
				if strings.Contains(text, key) {
					t.Errorf("%s survives", key)
				}
			}
			for _, md := range in.MediaDescriptions {
				for _, a := range md.Attributes {
					if a.Key == "crypto" && strings.Contains(text, strings.Fields(a.Value)[2]) {
						t.Errorf("the original key survives: %s", a.Value)
					}
				}
			}
			// As a token, not a substring: the rewritten SDP's random
			// numbers (its own session id, ports, keys) may hold the
			// original's digits by chance.
			if in.Origin.SessionID > 1000 && slices.Contains(toks, strconv.FormatUint(in.Origin.SessionID, 10)) {
				t.Error("original session id survives")
			}
			if out.Origin.Username != "-" || out.Origin.SessionID != origin.SessionID || out.SessionName != "-" {
				t.Errorf("origin %+v s=%s", out.Origin, out.SessionName)
			}

			// What the other side needs is all there, in order.
			if got, want := keptAttributes(out.Attributes), keptAttributes(in.Attributes); !slices.Equal(got, want) {
				t.Errorf("session attributes\n got %q\nwant %q", got, want)
			}
			for i, md := range in.MediaDescriptions {
				om := out.MediaDescriptions[i]
				got := keptAttributes(om.Attributes)
				want := keptAttributes(md.Attributes)
				if !slices.Equal(got, want) {
					t.Errorf("m=%d attributes\n got %q\nwant %q", i, got, want)
				}
				if !slices.Equal(om.MediaName.Formats, md.MediaName.Formats) || om.MediaName.Media != md.MediaName.Media {
					t.Errorf("m=%d formats changed", i)
				}
				if md.MediaName.Port.Value == 0 {
					if om.MediaName.Port.Value != 0 {
						t.Errorf("refused m=%d got port %d", i, om.MediaName.Port.Value)
					}
					continue
				}
				r, err := Remote(out, i)
				if err != nil {
					t.Fatal(err)
				}
				orig, _ := Remote(in, i)
				if orig.Hold {
					if !r.Hold || r.RTP.Port() != uint16(anchor.Media[i].Port) || r.RTCP.IsValid() {
						t.Errorf("hold lost: %+v", r)
					}
					continue
				}
				if r.RTP != netip.AddrPortFrom(relay, uint16(anchor.Media[i].Port)) ||
					r.RTCP != netip.AddrPortFrom(relay, uint16(anchor.Media[i].RTCPPort)) || r.Mux != orig.Mux {
					t.Errorf("m=%d remote as the other side sees it: %+v", i, r)
				}
				if len(r.Cryptos) > 0 && r.Cryptos[0].String() != ourCrypto[i] {
					t.Errorf("our crypto: %v", r.Cryptos)
				}
			}
		})
	}
}

func TestParseSDPTolerant(t *testing.T) {
	base := "v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	tests := []struct {
		name   string
		in     string
		ok     bool
		strict bool // pion alone parses it
		check  func(t *testing.T, s *sdp.SessionDescription)
	}{
		{name: "clean", in: base, ok: true, strict: true},
		{name: "LF only", in: strings.ReplaceAll(base, "\r\n", "\n"), ok: true, strict: true},
		{name: "missing t=", in: strings.Replace(base, "t=0 0\r\n", "", 1), ok: true,
			check: func(t *testing.T, s *sdp.SessionDescription) {
				if len(s.TimeDescriptions) != 1 {
					t.Fatal("t= not added")
				}
			}},
		{name: "missing s=", in: strings.Replace(base, "s=-\r\n", "", 1), ok: true},
		{name: "a= before t=", in: strings.Replace(base, "t=0 0\r\n", "a=recvonly\r\nt=0 0\r\n", 1), ok: true,
			check: func(t *testing.T, s *sdp.SessionDescription) {
				if _, ok := s.Attribute("recvonly"); !ok {
					t.Fatal("session attribute lost")
				}
			}},
		{name: "media c= after a=", in: base + "c=IN IP4 198.51.100.2\r\n", ok: true, strict: true,
			check: func(t *testing.T, s *sdp.SessionDescription) {
				if c := s.MediaDescriptions[0].ConnectionInformation; c == nil || c.Address.Address != "198.51.100.2" {
					t.Fatal("media c= lost")
				}
			}},
		{name: "trailing spaces and blank lines", in: strings.ReplaceAll(base, "\r\n", "  \r\n\r\n"), ok: true, strict: true,
			check: func(t *testing.T, s *sdp.SessionDescription) {
				// pion alone keeps the spaces inside values.
				if s.ConnectionInformation.Address.Address != "198.51.100.1" || s.MediaDescriptions[0].Attributes[0].Value != "0 PCMU/8000" {
					t.Fatalf("%q", s.ConnectionInformation.Address.Address)
				}
			}},
		{name: "unknown line type", in: base + "y=1234\r\n", ok: true},
		{name: "duplicate c=", in: strings.Replace(base, "t=0 0", "c=IN IP4 198.51.100.9\r\nt=0 0", 1), ok: true,
			check: func(t *testing.T, s *sdp.SessionDescription) {
				if s.ConnectionInformation.Address.Address != "198.51.100.1" {
					t.Fatal("not the first c=")
				}
			}},
		{name: "garbage line", in: base + "hello world\r\n", ok: false},
		{name: "not sdp", in: "INVITE sip:bob@example.com SIP/2.0\r\n", ok: false},
		{name: "bad m=", in: strings.Replace(base, "m=audio 30000", "m=audio x", 1), ok: false},
		{name: "empty", in: "", ok: false, strict: true},
		{name: "no o=", in: strings.Replace(base, "o=- 1 1 IN IP4 198.51.100.1\r\n", "", 1), ok: false},
		{name: "too big", in: base + strings.Repeat("a=x:"+strings.Repeat("y", 100)+"\r\n", 700), ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var strict sdp.SessionDescription
			if got := strict.Unmarshal([]byte(tc.in)) == nil; got != tc.strict && len(tc.in) < maxSDPSize {
				t.Fatalf("pion strict parse = %v, the table says %v", got, tc.strict)
			}
			s, err := ParseSDP([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrBadSDP) {
					t.Fatalf("not ErrBadSDP: %v", err)
				}
				return
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestOriginVersion(t *testing.T) {
	in, err := ParseSDP([]byte("v=0\r\no=x 5 5 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := NewOrigin("sbc", netip.Addr{})
	a := Anchor{Addr: relay4, Origin: o, Media: []MediaAnchor{{Port: 40000}}}
	first, err := Rewrite(in, a)
	if err != nil {
		t.Fatal(err)
	}
	v := first.Origin.SessionVersion
	if first.Origin.Username != "sbc" || first.Origin.UnicastAddress != relay4.String() || first.Origin.AddressType != "IP4" {
		t.Fatalf("%+v", first.Origin)
	}
	// The same SDP again (a re-INVITE that changes nothing): same version.
	again, _ := Rewrite(in, a)
	if again.Origin.SessionVersion != v || again.Origin.SessionID != first.Origin.SessionID {
		t.Fatalf("version moved without a change: %d → %d", v, again.Origin.SessionVersion)
	}
	// A change (hold) bumps it by one, and the session id stays.
	in.MediaDescriptions[0].Attributes = []sdp.Attribute{sdp.NewPropertyAttribute("sendonly")}
	held, _ := Rewrite(in, a)
	if held.Origin.SessionVersion != v+1 || held.Origin.SessionID != first.Origin.SessionID {
		t.Fatalf("hold: %+v after %d", held.Origin, v)
	}
	// A new relay port bumps it again.
	a.Media[0].Port = 40002
	moved, _ := Rewrite(in, a)
	if moved.Origin.SessionVersion != v+2 {
		t.Fatalf("move: %d", moved.Origin.SessionVersion)
	}
	if o1, o2 := NewOrigin("", relay4), NewOrigin("", relay4); o1.SessionID == o2.SessionID {
		t.Fatal("session ids not random")
	}
}

// TestRewriteHidesSourceCNAME: a=ssrc carries the sender's RTCP CNAME,
// user@host by RFC 3550 6.5.1; baresip 1.0.0 writes its AOR there
// (a=ssrc:N cname:sip:a@127.0.0.1, seen by the SBC's baresip interop
// test). Neither it nor a=ssrc-group reaches the other side.
func TestRewriteHidesSourceCNAME(t *testing.T) {
	in, err := ParseSDP([]byte("v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n" +
		"m=audio 30000 RTP/AVP 0\r\na=ssrc:11 cname:sip:alice@192.168.1.20\r\n" +
		"m=video 30002 RTP/AVP 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n" +
		"a=ssrc-group:FID 12 13\r\na=ssrc:12 cname:bob@pbx.corp.example\r\na=ssrc:13 cname:bob@pbx.corp.example\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Rewrite(in, Anchor{Addr: relay4, Origin: NewOrigin("", relay4), Media: []MediaAnchor{{Port: 40000}, {Port: 40002}}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := out.Marshal()
	text := string(body)
	for _, leak := range []string{"192.168.1.20", "pbx.corp.example", "a=ssrc"} {
		if strings.Contains(text, leak) {
			t.Errorf("%q reaches the other side:\n%s", leak, text)
		}
	}
	if !strings.Contains(text, "a=fmtp:97 apt=96\r\n") {
		t.Errorf("codec attributes lost:\n%s", text)
	}
}

func TestRewriteErrorsAndOverrides(t *testing.T) {
	in, _ := ParseSDP([]byte("v=0\r\no=x 5 5 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n" +
		"a=ice-lite\r\nm=audio 30000 RTP/AVP 0\r\na=x-secret:198.51.100.1\r\nm=video 30002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"))
	o := NewOrigin("", relay4)
	for _, a := range []Anchor{
		{Addr: relay4, Origin: o, Media: []MediaAnchor{{Port: 40000}}},
		{Addr: relay4, Media: []MediaAnchor{{Port: 40000}, {Port: 40002}}},
		{Origin: o, Media: []MediaAnchor{{Port: 40000}, {Port: 40002}}},
		{Addr: relay4, Origin: o, Media: []MediaAnchor{{Port: 40000}, {Port: 0}}},
		{Addr: relay4, Origin: o, Media: []MediaAnchor{{Port: 40000}, {Port: 70000}}},
	} {
		if _, err := Rewrite(in, a); !errors.Is(err, ErrAnchorMismatch) {
			t.Fatalf("%+v: %v", a, err)
		}
	}
	if _, err := Rewrite(nil, Anchor{}); !errors.Is(err, ErrAnchorMismatch) {
		t.Fatal(err)
	}
	out, err := Rewrite(in, Anchor{
		Addr: relay4, Origin: o, SessionName: "sbc",
		SessionAttributes: []sdp.Attribute{sdp.NewPropertyAttribute("ice-lite")},
		DropAttributes:    []string{"X-SECRET"},
		Media: []MediaAnchor{
			{Port: 40000, Proto: "UDP/TLS/RTP/SAVPF"},
			{Port: 40002, Addr: relay6},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := out.Marshal()
	text := string(body)
	for _, want := range []string{"s=sbc\r\n", "a=ice-lite\r\n", "m=audio 40000 UDP/TLS/RTP/SAVPF 0\r\n",
		"m=video 40002 RTP/AVP 96\r\nc=IN IP6 2001:db8::10\r\n", "c=IN IP4 192.0.2.10\r\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, "x-secret") || strings.Contains(text, "198.51.100.1") {
		t.Errorf("leak:\n%s", text)
	}
	if strings.Count(text, "a=ice-lite") != 1 {
		t.Error("the original's ice-lite survived next to ours")
	}
}

func TestRemote(t *testing.T) {
	const head = "v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
	k := keyB64(30, true)
	tests := []struct {
		name  string
		media string
		want  RemoteMedia
		err   bool
	}{
		{name: "plain", media: "m=audio 30000 RTP/AVP 0\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("198.51.100.1:30000")}},
		{name: "rtcp port only", media: "m=audio 30000 RTP/AVP 0\r\na=rtcp:30011\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("198.51.100.1:30000"), RTCP: netip.MustParseAddrPort("198.51.100.1:30011")}},
		{name: "rtcp with address", media: "m=audio 30000 RTP/AVP 0\r\na=rtcp:30011 IN IP4 198.51.100.7\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("198.51.100.1:30000"), RTCP: netip.MustParseAddrPort("198.51.100.7:30011")}},
		{name: "media c= and mux", media: "m=audio 30000 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\na=rtcp-mux\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("[2001:db8::7]:30000"), Mux: true}},
		{name: "hold", media: "m=audio 30000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("0.0.0.0:30000"), Hold: true}},
		{name: "cryptos", media: "m=audio 30000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:" + k + "\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + k + "\r\n",
			want: RemoteMedia{RTP: netip.MustParseAddrPort("198.51.100.1:30000")}},
		{name: "host name", media: "m=audio 30000 RTP/AVP 0\r\nc=IN IP4 pbx.example.com\r\n", err: true},
		{name: "bad rtcp", media: "m=audio 30000 RTP/AVP 0\r\na=rtcp:x\r\n", err: true},
		{name: "bad rtcp address", media: "m=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP4 nope\r\n", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSDP([]byte(head + tc.media))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Remote(s, 0)
			if tc.err {
				if !errors.Is(err, ErrBadSDP) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.RTP != tc.want.RTP || r.RTCP != tc.want.RTCP || r.Mux != tc.want.Mux || r.Hold != tc.want.Hold {
				t.Fatalf("%+v", r)
			}
			if tc.name == "cryptos" && (len(r.Cryptos) != 1 || r.Cryptos[0].Tag != 2 || len(r.Refused) != 1) {
				t.Fatalf("cryptos %v refused %v", r.Cryptos, r.Refused)
			}
		})
	}
	s, _ := ParseSDP([]byte(head + "m=audio 30000 RTP/AVP 0\r\n"))
	if _, err := Remote(s, 1); !errors.Is(err, ErrBadSDP) {
		t.Fatal(err)
	}
	noC, _ := ParseSDP([]byte("v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"))
	if _, err := Remote(noC, 0); !errors.Is(err, ErrBadSDP) {
		t.Fatal(err)
	}
}

func BenchmarkRewriteChrome(b *testing.B) {
	raw, err := os.ReadFile("testdata/sdp/chrome.sdp")
	if err != nil {
		b.Fatal(err)
	}
	o := NewOrigin("", relay4)
	b.ReportAllocs()
	for b.Loop() {
		in, err := ParseSDP(raw)
		if err != nil {
			b.Fatal(err)
		}
		out, err := Rewrite(in, Anchor{Addr: relay4, Origin: o, Media: []MediaAnchor{{Port: 40000, RTCPPort: 40000}, {Port: 40002, RTCPPort: 40002}}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := out.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseSDP: the pre-pass, the parser, Remote and Rewrite never panic,
// and whatever Rewrite produces parses again.
func FuzzParseSDP(f *testing.F) {
	files, _ := filepath.Glob("testdata/sdp/*.sdp")
	for _, file := range files {
		raw, _ := os.ReadFile(file)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if wellFormed(raw) {
			if fixed, err := tolerate(raw); err != nil || !bytes.Equal(fixed, raw) {
				t.Fatalf("wellFormed, but tolerate changes it (%v):\n%q\n%q", err, raw, fixed)
			}
		}
		in, err := ParseSDP(raw)
		if err != nil {
			return
		}
		ma := make([]MediaAnchor, len(in.MediaDescriptions))
		for i := range ma {
			ma[i] = MediaAnchor{Port: 40000 + 2*i, RTCPPort: 40001 + 2*i}
			_, _ = Remote(in, i)
		}
		out, err := Rewrite(in, Anchor{Addr: relay4, Origin: NewOrigin("", relay4), Media: ma})
		if err != nil {
			return
		}
		body, err := out.Marshal()
		if err != nil {
			return
		}
		if _, err := ParseSDP(body); err != nil {
			t.Fatalf("rewritten SDP does not parse: %v\n%q", err, body)
		}
	})
}

// TestRewriteRefuse: an anchor that refuses a live line writes it with
// port 0, the SBC's address, and none of the SBC's per-leg attributes.
func TestRewriteRefuse(t *testing.T) {
	in, err := ParseSDP([]byte("v=0\r\no=x 5 5 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n" +
		"m=audio 30000 RTP/AVP 0\r\nm=application 30002 UDP/BFCP *\r\nc=IN IP4 198.51.100.1\r\na=floorctrl:c-s\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Rewrite(in, Anchor{Addr: relay4, Origin: NewOrigin("", relay4), Media: []MediaAnchor{
		{Port: 40000}, {Refuse: true, RTCPPort: 40003, Attributes: []sdp.Attribute{{Key: "crypto", Value: "x"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := out.Marshal()
	s := string(b)
	for _, want := range []string{"m=audio 40000 ", "m=application 0 UDP/BFCP *", "a=floorctrl:c-s"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	for _, bad := range []string{"198.51.100.1", "a=crypto", "a=rtcp"} {
		if strings.Contains(s, bad) {
			t.Errorf("%q in:\n%s", bad, s)
		}
	}
}

// TestWellFormedSkipsOnlyWhatTolerateKeeps: ParseSDP skips the pre-pass
// only for an SDP the pre-pass would return unchanged, and does skip it
// for the common shapes (CRLF, in order).
func TestWellFormedSkipsOnlyWhatTolerateKeeps(t *testing.T) {
	files, _ := filepath.Glob("testdata/sdp/*.sdp")
	fast := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		crlf := []byte(strings.ReplaceAll(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n", "\r\n"))
		fixed, err := tolerate(raw)
		for _, b := range [][]byte{raw, crlf, fixed} {
			if !wellFormed(b) {
				continue
			}
			fast++
			again, err := tolerate(b)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("%s: wellFormed, but tolerate changes it (%v)", file, err)
			}
		}
		if err == nil && !wellFormed(fixed) {
			t.Errorf("%s: tolerate's output is not wellFormed", file)
		}
	}
	if fast == 0 {
		t.Fatal("no fixture took the fast path")
	}
	for _, bad := range []string{
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n\r\n",                                               // blank line
		"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n",                                                           // LF only
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n",                                                            // no t=
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=x\r\nc=IN IP4 1.2.3.4\r\n", // c= after a=
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\ns=x\r\nt=0 0\r\n",                                            // two s=
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4 \r\ns=-\r\nt=0 0\r\n",                                                  // trailing space
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0",                                                       // no final CRLF
	} {
		if wellFormed([]byte(bad)) {
			t.Errorf("wellFormed(%q)", bad)
		}
	}
}

// TestRewriteSDPIsRewriteMarshalled: RewriteSDP's single marshal gives the
// bytes of Rewrite then Marshal, origin version included, for every
// fixture, the same SDP again (version kept) and a changed one (version
// up).
func TestRewriteSDPIsRewriteMarshalled(t *testing.T) {
	files, _ := filepath.Glob("testdata/sdp/*.sdp")
	for _, file := range files {
		raw, _ := os.ReadFile(file)
		in, err := ParseSDP(raw)
		if err != nil {
			continue
		}
		o1 := NewOrigin("sbc", relay4)
		o2 := *o1
		for step, port := range []int{40000, 40000, 40002} {
			ma := make([]MediaAnchor, len(in.MediaDescriptions))
			for i := range ma {
				ma[i] = MediaAnchor{Port: port + 2*i, RTCPPort: port + 2*i + 1}
			}
			out, err := Rewrite(in, Anchor{Addr: relay4, Origin: o1, Media: ma})
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			want, err := out.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := RewriteSDP(in, Anchor{Addr: relay4, Origin: &o2, Media: ma})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s step %d:\n%s\nwant\n%s", file, step, got, want)
			}
		}
		if o2.Version != o1.Version {
			t.Fatalf("%s: versions %d %d", file, o1.Version, o2.Version)
		}
	}
}

// TestParseSDPForeignMedia: m= lines whose media type or transport pion's
// parser does not know (T.38's image/udptl, a lower-case rtp/avp) parse,
// keep their values through Rewrite and marshal as they came; what is not
// an RFC 4566 token is still refused.
func TestParseSDPForeignMedia(t *testing.T) {
	const t38 = "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
		"m=audio 0 rtp/avp 0\r\n" +
		"m=image 5000 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n" +
		"m=image 5002 UDPTL t38\r\n"
	s, err := ParseSDP([]byte(t38))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		media, proto string
		port         int
	}{{"audio", "rtp/avp", 0}, {"image", "udptl", 5000}, {"image", "UDPTL", 5002}}
	if len(s.MediaDescriptions) != len(want) {
		t.Fatalf("%d m= lines", len(s.MediaDescriptions))
	}
	for i, w := range want {
		mn := s.MediaDescriptions[i].MediaName
		if mn.Media != w.media || strings.Join(mn.Protos, "/") != w.proto || mn.Port.Value != w.port || mn.Formats[0] != "t38" && i > 0 {
			t.Errorf("line %d: %+v, want %+v", i, mn, w)
		}
	}
	if len(s.MediaDescriptions[1].Attributes) != 2 {
		t.Errorf("T.38 attributes: %+v", s.MediaDescriptions[1].Attributes)
	}
	out, err := RewriteSDP(s, Anchor{Addr: netip.MustParseAddr("203.0.113.5"), Origin: NewOrigin("sbc", netip.Addr{}),
		Media: []MediaAnchor{{Refuse: true}, {Port: 30000}, {Port: 30002}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"m=audio 0 rtp/avp 0\r\n", "m=image 30000 udptl t38\r\n", "a=T38FaxVersion:0\r\n", "m=image 30002 UDPTL t38\r\n"} {
		if !strings.Contains(string(out), l) {
			t.Errorf("%q missing from\n%s", l, out)
		}
	}
	for _, bad := range []string{"m=im\"age 5000 udptl t38", "m=image 5000 udp\"tl t38", "m=image 5000 udptl//x t38"} {
		sdp := strings.Replace(t38, "m=image 5000 udptl t38", bad, 1)
		if _, err := ParseSDP([]byte(sdp)); !errors.Is(err, ErrBadSDP) {
			t.Errorf("%q: %v, want ErrBadSDP", bad, err)
		}
	}
}
