package ratelimit

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// SourceKey returns the per-source key the limiter and the tracker expect
// for a peer address: the /32 of an IPv4 address (IPv4-mapped IPv6
// addresses are unmapped first) and the /64 of an IPv6 address. The zone is
// dropped. An invalid address gives an invalid prefix, which every method
// of this package ignores (Allow admits it, Fail records nothing).
//
// Keying IPv6 by /64 matters: one host typically owns a whole /64 and can
// pick a fresh source address per packet, so a /128 key would let it mint
// unlimited fresh buckets.
func SourceKey(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.WithZone("").Prefix(64)
	return p
}

// key is the compact, comparable, hashable form of a masked netip.Prefix
// used inside the tables: 24 bytes with no padding and no pointers, so the
// map hashes it as plain memory. meta holds bits+1 (0 = invalid) and bit 8
// for IPv4.
type key struct {
	hi, lo uint64
	meta   uint64
}

const metaV4 = 1 << 8

// keyOf converts p to its masked key form. ok is false for invalid prefixes.
func keyOf(p netip.Prefix) (k key, ok bool) {
	if !p.IsValid() {
		return key{}, false
	}
	b := p.Addr().As16()
	n := p.Bits()
	k.hi = binary.BigEndian.Uint64(b[:8])
	k.lo = binary.BigEndian.Uint64(b[8:])
	k.meta = uint64(n) + 1
	if p.Addr().Is4() {
		k.meta |= metaV4
		n += 96 // position inside the 128-bit mapped form
	}
	// Mask off host bits: callers may hand us an unmasked PrefixFrom.
	switch {
	case n <= 0:
		k.hi, k.lo = 0, 0
	case n < 64:
		k.hi &= ^uint64(0) << (64 - n)
		k.lo = 0
	case n < 128: // IPv4 lands here: n ≥ 96 keeps the ::ffff: marker
		k.lo &= ^uint64(0) << (128 - n)
	}
	return k, true
}

// prefix converts k back to the masked netip.Prefix it came from.
func (k key) prefix() netip.Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	a := netip.AddrFrom16(b)
	if k.meta&metaV4 != 0 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(k.meta&0xff)-1)
}

// hash mixes k with a per-table seed. The seed keeps an outsider from
// choosing spoofed sources that all land in one shard.
func (k key) hash(seed uint64) uint64 {
	return mix(mix(k.hi^seed) ^ k.lo ^ k.meta<<56)
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ceilPow2 returns the smallest power of two >= n (n >= 1).
func ceilPow2(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}
