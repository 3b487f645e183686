package sipua

import (
	"context"
	"testing"
	"time"
)

// BenchmarkCallUDP measures one whole call over UDP loopback: INVITE, 180,
// 200, ACK, BYE, 200, between a Caller and a Backend in this process.
func BenchmarkCallUDP(b *testing.B) {
	be, err := NewBackend(BackendOptions{LogLimit: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	c, err := NewCaller(CallerOptions{LogLimit: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		call, err := c.Dial(ctx, be.Addr(), DialOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode != 200 {
			b.Fatalf("final: %v %v", res, err)
		}
		if err := call.Bye(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordUDP measures recording one received INVITE datagram.
func BenchmarkRecordUDP(b *testing.B) {
	r := newRecorder(1000)
	msg := []byte("INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK.abcdef;rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=abc\r\n" +
		"To: <sip:100@127.0.0.1:5060>\r\nCall-ID: 1234567890\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:caller@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n" +
		"Content-Length: 0\r\n\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		r.feed("UDP", nil, nil, msg)
	}
}
