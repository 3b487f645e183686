package sbc

import (
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	pionsrtp "github.com/pion/srtp/v3"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/srtp"
)

// flow sends RTP tagged tag from p to dst until to receives one (bounded:
// up to 40 rounds of 2 packets, 250 ms apart: the SBC may not have taken
// the SDP that lets them through yet), and returns the header to received.
func flow(t *testing.T, p *phone, dst netip.AddrPort, to *phone, tag string) rtp.Header {
	t.Helper()
	to.wait = 250 * time.Millisecond
	defer func() { to.wait = 0 }()
	for range 40 {
		p.send(dst, 2, tag)
		if _, h, err := to.recvPkt(tag); err == nil {
			return h
		}
	}
	t.Fatalf("%q never arrived", tag)
	return rtp.Header{}
}

// TestMediaEarlyDialogs: the backend (a forking proxy, played by a raw
// peer) answers the caller's SDES offer from two early dialogs with
// different media addresses and SSRCs, each with its own phone. The
// caller keeps one relay address and one key; the backend side's remote
// follows the dialog whose SDP came last, and the one that answers:
//
//   - 183 from x, then 200 from y with its own SDP: the 200's media is
//     relayed (and x's no longer);
//   - 183 from x, 183 from y, then a 200 from x without SDP (its answer
//     was in its 183, as with 100rel): media follows x again, not the
//     last SDP seen (y).
//
// Towards the caller, an SRTP leg, the switches between sources are
// normalised: one SSRC, increasing sequence numbers, decrypted by a
// context with replay protection (notes, pitfall 7).
func TestMediaEarlyDialogs(t *testing.T) {
	for _, tc := range []struct {
		name string
		// answerTag answers with 200; sdp200 says whether the 200 has SDP;
		// y183 whether y sends a 183 with SDP first.
		answerTag      string
		sdp200, y183   bool
		wantAnswerFrom string
	}{
		{name: "183x_200y", answerTag: "y", sdp200: true, wantAnswerFrom: "y"},
		{name: "183x_183y_200x_without_sdp", answerTag: "x", y183: true, wantAnswerFrom: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, peer := rawEnv(t, envOpts{})
			caller := newPhone(t, callerIP)
			phones := map[string]*phone{"x": newPhone(t, backendIP), "y": newPhone(t, backendIP)}
			phones["x"].ssrc, phones["y"].ssrc = 0x1111, 0x2222
			ours, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
			if err != nil {
				t.Fatal(err)
			}
			caller.enc = contextOf(t, ours)
			call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: caller.sdesSDP(ours)})
			if err != nil {
				t.Fatal(err)
			}
			inv := peer.wait(e.ctx, sip.INVITE, nil)
			toInt := remote(t, inv.Body())

			peer.respond(inv, 183, "x", phones["x"].sdp())
			r183, err := call.WaitStatus(e.ctx, 183)
			if err != nil {
				t.Fatal(err)
			}
			sd, err := srtp.ParseSDP(r183.Body())
			if err != nil {
				t.Fatal(err)
			}
			rm, err := srtp.Remote(sd, 0)
			if err != nil || len(rm.Cryptos) != 1 {
				t.Fatalf("183 to the caller: %v\n%s", err, r183.Body())
			}
			toExt := rm.RTP
			k := rm.Cryptos[0].Keys[0]
			if caller.dec, err = pionsrtp.CreateContext(k.Key, k.Salt, rm.Cryptos[0].Suite.Profile(), pionsrtp.SRTPReplayProtection(64)); err != nil {
				t.Fatal(err)
			}
			var got []rtp.Header
			got = append(got, flow(t, phones["x"], toInt, caller, "early-x"))
			if tc.y183 {
				peer.respond(inv, 183, "y", phones["y"].sdp())
				got = append(got, flow(t, phones["y"], toInt, caller, "early-y"))
			}
			var body []byte
			if tc.sdp200 {
				body = phones[tc.answerTag].sdp()
			}
			peer.respond(inv, 200, tc.answerTag, body)
			if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
				t.Fatalf("caller: %v %v", res, err)
			}
			peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == tc.answerTag })

			// The answering dialog's media reaches the caller, and the
			// caller's reaches it.
			ans := phones[tc.wantAnswerFrom]
			got = append(got, flow(t, ans, toInt, caller, "answer"))
			flow(t, caller, toExt, ans, "to-answer")
			for i, h := range got {
				if h.SSRC != got[0].SSRC {
					t.Errorf("packet %d to the caller has SSRC %#x, the first %#x: the source switch is not normalised", i, h.SSRC, got[0].SSRC)
				}
				if i > 0 && int16(h.SequenceNumber-got[i-1].SequenceNumber) <= 0 {
					t.Errorf("sequence to the caller went from %d to %d", got[i-1].SequenceNumber, h.SequenceNumber)
				}
			}
			go call.Bye(e.ctx)
			bye := peer.wait(e.ctx, sip.BYE, nil)
			peer.respond(bye, 200, "", nil)
		})
	}
}

// TestMediaSourceSwitchNormalised: mid-call the plain backend switches
// source (music on hold, a transfer: new SSRC, sequence numbers starting
// low again) and back. The SDES caller sees one SSRC with increasing
// sequence numbers and timestamps throughout, all decrypted by a context
// with replay protection (the SBC's egress normalisation; notes, pitfall
// 7): without it, the new source's packets would reach the caller under
// another SSRC.
func TestMediaSourceSwitchNormalised(t *testing.T) {
	caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	ours, err := srtp.GenerateCrypto(1, srtp.AEAD_AES_128_GCM)
	if err != nil {
		t.Fatal(err)
	}
	caller.enc = contextOf(t, ours)
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdesSDP(ours)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := srtp.ParseSDP(res.Body())
	rm, err := srtp.Remote(sd, 0)
	if err != nil || len(rm.Cryptos) != 1 {
		t.Fatalf("answer: %v", err)
	}
	k := rm.Cryptos[0].Keys[0]
	if caller.dec, err = pionsrtp.CreateContext(k.Key, k.Salt, rm.Cryptos[0].Suite.Profile(), pionsrtp.SRTPReplayProtection(64)); err != nil {
		t.Fatal(err)
	}
	toInt := remote(t, ci.Invite)
	var got []rtp.Header
	backend.ssrc, backend.seq = 0xaaaa, 30000
	got = append(got, flow(t, backend, toInt, caller, "talk"))
	backend.ssrc, backend.seq = 0xbbbb, 0 // music on hold: another source, sequence from 1
	got = append(got, flow(t, backend, toInt, caller, "moh"))
	backend.ssrc, backend.seq = 0xaaaa, 30100 // back to the first source
	got = append(got, flow(t, backend, toInt, caller, "talk-again"))
	for i, h := range got {
		if h.SSRC != got[0].SSRC {
			t.Errorf("packet %d has SSRC %#x, the first %#x", i, h.SSRC, got[0].SSRC)
		}
		if i > 0 && (int16(h.SequenceNumber-got[i-1].SequenceNumber) <= 0 || int32(h.Timestamp-got[i-1].Timestamp) <= 0) {
			t.Errorf("packet %d: sequence %d → %d, timestamp %d → %d", i, got[i-1].SequenceNumber, h.SequenceNumber, got[i-1].Timestamp, h.Timestamp)
		}
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}
