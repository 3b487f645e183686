// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package srtp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec
	"encoding/binary"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// refAESCM is AES_CM_128/256_HMAC_SHA1_80 written from RFC 3711 with
// crypto/cipher's CTR and crypto/hmac only, sharing no code with the
// package: the check of the Context's output, whichever counter-mode and
// HMAC paths it takes.
type refAESCM struct {
	rtpKey, rtpSalt, rtpAuth    []byte
	rtcpKey, rtcpSalt, rtcpAuth []byte
}

// refKDF is the AES-CM PRF of RFC 3711 §4.3.1 and §4.3.3 with kdr 0:
// x = label at byte 7 of the salt, the keystream of AES-CM under the
// master key from IV x·2^16.
func refKDF(t *testing.T, masterKey, masterSalt []byte, label byte, n int) []byte {
	t.Helper()
	block, err := aes.NewCipher(masterKey)
	require.NoError(t, err)
	iv := make([]byte, 16)
	copy(iv, masterSalt)
	iv[7] ^= label
	out := make([]byte, n)
	cipher.NewCTR(block, iv).XORKeyStream(out, out)

	return out
}

func newRefAESCM(t *testing.T, masterKey, masterSalt []byte) *refAESCM {
	t.Helper()

	return &refAESCM{
		rtpKey:   refKDF(t, masterKey, masterSalt, 0x00, len(masterKey)),
		rtpAuth:  refKDF(t, masterKey, masterSalt, 0x01, 20),
		rtpSalt:  refKDF(t, masterKey, masterSalt, 0x02, 14),
		rtcpKey:  refKDF(t, masterKey, masterSalt, 0x03, len(masterKey)),
		rtcpAuth: refKDF(t, masterKey, masterSalt, 0x04, 20),
		rtcpSalt: refKDF(t, masterKey, masterSalt, 0x05, 14),
	}
}

// refCTR XORs data with AES-CM's keystream for (ssrc, index) (RFC 3711
// §4.1.1: IV = k_s·2^16 XOR SSRC·2^64 XOR i·2^16).
func refCTR(t *testing.T, key, salt []byte, ssrc uint32, index uint64, data []byte) {
	t.Helper()
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	iv := make([]byte, 16)
	copy(iv, salt)
	var x [16]byte
	binary.BigEndian.PutUint32(x[4:], ssrc)
	binary.BigEndian.PutUint64(x[8:], index<<16) // i·2^16: bytes 8..13
	for i := range iv {
		iv[i] ^= x[i]
	}
	cipher.NewCTR(block, iv).XORKeyStream(data, data)
}

func refHMAC(key []byte, parts ...[]byte) []byte {
	mac := hmac.New(sha1.New, key)
	for _, p := range parts {
		mac.Write(p)
	}

	return mac.Sum(nil)[:10]
}

// rtp protects a plain RTP packet (12-byte header, no CSRC or extension)
// with rollover counter roc.
func (r *refAESCM) rtp(t *testing.T, plain []byte, roc uint32) []byte {
	t.Helper()
	out := append([]byte{}, plain...)
	seq := binary.BigEndian.Uint16(out[2:])
	ssrc := binary.BigEndian.Uint32(out[8:])
	refCTR(t, r.rtpKey, r.rtpSalt, ssrc, uint64(roc)<<16|uint64(seq), out[12:])
	var rocBytes [4]byte
	binary.BigEndian.PutUint32(rocBytes[:], roc)

	return append(out, refHMAC(r.rtpAuth, out, rocBytes[:])...)
}

// rtcp protects a plain RTCP packet with SRTCP index index (encrypted).
func (r *refAESCM) rtcp(t *testing.T, plain []byte, index uint32) []byte {
	t.Helper()
	out := append([]byte{}, plain...)
	refCTR(t, r.rtcpKey, r.rtcpSalt, binary.BigEndian.Uint32(out[4:]), uint64(index), out[8:])
	out = binary.BigEndian.AppendUint32(out, 1<<31|index)

	return append(out, refHMAC(r.rtcpAuth, out)...)
}

// usePortablePaths makes a context's AES-CM cipher use the batched
// cipher.Block counter mode and crypto/hmac, the paths taken where there
// is no assembly.
func usePortablePaths(t *testing.T, c *Context, ref *refAESCM) {
	t.Helper()
	s, ok := c.cipher.(*srtpCipherAesCmHmacSha1)
	require.True(t, ok)
	s.srtpCTR.rounds, s.srtcpCTR.rounds = 0, 0
	s.srtpAuth, s.srtcpAuth = nil, nil
	s.srtpSessionAuth = hmac.New(sha1.New, ref.rtpAuth)
	s.srtcpSessionAuth = hmac.New(sha1.New, ref.rtcpAuth)
}

// TestAESCMAgainstReference encrypts and decrypts RTP across a rollover
// of the sequence number, and RTCP, with both key sizes, and compares
// every packet with the reference; it also checks replay and tag
// refusals on the decrypting side.
func TestAESCMAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewSource(3)) //nolint:gosec
	for _, profile := range []ProtectionProfile{
		ProtectionProfileAes128CmHmacSha1_80, ProtectionProfileAes256CmHmacSha1_80,
	} {
		keyLen, err := profile.KeyLen()
		require.NoError(t, err)
		masterKey, masterSalt := make([]byte, keyLen), make([]byte, 14)
		rng.Read(masterKey)
		rng.Read(masterSalt)
		ref := newRefAESCM(t, masterKey, masterSalt)
		for _, portable := range []bool{false, true} {
			enc, err := CreateContext(masterKey, masterSalt, profile)
			require.NoError(t, err)
			dec, err := CreateContext(masterKey, masterSalt, profile, SRTPReplayProtection(64), SRTCPReplayProtection(64))
			require.NoError(t, err)
			if portable {
				usePortablePaths(t, enc, ref)
				usePortablePaths(t, dec, ref)
			}
			name := profile.String()
			if portable {
				name += " portable"
			}

			const ssrc = 0x0badcafe
			seq, roc := uint16(65530), uint32(0)
			for i := range 12 {
				size := []int{0, 1, 15, 16, 17, 160, 1200}[i%7]
				plain := make([]byte, 12+size)
				plain[0] = 0x80
				binary.BigEndian.PutUint16(plain[2:], seq)
				binary.BigEndian.PutUint32(plain[8:], ssrc)
				rng.Read(plain[12:])
				want := ref.rtp(t, plain, roc)

				got, err := enc.EncryptRTP(nil, plain, nil)
				require.NoError(t, err)
				require.Equal(t, want, got, "%s: RTP seq %d roc %d, %d bytes", name, seq, roc, size)

				back, err := dec.DecryptRTP(nil, want, nil)
				require.NoError(t, err)
				require.Equal(t, plain, back, "%s: RTP seq %d", name, seq)
				_, err = dec.DecryptRTP(nil, want, nil)
				require.Error(t, err, "%s: replay of seq %d accepted", name, seq)

				seq++
				if seq == 0 {
					roc++
				}
			}
			gotROC, ok := dec.ROC(ssrc)
			require.True(t, ok)
			require.Equal(t, uint32(1), gotROC, name)

			// A flipped bit anywhere fails the tag.
			plain := make([]byte, 12+160)
			plain[0] = 0x80
			binary.BigEndian.PutUint16(plain[2:], seq)
			binary.BigEndian.PutUint32(plain[8:], ssrc)
			forged := ref.rtp(t, plain, roc)
			forged[40] ^= 1
			_, err = dec.DecryptRTP(nil, forged, nil)
			require.ErrorIs(t, err, ErrFailedToVerifyAuthTag, name)

			for index := uint32(1); index <= 3; index++ { // the first SRTCP index pion sends is 1
				rtcpPlain := make([]byte, 8+20)
				rtcpPlain[0], rtcpPlain[1] = 0x80, 200
				binary.BigEndian.PutUint32(rtcpPlain[4:], ssrc)
				rng.Read(rtcpPlain[8:])
				want := ref.rtcp(t, rtcpPlain, index)

				got, err := enc.EncryptRTCP(nil, rtcpPlain, nil)
				require.NoError(t, err)
				require.Equal(t, want, got, "%s: RTCP index %d", name, index)

				back, err := dec.DecryptRTCP(nil, want, nil)
				require.NoError(t, err)
				require.Equal(t, rtcpPlain, back, "%s: RTCP index %d", name, index)
			}
		}
	}
}

// TestSSRCStateCacheInterleaved: with the last-SSRC cache in front of the
// state maps, two SSRCs interleaved keep their own rollover counters and
// replay windows, and a forged packet of a third SSRC leaves neither a map
// entry nor the cache behind.
func TestSSRCStateCacheInterleaved(t *testing.T) {
	masterKey, masterSalt := make([]byte, 16), make([]byte, 14)
	for i := range masterKey {
		masterKey[i] = byte(i)
	}
	ref := newRefAESCM(t, masterKey, masterSalt)
	dec, err := CreateContext(masterKey, masterSalt, ProtectionProfileAes128CmHmacSha1_80, SRTPReplayProtection(64))
	require.NoError(t, err)

	packet := func(ssrc uint32, seq uint16, roc uint32) ([]byte, []byte) {
		plain := make([]byte, 12+40)
		plain[0] = 0x80
		binary.BigEndian.PutUint16(plain[2:], seq)
		binary.BigEndian.PutUint32(plain[8:], ssrc)
		plain[20] = byte(seq)

		return plain, ref.rtp(t, plain, roc)
	}
	// SSRC 1 starts just before its sequence number wraps, SSRC 2 far
	// from it: after 8 packets each, ROC 1 and ROC 0.
	seqs := map[uint32]uint16{1: 65532, 2: 1000}
	rocs := map[uint32]uint32{1: 0, 2: 0}
	for range 8 {
		for _, ssrc := range []uint32{1, 2} {
			plain, wire := packet(ssrc, seqs[ssrc], rocs[ssrc])
			got, err := dec.DecryptRTP(nil, wire, nil)
			require.NoError(t, err, "ssrc %d seq %d", ssrc, seqs[ssrc])
			require.Equal(t, plain, got)
			_, err = dec.DecryptRTP(nil, wire, nil)
			require.Error(t, err, "replay of ssrc %d seq %d", ssrc, seqs[ssrc])
			seqs[ssrc]++
			if seqs[ssrc] == 0 {
				rocs[ssrc]++
			}
		}
	}
	for ssrc, want := range map[uint32]uint32{1: 1, 2: 0} {
		roc, ok := dec.ROC(ssrc)
		require.True(t, ok)
		require.Equal(t, want, roc, "ssrc %d", ssrc)
	}

	_, forged := packet(3, 7, 0)
	forged[len(forged)-1] ^= 1
	_, err = dec.DecryptRTP(nil, forged, nil)
	require.ErrorIs(t, err, ErrFailedToVerifyAuthTag)
	require.Len(t, dec.srtpSSRCStates, 2)
	require.NotNil(t, dec.lastSRTPState)
	require.NotEqual(t, uint32(3), dec.lastSRTPState.ssrc)
	_, ok := dec.ROC(3)
	require.False(t, ok)
}
