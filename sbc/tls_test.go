package sbc

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/certgen"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// testPKI is the certificates of the TLS tests, as files in dir.
type testPKI struct {
	t   *testing.T
	dir string
	ca  *certgen.CA
	// Leaves by name: "sbc" (server+client, IPs of the test), "carrier"
	// (client, dns:carrier.example.test), "backend" (server, the backend
	// IP), "stranger" (client, another name), "expired", "future",
	// "foreign" (another CA).
	leaves map[string]*certgen.Leaf
}

func (k *testPKI) file(name string) string { return filepath.Join(k.dir, name+".pem") }
func (k *testPKI) key(name string) string  { return filepath.Join(k.dir, name+"-key.pem") }

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	k := &testPKI{t: t, dir: t.TempDir(), leaves: map[string]*certgen.Leaf{}}
	var err error
	if k.ca, err = certgen.NewCA("test CA", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := k.ca.WriteFiles(k.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	ips := func(s ...string) []net.IP {
		var out []net.IP
		for _, a := range s {
			out = append(out, net.ParseIP(a))
		}
		return out
	}
	now := time.Now()
	sipURI, _ := url.Parse("sip:trunk.example.test")
	specs := map[string]certgen.LeafOptions{
		"sbc":      {CN: "sbc", IPAddresses: ips(sbcExtIP, sbcIntIP, "127.0.0.1"), IsServer: true, IsClient: true},
		"carrier":  {CN: "carrier", DNSNames: []string{"carrier.example.test"}, IsClient: true},
		"uri":      {CN: "uri-carrier", URIs: []*url.URL{sipURI}, IsClient: true},
		"backend":  {CN: "backend", IPAddresses: ips(backendIP), DNSNames: []string{"pbx.example.test"}, IsServer: true, IsClient: true},
		"stranger": {CN: "stranger", DNSNames: []string{"stranger.example.test"}, IsClient: true},
		"expired":  {CN: "carrier", DNSNames: []string{"carrier.example.test"}, IsClient: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)},
		"future":   {CN: "carrier", DNSNames: []string{"carrier.example.test"}, IsClient: true, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)},
		"sbc2":     {CN: "sbc-rotated", IPAddresses: ips(sbcExtIP, sbcIntIP, "127.0.0.1"), IsServer: true, IsClient: true},
	}
	for name, o := range specs {
		l, err := k.ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		k.leaves[name] = l
		if err := l.WriteFiles(k.dir, name); err != nil {
			t.Fatal(err)
		}
	}
	other, err := certgen.NewCA("other CA", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := other.Issue(certgen.LeafOptions{CN: "carrier", DNSNames: []string{"carrier.example.test"}, IsClient: true})
	if err != nil {
		t.Fatal(err)
	}
	k.leaves["foreign"] = f
	if err := f.WriteFiles(k.dir, "foreign"); err != nil {
		t.Fatal(err)
	}
	return k
}

// client is a TLS client configuration presenting leaf (none if ""),
// trusting the test CA. The certificate is sent whatever CAs the server
// asks for (a foreign one would otherwise be withheld by crypto/tls).
func (k *testPKI) client(leaf string) *tls.Config {
	cfg := &tls.Config{RootCAs: k.ca.Pool(), MinVersion: tls.VersionTLS12}
	if leaf != "" {
		c := k.leaves[leaf].TLSCertificate()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// tlsEnv is an SBC with a TLS listener on the external realm (mutual TLS,
// trunk "carrier" identified by its certificate alone) and a pool of one
// backend reached over mutual TLS.
type tlsEnv struct {
	pki     *testPKI
	sbc     *SBC
	pb      *testpolicy.Policy
	backend *sipua.Backend
	tlsAddr string // the SBC's external TLS listener
	ctx     context.Context
}

func newTLSEnv(t *testing.T, edit func(*testpolicy.Policy)) *tlsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	k := newTestPKI(t)
	bcfg := &tls.Config{
		Certificates: []tls.Certificate{k.leaves["backend"].TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: k.ca.Pool(), RootCAs: k.ca.Pool(),
		MinVersion: tls.VersionTLS12,
	}
	b, err := sipua.NewBackend(sipua.BackendOptions{UDP: backendIP + ":0", TLSAddr: backendIP + ":0", TLS: bcfg, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	pb := tlsPolicy(k, b.TLSAddr())
	if edit != nil {
		edit(pb)
	}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	la, ok := s.ListenAddr("external", "tls")
	if !ok {
		t.Fatal("no external tls listener")
	}
	return &tlsEnv{pki: k, sbc: s, pb: pb, backend: b, tlsAddr: la.String(), ctx: ctx}
}

// tlsPolicy is newTLSEnv's policy with the pool's one target at target
// ("ip:port"): an external TLS listener with mutual TLS (client_auth
// "require", the test CA), trunk "carrier" identified by
// dns:carrier.example.test alone (no sources), an internal TLS listener,
// and pool "pbx" over TLS presenting the "sbc" certificate and checking
// the target's against the test CA and the target's IP.
func tlsPolicy(k *testPKI, target string) *testpolicy.Policy {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, target)
	pb.Server = testpolicy.Server{UserAgent: "TestSBC", LogLevel: "debug"}
	ext := pb.Realm("external")
	ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "tls", Bind: sbcExtIP + ":0",
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc"), CAFile: k.file("ca"), ClientAuth: "require"}})
	in := pb.Realm("internal")
	in.Listeners = append(in.Listeners, testpolicy.Listener{Transport: "tls", Bind: sbcIntIP + ":0",
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
	pb.Trunks = []testpolicy.Trunk{{Name: "carrier", Realm: "external", TLSIdentities: []string{"dns:carrier.example.test"}}}
	pbx := pb.Pool("pbx")
	pbx.Transport = "tls"
	pbx.TLS = &testpolicy.PoolTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc"), CAFile: k.file("ca")}
	pb.Routing = &testpolicy.Routing{DefaultPool: "pbx", TargetTimeout: policy.D(2 * time.Second), MaxAttempts: 1}
	return pb
}

// issue adds a leaf of the test CA, written as name.pem and name-key.pem.
func (k *testPKI) issue(name string, o certgen.LeafOptions) *certgen.Leaf {
	k.t.Helper()
	l, err := k.ca.Issue(o)
	if err != nil {
		k.t.Fatal(err)
	}
	if err := l.WriteFiles(k.dir, name); err != nil {
		k.t.Fatal(err)
	}
	k.leaves[name] = l
	return l
}

// caller is a SIP caller over TLS presenting leaf.
func (e *tlsEnv) caller(t *testing.T, leaf string) *sipua.Caller {
	t.Helper()
	cfg := e.pki.client(leaf)
	// The caller's own listener (its Contact) needs a certificate too.
	cfg.Certificates = []tls.Certificate{e.pki.leaves["carrier"].TLSCertificate()}
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Transport: "tls", TLS: cfg, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *tlsEnv) handshakes(result string) float64 {
	return testutil.ToFloat64(e.sbc.metrics.TLSHandshakes.WithLabelValues("external", "tls", "server", result))
}

// waitCount waits (bounded by ctx) until f() reaches want: the server
// side counts a handshake in its own goroutine, after the client may
// already have seen the outcome.
func waitCount(ctx context.Context, t *testing.T, what string, f func() float64, want float64) {
	t.Helper()
	for f() < want {
		select {
		case <-ctx.Done():
			t.Errorf("%s = %v, want %v", what, f(), want)
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
	if got := f(); got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// TestTLSCallMutualBothLegs: a carrier identified by its client
// certificate alone calls over TLS; the SBC reaches the backend over
// mutual TLS with its own certificate; the call is answered and hung up
// from both sides, each in-dialog request on the connection the peer
// opened.
func TestTLSCallMutualBothLegs(t *testing.T) {
	e := newTLSEnv(t, nil)
	c := e.caller(t, "carrier")
	call, err := c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("final %v, %v", res, err)
	}
	info, err := e.backend.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if info.Transport != "TLS" {
		t.Errorf("backend got the INVITE over %s, want TLS", info.Transport)
	}
	// The 200 OK's Contact tells the carrier to come back over TLS.
	if ct := call.Final().Contact(); ct == nil || !strings.EqualFold(ct.Address.UriParams.GetOr("transport", ""), "tls") {
		t.Errorf("Contact of the 200: %v, want transport=tls", call.Final().Contact())
	}
	// The backend hangs up: the BYE reaches the carrier over its own
	// connection (its Contact port is its listener, not that connection).
	if err := e.backend.Bye(e.ctx, info.CallID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the caller never got the BYE")
	}
	if n := e.handshakes(tlsOK); n < 1 {
		t.Errorf("server handshakes ok = %v", n)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.TLSHandshakes.WithLabelValues("internal", "tls", "client", tlsOK)); n < 1 {
		t.Errorf("client handshakes ok = %v", n)
	}
	// A second call, hung up by the carrier.
	call2, err := c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call2.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("second call: %v, %v", res, err)
	}
	if err := call2.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.backend.WaitCall(e.ctx, func(ci sipua.CallInfo) bool {
		return ci.CallID != info.CallID && ci.State == sipua.StateEnded
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTLSClientCertificateRefusals: every way a client certificate can
// be wrong is refused at the handshake and counted with its reason; a
// right one passes.
func TestTLSClientCertificateRefusals(t *testing.T) {
	var revoked string
	e := newTLSEnv(t, func(pb *testpolicy.Policy) {
		pb.Trunks = append(pb.Trunks, testpolicy.Trunk{Name: "uri", Realm: "external", TLSIdentities: []string{"uri:sip:trunk.example.test"}})
	})
	// Revoke "stranger"'s key by a reload: the pin applies to new
	// handshakes.
	revoked = e.pki.leaves["stranger"].SPKISHA256()
	pb := e.pb.Clone()
	pb.Realm("external").Listeners[2].TLS.RevokedSPKI = []string{revoked}
	pb.Trunks = append(pb.Trunks, testpolicy.Trunk{Name: "stranger", Realm: "external", TLSIdentities: []string{"cn:stranger"}})
	if err := e.sbc.Reload(pb.Parse(t)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		leaf   string
		reason reason // "" passes
	}{
		{"", reasonCertMissing},
		{"expired", reasonCertExpired},
		{"future", reasonCertNotYetValid},
		{"foreign", reasonCertUnknownCA},
		{"stranger", reasonCertRevoked},
		{"backend", reasonCertNoTrunk},
		{"carrier", ""},
		{"uri", ""},
	} {
		name := tc.leaf
		if name == "" {
			name = "none"
		}
		t.Run(name, func(t *testing.T) {
			before := e.handshakes(string(tc.reason))
			if tc.reason == "" {
				before = e.handshakes(tlsOK)
			}
			res, err := tlsOptions(e.ctx, e.tlsAddr, e.pki.client(tc.leaf))
			if tc.reason == "" {
				if err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
					t.Fatalf("OPTIONS: %q, %v", res, err)
				}
				waitCount(e.ctx, t, "handshakes ok", func() float64 { return e.handshakes(tlsOK) }, before+1)
				return
			}
			if err == nil {
				t.Fatalf("OPTIONS answered over a refused connection: %q", res)
			}
			waitCount(e.ctx, t, "handshakes "+string(tc.reason), func() float64 { return e.handshakes(string(tc.reason)) }, before+1)
			dropped := func() float64 {
				return testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageTLS), string(tc.reason)))
			}
			waitCount(e.ctx, t, "dropped{tls,"+string(tc.reason)+"}", dropped, 1)
		})
	}
}

// tlsOptions sends an OPTIONS over a new TLS connection and returns the
// status line of the answer.
func tlsOptions(ctx context.Context, addr string, cfg *tls.Config) (string, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(callerIP)}}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	la := conn.LocalAddr().String()
	msg := "OPTIONS sip:" + addr + ";transport=tls SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS " + la + ";branch=z9hG4bK" + newID() + ";rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=" + newID() + "\r\n" +
		"To: <sip:" + addr + ">\r\nCall-ID: " + newID() + "\r\nCSeq: 1 OPTIONS\r\n" +
		"Contact: <sip:probe@" + la + ";transport=tls>\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line, nil
}

// TestTLSIdentityAndSources: a trunk with an identity and sources is
// recognised only with both; its address alone over UDP is not that
// trunk (and costs it nothing).
func TestTLSIdentityAndSources(t *testing.T) {
	e := newTLSEnv(t, func(pb *testpolicy.Policy) {
		pb.Trunk("carrier").Sources = []string{"127.0.0.9/32"} // not where the test calls from
	})
	res, err := tlsOptions(e.ctx, e.tlsAddr, e.pki.client("carrier"))
	if err == nil && strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("OPTIONS from outside the trunk's sources answered: %q", res)
	}
	waitCount(e.ctx, t, "dropped{classify,tls_identity_source}", func() float64 {
		return testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageClassify), string(reasonTLSIdentity)))
	}, 1)

	// Over UDP from the trunk's own source: no certificate, not the trunk.
	udp := e.pb.Clone()
	udp.Trunk("carrier").Sources = []string{callerIP + "/32"}
	if err := e.sbc.Reload(udp.Parse(t)); err != nil {
		t.Fatal(err)
	}
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ext, _ := e.sbc.ListenAddr("external", "udp")
	ctx, cancel := context.WithTimeout(e.ctx, 600*time.Millisecond)
	defer cancel()
	if r, err := c.Options(ctx, ext.String()); err == nil {
		t.Fatalf("OPTIONS over UDP from a TLS trunk's source answered %d", r.StatusCode)
	}
	// Over UDP the gate drops it before the parser (gate.go).
	if got := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageFilter), string(reasonTLSNeedIdentity))); got < 1 {
		t.Errorf("dropped{filter,tls_identity_needed} = %v", got)
	}
	// Over TLS from there with the certificate: the trunk.
	if res, err := tlsOptions(e.ctx, e.tlsAddr, e.pki.client("carrier")); err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("OPTIONS with identity and source: %q, %v", res, err)
	}
}

// TestTLSBackendCertificateChecked: a backend whose certificate does not
// carry the name the pool asks for is refused (the call fails over to
// nothing: 503), and counted on the client side.
func TestTLSBackendCertificateChecked(t *testing.T) {
	e := newTLSEnv(t, func(pb *testpolicy.Policy) {
		pb.Pool("pbx").TLS.ServerName = "other.example.test"
	})
	c := e.caller(t, "carrier")
	call, err := c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 503 {
		t.Fatalf("final %v, %v; want 503", res, err)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.TLSHandshakes.WithLabelValues("internal", "tls", "client", string(reasonCertInvalid))); n < 1 {
		t.Errorf("client handshakes cert_invalid = %v", n)
	}
	if len(e.backend.Calls()) != 0 {
		t.Errorf("the backend got a call over a connection the SBC should have refused")
	}
	// With the name the certificate carries, calls go through.
	pb := e.pb.Clone()
	pb.Pool("pbx").TLS.ServerName = "pbx.example.test"
	if err := e.sbc.Reload(pb.Parse(t)); err != nil {
		t.Fatal(err)
	}
	call, err = c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("final with server_name: %v, %v", res, err)
	}
	_ = call.Bye(e.ctx)
}

// TestTLSCertificateRotation: the listener's certificate file is
// replaced while a call is up: new handshakes present the new one, the
// call continues on its connection, and a broken file keeps the previous
// certificate in service.
func TestTLSCertificateRotation(t *testing.T) {
	old := tlsPollInterval
	tlsPollInterval = 20 * time.Millisecond
	t.Cleanup(func() { tlsPollInterval = old })
	e := newTLSEnv(t, nil)
	c := e.caller(t, "carrier")
	call, err := c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("final %v, %v", res, err)
	}
	peerCN := func() string {
		cfg := e.pki.client("carrier")
		var cn string
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			cn = cs.PeerCertificates[0].Subject.CommonName
			return nil
		}
		if _, err := tlsOptions(e.ctx, e.tlsAddr, cfg); err != nil {
			t.Fatal(err)
		}
		return cn
	}
	if cn := peerCN(); cn != "sbc" {
		t.Fatalf("certificate before rotation: CN %q", cn)
	}
	rotate := func(certPEM, keyPEM []byte) {
		// Written beside and renamed, as operators and cert-manager do.
		for name, b := range map[string][]byte{"sbc": certPEM, "sbc-key": keyPEM} {
			tmp := filepath.Join(e.pki.dir, name+".new")
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(e.pki.dir, name+".pem")); err != nil {
				t.Fatal(err)
			}
		}
	}
	loads := func(r string) float64 { return testutil.ToFloat64(e.sbc.metrics.TLSLoads.WithLabelValues(r)) }
	waitFor := func(what string, f func() bool) {
		t.Helper()
		for !f() {
			select {
			case <-e.ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	n := loads("ok")
	rotate(e.pki.leaves["sbc2"].CertPEM(), e.pki.leaves["sbc2"].KeyPEM())
	waitFor("the rotated certificate to load", func() bool { return loads("ok") > n })
	if cn := peerCN(); cn != "sbc-rotated" {
		t.Errorf("certificate after rotation: CN %q, want sbc-rotated", cn)
	}
	// A key that does not match the certificate: refused, the rotated
	// one stays.
	f := loads("failed")
	rotate(e.pki.leaves["sbc"].CertPEM(), e.pki.leaves["backend"].KeyPEM())
	waitFor("the broken pair to be refused", func() bool { return loads("failed") > f })
	if cn := peerCN(); cn != "sbc-rotated" {
		t.Errorf("certificate after a broken rotation: CN %q, want sbc-rotated", cn)
	}
	// The call set up before the rotations is still up both ways.
	info, err := e.backend.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if r, err := call.Info(e.ctx, []byte("hello")); err != nil || r.StatusCode != 200 {
		t.Fatalf("INFO after rotation: %v, %v", r, err)
	}
	if err := e.backend.Bye(e.ctx, info.CallID); err != nil {
		t.Fatal(err)
	}
	<-call.Ended()
}

// TestTLSStartRefusesBadFiles: a policy naming an unreadable certificate
// does not start, and says which file.
func TestTLSStartRefusesBadFiles(t *testing.T) {
	k := newTestPKI(t)
	pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5080")
	pb.Realm("external").Listeners = append(pb.Realm("external").Listeners, testpolicy.Listener{Transport: "tls", Bind: sbcExtIP + ":0",
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("missing"), KeyFile: k.key("sbc")}})
	_, err := New(pb.Parse(t), Options{Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("New: %v, want an error naming missing.pem", err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) {
		t.Errorf("error %v does not wrap the file error", err)
	}
}

// TestTLSConnectionBehaviour: a double-CRLF keep-alive (RFC 5626 3.5.1)
// is answered with a CRLF; a peer that never completes its handshake is
// disconnected after handshake_timeout and counted; a sips: request-URI
// gets sips: Contacts back (RFC 3261 12.1.1).
func TestTLSConnectionBehaviour(t *testing.T) {
	e := newTLSEnv(t, func(pb *testpolicy.Policy) {
		pb.Realm("external").Listeners[2].TLS.HandshakeTimeout = policy.D(300 * time.Millisecond)
	})
	t.Run("keepalive", func(t *testing.T) {
		d := tls.Dialer{Config: e.pki.client("carrier")}
		conn, err := d.DialContext(e.ctx, "tcp", e.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "\r\n" {
			t.Fatalf("pong %q, %v; want CRLF", buf[:n], err)
		}
	})
	t.Run("handshake_timeout", func(t *testing.T) {
		before := e.handshakes(string(reasonTLSTimeout))
		conn, err := net.Dial("tcp", e.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Silent: the SBC gives up and closes (bounded by the deadline
		// of this read, far longer than handshake_timeout).
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("connection not closed by the SBC: %v", err)
		}
		waitCount(e.ctx, t, "handshakes handshake_timeout", func() float64 { return e.handshakes(string(reasonTLSTimeout)) }, before+1)
	})
	t.Run("sips", func(t *testing.T) {
		c := e.caller(t, "carrier")
		call, err := c.Dial(e.ctx, "sips:100@"+e.tlsAddr, sipua.DialOptions{User: "100"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := call.WaitFinal(e.ctx)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("final %v, %v", res, err)
		}
		if ct := res.Contact(); ct == nil || ct.Address.Scheme != "sips" {
			t.Errorf("Contact of the 200 to a sips: INVITE: %v, want a sips: URI", res.Contact())
		}
		if err := call.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
	})
}
