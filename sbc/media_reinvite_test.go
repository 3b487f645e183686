package sbc

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	pionsrtp "github.com/pion/srtp/v3"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/srtp"
)

// TestMediaReInviteNewKeysKeepROC: an SDES caller whose SRTP index has
// rolled over (ROC 1) re-INVITEs with a new key and goes on with the same
// SSRC: the SBC takes the new key with the ROC carried over (RFC 3711
// 3.3.1; notes, pitfall 6), so the packets after the re-INVITE still
// reach the backend. A new context at ROC 0 would fail their
// authentication.
func TestMediaReInviteNewKeysKeepROC(t *testing.T) {
	caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	first, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	caller.enc = contextOf(t, first)
	caller.seq = 65530 // the index rolls over within the first packets
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdesSDP(first)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	_, err = e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := srtp.ParseSDP(res.Body())
	rm, err := srtp.Remote(sd, 0)
	if err != nil || len(rm.Cryptos) != 1 {
		t.Fatalf("answer: %v", err)
	}
	toExt := rm.RTP
	caller.send(toExt, 8, "wrap") // 65531 … 3: the index rolls over
	flow(t, caller, toExt, backend, "before")
	if roc, ok := caller.enc.ROC(caller.ssrc); !ok || roc != 1 {
		t.Fatalf("the caller's ROC is %d (%v), want 1 before the re-INVITE", roc, ok)
	}

	second, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(string(caller.sdesSDP(second)), " 1 IN IP4", " 2 IN IP4", 1) // session version 2
	r, err := call.ReInvite(e.ctx, []byte(body))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v, %v", r, err)
	}
	// The same SSRC goes on with the new key at ROC 1.
	k := second.Keys[0]
	enc, err := pionsrtp.CreateContext(k.Key, k.Salt, second.Suite.Profile())
	if err != nil {
		t.Fatal(err)
	}
	enc.SetROC(caller.ssrc, 1)
	caller.enc = enc
	flow(t, caller, toExt, backend, "after")
	if n := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "srtp_auth"); n != 0 {
		t.Errorf("SRTP authentication failures after the rekey: %v", n)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// twoLineSDP is an offer or answer with an audio line at audio and a
// second (video) line at video; a zero video port removes that line.
func twoLineSDP(audio netip.AddrPort, video uint16, version int) []byte {
	s := string(sipua.SDP(audio.Addr().String(), int(audio.Port()), version, "sendrecv"))
	return []byte(s + fmt.Sprintf("m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=sendrecv\r\n", video))
}

// portsOf returns the m= line ports of an SDP.
func portsOf(t *testing.T, body []byte) []int {
	t.Helper()
	sd, err := srtp.ParseSDP(body)
	if err != nil {
		t.Fatalf("SDP %q: %v", body, err)
	}
	var out []int
	for _, md := range sd.MediaDescriptions {
		out = append(out, md.MediaName.Port.Value)
	}
	return out
}

// TestMediaReInviteRemovesLine: a call with two m= lines, both relayed; a
// re-INVITE removes the second (port 0): the port 0 reaches the backend
// as port 0, its port 0 the caller, and the line's relay stops (what the
// caller still sends there is dropped, counted as no_destination) while
// the first line's media goes on. A later re-INVITE brings the line back.
func TestMediaReInviteRemovesLine(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	cAudio, cVideo := newPhone(t, callerIP), newPhone(t, callerIP)
	bAudio, bVideo := newPhone(t, backendIP), newPhone(t, backendIP)
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: twoLineSDP(cAudio.addr(), cVideo.addr().Port(), 1)})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	intPorts := portsOf(t, inv.Body())
	if len(intPorts) != 2 || intPorts[1] == 0 {
		t.Fatalf("the backend's offer has ports %v, want two relayed lines", intPorts)
	}
	peer.respond(inv, 200, "x", twoLineSDP(bAudio.addr(), bVideo.addr().Port(), 1))
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	peer.wait(e.ctx, sip.ACK, nil)
	extPorts := portsOf(t, res.Body())
	toExt := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(sbcExtIP), uint16(extPorts[i]))
	}
	toInt := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(sbcIntIP), uint16(intPorts[i]))
	}
	flow(t, cVideo, toExt(1), bVideo, "video-before")
	flow(t, bVideo, toInt(1), cVideo, "video-back")

	reinvite := func(version int, video uint16, bVideoPort uint16) *sip.Response {
		t.Helper()
		done := make(chan *sip.Response, 1)
		go func() {
			r, _ := call.ReInvite(e.ctx, twoLineSDP(cAudio.addr(), video, version))
			done <- r
		}()
		re := peer.wait(e.ctx, sip.INVITE, nil)
		if got := portsOf(t, re.Body()); len(got) != 2 || (got[1] == 0) != (video == 0) {
			t.Errorf("re-INVITE %d to the backend has ports %v (the caller's video port: %d)", version, got, video)
		}
		peer.respond(re, 200, "", twoLineSDP(bAudio.addr(), bVideoPort, version))
		peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return r.CSeq().SeqNo == re.CSeq().SeqNo })
		r := <-done
		if r == nil || r.StatusCode != 200 {
			t.Fatalf("re-INVITE %d: %v", version, r)
		}
		return r
	}
	r := reinvite(2, 0, 0)
	if got := portsOf(t, r.Body()); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the answer to the caller has ports %v, want audio relayed and video 0", got)
	}
	before := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "no_destination")
	cVideo.send(toExt(1), 5, "video-removed")
	flow(t, cAudio, toExt(0), bAudio, "audio-goes-on")
	e.eventually("the removed line's packets dropped", func() bool {
		return gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "no_destination") >= before+5
	})

	// Back: the line relays again, to the backend's new port.
	bVideo2 := newPhone(t, backendIP)
	r = reinvite(3, cVideo.addr().Port(), bVideo2.addr().Port())
	if got := portsOf(t, r.Body()); len(got) != 2 || got[1] != extPorts[1] {
		t.Fatalf("the answer bringing video back has ports %v, want the relay's %d", got, extPorts[1])
	}
	flow(t, cVideo, toExt(1), bVideo2, "video-again")
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
}

// TestMediaReInviteAddedLineDeclined: a re-INVITE that adds an m= line to
// a one-line call: the call has no relay for it (ports are allocated when
// the INVITE arrives), so the new line goes to the backend as port 0 and
// comes back to the caller as port 0 (declined, RFC 3264 6), while the
// first line keeps its relay and its media. (Before, the SBC could not
// write the port 0 and answered the whole re-INVITE 488 bad_sdp.)
func TestMediaReInviteAddedLineDeclined(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	cAudio, bAudio, cVideo := newPhone(t, callerIP), newPhone(t, backendIP), newPhone(t, callerIP)
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: cAudio.sdp()})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	peer.respond(inv, 200, "x", bAudio.sdp())
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	peer.wait(e.ctx, sip.ACK, nil)
	toExt, toInt := remote(t, res.Body()), remote(t, inv.Body())

	done := make(chan *sip.Response, 1)
	go func() {
		r, _ := call.ReInvite(e.ctx, twoLineSDP(cAudio.addr(), cVideo.addr().Port(), 2))
		done <- r
	}()
	re := peer.wait(e.ctx, sip.INVITE, nil)
	if got := portsOf(t, re.Body()); len(got) != 2 || got[0] != int(toInt.Port()) || got[1] != 0 {
		t.Fatalf("the backend's re-INVITE has ports %v, want [%d 0]", got, toInt.Port())
	}
	if bytes.Contains(re.Body(), []byte(fmt.Sprint(cVideo.addr().Port()))) {
		t.Errorf("the caller's new port reached the backend:\n%s", re.Body())
	}
	peer.respond(re, 200, "", twoLineSDP(bAudio.addr(), 0, 2))
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return r.CSeq().SeqNo == re.CSeq().SeqNo })
	r := <-done
	if r == nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v", r)
	}
	if got := portsOf(t, r.Body()); len(got) != 2 || got[0] != int(toExt.Port()) || got[1] != 0 {
		t.Fatalf("the caller's answer has ports %v, want [%d 0]", got, toExt.Port())
	}
	flow(t, cAudio, toExt, bAudio, "audio-goes-on")
	flow(t, bAudio, toInt, cAudio, "audio-back")
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
}

// TestMediaNonRTPLineRefused: an INVITE whose second line is not RTP
// (BFCP): the SBC relays the audio and refuses the other line with port
// 0 both ways instead of refusing the call (488 before).
func TestMediaNonRTPLineRefused(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	cAudio, bAudio := newPhone(t, callerIP), newPhone(t, backendIP)
	withBFCP := func(p *phone, port int) []byte {
		return append(p.sdp(), []byte(fmt.Sprintf("m=application %d UDP/BFCP *\r\na=floorctrl:c-s\r\n", port))...)
	}
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: withBFCP(cAudio, 40010)})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	if got := portsOf(t, inv.Body()); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the backend's offer has ports %v, want audio relayed and application 0", got)
	}
	peer.respond(inv, 200, "x", withBFCP(bAudio, 0))
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	if got := portsOf(t, res.Body()); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the caller's answer has ports %v, want audio relayed and application 0", got)
	}
	peer.wait(e.ctx, sip.ACK, nil)
	flow(t, cAudio, remote(t, res.Body()), bAudio, "audio")
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
}
