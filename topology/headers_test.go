package topology

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func parse(t *testing.T, raw string) *sip.Request {
	t.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(strings.ReplaceAll(raw, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sip.Request)
}

func TestHeaderFilterCopy(t *testing.T) {
	src := parse(t, `INVITE sip:bob@10.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK1
Record-Route: <sip:10.9.9.9;lr>
From: <sip:alice@carrier.example>;tag=1
To: <sip:bob@10.0.0.1>
Call-ID: secret@10.9.9.9
CSeq: 1 INVITE
Contact: <sip:alice@10.9.9.9>
Max-Forwards: 70
User-Agent: CarrierSwitch 1.0
k: 100rel
X-Internal: leak
Allow: INVITE, ACK
P-Asserted-Identity: <sip:+4420@carrier.example>
c: application/sdp
Content-Length: 0

`)
	f := NewHeaderFilter([]string{"Supported", "allow", "P-Asserted-Identity", "Via", "Contact", "Content-Type"})
	dst := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "192.0.2.1"})
	f.Copy(dst, src)
	var got []string
	for _, h := range dst.Headers() {
		got = append(got, CanonicalName(h.Name()))
	}
	want := "supported,allow,p-asserted-identity,content-type"
	if strings.Join(got, ",") != want {
		t.Fatalf("copied %v, want %s", got, want)
	}
	for _, n := range []string{"via", "contact", "record-route", "user-agent", "x-internal", "call-id"} {
		if f.Allowed(n) {
			t.Errorf("%s must never be allowed", n)
		}
	}
	if !f.Allowed("k") || !f.Allowed("SUPPORTED") {
		t.Error("compact/upper-case forms of an allowed header must match")
	}
}

func TestFace(t *testing.T) {
	f := Face{Realm: "internal", Transport: "tcp", Host: "10.0.0.5", Port: 5062}
	if got := f.Contact("sbc").Value(); got != "<sip:sbc@10.0.0.5:5062;transport=tcp>" {
		t.Fatalf("contact %q", got)
	}
	v := f.Via()
	if v.Transport != "TCP" || v.Host != "10.0.0.5" || v.Port != 5062 {
		t.Fatalf("via %s", v.Value())
	}
	if b, _ := v.Params.Get("branch"); !strings.HasPrefix(b, "z9hG4bK") {
		t.Fatalf("branch %q", b)
	}
	u := Face{Transport: "udp", Host: "h", Port: 1}.URI("")
	if u.String() != "sip:h:1" {
		t.Fatalf("uri %s", u.String())
	}
}

// canonicalBytes is CanonicalName without the string: same result for any
// name, and no allocation for a token name (Copy runs per relayed message).
func TestCanonicalBytes(t *testing.T) {
	var buf [64]byte
	for _, n := range []string{"User-Agent", "user-agent", " X-Foo ", "k", "K", "v", "Via",
		"P-Asserted-Identity", "CONTENT-TYPE", "c", "", "Ä-Header", "x-ÄÖ", strings.Repeat("Long-", 20)} {
		if got, want := string(canonicalBytes(buf[:0], n)), CanonicalName(n); got != want {
			t.Errorf("canonicalBytes(%q) = %q, CanonicalName %q", n, got, want)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if string(canonicalBytes(buf[:0], "Supported")) != "supported" || string(canonicalBytes(buf[:0], "k")) != "supported" {
			t.Fatal("canonical")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per name", allocs)
	}
}

// FillVia is Via into a header and params of the caller's; the transport
// is upper case whatever it is.
func TestFillVia(t *testing.T) {
	for _, tr := range []string{"udp", "tcp", "tls", "ws", "wss", "sctp", "Udp"} {
		f := Face{Transport: tr, Host: "127.0.0.1", Port: 5060}
		var v sip.ViaHeader
		var kv [2]sip.HeaderKV
		f.FillVia(&v, kv[:0:2])
		if v.Transport != strings.ToUpper(tr) || v.Host != "127.0.0.1" || v.Port != 5060 {
			t.Fatalf("%s: via %s", tr, v.Value())
		}
		if &v.Params[0] != &kv[0] || v.Params[1].K != "rport" {
			t.Fatalf("%s: params %v not in the room given", tr, v.Params)
		}
		if got := f.Via(); got.Transport != v.Transport || got.Params.Length() != 2 {
			t.Fatalf("%s: Via %s", tr, got.Value())
		}
	}
}
