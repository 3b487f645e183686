package srtp

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/sdp/v3"
)

// sippSDP is the SDP that SIPp's bench scenarios (bench/scenarios) put in
// every INVITE and 200: the whole-process benchmark's media.
var sippSDP = []byte("v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

// stepClock is a clock that moves a fixed step every time it is read:
// a benchmark's quarantine then expires after a fixed number of calls,
// whatever the machine's speed.
type stepClock struct {
	t    atomic.Int64
	step int64
}

func (c *stepClock) Now() time.Time { return time.Unix(0, c.t.Add(c.step)) }

// newLifecycleBench makes a pool wide enough for the quarantine that
// builds up: each call takes two slots, each released slot rests for about
// 500 calls (the clock is read a few times per call).
func newLifecycleBench(b *testing.B, mode sockMode) *PortPool {
	b.Helper()
	lo, hi := testRange(2048)
	clk := &stepClock{step: int64(25 * time.Microsecond)}
	pp, err := newPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi, Quarantine: 50 * time.Millisecond, Now: clk.Now}, mode)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pp.Close() })
	return pp
}

// rewriteSDP, when set, replaces RewriteSDP (Rewrite then Marshal: the
// SDP work before RewriteSDP).
var rewriteSDP func(*sdp.SessionDescription, Anchor) ([]byte, error)

// callMediaOnce is what sbc does for one plain RTP call without
// rtcp-mux (the SIPp bench call): relay ports for both legs, a stream
// whose caller's leg learns, both legs told their SDP address, and, when
// sdpToo, the offer and the answer parsed, read and rewritten; then the
// stream closed and the ports released.
func callMediaOnce(b *testing.B, pp *PortPool, sdpToo bool, orig *Origin) {
	ap, err := pp.Allocate(false)
	if err != nil {
		b.Fatal(err)
	}
	bp, err := pp.Allocate(false)
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewStream(StreamConfig{A: LegConfig{Ports: ap, Learn: true}, B: LegConfig{Ports: bp}})
	if err != nil {
		b.Fatal(err)
	}
	phoneA := netip.AddrPortFrom(loopback, 6000)
	phoneB := netip.AddrPortFrom(loopback, 6002)
	if sdpToo {
		for _, to := range []LegID{LegB, LegA} { // the offer to B, the answer to A
			in, err := ParseSDP(sippSDP)
			if err != nil {
				b.Fatal(err)
			}
			rm, err := Remote(in, 0)
			if err != nil {
				b.Fatal(err)
			}
			from := LegA
			if to == LegA {
				from = LegB
			}
			s.Expect(from, rm.RTP, rm.RTCP)
			lrtp, lrtcp := s.LocalAddr(to)
			anchor := Anchor{Addr: loopback, Origin: orig, Media: []MediaAnchor{{Port: int(lrtp.Port()), RTCPPort: int(lrtcp.Port())}}}
			if rewriteSDP != nil {
				_, err = rewriteSDP(in, anchor)
			} else {
				_, err = RewriteSDP(in, anchor)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	} else {
		s.Expect(LegA, phoneA, netip.AddrPort{})
		s.Expect(LegB, phoneB, netip.AddrPort{})
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCallMedia is a whole call's media lifecycle as sbc runs it
// (setupMedia, then callMedia.close), one call per op: cpu-ns/op is the
// process's CPU per call (the relay loops' and the collector's work
// included), allocs/op its allocations. "ports" is ports and stream only;
// "sdp" adds the SDP work of the offer and the answer. The pool's socket
// modes side by side: net (net.ListenUDP per call: the design before),
// raw (raw sockets per call), keep (kept raw sockets: the default).
func BenchmarkCallMedia(b *testing.B) {
	for _, mode := range testModes {
		for _, sdpToo := range []bool{false, true} {
			name := mode.String() + "/ports"
			if sdpToo {
				name = mode.String() + "/sdp"
			}
			b.Run(name, func(b *testing.B) { benchCallMedia(b, mode, sdpToo) })
		}
	}
}

func benchCallMedia(b *testing.B, mode sockMode, sdpToo bool) {
	{
		{
			pp := newLifecycleBench(b, mode)
			orig := NewOrigin("sbc", loopback)
			b.ReportAllocs()
			cpu0 := processCPU()
			n := 0
			for b.Loop() {
				callMediaOnce(b, pp, sdpToo, orig)
				n++
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(n), "cpu-ns/op")
		}
	}
}

// processCPU is the process's user and system CPU time in nanoseconds:
// on a shared machine, CPU per op is steadier than ns/op (wall time), and
// it includes the relay loops' and the garbage collector's work.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
