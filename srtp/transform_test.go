package srtp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtp"
	pion "github.com/pion/srtp/v3"
)

// rtpPacket builds a plain RTP packet (PT 0, 160 bytes of payload).
func rtpPacket(ssrc uint32, seq uint16, ts uint32, payloadLen int) []byte {
	p := make([]byte, 12+payloadLen, 12+payloadLen+testTrailer)
	p[0] = 0x80
	binary.BigEndian.PutUint16(p[2:], seq)
	binary.BigEndian.PutUint32(p[4:], ts)
	binary.BigEndian.PutUint32(p[8:], ssrc)
	for i := range payloadLen {
		p[12+i] = byte(seq) + byte(i)
	}
	return p
}

// rtcpRR builds a plain receiver report without report blocks.
func rtcpRR(ssrc uint32) []byte {
	p := make([]byte, 8, 8+testTrailer)
	p[0], p[1] = 0x80, 201
	binary.BigEndian.PutUint16(p[2:], 1)
	binary.BigEndian.PutUint32(p[4:], ssrc)
	return p
}

// pair returns a transform for our side and a phone's encrypt/decrypt
// contexts speaking the other end of it.
func pair(t testing.TB, suite Suite) (*SRTP, *pion.Context, *pion.Context, Crypto, Crypto) {
	t.Helper()
	ours, err := GenerateCrypto(1, suite)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := GenerateCrypto(1, suite)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewSDES(ours, theirs)
	if err != nil {
		t.Fatal(err)
	}
	return tr, phoneCtx(t, theirs, false), phoneCtx(t, ours, true), ours, theirs
}

func phoneCtx(t testing.TB, c Crypto, decrypt bool) *pion.Context {
	t.Helper()
	k, err := KeysFromCrypto(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := newContext(k, decrypt)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestSRTPTransformSuites(t *testing.T) {
	for _, suite := range DefaultSuites {
		t.Run(suite.String(), func(t *testing.T) {
			tr, phoneEnc, phoneDec, _, _ := pair(t, suite)
			for seq := uint16(65530); seq != 5; seq++ { // across a wrap
				plain := rtpPacket(0xabc, seq, uint32(seq)*160, 160)
				wire, err := phoneEnc.EncryptRTP(nil, plain, nil)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(wire), len(wire)+testTrailer)
				copy(buf, wire)
				got, err := tr.InboundRTP(buf[:0], buf) // in place
				if err != nil {
					t.Fatalf("seq %d: %v", seq, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("seq %d: decrypted differs", seq)
				}
				out, err := tr.OutboundRTP(got[:0], got) // in place again
				if err != nil {
					t.Fatal(err)
				}
				back, err := phoneDec.DecryptRTP(nil, out, nil)
				if err != nil || !bytes.Equal(back, plain) {
					t.Fatalf("seq %d: phone decrypt: %v", seq, err)
				}
			}
			if roc, ok := tr.ROC(false, 0xabc); !ok || roc != 1 {
				t.Fatalf("inbound ROC %d %v, want 1", roc, ok)
			}
			// RTCP both ways.
			wire, err := phoneEnc.EncryptRTCP(nil, rtcpRR(0xabc), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tr.InboundRTCP(nil, wire)
			if err != nil || !bytes.Equal(got, rtcpRR(0xabc)) {
				t.Fatalf("rtcp in: %v", err)
			}
			out, err := tr.OutboundRTCP(nil, got)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := phoneDec.DecryptRTCP(nil, out, nil); err != nil || !bytes.Equal(back, rtcpRR(0xabc)) {
				t.Fatalf("rtcp out: %v", err)
			}
		})
	}
}

func TestSRTPForgedAndReplayed(t *testing.T) {
	tr, phoneEnc, _, _, _ := pair(t, AES_CM_128_HMAC_SHA1_80)
	good, err := phoneEnc.EncryptRTP(nil, rtpPacket(1, 100, 0, 160), nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(good)
	binary.BigEndian.PutUint32(forged[8:], 0xdead) // another SSRC, tag no longer matches
	if _, err := tr.InboundRTP(nil, forged); !isAuthFailure(err) {
		t.Fatalf("forged: %v", err)
	}
	if _, ok := tr.ROC(false, 0xdead); ok {
		t.Fatal("a forged packet created SSRC state")
	}
	flipped := bytes.Clone(good)
	flipped[20] ^= 1
	if _, err := tr.InboundRTP(nil, flipped); !isAuthFailure(err) || isReplay(err) {
		t.Fatalf("flipped: %v", err)
	}
	if _, err := tr.InboundRTP(nil, bytes.Clone(good)); err != nil {
		t.Fatal(err)
	}
	_, err = tr.InboundRTP(nil, bytes.Clone(good))
	if !isReplay(err) || isAuthFailure(err) {
		t.Fatalf("replay: %v", err)
	}
	// Far too old: outside the window of 64.
	for seq := uint16(101); seq < 200; seq++ {
		w, _ := phoneEnc.EncryptRTP(nil, rtpPacket(1, seq, 0, 10), nil)
		if _, err := tr.InboundRTP(nil, w); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := phoneEnc.EncryptRTP(nil, rtpPacket(1, 50, 0, 10), nil)
	if _, err := tr.InboundRTP(nil, old); !isReplay(err) {
		t.Fatalf("old: %v", err)
	}
}

// TestIsReplayMatchesPion pins the way isReplay recognises pion's replay
// error; if pion changes it, this fails rather than the counters lying.
func TestIsReplayMatchesPion(t *testing.T) {
	k := SRTPKeys{Profile: pion.ProtectionProfileAeadAes128Gcm, Key: make([]byte, 16), Salt: make([]byte, 12)}
	enc, _ := newContext(k, false)
	dec, _ := newContext(k, true)
	w, _ := enc.EncryptRTP(nil, rtpPacket(5, 1, 0, 10), nil)
	if _, err := dec.DecryptRTP(nil, w, nil); err != nil {
		t.Fatal(err)
	}
	_, err := dec.DecryptRTP(nil, w, nil)
	if err == nil || !isReplay(err) {
		t.Fatalf("pion replay error not recognised: %v", err)
	}
	wr, _ := enc.EncryptRTCP(nil, rtcpRR(5), nil)
	_, _ = dec.DecryptRTCP(nil, wr, nil)
	if _, err := dec.DecryptRTCP(nil, wr, nil); !isReplay(err) {
		t.Fatalf("pion SRTCP replay error not recognised: %v", err)
	}
}

func TestSRTPRekeyKeepsROC(t *testing.T) {
	tr, phoneEnc, _, ours, theirs := pair(t, AEAD_AES_128_GCM)
	// The phone's stream wraps once before the re-INVITE.
	for seq := uint16(65500); seq != 10; seq++ {
		w, _ := phoneEnc.EncryptRTP(nil, rtpPacket(7, seq, 0, 20), nil)
		if _, err := tr.InboundRTP(nil, w); err != nil {
			t.Fatal(err)
		}
		p := rtpPacket(9, seq, 0, 20)
		if _, err := tr.OutboundRTP(nil, p); err != nil {
			t.Fatal(err)
		}
	}
	// Rekey with the same keys: nothing changes, the replay window stays.
	if err := tr.RekeySDES(ours, theirs); err != nil {
		t.Fatal(err)
	}
	w9, _ := phoneEnc.EncryptRTP(nil, rtpPacket(7, 9, 0, 20), nil) // already seen
	if _, err := tr.InboundRTP(nil, w9); !isReplay(err) {
		t.Fatalf("same keys lost the replay window: %v", err)
	}

	// New keys both ways; the phone rekeys too and keeps its ROC (1).
	ours2, _ := ours.Answer()
	theirs2, _ := theirs.Answer()
	if err := tr.RekeySDES(ours2, theirs2); err != nil {
		t.Fatal(err)
	}
	phoneEnc2 := phoneCtx(t, theirs2, false)
	phoneEnc2.SetROC(7, 1)
	phoneDec2 := phoneCtx(t, ours2, true)
	phoneDec2.SetROC(9, 1)
	for seq := uint16(10); seq < 20; seq++ {
		w, _ := phoneEnc2.EncryptRTP(nil, rtpPacket(7, seq, 0, 20), nil)
		if _, err := tr.InboundRTP(nil, w); err != nil {
			t.Fatalf("inbound after rekey, seq %d: %v", seq, err)
		}
		out, err := tr.OutboundRTP(nil, rtpPacket(9, seq, 0, 20))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := phoneDec2.DecryptRTP(nil, out, nil); err != nil {
			t.Fatalf("outbound after rekey, seq %d: %v", seq, err)
		}
	}
	if roc, _ := tr.ROC(true, 9); roc != 1 {
		t.Fatalf("outbound ROC %d after rekey, want 1", roc)
	}
	// A rekey with a bad key fails and changes nothing.
	bad, _ := KeysFromCrypto(ours2)
	bad.Key = bad.Key[:5]
	good, _ := KeysFromCrypto(theirs2)
	if err := tr.Rekey(good, bad); err == nil {
		t.Fatal("bad remote key accepted")
	}
	if err := tr.Rekey(bad, good); err == nil {
		t.Fatal("bad local key accepted")
	}
	w, _ := phoneEnc2.EncryptRTP(nil, rtpPacket(7, 20, 0, 20), nil)
	if _, err := tr.InboundRTP(nil, w); err != nil {
		t.Fatalf("a failed rekey changed the keys: %v", err)
	}
}

func TestSRTPSessionParamsAndMKI(t *testing.T) {
	k30 := keyB64(30, true)
	lines := []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " UNENCRYPTED_SRTP UNENCRYPTED_SRTCP",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " UNAUTHENTICATED_SRTP",
		"1 AES_CM_128_HMAC_SHA1_32 inline:" + k30 + "|2^31|1:2;inline:" + keyB64(30, false) + "|2^31|2:2",
	}
	for _, l := range lines {
		c, err := ParseCrypto(l)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := NewSDES(c, c)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		plain := rtpPacket(3, 1, 0, 40)
		w, err := tr.OutboundRTP(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if c.UnencryptedSRTP && !bytes.Equal(w[12:52], plain[12:]) {
			t.Fatal("UNENCRYPTED_SRTP encrypted the payload")
		}
		if c.UnauthenticatedSRTP && len(w) != len(plain) {
			t.Fatalf("UNAUTHENTICATED_SRTP added a tag: %d", len(w)-len(plain))
		}
		if len(c.Keys) > 1 && !bytes.Equal(w[len(plain):len(plain)+2], []byte{0, 1}) {
			t.Fatalf("MKI not in packet: % x", w[len(plain):])
		}
		got, err := tr.InboundRTP(nil, w)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%s: %v", l, err)
		}
	}
}

func TestNotReadyAndPlain(t *testing.T) {
	var tr Transform = NotReady{}
	for _, f := range []func([]byte, []byte) ([]byte, error){tr.InboundRTP, tr.InboundRTCP, tr.OutboundRTP, tr.OutboundRTCP} {
		if _, err := f(nil, []byte{0x80}); !errors.Is(err, ErrNotReady) {
			t.Fatal(err)
		}
	}
	tr = Plain{}
	p := []byte{0x80, 0}
	for _, f := range []func([]byte, []byte) ([]byte, error){tr.InboundRTP, tr.InboundRTCP, tr.OutboundRTP, tr.OutboundRTCP} {
		if got, err := f(nil, p); err != nil || &got[0] != &p[0] {
			t.Fatal("plain copies")
		}
	}
	if _, err := KeysFromCrypto(Crypto{}); !errors.Is(err, ErrMalformedCrypto) {
		t.Fatal(err)
	}
}

// BenchmarkSRTPTransform measures decrypt+encrypt in place, the relay's
// per-packet crypto, without sockets.
func BenchmarkSRTPTransform(b *testing.B) {
	for _, suite := range []Suite{AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM} {
		b.Run(suite.String(), func(b *testing.B) {
			tr, phoneEnc, _, _, _ := pair(b, suite)
			wires := make([][]byte, 1<<12)
			var hdr rtp.Header
			for i := range wires {
				w, err := phoneEnc.EncryptRTP(nil, rtpPacket(1, uint16(i), 0, 160), &hdr)
				if err != nil {
					b.Fatal(err)
				}
				wires[i] = w
			}
			buf := make([]byte, 2048+testTrailer)
			// cpu-ns/op: the loop's own thread CPU time per op, timed
			// sections only (on a shared machine ns/op also counts the
			// time the loop waited for a CPU).
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu time.Duration
			start, cpuOK := threadCPU()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i > 0 && i%len(wires) == 0 {
					now, _ := threadCPU()
					cpu += now - start
					b.StopTimer()
					tr, phoneEnc, _, _, _ = pair(b, suite) // fresh replay window
					for j := range wires {
						wires[j], _ = phoneEnc.EncryptRTP(wires[j][:0], rtpPacket(1, uint16(j), 0, 160), &hdr)
					}
					b.StartTimer()
					start, _ = threadCPU()
				}
				n := copy(buf, wires[i%len(wires)])
				p, err := tr.InboundRTP(buf[:0], buf[:n])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tr.OutboundRTP(buf[:0], p); err != nil {
					b.Fatal(err)
				}
			}
			if now, _ := threadCPU(); cpuOK {
				cpu += now - start
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// testTrailer is the room tests leave after a packet for SRTP's tag.
const testTrailer = 64

// fakeExporter stands in for a DTLS connection state: both ends of one
// handshake export the same material.
type fakeExporter struct{ fail bool }

func (f fakeExporter) ExportKeyingMaterial(label string, _ []byte, n int) ([]byte, error) {
	if f.fail || label != "EXTRACTOR-dtls_srtp" {
		return nil, errors.New("no keys")
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b, nil
}

func TestKeysFromDTLS(t *testing.T) {
	for _, p := range []pion.ProtectionProfile{pion.ProtectionProfileAes128CmHmacSha1_80, pion.ProtectionProfileAeadAes256Gcm} {
		cl, cr, err := KeysFromDTLS(fakeExporter{}, p, true)
		if err != nil {
			t.Fatal(err)
		}
		sl, sr, err := KeysFromDTLS(fakeExporter{}, p, false)
		if err != nil {
			t.Fatal(err)
		}
		if !sameKeys(cl, sr) || !sameKeys(cr, sl) || sameKeys(cl, cr) {
			t.Fatalf("%v: client and server keys do not mirror", p)
		}
		client, err := NewSRTP(cl, cr)
		if err != nil {
			t.Fatal(err)
		}
		server, _ := NewSRTP(sl, sr)
		plain := rtpPacket(1, 1, 0, 40)
		w, _ := client.OutboundRTP(nil, plain)
		if got, err := server.InboundRTP(nil, w); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%v: %v", p, err)
		}
	}
	if _, _, err := KeysFromDTLS(fakeExporter{fail: true}, pion.ProtectionProfileAeadAes128Gcm, true); err == nil {
		t.Fatal("exporter error lost")
	}
}

// TestSRTPRekeyGrace: after a rekey, packets the peer sent with its old
// key (in flight, or sent before the answer reached it) still decrypt,
// in place as the relay does it, RTP and RTCP, for every suite, with the
// old keys' replay window; once the grace is over they fail their tag.
func TestSRTPRekeyGrace(t *testing.T) {
	for _, suite := range DefaultSuites {
		t.Run(suite.String(), func(t *testing.T) {
			tr, phoneEnc, _, ours, theirs := pair(t, suite)
			in := func(w []byte, rtcp bool) ([]byte, error) {
				b := append(make([]byte, 0, len(w)+testTrailer), w...)
				if rtcp {
					return tr.InboundRTCP(b[:0], b)
				}
				return tr.InboundRTP(b[:0], b)
			}
			oldRTP := func(seq uint16) []byte {
				w, err := phoneEnc.EncryptRTP(nil, rtpPacket(7, seq, 0, 20), nil)
				if err != nil {
					t.Fatal(err)
				}
				return w
			}
			if _, err := in(oldRTP(1), false); err != nil {
				t.Fatal(err)
			}
			theirs2, _ := theirs.Answer()
			if err := tr.RekeySDES(ours, theirs2); err != nil {
				t.Fatal(err)
			}
			newEnc := phoneCtx(t, theirs2, false)
			w2, _ := newEnc.EncryptRTP(nil, rtpPacket(7, 3, 0, 20), nil)
			if _, err := in(w2, false); err != nil {
				t.Fatalf("new key: %v", err)
			}
			late := oldRTP(2) // sent before the switch, arriving after it
			out, err := in(late, false)
			if err != nil {
				t.Fatalf("old key within the grace: %v", err)
			}
			if want := rtpPacket(7, 2, 0, 20); !bytes.Equal(out, want) {
				t.Fatalf("old key within the grace decrypted to %x, want %x", out, want)
			}
			if _, err := in(late, false); err == nil {
				t.Fatal("a replay of an old-key packet accepted")
			}
			wr, _ := phoneEnc.EncryptRTCP(nil, rtcpRR(7), nil)
			if _, err := in(wr, true); err != nil {
				t.Fatalf("old-key SRTCP within the grace: %v", err)
			}
			// The grace is over: the old keys are forgotten.
			for _, d := range []*srtpDir{&tr.inRTP, &tr.inRTCP} {
				d.mu.Lock()
				d.prevUntil = 0
				d.mu.Unlock()
			}
			if _, err := in(oldRTP(4), false); !isAuthFailure(err) {
				t.Fatalf("old key after the grace: %v", err)
			}
			wr2, _ := phoneEnc.EncryptRTCP(nil, rtcpRR(7), nil)
			if _, err := in(wr2, true); !isAuthFailure(err) {
				t.Fatalf("old-key SRTCP after the grace: %v", err)
			}
			if tr.inRTP.prev != nil || tr.inRTCP.prev != nil {
				t.Fatal("the old contexts are still held after the grace")
			}
			w5, _ := newEnc.EncryptRTP(nil, rtpPacket(7, 5, 0, 20), nil)
			if _, err := in(w5, false); err != nil {
				t.Fatalf("new key after the grace: %v", err)
			}
		})
	}
}
