// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

//go:build !amd64 || purego

package srtp

// sha1AsmSupported is false: HMAC-SHA1 goes through crypto/hmac.
const sha1AsmSupported = false

// sha1Blocks is never called when sha1AsmSupported is false.
func sha1Blocks(_ *[5]uint32, _ []byte) {
	panic("srtp: no SHA-1 block function on this architecture")
}
