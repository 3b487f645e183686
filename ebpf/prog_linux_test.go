//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

// run runs the program once on frame and returns the verdict and the
// counter deltas.
func run(t *testing.T, x *XDP, frame []byte) (uint32, Counters) {
	t.Helper()
	before, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	ret, err := x.objs.SbcXdp.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("prog.Run(%d bytes): %v", len(frame), err)
	}
	after, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return ret, after.sub(before)
}

func verdictName(v uint32) string {
	switch v {
	case xdpDrop:
		return "DROP"
	case xdpPass:
		return "PASS"
	}
	return "?"
}

// Lists shared by the verdict tests.
var (
	testDeny  = mustPrefixes("192.0.2.0/24", "2001:db8:bad::/64", "203.0.113.66/32")
	testAllow = mustPrefixes("192.0.2.7/32", "2001:db8:bad::7/128", "198.51.100.0/24")
)

// TestVerdicts is the verdict table of scope "host": a deny entry drops
// every frame of the source, whatever its protocol and port.
func TestVerdicts(t *testing.T) {
	x := loadTest(t, Options{Scope: ScopeHost})
	if err := x.SyncDeny(testDeny); err != nil {
		t.Fatal(err)
	}
	if err := x.SetAllow(testAllow); err != nil {
		t.Fatal(err)
	}
	a4 := netip.MustParseAddr
	dst4 := a4("198.18.0.1")
	dst6 := a4("2001:db8:ffff::1")
	sip := udpHdr(5060, 5060, []byte("OPTIONS sip:x SIP/2.0\r\n"))

	pass := Counters{Passed: 1}
	deny := Counters{DroppedDeny: 1}
	allowed := Counters{Passed: 1, Allowed: 1}
	frag := Counters{Passed: 1, Fragments: 1}
	malformed := Counters{Passed: 1, Malformed: 1}
	nonIP := Counters{Passed: 1, NonIP: 1}

	cases := []struct {
		name  string
		frame []byte
		want  uint32
		delta Counters
	}{
		{"v4 udp clean", udp4("198.18.5.5", 5060), xdpPass, pass},
		{"v4 udp denied /24", udp4("192.0.2.9", 5060), xdpDrop, deny},
		{"v4 udp denied /24 first address", udp4("192.0.2.0", 5060), xdpDrop, deny},
		{"v4 udp just outside /24", udp4("192.0.3.0", 5060), xdpPass, pass},
		{"v4 denied /32", udp4("203.0.113.66", 9), xdpDrop, deny},
		{"v4 next to denied /32", udp4("203.0.113.67", 9), xdpPass, pass},
		{"v4 tcp denied", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{protocol: protoTCP}, make([]byte, 20))...), xdpDrop, deny},
		{"v4 allow-listed inside denied /24", udp4("192.0.2.7", 5060), xdpPass, allowed},
		{"v4 options ihl=15 denied", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{ihl: 15, protocol: protoUDP}, sip)...), xdpDrop, deny},
		{"v4 options ihl=15 clean", append(ethHdr(etherIPv4), ipv4Hdr(a4("198.18.5.5"), dst4, v4opts{ihl: 15, protocol: protoUDP}, sip)...), xdpPass, pass},
		{"v4 ihl<5", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{ihl: 4, protocol: protoUDP}, sip)...), xdpPass, malformed},
		{"v4 ethertype with version 6", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{version: 6, protocol: protoUDP}, sip)...), xdpPass, malformed},
		{"v4 first fragment denied", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{more: true, protocol: protoUDP}, sip)...), xdpDrop, deny},
		{"v4 non-first fragment denied", append(ethHdr(etherIPv4), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{fragOff: 185, protocol: protoUDP}, []byte("tail of a message"))...), xdpDrop, deny},
		{"v4 non-first fragment clean", append(ethHdr(etherIPv4), ipv4Hdr(a4("198.18.5.5"), dst4, v4opts{fragOff: 185, more: true, protocol: protoUDP}, []byte("middle"))...), xdpPass, frag},
		{"v4 first fragment clean", append(ethHdr(etherIPv4), ipv4Hdr(a4("198.18.5.5"), dst4, v4opts{more: true, protocol: protoUDP}, sip)...), xdpPass, pass},
		{"v4 vlan denied", udp4("192.0.2.9", 5060, ether1Q), xdpDrop, deny},
		{"v4 qinq 802.1ad denied", udp4("192.0.2.9", 5060, ether1AD, ether1Q), xdpDrop, deny},
		{"v4 qinq 0x9100 denied", udp4("192.0.2.9", 5060, etherQinQ, ether1Q), xdpDrop, deny},
		{"v4 qinq clean", udp4("198.18.5.5", 5060, ether1AD, ether1Q), xdpPass, pass},
		{"v4 three tags is not parsed", udp4("192.0.2.9", 5060, ether1AD, ether1Q, ether1Q), xdpPass, nonIP},
		{"v6 udp clean", udp6("2001:db8:1::1", 5060), xdpPass, pass},
		{"v6 udp denied /64", udp6("2001:db8:bad::1234", 5060), xdpDrop, deny},
		{"v6 udp denied /64 last address", udp6("2001:db8:bad:0:ffff:ffff:ffff:ffff", 5060), xdpDrop, deny},
		{"v6 udp next /64", udp6("2001:db8:bad:1::1", 5060), xdpPass, pass},
		{"v6 allow-listed inside denied /64", udp6("2001:db8:bad::7", 5060), xdpPass, allowed},
		{"v6 vlan denied", udp6("2001:db8:bad::1", 5060, ether1Q), xdpDrop, deny},
		{"v6 qinq denied", udp6("2001:db8:bad::1", 5060, ether1AD, ether1Q), xdpDrop, deny},
		{"v6 fragment header first, denied", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:bad::1"), dst6, 44, ipv6Frag(protoUDP, 0, true, sip))...), xdpDrop, deny},
		{"v6 fragment header first, clean", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:1::1"), dst6, 44, ipv6Frag(protoUDP, 0, true, sip))...), xdpPass, pass},
		{"v6 fragment header non-first, clean", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:1::1"), dst6, 44, ipv6Frag(protoUDP, 100, false, []byte("tail")))...), xdpPass, frag},
		{"v6 fragment header non-first, denied", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:bad::1"), dst6, 44, ipv6Frag(protoUDP, 100, false, []byte("tail")))...), xdpDrop, deny},
		{"v6 dstopts+frag+udp clean", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:1::1"), dst6, 60, ipv6Opts(44, 1, ipv6Frag(protoUDP, 0, true, sip)))...), xdpPass, pass},
		{"v6 version 4 in v6 ethertype", append(ethHdr(etherIPv6), ipv4Hdr(a4("192.0.2.9"), dst4, v4opts{protocol: protoUDP}, append(sip, make([]byte, 40)...))...), xdpPass, malformed},
		{"v6 seven extension headers", append(ethHdr(etherIPv6), ipv6Hdr(a4("2001:db8:1::1"), dst6, 60,
			ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(protoUDP, 0, sip))))))))...), xdpPass, malformed},
		{"arp", arpFrame(), xdpPass, nonIP},
		{"arp in vlan", append(ethHdr(etherARP, ether1Q), arpFrame()[14:]...), xdpPass, nonIP},
		{"ethernet header only", ethHdr(etherIPv4), xdpPass, malformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, delta := run(t, x, tc.frame)
			if got != tc.want {
				t.Errorf("verdict %s, want %s", verdictName(got), verdictName(tc.want))
			}
			if delta != tc.delta {
				t.Errorf("counter delta %v, want %v", delta, tc.delta)
			}
		})
	}
}

// TestTruncated runs every prefix of well-formed frames through the program:
// no verifier or runtime trouble, and exactly the documented verdicts. Frames
// shorter than an Ethernet header are refused by the kernel's test runner
// (and never delivered by a driver).
func TestTruncated(t *testing.T) {
	for _, scope := range []Scope{ScopeHost, ScopeSIP} {
		t.Run(string(scope), func(t *testing.T) { testTruncated(t, scope) })
	}
}

func testTruncated(t *testing.T, scope Scope) {
	x := loadTest(t, Options{UDPPorts: []uint16{5060}, Scope: scope})
	if err := x.SyncDeny(testDeny); err != nil {
		t.Fatal(err)
	}
	// Rate limiter on but deep enough that nothing is limited here.
	if err := x.writeRawConfig(1, 1<<40); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	sip := udpHdr(5060, 5060, []byte("REGISTER"))
	type frameCase struct {
		name    string
		frame   []byte
		ipFixed int  // offset where the fixed IP header ends (source check possible)
		hdrEnd  int  // offset where the UDP header ends
		denied  bool // source is in the deny list
	}
	var cases []frameCase
	for _, denied := range []bool{false, true} {
		s4, s6 := "198.18.5.5", "2001:db8:1::1"
		if denied {
			s4, s6 = "192.0.2.9", "2001:db8:bad::9"
		}
		cases = append(cases,
			frameCase{"v4 udp", udp4(s4, 5060), 14 + 20, 14 + 28, denied},
			frameCase{"v4 qinq udp", udp4(s4, 5060, ether1AD, ether1Q), 22 + 20, 22 + 28, denied},
			frameCase{"v4 ihl=15 udp", append(ethHdr(etherIPv4), ipv4Hdr(a(s4), a("198.18.0.1"), v4opts{ihl: 15, protocol: protoUDP}, sip)...), 14 + 20, 14 + 60 + 8, denied},
			frameCase{"v6 udp", udp6(s6, 5060), 14 + 40, 14 + 48, denied},
			frameCase{"v6 vlan frag udp", append(ethHdr(etherIPv6, ether1Q), ipv6Hdr(a(s6), a("2001:db8:ffff::1"), 44, ipv6Frag(protoUDP, 0, true, sip))...), 18 + 40, 18 + 56, denied},
			frameCase{"v6 hbh dstopts udp", append(ethHdr(etherIPv6), ipv6Hdr(a(s6), a("2001:db8:ffff::1"), 0, ipv6Opts(60, 2, ipv6Opts(protoUDP, 0, sip)))...), 14 + 40, 14 + 40 + 24 + 8 + 8, denied},
		)
	}
	for _, tc := range cases {
		name := tc.name
		if tc.denied {
			name += " denied"
		}
		t.Run(name, func(t *testing.T) {
			for n := 0; n <= len(tc.frame); n++ {
				frame := slices.Clone(tc.frame[:n])
				if n < 14 {
					if _, err := x.objs.SbcXdp.Run(&ebpf.RunOptions{Data: frame}); err == nil {
						t.Errorf("len %d: kernel accepted a frame shorter than Ethernet", n)
					}
					continue
				}
				got, delta := run(t, x, frame)
				want, wantDelta := uint32(xdpPass), Counters{Passed: 1}
				// Scope host judges a denied source by its IP header,
				// scope sip needs the port too.
				judged := tc.ipFixed
				if scope == ScopeSIP {
					judged = tc.hdrEnd
				}
				switch {
				case n < tc.ipFixed:
					wantDelta.Malformed = 1
				case tc.denied && n >= judged:
					want, wantDelta = xdpDrop, Counters{DroppedDeny: 1}
				case n < tc.hdrEnd:
					wantDelta.Malformed = 1
				}
				if got != want || delta != wantDelta {
					t.Errorf("len %d/%d: %s %v, want %s %v", n, len(tc.frame), verdictName(got), delta, verdictName(want), wantDelta)
				}
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	const burst, extra = 5, 3
	x := loadTest(t, Options{UDPPorts: []uint16{5060, 5061}, TCPPorts: []uint16{5060}})
	if err := x.SetAllow(mustPrefixes("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	// Deterministic bucket: one token per ~11 days, so no refill happens
	// during the test whatever the machine's speed.
	const interval = uint64(1e15)
	if err := x.writeRawConfig(interval, (burst-1)*interval); err != nil {
		t.Fatal(err)
	}
	send := func(t *testing.T, frame []byte, n int) (dropped int, d Counters) {
		for range n {
			v, delta := run(t, x, frame)
			if v == xdpDrop {
				dropped++
			}
			d.Passed += delta.Passed
			d.DroppedRateLimit += delta.DroppedRateLimit
			d.Allowed += delta.Allowed
			d.DroppedDeny += delta.DroppedDeny
		}
		return dropped, d
	}
	t.Run("v4 source over burst", func(t *testing.T) {
		dropped, d := send(t, udp4("198.18.7.7", 5060), burst+extra)
		if dropped != extra || d.DroppedRateLimit != extra || d.Passed != burst {
			t.Fatalf("dropped %d (%v), want %d", dropped, d, extra)
		}
		// The second SIP port shares the source's bucket, which is empty now.
		if dropped, _ := send(t, udp4("198.18.7.7", 5061), 2); dropped != 2 {
			t.Fatalf("port 5061: dropped %d, want 2", dropped)
		}
		// Other ports are not limited.
		if dropped, _ := send(t, udp4("198.18.7.7", 5080), 4); dropped != 0 {
			t.Fatalf("port 5080: dropped %d, want 0", dropped)
		}
		// Non-first fragments carry no port: never limited.
		frag := append(ethHdr(etherIPv4), ipv4Hdr(netip.MustParseAddr("198.18.7.7"), netip.MustParseAddr("198.18.0.1"),
			v4opts{fragOff: 10, protocol: protoUDP}, []byte("x"))...)
		if dropped, _ := send(t, frag, 3); dropped != 0 {
			t.Fatalf("fragments: dropped %d, want 0", dropped)
		}
	})
	t.Run("media is not limited", func(t *testing.T) {
		if err := x.SetPorts([]uint16{5060, 5061}, []uint16{5060}, []PortRange{{20000, 20001}}); err != nil {
			t.Fatal(err)
		}
		if err := x.writeRawConfig(interval, (burst-1)*interval); err != nil { // SetPorts wrote the options' rate
			t.Fatal(err)
		}
		if dropped, _ := send(t, udp4("198.18.7.7", 20000), burst+extra); dropped != 0 {
			t.Fatalf("rtp to a media port: dropped %d, want 0", dropped)
		}
	})
	t.Run("tcp is not limited", func(t *testing.T) {
		tcp := append(ethHdr(etherIPv4), ipv4Hdr(netip.MustParseAddr("198.18.7.7"), netip.MustParseAddr("198.18.0.1"),
			v4opts{protocol: protoTCP}, tcpHdr(40000, 5060))...)
		if dropped, _ := send(t, tcp, burst+extra); dropped != 0 {
			t.Fatalf("tcp: dropped %d, want 0", dropped)
		}
	})
	t.Run("v4 other source has its own bucket", func(t *testing.T) {
		if dropped, _ := send(t, udp4("198.18.7.8", 5060), burst); dropped != 0 {
			t.Fatalf("dropped %d, want 0", dropped)
		}
	})
	t.Run("v4 allow-listed source exempt", func(t *testing.T) {
		dropped, d := send(t, udp4("198.51.100.9", 5060), burst+extra)
		if dropped != 0 || d.Allowed != burst+extra {
			t.Fatalf("dropped %d (%v), want 0 and all allowed", dropped, d)
		}
	})
	t.Run("v6 sources share their /64", func(t *testing.T) {
		d1, _ := send(t, udp6("2001:db8:5::1", 5060), 3)
		d2, _ := send(t, udp6("2001:db8:5::ffff:2", 5060), burst-3+extra)
		if d1+d2 != extra {
			t.Fatalf("dropped %d+%d, want %d", d1, d2, extra)
		}
		if dropped, _ := send(t, udp6("2001:db8:5:1::1", 5060), burst); dropped != 0 {
			t.Fatalf("next /64: dropped %d, want 0", dropped)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		if err := x.SetRateLimit(0, 0); err != nil {
			t.Fatal(err)
		}
		if dropped, _ := send(t, udp4("198.18.7.7", 5060), 10); dropped != 0 {
			t.Fatalf("dropped %d with the limiter off", dropped)
		}
	})
}

func TestRateConfig(t *testing.T) {
	x := loadTest(t, Options{UDPPorts: []uint16{5060, 65535, 0}, TCPPorts: []uint16{5061}, RatePPS: 50, Burst: 100})
	read := func() xdpConfig {
		var cfg xdpConfig
		if err := x.objs.SbcConfig.Lookup(uint32(0), &cfg); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	has := func(bitmap [1024]uint64, port uint16) bool { return bitmap[port>>6]&(1<<(port&63)) != 0 }
	cfg := read()
	if cfg.IntervalNs != 20_000_000 || cfg.ToleranceNs != 99*20_000_000 {
		t.Errorf("interval %d tolerance %d", cfg.IntervalNs, cfg.ToleranceNs)
	}
	if !has(cfg.UdpPorts, 5060) || !has(cfg.UdpPorts, 65535) || !has(cfg.UdpPorts, 0) || has(cfg.UdpPorts, 5061) {
		t.Errorf("udp port bitmap wrong")
	}
	if !has(cfg.TcpPorts, 5061) || has(cfg.TcpPorts, 5060) {
		t.Errorf("tcp port bitmap wrong")
	}
	if cfg.Scope != scopeSIP || x.Scope() != ScopeSIP {
		t.Errorf("default scope %d (%s), want sip", cfg.Scope, x.Scope())
	}
	if err := x.SetPorts([]uint16{5080}, []uint16{5080, 5081}, []PortRange{{20000, 20003}, {65534, 65535}}); err != nil {
		t.Fatal(err)
	}
	cfg = read()
	if has(cfg.UdpPorts, 5060) || !has(cfg.UdpPorts, 5080) || has(cfg.TcpPorts, 5061) || !has(cfg.TcpPorts, 5081) || cfg.IntervalNs != 20_000_000 {
		t.Errorf("SetPorts: %x %x", cfg.UdpPorts[5060/64], cfg.TcpPorts[5080/64])
	}
	if has(cfg.MediaPorts, 19999) || !has(cfg.MediaPorts, 20000) || !has(cfg.MediaPorts, 20003) || has(cfg.MediaPorts, 20004) ||
		!has(cfg.MediaPorts, 65535) || has(cfg.UdpPorts, 20000) {
		t.Errorf("media bitmap wrong")
	}
	if err := x.SetScope(ScopeHost); err != nil {
		t.Fatal(err)
	}
	if cfg = read(); cfg.Scope != scopeHost || !has(cfg.TcpPorts, 5081) || cfg.IntervalNs != 20_000_000 {
		t.Errorf("SetScope(host): scope %d", cfg.Scope)
	}
	if err := x.SetScope("everything"); err == nil {
		t.Error("SetScope accepted an unknown scope")
	}
	if err := x.SetRateLimit(4_000_000_000, 0); err != nil {
		t.Fatal(err)
	}
	if cfg = read(); cfg.IntervalNs != 1 || cfg.ToleranceNs != 0 {
		t.Errorf("huge rate: interval %d tolerance %d", cfg.IntervalNs, cfg.ToleranceNs)
	}
	if err := x.SetRateLimit(0, 10); err != nil {
		t.Fatal(err)
	}
	if cfg = read(); cfg.IntervalNs != 0 {
		t.Errorf("disabled: interval %d", cfg.IntervalNs)
	}
}

func TestDenyAPI(t *testing.T) {
	x := loadTest(t, Options{Scope: ScopeHost})
	P := netip.MustParsePrefix
	list := func() []netip.Prefix {
		ps, err := x.Denied()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ps, comparePrefix)
		return ps
	}
	for _, p := range []string{"192.0.2.77/24", "::ffff:198.51.100.0/120", "2001:db8::1/64", "10.0.0.1/32"} {
		if err := x.Deny(P(p)); err != nil {
			t.Fatalf("Deny(%s): %v", p, err)
		}
	}
	want := mustPrefixes("10.0.0.1/32", "192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64")
	slices.SortFunc(want, comparePrefix)
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("Denied() = %v, want %v", got, want)
	}
	// The IPv4-mapped deny entry matches IPv4 packets.
	if v, _ := run(t, x, udp4("198.51.100.3", 9)); v != xdpDrop {
		t.Errorf("mapped prefix does not drop IPv4 traffic")
	}
	if err := x.Undeny(P("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := x.Undeny(P("192.0.2.0/24")); err != nil {
		t.Fatalf("Undeny of an absent prefix: %v", err)
	}
	if err := x.Deny(netip.Prefix{}); err == nil {
		t.Error("Deny(invalid) succeeded")
	}
	if err := x.SyncDeny([]netip.Prefix{P("10.0.0.1/32"), {}}); err == nil {
		t.Error("SyncDeny with an invalid prefix succeeded")
	}
	if err := x.SyncDeny(mustPrefixes("10.0.0.1/32", "10.0.0.1/32", "2001:db8:2::/48", "::ffff:0.0.0.0/96")); err != nil {
		t.Fatal(err)
	}
	want = mustPrefixes("0.0.0.0/0", "10.0.0.1/32", "2001:db8:2::/48")
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after SyncDeny: %v, want %v", got, want)
	}
	if v, _ := run(t, x, udp4("192.0.2.9", 9)); v != xdpDrop {
		t.Error("0.0.0.0/0 does not drop")
	}
	if v, _ := run(t, x, udp6("2001:db8::1", 9)); v != xdpPass {
		t.Error("removed v6 prefix still drops")
	}
	if err := x.SyncDeny(nil); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("after SyncDeny(nil): %v", got)
	}
	if err := x.SetAllow(mustPrefixes("::ffff:192.0.2.1/128", "2001:db8::/32")); err != nil {
		t.Fatal(err)
	}
	allowed, err := x.Allowed()
	if err != nil || len(allowed) != 2 || !slices.Contains(allowed, P("192.0.2.1/32")) {
		t.Fatalf("Allowed() = %v, %v", allowed, err)
	}
}

func TestClosed(t *testing.T) {
	x := loadTest(t, Options{})
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := x.Deny(netip.MustParsePrefix("192.0.2.0/24")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Deny after Close: %v", err)
	}
	if _, err := x.Counters(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Counters after Close: %v", err)
	}
}

// TestPinnedMapsSurvive: a second load over the same pin directory sees the
// entries and counters of the first.
func TestPinnedMapsSurvive(t *testing.T) {
	dir := bpffsDir(t)
	x1, err := loadObjects(Options{PinDir: dir, UDPPorts: []uint16{9}})
	if err != nil {
		t.Fatal(err)
	}
	if err := x1.Deny(netip.MustParsePrefix("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	run(t, x1, udp4("192.0.2.1", 9))
	if err := x1.Close(); err != nil {
		t.Fatal(err)
	}
	x2 := loadTest(t, Options{PinDir: dir, UDPPorts: []uint16{9}})
	denied, err := x2.Denied()
	if err != nil || len(denied) != 1 {
		t.Fatalf("Denied after reload: %v %v", denied, err)
	}
	c, err := x2.Counters()
	if err != nil || c.DroppedDeny != 1 {
		t.Fatalf("counters after reload: %v %v", c, err)
	}
	if v, _ := run(t, x2, udp4("192.0.2.1", 9)); v != xdpDrop {
		t.Fatal("reloaded program does not drop")
	}
}

func TestClassifyVerifierError(t *testing.T) {
	requirePriv(t)
	// Reads an uninitialised register: the verifier must refuse it.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R0, asm.R5),
			asm.Return(),
		},
	})
	if err == nil {
		t.Fatal("verifier accepted a broken program")
	}
	le := classifyLoadError(err)
	if !errors.Is(le, ErrKernelRefused) {
		t.Fatalf("classified as %v", le)
	}
	var lerr *LoadError
	if !errors.As(le, &lerr) || lerr.Detail == "" {
		t.Fatalf("no verifier log in %v", le)
	}
	t.Log(le)
	long := make([]string, 2000)
	for i := range long {
		long[i] = "0: (b7) r0 = 0 ; verifier line"
	}
	if s := truncateLog(long); len(s) > maxVerifierLogLen+8 {
		t.Fatalf("truncateLog kept %d bytes", len(s))
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// TestScopeSIP is the verdict table of the default scope: a deny entry
// drops only UDP and TCP frames to the SBC's ports; the host's other
// traffic from a denied prefix (a DNS answer from its resolver, NTP, SSH,
// ICMP) passes, counted Spared. SetScope(host) widens it again.
func TestScopeSIP(t *testing.T) {
	x := loadTest(t, Options{UDPPorts: []uint16{5060}, TCPPorts: []uint16{5060, 5061},
		MediaPorts: []PortRange{{20000, 20999}}})
	if err := x.SyncDeny(testDeny); err != nil {
		t.Fatal(err)
	}
	if err := x.SetAllow(testAllow); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	dst4, dst6 := a("198.18.0.1"), a("2001:db8:ffff::1")
	const protoICMP, protoICMPv6 = 1, 58
	v4 := func(src string, proto uint8, l4 []byte) []byte {
		return append(ethHdr(etherIPv4), ipv4Hdr(a(src), dst4, v4opts{protocol: proto}, l4)...)
	}
	v6 := func(src string, next uint8, l4 []byte) []byte {
		return append(ethHdr(etherIPv6), ipv6Hdr(a(src), dst6, next, l4)...)
	}
	sip := udpHdr(5060, 5060, []byte("OPTIONS sip:x SIP/2.0\r\n"))
	dnsAnswer := udpHdr(53, 40000, []byte("dns answer"))
	ntp := udpHdr(123, 123, make([]byte, 48))
	echo := []byte{8, 0, 0, 0, 0, 1, 0, 1}

	pass := Counters{Passed: 1}
	deny := Counters{DroppedDeny: 1}
	spared := Counters{Passed: 1, Spared: 1}
	allowed := Counters{Passed: 1, Allowed: 1}
	frag := Counters{Passed: 1, Fragments: 1}
	malformed := Counters{Passed: 1, Malformed: 1}

	cases := []struct {
		name  string
		frame []byte
		want  uint32
		delta Counters
	}{
		{"v4 udp denied to sip port", v4("192.0.2.9", protoUDP, sip), xdpDrop, deny},
		{"v4 tcp denied to sip port", v4("192.0.2.9", protoTCP, tcpHdr(40000, 5060)), xdpDrop, deny},
		{"v4 tcp denied to tls port", v4("192.0.2.9", protoTCP, tcpHdr(40000, 5061)), xdpDrop, deny},
		{"v4 udp denied to the tcp-only port", v4("192.0.2.9", protoUDP, udpHdr(40000, 5061, nil)), xdpPass, spared},
		{"v4 rtp denied to a media port", v4("192.0.2.9", protoUDP, udpHdr(40000, 20000, make([]byte, 172))), xdpDrop, deny},
		{"v4 rtp denied to the last media port", v4("192.0.2.9", protoUDP, udpHdr(40000, 20999, make([]byte, 172))), xdpDrop, deny},
		{"v4 udp denied just above the media range", v4("192.0.2.9", protoUDP, udpHdr(40000, 21000, nil)), xdpPass, spared},
		{"v4 tcp denied to a media port number", v4("192.0.2.9", protoTCP, tcpHdr(40000, 20000)), xdpPass, spared},
		{"v6 rtp denied to a media port", v6("2001:db8:bad::1", protoUDP, udpHdr(40000, 20500, make([]byte, 172))), xdpDrop, deny},
		{"v4 dns answer from a denied resolver", v4("192.0.2.9", protoUDP, dnsAnswer), xdpPass, spared},
		{"v4 ntp from a denied server", v4("203.0.113.66", protoUDP, ntp), xdpPass, spared},
		{"v4 ssh from a denied host", v4("192.0.2.9", protoTCP, tcpHdr(40000, 22)), xdpPass, spared},
		{"v4 icmp from a denied host", v4("192.0.2.9", protoICMP, echo), xdpPass, spared},
		{"v4 first fragment denied to sip port", append(ethHdr(etherIPv4), ipv4Hdr(a("192.0.2.9"), dst4, v4opts{more: true, protocol: protoUDP}, sip)...), xdpDrop, deny},
		{"v4 non-first fragment denied", append(ethHdr(etherIPv4), ipv4Hdr(a("192.0.2.9"), dst4, v4opts{fragOff: 185, protocol: protoUDP}, []byte("tail of a message"))...), xdpPass, frag},
		{"v4 options ihl=15 denied to sip port", append(ethHdr(etherIPv4), ipv4Hdr(a("192.0.2.9"), dst4, v4opts{ihl: 15, protocol: protoUDP}, sip)...), xdpDrop, deny},
		{"v4 vlan denied to sip port", udp4("192.0.2.9", 5060, ether1Q), xdpDrop, deny},
		{"v4 allow-listed inside denied, sip port", v4("192.0.2.7", protoUDP, sip), xdpPass, allowed},
		{"v4 clean to sip port", v4("198.18.5.5", protoUDP, sip), xdpPass, pass},
		{"v4 clean ssh", v4("198.18.5.5", protoTCP, tcpHdr(40000, 22)), xdpPass, pass},
		{"v4 tcp denied, header cut after the ports", v4("192.0.2.9", protoTCP, tcpHdr(40000, 5060)[:4]), xdpDrop, deny},
		{"v4 tcp denied, header cut before the ports", v4("192.0.2.9", protoTCP, tcpHdr(40000, 5060)[:3]), xdpPass, malformed},
		{"v6 udp denied to sip port", v6("2001:db8:bad::1", protoUDP, sip), xdpDrop, deny},
		{"v6 tcp denied to tls port", v6("2001:db8:bad::1", protoTCP, tcpHdr(40000, 5061)), xdpDrop, deny},
		{"v6 ntp from a denied server", v6("2001:db8:bad::1", protoUDP, ntp), xdpPass, spared},
		{"v6 icmpv6 from a denied host", v6("2001:db8:bad::1", protoICMPv6, []byte{128, 0, 0, 0, 0, 1, 0, 1}), xdpPass, spared},
		{"v6 dstopts+frag+udp denied to sip port", v6("2001:db8:bad::1", 60, ipv6Opts(44, 1, ipv6Frag(protoUDP, 0, true, sip))), xdpDrop, deny},
		{"v6 non-first fragment denied", v6("2001:db8:bad::1", 44, ipv6Frag(protoUDP, 100, false, []byte("tail"))), xdpPass, frag},
		{"v6 allow-listed inside denied, sip port", v6("2001:db8:bad::7", protoUDP, sip), xdpPass, allowed},
		{"v6 seven extension headers, denied", v6("2001:db8:bad::1", 60,
			ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(60, 0, ipv6Opts(protoUDP, 0, sip)))))))), xdpPass, malformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, delta := run(t, x, tc.frame)
			if got != tc.want {
				t.Errorf("verdict %s, want %s", verdictName(got), verdictName(tc.want))
			}
			if delta != tc.delta {
				t.Errorf("counter delta %v, want %v", delta, tc.delta)
			}
		})
	}

	// Scope host, set on the running program: the same frames are dropped.
	if err := x.SetScope(ScopeHost); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name  string
		frame []byte
	}{
		{"dns answer", v4("192.0.2.9", protoUDP, dnsAnswer)},
		{"ssh", v4("192.0.2.9", protoTCP, tcpHdr(40000, 22))},
		{"icmp", v4("192.0.2.9", protoICMP, echo)},
		{"v4 non-first fragment", append(ethHdr(etherIPv4), ipv4Hdr(a("192.0.2.9"), dst4, v4opts{fragOff: 185, protocol: protoUDP}, []byte("tail"))...)},
		{"v6 icmpv6", v6("2001:db8:bad::1", protoICMPv6, []byte{128, 0, 0, 0, 0, 1, 0, 1})},
	} {
		if got, delta := run(t, x, f.frame); got != xdpDrop || delta != deny {
			t.Errorf("scope host, %s: %s %v, want DROP %v", f.name, verdictName(got), delta, deny)
		}
	}
	if got, delta := run(t, x, v4("192.0.2.7", protoTCP, tcpHdr(40000, 22))); got != xdpPass || delta != allowed {
		t.Errorf("scope host, allow-listed: %s %v", verdictName(got), delta)
	}
	if err := x.SetScope(ScopeSIP); err != nil {
		t.Fatal(err)
	}
	if got, delta := run(t, x, v4("192.0.2.9", protoICMP, echo)); got != xdpPass || delta != spared {
		t.Errorf("back to scope sip, icmp: %s %v", verdictName(got), delta)
	}
}

// TestCapacity: the deny maps hold Options.MaxEntries prefixes per family;
// beyond it Deny fails with ErrFull and SyncDeny installs what fits, in
// the order given, and names the rest; refreshing a held prefix of a full
// map works. A pinned map of another capacity is replaced at the next
// load, the other maps (the counters) kept.
func TestCapacity(t *testing.T) {
	dir := bpffsDir(t)
	x, err := loadObjects(Options{PinDir: dir, MaxEntries: 4, UDPPorts: []uint16{5060}})
	if err != nil {
		t.Fatal(err)
	}
	if x.MaxEntries() != 4 {
		t.Fatalf("MaxEntries() = %d", x.MaxEntries())
	}
	v4s := func(from, n int) []netip.Prefix {
		var out []netip.Prefix
		for i := from; i < from+n; i++ {
			out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32))
		}
		return out
	}
	for _, p := range v4s(0, 4) {
		if err := x.Deny(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Deny(v4s(4, 1)[0]); !errors.Is(err, ErrFull) {
		t.Fatalf("5th prefix: %v, want ErrFull", err)
	}
	// The IPv6 map has its own room.
	if err := x.Deny(netip.MustParsePrefix("2001:db8::/64")); err != nil {
		t.Fatalf("IPv6 prefix with the IPv4 map full: %v", err)
	}
	if err := x.Deny(v4s(2, 1)[0]); err != nil {
		t.Fatalf("refreshing a held prefix of a full map: %v", err)
	}
	// Keep two, add four: two fit (in the order given), two do not.
	want := append(v4s(2, 2), v4s(10, 4)...)
	err = x.SyncDeny(want)
	var fe *FullError
	if !errors.As(err, &fe) || !errors.Is(err, ErrFull) {
		t.Fatalf("SyncDeny of 6 into 4: %v, want a *FullError", err)
	}
	if !slices.Equal(fe.Missing, v4s(12, 2)) {
		t.Fatalf("Missing = %v, want %v", fe.Missing, v4s(12, 2))
	}
	got, err := x.Denied()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, comparePrefix)
	if !slices.Equal(got, append(v4s(2, 2), v4s(10, 2)...)) {
		t.Fatalf("Denied() = %v", got)
	}
	if v, _ := run(t, x, udp4("192.0.2.10", 5060)); v != xdpDrop {
		t.Fatal("installed prefix does not drop")
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}

	// Another capacity: the deny maps are recreated empty, the counters kept.
	y := loadTest(t, Options{PinDir: dir, MaxEntries: 8})
	if got, err := y.Denied(); err != nil || len(got) != 0 {
		t.Fatalf("after a capacity change: Denied() = %v, %v; want empty (recreated)", got, err)
	}
	if c, err := y.Counters(); err != nil || c.DroppedDeny != 1 {
		t.Fatalf("counters after a capacity change: %v %v, want the drop of before", c, err)
	}
	if err := y.SyncDeny(v4s(0, 8)); err != nil {
		t.Fatalf("8 prefixes into 8: %v", err)
	}
}

// TestObsoletePins: the configuration map of an earlier version is removed
// from the pin directory at load.
func TestObsoletePins(t *testing.T) {
	dir := bpffsDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "sbc_rl_config", Type: ebpf.Array, KeySize: 4, ValueSize: 8208, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(dir, "sbc_rl_config")); err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	loadTest(t, Options{PinDir: dir})
	if _, err := os.Stat(filepath.Join(dir, "sbc_rl_config")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("obsolete pin still there: %v", err)
	}
}
