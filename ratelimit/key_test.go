package ratelimit

import (
	"net/netip"
	"testing"
)

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	} {
		got := SourceKey(netip.MustParseAddr(tc.in))
		if got.String() != tc.want {
			t.Errorf("SourceKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if p := SourceKey(netip.Addr{}); p.IsValid() {
		t.Errorf("SourceKey(zero) = %v, want invalid", p)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   netip.Prefix
		want string
	}{
		{netip.MustParsePrefix("192.0.2.7/32"), "192.0.2.7/32"},
		{netip.PrefixFrom(netip.MustParseAddr("192.0.2.7"), 24), "192.0.2.0/24"},
		{netip.PrefixFrom(netip.MustParseAddr("192.0.2.7"), 0), "0.0.0.0/0"},
		{netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 64), "2001:db8::/64"},
		{netip.PrefixFrom(netip.MustParseAddr("2001:db8:0:0:ffff::1"), 70), "2001:db8:0:0:fc00::/70"},
		{netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 128), "2001:db8::1/128"},
		{netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 0), "::/0"},
		{netip.PrefixFrom(netip.MustParseAddr("ffff:ffff::1"), 17), "ffff:8000::/17"},
		{netip.MustParsePrefix("::ffff:192.0.2.7/128"), "::ffff:192.0.2.7/128"},
	} {
		k, ok := keyOf(tc.in)
		if !ok {
			t.Fatalf("keyOf(%v) invalid", tc.in)
		}
		if got := k.prefix().String(); got != tc.want {
			t.Errorf("keyOf(%v).prefix() = %s, want %s", tc.in, got, tc.want)
		}
	}
	// An IPv4 /32 and its IPv4-mapped IPv6 /128 are different keys.
	a, _ := keyOf(netip.MustParsePrefix("192.0.2.7/32"))
	b, _ := keyOf(netip.MustParsePrefix("::ffff:192.0.2.7/128"))
	if a == b {
		t.Error("v4 /32 and mapped /128 share a key")
	}
	// Host bits do not matter.
	c, _ := keyOf(netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 64))
	d, _ := keyOf(netip.PrefixFrom(netip.MustParseAddr("2001:db8::2"), 64))
	if c != d {
		t.Error("unmasked /64 prefixes of one network differ")
	}
	if _, ok := keyOf(netip.Prefix{}); ok {
		t.Error("zero prefix accepted")
	}
	if _, ok := keyOf(netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 33)); ok {
		t.Error("/33 IPv4 prefix accepted")
	}
}

func FuzzKeyRoundTrip(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, uint8(32))
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(64))
	f.Fuzz(func(t *testing.T, b []byte, bits uint8) {
		var a netip.Addr
		switch len(b) {
		case 4:
			a = netip.AddrFrom4([4]byte(b))
		case 16:
			a = netip.AddrFrom16([16]byte(b))
		default:
			return
		}
		p := netip.PrefixFrom(a, int(bits))
		k, ok := keyOf(p)
		if ok != p.IsValid() {
			t.Fatalf("keyOf(%v) ok=%v, valid=%v", p, ok, p.IsValid())
		}
		if ok && k.prefix() != p.Masked() {
			t.Fatalf("keyOf(%v).prefix() = %v, want %v", p, k.prefix(), p.Masked())
		}
	})
}
