// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

//go:build !purego

package srtp

import "golang.org/x/sys/cpu"

// ctrAsmSupported is whether ctr_amd64.s can run here: the same test Go's
// crypto/aes makes before it uses it.
var ctrAsmSupported = cpu.X86.HasAES && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3 //nolint:gochecknoglobals

// Each ctrBlocksNAsm XORs src with N blocks of counter keystream (counter
// ivhi:ivlo, big-endian on the wire) under the key schedule xk of nr
// rounds, and stores the result in dst. src is loaded in full before dst
// is stored, so they may overlap.

//go:noescape
func ctrBlocks1Asm(nr int, xk *[4 * 60]byte, dst, src *[ctrBlockSize]byte, ivlo, ivhi uint64)

//go:noescape
func ctrBlocks2Asm(nr int, xk *[4 * 60]byte, dst, src *[2 * ctrBlockSize]byte, ivlo, ivhi uint64)

//go:noescape
func ctrBlocks4Asm(nr int, xk *[4 * 60]byte, dst, src *[4 * ctrBlockSize]byte, ivlo, ivhi uint64)

//go:noescape
func ctrBlocks8Asm(nr int, xk *[4 * 60]byte, dst, src *[8 * ctrBlockSize]byte, ivlo, ivhi uint64)

// ctrAsm XORs src with the keystream from counter ivhi:ivlo into dst
// (len(dst) >= len(src)), 8, 4, 2 and 1 blocks at a time and a last
// partial block through a buffer on the stack, as Go's
// crypto/internal/fips140/aes CTR.XORKeyStreamAt does.
func ctrAsm(rounds int, xk *[4 * 60]byte, dst, src []byte, ivlo, ivhi uint64) {
	for len(src) >= 8*ctrBlockSize {
		ctrBlocks8Asm(rounds, xk, (*[8 * ctrBlockSize]byte)(dst), (*[8 * ctrBlockSize]byte)(src), ivlo, ivhi)
		src, dst = src[8*ctrBlockSize:], dst[8*ctrBlockSize:]
		ivlo, ivhi = add128(ivlo, ivhi, 8)
	}
	if len(src) >= 4*ctrBlockSize {
		ctrBlocks4Asm(rounds, xk, (*[4 * ctrBlockSize]byte)(dst), (*[4 * ctrBlockSize]byte)(src), ivlo, ivhi)
		src, dst = src[4*ctrBlockSize:], dst[4*ctrBlockSize:]
		ivlo, ivhi = add128(ivlo, ivhi, 4)
	}
	if len(src) >= 2*ctrBlockSize {
		ctrBlocks2Asm(rounds, xk, (*[2 * ctrBlockSize]byte)(dst), (*[2 * ctrBlockSize]byte)(src), ivlo, ivhi)
		src, dst = src[2*ctrBlockSize:], dst[2*ctrBlockSize:]
		ivlo, ivhi = add128(ivlo, ivhi, 2)
	}
	if len(src) >= ctrBlockSize {
		ctrBlocks1Asm(rounds, xk, (*[ctrBlockSize]byte)(dst), (*[ctrBlockSize]byte)(src), ivlo, ivhi)
		src, dst = src[ctrBlockSize:], dst[ctrBlockSize:]
		ivlo, ivhi = add128(ivlo, ivhi, 1)
	}
	if len(src) != 0 {
		var in, out [ctrBlockSize]byte
		copy(in[:], src)
		ctrBlocks1Asm(rounds, xk, &out, &in, ivlo, ivhi)
		copy(dst, out[:len(src)])
	}
}
