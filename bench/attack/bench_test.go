package attack

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// reportFlood reports the achieved send rate and the share the sink got
// (waiting at most a second for stragglers; the rest were dropped, most
// often by the sink's full receive buffer).
func reportFlood(b *testing.B, rep Report, sink *Sink) {
	b.Helper()
	if rep.Sent != b.N {
		b.Fatalf("sent %d of %d: %s", rep.Sent, b.N, rep)
	}
	b.ReportMetric(rep.Rate(), "pkts/s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = sink.Wait(ctx, rep.Sent)
	b.ReportMetric(100*float64(sink.Count())/float64(rep.Sent), "delivered%")
}

func BenchmarkInviteFlood(b *testing.B) {
	for _, sdp := range []bool{false, true} {
		b.Run(fmt.Sprintf("sdp=%v", sdp), func(b *testing.B) {
			sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0")})
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			b.ReportAllocs()
			b.ResetTimer()
			rep, err := InviteFlood(context.Background(), InviteFloodConfig{
				Target: sink.Addr(), Local: local66, Count: b.N, Duration: 30 * time.Second, SDP: sdp,
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			reportFlood(b, rep, sink)
		})
	}
}

func BenchmarkSpoofedFloodLoopback(b *testing.B) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0")})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	b.ReportAllocs()
	b.ResetTimer()
	rep, err := SpoofedFlood(context.Background(), SpoofedFloodConfig{
		Target: sink.Addr(), Sources: netip.MustParsePrefix("127.66.0.0/16"), Mode: SpoofLoopback,
		MaxSources: 256, Count: b.N, Duration: 30 * time.Second,
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportFlood(b, rep.Report, sink)
}

// BenchmarkSpoofedFloodRaw sends raw spoofed packets (sources cycling
// over 10.66.0.0/16) inside namespaces the benchmark makes: over the
// namespace's own loopback, and over a veth pair.
func BenchmarkSpoofedFloodRaw(b *testing.B) {
	lo := netnstest.New(b, "sbcatk") // loopback up
	nsA, nsB := vethPair(b)
	for _, tc := range []struct {
		name, sendNS, sinkNS, addr string
	}{
		{"netns-lo", lo, lo, "127.0.0.1:5060"},
		{"veth", nsA, nsB, "10.99.0.2:5060"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sink, err := NewSink(SinkConfig{Addr: netipAddrPort(tc.addr), NetNS: tc.sinkNS})
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			b.ReportAllocs()
			b.ResetTimer()
			rep, err := SpoofedFlood(context.Background(), SpoofedFloodConfig{
				Target: sink.Addr(), Sources: netip.MustParsePrefix("10.66.0.0/16"), Mode: SpoofRaw,
				Count: b.N, Duration: 30 * time.Second, NetNS: tc.sendNS,
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			reportFlood(b, rep.Report, sink)
		})
	}
}
