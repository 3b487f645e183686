package srtp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	pion "github.com/pion/srtp/v3"
)

// waitLimit bounds every wait for a packet or an event. It is a failsafe,
// not a timing assertion: on a healthy run events come in microseconds.
const waitLimit = 10 * time.Second

// phone is a fake endpoint: one UDP socket on loopback.
type phone struct {
	t    testing.TB
	conn *net.UDPConn
	buf  []byte
}

func newPhone(t testing.TB) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &phone{t: t, conn: c, buf: make([]byte, 4096)}
}

func (p *phone) addr() netip.AddrPort { return netip.MustParseAddrPort(p.conn.LocalAddr().String()) }

func (p *phone) send(pkt []byte, to netip.AddrPort) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		p.t.Fatal(err)
	}
}

// recv waits for one datagram (bounded by waitLimit).
func (p *phone) recv() ([]byte, netip.AddrPort) {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(waitLimit))
	n, from, err := p.conn.ReadFromUDPAddrPort(p.buf)
	if err != nil {
		p.t.Fatalf("phone %v: no packet: %v", p.addr(), err)
	}
	return p.buf[:n], from
}

// nothingPending sends a marker through the stream from the other side and
// checks it is the next thing this phone receives: whatever was sent
// before it and should have been dropped, was dropped. Waiting for an
// event rather than for a duration.
func (p *phone) expectOnly(t testing.TB, marker []byte) {
	t.Helper()
	got, _ := p.recv()
	if !bytes.Equal(got, marker) {
		t.Fatalf("got % x..., want the marker", got[:min(len(got), 16)])
	}
}

// waitFor polls cond until it holds, a bounded number of times: for
// counters updated by a reader goroutine after a packet nobody receives.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestPool(t testing.TB) *PortPool {
	t.Helper()
	lo, hi := testRange(32)
	pp, err := NewPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi, Quarantine: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pp.Close() })
	return pp
}

func allocate(t testing.TB, pp *PortPool, mux bool) *Ports {
	t.Helper()
	p, err := pp.Allocate(mux)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestStream(t testing.TB, cfg StreamConfig) *Stream {
	t.Helper()
	s, err := NewStream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestRelayPlainBothWays(t *testing.T) {
	for _, tc := range []struct {
		name       string
		muxA, muxB bool
	}{
		{name: "split/split"},
		{name: "mux/mux", muxA: true, muxB: true},
		{name: "mux/split", muxA: true},
		{name: "split/mux", muxB: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pp := newTestPool(t)
			pa, pb := newPhone(t), newPhone(t)
			paRTCP, pbRTCP := newPhone(t), newPhone(t)
			cfgA := LegConfig{Ports: allocate(t, pp, tc.muxA), Remote: pa.addr()}
			cfgB := LegConfig{Ports: allocate(t, pp, tc.muxB), Remote: pb.addr()}
			if !tc.muxA {
				cfgA.RemoteRTCP = paRTCP.addr()
			}
			if !tc.muxB {
				cfgB.RemoteRTCP = pbRTCP.addr()
			}
			s := newTestStream(t, StreamConfig{A: cfgA, B: cfgB})
			aRTP, aRTCP := s.LocalAddr(LegA)
			bRTP, bRTCP := s.LocalAddr(LegB)

			for i := range 20 {
				pkt := rtpPacket(0x1111, uint16(i), uint32(i)*160, 160)
				pa.send(pkt, aRTP)
				got, from := pb.recv()
				if !bytes.Equal(got, pkt) || from != bRTP {
					t.Fatalf("A→B %d: from %v", i, from)
				}
				back := rtpPacket(0x2222, uint16(i), uint32(i)*160, 160)
				pb.send(back, bRTP)
				got, from = pa.recv()
				if !bytes.Equal(got, back) || from != aRTP {
					t.Fatalf("B→A %d: from %v", i, from)
				}
			}
			// RTCP A→B and B→A, each on its leg's RTCP address.
			srcA, dstB := paRTCP, pbRTCP
			if tc.muxA {
				srcA = pa
			}
			if tc.muxB {
				dstB = pb
			}
			rr := rtcpRR(0x1111)
			srcA.send(rr, aRTCP)
			if got, from := dstB.recv(); !bytes.Equal(got, rr) || from != bRTCP {
				t.Fatalf("RTCP A→B from %v", from)
			}
			rr2 := rtcpRR(0x2222)
			dstB.send(rr2, bRTCP)
			if got, from := srcA.recv(); !bytes.Equal(got, rr2) || from != aRTCP {
				t.Fatalf("RTCP B→A from %v", from)
			}
			// Forwarded counts after the send: wait for it.
			waitFor(t, "forwarded counters", func() bool {
				st := s.Stats()
				return st.A.Forwarded == 21 && st.B.Forwarded == 21
			})
			st := s.Stats()
			if st.A.Packets != 21 || st.A.RTCPPackets != 1 || st.A.Bytes != 20*172+8 || st.B.Packets != 21 {
				t.Fatalf("%+v", st)
			}
			if src, ok := s.Latched(LegA); !ok || src != pa.addr() {
				t.Fatalf("A latched %v %v", src, ok)
			}
		})
	}
}

func TestRelaySDESToPlain(t *testing.T) {
	pp := newTestPool(t)
	pa, pb, pbRTCP := newPhone(t), newPhone(t), newPhone(t)
	sbcKey, _ := GenerateCrypto(1, AES_CM_128_HMAC_SHA1_80)   // what the SBC sends to A
	phoneKey, _ := GenerateCrypto(1, AES_CM_128_HMAC_SHA1_80) // what phone A sends
	tr, err := NewSDES(sbcKey, phoneKey)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Transform: tr},
		B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr(), RemoteRTCP: pbRTCP.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	phoneEnc := phoneCtx(t, phoneKey, false)
	phoneDec := phoneCtx(t, sbcKey, true)

	// A forged packet first: it must neither pass nor latch A.
	forged := rtpPacket(0xa, 1, 0, 160)
	forged = append(forged, make([]byte, 10)...)
	pa.send(forged, aAddr)

	var hdr rtp.Header
	for i := range 50 {
		plain := rtpPacket(0xa, uint16(i+1), uint32(i)*160, 160)
		wire, err := phoneEnc.EncryptRTP(nil, plain, &hdr)
		if err != nil {
			t.Fatal(err)
		}
		pa.send(wire, aAddr)
		got, _ := pb.recv()
		if !bytes.Equal(got, plain) {
			t.Fatalf("B got a different packet at %d", i)
		}
		if i == 10 {
			pa.send(wire, aAddr) // replayed
		}
		back := rtpPacket(0xb, uint16(i), uint32(i)*160, 160)
		pb.send(back, bAddr)
		w, _ := pa.recv()
		dec, err := phoneDec.DecryptRTP(nil, w, nil)
		if err != nil || !bytes.Equal(dec, back) {
			t.Fatalf("phone A cannot decrypt %d: %v", i, err)
		}
	}
	// SRTCP from the muxed SDES leg comes out plain on B's RTCP port, and
	// back.
	w, _ := phoneEnc.EncryptRTCP(nil, rtcpRR(0xa), nil)
	pa.send(w, aAddr)
	_, bRTCP := s.LocalAddr(LegB)
	if got, from := pbRTCP.recv(); !bytes.Equal(got, rtcpRR(0xa)) || from != bRTCP {
		t.Fatalf("RTCP from %v", from)
	}
	pbRTCP.send(rtcpRR(0xb), bRTCP)
	got, _ := pa.recv()
	if dec, err := phoneDec.DecryptRTCP(nil, got, nil); err != nil || !bytes.Equal(dec, rtcpRR(0xb)) {
		t.Fatalf("SRTCP to A: %v", err)
	}
	waitFor(t, "forwarded counters", func() bool {
		st := s.Stats()
		return st.A.Forwarded == 51 && st.B.Forwarded == 51
	})
	st := s.Stats()
	if st.A.AuthFailures() != 1 || st.A.Dropped[DropReplay] != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestRelaySDESBothLegs(t *testing.T) {
	// SDES on A with AES-CM, SDES on B with GCM: bridging two profiles.
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	trA, encA, decA, _, _ := pair(t, AES_CM_128_HMAC_SHA1_80)
	trB, encB, decB, _, _ := pair(t, AEAD_AES_128_GCM)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Transform: trA, Normalize: true},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr(), Transform: trB, Normalize: true},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	for i := range 30 {
		plain := rtpPacket(0xa, uint16(i), uint32(i)*160, 100)
		w, _ := encA.EncryptRTP(nil, plain, nil)
		pa.send(w, aAddr)
		got, _ := pb.recv()
		if dec, err := decB.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("B: %v", err)
		}
		plain = rtpPacket(0xb, uint16(i), uint32(i)*160, 100)
		w, _ = encB.EncryptRTP(nil, plain, nil)
		pb.send(w, bAddr)
		got, _ = pa.recv()
		if dec, err := decA.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("A: %v", err)
		}
	}
	// SRTCP A→B, mux on both.
	rr := rtcpRR(0xa)
	w, _ := encA.EncryptRTCP(nil, rr, nil)
	pa.send(w, aAddr)
	got, _ := pb.recv()
	if dec, err := decB.DecryptRTCP(nil, got, nil); err != nil || !bytes.Equal(dec, rr) {
		t.Fatalf("SRTCP: %v", err)
	}
}

func TestRelayLatchLockInAndExpect(t *testing.T) {
	pp := newTestPool(t)
	p1, p3, spoofer, pb := newPhone(t), newPhone(t), newPhone(t), newPhone(t)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: p1.addr()},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	pkt := func(seq uint16) []byte { return rtpPacket(1, seq, 0, 20) }

	// Before latching: a source that is not the SDP address is refused.
	spoofer.send(pkt(99), aAddr)
	p1.send(pkt(1), aAddr) // latches
	pb.expectOnly(t, pkt(1))
	// After: the spoofer, even sending "first", is refused (strict source).
	spoofer.send(pkt(98), aAddr)
	p1.send(pkt(2), aAddr)
	pb.expectOnly(t, pkt(2))
	pb.send(pkt(3), bAddr)
	p1.expectOnly(t, pkt(3))
	st := s.Stats().A
	if st.Dropped[DropUnexpectedSource] != 1 || st.Dropped[DropNotLatchedSource] != 1 {
		t.Fatalf("%+v", st.Dropped)
	}

	// A re-INVITE that keeps the address keeps the latch.
	s.Expect(LegA, p1.addr(), netip.AddrPort{})
	if src, ok := s.Latched(LegA); !ok || src != p1.addr() {
		t.Fatal("same-address Expect unlatched")
	}

	// A signalled change: the old source is refused, the new one latches,
	// and B's media follows (to the expected address even before).
	s.Expect(LegA, p3.addr(), netip.AddrPort{})
	if _, ok := s.Latched(LegA); ok {
		t.Fatal("still latched after Expect")
	}
	pb.send(pkt(4), bAddr)
	p3.expectOnly(t, pkt(4))
	p1.send(pkt(5), aAddr)
	p3.send(pkt(6), aAddr)
	pb.expectOnly(t, pkt(6))
	if src, ok := s.Latched(LegA); !ok || src != p3.addr() {
		t.Fatalf("latched %v %v", src, ok)
	}
	p1.send(pkt(7), aAddr)
	p3.send(pkt(8), aAddr)
	pb.expectOnly(t, pkt(8))
	st = s.Stats().A
	if st.Dropped[DropUnexpectedSource] != 2 || st.Dropped[DropNotLatchedSource] != 2 {
		t.Fatalf("%+v", st.Dropped)
	}
}

func TestRelayLearnBehindNAT(t *testing.T) {
	pp := newTestPool(t)
	pa, spoofer, pb := newPhone(t), newPhone(t), newPhone(t)
	// The SDP announced nothing usable (a private address we must not
	// send to is modelled as unknown): the leg learns from the first packet.
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, false), Learn: true},
		B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	// Nothing to send to A yet.
	pb.send(rtpPacket(2, 1, 0, 20), bAddr)
	waitFor(t, "no_destination", func() bool { return s.Stats().B.Dropped[DropNoDestination] == 1 })
	pa.send(rtpPacket(1, 1, 0, 20), aAddr)
	pb.expectOnly(t, rtpPacket(1, 1, 0, 20))
	spoofer.send(rtpPacket(1, 2, 0, 20), aAddr)
	pa.send(rtpPacket(1, 3, 0, 20), aAddr)
	pb.expectOnly(t, rtpPacket(1, 3, 0, 20))
	pb.send(rtpPacket(2, 2, 0, 20), bAddr)
	pa.expectOnly(t, rtpPacket(2, 2, 0, 20))
	st := s.Stats()
	if st.B.Dropped[DropNoDestination] != 1 || st.A.Dropped[DropNotLatchedSource] != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestRelaySSRCSwitchNormalised: the plain side changes source (early
// media, then the answer, then music on hold); the SRTP receiver on the
// other side, with replay protection, sees one SSRC with continuous
// sequence numbers and decrypts every packet.
func TestRelaySSRCSwitchNormalised(t *testing.T) {
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	trB, _, decB, _, _ := pair(t, AEAD_AES_128_GCM)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr()},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr(), Transform: trB, Normalize: true},
	})
	aAddr, _ := s.LocalAddr(LegA)
	sources := []struct {
		ssrc uint32
		seq0 uint16
		ts0  uint32
		n    int
	}{
		{0x1000, 65500, 1000, 30}, // early media
		{0x2000, 10, 5000, 30},    // the answer: sequence "jumps back"
		{0x3000, 65530, 9, 30},    // MoH, wrapping
		{0x2000, 40, 5000 + 160*40, 30},
	}
	var outSSRC uint32
	var lastSeq uint16
	var lastTS uint32
	k := 0
	for si, src := range sources {
		for i := range src.n {
			pkt := rtpPacket(src.ssrc, src.seq0+uint16(i), src.ts0+uint32(i)*160, 160)
			pa.send(pkt, aAddr)
			w, _ := pb.recv()
			dec, err := decB.DecryptRTP(nil, w, nil)
			if err != nil {
				t.Fatalf("source %d packet %d: receiver refused: %v", si, i, err)
			}
			var h rtp.Header
			if _, err := h.Unmarshal(dec); err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				outSSRC = h.SSRC
				if outSSRC != 0x1000 {
					t.Fatalf("first source's SSRC changed: %x", outSSRC)
				}
			} else {
				if h.SSRC != outSSRC || h.SequenceNumber != lastSeq+1 {
					t.Fatalf("source %d packet %d: ssrc %x seq %d after %d", si, i, h.SSRC, h.SequenceNumber, lastSeq)
				}
				if int32(h.Timestamp-lastTS) <= 0 {
					t.Fatalf("timestamp went back: %d after %d", h.Timestamp, lastTS)
				}
				if i == 0 && !h.Marker {
					t.Fatal("no marker on a new source")
				}
			}
			if !bytes.Equal(dec[12:], pkt[12:]) {
				t.Fatal("payload changed")
			}
			lastSeq, lastTS = h.SequenceNumber, h.Timestamp
			k++
		}
	}
	if roc, _ := decB.ROC(outSSRC); roc != 1 {
		t.Fatalf("receiver ROC %d, want 1 (65500+120 crosses one wrap)", roc)
	}
	if got := s.Stats().B.SSRCSwitches; got != 3 {
		t.Fatalf("switches %d", got)
	}

	// RTCP: the current source's SR is rewritten to the stable SSRC; the
	// first source's late RTCP is dropped (it would be read as ours).
	sr := make([]byte, 28)
	sr[0], sr[1] = 0x80, 200
	binary.BigEndian.PutUint16(sr[2:], 6)
	binary.BigEndian.PutUint32(sr[4:], 0x2000)
	binary.BigEndian.PutUint32(sr[16:], 5000+160*69)
	pa.send(rtcpRR(0x1000), aAddr) // stale
	pa.send(sr, aAddr)
	w, _ := pb.recv()
	dec, err := decB.DecryptRTCP(nil, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(dec[4:]) != outSSRC {
		t.Fatalf("SR ssrc %x", binary.BigEndian.Uint32(dec[4:]))
	}
	if ts := binary.BigEndian.Uint32(dec[16:]); ts != lastTS {
		t.Fatalf("SR timestamp %d, last RTP %d", ts, lastTS)
	}
	if s.Stats().A.Dropped[DropStaleRTCP] != 1 {
		t.Fatal("stale RTCP not dropped")
	}
}

type recordingHandler struct {
	mu    sync.Mutex
	kinds []DatagramKind
	got   chan struct{}
}

func (h *recordingHandler) HandleDatagram(_ LegID, kind DatagramKind, pkt []byte, from netip.AddrPort, via PacketWriter) {
	h.mu.Lock()
	h.kinds = append(h.kinds, kind)
	h.mu.Unlock()
	// Echo, as a STUN binding response or a DTLS record would be.
	_, _ = via.WriteToUDPAddrPort(pkt, from)
	h.got <- struct{}{}
}

func TestRelayDemux(t *testing.T) {
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	h := &recordingHandler{got: make(chan struct{}, 4)}
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Handler: h},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	stun := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}
	dtls := []byte{22, 0xfe, 0xfd, 0, 0}
	for _, p := range [][]byte{stun, dtls} {
		pa.send(p, aAddr)
		if got, from := pa.recv(); !bytes.Equal(got, p) || from != aAddr {
			t.Fatal("handler reply not from the leg's socket")
		}
	}
	h.mu.Lock()
	if h.kinds[0] != KindSTUN || h.kinds[1] != KindDTLS {
		t.Fatal(h.kinds)
	}
	h.mu.Unlock()
	// Leg B has no handler; junk and short packets are dropped too.
	for _, p := range [][]byte{stun, dtls, {100, 1, 2, 3}, {0x80, 0, 1}, {}} {
		pb.send(p, bAddr)
	}
	marker := rtpPacket(7, 7, 7, 7)
	pb.send(marker, bAddr)
	pa.expectOnly(t, marker)
	st := s.Stats().B
	if st.Dropped[DropSTUN] != 1 || st.Dropped[DropDTLS] != 1 || st.Dropped[DropUnknownType] != 1 || st.Dropped[DropMalformed] != 2 {
		t.Fatalf("%v", st.Dropped)
	}
	if _, ok := s.Latched(LegB); !ok {
		t.Fatal("B not latched by its RTP")
	}
}

// TestRelayNotReadyThenKeyed is the DTLS seam: a leg starts without keys
// (its packets are dropped as not_ready, not as errors), then gets a
// transform.
func TestRelayNotReadyThenKeyed(t *testing.T) {
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Transform: NotReady{}},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	tr, encA, decA, _, _ := pair(t, AEAD_AES_128_GCM)
	w, _ := encA.EncryptRTCP(nil, rtcpRR(1), nil)
	pa.send(w, aAddr)                     // SRTCP before keys (baresip does this)
	pb.send(rtpPacket(2, 1, 0, 8), bAddr) // plain towards a leg without keys
	waitFor(t, "not_ready drops", func() bool {
		st := s.Stats()
		return st.A.Dropped[DropNotReady] == 1 && st.B.Dropped[DropNotReady] == 1
	})
	s.SetTransform(LegA, tr)
	if s.Transform(LegA) != tr {
		t.Fatal("Transform()")
	}
	plain := rtpPacket(1, 1, 0, 8)
	w, _ = encA.EncryptRTP(nil, plain, nil)
	pa.send(w, aAddr)
	pb.expectOnly(t, plain)
	pb.send(rtpPacket(2, 2, 0, 8), bAddr)
	got, _ := pa.recv()
	if dec, err := decA.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, rtpPacket(2, 2, 0, 8)) {
		t.Fatalf("%v", err)
	}
	st := s.Stats()
	if st.A.Dropped[DropNotReady] != 1 || st.B.Dropped[DropNotReady] != 1 || st.A.Dropped[DropDecrypt] != 0 {
		t.Fatalf("%+v", st)
	}
	s.SetTransform(LegA, nil)
	if _, ok := s.Transform(LegA).(Plain); !ok {
		t.Fatal("nil transform is not Plain")
	}
}

func TestStreamIdle(t *testing.T) {
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	fired := make(chan time.Duration, 1)
	s := newTestStream(t, StreamConfig{
		A:           LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr()},
		B:           LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
		IdleTimeout: 20 * time.Millisecond,
		OnIdle:      func(d time.Duration) { fired <- d },
	})
	if !s.LastPacket(LegA).IsZero() {
		t.Fatal("LastPacket before any packet")
	}
	aAddr, _ := s.LocalAddr(LegA)
	pa.send(rtpPacket(1, 1, 0, 8), aAddr)
	pb.recv()
	last := s.LastPacket(LegA)
	if last.IsZero() || !s.LastPacket(LegB).IsZero() {
		t.Fatal("LastPacket")
	}
	if d := s.Idle(last.Add(time.Hour)); d != time.Hour {
		t.Fatalf("Idle = %v", d)
	}
	if d := s.Idle(last.Add(-time.Hour)); d != 0 {
		t.Fatalf("Idle in the past = %v", d)
	}
	select {
	case d := <-fired:
		if d < 20*time.Millisecond {
			t.Fatalf("fired after %v of idleness", d)
		}
	case <-time.After(waitLimit):
		t.Fatal("OnIdle never fired")
	}
}

func TestStreamCloseReleasesAndLeaksNothing(t *testing.T) {
	pp := newTestPool(t)
	_ = pickWorker() // the relay loops live for the process: start them before counting
	before := runtime.NumGoroutine()
	pa, pb := newPhone(t), newPhone(t)
	var streams []*Stream
	for i := range 5 {
		s, err := NewStream(StreamConfig{
			A:           LegConfig{Ports: allocate(t, pp, i%2 == 0), Remote: pa.addr()},
			B:           LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr()},
			IdleTimeout: time.Hour, OnIdle: func(time.Duration) {},
		})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	a, _ := streams[0].LocalAddr(LegA)
	pa.send(rtpPacket(1, 1, 0, 8), a)
	pb.recv()
	if st := pp.Stats(); st.InUse != 10 {
		t.Fatalf("%+v", st)
	}
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(2)
		go func() { defer wg.Done(); _ = s.Close() }()
		go func() { defer wg.Done(); _ = s.Close() }() // concurrent, idempotent
	}
	wg.Wait()
	if st := pp.Stats(); st.InUse != 0 || st.Quarantined != 10 {
		t.Fatalf("%+v", st)
	}
	for _, s := range streams {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Readers are gone when Close returns; allow the runtime a bounded
	// number of scheduling rounds to retire them.
	for i := 0; runtime.NumGoroutine() > before && i < 1000; i++ {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines before, %d after", before, n)
	}
}

func TestNewStreamErrors(t *testing.T) {
	if _, err := NewStream(StreamConfig{}); err == nil {
		t.Fatal("no ports accepted")
	}
	if LegA.String() != "A" || LegB.String() != "B" || DropAuth.String() != "srtp_auth" ||
		NumDropReasons.String() != "DropReason(15)" || DropStaleRTCP.String() != "stale_rtcp" || DropIdlePort.String() != "idle_port" {
		t.Fatal("names")
	}
	if inboundReason(errors.New("x")) != DropDecrypt || inboundReason(pion.ErrFailedToVerifyAuthTag) != DropAuth ||
		inboundReason(ErrNotReady) != DropNotReady {
		t.Fatal("inboundReason")
	}
}

func TestRelayIPv6(t *testing.T) {
	lo6 := netip.IPv6Loopback()
	probe, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo6, 0)))
	if err != nil {
		t.Skipf("no ::1 here: %v", err)
	}
	_ = probe.Close()
	lo, hi := testRange(4)
	pp, err := NewPortPool(PortPoolConfig{IP: lo6, Min: lo, Max: hi})
	if err != nil {
		t.Fatal(err)
	}
	phone6 := func() *phone {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo6, 0)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return &phone{t: t, conn: c, buf: make([]byte, 4096)}
	}
	pa, pb := phone6(), phone6()
	trA, encA, _, _, _ := pair(t, AEAD_AES_256_GCM)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Transform: trA},
		B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	if !aAddr.Addr().Is6() {
		t.Fatalf("local %v", aAddr)
	}
	plain := rtpPacket(6, 1, 0, 80)
	w, _ := encA.EncryptRTP(nil, plain, nil)
	pa.send(w, aAddr)
	pb.expectOnly(t, plain)
	if src, ok := s.Latched(LegA); !ok || src != pa.addr() {
		t.Fatalf("latched %v", src)
	}
}

type bindingHandler struct {
	recordingHandler
	bound  chan LegID
	closed int
}

func (h *bindingHandler) BindStream(_ *Stream, id LegID) { h.bound <- id }
func (h *bindingHandler) Close() error                   { h.closed++; return nil }

// TestStreamHandlerBindSwapClose: a handler is bound before datagrams
// come, SetHandler swaps and binds, Close closes the current one.
func TestStreamHandlerBindSwapClose(t *testing.T) {
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	h1 := &bindingHandler{recordingHandler: recordingHandler{got: make(chan struct{}, 4)}, bound: make(chan LegID, 1)}
	s, err := NewStream(StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr()},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr(), Handler: h1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if id := <-h1.bound; id != LegB {
		t.Fatal(id)
	}
	h2 := &bindingHandler{recordingHandler: recordingHandler{got: make(chan struct{}, 4)}, bound: make(chan LegID, 1)}
	if old := s.SetHandler(LegB, h2); old != h1 {
		t.Fatal("SetHandler did not return the old handler")
	}
	if id := <-h2.bound; id != LegB {
		t.Fatal(id)
	}
	bAddr, _ := s.LocalAddr(LegB)
	stun := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}
	pb.send(stun, bAddr)
	<-h2.got
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if h1.closed != 0 || h2.closed != 1 {
		t.Fatalf("closed %d %d", h1.closed, h2.closed)
	}
}
