package sbc

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/sbc-project/sbc/internal/sipua"
)

// webPeer is a pion/webrtc PeerConnection standing in for a browser
// (full ICE, DTLS-SRTP, rtcp-mux, BUNDLE) on callerIP, with one PCMU
// track each way.
type webPeer struct {
	pc        *webrtc.PeerConnection
	track     *webrtc.TrackLocalStaticRTP
	got       chan []byte
	connected chan struct{}
	seq       uint16
}

// webPeerOpts vary the peer: keepalive is its ICE keep-alive (consent)
// interval, 0 meaning pion's default (2 s) and negative none at all.
type webPeerOpts struct{ keepalive time.Duration }

// newWebPeer makes the peer and its offer (ICE gathered).
func newWebPeer(t *testing.T, e *env, o webPeerOpts) (*webPeer, string) {
	t.Helper()
	me := &webrtc.MediaEngine{}
	pcmu := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: pcmu, PayloadType: 0}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{LoggerFactory: logging.NewDefaultLoggerFactory()}
	se.LoggerFactory.(*logging.DefaultLoggerFactory).DefaultLogLevel = logging.LogLevelDisabled
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.ParseIP(callerIP)) })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)
	if o.keepalive != 0 {
		// No consent checks after the nomination (keep-alive 0 is none
		// in pion/ice), and never "disconnected" on its own side.
		se.SetICETimeouts(time.Hour, time.Hour, max(o.keepalive, 0))
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle, RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	w := &webPeer{pc: pc, got: make(chan []byte, 64), connected: make(chan struct{})}
	if w.track, err = webrtc.NewTrackLocalStaticRTP(pcmu, "audio", "browser"); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(w.track); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for range 1000 {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case w.got <- p.Payload:
			default:
			}
		}
	})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(w.connected) })
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gatherDone := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gatherDone:
	case <-e.ctx.Done():
		t.Fatal("ICE gathering")
	}
	return w, pc.LocalDescription().SDP
}

// answer gives the peer the SBC's answer and waits for ICE and DTLS.
func (w *webPeer) answer(t *testing.T, e *env, sdp string) {
	t.Helper()
	if err := w.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.connected:
	case <-e.ctx.Done():
		t.Fatalf("ICE/DTLS never connected: %v", w.pc.ConnectionState())
	}
}

// exchange sends RTP both ways between the peer and a plain backend phone
// (towards the SBC's relay toInt) until each got the other's (bounded).
func (w *webPeer) exchange(t *testing.T, backend *phone, dst netip.AddrPort) {
	t.Helper()
	for round := 0; ; round++ {
		for range 5 {
			w.seq++
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: w.seq,
				Timestamp: uint32(w.seq) * 160, SSRC: 0x1234}, Payload: []byte("from-browser")}
			if err := w.track.WriteRTP(pkt); err != nil {
				t.Fatal(err)
			}
		}
		backend.send(dst, 3, "from-backend")
		_, err1 := backend.recv("from-browser")
		var err2 error
		select {
		case p := <-w.got:
			if !bytes.Equal(p, []byte("from-backend")) {
				err2 = errNotTag
			}
		case <-time.After(2 * time.Second):
			err2 = errNotTag
		}
		if err1 == nil && err2 == nil {
			return
		}
		if round == 3 {
			t.Fatalf("media did not flow between the WebRTC peer and the backend: %v; %v", err1, err2)
		}
	}
}

// TestMediaWebRTCToPlain: a WebRTC peer (pion/webrtc standing in for a
// browser: full ICE, DTLS-SRTP, rtcp-mux, BUNDLE) calls through the SBC to
// a backend on plain RTP. The SBC answers as an ICE-lite agent with its
// own DTLS certificate; audio flows both ways, decrypted and re-encrypted
// by the SBC; the backend sees a plain RTP/AVP SIP offer with none of the
// browser's WebRTC attributes. The handshake is counted per realm.
func TestMediaWebRTCToPlain(t *testing.T) {
	backend := newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	w, offer := newWebPeer(t, e, webPeerOpts{})

	call, res := e.dial(sipua.DialOptions{SDP: []byte(offer)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	answer := string(res.Body())
	for _, want := range []string{"UDP/TLS/RTP/SAVPF", "a=ice-lite", "a=fingerprint:sha-256", "a=setup:passive", "a=rtcp-mux", "typ host", "a=mid:", "a=group:BUNDLE "} {
		if !strings.Contains(answer, want) {
			t.Errorf("the SBC's answer lacks %q:\n%s", want, answer)
		}
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	offerB := string(ci.Invite)
	for _, bad := range []string{"UDP/TLS", "fingerprint", "ice-", "candidate", "a=mid", "msid", "ssrc", "extmap", callerIP} {
		if strings.Contains(offerB, bad) {
			t.Errorf("the backend's offer carries %q:\n%s", bad, offerB)
		}
	}
	if !strings.Contains(offerB, "RTP/AVP") {
		t.Errorf("the backend's offer is not plain RTP:\n%s", offerB)
	}
	w.answer(t, e, answer)
	w.exchange(t, backend, remote(t, ci.Invite))
	if n := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "srtp_auth"); n > 0 {
		t.Errorf("SRTP authentication failures on the WebRTC leg: %v", n)
	}
	if n := gathered(t, e.sbc, "sbc_media_dtls_handshakes_total", "external", "ok"); n != 1 {
		t.Errorf("sbc_media_dtls_handshakes_total{external,ok} = %v, want 1", n)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMediaDTLSFingerprintMismatchCounted: a WebRTC offer whose
// a=fingerprint is not its certificate's: the SBC refuses the handshake,
// installs no keys, and counts it as result "fingerprint" on the realm.
func TestMediaDTLSFingerprintMismatchCounted(t *testing.T) {
	backend := newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	w, offer := newWebPeer(t, e, webPeerOpts{})
	i := strings.Index(offer, "a=fingerprint:sha-256 ")
	if i < 0 {
		t.Fatalf("no SHA-256 fingerprint in the offer:\n%s", offer)
	}
	// Flip the first hex digit of the certificate's hash.
	j := i + len("a=fingerprint:sha-256 ")
	nc := byte('0')
	if offer[j] == '0' {
		nc = '1'
	}
	forged := offer[:j] + string(nc) + offer[j+1:]
	call, res := e.dial(sipua.DialOptions{SDP: []byte(forged)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	if err := w.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(res.Body())}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the refused handshake counted", func() bool {
		return gathered(t, e.sbc, "sbc_media_dtls_handshakes_total", "external", "fingerprint") == 1
	})
	if n := gathered(t, e.sbc, "sbc_media_dtls_handshakes_total", "external", "ok"); n != 0 {
		t.Errorf("sbc_media_dtls_handshakes_total{external,ok} = %v after a forged fingerprint", n)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

var errNotTag = &net.AddrError{Err: "no packet with the expected payload"}

// TestMediaWebRTCConsentLost: a WebRTC peer that stops its ICE consent
// checks after the nomination (keep-alives off) loses consent (RFC 7675,
// shortened here): the SBC ends the call, BYE to both sides with reason
// consent_lost, and counts it on the peer's realm.
func TestMediaWebRTCConsentLost(t *testing.T) {
	backend := newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	e.sbc.media.consent.Store(int64(time.Second))
	w, offer := newWebPeer(t, e, webPeerOpts{keepalive: -1})
	call, res := e.dial(sipua.DialOptions{SDP: []byte(offer)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	w.answer(t, e, string(res.Body()))
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the SBC never ended a call whose WebRTC peer stopped its consent checks")
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.State == sipua.StateEnded }); err != nil {
		t.Fatal(err)
	}
	bye, err := e.caller.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "BYE" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bye.Header("Reason"), resultConsentLost) {
		t.Errorf("the caller's BYE does not say consent_lost:\n%s", bye.Raw)
	}
	if n := gathered(t, e.sbc, "sbc_media_timeouts_total", "external", "consent_lost"); n != 1 {
		t.Errorf("sbc_media_timeouts_total{external,consent_lost} = %v, want 1", n)
	}
	if n := gathered(t, e.sbc, "sbc_media_timeouts_total", "internal", "consent_lost"); n != 0 {
		t.Errorf("sbc_media_timeouts_total{internal,consent_lost} = %v, want 0 (the backend does no ICE)", n)
	}
}
