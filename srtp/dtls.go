package srtp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/deadline"
)

// DTLSSuites are the SRTP profiles offered in DTLS use_srtp (RFC 5764
// §4.1.2, RFC 7714 §14.2), in preference order: GCM first (cheapest in
// pion, see the notes), then the RFC 5764 mandatory AES_CM_128_HMAC_SHA1_80.
// As DTLS server the SBC picks by this order; as client the server picks.
var DTLSSuites = []Suite{AEAD_AES_128_GCM, AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32}

// DefaultHandshakeTimeout bounds a handshake, from the first ClientHello
// (server) or the start of the client.
const DefaultHandshakeTimeout = 15 * time.Second

// maxDTLSAttempts bounds the handshakes one DTLS handler runs: after a
// failure (a forged ClientHello from an accepted source, a timeout, a
// wrong certificate), the next ClientHello may start a new one, that many
// times in all.
const maxDTLSAttempts = 4

// DTLS errors, as reported in DTLSResult.Err (wrapped).
var (
	// ErrFingerprintMismatch: the peer's certificate does not have the
	// fingerprint its SDP announced.
	ErrFingerprintMismatch = errors.New("srtp: DTLS peer certificate does not match the SDP fingerprint")
	// ErrDTLSRole: the roles do not fit (both sides passive or active,
	// or a ClientHello from a peer whose SDP says passive).
	ErrDTLSRole = errors.New("srtp: DTLS setup roles conflict")
	// ErrDTLSTimeout: the handshake did not complete in time.
	ErrDTLSTimeout = errors.New("srtp: DTLS handshake timed out")
	// ErrDTLSChanged: SetRemote with other parameters than the first
	// time (another fingerprint or setup: a new association, so a new
	// DTLS). It is an ErrDTLSRole too.
	ErrDTLSChanged = errors.New("srtp: the peer's DTLS parameters changed: a new association needs a new DTLS")
)

// DTLSConfig configures NewDTLS.
type DTLSConfig struct {
	// Certificate is the SBC's (required); its Fingerprint goes into the
	// SDP sent to the leg.
	Certificate *Certificate
	// Setup is what the SDP sent to the leg says: SetupActpass (our offer:
	// we accept a ClientHello before the answer, as server), SetupPassive
	// (server) or SetupActive (client).
	Setup Setup
	// RemoteSetup and RemoteFingerprints are what the leg's SDP says,
	// when it is already known (we answer its offer); otherwise call
	// SetRemote when the answer comes.
	RemoteSetup        Setup
	RemoteFingerprints []Fingerprint
	// Suites are the SRTP profiles offered, in preference order; nil
	// means DTLSSuites. AES_256_CM suites are not defined for DTLS.
	Suites []Suite
	// HandshakeTimeout bounds each handshake; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// OnDone, if set, is called after each handshake attempt: once with
	// Err nil when the leg's SRTP transform is installed, or with the
	// failure. It runs on a goroutine of its own (it may close the
	// stream).
	OnDone func(DTLSResult)
}

// DTLSResult is the outcome of one handshake.
type DTLSResult struct {
	Leg    LegID
	Peer   netip.AddrPort // where the handshake ran
	Client bool           // the role acted (true: active, DTLS client)
	Suite  Suite          // negotiated profile (on success)
	// RTCP: the association of the RTCP component (a leg without
	// rtcp-mux); false for the RTP component's.
	RTCP bool
	Err  error
}

// Reason is a stable metric label for the result: "ok", "fingerprint",
// "role", "timeout" or "error".
func (r DTLSResult) Reason() string {
	switch {
	case r.Err == nil:
		return "ok"
	case errors.Is(r.Err, ErrFingerprintMismatch):
		return "fingerprint"
	case errors.Is(r.Err, ErrDTLSRole):
		return "role"
	case errors.Is(r.Err, ErrDTLSTimeout):
		return "timeout"
	}
	return "error"
}

// DTLSStats counts what a DTLS handler refused.
type DTLSStats struct {
	// Handshakes started and Completed (keys installed).
	Handshakes, Completed uint64
	// Refused: DTLS from a source the leg does not accept (not the
	// latched or announced address, not ICE-validated), or a first
	// datagram that is not a ClientHello.
	Refused uint64
	// RoleConflicts: ClientHellos while we act as client, or a peer's SDP
	// that contradicts the role acted.
	RoleConflicts uint64
	// Dropped: queue full, after close, or not DTLS.
	Dropped uint64
}

// DTLS terminates DTLS-SRTP (RFC 5763/5764) on one leg of a Stream. It is
// the leg's DatagramHandler (alone, or inside a SecureLeg with ICE-lite):
// DTLS datagrams from the leg's socket feed the handshake, replies leave
// from the same socket towards the handshake's peer (the source of the
// ClientHello, not the SDP port: pitfall 4). When the handshake completes
// and the peer's certificate matches its SDP fingerprint, it installs the
// leg's SRTP transform (KeysFromDTLS, NewSRTP, Stream.SetTransform);
// until then the leg's packets are dropped as not_ready. The stream binds
// it (the leg starts NotReady) and closes it.
//
// One association per component (RFC 5764 4.1): with rtcp-mux (what
// browsers do) one, on the RTP socket, whose keys protect RTP and RTCP
// alike; without it a second one on the RTCP socket, in the same role
// and against the same fingerprints, whose keys protect RTCP (the leg's
// RTP flows once its own association is up). A new association (re-INVITE
// with a new fingerprint or setup) is a new DTLS installed with
// Stream.SetHandler.
type DTLS struct {
	cert    *Certificate
	setup   Setup
	suites  []Suite
	timeout time.Duration
	onDone  func(DTLSResult)

	s  *Stream
	id LegID
	// gate, when set (ICE), replaces the stream's source check.
	gate func(netip.AddrPort) bool

	mu        sync.Mutex
	client    bool // role acted
	remoteSet bool
	remote    Setup
	fps       []Fingerprint
	// Per component (compRTP, and compRTCP on a leg without rtcp-mux):
	// the current or established association, whether its keys are
	// installed, and how many handshakes it ran.
	sess       [2]*dtlsSession
	done       [2]bool
	attempts   [2]int
	selected   netip.AddrPort // ICE-selected address (client target)
	closed     bool
	retired    bool // replaced (Retire): installs nothing any more
	wg         sync.WaitGroup
	handshakes atomic.Uint64
	completed  atomic.Uint64
	refused    atomic.Uint64
	conflicts  atomic.Uint64
	dropped    atomic.Uint64
}

// The components of a leg (RFC 5764 4.1).
const (
	compRTP  = 0
	compRTCP = 1
)

type dtlsSession struct {
	comp   int
	conn   *feedConn
	eng    dtlsEngine
	peer   netip.AddrPort
	client bool
	// Set under DTLS.mu.
	leaf      []byte // peer certificate, when seen
	verified  bool
	mismatch  bool
	handshook bool
	transform *SRTP
	suite     Suite
}

// NewDTLS makes a DTLS handler for one leg. Put it in the leg's
// LegConfig.Handler (or a SecureLeg).
func NewDTLS(cfg DTLSConfig) (*DTLS, error) {
	if cfg.Certificate == nil {
		return nil, errors.New("srtp: DTLS needs a certificate")
	}
	d := &DTLS{cert: cfg.Certificate, setup: cfg.Setup, suites: cfg.Suites, timeout: cfg.HandshakeTimeout, onDone: cfg.OnDone}
	if d.suites == nil {
		d.suites = DTLSSuites
	}
	for _, s := range d.suites {
		if _, ok := dtlsProfiles[s]; !ok {
			return nil, fmt.Errorf("srtp: %v cannot be negotiated by DTLS", s)
		}
	}
	if d.timeout <= 0 {
		d.timeout = DefaultHandshakeTimeout
	}
	switch cfg.Setup {
	case SetupActive:
		d.client = true
	case SetupPassive, SetupActpass:
	default:
		return nil, fmt.Errorf("%w: we cannot advertise a=setup:%v", ErrDTLSRole, cfg.Setup)
	}
	if cfg.RemoteSetup != SetupNone || cfg.RemoteFingerprints != nil {
		if err := d.setRemoteLocked(cfg.RemoteSetup, cfg.RemoteFingerprints); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Fingerprint is our certificate's, for the SDP sent to the leg.
func (d *DTLS) Fingerprint() Fingerprint { return d.cert.Fingerprint }

// Client reports the role acted so far (true: DTLS client).
func (d *DTLS) Client() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// Stats returns the handler's counters.
func (d *DTLS) Stats() DTLSStats {
	return DTLSStats{Handshakes: d.handshakes.Load(), Completed: d.completed.Load(), Refused: d.refused.Load(),
		RoleConflicts: d.conflicts.Load(), Dropped: d.dropped.Load()}
}

// SetRemote gives the peer's a=setup and a=fingerprint (the answer to our
// offer). It fixes the role (an actpass offer answered passive makes us
// the client, which then starts), and checks a certificate already
// received (a ClientHello that came before the answer). Calling it again
// with the same values does nothing; other values need a new DTLS.
func (d *DTLS) SetRemote(setup Setup, fps []Fingerprint) error {
	d.mu.Lock()
	err := d.setRemoteLocked(setup, fps)
	var res [2]*DTLSResult
	sess := d.sess
	for c := range sess {
		if err == nil && sess[c] != nil && sess[c].handshook && !d.done[c] {
			res[c] = d.finishLocked(sess[c])
		}
	}
	start := err == nil && d.client
	d.mu.Unlock()
	for c, r := range res {
		if r != nil {
			if r.Err != nil {
				sess[c].close()
			}
			d.report(*r)
		}
	}
	if start {
		d.startClient()
	}
	return err
}

func (d *DTLS) setRemoteLocked(setup Setup, fps []Fingerprint) error {
	if d.remoteSet {
		if setup == d.remote && sameFingerprints(fps, d.fps) {
			return nil
		}
		return fmt.Errorf("%w (%w)", ErrDTLSChanged, ErrDTLSRole)
	}
	ok := false
	for _, f := range fps {
		if h, known := fingerprintHashes[f.Hash]; known && len(f.Value) == h.Size() {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: no usable fingerprint from the peer", ErrBadFingerprint)
	}
	client := d.client
	switch {
	case d.setup == SetupActive && (setup == SetupPassive || setup == SetupActpass):
	case d.setup == SetupPassive && (setup == SetupActive || setup == SetupActpass || setup == SetupNone):
	case d.setup == SetupActpass && (setup == SetupActive || setup == SetupNone):
		client = false
	case d.setup == SetupActpass && setup == SetupPassive:
		client = true
	default:
		d.conflicts.Add(1)
		return fmt.Errorf("%w: we said %v, the peer %v", ErrDTLSRole, d.setup, setup)
	}
	if client && ((d.sess[compRTP] != nil && !d.sess[compRTP].client) || (d.sess[compRTCP] != nil && !d.sess[compRTCP].client)) {
		// The peer sent a ClientHello and now says passive.
		d.conflicts.Add(1)
		return fmt.Errorf("%w: the peer said passive after sending a ClientHello", ErrDTLSRole)
	}
	d.client, d.remote, d.fps, d.remoteSet = client, setup, append([]Fingerprint(nil), fps...), true
	return nil
}

func sameFingerprints(a, b []Fingerprint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Hash != b[i].Hash || string(a[i].Value) != string(b[i].Value) {
			return false
		}
	}
	return true
}

// BindStream is called by the stream: the leg starts NotReady, and a
// client whose peer is known starts.
func (d *DTLS) BindStream(s *Stream, id LegID) {
	d.mu.Lock()
	d.s, d.id = s, id
	start := d.client && d.remoteSet
	d.mu.Unlock()
	s.SetTransform(id, NotReady{})
	if start {
		d.startClient()
	}
}

// peerSelected is ICE's selection (SecureLeg): the client's target.
func (d *DTLS) peerSelected(a netip.AddrPort) {
	d.mu.Lock()
	d.selected = a
	start := d.client && d.remoteSet
	d.mu.Unlock()
	if start {
		d.startClient()
	}
}

// startClient starts the client handshakes that are not running, towards
// the ICE-selected address, else the component's current destination.
func (d *DTLS) startClient() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.s == nil || !d.client {
		return
	}
	for c := range d.components() {
		if d.sess[c] != nil || d.attempts[c] >= maxDTLSAttempts {
			continue
		}
		to := d.selected
		if d.gate == nil || c == compRTCP {
			var ok bool
			if to, ok = d.s.compDest(d.id, c == compRTCP); !ok {
				continue // no address yet: Expect or ICE will tell
			}
		}
		if usable(to) {
			d.newSessionLocked(c, to, true)
		}
	}
}

// components is how many the leg has: 1 with rtcp-mux, else 2.
func (d *DTLS) components() int {
	if d.s.muxed(d.id) {
		return 1
	}
	return 2
}

func (d *DTLS) newSessionLocked(comp int, peer netip.AddrPort, client bool) *dtlsSession {
	conn := newFeedConn(d.s.compConn(d.id, comp == compRTCP), peer)
	sess := &dtlsSession{comp: comp, conn: conn, peer: peer, client: client}
	eng, err := newDTLSEngine(conn, net.UDPAddrFromAddrPort(peer), dtlsEngineConfig{
		cert: d.cert, client: client, suites: d.suites,
		verify: func(leaf []byte) error { return d.verify(sess, leaf) },
	})
	d.attempts[comp]++
	if err != nil {
		_ = conn.Close()
		res := DTLSResult{Leg: d.id, Peer: peer, Client: client, Err: err}
		d.report(res) // on a goroutine of its own
		return nil
	}
	sess.eng = eng
	d.sess[comp] = sess
	d.handshakes.Add(1)
	d.wg.Add(1)
	go d.run(sess)
	return sess
}

// verify runs in the handshake (VerifyPeerCertificate).
func (d *DTLS) verify(sess *dtlsSession, leaf []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	sess.leaf = append([]byte(nil), leaf...)
	if !d.remoteSet {
		return nil // early ClientHello on our actpass offer: checked when the answer comes
	}
	if !matchAny(d.fps, leaf) {
		sess.mismatch = true
		return ErrFingerprintMismatch
	}
	sess.verified = true
	return nil
}

func matchAny(fps []Fingerprint, leaf []byte) bool {
	ok := false
	for _, f := range fps {
		if f.Matches(leaf) { // no early exit: constant work per fingerprint
			ok = true
		}
	}
	return ok
}

func (d *DTLS) run(sess *dtlsSession) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	err := sess.eng.Handshake(ctx)
	timedOut := ctx.Err() == context.DeadlineExceeded
	cancel()
	var t *SRTP
	var suite Suite
	if err == nil {
		var exp interface {
			ExportKeyingMaterial(string, []byte, int) ([]byte, error)
		}
		suite, exp, err = sess.eng.SRTP()
		if err == nil {
			var local, remote SRTPKeys
			if local, remote, err = KeysFromDTLS(exp, suite.Profile(), sess.client); err == nil {
				t, err = NewSRTP(local, remote)
			}
		}
	}
	d.mu.Lock()
	if d.closed || d.retired {
		d.mu.Unlock()
		return
	}
	var res *DTLSResult
	if err != nil {
		switch {
		case sess.mismatch:
			err = fmt.Errorf("%w (%v)", ErrFingerprintMismatch, err)
		case timedOut:
			err = fmt.Errorf("%w after %v", ErrDTLSTimeout, d.timeout)
		default:
			err = fmt.Errorf("srtp: DTLS handshake: %w", err)
		}
		res = d.failLocked(sess, err)
	} else {
		sess.handshook, sess.transform, sess.suite = true, t, suite
		if d.remoteSet {
			res = d.finishLocked(sess)
		}
	}
	d.mu.Unlock()
	if res != nil {
		d.report(*res)
		if res.Err != nil {
			sess.close()
			return
		}
	}
	// Keep reading: pion answers a retransmitted final flight and alerts
	// from here. Ends on close_notify or Close.
	buf := make([]byte, 1500)
	for {
		if _, err := sess.eng.Read(buf); err != nil {
			return
		}
	}
}

// finishLocked verifies a completed handshake's certificate against the
// fingerprints (if the handshake did not) and installs the transform.
func (d *DTLS) finishLocked(sess *dtlsSession) *DTLSResult {
	if !sess.verified {
		if sess.leaf == nil || !matchAny(d.fps, sess.leaf) {
			return d.failLocked(sess, ErrFingerprintMismatch)
		}
		sess.verified = true
	}
	d.done[sess.comp] = true
	d.completed.Add(1)
	d.install()
	if sess.comp == compRTP && d.gate == nil && d.s.learns(d.id) {
		// Media to a leg behind NAT goes where the handshake ran, not to
		// the private SDP address (SRTP authentication keeps the latch
		// safe).
		if dst, ok := d.s.dest(d.id); !ok || dst != sess.peer {
			if _, latched := d.s.Latched(d.id); !latched {
				d.s.Expect(d.id, sess.peer, netip.AddrPort{})
			}
		}
	}
	return &DTLSResult{Leg: d.id, Peer: sess.peer, Client: sess.client, Suite: sess.suite, RTCP: sess.comp == compRTCP}
}

// install gives the leg the keys of the components done: one
// association's for RTP and RTCP with rtcp-mux; without it, each
// component's for its own packets (NotReady until it is up).
func (d *DTLS) install() {
	if d.components() == 1 {
		d.s.SetTransform(d.id, d.sess[compRTP].transform)
		return
	}
	var t [2]Transform
	for c := range t {
		t[c] = NotReady{}
		if d.done[c] {
			t[c] = d.sess[c].transform
		}
	}
	d.s.SetTransform(d.id, splitTransform{rtp: t[compRTP], rtcp: t[compRTCP]})
}

// splitTransform protects RTP and RTCP with different transforms: the
// keys of two DTLS associations, on a leg without rtcp-mux.
type splitTransform struct{ rtp, rtcp Transform }

func (t splitTransform) InboundRTP(dst, pkt []byte) ([]byte, error) {
	return t.rtp.InboundRTP(dst, pkt)
}
func (t splitTransform) InboundRTCP(dst, pkt []byte) ([]byte, error) {
	return t.rtcp.InboundRTCP(dst, pkt)
}
func (t splitTransform) OutboundRTP(dst, pkt []byte) ([]byte, error) {
	return t.rtp.OutboundRTP(dst, pkt)
}
func (t splitTransform) OutboundRTCP(dst, pkt []byte) ([]byte, error) {
	return t.rtcp.OutboundRTCP(dst, pkt)
}

// failLocked frees the slot for another attempt; the caller closes the
// session once unlocked.
func (d *DTLS) failLocked(sess *dtlsSession, err error) *DTLSResult {
	if d.sess[sess.comp] == sess {
		d.sess[sess.comp] = nil
	}
	return &DTLSResult{Leg: d.id, Peer: sess.peer, Client: sess.client, RTCP: sess.comp == compRTCP, Err: err}
}

func (s *dtlsSession) close() {
	_ = s.eng.Close()
	_ = s.conn.Close()
}

func (d *DTLS) report(r DTLSResult) {
	if d.onDone != nil {
		go d.onDone(r)
	}
}

// isClientHello: a DTLS handshake record (type 22) of epoch 0 carrying a
// ClientHello (handshake type 1).
func isClientHello(b []byte) bool {
	return len(b) >= 13+12 && b[0] == 22 && b[1] == 0xfe && b[3] == 0 && b[4] == 0 && b[13] == 1
}

// HandleDatagram takes the leg's DTLS datagrams (see DatagramHandler).
func (d *DTLS) HandleDatagram(_ LegID, kind DatagramKind, pkt []byte, from netip.AddrPort, via PacketWriter) {
	if kind != KindDTLS {
		d.dropped.Add(1)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.s == nil {
		d.dropped.Add(1)
		return
	}
	comp := compRTP
	if d.s.isRTCPSocket(d.id, via) {
		comp = compRTCP
	}
	sess := d.sess[comp]
	if sess == nil {
		switch {
		case d.client:
			// We are active: a ClientHello means both sides are clients
			// (diago#174). Our own ClientHello goes out when we start.
			d.conflicts.Add(1)
			return
		case !isClientHello(pkt) || !d.allowed(comp, from) || d.attempts[comp] >= maxDTLSAttempts:
			d.refused.Add(1)
			return
		}
		if sess = d.newSessionLocked(comp, from, false); sess == nil {
			return
		}
	} else if from != sess.peer && !d.allowed(comp, from) {
		d.refused.Add(1)
		return
	}
	if !sess.conn.feed(pkt, from) {
		d.dropped.Add(1)
	}
}

func (d *DTLS) allowed(comp int, from netip.AddrPort) bool {
	if d.gate != nil && comp == compRTP {
		return d.gate(from)
	}
	return d.s.acceptsFrom(d.id, comp == compRTCP, from)
}

// Retire makes a handler that another replaced install nothing more: a
// handshake of its that completes later does not overwrite the new
// association's keys. It touches no socket (the owner closes it later,
// outside its locks).
func (d *DTLS) Retire() {
	d.mu.Lock()
	d.retired = true
	d.mu.Unlock()
}

// Close ends the association (close_notify to the peer) and waits for its
// goroutine. The stream calls it on Close.
func (d *DTLS) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	sess := d.sess
	d.mu.Unlock()
	for _, ss := range sess {
		if ss != nil {
			ss.close()
		}
	}
	d.wg.Wait()
	return nil
}

// feedConn is the net.PacketConn a DTLS engine runs on: ReadFrom returns
// what the stream's demux fed, WriteTo sends from the leg's socket to the
// latest source of an accepted datagram (the peer may move within the
// addresses the leg accepts, as ICE allows).
type feedConn struct {
	in    chan fedDatagram
	w     relayConn
	mu    sync.Mutex
	peer  netip.AddrPort
	done  chan struct{}
	once  sync.Once
	rdead *deadline.Deadline
}

type fedDatagram struct {
	b    []byte
	from netip.AddrPort
}

// feedQueue bounds what waits for the DTLS engine (a handshake flight is
// a few datagrams).
const feedQueue = 32

func newFeedConn(w relayConn, peer netip.AddrPort) *feedConn {
	return &feedConn{in: make(chan fedDatagram, feedQueue), w: w, peer: peer, done: make(chan struct{}), rdead: deadline.New()}
}

func (c *feedConn) feed(pkt []byte, from netip.AddrPort) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.in <- fedDatagram{append([]byte(nil), pkt...), from}:
		c.mu.Lock()
		c.peer = from
		c.mu.Unlock()
		return true
	default:
		return false
	}
}

func (c *feedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case <-c.done:
		return 0, nil, net.ErrClosed
	case <-c.rdead.Done():
		return 0, nil, os.ErrDeadlineExceeded
	case d := <-c.in:
		return copy(p, d.b), net.UDPAddrFromAddrPort(d.from), nil
	}
}

func (c *feedConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	to := c.peer
	c.mu.Unlock()
	return c.w.WriteToUDPAddrPort(p, to)
}

func (c *feedConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *feedConn) LocalAddr() net.Addr { return c.w.LocalAddr() }

func (c *feedConn) SetDeadline(t time.Time) error {
	c.rdead.Set(t)
	return nil
}

func (c *feedConn) SetReadDeadline(t time.Time) error {
	c.rdead.Set(t)
	return nil
}

// SetWriteDeadline does nothing: a UDP send does not block.
func (c *feedConn) SetWriteDeadline(time.Time) error { return nil }
