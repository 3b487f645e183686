package srtp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/dtls/v3"
	"github.com/pion/rtp"
	pion "github.com/pion/srtp/v3"
)

// relayBench is phone A → stream → phone B, one packet in flight at a
// time: each op is one send, one relay pass (read, transforms, write) and
// one receive. The allocation figure is process-wide, so it includes the
// relay's reader goroutine.
type relayBench struct {
	s      *Stream
	pa, pb *phone
	aAddr  netip.AddrPort
}

func newRelayBench(b *testing.B, trA, trB Transform) *relayBench {
	pp := newTestPool(b)
	pa, pb := newPhone(b), newPhone(b)
	s := newTestStream(b, StreamConfig{
		A: LegConfig{Ports: allocate(b, pp, true), Remote: pa.addr(), Transform: trA},
		B: LegConfig{Ports: allocate(b, pp, true), Remote: pb.addr(), Transform: trB, Normalize: trB != nil},
	})
	a, _ := s.LocalAddr(LegA)
	return &relayBench{s: s, pa: pa, pb: pb, aAddr: a}
}

// burst sends k packets, then reads k: k=1 measures latency (two
// goroutine wake-ups per packet), larger k the relay's cost per packet when
// its socket has a queue.
func (r *relayBench) burst(b *testing.B, pkts [][]byte) {
	for _, p := range pkts {
		if _, err := r.pa.conn.WriteToUDPAddrPort(p, r.aAddr); err != nil {
			b.Fatal(err)
		}
	}
	for range pkts {
		if _, _, err := r.pb.conn.ReadFromUDPAddrPort(r.pb.buf); err != nil {
			b.Fatal(err)
		}
	}
}

// runRelayBench reports per packet: ns/op and allocs/op are per relayed
// packet.
func runRelayBench(b *testing.B, trA, trB Transform, next func(dst []byte) []byte) {
	for _, k := range []int{1, 16} {
		b.Run(map[int]string{1: "lockstep", 16: "burst16"}[k], func(b *testing.B) {
			r := newRelayBench(b, trA, trB)
			// Packets are made in batches with the timer stopped (the
			// phone's encryption is not the relay's cost).
			const batch = 4096
			pkts := make([][]byte, batch)
			for j := range pkts {
				pkts[j] = make([]byte, 0, 256)
			}
			refill := func() {
				for j := range pkts {
					pkts[j] = next(pkts[j][:0])
				}
			}
			refill()
			b.ReportAllocs()
			b.SetBytes(172)
			b.ResetTimer()
			at := 0
			for i := 0; i < b.N; i += k {
				if at+k > batch {
					b.StopTimer()
					refill()
					at = 0
					b.StartTimer()
				}
				r.burst(b, pkts[at:at+k])
				at += k
			}
			b.StopTimer()
			if st := r.s.Stats(); st.A.Packets == 0 || st.A.Dropped != ([NumDropReasons]uint64{}) {
				b.Fatalf("%+v", st.A)
			}
			r.s.Close()
		})
	}
}

// BenchmarkRelayPlain: plain RTP/AVP on both legs.
func BenchmarkRelayPlain(b *testing.B) {
	seq := uint16(0)
	runRelayBench(b, nil, nil, func(dst []byte) []byte {
		seq++
		return append(dst, rtpPacket(1, seq, uint32(seq)*160, 160)...)
	})
}

// BenchmarkRelaySDES: SDES on both legs with different suites
// (AES_CM_128_HMAC_SHA1_80 in, AEAD_AES_128_GCM out, normalised): decrypt,
// rewrite and re-encrypt per packet. The phone encrypts with the timer
// stopped.
func BenchmarkRelaySDES(b *testing.B) {
	trA, encA, _, _, _ := pair(b, AES_CM_128_HMAC_SHA1_80)
	trB, _, _, _, _ := pair(b, AEAD_AES_128_GCM)
	var hdr rtp.Header
	seq := uint16(0)
	runRelayBench(b, trA, trB, func(dst []byte) []byte {
		seq++
		w, err := encA.EncryptRTP(dst, rtpPacket(1, seq, uint32(seq)*160, 160), &hdr)
		if err != nil {
			b.Fatal(err)
		}
		return w
	})
}

// legKind is one leg's media profile in the per-profile benchmarks and
// allocation tests: plain RTP, SDES (AES_CM_128_HMAC_SHA1_80, what SIP
// trunks offer) or DTLS-SRTP (a real handshake with a pion/dtls phone,
// AES_CM_128_HMAC_SHA1_80 too: what OpenSSL peers pick, and the costlier
// suite in pion).
type legKind uint8

const (
	kindPlain legKind = iota
	kindSDES
	kindDTLS
)

func (k legKind) String() string { return [...]string{"plain", "sdes", "dtls"}[k] }

// oneWay is a stream with a sending phone on leg A and a receiving phone
// on leg B, set up as the SBC sets legs up (A learns, SRTP legs are
// normalised, DTLS legs use rtcp-mux and start NotReady). The sender's
// packets are made ready to send by next (encrypted for an SRTP leg A);
// recv waits for one relayed packet at B without allocating.
type oneWay struct {
	s    *Stream
	src  *net.UDPConn
	to   netip.AddrPort
	next func(dst []byte, ssrc uint32, seq uint16) []byte
	recv func()
	// open reports B's decrypted view of its last packet, for checks
	// outside the measured loop (nil for a DTLS receiver).
	open func() ([]byte, error)
}

func newOneWay(t testing.TB, from, to legKind) *oneWay {
	t.Helper()
	pp := newTestPool(t)
	w := &oneWay{}
	var legA, legB LegConfig
	legA.Learn = true
	legB.Normalize = to != kindPlain
	legA.Normalize = from != kindPlain
	var hdr rtp.Header
	var dtlsA, dtlsB *dtlsPhone
	var dA, dB *DTLS
	var encA *pion.Context
	switch from {
	case kindPlain:
		pa := newPhone(t)
		w.src, legA.Remote = pa.conn, pa.addr()
	case kindSDES:
		pa := newPhone(t)
		tr, enc, _, _, _ := pair(t, AES_CM_128_HMAC_SHA1_80)
		w.src, legA.Remote, legA.Transform, encA = pa.conn, pa.addr(), tr, enc
	case kindDTLS:
		dtlsA = newDTLSPhone(t)
		dA = newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActpass, RemoteFingerprints: []Fingerprint{dtlsA.cert.Fingerprint}})
		w.src, legA.Remote, legA.Handler = dtlsA.conn, dtlsA.addr(), dA
	}
	legA.Ports = allocate(t, pp, from == kindDTLS)
	var pb *phone
	var decB *pion.Context
	sig := make(chan struct{}, 256)
	switch to {
	case kindPlain, kindSDES:
		pb = newPhone(t)
		legB.Remote = pb.addr()
		if to == kindSDES {
			var tr *SRTP
			tr, _, decB, _, _ = pair(t, AES_CM_128_HMAC_SHA1_80)
			legB.Transform = tr
		}
	case kindDTLS:
		dtlsB = newDTLSPhoneSig(t, sig)
		dB = newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActpass, RemoteFingerprints: []Fingerprint{dtlsB.cert.Fingerprint}})
		legB.Remote, legB.Handler = dtlsB.addr(), dB
	}
	legB.Ports = allocate(t, pp, to == kindDTLS)
	w.s = newTestStream(t, StreamConfig{A: legA, B: legB})
	w.to, _ = w.s.LocalAddr(LegA)
	cm80 := dtls.SRTP_AES128_CM_HMAC_SHA1_80
	if dtlsA != nil {
		var err error
		if encA, _, err = dtlsA.handshake(true, w.to, dA.Fingerprint(), cm80); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "leg A keys", func() bool { _, ok := w.s.Transform(LegA).(*SRTP); return ok })
	}
	if dtlsB != nil {
		bAddr, _ := w.s.LocalAddr(LegB)
		if _, _, err := dtlsB.handshake(true, bAddr, dB.Fingerprint(), cm80); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "leg B keys", func() bool { _, ok := w.s.Transform(LegB).(*SRTP); return ok })
		w.recv = func() { <-sig }
	} else {
		var last []byte
		w.recv = func() {
			n, _, err := pb.conn.ReadFromUDPAddrPort(pb.buf)
			if err != nil {
				t.Fatal(err)
			}
			last = pb.buf[:n]
		}
		w.open = func() ([]byte, error) {
			if decB == nil {
				return last, nil
			}
			return decB.DecryptRTP(nil, last, nil)
		}
	}
	w.next = func(dst []byte, ssrc uint32, seq uint16) []byte {
		p := rtpPacket(ssrc, seq, uint32(seq)*160, 160)
		if encA == nil {
			return append(dst, p...)
		}
		out, err := encA.EncryptRTP(dst, p, &hdr)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return w
}

// BenchmarkRelayProfiles: each pair of leg profiles the SBC bridges, one
// direction (the sender on A). Together with BenchmarkRelayPlain and
// BenchmarkRelaySDES these are what the relay costs per packet by
// profile; allocs/op is per relayed packet and must be 0.
func BenchmarkRelayProfiles(b *testing.B) {
	for _, c := range [][2]legKind{
		{kindSDES, kindPlain}, {kindPlain, kindSDES},
		{kindSDES, kindDTLS}, {kindDTLS, kindSDES},
		{kindPlain, kindDTLS}, {kindDTLS, kindPlain},
	} {
		b.Run(c[0].String()+"-to-"+c[1].String(), func(b *testing.B) {
			for _, k := range []int{1, 16} {
				b.Run(map[int]string{1: "lockstep", 16: "burst16"}[k], func(b *testing.B) {
					w := newOneWay(b, c[0], c[1])
					const batch = 4096
					pkts := make([][]byte, batch)
					for j := range pkts {
						pkts[j] = make([]byte, 0, 256)
					}
					seq := uint16(0)
					refill := func() {
						for j := range pkts {
							seq++
							pkts[j] = w.next(pkts[j][:0], 1, seq)
						}
					}
					refill()
					b.ReportAllocs()
					b.SetBytes(172)
					b.ResetTimer()
					at := 0
					for i := 0; i < b.N; i += k {
						if at+k > batch {
							b.StopTimer()
							refill()
							at = 0
							b.StartTimer()
						}
						for _, p := range pkts[at : at+k] {
							if _, err := w.src.WriteToUDPAddrPort(p, w.to); err != nil {
								b.Fatal(err)
							}
						}
						for range k {
							w.recv()
						}
						at += k
					}
					b.StopTimer()
					if st := w.s.Stats(); st.A.Packets == 0 || st.A.Dropped != ([NumDropReasons]uint64{}) {
						b.Fatalf("%+v", st.A)
					}
				})
			}
		})
	}
}

// TestRelayZeroAllocs checks the relay path allocates nothing per packet
// once latched, for every pair of leg profiles the SBC bridges and for
// SDES↔SDES with different keys, across a source switch
// (normalised egress), and for an opaque stream (UDPTL: the SDES leg's
// bytes pass as they are). The race detector allocates, so it is skipped
// there. The allocation count is process-wide: it covers the relay's
// reader goroutines, the phones and this test's loop.
func TestRelayZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	cases := []struct {
		a, b   legKind
		opaque bool
	}{
		{a: kindPlain, b: kindPlain}, {a: kindSDES, b: kindSDES},
		{a: kindSDES, b: kindPlain}, {a: kindPlain, b: kindSDES},
		{a: kindSDES, b: kindDTLS}, {a: kindDTLS, b: kindSDES},
		{a: kindPlain, b: kindDTLS}, {a: kindDTLS, b: kindPlain},
		{a: kindSDES, b: kindPlain, opaque: true},
	}
	for _, c := range cases {
		name := c.a.String() + "-to-" + c.b.String()
		if c.opaque {
			name = "opaque"
		}
		t.Run(name, func(t *testing.T) {
			w := newOneWay(t, c.a, c.b)
			w.s.SetOpaque(c.opaque)
			const runs = 200
			wires := make([][]byte, runs+2) // AllocsPerRun runs once more to warm up
			for j := range wires {
				wires[j] = w.next(nil, uint32(1+j/100), uint16(j)) // one SSRC switch too
			}
			j := 0
			send := func() {
				if _, err := w.src.WriteToUDPAddrPort(wires[j], w.to); err != nil {
					t.Fatal(err)
				}
				j++
				w.recv()
			}
			send() // latches: that one allocates the latch state
			if w.open != nil && !c.opaque {
				got, err := w.open()
				if err != nil || len(got) != 172 || got[0] != 0x80 {
					t.Fatalf("B received %d bytes, %v", len(got), err)
				}
			}
			allocs := testing.AllocsPerRun(runs, send)
			if allocs != 0 {
				t.Fatalf("%.2f allocs per relayed packet", allocs)
			}
			// Counted after the send: B may have the last one first.
			waitFor(t, "every packet counted forwarded", func() bool { return w.s.Stats().A.Forwarded >= runs+2 })
			if st := w.s.Stats(); st.A.Dropped != ([NumDropReasons]uint64{}) || st.A.Forwarded != runs+2 {
				t.Fatalf("%+v", st.A)
			}
		})
	}
}
