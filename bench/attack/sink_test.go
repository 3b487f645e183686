package attack

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestSink(t *testing.T) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0"), Keep: 2, MaxSources: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	send := func(from string, n int) {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netipAddrPort(from+":0")), net.UDPAddrFromAddrPort(sink.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte(from)); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("127.0.0.71", 3)
	send("127.0.0.72", 2)
	send("127.0.0.73", 1) // beyond MaxSources
	if err := sink.Wait(testCtx(t), 6); err != nil {
		t.Fatal(err)
	}
	srcs := sink.Sources()
	if sink.Count() != 6 || sink.DistinctSources() != 2 || sink.Overflow() != 1 ||
		srcs[netip.MustParseAddr("127.0.0.71")] != 3 || srcs[netip.MustParseAddr("127.0.0.72")] != 2 {
		t.Errorf("count %d distinct %d overflow %d sources %v", sink.Count(), sink.DistinctSources(), sink.Overflow(), srcs)
	}
	if p := sink.Payloads(); len(p) != 2 || string(p[0].Data) != "127.0.0.71" || p[0].From.Addr() != netip.MustParseAddr("127.0.0.71") {
		t.Errorf("payloads %+v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := sink.Wait(ctx, 7); err == nil {
		t.Error("Wait for a datagram that never comes returned nil")
	}
	if _, err := NewSink(SinkConfig{}); err == nil {
		t.Error("sink without address")
	}
	if _, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0"), NetNS: "/nonexistent/ns"}); err == nil {
		t.Error("sink in a missing namespace")
	}
}
