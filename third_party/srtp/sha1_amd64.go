// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

//go:build !purego

package srtp

import "golang.org/x/sys/cpu"

// blockSHANI runs SHA-1's compression function over the 64-byte blocks of
// p (len(p) a multiple of 64), updating the state dig, with the SHA
// extensions (sha1_amd64.s, Go's crypto/sha1 assembly).
//
//go:noescape
func blockSHANI(dig *[5]uint32, p []byte)

// cpuid is the CPUID instruction (sha1_amd64.s, as in golang.org/x/sys/cpu).
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

// hasSHA reports whether the CPU has the SHA extensions (CPUID leaf 7,
// EBX bit 29), which golang.org/x/sys/cpu does not export for x86.
func hasSHA() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)

	return ebx&(1<<29) != 0
}

// sha1AsmSupported is whether blockSHANI can run here: the same test Go's
// crypto/sha1 makes before it uses it (its encoding needs AVX).
var sha1AsmSupported = cpu.X86.HasAVX && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3 && hasSHA() //nolint:gochecknoglobals

func sha1Blocks(h *[5]uint32, p []byte) { blockSHANI(h, p) }
