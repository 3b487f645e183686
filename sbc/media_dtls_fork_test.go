package sbc

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/dtls/v3"
	pionsrtp "github.com/pion/srtp/v3"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/srtp"
)

// dtlsBackendSDP is a backend's DTLS-SRTP answer at p: active (it will be
// the DTLS client), with cert's fingerprint, rtcp-mux.
func dtlsBackendSDP(p *phone, cert *srtp.Certificate, version int) []byte {
	a := p.addr()
	return []byte(fmt.Sprintf("v=0\r\no=- %d %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=setup:active\r\na=fingerprint:%s\r\na=sendrecv\r\n",
		a.Port(), version, a.Addr(), a.Addr(), a.Port(), cert.Fingerprint.String()))
}

// TestMediaDTLSForkedEarlyDialogs: the SBC offers DTLS-SRTP to a forking
// backend; two early dialogs answer in 183s, each with its own certificate
// and address, and the second one's 200 is kept. Each answer with other
// DTLS parameters gets a new association (RFC 5763: another fingerprint
// is another association): the call is answered (before, the second
// fork's answer was refused), the kept fork's DTLS client handshakes with
// the SBC, and the caller's plain RTP reaches it as SRTP it decrypts.
func TestMediaDTLSForkedEarlyDialogs(t *testing.T) {
	e, peer := rawEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Pool("pbx").MediaEncryption = "dtls" }})
	caller := newPhone(t, callerIP)
	fork1, fork2 := newPhone(t, backendIP), newPhone(t, backendIP)
	cert1, err := srtp.GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cert2, err := srtp.GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: caller.sdp()})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	offer := string(inv.Body())
	if !strings.Contains(offer, "UDP/TLS/RTP/SAVP") || !strings.Contains(offer, "a=setup:actpass") {
		t.Fatalf("the SBC's offer to the backend is not DTLS actpass:\n%s", offer)
	}
	sd, err := srtp.ParseSDP(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	sec, err := srtp.RemoteSecurity(sd, 0)
	if err != nil || len(sec.Fingerprints) == 0 {
		t.Fatalf("the SBC's offer has no fingerprint: %v", err)
	}
	sbcFP := sec.Fingerprints[0]
	relayB := remote(t, inv.Body())

	peer.respond(inv, 183, "x", dtlsBackendSDP(fork1, cert1, 1))
	peer.respond(inv, 183, "y", dtlsBackendSDP(fork2, cert2, 1))
	peer.respond(inv, 200, "y", dtlsBackendSDP(fork2, cert2, 1))
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 || len(res.Body()) == 0 {
		t.Fatalf("caller: %v %v, want a 200 with the SBC's answer", res, err)
	}
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "y" })
	toExt := remote(t, res.Body())

	// The kept fork is the DTLS client (it answered active), from the
	// address its SDP gave, with its own certificate; its socket's other
	// datagrams (media) go to the test.
	mc := &mediaDemux{PacketConn: fork2.conn, media: make(chan []byte, 64)}
	dc, err := dtls.ClientWithOptions(mc, net.UDPAddrFromAddrPort(relayB),
		dtls.WithCertificates(cert2.TLS),
		dtls.WithSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !sbcFP.Matches(raw[0]) {
				return fmt.Errorf("not the SBC's certificate")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		t.Fatalf("the kept fork's DTLS handshake with the SBC: %v", err)
	}
	prof, _ := dc.SelectedSRTPProtectionProfile()
	state, _ := dc.ConnectionState()
	_, rkeys, err := srtp.KeysFromDTLS(&state, pionsrtp.ProtectionProfile(prof), true)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := pionsrtp.CreateContext(rkeys.Key, rkeys.Salt, rkeys.Profile)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's RTP reaches the kept fork as SRTP under this
	// association's keys. (The SBC, the DTLS server, installs its keys
	// just after the client completes: the first packets may be dropped
	// as not_ready, so the caller sends until one arrives, a bounded
	// number of times.)
	got := false
	for try := 0; try < 100 && !got; try++ {
		caller.send(toExt, 1, "to-fork2")
		select {
		case b := <-mc.media:
			if p, err := dec.DecryptRTP(nil, b, nil); err == nil && strings.HasSuffix(string(p), "to-fork2") {
				got = true
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !got {
		t.Fatal("fork 2 got no SRTP it can decrypt")
	}
	if n := gathered(t, e.sbc, "sbc_media_dtls_handshakes_total", "internal", "ok"); n != 1 {
		t.Errorf("DTLS handshakes with the backend: %v ok, want 1", n)
	}
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
}

// mediaDemux is a socket shared by a DTLS client and a test: DTLS
// datagrams (RFC 7983: first byte 20–63) go to the DTLS connection, the
// others to media.
type mediaDemux struct {
	net.PacketConn
	media chan []byte
}

func (c *mediaDemux) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(p)
		if err != nil || (n > 0 && p[0] >= 20 && p[0] <= 63) {
			return n, a, err
		}
		select {
		case c.media <- append([]byte(nil), p[:n]...):
		default:
		}
	}
}
