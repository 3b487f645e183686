package sbc

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/acl/nft"
	"github.com/sbc-project/sbc/ebpf"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// The kernel guards every listener: UDP ones over UDP, stream ones (tcp,
// tls, wss) over TCP.
func TestListenerPorts(t *testing.T) {
	ap := netip.MustParseAddrPort
	realms := map[string]*endpoint{
		"external": {laddr: map[string]netip.AddrPort{"udp": ap("192.0.2.1:5060"), "tcp": ap("192.0.2.1:5060"), "tls": ap("192.0.2.1:5061")}},
		"internal": {laddr: map[string]netip.AddrPort{"udp": ap("10.0.0.1:5062")}},
		"webrtc":   {laddr: map[string]netip.AddrPort{"wss": ap("192.0.2.1:8443")}},
	}
	udp, tcp := listenerPorts(realms)
	if !slices.Equal(udp, []uint16{5060, 5062}) || !slices.Equal(tcp, []uint16{5060, 5061, 8443}) {
		t.Errorf("listenerPorts = udp %v, tcp %v", udp, tcp)
	}
	if got := sipPorts(realms); !slices.Equal(got, []uint16{5060, 5061, 5062, 8443}) {
		t.Errorf("sipPorts = %v", got)
	}
}

// The kernel's allowed peers are the trunks' sources and the pool targets
// (as /32 or /128).
func TestAllowedPeers(t *testing.T) {
	tp := testpolicy.New("127.0.0.1", "127.0.0.2", "127.0.0.10:5080", "[::1]:5090")
	tp.Trunks[0].Sources = []string{"192.0.2.0/24", "2001:db8::/48"}
	p := tp.Parse(t)
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/48"),
		netip.MustParsePrefix("127.0.0.10/32"), netip.MustParsePrefix("::1/128"),
	}
	if got := allowedPeers(p); !slices.Equal(got, want) {
		t.Errorf("allowedPeers = %v, want %v", got, want)
	}
}

// A kernel copy's "no room" errors reach the mirror as acl.ErrSinkFull,
// and nothing else does.
func TestSinkErrors(t *testing.T) {
	if err := sinkErr(errors.Join(ebpf.ErrFull), ebpf.ErrFull); !errors.Is(err, acl.ErrSinkFull) {
		t.Errorf("ebpf full: %v", err)
	}
	if err := sinkErr(nft.ErrFull, nft.ErrFull); !errors.Is(err, acl.ErrSinkFull) {
		t.Errorf("nft full: %v", err)
	}
	if err := sinkErr(ebpf.ErrClosed, ebpf.ErrFull); errors.Is(err, acl.ErrSinkFull) || !errors.Is(err, ebpf.ErrClosed) {
		t.Errorf("other error: %v", err)
	}
	if sinkErr(nil, ebpf.ErrFull) != nil {
		t.Error("nil error")
	}
	if kernelCapacity(acl.DefaultMaxEntries) <= acl.DefaultMaxEntries || kernelCapacity(acl.DefaultMaxEntries) > ebpf.MaxMaxEntries {
		t.Error("kernel capacity must exceed the blocklist's and fit the maps")
	}
}

// The media relay ranges join the kernel paths; those the kernel may also
// hand out as ephemeral ports (not reserved) are reported.
func TestMediaRangesAndEphemeralClash(t *testing.T) {
	tp := testpolicy.New("127.0.0.1", "127.0.0.2", "127.0.0.10:5080")
	p := tp.Parse(t)
	got := mediaRanges(p)
	if len(got) == 0 {
		t.Fatal("no media range from the default policy")
	}
	for i, r := range p.Realms {
		if got[i] != (ebpf.PortRange{Min: uint16(r.Media.Min), Max: uint16(r.Media.Max)}) {
			t.Errorf("realm %s: range %v, want %d-%d", r.Name, got[i], r.Media.Min, r.Media.Max)
		}
	}
	pr := func(a, b uint16) ebpf.PortRange { return ebpf.PortRange{Min: a, Max: b} }
	media := []ebpf.PortRange{pr(20000, 39999)}
	tests := []struct {
		portRange, reserved string
		want                []ebpf.PortRange
	}{
		{"32768\t60999\n", "\n", []ebpf.PortRange{pr(32768, 39999)}},
		{"32768\t60999\n", "20000-39999\n", nil},
		{"32768\t60999\n", "33000-33999,35000\n", []ebpf.PortRange{pr(32768, 32999), pr(34000, 34999), pr(35001, 39999)}},
		{"40000\t60999\n", "\n", nil},
		{"1024\t65535\n", "\n", []ebpf.PortRange{pr(20000, 39999)}},
		{"garbage", "", nil},
	}
	for _, tc := range tests {
		if got := ephemeralClash(media, tc.portRange, tc.reserved); !slices.Equal(got, tc.want) {
			t.Errorf("range %q reserved %q: %v, want %v", tc.portRange, tc.reserved, got, tc.want)
		}
	}
}
