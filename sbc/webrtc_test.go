package sbc

import (
	"bytes"
	"net"
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

// TestMediaWebRTCToPlain: a WebRTC peer (pion/webrtc standing in for a
// browser: full ICE, DTLS-SRTP, rtcp-mux, BUNDLE) calls through the SBC to
// a backend on plain RTP. The SBC answers as an ICE-lite agent with its
// own DTLS certificate; audio flows both ways, decrypted and re-encrypted
// by the SBC; the backend sees a plain RTP/AVP SIP offer with none of the
// browser's WebRTC attributes.
func TestMediaWebRTCToPlain(t *testing.T) {
	backend := newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)

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
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle, RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(pcmu, "audio", "browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 64)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for range 1000 {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case got <- p.Payload:
			default:
			}
		}
	})
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
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

	call, res := e.dial(sipua.DialOptions{SDP: []byte(pc.LocalDescription().SDP)})
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
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	case <-e.ctx.Done():
		t.Fatalf("ICE/DTLS never connected: %v", pc.ConnectionState())
	}

	toInt := remote(t, ci.Invite)
	for round := 0; ; round++ {
		for i := range 5 {
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(round*5 + i + 1),
				Timestamp: uint32(round*5+i) * 160, SSRC: 0x1234}, Payload: []byte("from-browser")}
			if err := track.WriteRTP(pkt); err != nil {
				t.Fatal(err)
			}
		}
		backend.send(toInt, 3, "from-backend")
		_, err1 := backend.recv("from-browser")
		var err2 error
		select {
		case p := <-got:
			if !bytes.Equal(p, []byte("from-backend")) {
				err2 = errNotTag
			}
		case <-time.After(2 * time.Second):
			err2 = errNotTag
		}
		if err1 == nil && err2 == nil {
			break
		}
		if round == 3 {
			t.Fatalf("media did not flow between the WebRTC peer and the backend: %v; %v", err1, err2)
		}
	}
	if n := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "srtp_auth"); n > 0 {
		t.Errorf("SRTP authentication failures on the WebRTC leg: %v", n)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

var errNotTag = &net.AddrError{Err: "no packet with the expected payload"}
