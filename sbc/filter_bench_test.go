package sbc

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

func benchSBC(b *testing.B) *SBC {
	b.Helper()
	p := (&testpolicy.Policy{
		Realms: []testpolicy.Realm{{Name: "external", Listeners: []testpolicy.Listener{{Bind: "127.0.0.1:0"}}}},
		Trunks: []testpolicy.Trunk{{Name: "carrier", Realm: "external", Sources: []string{"192.0.2.0/24", "2001:db8:1::/48"}}},
		Pools:  []testpolicy.Pool{{Name: "p", Realm: "external", Targets: testpolicy.Targets("127.0.0.1:9")}},
		// The trunk's packet budget is checked (trunk_pps), high enough
		// that the benchmark's loop never exhausts it.
		Limits: &testpolicy.Limits{TrunkPPS: new(10_000_000), TrunkPPSBurst: 100_000_000},
	}).Parse(b)
	s, err := New(p, Options{Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.def.blocklist.Close() })
	return s
}

var benchPacket = []byte("OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1\r\n" +
	"From: <sip:a@198.51.100.7>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")

// BenchmarkReadFilterBlocked is the cost of dropping one datagram of a
// blocked source before the parser (the user-space drop path).
func BenchmarkReadFilterBlocked(b *testing.B) {
	s := benchSBC(b)
	for i := 0; i < 1000; i++ {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		s.def.blocklist.Add(acl.Entry{Prefix: netip.PrefixFrom(a, 32), Reason: "bench", Origin: acl.OriginManual})
	}
	f := s.readFilter(s.realms["external"])
	props := sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(203, 0, 1, 7), Port: 5060}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, _ := f(props, benchPacket); out != nil {
			b.Fatal("blocked source passed")
		}
	}
}

// BenchmarkReadFilterTrunk is the cost the filter adds to a trunk's
// datagram that passes (blocklist miss, trunk lookup on the realm, the
// trunk's packet budget, raw validation).
func BenchmarkReadFilterTrunk(b *testing.B) {
	s := benchSBC(b)
	f := s.readFilter(s.realms["external"])
	props := sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 5060}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, _ := f(props, benchPacket); out == nil {
			b.Fatal("trunk datagram dropped")
		}
	}
}

// BenchmarkReadFilterUnknown is the cost of dropping one datagram of an
// unknown source at the gate (drop mode), one new source per datagram
// as in a spoofed flood: counted and charged (the failure tracker's
// per-source state is bounded by limits.max_sources).
func BenchmarkReadFilterUnknown(b *testing.B) {
	s := benchSBC(b)
	f := s.readFilter(s.realms["external"])
	ua := &net.UDPAddr{IP: net.IPv4(203, 0, 0, 0).To4(), Port: 5060}
	props := sip.TransportReadProps{Transport: "UDP", RemoteAddr: ua}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ua.IP[1], ua.IP[2], ua.IP[3] = byte(i>>16), byte(i>>8), byte(i)
		if out, _ := f(props, benchPacket); out != nil {
			b.Fatal("unknown source passed")
		}
	}
}

// BenchmarkTrunkLookup is stage 1's source → trunk lookup.
func BenchmarkTrunkLookup(b *testing.B) {
	s := benchSBC(b)
	st := s.state.Load()
	ep := &endpoint{name: "external"}
	src := netip.MustParseAddrPort("192.0.2.9:5060")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p := s.classify(st, ep, src, "udp"); p.trunk == nil {
			b.Fatal("not classified")
		}
	}
}

var _ = context.Background

// BenchmarkAdmitOpenGate is what the admin API's switches add to every
// new call: the drain and disabled-trunk checks and the trunk's CPS meter.
func BenchmarkAdmitOpenGate(b *testing.B) {
	s := benchSBC(b)
	p := peer{src: netip.MustParseAddrPort("192.0.2.9:5060"), trunk: s.Policy().Trunk("carrier")}
	s.runtime.setTrunk("other", false) // a disabled trunk in the table
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s.closedFor(p) != "" {
			b.Fatal("closed")
		}
		s.runtime.meter(p.trunk.Name).add(time.Now())
	}
}

// The checks above allocate nothing on the call path.
func TestAdmitOpenGateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	p := (&testpolicy.Policy{
		Realms: []testpolicy.Realm{{Name: "external", Listeners: []testpolicy.Listener{{Bind: "127.0.0.1:0"}}}},
		Trunks: []testpolicy.Trunk{{Name: "carrier", Realm: "external", Sources: []string{"192.0.2.0/24"}}},
		Pools:  []testpolicy.Pool{{Name: "p", Realm: "external", Targets: testpolicy.Targets("127.0.0.1:9")}},
	}).Parse(t)
	s, err := New(p, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.def.blocklist.Close() })
	pe := peer{src: netip.MustParseAddrPort("192.0.2.9:5060"), trunk: s.Policy().Trunk("carrier")}
	s.runtime.setTrunk("other", false)
	s.runtime.meter("carrier")
	if n := testing.AllocsPerRun(100, func() {
		_ = s.closedFor(pe)
		s.runtime.meter(pe.trunk.Name).add(time.Now())
	}); n != 0 {
		t.Errorf("%v allocations per call", n)
	}
	s.runtime.setTrunk("carrier", false)
	if s.closedFor(pe) != reasonTrunkDisabled {
		t.Error("a disabled trunk admitted")
	}
}
