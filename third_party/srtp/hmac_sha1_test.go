// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package srtp

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHMACSHA1MatchesCryptoHMAC(t *testing.T) {
	if !sha1AsmSupported {
		t.Skip("no SHA-1 assembly here: crypto/hmac is used")
	}
	rng := rand.New(rand.NewSource(1)) //nolint:gosec
	data := make([]byte, 400)
	rng.Read(data)
	for _, keyLen := range []int{0, 1, 20, 63, 64, 65, 100} {
		key := data[300 : 300+keyLen]
		mac := newHMACSHA1(key)
		require.NotNil(t, mac)
		ref := hmac.New(sha1.New, key)
		for msgLen := range 300 {
			for _, tailLen := range []int{0, 1, 4, hmacSHA1MaxTail} {
				msg, tail := data[:msgLen], data[msgLen:msgLen+tailLen]
				ref.Reset()
				ref.Write(msg)
				ref.Write(tail)
				want := ref.Sum(nil)
				var got [sha1.Size]byte
				mac.sum(&got, msg, tail)
				require.Equal(t, want, got[:], "key %d, message %d, tail %d", keyLen, msgLen, tailLen)
			}
		}
	}
}

// TestHMACSHA1RFC2202 checks test cases 1, 2 and 6 of RFC 2202 §3.
func TestHMACSHA1RFC2202(t *testing.T) {
	if !sha1AsmSupported {
		t.Skip("no SHA-1 assembly here: crypto/hmac is used")
	}
	key6 := make([]byte, 80)
	for i := range key6 {
		key6[i] = 0xaa
	}
	for _, tc := range []struct {
		key       []byte
		msg, want string
	}{
		{[]byte{
			0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
			0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
		}, "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"},
		{[]byte("Jefe"), "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
		{key6, "Test Using Larger Than Block-Size Key - Hash Key First", "aa4ae5e15272d00e95705637ce8a3b55ed402112"},
	} {
		var got [sha1.Size]byte
		// The message split between msg and tail as SRTP splits it.
		msg := []byte(tc.msg)
		newHMACSHA1(tc.key).sum(&got, msg[:len(msg)-4], msg[len(msg)-4:])
		require.Equal(t, mustHex(t, tc.want), got[:], tc.msg)
	}
}

func TestHMACSHA1ZeroAllocs(t *testing.T) {
	if !sha1AsmSupported {
		t.Skip("no SHA-1 assembly here: crypto/hmac is used")
	}
	mac := newHMACSHA1(make([]byte, 20))
	msg := make([]byte, 172)
	var roc [4]byte
	var out [sha1.Size]byte
	require.Zero(t, testing.AllocsPerRun(100, func() { mac.sum(&out, msg, roc[:]) }))
}

func BenchmarkHMACSHA1(b *testing.B) {
	key := make([]byte, 20)
	msg := make([]byte, 172) // RTP header and a 20 ms G.711 payload
	var roc [4]byte
	b.Run("hmacSHA1", func(b *testing.B) {
		if !sha1AsmSupported {
			b.Skip("no SHA-1 assembly here")
		}
		mac := newHMACSHA1(key)
		var out [sha1.Size]byte
		b.ReportAllocs()
		for range b.N {
			mac.sum(&out, msg, roc[:])
		}
	})
	b.Run("crypto/hmac", func(b *testing.B) {
		mac := hmac.New(sha1.New, key)
		var out [sha1.Size]byte
		b.ReportAllocs()
		for range b.N {
			mac.Reset()
			mac.Write(msg)
			mac.Write(roc[:])
			mac.Sum(out[:0])
		}
	})
}
