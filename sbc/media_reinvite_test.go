package sbc

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	pionsrtp "github.com/pion/srtp/v3"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
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

// mediaCall is an answered one-line call from the test's caller through the
// SBC to a raw peer (answeredCall).
type mediaCall struct {
	call         *sipua.Call
	last         *sip.Request   // the last INVITE the peer got for it
	toExt, toInt netip.AddrPort // the SBC's relay: for the caller, for the peer
}

// answeredCall dials from caller's plain SDP, has the peer answer 200 with
// callee's, and waits for the ACK.
func answeredCall(t *testing.T, e *env, peer *rawPeer, caller, callee *phone) *mediaCall {
	t.Helper()
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: caller.sdp()})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	peer.respond(inv, 200, "x", callee.sdp())
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	peer.wait(e.ctx, sip.ACK, nil)
	return &mediaCall{call: call, last: inv, toExt: remote(t, res.Body()), toInt: remote(t, inv.Body())}
}

// reinvite sends a re-INVITE with body from the caller; the peer answers
// it code (with answer). It returns the re-INVITE as the peer got it and
// the caller's final response, once the peer has the ACK.
func (rc *mediaCall) reinvite(t *testing.T, e *env, peer *rawPeer, body []byte, code int, answer []byte) (*sip.Request, *sip.Response) {
	t.Helper()
	done := make(chan *sip.Response, 1)
	go func() {
		r, _ := rc.call.ReInvite(e.ctx, body)
		done <- r
	}()
	last := rc.last.CSeq().SeqNo
	re := peer.wait(e.ctx, sip.INVITE, func(r *sip.Request) bool { return r.CSeq().SeqNo > last })
	rc.last = re
	peer.respond(re, code, "", answer)
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return r.CSeq().SeqNo == re.CSeq().SeqNo })
	r := <-done
	if r == nil {
		t.Fatal("re-INVITE: no final response")
	}
	return re, r
}

// TestMediaReInviteAddsLine: a re-INVITE that adds an m= line (video) to
// a one-line call: the SBC binds a relay for the new line before the
// re-INVITE's transition, offers it to the backend on its own port (not
// the caller's), answers the caller with its port on the other side, and
// the new line's media flows both ways while the first line's goes on.
func TestMediaReInviteAddsLine(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	cAudio, bAudio, cVideo, bVideo := newPhone(t, callerIP), newPhone(t, backendIP), newPhone(t, callerIP), newPhone(t, backendIP)
	ac := answeredCall(t, e, peer, cAudio, bAudio)
	call, toExt, toInt := ac.call, ac.toExt, ac.toInt
	inUse := gathered(t, e.sbc, "sbc_media_ports", "external", "in_use")

	re, r := ac.reinvite(t, e, peer, twoLineSDP(cAudio.addr(), cVideo.addr().Port(), 2), 200, twoLineSDP(bAudio.addr(), bVideo.addr().Port(), 2))
	if r.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v", r)
	}
	intPorts := portsOf(t, re.Body())
	if len(intPorts) != 2 || intPorts[0] != int(toInt.Port()) || intPorts[1] == 0 || intPorts[1] == int(cVideo.addr().Port()) {
		t.Fatalf("the backend's re-INVITE has ports %v, want [%d, a relay port]", intPorts, toInt.Port())
	}
	if bytes.Contains(re.Body(), []byte(callerIP)) {
		t.Errorf("the caller's address reached the backend:\n%s", re.Body())
	}
	extPorts := portsOf(t, r.Body())
	if len(extPorts) != 2 || extPorts[0] != int(toExt.Port()) || extPorts[1] == 0 || extPorts[1] == int(bVideo.addr().Port()) {
		t.Fatalf("the caller's answer has ports %v, want [%d, a relay port]", extPorts, toExt.Port())
	}
	if bytes.Contains(r.Body(), []byte(backendIP)) {
		t.Errorf("the backend's address reached the caller:\n%s", r.Body())
	}
	if got := gathered(t, e.sbc, "sbc_media_ports", "external", "in_use"); got != inUse+1 {
		t.Errorf("external ports in use %v after the added line, want %v", got, inUse+1)
	}
	vExt := netip.AddrPortFrom(toExt.Addr(), uint16(extPorts[1]))
	vInt := netip.AddrPortFrom(toInt.Addr(), uint16(intPorts[1]))
	flow(t, cVideo, vExt, bVideo, "video")
	flow(t, bVideo, vInt, cVideo, "video-back")
	flow(t, cAudio, toExt, bAudio, "audio-goes-on")
	flow(t, bAudio, toInt, cAudio, "audio-back")
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
	e.eventually("the call's ports released", func() bool {
		return gathered(t, e.sbc, "sbc_media_ports", "external", "in_use") == inUse-1
	})
}

// TestMediaReInviteAddedLineRefusedFreesPorts: the backend refuses (488)
// a re-INVITE that adds a line: the call goes on as it was, on its one
// line, and the ports bound for the new line are released at once, not
// held until the call ends.
func TestMediaReInviteAddedLineRefusedFreesPorts(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	cAudio, bAudio, cVideo := newPhone(t, callerIP), newPhone(t, backendIP), newPhone(t, callerIP)
	ac := answeredCall(t, e, peer, cAudio, bAudio)
	call, toExt, toInt := ac.call, ac.toExt, ac.toInt
	inUse := gathered(t, e.sbc, "sbc_media_ports", "external", "in_use")
	for v := 2; v < 5; v++ {
		if _, r := ac.reinvite(t, e, peer, twoLineSDP(cAudio.addr(), cVideo.addr().Port(), v), 488, nil); r.StatusCode != 488 {
			t.Fatalf("re-INVITE %d: %v, want the backend's 488", v, r)
		}
	}
	// Ports are released after a quarantine, so in_use is what counts.
	e.eventually("the added line's ports released", func() bool {
		return gathered(t, e.sbc, "sbc_media_ports", "external", "in_use") == inUse
	})
	flow(t, cAudio, toExt, bAudio, "audio-goes-on")
	flow(t, bAudio, toInt, cAudio, "audio-back")
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
}

// t38SDP is an SDP of one T.38 line (ITU-T T.38 Annex D) at a, with the
// attributes fax gateways send; audio0 puts a refused audio line first
// (the form that adds T.38 as a second line).
func t38SDP(a netip.AddrPort, version int, audio0 bool) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=- 77 %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n", version, a.Addr(), a.Addr())
	if audio0 {
		b.WriteString("m=audio 0 RTP/AVP 0\r\n")
	}
	fmt.Fprintf(&b, "m=image %d udptl t38\r\n", a.Port())
	b.WriteString("a=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\na=T38FaxRateManagement:transferredTCF\r\n" +
		"a=T38FaxMaxBuffer:262\r\na=T38FaxMaxDatagram:176\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n")
	return []byte(b.String())
}

// udptl sends a datagram from p to dst until `to` receives exactly it from
// relay port via (bounded, as flow does for RTP: the relay may still be
// switching lines when the first copy comes). RTP from the audio before
// the switch and late copies of earlier UDPTL datagrams are skipped on
// the way; any other datagram (a stranger's), or d from another port, is
// a failure.
func udptl(t *testing.T, p *phone, dst netip.AddrPort, to *phone, via netip.AddrPort, d []byte) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 40 {
		if _, err := p.conn.WriteToUDPAddrPort(d, dst); err != nil {
			t.Fatal(err)
		}
		_ = to.conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, from, err := to.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // this copy was lost: the next
			}
			if !bytes.Equal(buf[:n], d) {
				if stray(buf[:n]) {
					continue
				}
				t.Fatalf("% x from %v while waiting for % x", buf[:n], from, d)
			}
			if from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); from != via {
				t.Fatalf("% x from %v, want it from %v", d, from, via)
			}
			// Drain copies still in flight, so that the next datagram
			// is read as itself.
			_ = to.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			for {
				if _, _, err := to.conn.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
			}
		}
	}
	t.Fatalf("UDPTL % x never arrived from %v", d, via)
}

// stray reports a datagram udptl may meet while it waits: RTP (version 2)
// or a copy of one of ifpPackets.
func stray(b []byte) bool {
	if len(b) > 0 && b[0]>>6 == 2 {
		return true
	}
	for _, p := range ifpPackets {
		if bytes.Equal(b, p) {
			return true
		}
	}
	return false
}

// ifpPackets are UDPTL packets: a sequence number, then IFP bytes (their
// first bytes look like STUN, DTLS and RTP to RFC 7983).
var ifpPackets = [][]byte{
	{0x00, 0x00, 0x06, 0xd0, 0x01, 0x00},
	{0x00, 0x01, 0x06, 0xd0, 0x01, 0x00},
	{0x16, 0x02, 0x03, 0x40},
	{0x80, 0x03, 0x03, 0x40, 0x22},
}

// TestMediaT38ReInvite: an audio call switched to T.38 fax by a re-INVITE
// whose single line becomes m=image udptl t38 (as Asterisk and FreeSWITCH
// send it), from the caller and answered by the backend on a new port:
// both sides get the line with the SBC's own address and port, the T38
// attributes unchanged; UDPTL datagrams then cross byte for byte both
// ways; a stranger cannot inject into the latched line; a re-INVITE back
// to audio restores the RTP relay.
func TestMediaT38ReInvite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		audio0 bool
	}{{"replaces-audio", false}, {"added-line", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e, peer := rawEnv(t, envOpts{})
			cAudio, bAudio := newPhone(t, callerIP), newPhone(t, backendIP)
			cFax, bFax, stranger := newPhone(t, callerIP), newPhone(t, backendIP), newPhone(t, callerIP)
			ac := answeredCall(t, e, peer, cAudio, bAudio)
			call, toExt, toInt := ac.call, ac.toExt, ac.toInt
			flow(t, cAudio, toExt, bAudio, "audio")

			reinvite := func(body, answer []byte) (*sip.Request, *sip.Response) {
				t.Helper()
				re, r := ac.reinvite(t, e, peer, body, 200, answer)
				if r.StatusCode != 200 {
					t.Fatalf("re-INVITE: %v", r)
				}
				return re, r
			}
			re, r := reinvite(t38SDP(cFax.addr(), 2, tc.audio0), t38SDP(bFax.addr(), 2, tc.audio0))
			line := 0
			if tc.audio0 {
				line = 1
			}
			for _, m := range []struct {
				who  string
				body []byte
				ip   string
				not  string
			}{{"backend", re.Body(), sbcIntIP, callerIP}, {"caller", r.Body(), sbcExtIP, backendIP}} {
				sd, err := srtp.ParseSDP(m.body)
				if err != nil {
					t.Fatal(err)
				}
				if len(sd.MediaDescriptions) != line+1 {
					t.Fatalf("%s got %d m= lines:\n%s", m.who, len(sd.MediaDescriptions), m.body)
				}
				md := sd.MediaDescriptions[line]
				if md.MediaName.Media != "image" || strings.Join(md.MediaName.Protos, "/") != "udptl" || md.MediaName.Port.Value == 0 {
					t.Fatalf("%s got %v:\n%s", m.who, md.MediaName, m.body)
				}
				for _, want := range []string{"a=T38FaxVersion:0", "a=T38MaxBitRate:14400", "a=T38FaxUdpEC:t38UDPRedundancy", "a=T38FaxMaxDatagram:176"} {
					if !bytes.Contains(m.body, []byte(want)) {
						t.Errorf("%s: %s missing:\n%s", m.who, want, m.body)
					}
				}
				if bytes.Contains(m.body, []byte(m.not)) || !bytes.Contains(m.body, []byte("c=IN IP4 "+m.ip)) {
					t.Errorf("%s got another side's address, or not the SBC's %s:\n%s", m.who, m.ip, m.body)
				}
			}
			fExt := netip.AddrPortFrom(toExt.Addr(), uint16(portsOf(t, r.Body())[line]))
			fInt := netip.AddrPortFrom(toInt.Addr(), uint16(portsOf(t, re.Body())[line]))
			for _, d := range ifpPackets {
				udptl(t, cFax, fExt, bFax, fInt, d)
				udptl(t, bFax, fInt, cFax, fExt, d)
			}
			// Latched: a stranger's datagram does not reach the backend.
			if _, err := stranger.conn.WriteToUDPAddrPort([]byte{0x00, 0x09, 0xee}, fExt); err != nil {
				t.Fatal(err)
			}
			marker := []byte{0x00, 0x0a, 0x42}
			udptl(t, cFax, fExt, bFax, fInt, marker)

			// Back to audio on the first line.
			bAudio2 := newPhone(t, backendIP)
			_, r = reinvite(cAudio.sdp(), bAudio2.sdp())
			if got := portsOf(t, r.Body()); got[0] == 0 {
				t.Fatalf("audio refused after the fax: %v", got)
			}
			aExt := netip.AddrPortFrom(toExt.Addr(), uint16(portsOf(t, r.Body())[0]))
			flow(t, cAudio, aExt, bAudio2, "audio-after-fax")
			go call.Bye(e.ctx)
			bye := peer.wait(e.ctx, sip.BYE, nil)
			peer.respond(bye, 200, "", nil)
		})
	}
}

// TestMediaT38RefusedWhenSRTPRequired: a trunk that requires SDES gets its
// T.38 line (UDPTL has no SRTP) refused with port 0 in the offer to the
// backend; the caller sees port 0 in the answer, and the call goes on.
func TestMediaT38RefusedWhenSRTPRequired(t *testing.T) {
	e, peer := rawEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Trunk("carrier").Extra = "media_encryption = \"sdes\"\nmedia_required = true\n"
	}})
	cAudio, bAudio := newPhone(t, callerIP), newPhone(t, backendIP)
	c, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	withT38 := func(b []byte, port int) []byte {
		return append(b, []byte(fmt.Sprintf("m=image %d udptl t38\r\na=T38FaxVersion:0\r\n", port))...)
	}
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: withT38(cAudio.sdesSDP(c), 40020)})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	if got := portsOf(t, inv.Body()); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the backend's offer has ports %v, want audio relayed and image 0", got)
	}
	peer.respond(inv, 200, "x", withT38(bAudio.sdp(), 0))
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	if got := portsOf(t, res.Body()); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the caller's answer has ports %v, want audio relayed and image 0", got)
	}
	peer.wait(e.ctx, sip.ACK, nil)
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

// TestReInviteAddedLineByeStress: calls whose caller re-INVITEs with an
// added m= line while the backend hangs up, so that the BYE meets the re-INVITE at
// every stage (before its ports are bound, while they are, with its
// transition pending, deferred, relayed, answered). The backend answers
// the re-INVITEs 200 in one run and refuses them 488 in the other. Every
// relay port the re-INVITEs bound is released: none is left in use once
// the calls end.
func TestReInviteAddedLineByeStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	for _, code := range []int{200, 488} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			plan := sipua.Plan{InDialog: map[sip.RequestMethod]int{sip.INVITE: code}}
			e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(plan)}}})
			base := map[string]float64{}
			for _, r := range []string{"external", "internal"} {
				base[r] = gathered(t, e.sbc, "sbc_media_ports", r, "in_use")
			}
			const calls = 30
			deadline, cancel := context.WithTimeout(e.ctx, 60*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			var answered atomic.Int32
			var claimMu sync.Mutex
			claimed := map[string]bool{}
			// claim finds the backend's side of the caller's own call (by
			// the number dialled): any other answered call might be one
			// whose 200 the SBC has not taken yet, and a BYE overtaking
			// it ends that call early, leaving the caller's own call
			// with no one to hang it up.
			claim := func(user string) (string, bool) {
				ci, err := e.backends[0].WaitCall(deadline, func(c sipua.CallInfo) bool {
					claimMu.Lock()
					defer claimMu.Unlock()
					if c.User != user || c.State != sipua.StateAnswered || claimed[c.CallID] {
						return false
					}
					claimed[c.CallID] = true
					return true
				})
				return ci.CallID, err == nil
			}
			for i := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := newPhone(t, callerIP)
					user := fmt.Sprint(3000 + i)
					call, err := e.caller.Dial(deadline, e.ext, sipua.DialOptions{User: user, SDP: p.sdp()})
					if err != nil {
						return
					}
					if res, err := call.WaitFinal(deadline); err != nil || res.StatusCode != 200 {
						return
					}
					answered.Add(1)
					var inner sync.WaitGroup
					inner.Add(1)
					go func() {
						defer inner.Done()
						_, _ = call.ReInvite(deadline, twoLineSDP(p.addr(), p.addr().Port()+2, 2))
					}()
					for range i % 4 { // the BYE leaves a little later or earlier
						runtime.Gosched()
					}
					// The backend hangs up its side of this call (its
					// own CSeq: a caller's BYE could take a lower CSeq than
					// its re-INVITE and be refused 500, RFC 3261 12.2.2).
					if bid, ok := claim(user); ok {
						_ = e.backends[0].Bye(deadline, bid)
					}
					inner.Wait()
				}()
			}
			wg.Wait()
			if n := answered.Load(); n < calls/2 {
				t.Fatalf("only %d of %d calls answered: too few to stress the race", n, calls)
			}
			e.eventually("no call left", func() bool { return e.sbc.calls.len() == 0 })
			for _, r := range []string{"external", "internal"} {
				e.eventually(r+" relay ports released", func() bool {
					return gathered(t, e.sbc, "sbc_media_ports", r, "in_use") == base[r]
				})
			}
		})
	}
}

// TestMediaBackendAnswerRefused: the backend answers the SBC's SDES offer
// in its 200 with a key for a crypto line the SBC did not offer (another
// tag): the SBC cannot take the answer, and the caller must not get a
// 200 without one. It gets 488 with a Reason naming
// the media refusal; the backend's dialog is acknowledged and hung up;
// the call counts as no_media.
func TestMediaBackendAnswerRefused(t *testing.T) {
	e, peer := rawEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Pool("pbx").MediaEncryption = "sdes" }})
	cAudio, bAudio := newPhone(t, callerIP), newPhone(t, backendIP)
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: cAudio.sdp()})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	if !bytes.Contains(inv.Body(), []byte("RTP/SAVP")) {
		t.Fatalf("the SBC's offer to the backend is not SDES:\n%s", inv.Body())
	}
	wrong, err := srtp.GenerateCrypto(5, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	peer.respond(inv, 200, "x", bAudio.sdesSDP(wrong))
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 488 {
		t.Fatalf("caller: %v %v, want 488", res, err)
	}
	if r := res.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "encryption_refused") {
		t.Errorf("488 without a Reason naming the refusal: %v", r)
	}
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "x" })
	bye := peer.wait(e.ctx, sip.BYE, func(r *sip.Request) bool { return toTag(r) == "x" })
	peer.respond(bye, 200, "", nil)
	e.eventually("no call left", func() bool { return e.sbc.calls.len() == 0 })
	if n := e.calls("no_media"); n != 1 {
		t.Errorf("sbc_calls_total{no_media} = %v, want 1", n)
	}
}
