// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package srtp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testRand is the tests' source of keys, IVs and data: seeded, so that a
// failure can be reproduced.
var testRand = rand.New(rand.NewSource(1)) //nolint:gosec,gochecknoglobals

func xorBytesCTRReference(block cipher.Block, iv []byte, dst, src []byte) {
	stream := cipher.NewCTR(block, iv)
	stream.XORKeyStream(dst, src)
}

// ctrPaths returns the counter-mode implementations to test for key: the
// one newAESCTR picks and, when that is the assembly one, the portable one
// as well.
func ctrPaths(t *testing.T, key []byte) map[string]*aesCTR {
	t.Helper()
	ctr, err := newAESCTR(key)
	require.NoError(t, err)
	paths := map[string]*aesCTR{"default": ctr}
	if ctr.rounds != 0 {
		portable := &aesCTR{block: ctr.block}
		paths["portable"] = portable
	}

	return paths
}

func benchmarkAESCTR(b *testing.B, keysize, n int) {
	b.Helper()
	key := make([]byte, keysize)
	_, _ = testRand.Read(key)
	ctr, err := newAESCTR(key)
	require.NoError(b, err)
	iv := make([]byte, ctrBlockSize)
	src := make([]byte, n)
	dst := make([]byte, n)
	b.ReportAllocs()
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = ctr.xorKeyStream(iv, dst, src)
	}
}

func BenchmarkAES128CTRAlloc(b *testing.B) { benchmarkAESCTR(b, 16, 0) }

func BenchmarkAES256CTRAlloc(b *testing.B) { benchmarkAESCTR(b, 32, 0) }

// BenchmarkAES128CTR160 is a 20 ms G.711 payload.
func BenchmarkAES128CTR160(b *testing.B) { benchmarkAESCTR(b, 16, 160) }

func BenchmarkAES128CTR1200(b *testing.B) { benchmarkAESCTR(b, 16, 1200) }

func TestXorBytesCTR(t *testing.T) {
	for keysize := 16; keysize <= 32; keysize += 8 {
		key := make([]byte, keysize)
		_, err := testRand.Read(key)
		require.NoError(t, err)

		block, err := aes.NewCipher(key)
		require.NoError(t, err)

		for name, ctr := range ctrPaths(t, key) {
			iv := make([]byte, block.BlockSize())
			for i := range 1500 {
				src := make([]byte, i)
				dst := make([]byte, i)
				reference := make([]byte, i)
				_, err = testRand.Read(iv)
				require.NoError(t, err)

				_, err = testRand.Read(src)
				require.NoError(t, err)

				assert.NoError(t, ctr.xorKeyStream(iv, dst, src))
				xorBytesCTRReference(block, iv, reference, src)
				require.Equal(t, reference, dst, "%s, key %d bytes, %d bytes", name, keysize, i)

				// test overlap
				assert.NoError(t, ctr.xorKeyStream(iv, dst, dst))
				xorBytesCTRReference(block, iv, reference, reference)
				require.Equal(t, reference, dst, "%s in place, key %d bytes, %d bytes", name, keysize, i)
			}
		}
	}
}

// TestXorBytesCTRCarry checks the counter's carry out of its low 64 bits
// and its wrap at 2^128 against crypto/cipher, on every path.
func TestXorBytesCTRCarry(t *testing.T) {
	key := make([]byte, 16)
	_, err := testRand.Read(key)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)

	src := make([]byte, 20*ctrBlockSize+5)
	_, err = testRand.Read(src)
	require.NoError(t, err)

	for name, ctr := range ctrPaths(t, key) {
		for _, start := range [][2]uint64{
			{0x0123456789abcdef, ^uint64(0) - 3}, // low half carries into the high half
			{^uint64(0), ^uint64(0) - 9},         // the whole counter wraps to 0
			{0, 0},
		} {
			iv := make([]byte, ctrBlockSize)
			binary.BigEndian.PutUint64(iv[:8], start[0])
			binary.BigEndian.PutUint64(iv[8:], start[1])
			for _, n := range []int{ctrBlockSize, 9 * ctrBlockSize, len(src)} {
				dst := make([]byte, n)
				reference := make([]byte, n)
				require.NoError(t, ctr.xorKeyStream(iv, dst, src[:n]))
				xorBytesCTRReference(block, iv, reference, src[:n])
				require.Equal(t, reference, dst, "%s, iv %x, %d bytes", name, iv, n)
			}
		}
	}
}

// TestXorBytesCTRShortDst: a dst shorter than src gets len(dst) bytes and
// nothing is written past it.
func TestXorBytesCTRShortDst(t *testing.T) {
	key := make([]byte, 16)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	iv := make([]byte, ctrBlockSize)
	src := bytes.Repeat([]byte{0x5a}, 100)
	reference := make([]byte, 37)
	xorBytesCTRReference(block, iv, reference, src[:37])
	for name, ctr := range ctrPaths(t, key) {
		buf := bytes.Repeat([]byte{0xee}, 64)
		require.NoError(t, ctr.xorKeyStream(iv, buf[:37], src))
		require.Equal(t, reference, buf[:37], name)
		require.Equal(t, bytes.Repeat([]byte{0xee}, 64-37), buf[37:], name)
	}
}

// TestExpandKey checks the assembly path's key schedule against FIPS-197
// Appendix A's expansions (last round key of each key size).
func TestExpandKey(t *testing.T) {
	for _, tc := range []struct {
		key, last string
		rounds    int
	}{
		{"2b7e151628aed2a6abf7158809cf4f3c", "d014f9a8c9ee2589e13f0cc8b6630ca6", 10},
		{"8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "e98ba06f448c773c8ecc720401002202", 12},
		{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "fe4890d1e6188d0b046df344706c631e", 14},
	} {
		key := mustHex(t, tc.key)
		var w [4 * 60]byte
		require.Equal(t, tc.rounds, expandKey(key, &w))
		require.Equal(t, key, w[:len(key)])
		require.Equal(t, mustHex(t, tc.last), w[16*tc.rounds:16*tc.rounds+16], "key %d bytes", len(key))
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			default:
				v |= byte(c-'a') + 10
			}
		}
		b[i] = v
	}

	return b
}

func TestXorBytesCTRZeroAllocs(t *testing.T) {
	key := make([]byte, 16)
	iv := make([]byte, ctrBlockSize)
	buf := make([]byte, 1200+7)
	for name, ctr := range ctrPaths(t, key) {
		allocs := testing.AllocsPerRun(100, func() {
			_ = ctr.xorKeyStream(iv, buf, buf)
		})
		require.Zero(t, allocs, name)
	}
}

func TestXorBytesCTRInvalidIvLength(t *testing.T) {
	key := make([]byte, 16)
	ctr, err := newAESCTR(key)
	require.NoError(t, err)

	src := make([]byte, 1024)
	dst := make([]byte, 1024)

	test := func(iv []byte) {
		assert.ErrorIs(t, ctr.xorKeyStream(iv, dst, src), errBadIVLength)
	}

	test(make([]byte, ctrBlockSize-1))
	test(make([]byte, ctrBlockSize+1))
}
