// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package srtp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
)

// ctrBlockSize is AES's block size, the only block cipher SRTP's counter
// mode is defined for (RFC 3711 §4.1.1, RFC 6188).
const ctrBlockSize = aes.BlockSize

// ctrBatchBlocks is how many counter blocks the portable path lays out and
// encrypts before it XORs them into the data: one XOR call per batch
// instead of one per block. 8 blocks (128 bytes) cover a 20 ms G.711
// payload in two batches.
const ctrBatchBlocks = 8

// aesCTR is AES in counter mode with a fresh IV per call, as SRTP uses it
// (one IV per packet), without allocating: cipher.NewCTR allocates a
// stream (and copies the key schedule) per IV.
//
// Where the CPU has AES instructions (amd64), it XORs the keystream of up
// to 8 blocks at a time with Go's own CTR assembly (ctr_amd64.s), which
// interleaves the blocks' rounds; elsewhere it lays the counter blocks of
// a batch out in a buffer, encrypts them in place with the cipher.Block
// and XORs the batch into the data at once.
//
// Like the Context that owns it, an aesCTR is not safe for concurrent use:
// the portable path's keystream buffer is part of it.
type aesCTR struct {
	block cipher.Block

	// rounds and roundKeys are the AES encryption key schedule (FIPS-197
	// §5.2) for the assembly path; rounds is 0 when it is not used.
	rounds    int
	roundKeys [4 * 60]byte

	// keystream is the portable path's buffer: on the stack it would
	// escape through the cipher.Block interface call.
	keystream [ctrBatchBlocks * ctrBlockSize]byte
}

func newAESCTR(key []byte) (*aesCTR, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	ctr := &aesCTR{block: block}
	if ctrAsmSupported {
		ctr.rounds = expandKey(key, &ctr.roundKeys)
	}

	return ctr, nil
}

// xorKeyStream XORs src with the keystream that starts at counter block
// iv and writes the result to dst: it is equivalent to
// cipher.NewCTR(block, iv).XORKeyStream(dst, src). The counter is a 128-bit
// big-endian integer, incremented with carry. dst and src may be the same
// slice or not overlap at all. If dst is shorter than src, only len(dst)
// bytes are processed.
func (c *aesCTR) xorKeyStream(iv []byte, dst, src []byte) error {
	if len(iv) != ctrBlockSize {
		return errBadIVLength
	}
	if len(dst) < len(src) {
		src = src[:len(dst)]
	}
	ivhi := binary.BigEndian.Uint64(iv[:8])
	ivlo := binary.BigEndian.Uint64(iv[8:])
	if c.rounds != 0 {
		ctrAsm(c.rounds, &c.roundKeys, dst, src, ivlo, ivhi)

		return nil
	}
	xorKeyStreamBlocks(c.block, &c.keystream, dst, src, ivlo, ivhi)

	return nil
}

// xorKeyStreamBlocks is the portable counter mode: per batch of up to
// ctrBatchBlocks blocks, the counter blocks are written into keystream,
// encrypted in place, and XORed into dst in one call.
func xorKeyStreamBlocks(
	block cipher.Block, keystream *[ctrBatchBlocks * ctrBlockSize]byte, dst, src []byte, ivlo, ivhi uint64,
) {
	for len(src) > 0 {
		n := min(len(src), len(keystream))
		for off := 0; off < n; off += ctrBlockSize {
			b := keystream[off : off+ctrBlockSize]
			binary.BigEndian.PutUint64(b[:8], ivhi)
			binary.BigEndian.PutUint64(b[8:], ivlo)
			block.Encrypt(b, b)
			ivlo, ivhi = add128(ivlo, ivhi, 1)
		}
		subtle.XORBytes(dst[:n], src[:n], keystream[:n])
		dst, src = dst[n:], src[n:]
	}
}

// add128 adds x to the 128-bit integer hi:lo.
func add128(lo, hi uint64, x uint64) (uint64, uint64) {
	lo += x
	if lo < x {
		hi++
	}

	return lo, hi
}

// sbox is AES's S-box (FIPS-197 §5.1.1), computed rather than tabulated:
// the multiplicative inverse in GF(2^8) followed by the affine map.
var sbox = func() (s [256]byte) { //nolint:gochecknoglobals
	mul := func(a, b byte) (p byte) {
		for ; b != 0; b >>= 1 {
			if b&1 != 0 {
				p ^= a
			}
			a = a<<1 ^ byte(int8(a)>>7)&0x1b
		}

		return p
	}
	rotl := func(x byte, k int) byte { return x<<k | x>>(8-k) }
	for x := range 256 {
		// x^254 is x's inverse (0 for 0).
		inv, sq := byte(1), byte(x) //nolint:gosec // G115: x < 256
		for e := 254; e != 0; e >>= 1 {
			if e&1 != 0 {
				inv = mul(inv, sq)
			}
			sq = mul(sq, sq)
		}
		if x == 0 {
			inv = 0
		}
		s[x] = inv ^ rotl(inv, 1) ^ rotl(inv, 2) ^ rotl(inv, 3) ^ rotl(inv, 4) ^ 0x63
	}

	return s
}()

// expandKey writes the AES encryption key schedule of key (16, 24 or 32
// bytes) into w, round key after round key, each as its 16 bytes in
// order (the layout AESENC reads), and returns the number of rounds.
// FIPS-197 §5.2.
func expandKey(key []byte, w *[4 * 60]byte) int {
	nk := len(key) / 4
	rounds := nk + 6
	copy(w[:], key)
	rcon := byte(1)
	for i := nk; i < 4*(rounds+1); i++ {
		var t [4]byte
		copy(t[:], w[4*(i-1):4*i])
		switch {
		case i%nk == 0:
			t = [4]byte{sbox[t[1]] ^ rcon, sbox[t[2]], sbox[t[3]], sbox[t[0]]}
			rcon = rcon<<1 ^ byte(int8(rcon)>>7)&0x1b
		case nk > 6 && i%nk == 4:
			t = [4]byte{sbox[t[0]], sbox[t[1]], sbox[t[2]], sbox[t[3]]}
		}
		for k := range 4 {
			w[4*i+k] = w[4*(i-nk)+k] ^ t[k]
		}
	}

	return rounds
}
