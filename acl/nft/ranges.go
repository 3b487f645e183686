package nft

import (
	"cmp"
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// u128 is an unsigned 128-bit integer: an address (or a port) as a number.
// IPv4 addresses and ports use only the low bits; the width (16, 32 or 128)
// travels separately.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

// inc returns a+1 and whether it wrapped past maxOf(width).
func (a u128) inc(width int) (u128, bool) {
	if a == maxOf(width) {
		return u128{}, true
	}
	lo, carry := bits.Add64(a.lo, 1, 0)
	return u128{a.hi + carry, lo}, false
}

// dec returns a-1; a must not be zero.
func (a u128) dec() u128 {
	lo, borrow := bits.Sub64(a.lo, 1, 0)
	return u128{a.hi - borrow, lo}
}

// mask returns 2^n - 1.
func mask(n int) u128 {
	switch {
	case n <= 0:
		return u128{}
	case n < 64:
		return u128{0, 1<<n - 1}
	case n < 128:
		return u128{1<<(n-64) - 1, math.MaxUint64}
	default:
		return u128{math.MaxUint64, math.MaxUint64}
	}
}

func maxOf(width int) u128 { return mask(width) }

// trailingZeros counts the trailing zero bits of a, at most width.
func (a u128) trailingZeros(width int) int {
	var n int
	if a.lo != 0 {
		n = bits.TrailingZeros64(a.lo)
	} else if a.hi != 0 {
		n = 64 + bits.TrailingZeros64(a.hi)
	} else {
		n = 128
	}
	return min(n, width)
}

// addrWidth is 32 for IPv4 and 128 for IPv6.
func addrWidth(a netip.Addr) int {
	if a.Is4() {
		return 32
	}
	return 128
}

func fromAddr(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func toAddr(v u128, width int) netip.Addr {
	if width == 32 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// keyBytes encodes v as the big-endian key of an nftables set of the given
// width (2 bytes for ports, 4 for IPv4, 16 for IPv6).
func keyBytes(v u128, width int) []byte {
	switch width {
	case 16:
		return binary.BigEndian.AppendUint16(nil, uint16(v.lo))
	case 32:
		return binary.BigEndian.AppendUint32(nil, uint32(v.lo))
	default:
		b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), v.hi)
		return binary.BigEndian.AppendUint64(b, v.lo)
	}
}

// fromKey decodes a key written by keyBytes; ok is false on a length that
// does not fit width.
func fromKey(k []byte, width int) (v u128, ok bool) {
	if len(k) != width/8 {
		return u128{}, false
	}
	switch width {
	case 16:
		return u128{0, uint64(binary.BigEndian.Uint16(k))}, true
	case 32:
		return u128{0, uint64(binary.BigEndian.Uint32(k))}, true
	default:
		return u128{binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])}, true
	}
}

// normalize returns p in the form the firewall stores: valid, masked, with
// no zone, and with IPv4-mapped IPv6 prefixes of length >= 96 turned into
// IPv4 prefixes (packets from IPv4 peers carry IPv4 headers). It reports
// false for an invalid prefix.
func normalize(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	a, n := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() && n >= 96 {
		a, n = a.Unmap(), n-96
	}
	q, err := a.Prefix(n)
	if err != nil {
		return netip.Prefix{}, false
	}
	return q, true
}

// prefixSpan returns the first and last address of a normalized prefix as
// numbers.
func prefixSpan(p netip.Prefix) (lo, hi u128) {
	w := addrWidth(p.Addr())
	lo = fromAddr(p.Addr())
	return lo, lo.or(mask(w - p.Bits()))
}

// spanPrefixes returns the shortest list of prefixes covering exactly the
// addresses lo..hi (inclusive), in ascending order.
func spanPrefixes(lo, hi u128, width int) []netip.Prefix {
	var out []netip.Prefix
	for lo.cmp(hi) <= 0 {
		k := lo.trailingZeros(width)
		for k > 0 && lo.or(mask(k)).cmp(hi) > 0 {
			k--
		}
		out = append(out, netip.PrefixFrom(toAddr(lo, width), width-k))
		next, wrapped := lo.or(mask(k)).inc(width)
		if wrapped {
			break
		}
		lo = next
	}
	return out
}

// stamp is a deadline in nanoseconds on the firewall's monotonic clock;
// never means no timeout.
type stamp int64

const never stamp = math.MaxInt64

// span is an inclusive range of numbers with the deadline it is blocked
// until.
type span struct {
	lo, hi u128
	dl     stamp
}

// spanHeap is a max-heap of spans by deadline (the active spans of a
// sweep); typed, so that pushing and popping do not allocate.
type spanHeap []span

func (h *spanHeap) push(s span) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p].dl >= a[i].dl {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *spanHeap) pop() {
	a := *h
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a[l].dl > a[m].dl {
			m = l
		}
		if r < n && a[r].dl > a[m].dl {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
}

// envelope turns possibly overlapping spans into sorted, non-overlapping
// pieces where every number is blocked until the latest deadline of the
// spans that contain it. Pieces that touch and share a deadline are merged,
// so spans that are contained in, or adjacent to, a span with the same
// deadline disappear into it. This is what an nftables interval set can
// hold: it refuses overlapping elements, and every element has one timeout.
func envelope(in []span, width int) []span {
	if len(in) == 0 {
		return nil
	}
	ivs := slices.Clone(in)
	slices.SortFunc(ivs, func(a, b span) int { return a.lo.cmp(b.lo) })
	bounds := make([]u128, 0, 2*len(ivs))
	for _, s := range ivs {
		bounds = append(bounds, s.lo)
		if e, wrapped := s.hi.inc(width); !wrapped {
			bounds = append(bounds, e)
		}
	}
	slices.SortFunc(bounds, u128.cmp)
	bounds = slices.Compact(bounds)

	var (
		out    []span
		active spanHeap
		j      int
	)
	for i, b := range bounds {
		for j < len(ivs) && ivs[j].lo.cmp(b) <= 0 {
			active.push(ivs[j])
			j++
		}
		for len(active) > 0 && active[0].hi.cmp(b) < 0 {
			active.pop()
		}
		if len(active) == 0 {
			continue
		}
		// The top has the latest deadline of all pushed spans and covers
		// b, so it is the latest deadline among the spans covering b; no
		// span starts or ends strictly inside [b, next bound), so that
		// deadline holds for the whole segment.
		seg := span{lo: b, dl: active[0].dl}
		if i+1 < len(bounds) {
			seg.hi = bounds[i+1].dec()
		} else {
			seg.hi = maxOf(width)
		}
		if n := len(out); n > 0 && out[n-1].dl == seg.dl {
			if next, wrapped := out[n-1].hi.inc(width); !wrapped && next == seg.lo {
				out[n-1].hi = seg.hi
				continue
			}
		}
		out = append(out, seg)
	}
	return out
}

// Merge returns the shortest sorted list of prefixes that covers exactly
// the addresses covered by ps: prefixes contained in another disappear and
// adjacent ones are joined (10.0.0.0/25 and 10.0.0.128/25 become
// 10.0.0.0/24). Invalid prefixes are dropped; IPv4-mapped IPv6 prefixes of
// length >= 96 are treated as IPv4. IPv4 prefixes come before IPv6 ones.
func Merge(ps []netip.Prefix) []netip.Prefix {
	v4, v6 := splitFamilies(ps, never)
	var out []netip.Prefix
	for _, s := range envelope(v4, 32) {
		out = append(out, spanPrefixes(s.lo, s.hi, 32)...)
	}
	for _, s := range envelope(v6, 128) {
		out = append(out, spanPrefixes(s.lo, s.hi, 128)...)
	}
	return out
}

// splitFamilies normalizes ps into IPv4 and IPv6 spans with deadline dl.
func splitFamilies(ps []netip.Prefix, dl stamp) (v4, v6 []span) {
	for _, p := range ps {
		q, ok := normalize(p)
		if !ok {
			continue
		}
		lo, hi := prefixSpan(q)
		if q.Addr().Is4() {
			v4 = append(v4, span{lo, hi, dl})
		} else {
			v6 = append(v6, span{lo, hi, dl})
		}
	}
	return v4, v6
}
