package sbc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/policy"
)

// TLS and secure WebSocket: the server side of "tls" and "wss" listeners,
// the client side towards "tls" pools, and trunk identity from client
// certificates.
//
// A listener's socket is wrapped twice: acceptFilter (blocklist, packet
// budget, connection caps, as for TCP) and secureListener, which makes
// every connection a secureConn. sipgo reads from it in its own
// goroutine; the first Read runs the TLS handshake under the listener's
// handshake_timeout (and, on "wss", reads the HTTP upgrade request to check
// its path and Origin before sipgo's WebSocket code sees it). So a slow or
// silent peer costs its own goroutine, never the accept loop. Every
// handshake is counted by result (sbc_tls_handshakes_total) and a refused
// one also as a drop of stage tls.
//
// The tls.Config of a handshake is built per connection from the snapshot
// in force (GetConfigForClient): certificate, CA bundle, client_auth,
// min_version and revoked pins all follow reloads and file changes, while
// open connections keep what they negotiated.
//
// Client certificates are verified here, not by crypto/tls (which is
// asked only to request them), so a refusal has a precise reason: missing,
// expired, not yet valid, unknown CA, revoked, or mapping to no trunk.
// Where client certificates are asked for, sessions are not resumed: every
// connection presents its certificate and has it checked.

// serverTLS is one tls/wss listener's settings, from one snapshot.
type serverTLS struct {
	realm     string
	transport string
	cfg       *policy.TLS
	cert      *certEntry
	ca        *caEntry // nil without ca_file
	revoked   map[string]bool
	path      string
	origins   map[string]bool // lower-cased; "*" any, "" none sent
}

// clientTLS is the client side towards the targets of a "tls" pool.
type clientTLS struct {
	cfg        *policy.TLS
	cert       *certEntry // nil: no client certificate
	ca         *caEntry   // nil: the system's roots
	serverName string
}

// listenerID names a listener in the snapshot's TLS tables.
func listenerID(realm string, l policy.Listener) string {
	return realm + " " + strings.ToLower(l.Transport) + " " + l.BindAddr.String()
}

// tlsTables are the TLS parts of a snapshot.
type tlsTables struct {
	servers map[string]*serverTLS     // by listenerID
	targets map[netip.Addr]*clientTLS // by target IP, for pools with transport "tls"
	realms  map[string]*serverTLS     // first tls/wss listener of each realm: the client side towards non-pool peers
	ids     map[policy.TLSIdentity]*policy.Trunk
	admin   *adminTLS // the admin listener's (nil: plain HTTP or none)
	// The files in use, for tlsFiles.retain once the snapshot is in force.
	certs map[keyPair]bool
	cas   map[string]bool
}

// buildTLS loads every file the policy names (a file that cannot be read
// fails the start or the reload) and builds the TLS tables.
func (s *SBC) buildTLS(p *policy.Policy) (tlsTables, error) {
	t := tlsTables{servers: map[string]*serverTLS{}, targets: map[netip.Addr]*clientTLS{},
		realms: map[string]*serverTLS{}, ids: map[policy.TLSIdentity]*policy.Trunk{}}
	usedCerts, usedCAs := map[keyPair]bool{}, map[string]bool{}
	load := func(c *policy.TLS) (*certEntry, *caEntry, error) {
		var ce *certEntry
		var ca *caEntry
		var err error
		if c.CertFile != "" {
			if ce, err = s.tls.cert(c.CertFile, c.KeyFile); err != nil {
				return nil, nil, err
			}
			usedCerts[keyPair{c.CertFile, c.KeyFile}] = true
		}
		if c.CAFile != "" {
			if ca, err = s.tls.ca(c.CAFile); err != nil {
				return nil, nil, err
			}
			usedCAs[c.CAFile] = true
		}
		return ce, ca, nil
	}
	for _, r := range p.Realms {
		for _, l := range r.Listeners {
			if l.TLS == nil {
				continue
			}
			ce, ca, err := load(l.TLS)
			if err != nil {
				return t, fmt.Errorf("realm %s listener %s %s: %w", r.Name, l.Transport, l.BindAddr, err)
			}
			st := &serverTLS{realm: r.Name, transport: strings.ToLower(l.Transport), cfg: l.TLS, cert: ce, ca: ca,
				revoked: map[string]bool{}, path: l.Path, origins: map[string]bool{}}
			for _, h := range l.TLS.RevokedSPKI {
				st.revoked[strings.ToLower(strings.ReplaceAll(h, ":", ""))] = true
			}
			for _, o := range l.Origins {
				st.origins[strings.ToLower(o)] = true
			}
			t.servers[listenerID(r.Name, l)] = st
			if t.realms[r.Name] == nil {
				t.realms[r.Name] = st
			}
		}
	}
	for _, pl := range p.Pools {
		if pl.TLS == nil {
			continue
		}
		ce, ca, err := load(pl.TLS)
		if err != nil {
			return t, fmt.Errorf("pool %s: %w", pl.Name, err)
		}
		ct := &clientTLS{cfg: pl.TLS, cert: ce, ca: ca, serverName: pl.TLS.ServerName}
		for _, tg := range pl.Targets {
			if _, dup := t.targets[tg.Addr.Addr()]; !dup {
				t.targets[tg.Addr.Addr()] = ct
				if tg.Name != "" && ct.serverName == "" {
					// An address of a host-name target: its certificate
					// must carry the name (resolve.go).
					byName := *ct
					byName.serverName = tg.Name
					t.targets[tg.Addr.Addr()] = &byName
				}
			}
		}
	}
	if at := p.Admin.TLS; at != nil && p.Admin.Listen != "" {
		ce, ca, err := load(at)
		if err != nil {
			return t, fmt.Errorf("admin.tls: %w", err)
		}
		t.admin = &adminTLS{cfg: at, cert: ce, ca: ca, revoked: map[string]bool{}}
		for _, h := range at.RevokedSPKI {
			t.admin.revoked[strings.ToLower(strings.ReplaceAll(h, ":", ""))] = true
		}
	}
	for i := range p.Trunks {
		for _, id := range p.Trunks[i].Identities {
			t.ids[id] = &p.Trunks[i]
		}
	}
	t.certs, t.cas = usedCerts, usedCAs
	return t, nil
}

// Handshake results: the result label of sbc_tls_handshakes_total, and
// the reasons of stage tls in sbc_dropped_total.
const (
	tlsOK = "ok" // a result, not a reason

	reasonTLSHandshake    reason = "handshake_failed"    // the TLS handshake failed (protocol version, no common cipher, not TLS, closed)
	reasonTLSTimeout      reason = "handshake_timeout"   // no complete handshake (or WebSocket upgrade) within handshake_timeout
	reasonCertMissing     reason = "cert_missing"        // client_auth "require" and no client certificate
	reasonCertExpired     reason = "cert_expired"        // the peer's certificate is past its NotAfter
	reasonCertNotYetValid reason = "cert_not_yet_valid"  // the peer's certificate is before its NotBefore
	reasonCertUnknownCA   reason = "cert_unknown_ca"     // the peer's certificate does not chain to ca_file (or the system roots)
	reasonCertRevoked     reason = "cert_revoked"        // the client certificate's key is in revoked_spki
	reasonCertInvalid     reason = "cert_invalid"        // any other certificate problem (usage, name, unparsable)
	reasonCertNoTrunk     reason = "cert_no_trunk"       // a verified client certificate that matches no trunk of the realm, from a source no trunk claims
	reasonWSOrigin        reason = "ws_origin"           // a WebSocket upgrade from an Origin not in the listener's origins
	reasonWSPath          reason = "ws_path"             // a WebSocket upgrade for another path than the listener's
	reasonWSUpgrade       reason = "ws_bad_upgrade"      // not a readable HTTP upgrade request
	reasonTLSIdentity     reason = "tls_identity_source" // a certificate of a trunk, from a source outside that trunk's sources
	reasonTLSNeedIdentity reason = "tls_identity_needed" // a source of a trunk that requires a certificate identity, without it
)

// tlsReasons is every refusal of stage tls.
var tlsReasons = []reason{reasonTLSHandshake, reasonTLSTimeout, reasonCertMissing, reasonCertExpired,
	reasonCertNotYetValid, reasonCertUnknownCA, reasonCertRevoked, reasonCertInvalid, reasonCertNoTrunk,
	reasonWSOrigin, reasonWSPath, reasonWSUpgrade}

// tlsClientResults is what the client side of sbc_tls_handshakes_total
// can say: only the server certificate's verification is seen there.
var tlsClientResults = []string{tlsOK, string(reasonTLSHandshake), string(reasonCertMissing), string(reasonCertExpired),
	string(reasonCertNotYetValid), string(reasonCertUnknownCA), string(reasonCertInvalid)}

// tlsFileResults are the results of sbc_tls_file_reloads_total.
var tlsFileResults = []string{"ok", "failed"}

// streamTransports are the connection listeners' transports (the
// transport label of sbc_connections_open).
var streamTransports = []string{"tcp", "tls", "wss"}

// certError carries the reason of a refused certificate through
// crypto/tls's verification callbacks.
type certError struct {
	r   reason
	err error
}

func (e *certError) Error() string { return string(e.r) + ": " + e.err.Error() }
func (e *certError) Unwrap() error { return e.err }

// certReason classifies an x509 verification error.
func certReason(err error) reason {
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if t := inv.Cert; t != nil && time.Now().Before(t.NotBefore) {
			return reasonCertNotYetValid
		}
		return reasonCertExpired
	case errors.As(err, &ua):
		return reasonCertUnknownCA
	}
	return reasonCertInvalid
}

// verifyChain verifies a peer's chain against roots (nil: the system's)
// for the given usage and, when name is not empty, that name.
func verifyChain(raw [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage, name string) (*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, &certError{reasonCertMissing, errors.New("no certificate")}
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, &certError{reasonCertInvalid, err}
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name,
		KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return nil, &certError{certReason(err), err}
	}
	return certs[0], nil
}

// secureListener turns accepted connections into secureConns.
type secureListener struct {
	net.Listener
	ep   *endpoint
	id   string // listenerID
	base *tls.Config
}

func (ep *endpoint) newSecureListener(inner net.Listener, id string) *secureListener {
	l := &secureListener{Listener: inner, ep: ep, id: id}
	l.base = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			raw, ok := hi.Conn.(*rawConn)
			if !ok {
				return nil, errors.New("tls: unexpected connection")
			}
			return raw.sc.config(), nil
		},
	}
	return l
}

func (l *secureListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &secureConn{l: l}
	raw := &rawConn{Conn: c, sc: sc}
	sc.Conn = tls.Server(raw, l.base)
	sc.prof = l.ep.sbc.state.Load().tls.servers[l.id]
	sc.src, _ = netip.ParseAddrPort(c.RemoteAddr().String())
	sc.src = netip.AddrPortFrom(sc.src.Addr().Unmap(), sc.src.Port())
	if sc.prof != nil && sc.prof.transport == "tls" {
		// SIP over TLS: framed and checked message by message (stream.go).
		return l.ep.newStreamConn(sc, sc.src), nil
	}
	return sc, nil
}

// rawConn is the TCP connection under a secureConn: it lets
// GetConfigForClient find the secureConn being handshaken.
type rawConn struct {
	net.Conn
	sc *secureConn
}

// secureConn is one accepted TLS (or WSS) connection.
type secureConn struct {
	*tls.Conn
	l    *secureListener
	prof *serverTLS // the settings in force when accepted
	src  netip.AddrPort

	once   sync.Once
	hsErr  error
	refuse reason // why the handshake was refused, from the verification callbacks
	id     *tlsPeer
	pre    []byte // wss: the upgrade request, replayed to sipgo

	closeOnce sync.Once
}

// tlsPeer is what the handshake learned of a peer: its verified
// certificate (the trunk it identifies is looked up per request, in the
// snapshot of the request).
type tlsPeer struct {
	cert *x509.Certificate
}

// config builds the tls.Config of this connection's handshake.
func (c *secureConn) config() *tls.Config {
	p := c.prof
	cert := p.cert.cur.Load()
	cfg := &tls.Config{
		MinVersion:   p.cfg.Min,
		Certificates: []tls.Certificate{*cert},
		NextProtos:   nil,
	}
	switch p.cfg.ClientAuth {
	case "request":
		cfg.ClientAuth = tls.RequestClientCert
	case "require":
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	if p.cfg.ClientAuth != "none" {
		// No session resumption: crypto/tls calls VerifyPeerCertificate
		// on full handshakes only, so a resumed session would carry no
		// identity (its trunk unrecognised) and skip the checks of a
		// certificate revoked, expired or no longer trusted since.
		cfg.SessionTicketsDisabled = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return c.verifyClient(raw)
		}
	}
	return cfg
}

// verifyClient checks a client certificate: chain, revocation pin, and
// that it identifies a trunk of the realm (or comes from a source that
// may be identified otherwise).
func (c *secureConn) verifyClient(raw [][]byte) error {
	p := c.prof
	if len(raw) == 0 {
		if p.cfg.ClientAuth == "require" {
			c.refuse = reasonCertMissing
			return errors.New("client certificate required")
		}
		return nil
	}
	var roots *x509.CertPool
	if p.ca != nil {
		roots = p.ca.cur.Load()
	}
	leaf, err := verifyChain(raw, roots, x509.ExtKeyUsageClientAuth, "")
	if err != nil {
		var ce *certError
		if errors.As(err, &ce) {
			c.refuse = ce.r
		}
		return err
	}
	if p.revoked[spkiSHA256(leaf)] {
		c.refuse = reasonCertRevoked
		return errors.New("client certificate revoked (revoked_spki)")
	}
	st := c.l.ep.sbc.state.Load()
	tr := st.tls.trunkOf(leaf, p.realm)
	c.id = &tlsPeer{cert: leaf}
	if tr == nil {
		// No trunk claims the certificate: it may still be a peer known
		// by its address (a trunk without identities, or a backend).
		pe := c.l.ep.sbc.classify(st, c.l.ep, c.src, "")
		if pe.trunk == nil && !pe.backend {
			c.refuse = reasonCertNoTrunk
			return errors.New("client certificate matches no trunk")
		}
	}
	return nil
}

// trunkOf finds the trunk of realm a certificate identifies: SPKI pin
// first, then SAN URIs, SAN DNS names, and the subject CN.
func (t tlsTables) trunkOf(c *x509.Certificate, realm string) *policy.Trunk {
	try := func(kind, v string) *policy.Trunk {
		if tr := t.ids[policy.TLSIdentity{Kind: kind, Value: v}]; tr != nil && tr.Realm == realm {
			return tr
		}
		return nil
	}
	if tr := try("spki", spkiSHA256(c)); tr != nil {
		return tr
	}
	for _, u := range c.URIs {
		if tr := try("uri", u.String()); tr != nil {
			return tr
		}
	}
	for _, d := range c.DNSNames {
		if tr := try("dns", strings.ToLower(d)); tr != nil {
			return tr
		}
	}
	if c.Subject.CommonName != "" {
		return try("cn", c.Subject.CommonName)
	}
	return nil
}

// ready runs the handshake (once) and returns its error.
func (c *secureConn) ready() error {
	c.once.Do(c.handshake)
	return c.hsErr
}

func (c *secureConn) Read(b []byte) (int, error) {
	c.once.Do(c.handshake)
	if c.hsErr != nil {
		return 0, c.hsErr
	}
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.Conn.Read(b)
	for n == 0 && err != nil && c.heldIdle(err) {
		n, err = c.Conn.Read(b)
	}
	return n, err
}

// heldIdle reports whether a read that ended with err on a wss
// connection goes on: sipgo's WebSocket reader gives each message
// server.tcp_idle_timeout (its read deadline), and a connection a device
// registered over is kept while its binding lives, as TCP and TLS ones
// are (stream.go). The deadline is then moved by another idle timeout. A
// read timeout leaves a tls.Conn usable (it is a temporary error).
func (c *secureConn) heldIdle(err error) bool {
	var ne net.Error
	if c.prof == nil || c.prof.transport != "wss" || !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	s := c.l.ep.sbc
	if !s.regs.holdsFlow(c.l.ep.name, "wss", c.src, time.Now()) {
		return false
	}
	return c.Conn.SetReadDeadline(time.Now().Add(s.state.Load().pol.Server.TCPIdleTimeout.Duration)) == nil
}

func (c *secureConn) Write(b []byte) (int, error) {
	c.once.Do(c.handshake)
	if c.hsErr != nil {
		return 0, c.hsErr
	}
	return c.Conn.Write(b)
}

func (c *secureConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.id != nil {
			c.l.ep.sbc.tlsPeers.Delete(peerKey(c.l.ep.name, c.src))
		}
	})
	return err
}

// peerKey keys the identities of open TLS connections by realm and the
// peer's address (what sipgo gives a request as its source).
func peerKey(realm string, src netip.AddrPort) string { return realm + " " + src.String() }

// handshake runs once, on the first Read or Write.
func (c *secureConn) handshake() {
	s := c.l.ep.sbc
	p := c.prof
	deadline := time.Now().Add(p.cfg.HandshakeTimeout.Duration)
	_ = c.Conn.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := c.Conn.HandshakeContext(ctx)
	cancel()
	r := c.refuse
	if err != nil && r == "" {
		r = reasonTLSHandshake
		var ne net.Error
		switch {
		case (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded):
			r = reasonTLSTimeout
		case strings.Contains(err.Error(), "didn't provide a certificate"):
			// crypto/tls's own check of client_auth "require" (it runs
			// before ours, and says so only in its error text).
			r = reasonCertMissing
		}
	}
	if err == nil && p.transport == "wss" {
		r, err = c.checkUpgrade(p)
	}
	if err == nil {
		_ = c.Conn.SetDeadline(time.Time{})
		s.metrics.TLSHandshakes.WithLabelValues(c.l.ep.name, p.transport, "server", tlsOK).Inc()
		if c.id != nil {
			s.tlsPeers.Store(peerKey(c.l.ep.name, c.src), c.id)
		}
		return
	}
	c.hsErr = fmt.Errorf("%s: %w", r, err)
	s.metrics.TLSHandshakes.WithLabelValues(c.l.ep.name, p.transport, "server", string(r)).Inc()
	attrs := []any{"error", err.Error(), "listener", c.l.id}
	if c.id != nil && c.id.cert != nil {
		attrs = append(attrs, "subject", c.id.cert.Subject.String())
	}
	s.act(c.l.ep, peer{src: c.src}, nil, nil, silent(stageTLS, r).with(attrs...))
	_ = c.Conn.Close()
}

// maxUpgradeHead bounds the HTTP upgrade request of a wss connection.
const maxUpgradeHead = 8 << 10

// checkUpgrade reads the WebSocket upgrade request (RFC 6455 4.1) and
// checks its path and Origin; sipgo then reads the same bytes again and
// performs the upgrade. A refused request gets an HTTP 403 (or 400).
func (c *secureConn) checkUpgrade(p *serverTLS) (reason, error) {
	var buf bytes.Buffer
	tmp := make([]byte, 2048)
	for !bytes.Contains(buf.Bytes(), []byte("\r\n\r\n")) {
		if buf.Len() > maxUpgradeHead {
			return c.refuseHTTP(reasonWSUpgrade, 400, "request head too large")
		}
		n, err := c.Conn.Read(tmp)
		buf.Write(tmp[:n])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return reasonTLSTimeout, err
			}
			return reasonWSUpgrade, err
		}
	}
	c.pre = buf.Bytes()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(c.pre)))
	if err != nil {
		return c.refuseHTTP(reasonWSUpgrade, 400, "bad request")
	}
	if p.path != "" && req.URL.Path != p.path {
		return c.refuseHTTP(reasonWSPath, 404, "path "+req.URL.Path)
	}
	if o := strings.ToLower(req.Header.Get("Origin")); !p.origins["*"] && !p.origins[o] {
		return c.refuseHTTP(reasonWSOrigin, 403, "origin "+fmt.Sprintf("%q", o))
	}
	return "", nil
}

func (c *secureConn) refuseHTTP(r reason, code int, why string) (reason, error) {
	fmt.Fprintf(c.Conn, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code))
	return r, errors.New(why)
}

// clientConfig is the tls.Config of the outgoing TLS connections sipgo
// opens itself: towards a peer that is not a pool target (a carrier's
// Contact once the connection it opened is gone). The chain is verified
// against the realm's listener CA (default: the system's roots); the name
// is not (carriers' certificates name their domain, not the address their
// Contact gives). The realm listener's certificate is presented when
// asked. Connections to pool targets are opened by dialTLS instead.
func (ep *endpoint) clientConfig() *tls.Config {
	s := ep.sbc
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified by VerifyConnection, below
		VerifyConnection: func(cs tls.ConnectionState) error {
			var roots *x509.CertPool
			if rt := s.state.Load().tls.realms[ep.name]; rt != nil && rt.ca != nil {
				roots = rt.ca.cur.Load()
			}
			_, err := verifyChain(certsDER(cs.PeerCertificates), roots, x509.ExtKeyUsageServerAuth, "")
			ep.countClientHandshake(err)
			return err
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if rt := s.state.Load().tls.realms[ep.name]; rt != nil {
				return rt.cert.cur.Load(), nil
			}
			return &tls.Certificate{}, nil
		},
	}
}

// countClientHandshake counts the outcome of a handshake the SBC made.
func (ep *endpoint) countClientHandshake(err error) {
	r := tlsOK
	if err != nil {
		r = string(reasonTLSHandshake)
		var ce *certError
		var cv *tls.CertificateVerificationError
		switch {
		case errors.As(err, &ce):
			r = string(ce.r)
		case errors.As(err, &cv):
			r = string(certReason(cv.Err))
		}
		ep.sbc.log.Warn("tls: connection refused", "realm", ep.name, "reason", r, "error", err.Error())
	}
	ep.sbc.metrics.TLSHandshakes.WithLabelValues(ep.name, "tls", "client", r).Inc()
}

// dialTLS opens the TLS connection towards a pool target, unless one is
// up: with the pool's CA bundle (default: the system's roots), its
// server_name (default: the name of a host-name target, else the
// target's IP, which must then be in the certificate), its client certificate and min_version. The connection
// is handed to sipgo as if accepted (ep.out), so the request and all
// that follow to the target use it, and what the target sends on it is
// read like anything else. Towards an address that is no TLS pool's
// target, sipgo dials itself (clientConfig).
func (ep *endpoint) dialTLS(ctx context.Context, dst netip.AddrPort) error {
	ct := ep.sbc.state.Load().tls.targets[dst.Addr()]
	if ct == nil || ep.out == nil || ep.connUp("tls", dst) {
		return nil
	}
	ep.dialMu.Lock()
	if ep.dialing == nil {
		ep.dialing = map[netip.AddrPort]*sync.Mutex{}
	}
	mu := ep.dialing[dst]
	if mu == nil {
		mu = &sync.Mutex{}
		ep.dialing[dst] = mu
	}
	ep.dialMu.Unlock()
	mu.Lock() // one dial per target at a time: the others reuse it
	defer mu.Unlock()
	if ep.connUp("tls", dst) {
		return nil
	}
	cfg := &tls.Config{MinVersion: ct.cfg.Min, ServerName: ct.serverName}
	if cfg.ServerName == "" {
		cfg.ServerName = dst.Addr().String()
	}
	if ct.ca != nil {
		cfg.RootCAs = ct.ca.cur.Load()
	}
	if ct.cert != nil {
		cfg.Certificates = []tls.Certificate{*ct.cert.cur.Load()}
	}
	var local net.Addr
	if a, ok := ep.laddr["tls"]; ok {
		local = &net.TCPAddr{IP: a.Addr().AsSlice()}
	}
	d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("tls: connect %s: %w", dst, err) // no handshake was made
		}
		ep.countClientHandshake(err)
		return fmt.Errorf("tls: %s: %w", dst, err)
	}
	ep.countClientHandshake(nil)
	if !ep.out.push(conn) {
		conn.Close()
		return net.ErrClosed
	}
	// sipgo adds the connection to its pool right after accepting it
	// (unless it died at once: then the request's own deadline ends this).
	for deadline := time.Now().Add(2 * time.Second); !ep.connUp("tls", dst); {
		if time.Now().After(deadline) {
			return fmt.Errorf("tls: connection to %s not taken up", dst)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// connQueue is a net.Listener whose connections are pushed by the SBC.
type connQueue struct {
	ch    chan net.Conn
	done  chan struct{}
	once  sync.Once
	laddr net.Addr
}

func newConnQueue(laddr net.Addr) *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), laddr: laddr}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.laddr }

func certsDER(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Raw
	}
	return out
}

// secureTransport reports whether a transport name is TLS-based.
func secureTransport(t string) bool {
	switch strings.ToLower(t) {
	case "tls", "wss":
		return true
	}
	return false
}
