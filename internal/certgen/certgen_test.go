package certgen

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func newCA(t *testing.T, cn string) *CA {
	t.Helper()
	ca, err := NewCA(cn, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, opts LeafOptions) *Leaf {
	t.Helper()
	l, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func serverOpts() LeafOptions {
	return LeafOptions{
		CN:          "server",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsServer:    true,
	}
}

func clientOpts() LeafOptions {
	return LeafOptions{CN: "client", DNSNames: []string{"client.example.test"}, IsClient: true}
}

// handshakeResult is what each side of a TLS handshake saw.
type handshakeResult struct {
	serverErr, clientErr error
	server               tls.ConnectionState // valid when serverErr is nil
}

// handshake runs one TLS handshake over a loopback TCP connection between
// a server and a client with the given configurations. Each side has a
// 10 s deadline; after its handshake the server writes one byte and the
// client reads it, so a client whose certificate the server refuses (in
// TLS 1.3 the client finishes first) sees the server's alert too.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)

	type srv struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan srv, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- srv{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		tc := tls.Server(c, serverCfg)
		if err := tc.Handshake(); err != nil {
			done <- srv{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		done <- srv{err: err, state: tc.ConnectionState()}
	}()

	var r handshakeResult
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(deadline)
	tc := tls.Client(c, clientCfg)
	r.clientErr = tc.Handshake()
	if r.clientErr == nil {
		_, r.clientErr = tc.Read(make([]byte, 1))
	}
	c.Close()
	s := <-done
	r.serverErr, r.server = s.err, s.state
	return r
}

func mtlsConfigs(serverCA, clientCA *CA, server, client *Leaf) (*tls.Config, *tls.Config) {
	sc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
	}
	cc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ServerName:   "localhost",
		RootCAs:      serverCA.Pool(),
		Certificates: []tls.Certificate{client.TLSCertificate()},
	}
	return sc, cc
}

func TestMutualTLS13(t *testing.T) {
	ca := newCA(t, "test CA")
	server := issue(t, ca, serverOpts())
	client := issue(t, ca, clientOpts())
	sc, cc := mtlsConfigs(ca, ca, server, client)

	r := handshake(t, sc, cc)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
	}
	if r.server.Version != tls.VersionTLS13 {
		t.Errorf("version %#x, want TLS 1.3", r.server.Version)
	}
	if len(r.server.PeerCertificates) == 0 || len(r.server.VerifiedChains) == 0 {
		t.Fatalf("server saw no verified client certificate: %+v", r.server)
	}
	if cn := r.server.PeerCertificates[0].Subject.CommonName; cn != "client" {
		t.Errorf("server saw client CN %q, want client", cn)
	}

	// The server certificate also verifies by IP address.
	cc.ServerName = "127.0.0.1"
	if r := handshake(t, sc, cc); r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("handshake by IP: server %v, client %v", r.serverErr, r.clientErr)
	}
}

func TestOtherCAFails(t *testing.T) {
	ca := newCA(t, "test CA")
	other := newCA(t, "other CA")

	t.Run("server certificate", func(t *testing.T) {
		server := issue(t, other, serverOpts())
		client := issue(t, ca, clientOpts())
		sc, cc := mtlsConfigs(ca, ca, server, client) // client trusts ca only
		r := handshake(t, sc, cc)
		var ua x509.UnknownAuthorityError
		if !errors.As(r.clientErr, &ua) {
			t.Fatalf("client error %v (%T), want x509.UnknownAuthorityError", r.clientErr, r.clientErr)
		}
		if r.serverErr == nil {
			t.Error("server handshake succeeded")
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		server := issue(t, ca, serverOpts())
		client := issue(t, other, clientOpts())
		sc, cc := mtlsConfigs(ca, ca, server, client) // server trusts ca only
		// A Go client leaves out a certificate whose issuer is not among
		// the server's acceptable CAs; present it regardless.
		cc.Certificates = nil
		cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := client.TLSCertificate()
			return &c, nil
		}
		r := handshake(t, sc, cc)
		var ua x509.UnknownAuthorityError
		if !errors.As(r.serverErr, &ua) {
			t.Fatalf("server error %v (%T), want x509.UnknownAuthorityError", r.serverErr, r.serverErr)
		}
		if r.clientErr == nil {
			t.Error("client saw no alert")
		}
	})
}

func TestValidityFails(t *testing.T) {
	ca := newCA(t, "test CA")
	now := time.Now()
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour)},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := serverOpts()
			o.NotBefore, o.NotAfter = tc.notBefore, tc.notAfter
			server := issue(t, ca, o)

			_, err := server.Cert.Verify(x509.VerifyOptions{
				DNSName: "localhost",
				Roots:   ca.Pool(),
			})
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.Expired {
				t.Fatalf("Verify: %v, want x509.CertificateInvalidError Expired", err)
			}

			sc := &tls.Config{Certificates: []tls.Certificate{server.TLSCertificate()}}
			cc := &tls.Config{ServerName: "localhost", RootCAs: ca.Pool()}
			r := handshake(t, sc, cc)
			if !errors.As(r.clientErr, &inv) || inv.Reason != x509.Expired {
				t.Fatalf("client handshake: %v, want x509.CertificateInvalidError Expired", r.clientErr)
			}
		})
	}
}

func TestIssueOptions(t *testing.T) {
	ca := newCA(t, "test CA")
	u, _ := url.Parse("sip:sbc@sbc.example.test")
	before := time.Now()
	l := issue(t, ca, LeafOptions{
		CN:          "both",
		DNSNames:    []string{"a.example.test"},
		IPAddresses: []net.IP{net.IPv6loopback},
		URIs:        []*url.URL{u},
		IsServer:    true,
		IsClient:    true,
	})
	c := l.Cert
	if c.Subject.CommonName != "both" || !slices.Equal(c.DNSNames, []string{"a.example.test"}) ||
		len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.IPv6loopback) ||
		len(c.URIs) != 1 || c.URIs[0].String() != u.String() {
		t.Errorf("names: CN %q DNS %v IP %v URI %v", c.Subject.CommonName, c.DNSNames, c.IPAddresses, c.URIs)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage %v", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if c.NotBefore.After(before) || c.NotAfter.Before(before.Add(DefaultLifetime-time.Hour)) {
		t.Errorf("default validity %s .. %s", c.NotBefore, c.NotAfter)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	// Verification for each usage.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for %v: %v", usage, err)
		}
	}
	// A client-only leaf does not verify as a server.
	cl := issue(t, ca, clientOpts())
	_, err := cl.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage {
		t.Errorf("client leaf verified for server auth: %v", err)
	}

	if _, err := ca.Issue(LeafOptions{CN: "x", NotBefore: before, NotAfter: before.Add(-time.Hour)}); err == nil {
		t.Error("Issue accepted NotAfter before NotBefore")
	}
	if _, err := NewCA("x", before, before); err == nil {
		t.Error("NewCA accepted NotAfter equal to NotBefore")
	}
}

func TestSPKISHA256(t *testing.T) {
	ca := newCA(t, "test CA")
	l := issue(t, ca, serverOpts())
	// Independently: marshal the public key of the private key (not the
	// certificate's raw bytes) to DER SubjectPublicKeyInfo and hash it.
	der, err := x509.MarshalPKIXPublicKey(l.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	want := hex.EncodeToString(sum[:])
	got := l.SPKISHA256()
	if got != want {
		t.Fatalf("SPKISHA256 %s, want %s", got, want)
	}
	if len(got) != 64 || got != string(bytes.ToLower([]byte(got))) {
		t.Errorf("SPKISHA256 %q is not 64 lowercase hex digits", got)
	}
	if other := issue(t, ca, serverOpts()); other.SPKISHA256() == got {
		t.Error("two leaves share a pin")
	}
}

func TestPEM(t *testing.T) {
	ca := newCA(t, "test CA")
	l := issue(t, ca, serverOpts())

	block, rest := pem.Decode(l.KeyPEM())
	if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
		t.Fatalf("key PEM: %q", l.KeyPEM())
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatalf("key is not PKCS#8: %v", err)
	}
	for _, b := range [][]byte{l.CertPEM(), ca.CertPEM()} {
		block, rest := pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
			t.Fatalf("certificate PEM: %q", b)
		}
	}
	if _, err := tls.X509KeyPair(l.CertPEM(), l.KeyPEM()); err != nil {
		t.Errorf("leaf PEM pair: %v", err)
	}
	if _, err := tls.X509KeyPair(ca.CertPEM(), ca.KeyPEM()); err != nil {
		t.Errorf("CA PEM pair: %v", err)
	}
	tc := l.TLSCertificate()
	if len(tc.Certificate) != 1 || !bytes.Equal(tc.Certificate[0], l.Cert.Raw) || tc.Leaf != l.Cert {
		t.Errorf("TLSCertificate: %+v", tc)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "test CA")
	l := issue(t, ca, serverOpts())
	// An existing, world-readable key file is replaced with mode 0600.
	if err := os.WriteFile(filepath.Join(dir, "x-key.pem"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.WriteFiles(dir, "x"); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(dir, "x.pem"), 0o644, l.CertPEM())
	checkFile(t, filepath.Join(dir, "x-key.pem"), 0o600, l.KeyPEM())
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2 (temporary files left?)", len(entries))
	}
	if err := l.WriteFiles(filepath.Join(dir, "missing"), "x"); err == nil {
		t.Error("WriteFiles into a missing directory succeeded")
	}
}

func checkFile(t *testing.T, name string, mode os.FileMode, want []byte) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
	}
	if want != nil {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", name)
		}
	}
}
