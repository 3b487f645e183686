package srtp

import (
	"bytes"
	"net/netip"
	"testing"

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

// TestRelayZeroAllocs checks the relay path allocates nothing per packet
// once latched (the race detector allocates, so it is skipped there).
func TestRelayZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name  string
		suite Suite
	}{{"plain", SuiteUnknown}, {"sdes-cm", AES_CM_128_HMAC_SHA1_80}, {"sdes-gcm", AEAD_AES_128_GCM}} {
		t.Run(tc.name, func(t *testing.T) {
			pp := newTestPool(t)
			pa, pb := newPhone(t), newPhone(t)
			var trA, trB Transform
			var encA *pion.Context
			if tc.suite != SuiteUnknown {
				var a *SRTP
				a, encA, _, _, _ = pair(t, tc.suite)
				trA = a
				trB, _, _, _, _ = pair(t, tc.suite)
			}
			s := newTestStream(t, StreamConfig{
				A: LegConfig{Ports: allocate(t, pp, false), Remote: pa.addr(), Transform: trA},
				B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr(), Transform: trB, Normalize: true},
			})
			aAddr, _ := s.LocalAddr(LegA)
			const runs = 200
			wires := make([][]byte, runs+2)
			var hdr rtp.Header
			for j := range wires {
				p := rtpPacket(uint32(1+j/100), uint16(j), uint32(j)*160, 160) // one SSRC switch too
				if encA != nil {
					p, _ = encA.EncryptRTP(nil, p, &hdr)
				}
				wires[j] = p
			}
			j := 0
			send := func() {
				if _, err := pa.conn.WriteToUDPAddrPort(wires[j], aAddr); err != nil {
					t.Fatal(err)
				}
				j++
				if _, _, err := pb.conn.ReadFromUDPAddrPort(pb.buf); err != nil {
					t.Fatal(err)
				}
			}
			send() // latches: that one allocates the latch state
			allocs := testing.AllocsPerRun(runs, send)
			if allocs != 0 {
				t.Fatalf("%.2f allocs per relayed packet", allocs)
			}
			if st := s.Stats(); st.A.Dropped != ([NumDropReasons]uint64{}) || !bytes.Equal(wires[0][:1], []byte{0x80}) {
				t.Fatalf("%+v", st.A)
			}
		})
	}
}
