package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Unit tests of the CIDR and interval logic; no root needed.

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestMerge(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"", ""},
		{"10.0.0.0/24 10.0.0.5/32", "10.0.0.0/24"},
		{"10.0.0.5/32 10.0.0.0/24", "10.0.0.0/24"},
		{"10.0.0.0/24 10.0.0.0/24", "10.0.0.0/24"},
		{"10.0.0.0/25 10.0.0.128/25", "10.0.0.0/24"},
		{"10.0.0.0/24 10.0.1.0/24 10.0.2.0/24", "10.0.0.0/23 10.0.2.0/24"},
		{"10.0.1.0/24 10.0.2.0/24", "10.0.1.0/24 10.0.2.0/24"}, // touching but no common prefix
		{"10.0.0.7/24", "10.0.0.0/24"},                         // not masked
		{"10.0.0.0/16 10.0.0.0/8 10.200.3.0/24", "10.0.0.0/8"},
		{"10.0.0.0/32 10.0.0.1/32 10.0.0.2/32 10.0.0.3/32", "10.0.0.0/30"},
		{"0.0.0.0/1 128.0.0.0/1", "0.0.0.0/0"},
		{"255.255.255.255/32 255.255.255.254/32", "255.255.255.254/31"},
		{"0.0.0.0/32 0.0.0.1/32", "0.0.0.0/31"},
		{"::ffff:10.0.0.0/120 10.0.1.0/24", "10.0.0.0/23"}, // IPv4-mapped is IPv4
		{"::ffff:0:0/95", "::fffe:0:0/95"},                 // shorter than /96 stays IPv6
		{"2001:db8::/33 2001:db8:8000::/33", "2001:db8::/32"},
		{"::/1 8000::/1", "::/0"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"},
		{"2001:db8::/64 10.0.0.0/8 2001:db8::1/128", "10.0.0.0/8 2001:db8::/64"}, // IPv4 first
		{"0.0.0.0/0 ::/0", "0.0.0.0/0 ::/0"}, // families stay apart
	}
	for _, c := range cases {
		var in []netip.Prefix
		if c.in != "" {
			in = prefixes(strings.Fields(c.in)...)
		}
		got := Merge(in)
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if g := strings.Join(gs, " "); g != c.want {
			t.Errorf("Merge(%s) = %q, want %q", c.in, g, c.want)
		}
	}
	if got := Merge([]netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/8")}); len(got) != 1 {
		t.Errorf("invalid prefixes must be dropped: %v", got)
	}
}

// TestSpanPrefixes checks, against brute force, that the prefixes of a
// range cover exactly that range, are aligned, sorted and as few as the
// greedy decomposition allows (no two neighbours could form one prefix).
func TestSpanPrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(lo, hi uint32) {
		t.Helper()
		ps := spanPrefixes(u128{0, uint64(lo)}, u128{0, uint64(hi)}, 32)
		next := uint64(lo)
		for i, p := range ps {
			if p != p.Masked() || !p.Addr().Is4() {
				t.Fatalf("[%d,%d]: prefix %v not canonical", lo, hi, p)
			}
			a, b := prefixSpan(p)
			if a.lo != next {
				t.Fatalf("[%d,%d]: prefix %v starts at %d, want %d", lo, hi, p, a.lo, next)
			}
			next = b.lo + 1
			if i > 0 && ps[i-1].Bits() == p.Bits() {
				if q, _ := p.Addr().Prefix(p.Bits() - 1); q.Addr() == ps[i-1].Addr() {
					t.Fatalf("[%d,%d]: %v and %v should be one prefix", lo, hi, ps[i-1], p)
				}
			}
		}
		if next != uint64(hi)+1 {
			t.Fatalf("[%d,%d]: prefixes end at %d: %v", lo, hi, next-1, ps)
		}
	}
	for range 2000 {
		lo := r.Uint32N(1 << 16)
		check(lo, lo+r.Uint32N(1<<12))
		hi := ^uint32(0) - r.Uint32N(1<<10)
		check(hi-r.Uint32N(1<<12), hi)
	}
	check(0, ^uint32(0))
	check(^uint32(0), ^uint32(0))
	if ps := spanPrefixes(u128{}, maxOf(128), 128); len(ps) != 1 || ps[0].String() != "::/0" {
		t.Errorf("full IPv6 range = %v", ps)
	}
}

// TestEnvelope checks envelope against brute force on a small space (ports,
// width 16), including spans that reach the top of it.
func TestEnvelope(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const top = 1<<16 - 1
	points := func() []uint64 {
		var ps []uint64
		for x := uint64(0); x < 300; x++ {
			ps = append(ps, x)
		}
		for x := uint64(top - 300); x <= top; x++ {
			ps = append(ps, x)
		}
		return ps
	}()
	for iter := range 3000 {
		var in []span
		for range r.IntN(8) {
			var lo uint64
			if r.IntN(4) == 0 {
				lo = top - r.Uint64N(250)
			} else {
				lo = r.Uint64N(250)
			}
			hi := min(lo+r.Uint64N(60), top)
			dl := stamp(1 + r.IntN(3))
			if r.IntN(5) == 0 {
				dl = never
			}
			in = append(in, span{u128{0, lo}, u128{0, hi}, dl})
		}
		out := envelope(in, 16)
		// Sorted, disjoint, and neighbours that touch differ in deadline.
		for i := 1; i < len(out); i++ {
			if out[i].lo.cmp(out[i-1].hi) <= 0 {
				t.Fatalf("iter %d: pieces overlap or unsorted: %v", iter, out)
			}
			if out[i].lo.lo == out[i-1].hi.lo+1 && out[i].dl == out[i-1].dl {
				t.Fatalf("iter %d: touching pieces with the same deadline not merged: %v", iter, out)
			}
		}
		for _, x := range points {
			var want stamp
			for _, s := range in {
				if s.lo.lo <= x && x <= s.hi.lo && s.dl > want {
					want = s.dl
				}
			}
			var got stamp
			for _, s := range out {
				if s.lo.lo <= x && x <= s.hi.lo {
					got = s.dl
				}
			}
			if got != want {
				t.Fatalf("iter %d: point %d: deadline %d, want %d\nin  %v\nout %v", iter, x, got, want, in, out)
			}
		}
	}
	if out := envelope(nil, 32); out != nil {
		t.Errorf("envelope(nil) = %v", out)
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct {
		in   netip.Prefix
		want string
	}{
		{netip.MustParsePrefix("10.1.2.3/8"), "10.0.0.0/8"},
		{netip.MustParsePrefix("::ffff:10.1.2.3/128"), "10.1.2.3/32"},
		{netip.MustParsePrefix("::ffff:10.1.2.3/104"), "10.0.0.0/8"},
		{netip.MustParsePrefix("::ffff:0.0.0.0/96"), "0.0.0.0/0"},
		{netip.MustParsePrefix("::ffff:0.0.0.0/95"), "::fffe:0:0/95"},
		{netip.MustParsePrefix("2001:db8::1/64"), "2001:db8::/64"},
		{netip.PrefixFrom(netip.MustParseAddr("fe80::1%eth0"), 128), "fe80::1/128"},
		{netip.Prefix{}, "invalid"},
		{netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 33), "invalid"},
	}
	for _, c := range cases {
		got, ok := normalize(c.in)
		s := "invalid"
		if ok {
			s = got.String()
		}
		if s != c.want {
			t.Errorf("normalize(%v) = %s, want %s", c.in, s, c.want)
		}
	}
}

func TestU128(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.1.2.3", "255.255.255.255", "::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0:1"} {
		a := netip.MustParseAddr(s)
		w := addrWidth(a)
		v := fromAddr(a)
		if got := toAddr(v, w); got != a {
			t.Errorf("%s: round trip gives %s", s, got)
		}
		if k, ok := fromKey(keyBytes(v, w), w); !ok || k != v {
			t.Errorf("%s: key round trip %v", s, k)
		}
		if n, wrapped := v.inc(w); !wrapped && n.dec() != v {
			t.Errorf("%s: inc/dec", s)
		}
	}
	if _, wrapped := maxOf(32).inc(32); !wrapped {
		t.Error("max IPv4 + 1 must wrap")
	}
	if n, wrapped := (u128{0, 1<<64 - 1}).inc(128); wrapped || n != (u128{1, 0}) {
		t.Errorf("carry: %v %v", n, wrapped)
	}
	if _, ok := fromKey([]byte{1, 2, 3}, 32); ok {
		t.Error("a 3-byte key is not an IPv4 address")
	}
}

func ExampleMerge() {
	fmt.Println(Merge(prefixes("192.0.2.0/25", "192.0.2.128/25", "192.0.2.7/32", "2001:db8::/48")))
	// Output: [192.0.2.0/24 2001:db8::/48]
}

func TestMergeIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		var in []netip.Prefix
		for range r.IntN(20) {
			a := netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(256))})
			p, _ := a.Prefix(22 + r.IntN(11))
			in = append(in, p)
		}
		once := Merge(in)
		if twice := Merge(once); !slices.Equal(once, twice) {
			t.Fatalf("Merge not idempotent: %v -> %v", once, twice)
		}
		// Same coverage: every address of the 10.0.0.0/22 space is
		// covered by in exactly when it is covered by once.
		for x := range 1024 {
			a := netip.AddrFrom4([4]byte{10, 0, byte(x >> 8), byte(x)})
			if slices.ContainsFunc(in, func(p netip.Prefix) bool { return p.Contains(a) }) !=
				slices.ContainsFunc(once, func(p netip.Prefix) bool { return p.Contains(a) }) {
				t.Fatalf("coverage of %s differs: %v vs %v", a, in, once)
			}
		}
	}
}
