package srtp

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

func TestRemoteSecurityFixtures(t *testing.T) {
	for _, tc := range []struct {
		file  string
		ice   ICECredentials
		setup Setup
		fp    string
	}{
		{"chrome.sdp", ICECredentials{"Hq7Z", "m2WlV0cL3k8nGq1yF5uT9xRb"}, SetupActpass, "sha-256 A1:7E:5B"},
		// baresip puts a=fingerprint and a=setup at session level.
		{"baresip-dtls.sdp", ICECredentials{}, SetupActpass, "sha-256 5B:1F:6C"},
		{"asterisk.sdp", ICECredentials{}, SetupNone, ""},
	} {
		raw, err := os.ReadFile("testdata/sdp/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ParseSDP(raw)
		if err != nil {
			t.Fatal(err)
		}
		sec, err := RemoteSecurity(s, 0)
		if err != nil {
			t.Fatal(tc.file, err)
		}
		if sec.ICE != tc.ice || sec.Setup != tc.setup || sec.ICELite {
			t.Errorf("%s: %+v", tc.file, sec)
		}
		if tc.fp == "" {
			if sec.DTLS() {
				t.Errorf("%s: DTLS", tc.file)
			}
			continue
		}
		if len(sec.Fingerprints) != 1 || !strings.HasPrefix(sec.Fingerprints[0].String(), tc.fp) || !sec.DTLS() {
			t.Errorf("%s: %v", tc.file, sec.Fingerprints)
		}
	}
}

func TestRemoteSecurityRefusals(t *testing.T) {
	const head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	parse := func(body string) (Security, error) {
		s, err := ParseSDP([]byte(head + body))
		if err != nil {
			t.Fatal(err)
		}
		return RemoteSecurity(s, 0)
	}
	if sec, err := parse("m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n"); err != nil || !sec.DTLS() || !sec.TLSProto {
		t.Fatalf("%+v %v", sec, err)
	}
	sec, err := parse("a=ice-lite\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n" +
		"a=fingerprint:sha-1 AB:CD:EF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00\r\n" +
		"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=setup:active\r\n")
	if err != nil || !sec.ICELite || len(sec.Fingerprints) != 0 || len(sec.Refused) != 1 || !sec.DTLS() || sec.Setup != SetupActive {
		t.Fatalf("%+v %v", sec, err)
	}
	if !errors.Is(sec.Refused[0], ErrBadFingerprint) {
		t.Fatal(sec.Refused[0])
	}
	if _, err := parse("m=audio 4000 RTP/AVP 0\r\na=setup:sideways\r\n"); !errors.Is(err, ErrBadSDP) {
		t.Fatal(err)
	}
	if _, err := parse("m=audio 4000 RTP/AVP 0\r\na=ice-ufrag:ab\r\na=ice-pwd:short\r\n"); !errors.Is(err, ErrBadSDP) {
		t.Fatal(err)
	}
	s, _ := ParseSDP([]byte(head + "m=audio 4000 RTP/AVP 0\r\n"))
	if _, err := RemoteSecurity(s, 1); !errors.Is(err, ErrBadSDP) {
		t.Fatal(err)
	}
}

func TestAnchorICEAndDTLS(t *testing.T) {
	raw, _ := os.ReadFile("testdata/sdp/chrome.sdp")
	in, err := ParseSDP(raw)
	if err != nil {
		t.Fatal(err)
	}
	a := Anchor{Addr: relay4, Origin: NewOrigin("sbc", relay4)}
	for range in.MediaDescriptions {
		a.Media = append(a.Media, MediaAnchor{Port: 40000, Proto: "UDP/TLS/RTP/SAVPF"})
	}
	cred := NewICECredentials()
	for i := range a.Media {
		if err := a.AddICELite(i, cred, netip.AddrPortFrom(relay4, 40000)); err != nil {
			t.Fatal(err)
		}
		if err := a.AddDTLS(i, SetupPassive, sbcCert.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	out, err := Rewrite(in, a)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := out.Marshal()
	text := string(b)
	if strings.Count(text, "a=ice-lite") != 1 {
		t.Fatalf("ice-lite not once:\n%s", text)
	}
	for _, want := range []string{
		"a=ice-ufrag:" + cred.Ufrag, "a=ice-pwd:" + cred.Pwd,
		"a=candidate:1 1 udp 2130706431 192.0.2.10 40000 typ host", "a=end-of-candidates",
		"a=setup:passive", "a=fingerprint:" + sbcCert.Fingerprint.String(),
	} {
		if strings.Count(text, want) != len(in.MediaDescriptions) {
			t.Errorf("%q not once per m= line", want)
		}
	}
	if strings.Contains(text, "Hq7Z") || strings.Contains(text, "A1:7E:5B") || strings.Contains(text, "actpass") {
		t.Fatal("the browser's ICE/DTLS leaked")
	}
	// Read back by our own reader.
	sec, err := RemoteSecurity(out, 0)
	if err != nil || !sec.ICELite || sec.ICE != cred || sec.Setup != SetupPassive ||
		len(sec.Fingerprints) != 1 || sec.Fingerprints[0].String() != sbcCert.Fingerprint.String() {
		t.Fatalf("%+v %v", sec, err)
	}
	// Without rtcp-mux: two components.
	a2 := Anchor{Addr: relay4, Origin: NewOrigin("sbc", relay4), Media: []MediaAnchor{{Port: 40000}}}
	if err := a2.AddICELite(0, cred, netip.AddrPortFrom(relay4, 40000), netip.AddrPortFrom(relay4, 40001)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(a2.Media[0].Attributes, func(at sdp.Attribute) bool {
		return at.Value == "1 2 udp 2130706430 192.0.2.10 40001 typ host"
	}) {
		t.Fatalf("%v", a2.Media[0].Attributes)
	}
	if a2.AddICELite(1, cred, netip.AddrPortFrom(relay4, 1)) == nil || a2.AddDTLS(3, SetupActive, sbcCert.Fingerprint) == nil ||
		a2.AddDTLS(0, SetupNone, sbcCert.Fingerprint) == nil || a2.AddICELite(0, cred) == nil ||
		a2.AddICELite(0, ICECredentials{"a", "b"}, netip.AddrPortFrom(relay4, 1)) == nil {
		t.Fatal("bad anchors accepted")
	}
}
