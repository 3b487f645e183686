// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package srtp

import (
	"crypto/sha1" //nolint:gosec
	"encoding/binary"
)

// hmacSHA1 is HMAC-SHA1 (RFC 2104) for SRTP's authentication tags, where
// SHA-1's compression function is available in assembly (sha1AsmSupported).
//
// crypto/hmac, per tag, restores the inner state from its marshaled form,
// hashes, copies the digest to pad it, restores the outer state, and so
// on: about 40 % of an SRTP tag's cost went there rather than into SHA-1's
// four compressions. hmacSHA1 keeps the states after the key's ipad and
// opad blocks as five words each, compresses the message's whole blocks
// where they lie, and pads the rest and the outer message in buffers on
// the stack.
//
// It keeps no state between calls: it is safe for concurrent use.
type hmacSHA1 struct {
	inner, outer [5]uint32
}

// sha1Init is SHA-1's initial state (FIPS 180-4 §5.3.1).
var sha1Init = [5]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0} //nolint:gochecknoglobals

// newHMACSHA1 returns HMAC-SHA1 with key, or nil when there is no SHA-1
// assembly here (the caller then uses crypto/hmac).
func newHMACSHA1(key []byte) *hmacSHA1 {
	if !sha1AsmSupported {
		return nil
	}
	if len(key) > sha1.BlockSize {
		sum := sha1.Sum(key) //nolint:gosec
		key = sum[:]
	}
	var ipad, opad [sha1.BlockSize]byte
	copy(ipad[:], key)
	copy(opad[:], key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	mac := &hmacSHA1{inner: sha1Init, outer: sha1Init}
	sha1Blocks(&mac.inner, ipad[:])
	sha1Blocks(&mac.outer, opad[:])

	return mac
}

// hmacSHA1MaxTail is the longest tail sum takes: the message's last
// partial block and the tail must fit in two blocks with SHA-1's padding.
const hmacSHA1MaxTail = sha1.BlockSize - 9

// sum writes HMAC-SHA1(key, msg || tail) to out. tail (the ROC in SRTP)
// is at most hmacSHA1MaxTail bytes long; it is read before out is
// written, so they may share memory.
func (h *hmacSHA1) sum(out *[sha1.Size]byte, msg, tail []byte) {
	if len(tail) > hmacSHA1MaxTail {
		panic("srtp: hmacSHA1 tail too long")
	}
	state := h.inner
	full := len(msg) &^ (sha1.BlockSize - 1)
	if full > 0 {
		sha1Blocks(&state, msg[:full])
	}
	var last [2 * sha1.BlockSize]byte
	n := copy(last[:], msg[full:])
	n += copy(last[n:], tail)
	last[n] = 0x80
	end := sha1.BlockSize
	if n+1+8 > end {
		end = 2 * sha1.BlockSize
	}
	binary.BigEndian.PutUint64(last[end-8:end], uint64(sha1.BlockSize+len(msg)+len(tail))*8)
	sha1Blocks(&state, last[:end])

	var outerMsg [sha1.BlockSize]byte
	for i, v := range state {
		binary.BigEndian.PutUint32(outerMsg[4*i:], v)
	}
	outerMsg[sha1.Size] = 0x80
	binary.BigEndian.PutUint64(outerMsg[sha1.BlockSize-8:], (sha1.BlockSize+sha1.Size)*8)
	state = h.outer
	sha1Blocks(&state, outerMsg[:])
	for i, v := range state {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
}
