package srtp

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// browser is pion/webrtc v4 standing in for a browser: full ICE
// (controlling, since the SBC is lite), DTLS, SRTP, rtcp-mux and BUNDLE,
// on loopback only.
type browser struct {
	pc        *webrtc.PeerConnection
	track     *webrtc.TrackLocalStaticRTP
	got       chan *rtp.Packet
	connected chan struct{}
}

var pcmu = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}

func newBrowser(t *testing.T, opts ...func(*webrtc.SettingEngine)) *browser {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: pcmu, PayloadType: 0}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{LoggerFactory: quietLogs}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// The SBC's SDP declares no a=ssrc and the relayed RTP has no MID
	// extension: pion as offerer only takes such a stream with this
	// (Chrome and Firefox take it on a single audio m= line).
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)
	for _, o := range opts {
		o(&se)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		BundlePolicy: webrtc.BundlePolicyMaxBundle, RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire})
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{pc: pc, got: make(chan *rtp.Packet, 64), connected: make(chan struct{})}
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(b.connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for range 1000 {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			b.got <- p
		}
	})
	t.Cleanup(func() { _ = pc.Close() })
	return b
}

func (b *browser) addTrack(t *testing.T) {
	t.Helper()
	var err error
	if b.track, err = webrtc.NewTrackLocalStaticRTP(pcmu, "audio", "browser"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pc.AddTrack(b.track); err != nil {
		t.Fatal(err)
	}
}

// setLocal sets an offer or answer and waits for all candidates.
func (b *browser) setLocal(t *testing.T, d webrtc.SessionDescription) string {
	t.Helper()
	gathered := webrtc.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(d); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(waitLimit):
		t.Fatal("gathering")
	}
	return b.pc.LocalDescription().SDP
}

func (b *browser) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-b.connected:
	case <-time.After(waitLimit):
		t.Fatalf("browser never connected: %v", b.pc.ConnectionState())
	}
}

// sbcLeg is the SBC's WebRTC-facing leg (A: ICE-lite + DTLS) with a plain
// phone on leg B.
type sbcLeg struct {
	s      *Stream
	ice    *ICELite
	dtls   *DTLS
	plain  *phone
	res    results
	aAddr  netip.AddrPort
	bAddr  netip.AddrPort
	anchor Anchor
}

func newSBCLeg(t *testing.T, ic ICEConfig, dc DTLSConfig) *sbcLeg {
	t.Helper()
	pp := newTestPool(t)
	l := &sbcLeg{plain: newPhone(t)}
	var err error
	if l.ice, err = NewICELite(ic); err != nil {
		t.Fatal(err)
	}
	var onDone func(DTLSResult)
	l.res, onDone = newResults()
	dc.Certificate, dc.OnDone = sbcCert, onDone
	if l.dtls, err = NewDTLS(dc); err != nil {
		t.Fatal(err)
	}
	l.s = newTestStream(t, StreamConfig{
		// The browser's c= and m= port say nothing usable: no Remote, no
		// learning; ICE tells where media goes.
		A: LegConfig{Ports: allocate(t, pp, true), Handler: &SecureLeg{ICE: l.ice, DTLS: l.dtls}, Normalize: true},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: l.plain.addr()},
	})
	l.aAddr, _ = l.s.LocalAddr(LegA)
	l.bAddr, _ = l.s.LocalAddr(LegB)
	l.anchor = Anchor{Addr: loopback, Origin: NewOrigin("sbc", loopback),
		Media:          []MediaAnchor{{Port: int(l.aAddr.Port()), Proto: "UDP/TLS/RTP/SAVPF"}},
		DropAttributes: []string{"ssrc", "ssrc-group", "msid", "extmap"}}
	if err := l.anchor.AddICELite(0, l.ice.Local(), l.aAddr); err != nil {
		t.Fatal(err)
	}
	if err := l.anchor.AddDTLS(0, dc.Setup, l.dtls.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *sbcLeg) rewrite(t *testing.T, in *sdp.SessionDescription) string {
	t.Helper()
	out, err := Rewrite(in, l.anchor)
	if err != nil {
		t.Fatal(err)
	}
	b, err := out.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// media checks both directions once the browser is connected: its SRTP
// comes out plain on leg B; B's plain RTP reaches its track.
func (l *sbcLeg) media(t *testing.T, b *browser) {
	t.Helper()
	b.waitConnected(t)
	if r := l.res.next(t); r.Err != nil || !r.Suite.Valid() || r.Peer.Addr() != loopback {
		t.Fatalf("%+v", r)
	}
	sel, ok := l.ice.Selected()
	if !ok {
		t.Fatal("no ICE selection")
	}
	for i := range 10 {
		payload := bytes.Repeat([]byte{byte(i)}, 160)
		if err := b.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i) * 160}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		got, _ := l.plain.recv()
		var p rtp.Packet
		if err := p.Unmarshal(got); err != nil || !bytes.Equal(p.Payload, payload) || p.PayloadType != 0 {
			t.Fatalf("leg B got %v %v", p.Header, err)
		}
	}
	for i := range 10 {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(500 + i), Timestamp: uint32(i) * 160, SSRC: 0x5eed}, Payload: bytes.Repeat([]byte{0xa0 + byte(i)}, 160)}
		raw, _ := pkt.Marshal()
		l.plain.send(raw, l.bAddr)
		select {
		case p := <-b.got:
			if !bytes.Equal(p.Payload, pkt.Payload) || p.SSRC != 0x5eed {
				t.Fatalf("browser got %v", p.Header)
			}
		case <-time.After(waitLimit):
			t.Fatalf("browser received %d of 10; %+v", i, l.s.Stats().B)
		}
	}
	st := l.s.Stats()
	if st.A.AuthFailures() != 0 || st.A.Packets < 10 || st.A.Dropped[DropSTUN] != 0 || st.A.Dropped[DropDTLS] != 0 {
		t.Fatalf("%+v", st.A)
	}
	if src, ok := l.s.Latched(LegA); !ok || src != sel {
		t.Fatalf("latched %v, ICE selected %v", src, sel)
	}
	if is := l.ice.Stats(); is.Succeeded == 0 || is.Nominations == 0 || is.Unauthorized+is.BadRequest+is.RoleConflict != 0 {
		t.Fatalf("%+v", is)
	}
}

// TestWebRTCBrowserOffers: the browser offers (actpass, ICE, BUNDLE,
// rtcp-mux); the SBC answers ICE-lite, a=setup:passive; the browser's
// agent nominates our host candidate and starts DTLS as client.
func TestWebRTCBrowserOffers(t *testing.T) {
	b := newBrowser(t)
	b.addTrack(t)
	offer, err := b.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ParseSDP([]byte(b.setLocal(t, offer)))
	if err != nil {
		t.Fatal(err)
	}
	sec, err := RemoteSecurity(in, 0)
	if err != nil || sec.Setup != SetupActpass || len(sec.Fingerprints) == 0 || sec.ICE.Ufrag == "" {
		t.Fatalf("%+v %v", sec, err)
	}
	if rm, err := Remote(in, 0); err != nil || !rm.Mux {
		t.Fatalf("%+v %v", rm, err)
	}
	setup, _ := AnswerSetup(sec.Setup, SetupPassive)
	l := newSBCLeg(t, ICEConfig{RemoteUfrag: sec.ICE.Ufrag},
		DTLSConfig{Setup: setup, RemoteSetup: sec.Setup, RemoteFingerprints: sec.Fingerprints})
	answer := l.rewrite(t, in)
	if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatalf("%v\n%s", err, answer)
	}
	l.media(t, b)
}

// TestWebRTCSBCOffers: the SBC offers (actpass, ICE-lite) to the browser.
// Answering passive (pion's choice towards a lite offerer), the browser
// waits for our ClientHello, sent to the address its agent nominated.
// Answering active, its checks and ClientHello may come before the answer
// reaches the SBC: accepted on our ufrag, and as provisional server,
// checked when the answer's fingerprint is known.
func TestWebRTCSBCOffers(t *testing.T) {
	for _, tc := range []struct {
		name string
		role webrtc.DTLSRole
		want Setup
	}{
		{"browser passive", webrtc.DTLSRoleAuto, SetupPassive},
		{"browser active", webrtc.DTLSRoleClient, SetupActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSBCLeg(t, ICEConfig{}, DTLSConfig{Setup: SetupActpass})
			sipOffer, err := ParseSDP([]byte("v=0\r\no=pbx 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
				"a=group:BUNDLE 0\r\nm=audio 4000 RTP/AVP 0\r\na=mid:0\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			offer := l.rewrite(t, sipOffer)
			b := newBrowser(t, func(se *webrtc.SettingEngine) {
				if tc.role != webrtc.DTLSRoleAuto {
					_ = se.SetAnsweringDTLSRole(tc.role)
				}
			})
			if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
				t.Fatalf("%v\n%s", err, offer)
			}
			b.addTrack(t)
			answer, err := b.pc.CreateAnswer(nil)
			if err != nil {
				t.Fatal(err)
			}
			in, err := ParseSDP([]byte(b.setLocal(t, answer)))
			if err != nil {
				t.Fatal(err)
			}
			sec, err := RemoteSecurity(in, 0)
			if err != nil || sec.Setup != tc.want {
				t.Fatalf("%+v %v", sec, err)
			}
			if tc.want == SetupActive {
				// Let the browser's ClientHello overtake the answer.
				waitFor(t, "early ClientHello", func() bool { return l.dtls.Stats().Handshakes == 1 })
			}
			l.ice.SetRemoteUfrag(sec.ICE.Ufrag)
			if err := l.dtls.SetRemote(sec.Setup, sec.Fingerprints); err != nil {
				t.Fatal(err)
			}
			if l.dtls.Client() != (tc.want == SetupPassive) {
				t.Fatal("role acted is not the role the answer implies")
			}
			l.media(t, b)
		})
	}
}
