package sbc

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sbc-project/sbc/internal/testpolicy"
)

// A request the SBC sends after its listeners closed (a health ping or a
// call's CANCEL racing shutdown) must not make sipgo bind a new socket on
// the listener's address: nothing would ever close it, and the next SBC on
// that port fails with "address already in use" (how CI lost 5062).
func TestNoSocketBoundOnListenerAfterClose(t *testing.T) {
	p := testpolicy.New(sbcExtIP, sbcIntIP, "127.0.0.2:5080")
	s, err := New(p.Parse(t), Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	laddr, ok := s.ListenAddr("internal", "udp")
	if !ok {
		t.Fatal("no internal udp listener")
	}
	ep := s.realms["internal"]
	s.Close()

	dst := netip.MustParseAddrPort("127.0.0.2:5999")
	uri := sip.Uri{Scheme: "sip", Host: dst.Addr().String(), Port: int(dst.Port())}
	req := sip.NewRequest(sip.OPTIONS, uri)
	face := ep.face("udp")
	req.AppendHeader(face.Via())
	from := &sip.FromHeader{Address: face.URI("sbc"), Params: sip.NewParams()}
	from.Params.Add("tag", "t1")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: uri, Params: sip.NewParams()})
	cid := sip.CallIDHeader("late-after-close")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	if _, err := ep.start(context.Background(), req, "udp", dst, txHandlers{}, nil); err == nil {
		t.Errorf("a request was sent after the realm closed")
	}
	if err := ep.write(req, "udp", dst); err == nil {
		t.Errorf("a request was written after the realm closed")
	}
	c, err := net.ListenPacket("udp", laddr.String())
	if err != nil {
		t.Fatalf("the listener's address %s is held after Close: %v", laddr, err)
	}
	c.Close()
}
