package validate

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// typicalInvite is a carrier-style INVITE of about 1 KB: 16 headers and
// an SDP offer.
var typicalInvite = build("INVITE sip:+15551234567@sbc.example.com;user=phone SIP/2.0", []string{
	"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---4a3f1c2d9e8b7a65;rport",
	"Max-Forwards: 69",
	"Record-Route: <sip:198.51.100.7;lr;ftag=as6f1c2d9e>",
	"Contact: <sip:+15557654321@198.51.100.7:5060;transport=udp>",
	"To: <sip:+15551234567@sbc.example.com;user=phone>",
	`From: "Caller Name" <sip:+15557654321@carrier.example.net;user=phone>;tag=as6f1c2d9e`,
	"Call-ID: 3c26700a5f1e4a1b9b1f0d2c8e7a6b5c@198.51.100.7",
	"CSeq: 102 INVITE",
	"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, UPDATE, PRACK, INFO",
	"Supported: replaces, timer, 100rel",
	"Session-Expires: 1800;refresher=uac",
	"Min-SE: 90",
	"P-Asserted-Identity: <sip:+15557654321@carrier.example.net;user=phone>",
	"User-Agent: CarrierSBC/4.2",
	"Content-Type: application/sdp",
	"Content-Length: %BODY%",
}, "v=0\r\n"+
	"o=- 1693828731 1693828731 IN IP4 198.51.100.20\r\n"+
	"s=-\r\n"+
	"c=IN IP4 198.51.100.20\r\n"+
	"t=0 0\r\n"+
	"m=audio 31000 RTP/AVP 0 8 18 101\r\n"+
	"a=rtpmap:0 PCMU/8000\r\n"+
	"a=rtpmap:8 PCMA/8000\r\n"+
	"a=rtpmap:18 G729/8000\r\n"+
	"a=fmtp:18 annexb=no\r\n"+
	"a=rtpmap:101 telephone-event/8000\r\n"+
	"a=fmtp:101 0-16\r\n"+
	"a=ptime:20\r\n"+
	"a=sendrecv\r\n")

func BenchmarkRequest(b *testing.B) {
	msg, err := sip.NewParser().ParseSIP(typicalInvite)
	if err != nil {
		b.Fatal(err)
	}
	req := msg.(*sip.Request)
	if r := Request(req, Options{}); r != nil {
		b.Fatalf("typical INVITE rejected: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		if Request(req, Options{}) != nil {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkRaw(b *testing.B) {
	if r := Raw(typicalInvite, Options{}); r != nil {
		b.Fatalf("typical INVITE dropped: %+v", r)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalInvite)))
	for b.Loop() {
		if Raw(typicalInvite, Options{}) != nil {
			b.Fatal("dropped")
		}
	}
}

// BenchmarkRejectDup measures the reject path (a duplicate To), which an
// attacker controls: it must not allocate.
func BenchmarkRejectDup(b *testing.B) {
	msg, err := sip.NewParser().ParseSIP(build(inviteLine, with(nil, "t: <sip:x@example.com>"), sdpBody))
	if err != nil {
		b.Fatal(err)
	}
	req := msg.(*sip.Request)
	b.ReportAllocs()
	for b.Loop() {
		if Request(req, Options{}) == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkParse is sipgo's parser on the same message, for scale.
func BenchmarkParse(b *testing.B) {
	p := sip.NewParser()
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalInvite)))
	for b.Loop() {
		if _, err := p.ParseSIP(typicalInvite); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTypicalInviteSize(t *testing.T) {
	if n := len(typicalInvite); n < 900 || n > 1200 {
		t.Errorf("typical INVITE is %d bytes, want about 1 KB", n)
	}
	if r := Raw(typicalInvite, Options{}); r != nil {
		t.Errorf("Raw: %+v", r)
	}
}
