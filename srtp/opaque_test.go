package srtp

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

// TestRelayOpaque: an opaque stream (UDPTL, T.38 fax) relays datagrams
// byte for byte whatever their first byte (a UDPTL sequence number can
// look like STUN, DTLS or RTP to RFC 7983), with no SRTP on a leg that has
// SDES installed; latching holds (a stranger's datagrams are dropped), the
// RTCP sockets carry nothing; and switching back to RTP resumes SRTP.
func TestRelayOpaque(t *testing.T) {
	pp := newTestPool(t)
	pa, pb, pbRTCP, stranger := newPhone(t), newPhone(t), newPhone(t), newPhone(t)
	sbcKey, _ := GenerateCrypto(1, AES_CM_128_HMAC_SHA1_80)
	phoneKey, _ := GenerateCrypto(1, AES_CM_128_HMAC_SHA1_80)
	tr, err := NewSDES(sbcKey, phoneKey)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, false), Remote: pa.addr(), Transform: tr},
		B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr(), RemoteRTCP: pbRTCP.addr()},
	})
	aAddr, aRTCP := s.LocalAddr(LegA)
	bAddr, bRTCP := s.LocalAddr(LegB)
	s.SetOpaque(true)
	if !s.Opaque() {
		t.Fatal("Opaque() is false after SetOpaque(true)")
	}
	// UDPTL packets: seq (2 bytes), then the IFP; first bytes in the STUN,
	// DTLS, "unknown" and RTP ranges of RFC 7983.
	datagrams := [][]byte{
		{0x00, 0x01, 0x06, 0xd0, 0x01, 0x00},
		{0x16, 0xfe, 0xfd, 0x00, 0x00},
		{0x70, 0x02, 0x03},
		{0x80, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09},
		{0x05},
	}
	for i, d := range datagrams {
		pa.send(d, aAddr)
		if got, from := pb.recv(); !bytes.Equal(got, d) || from != bAddr {
			t.Fatalf("A→B %d: got % x from %v", i, got, from)
		}
		pb.send(d, bAddr)
		if got, from := pa.recv(); !bytes.Equal(got, d) || from != aAddr {
			t.Fatalf("B→A %d: got % x from %v (encrypted or changed?)", i, got, from)
		}
	}
	// A latched: a stranger's datagram to A's port is dropped.
	stranger.send([]byte{0x00, 0x09, 0xff}, aAddr)
	marker := []byte{0x00, 0x0a, 0x42}
	pa.send(marker, aAddr)
	pb.expectOnly(t, marker)
	// Nothing on the RTCP sockets.
	pbRTCP.send(rtcpRR(0xb), bRTCP)
	pa.send([]byte{0x01}, aRTCP)
	waitFor(t, "drops counted", func() bool {
		st := s.Stats()
		return st.A.Dropped[DropNotLatchedSource] == 1 && st.B.Dropped[DropUnknownType] == 1 && st.A.Dropped[DropUnknownType] == 1
	})
	waitFor(t, "forwarded counters", func() bool {
		st := s.Stats()
		return st.A.Forwarded == uint64(len(datagrams))+1 && st.B.Forwarded == uint64(len(datagrams))
	})

	// Back to RTP: SRTP from A is decrypted again, RTP to A encrypted.
	s.SetOpaque(false)
	phoneEnc := phoneCtx(t, phoneKey, false)
	phoneDec := phoneCtx(t, sbcKey, true)
	var hdr rtp.Header
	plain := rtpPacket(0xa, 7, 160, 160)
	wire, err := phoneEnc.EncryptRTP(nil, plain, &hdr)
	if err != nil {
		t.Fatal(err)
	}
	pa.send(wire, aAddr)
	if got, _ := pb.recv(); !bytes.Equal(got, plain) {
		t.Fatal("B did not get the decrypted RTP after the switch back")
	}
	back := rtpPacket(0xb, 9, 320, 160)
	pb.send(back, bAddr)
	got, _ := pa.recv()
	if dec, err := phoneDec.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, back) {
		t.Fatalf("A cannot decrypt after the switch back: %v", err)
	}
}
