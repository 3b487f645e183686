package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// SourceKey returns the per-source key of addr: a /32 for IPv4 (and for
// IPv4-mapped IPv6 addresses, which are unmapped first), a /64 for IPv6 (any
// zone dropped). Rate limiting and auto-block count and block per source key,
// so that an IPv6 host cannot escape by rotating the interface half of its
// address. It returns the zero (invalid) Prefix for an invalid addr. It does
// not allocate.
func SourceKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	switch {
	case addr.Is4():
		return netip.PrefixFrom(addr, 32)
	case addr.Is6():
		p, _ := addr.WithZone("").Prefix(64)
		return p
	default:
		return netip.Prefix{}
	}
}

// ParsePrefix parses a CIDR ("192.0.2.0/24", "2001:db8::/32") or a bare
// address ("192.0.2.7" as /32, "2001:db8::7" as /128). Host bits are masked
// off ("192.0.2.7/24" gives 192.0.2.0/24), and IPv4-mapped IPv6 forms
// ("::ffff:192.0.2.7", "::ffff:192.0.2.0/120") are turned into their IPv4
// equivalents, so that the result is the canonical form used by TrunkTable
// and Blocklist. Zones are refused.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, errors.New("acl: empty prefix")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("acl: invalid prefix %q: %w", s, err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("acl: invalid address %q: %w", s, err)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("acl: invalid address %q: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return canonicalPrefix(p)
}

// canonicalPrefix validates p and returns its canonical form: masked, and
// IPv4-mapped IPv6 prefixes of length >= 96 turned into IPv4 prefixes.
// Shorter IPv6 prefixes stay IPv6 (so ::/0 means "all of IPv6", not IPv4).
func canonicalPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("acl: invalid prefix %q", p.String())
	}
	a := p.Addr()
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("acl: invalid prefix %s: zones are not allowed", p)
	}
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// comparePrefix orders prefixes IPv4 before IPv6, then by address, then by
// length (shorter first).
func comparePrefix(a, b netip.Prefix) int {
	aa, ba := a.Addr(), b.Addr()
	if a4, b4 := aa.Is4(), ba.Is4(); a4 != b4 {
		if a4 {
			return -1
		}
		return 1
	}
	if c := aa.Compare(ba); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
