// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

//go:build !amd64 || purego

package srtp

// ctrAsmSupported is false: there is no assembly counter mode for this
// architecture (or the purego tag is set), aesCTR uses the cipher.Block.
const ctrAsmSupported = false

// ctrAsm is never called when ctrAsmSupported is false.
func ctrAsm(_ int, _ *[4 * 60]byte, _, _ []byte, _, _ uint64) {
	panic("srtp: no assembly counter mode on this architecture")
}
