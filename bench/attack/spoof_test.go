package attack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"golang.org/x/net/ipv4"
)

func TestChecksum(t *testing.T) {
	// RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
	if got := checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != ^uint16(0xddf2) {
		t.Errorf("checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	if got := checksum([]byte{0xab}, 0); got != ^uint16(0xab00) {
		t.Errorf("odd length: %#04x", got)
	}
}

func TestBuildIPv4UDP(t *testing.T) {
	src, dst := netip.MustParseAddr("10.66.1.2"), netip.MustParseAddr("10.99.0.2")
	for _, payload := range []string{"", "x", "OPTIONS sip:a SIP/2.0\r\n\r\n"} {
		pkt := buildIPv4UDP(nil, src, dst, 5060, 5070, 77, []byte(payload))
		h, err := ipv4.ParseHeader(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if h.Version != 4 || h.Len != 20 || h.TotalLen != len(pkt) || h.ID != 77 || h.TTL != 64 || h.Protocol != 17 ||
			!h.Src.Equal(src.AsSlice()) || !h.Dst.Equal(dst.AsSlice()) {
			t.Fatalf("header %+v", h)
		}
		if checksum(pkt[:20], 0) != 0 {
			t.Error("IP header checksum does not verify")
		}
		udp := pkt[20:]
		if binary.BigEndian.Uint16(udp[0:]) != 5060 || binary.BigEndian.Uint16(udp[2:]) != 5070 ||
			int(binary.BigEndian.Uint16(udp[4:])) != 8+len(payload) || string(udp[8:]) != payload {
			t.Fatalf("UDP header % x", udp[:8])
		}
		// Verify the UDP checksum the receiver's way: pseudo-header plus
		// datagram sums to all ones.
		pseudo := append(append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
		if checksum(append(pseudo, udp...), 0) != 0 {
			t.Error("UDP checksum does not verify")
		}
	}
}

func TestSourceRange(t *testing.T) {
	for in, want := range map[string]struct {
		first string
		n     uint64
	}{
		"10.66.0.0/16":   {"10.66.0.1", 65534},
		"127.66.0.0/24":  {"127.66.0.1", 254},
		"10.0.0.7/32":    {"10.0.0.7", 1},
		"10.0.0.6/31":    {"10.0.0.6", 2},
		"10.0.0.0/30":    {"10.0.0.1", 2},
		"0.0.0.0/0":      {"0.0.0.1", 1<<32 - 2},
		"192.168.1.0/25": {"192.168.1.1", 126},
	} {
		first, n := sourceRange(netip.MustParsePrefix(in))
		if first.String() != want.first || n != want.n {
			t.Errorf("%s: %s, %d; want %s, %d", in, first, n, want.first, want.n)
		}
	}
}

// checkSpoofed checks what a sink got from a spoofed flood: count
// datagrams from exactly nsrc sources of pfx, evenly, each payload an
// OPTIONS whose Via names its real source.
func checkSpoofed(t *testing.T, sink *Sink, pfx netip.Prefix, count, nsrc int, port uint16) {
	t.Helper()
	if err := sink.Wait(testCtx(t), count); err != nil {
		t.Fatal(err)
	}
	srcs := sink.Sources()
	if len(srcs) != nsrc {
		t.Fatalf("%d distinct sources, want %d", len(srcs), nsrc)
	}
	for a, n := range srcs {
		if !pfx.Contains(a) || n != count/nsrc {
			t.Fatalf("source %s sent %d (want %d inside %s)", a, n, count/nsrc, pfx)
		}
	}
	for _, d := range sink.Payloads() {
		m, err := sip.ParseMessage(d.Data)
		if err != nil {
			t.Fatalf("payload does not parse: %v: %q", err, d.Data)
		}
		req := m.(*sip.Request)
		via := req.Via()
		if req.Method != sip.OPTIONS || strings.Trim(via.Host, "[]") != d.From.Addr().String() || via.Port != int(d.From.Port()) {
			t.Fatalf("datagram from %s has Via %s:%d", d.From, via.Host, via.Port)
		}
		if port != 0 && d.From.Port() != port {
			t.Fatalf("source port %d, want %d", d.From.Port(), port)
		}
	}
}

func TestSpoofedFloodLoopback(t *testing.T) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0"), Keep: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pfx := netip.MustParsePrefix("127.66.0.0/16")
	rep, err := SpoofedFlood(testCtx(t), SpoofedFloodConfig{
		Target: sink.Addr(), Sources: pfx, Mode: SpoofLoopback, MaxSources: 50, Count: 200, Rate: 10000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != SpoofLoopback || rep.Sources != 50 || rep.Sent != 200 || rep.Stop != StopCount || rep.Errors != 0 {
		t.Fatalf("report %s %v %d", rep.Report, rep.Mode, rep.Sources)
	}
	checkSpoofed(t, sink, pfx, 200, 50, 0)
}

func TestSpoofedFloodErrors(t *testing.T) {
	target := netipAddrPort("127.0.0.1:5060")
	for name, cfg := range map[string]SpoofedFloodConfig{
		"loopback outside 127/8": {Target: target, Sources: netip.MustParsePrefix("10.66.0.0/16"), Mode: SpoofLoopback},
		"no sources":             {Target: target, Mode: SpoofLoopback},
		"ipv6 sources":           {Target: target, Sources: netip.MustParsePrefix("fd00::/64"), Mode: SpoofLoopback},
		"ipv6 target":            {Target: netipAddrPort("[::1]:5060"), Sources: netip.MustParsePrefix("127.66.0.0/16")},
		"negative count":         {Target: target, Sources: netip.MustParsePrefix("127.66.0.0/16"), Count: -1},
		"unknown mode":           {Target: target, Sources: netip.MustParsePrefix("127.66.0.0/16"), Mode: 9},
	} {
		if _, err := SpoofedFlood(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestSpoofedFloodRaw sends spoofed packets from one network namespace
// to a sink in another, over a veth pair the test makes: nothing reaches
// the host's network. The sink receiving them proves the kernel took the
// hand-made IPv4 and UDP checksums.
func TestSpoofedFloodRaw(t *testing.T) {
	nsA, nsB := vethPair(t)
	for _, mode := range []SpoofMode{SpoofRaw, SpoofAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			sink, err := NewSink(SinkConfig{Addr: netipAddrPort("10.99.0.2:5060"), NetNS: nsB, Keep: 100})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			pfx := netip.MustParsePrefix("10.66.0.0/16")
			rep, err := SpoofedFlood(testCtx(t), SpoofedFloodConfig{
				Target: sink.Addr(), Sources: pfx, Mode: mode, MaxSources: 300, Count: 900, Rate: 20000, NetNS: nsA,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Mode != SpoofRaw || rep.Sources != 300 || rep.Sent != 900 || rep.Errors != 0 {
				t.Fatalf("report %s %v %d", rep.Report, rep.Mode, rep.Sources)
			}
			checkSpoofed(t, sink, pfx, 900, 300, 5060)
		})
	}
	t.Run("payload", func(t *testing.T) {
		sink, err := NewSink(SinkConfig{Addr: netipAddrPort("10.99.0.2:5061"), NetNS: nsB, Keep: 10})
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		payload := []byte(strings.Repeat("z", 1000))
		rep, err := SpoofedFlood(testCtx(t), SpoofedFloodConfig{
			Target: sink.Addr(), Sources: netip.MustParsePrefix("10.66.7.9/32"), Mode: SpoofRaw,
			SourcePort: 40000, Payload: payload, Count: 10, NetNS: nsA,
		})
		if err != nil || rep.Sent != 10 || rep.Sources != 1 {
			t.Fatalf("%v %s", err, rep.Report)
		}
		if err := sink.Wait(testCtx(t), 10); err != nil {
			t.Fatal(err)
		}
		for _, d := range sink.Payloads() {
			if d.From != netipAddrPort("10.66.7.9:"+strconv.Itoa(40000)) || string(d.Data) != string(payload) {
				t.Fatalf("got %d bytes from %s", len(d.Data), d.From)
			}
		}
	})
}

// TestSpoofedFloodLink writes the flood as frames on one end of a veth
// pair, to 127.0.0.1 behind the other end (whose interface has
// route_localnet, as the comparison's flood link has): the sink there
// receiving them proves the frames, addresses and checksums good.
func TestSpoofedFloodLink(t *testing.T) {
	nsA, nsB := vethPair(t)
	if _, err := netns.IP("netns", "exec", nsB, "sysctl", "-qw", "net.ipv4.conf.vb.route_localnet=1"); err != nil {
		t.Fatal(err)
	}
	peer, err := netns.HardwareAddr(nsB, "vb")
	if err != nil {
		t.Fatal(err)
	}
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:5060"), NetNS: nsB, Keep: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pfx := netip.MustParsePrefix("10.66.0.0/16")
	rep, err := SpoofedFlood(testCtx(t), SpoofedFloodConfig{
		Target: sink.Addr(), Sources: pfx, Mode: SpoofLink, Link: "va", LinkPeer: peer,
		MaxSources: 300, Count: 900, Rate: 20000, NetNS: nsA,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != SpoofLink || rep.Sources != 300 || rep.Sent != 900 || rep.Errors != 0 {
		t.Fatalf("report %s %v %d", rep.Report, rep.Mode, rep.Sources)
	}
	checkSpoofed(t, sink, pfx, 900, 300, 5060)

	for name, cfg := range map[string]SpoofedFloodConfig{
		"no link":      {Target: sink.Addr(), Sources: pfx, Mode: SpoofLink, LinkPeer: peer, NetNS: nsA},
		"no peer":      {Target: sink.Addr(), Sources: pfx, Mode: SpoofLink, Link: "va", NetNS: nsA},
		"missing link": {Target: sink.Addr(), Sources: pfx, Mode: SpoofLink, Link: "nosuch0", LinkPeer: peer, NetNS: nsA},
	} {
		if _, err := SpoofedFlood(testCtx(t), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSpreadAddr(t *testing.T) {
	for _, c := range []struct {
		pfx  string
		i    uint64
		want string
	}{
		{"2001:db8:66::/48", 0, "2001:db8:66::1"},
		{"2001:db8:66::/48", 1, "2001:db8:66:1::1"},
		{"2001:db8:66::/48", 65535, "2001:db8:66:ffff::1"},
		{"2001:db8:66::/48", 65536, "2001:db8:66::2"},
		{"2001:db8:66:7::/64", 0, "2001:db8:66:7::1"},
		{"2001:db8:66:7::/64", 9, "2001:db8:66:7::a"},
		{"2001:db8::/32", 3, "2001:db8:0:3::1"}, // the first 2^16 /64s
		{"2001:db8::/126", 0, "2001:db8::1"},
		{"2001:db8::/126", 3, "2001:db8::1"}, // wraps
		{"10.66.0.0/16", 0, "10.66.0.1"},
		{"10.66.0.0/16", 256, "10.66.1.1"},
		{"10.66.0.0/16", 65535, "10.66.0.1"}, // wraps
		{"10.66.7.9/32", 5, "10.66.7.9"},
	} {
		if got := SpreadAddr(netip.MustParsePrefix(c.pfx), c.i); got != netip.MustParseAddr(c.want) {
			t.Errorf("SpreadAddr(%s, %d) = %s, want %s", c.pfx, c.i, got, c.want)
		}
	}
}

// TestSpoofedFloodPktinfo sends from addresses of a /48 (and an IPv4
// /16) to a sink in the same namespace, where an AnyIP route makes the
// prefixes local (nothing leaves the namespace).
func TestSpoofedFloodPktinfo(t *testing.T) {
	ns := netnstest.New(t, "sbcatk")
	for _, r := range []string{"2001:db8:66::/48", "10.66.0.0/16"} {
		if _, err := netns.IP("-n", ns, "route", "add", "local", r, "dev", "lo"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ sink, pfx string }{{"[::1]:5060", "2001:db8:66::/48"}, {"127.0.0.1:5060", "10.66.0.0/16"}} {
		t.Run(c.pfx, func(t *testing.T) {
			sink, err := NewSink(SinkConfig{Addr: netipAddrPort(c.sink), NetNS: ns, Keep: 100})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			pfx := netip.MustParsePrefix(c.pfx)
			rep, err := SpoofedFlood(testCtx(t), SpoofedFloodConfig{
				Target: sink.Addr(), Sources: pfx, Mode: SpoofPktinfo, MaxSources: 300, Count: 900, Rate: 20000, NetNS: ns,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Mode != SpoofPktinfo || rep.Sources != 300 || rep.Sent != 900 || rep.Errors != 0 {
				t.Fatalf("report %s %v %d %v", rep.Report, rep.Mode, rep.Sources, rep.FirstError)
			}
			checkSpoofed(t, sink, pfx, 900, 300, 0)
		})
	}
}
