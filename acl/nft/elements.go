package nft

import (
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
)

// timeoutFor converts a deadline into the element timeout to send now: zero
// for never, otherwise the time left rounded up to the millisecond the kernel
// counts in, and at least one millisecond (a zero timeout would mean "none").
func timeoutFor(dl, now stamp) time.Duration {
	if dl == never {
		return 0
	}
	left := time.Duration(dl - now)
	if left < time.Millisecond {
		return time.Millisecond
	}
	return (left + time.Millisecond - 1).Truncate(time.Millisecond)
}

// addrElem is the element of an address set (blocked4, blocked6) for a.
func addrElem(a netip.Addr, timeout time.Duration) nftables.SetElement {
	return nftables.SetElement{Key: keyBytes(fromAddr(a), addrWidth(a)), Timeout: timeout}
}

// spanElems encodes the inclusive range s of an interval set the way nft
// does: a start element carrying the timeout, and an end element flagged
// NFT_SET_ELEM_INTERVAL_END whose key is the first number after the range.
// A range reaching the top of the space has no end element.
func spanElems(s span, width int, timeout time.Duration) []nftables.SetElement {
	out := []nftables.SetElement{{Key: keyBytes(s.lo, width), Timeout: timeout}}
	if end, wrapped := s.hi.inc(width); !wrapped {
		out = append(out, nftables.SetElement{Key: keyBytes(end, width), IntervalEnd: true})
	}
	return out
}

// elemDeadline is the deadline of an element read back from the kernel:
// never when it has no timeout, otherwise now plus the time it has left.
func elemDeadline(e nftables.SetElement, now stamp) stamp {
	if e.Timeout == 0 {
		return never
	}
	return now + stamp(e.Expires)
}

// decodeAddrs reads the elements of an address set. Elements whose key does
// not have the set's width are ignored.
func decodeAddrs(elems []nftables.SetElement, width int, now stamp) map[netip.Addr]stamp {
	out := make(map[netip.Addr]stamp, len(elems))
	for _, e := range elems {
		v, ok := fromKey(e.Key, width)
		if !ok || e.IntervalEnd {
			continue
		}
		out[toAddr(v, width)] = elemDeadline(e, now)
	}
	return out
}

// decodeSpans rebuilds the ranges of an interval set from its elements
// (which the kernel dumps in descending order): each start element opens a
// range that the next end element closes; a start with no end reaches the
// top of the space. Stray end elements, such as the 0.0.0.0 end marker nft
// inserts before the first range, are ignored.
func decodeSpans(elems []nftables.SetElement, width int, now stamp) []span {
	type el struct {
		k   u128
		end bool
		dl  stamp
	}
	els := make([]el, 0, len(elems))
	for _, e := range elems {
		v, ok := fromKey(e.Key, width)
		if !ok {
			continue
		}
		els = append(els, el{v, e.IntervalEnd, elemDeadline(e, now)})
	}
	// Ascending; at equal keys the end of one range comes before the start
	// of the next (adjacent ranges share that key).
	slices.SortFunc(els, func(a, b el) int {
		if c := a.k.cmp(b.k); c != 0 {
			return c
		}
		switch {
		case a.end == b.end:
			return 0
		case a.end:
			return -1
		default:
			return 1
		}
	})
	var (
		out  []span
		open *el
	)
	for i := range els {
		e := &els[i]
		switch {
		case e.end && open != nil:
			if e.k != open.k { // an empty range cannot exist; skip if it does
				out = append(out, span{open.k, e.k.dec(), open.dl})
			}
			open = nil
		case e.end:
			// stray end marker
		case open != nil && e.k != open.k:
			// two starts in a row: close the first just before the second
			out = append(out, span{open.k, e.k.dec(), open.dl})
			open = e
		default:
			open = e
		}
	}
	if open != nil {
		out = append(out, span{open.k, maxOf(width), open.dl})
	}
	return out
}

// Sizes used to split work into netlink messages and batches.
const (
	// maxMsgElems bounds the elements of one NEWSETELEM/DELSETELEM
	// message: the element list is one netlink attribute, whose length is
	// 16 bits (the library truncates it silently beyond 64 KiB). An IPv6
	// interval element with a timeout encodes to about 60 bytes.
	maxMsgElems = 512
	// maxBatchBytes bounds one batch (one kernel transaction), as
	// estimated by elemCost. The netlink socket's send buffer is raised
	// to sndBufBytes (the kernel doubles it) to fit it.
	maxBatchBytes = 4 << 20
	sndBufBytes   = 8 << 20
)

// elemCost bounds the encoded size of one element of a set: the element's
// attribute header (4), the nested key (8 + key), a timeout (12) and flags
// (8), plus a share of the message headers.
func elemCost(e nftables.SetElement) int { return 36 + len(e.Key) }
