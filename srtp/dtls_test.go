package srtp

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	pion "github.com/pion/srtp/v3"
)

// dtlsPhone is a DTLS-SRTP endpoint on loopback built from pion/dtls v3
// directly: one socket, demultiplexed like the SBC's (DTLS to the pion
// connection, everything else to media).
type dtlsPhone struct {
	t     testing.TB
	conn  *net.UDPConn
	cert  *Certificate
	media chan []byte
	// sig, when set before traffic, replaces media: one signal per media
	// datagram and no copy (benchmarks count allocations process-wide).
	sig chan struct{}
	mu  sync.Mutex
	fc  *feedConn
	dc  *dtls.Conn
	wg  sync.WaitGroup
}

func newDTLSPhone(t testing.TB) *dtlsPhone {
	t.Helper()
	return newDTLSPhoneSig(t, nil)
}

// newDTLSPhoneSig is newDTLSPhone with sig set (see dtlsPhone.sig).
func newDTLSPhoneSig(t testing.TB, sig chan struct{}) *dtlsPhone {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	p := &dtlsPhone{t: t, conn: c, cert: cert, media: make(chan []byte, 256), sig: sig}
	p.wg.Add(1)
	go p.read()
	t.Cleanup(func() {
		_ = c.Close()
		p.wg.Wait()
	})
	return p
}

func (p *dtlsPhone) addr() netip.AddrPort {
	return netip.MustParseAddrPort(p.conn.LocalAddr().String())
}

func (p *dtlsPhone) read() {
	defer p.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n > 0 && buf[0] >= 20 && buf[0] <= 63 {
			p.mu.Lock()
			fc := p.fc
			p.mu.Unlock()
			if fc != nil {
				fc.feed(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
			}
			continue
		}
		if p.sig != nil {
			select {
			case p.sig <- struct{}{}:
			default:
			}
			continue
		}
		select {
		case p.media <- bytes.Clone(buf[:n]):
		default:
		}
	}
}

func (p *dtlsPhone) recvMedia() []byte {
	p.t.Helper()
	select {
	case b := <-p.media:
		return b
	case <-time.After(waitLimit):
		p.t.Fatal("phone: no media")
		return nil
	}
}

// handshake runs pion/dtls against the SBC's leg at sbc, checking the
// SBC's fingerprint, and returns the phone's SRTP contexts.
func (p *dtlsPhone) handshake(client bool, sbc netip.AddrPort, sbcFP Fingerprint, profiles ...dtls.SRTPProtectionProfile) (enc, dec *pion.Context, err error) {
	fc := newFeedConn(p.conn, sbc)
	p.mu.Lock()
	if p.dc != nil {
		_ = p.dc.Close()
		_ = p.fc.Close()
	}
	p.fc = fc
	p.mu.Unlock()
	if len(profiles) == 0 {
		profiles = []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80}
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 || !sbcFP.Matches(raw[0]) {
			return errors.New("phone: SBC fingerprint mismatch")
		}
		return nil
	}
	opts := []dtls.Option{dtls.WithCertificates(p.cert.TLS), dtls.WithSRTPProtectionProfiles(profiles...),
		dtls.WithInsecureSkipVerify(true), dtls.WithVerifyPeerCertificate(verify), dtls.WithLoggerFactory(quietLogs)}
	var c *dtls.Conn
	if client {
		co := []dtls.ClientOption{}
		for _, o := range opts {
			co = append(co, o)
		}
		c, err = dtls.ClientWithOptions(fc, net.UDPAddrFromAddrPort(sbc), co...)
	} else {
		so := []dtls.ServerOption{dtls.WithClientAuth(dtls.RequireAnyClientCert)}
		for _, o := range opts {
			so = append(so, o)
		}
		c, err = dtls.ServerWithOptions(fc, net.UDPAddrFromAddrPort(sbc), so...)
	}
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	if p.dc == nil {
		p.t.Cleanup(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			_ = p.dc.Close()
			_ = p.fc.Close()
		})
	}
	p.dc = c
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, nil, err
	}
	prof, _ := c.SelectedSRTPProtectionProfile()
	st, _ := c.ConnectionState()
	local, remote, err := KeysFromDTLS(&st, pion.ProtectionProfile(prof), client)
	if err != nil {
		return nil, nil, err
	}
	if enc, err = pion.CreateContext(local.Key, local.Salt, local.Profile); err != nil {
		return nil, nil, err
	}
	dec, err = pion.CreateContext(remote.Key, remote.Salt, remote.Profile)
	return enc, dec, err
}

// results collects DTLSResults.
type results chan DTLSResult

func (r results) next(t testing.TB) DTLSResult {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(waitLimit):
		t.Fatal("no DTLS result")
		return DTLSResult{}
	}
}

func newResults() (results, func(DTLSResult)) {
	r := make(results, 8)
	return r, func(res DTLSResult) { r <- res }
}

var sbcCert = func() *Certificate {
	c, err := GenerateCertificate()
	if err != nil {
		panic(err)
	}
	return c
}()

func newTestDTLS(t testing.TB, cfg DTLSConfig) *DTLS {
	t.Helper()
	if cfg.Certificate == nil {
		cfg.Certificate = sbcCert
	}
	d, err := NewDTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkMedia sends SRTP from the DTLS phone through leg A to the plain
// phone on B and back.
func checkMedia(t *testing.T, s *Stream, ph *dtlsPhone, enc, dec *pion.Context, plainB *phone) {
	t.Helper()
	aAddr, _ := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	for i := range 5 {
		pkt := rtpPacket(0xd715, uint16(100+i), uint32(i)*160, 160)
		w, err := enc.EncryptRTP(nil, pkt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ph.conn.WriteToUDPAddrPort(w, aAddr); err != nil {
			t.Fatal(err)
		}
		if got, _ := plainB.recv(); !bytes.Equal(got, pkt) {
			t.Fatalf("B got % x", got[:12])
		}
		back := rtpPacket(0xb0b, uint16(7+i), uint32(i)*160, 160)
		plainB.send(back, bAddr)
		got, err := dec.DecryptRTP(nil, ph.recvMedia(), nil)
		if err != nil || !bytes.Equal(got, back) {
			t.Fatalf("phone: %v", err)
		}
	}
	if st := s.Stats(); st.A.AuthFailures() != 0 || st.A.Dropped[DropDecrypt] != 0 {
		t.Fatalf("%+v", st.A)
	}
}

func TestDTLSServerPionClient(t *testing.T) {
	for _, tc := range []struct {
		name     string
		profiles []dtls.SRTPProtectionProfile
		want     Suite
	}{
		{"gcm128", nil, AEAD_AES_128_GCM},
		{"gcm256", []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_256_GCM}, AEAD_AES_256_GCM},
		{"cm80", []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_80}, AES_CM_128_HMAC_SHA1_80},
		{"cm32", []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_32}, AES_CM_128_HMAC_SHA1_32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pp := newTestPool(t)
			ph, pb := newDTLSPhone(t), newPhone(t)
			res, onDone := newResults()
			d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActpass,
				RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
			s := newTestStream(t, StreamConfig{
				A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d, Normalize: true},
				B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
			})
			if _, ok := s.Transform(LegA).(NotReady); !ok {
				t.Fatal("a DTLS leg must start NotReady")
			}
			aAddr, _ := s.LocalAddr(LegA)
			// SRTCP before the handshake (baresip does this): not_ready.
			if _, err := ph.conn.WriteToUDPAddrPort(append(rtcpRR(9), make([]byte, 14)...), aAddr); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "not_ready", func() bool { return s.Stats().A.Dropped[DropNotReady] == 1 })

			enc, dec, err := ph.handshake(true, aAddr, d.Fingerprint(), tc.profiles...)
			if err != nil {
				t.Fatal(err)
			}
			r := res.next(t)
			if r.Err != nil || r.Client || r.Suite != tc.want || r.Peer != ph.addr() || r.Reason() != "ok" {
				t.Fatalf("%+v", r)
			}
			if _, ok := s.Transform(LegA).(*SRTP); !ok {
				t.Fatal("no SRTP transform after the handshake")
			}
			checkMedia(t, s, ph, enc, dec, pb)
			if st := d.Stats(); st.Handshakes != 1 || st.Completed != 1 || st.Refused != 0 {
				t.Fatalf("%+v", st)
			}
			if st := s.Stats().A; st.Dropped[DropDTLS] != 0 || st.Dropped[DropNotReady] != 1 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

func TestDTLSClientPionServer(t *testing.T) {
	pp := newTestPool(t)
	ph, pb := newDTLSPhone(t), newPhone(t)
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupActive, RemoteSetup: SetupPassive,
		RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
	// The phone's server must listen before our ClientHello goes out:
	// pion retransmits anyway, but start it first.
	type hs struct {
		enc, dec *pion.Context
		err      error
	}
	ports := allocate(t, pp, true)
	done := make(chan hs, 1)
	go func() {
		enc, dec, err := ph.handshake(false, ports.RTPAddr(), d.Fingerprint())
		done <- hs{enc, dec, err}
	}()
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: ports, Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	var h hs
	select {
	case h = <-done:
	case <-time.After(waitLimit):
		t.Fatal("phone handshake")
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
	r := res.next(t)
	if r.Err != nil || !r.Client || r.Suite != AEAD_AES_128_GCM {
		t.Fatalf("%+v", r)
	}
	checkMedia(t, s, ph, h.enc, h.dec, pb)
}

func TestDTLSWrongFingerprintRefused(t *testing.T) {
	pp := newTestPool(t)
	ph, pb := newDTLSPhone(t), newPhone(t)
	other, _ := GenerateCertificate()
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive,
		RemoteFingerprints: []Fingerprint{other.Fingerprint}, OnDone: onDone})
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	if _, _, err := ph.handshake(true, aAddr, d.Fingerprint()); err == nil {
		t.Fatal("handshake with a certificate that does not match the SDP succeeded")
	}
	r := res.next(t)
	if !errors.Is(r.Err, ErrFingerprintMismatch) || r.Reason() != "fingerprint" {
		t.Fatalf("%+v", r)
	}
	if _, ok := s.Transform(LegA).(NotReady); !ok {
		t.Fatal("keys installed after a refused certificate")
	}
}

func TestDTLSActpassEarlyClientHello(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  Setup
		fp     func(ph *dtlsPhone) Fingerprint
		reason string
	}{
		{"answer matches", SetupActive, func(ph *dtlsPhone) Fingerprint { return ph.cert.Fingerprint }, "ok"},
		{"answer with another fingerprint", SetupActive, func(*dtlsPhone) Fingerprint { return sbcCert.Fingerprint }, "fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pp := newTestPool(t)
			ph, pb := newDTLSPhone(t), newPhone(t)
			res, onDone := newResults()
			d := newTestDTLS(t, DTLSConfig{Setup: SetupActpass, OnDone: onDone})
			s := newTestStream(t, StreamConfig{
				A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d},
				B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
			})
			aAddr, _ := s.LocalAddr(LegA)
			// The peer answers active and its ClientHello overtakes the
			// answer (RFC 5763 §5): we accept it as server.
			enc, dec, err := ph.handshake(true, aAddr, d.Fingerprint())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.Transform(LegA).(NotReady); !ok {
				t.Fatal("keys installed before the fingerprint was known")
			}
			if err := d.SetRemote(tc.setup, []Fingerprint{tc.fp(ph)}); err != nil {
				t.Fatal(err)
			}
			r := res.next(t)
			if r.Reason() != tc.reason {
				t.Fatalf("%+v", r)
			}
			if tc.reason == "ok" {
				checkMedia(t, s, ph, enc, dec, pb)
			} else if _, ok := s.Transform(LegA).(NotReady); !ok {
				t.Fatal("keys installed after a refused certificate")
			}
		})
	}
}

func TestDTLSRoles(t *testing.T) {
	fp := []Fingerprint{sbcCert.Fingerprint}
	for _, tc := range []struct {
		ours, theirs Setup
		client, ok   bool
	}{
		{SetupActpass, SetupActive, false, true},
		{SetupActpass, SetupPassive, true, true},
		{SetupActpass, SetupActpass, false, false},
		{SetupActive, SetupPassive, true, true},
		{SetupActive, SetupActive, false, false},
		{SetupPassive, SetupActive, false, true},
		{SetupPassive, SetupActpass, false, true},
		{SetupPassive, SetupPassive, false, false},
		{SetupActpass, SetupHoldconn, false, false},
	} {
		d, err := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: tc.ours})
		if err != nil {
			t.Fatal(err)
		}
		err = d.SetRemote(tc.theirs, fp)
		if (err == nil) != tc.ok || (err == nil && d.Client() != tc.client) {
			t.Errorf("%v/%v: %v client=%v", tc.ours, tc.theirs, err, d.Client())
		}
		if err != nil && !errors.Is(err, ErrDTLSRole) {
			t.Errorf("%v/%v: %v", tc.ours, tc.theirs, err)
		}
	}
	if _, err := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: SetupHoldconn}); !errors.Is(err, ErrDTLSRole) {
		t.Fatal(err)
	}
	if _, err := NewDTLS(DTLSConfig{Setup: SetupPassive}); err == nil {
		t.Fatal("no certificate accepted")
	}
	if _, err := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: SetupPassive, Suites: []Suite{AES_256_CM_HMAC_SHA1_80}}); err == nil {
		t.Fatal("AES_256_CM accepted for DTLS")
	}
	d, _ := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: SetupPassive})
	if err := d.SetRemote(SetupActive, []Fingerprint{{Hash: "sha-1", Value: make([]byte, 20)}}); !errors.Is(err, ErrBadFingerprint) {
		t.Fatal(err)
	}
	if err := d.SetRemote(SetupActive, fp); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRemote(SetupActive, fp); err != nil {
		t.Fatal("the same answer twice refused:", err)
	}
	if err := d.SetRemote(SetupActive, []Fingerprint{{Hash: "sha-256", Value: make([]byte, 32)}}); err == nil {
		t.Fatal("a new fingerprint accepted on the same association")
	}
}

// fakeClientHello has what isClientHello looks at and nothing more.
func fakeClientHello() []byte {
	b := make([]byte, 80)
	b[0], b[1], b[2], b[13] = 22, 0xfe, 0xfd, 1
	return b
}

// TestDTLSForgedClientHello: a ClientHello from a source the leg does not
// accept creates no session; one while we are active is a role conflict;
// the real peer then completes.
func TestDTLSForgedClientHello(t *testing.T) {
	pp := newTestPool(t)
	ph, pb, attacker := newDTLSPhone(t), newPhone(t), newPhone(t)
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive,
		RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	attacker.send(fakeClientHello(), aAddr)
	attacker.send([]byte{23, 0xfe, 0xfd, 0, 1, 2, 3}, aAddr) // not a ClientHello either
	waitFor(t, "refusals", func() bool { return d.Stats().Refused == 2 })
	if st := d.Stats(); st.Handshakes != 0 {
		t.Fatalf("%+v", st)
	}
	if _, _, err := ph.handshake(true, aAddr, d.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if r := res.next(t); r.Err != nil {
		t.Fatal(r.Err)
	}
	// Once established, the association is the only one.
	attacker.send(fakeClientHello(), aAddr)
	waitFor(t, "refusal", func() bool { return d.Stats().Refused == 3 })

	// Active side: a ClientHello is a role conflict, not a session.
	pc := newPhone(t)
	d2 := newTestDTLS(t, DTLSConfig{Setup: SetupActive})
	s2 := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pc.addr(), Handler: d2},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	a2, _ := s2.LocalAddr(LegA)
	pc.send(fakeClientHello(), a2)
	waitFor(t, "conflict", func() bool { return d2.Stats().RoleConflicts == 1 })
	if d2.Stats().Handshakes != 0 {
		t.Fatal("session created")
	}
}

// TestDTLSHandshakeTimeout: a ClientHello (replayed, from the accepted
// address) whose sender never answers our HelloVerifyRequest ends in a
// timeout, and frees the slot; Close with the stream leaves nothing.
func TestDTLSHandshakeTimeout(t *testing.T) {
	// Capture a real ClientHello.
	cap1 := newPhone(t)
	ph := newDTLSPhone(t)
	go func() { _, _, _ = ph.handshake(true, cap1.addr(), sbcCert.Fingerprint) }()
	hello, _ := cap1.recv()
	hello = bytes.Clone(hello)
	if !isClientHello(hello) {
		t.Fatalf("not a ClientHello: % x", hello[:16])
	}

	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive,
		RemoteFingerprints: []Fingerprint{sbcCert.Fingerprint}, OnDone: onDone, HandshakeTimeout: 200 * time.Millisecond})
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	pa.send(hello, aAddr)
	if got, _ := pa.recv(); len(got) == 0 || got[0] != 22 {
		t.Fatal("no HelloVerifyRequest") // the reply goes to the ClientHello's source
	}
	r := res.next(t)
	if r.Reason() != "timeout" {
		t.Fatalf("%+v", r)
	}
	pa.send(hello, aAddr) // the slot is free again
	waitFor(t, "second attempt", func() bool { return d.Stats().Handshakes == 2 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if !closed {
		t.Fatal("stream did not close its DTLS handler")
	}
}

func TestDTLSLearnLegMovesToHandshakePeer(t *testing.T) {
	pp := newTestPool(t)
	ph, pb := newDTLSPhone(t), newPhone(t)
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive,
		RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
	private := netip.MustParseAddrPort("127.0.0.1:9") // what a NATed phone's SDP says
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: private, Learn: true, Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	enc, dec, err := ph.handshake(true, aAddr, d.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if r := res.next(t); r.Err != nil {
		t.Fatal(r.Err)
	}
	// Media from B reaches the phone before the phone sent any SRTP.
	bAddr, _ := s.LocalAddr(LegB)
	back := rtpPacket(5, 1, 0, 20)
	pb.send(back, bAddr)
	if got, err := dec.DecryptRTP(nil, ph.recvMedia(), nil); err != nil || !bytes.Equal(got, back) {
		t.Fatal(err)
	}
	checkMedia(t, s, ph, enc, dec, pb)
}

func BenchmarkDTLSHandshake(b *testing.B) {
	pp := newTestPool(b)
	ph, pb := newDTLSPhone(b), newPhone(b)
	d := newTestDTLS(b, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive, RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}})
	s := newTestStream(b, StreamConfig{
		A: LegConfig{Ports: allocate(b, pp, true), Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(b, pp, true), Remote: pb.addr()},
	})
	aAddr, _ := s.LocalAddr(LegA)
	b.ReportAllocs()
	for b.Loop() {
		res, onDone := newResults()
		nd, err := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: SetupPassive, RemoteSetup: SetupActive,
			RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
		if err != nil {
			b.Fatal(err)
		}
		if old, ok := s.SetHandler(LegA, nd).(*DTLS); ok {
			_ = old.Close()
		}
		if _, _, err := ph.handshake(true, aAddr, nd.Fingerprint()); err != nil {
			b.Fatal(err)
		}
		if r := res.next(b); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// TestDTLSCloseLeaksNothing: after an established association, the
// stream's Close ends the DTLS goroutines (pion's included).
func TestDTLSCloseLeaksNothing(t *testing.T) {
	pp := newTestPool(t)
	pb := newPhone(t)
	_ = pickWorker() // the relay loops live for the process: start them before counting
	before := runtime.NumGoroutine()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	ph := &dtlsPhone{t: t, conn: c, cert: sbcCert, media: make(chan []byte, 256)}
	ph.wg.Add(1)
	go ph.read()
	res, onDone := newResults()
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive,
		RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}, OnDone: onDone})
	s, err := NewStream(StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	if err != nil {
		t.Fatal(err)
	}
	aAddr, _ := s.LocalAddr(LegA)
	if _, _, err := ph.handshake(true, aAddr, d.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if r := res.next(t); r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ph.mu.Lock()
	_ = ph.dc.Close()
	_ = ph.fc.Close()
	ph.mu.Unlock()
	_ = c.Close()
	ph.wg.Wait()
	for i := 0; runtime.NumGoroutine() > before && i < 1000; i++ {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestDTLSWithoutRTCPMux: a leg without rtcp-mux runs one DTLS association
// per component (RFC 5764 4.1), on its RTP and RTCP sockets, in the role
// the SDP gave, against the peer's one certificate: RTP is keyed by the
// RTP association and RTCP by the RTCP one (SRTCP protected with the RTP
// association's keys is refused), both ways, with the SBC as DTLS server
// and as client.
func TestDTLSWithoutRTCPMux(t *testing.T) {
	for _, sbcClient := range []bool{false, true} {
		t.Run(map[bool]string{false: "sbc-server", true: "sbc-client"}[sbcClient], func(t *testing.T) {
			pp := newTestPool(t)
			phRTP, phRTCP := newDTLSPhone(t), newDTLSPhone(t)
			phRTCP.cert = phRTP.cert // one endpoint, one certificate
			pb, pbRTCP := newPhone(t), newPhone(t)
			res, onDone := newResults()
			setup, remote := SetupPassive, SetupActive
			if sbcClient {
				setup, remote = SetupActive, SetupPassive
			}
			d := newTestDTLS(t, DTLSConfig{Setup: setup, RemoteSetup: remote,
				RemoteFingerprints: []Fingerprint{phRTP.cert.Fingerprint}, OnDone: onDone})
			aPorts := allocate(t, pp, false)
			type hs struct {
				enc, dec *pion.Context
				err      error
			}
			done := [2]chan hs{make(chan hs, 1), make(chan hs, 1)}
			for i, c := range []struct {
				ph *dtlsPhone
				to netip.AddrPort
			}{{phRTP, aPorts.RTPAddr()}, {phRTCP, aPorts.RTCPAddr()}} {
				go func() {
					enc, dec, err := c.ph.handshake(!sbcClient, c.to, d.Fingerprint())
					done[i] <- hs{enc, dec, err}
				}()
			}
			s := newTestStream(t, StreamConfig{
				A: LegConfig{Ports: aPorts, Remote: phRTP.addr(), RemoteRTCP: phRTCP.addr(), Handler: d},
				B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr(), RemoteRTCP: pbRTCP.addr()},
			})
			var h [2]hs
			for i := range h {
				select {
				case h[i] = <-done[i]:
				case <-time.After(waitLimit):
					t.Fatalf("phone handshake %d", i)
				}
				if h[i].err != nil {
					t.Fatal(h[i].err)
				}
			}
			var sawRTP, sawRTCP bool
			for range 2 {
				r := res.next(t)
				if r.Err != nil || r.Client != sbcClient {
					t.Fatalf("%+v", r)
				}
				if r.RTCP {
					sawRTCP = r.Peer == phRTCP.addr()
				} else {
					sawRTP = r.Peer == phRTP.addr()
				}
			}
			if !sawRTP || !sawRTCP {
				t.Fatalf("results: RTP %v RTCP %v", sawRTP, sawRTCP)
			}
			checkMedia(t, s, phRTP, h[0].enc, h[0].dec, pb)

			// SRTCP on the RTCP sockets, keyed by the RTCP association.
			_, aRTCP := s.LocalAddr(LegA)
			_, bRTCP := s.LocalAddr(LegB)
			w, err := h[1].enc.EncryptRTCP(nil, rtcpRR(0xd715), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := phRTCP.conn.WriteToUDPAddrPort(w, aRTCP); err != nil {
				t.Fatal(err)
			}
			if got, from := pbRTCP.recv(); !bytes.Equal(got, rtcpRR(0xd715)) || from != bRTCP {
				t.Fatalf("B's RTCP got % x from %v", got, from)
			}
			pbRTCP.send(rtcpRR(0xb0b), bRTCP)
			if got, err := h[1].dec.DecryptRTCP(nil, phRTCP.recvMedia(), nil); err != nil || !bytes.Equal(got, rtcpRR(0xb0b)) {
				t.Fatalf("the phone's RTCP association cannot decrypt: %v", err)
			}
			// The RTP association's keys do not open the RTCP component
			// (an SRTCP index the RTCP context has not seen: its
			// authentication fails, not its replay check).
			for range 3 {
				if w, err = h[0].enc.EncryptRTCP(nil, rtcpRR(0xd715), nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := phRTCP.conn.WriteToUDPAddrPort(w, aRTCP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the wrongly keyed SRTCP refused", func() bool { return s.Stats().A.AuthFailures() == 1 })
			if st := d.Stats(); st.Handshakes != 2 || st.Completed != 2 || st.Dropped != 0 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// TestDTLSRetiredInstallsNothing: a handler replaced by a new association
// (Retire) whose handshake completes afterwards leaves the leg's keys
// alone: the leg stays NotReady here, where it would have been keyed.
func TestDTLSRetiredInstallsNothing(t *testing.T) {
	pp := newTestPool(t)
	ph, pb := newDTLSPhone(t), newPhone(t)
	d := newTestDTLS(t, DTLSConfig{Setup: SetupPassive, RemoteSetup: SetupActive, RemoteFingerprints: []Fingerprint{ph.cert.Fingerprint}})
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: ph.addr(), Handler: d},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	d.Retire()
	aAddr, _ := s.LocalAddr(LegA)
	if _, _, err := ph.handshake(true, aAddr, d.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	_ = d.Close() // waits for its handshake goroutine
	if _, ok := s.Transform(LegA).(NotReady); !ok {
		t.Fatalf("a retired handler installed %T", s.Transform(LegA))
	}
}
