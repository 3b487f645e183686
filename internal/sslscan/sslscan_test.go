package sslscan

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/certgen"
)

func readFixture(t *testing.T, name string) *Result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The fixtures are sslscan 2.0.7's output (Debian 12) for a Go 1.26
// tls.Listen with MinVersion TLS 1.2 and the default configuration
// (go-tls12.xml), for a Go server with an RSA certificate, TLS 1.0 to 1.2
// and legacy suites configured (legacy-rsa.xml), and for a closed port
// (refused.xml).

func TestParseGoTLS12(t *testing.T) {
	r := readFixture(t, "go-tls12.xml")
	if r.SSLScanVersion != "2.0.7" || r.Host != "127.0.0.1" || r.SNIName != "127.0.0.1" || r.Port != 25449 {
		t.Errorf("header: %q %q %q %d", r.SSLScanVersion, r.Host, r.SNIName, r.Port)
	}
	wantProtos := []Protocol{{SSLv2, false}, {SSLv3, false}, {TLSv10, false}, {TLSv11, false}, {TLSv12, true}, {TLSv13, true}}
	if !slices.Equal(r.Protocols, wantProtos) {
		t.Errorf("protocols %v", r.Protocols)
	}
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{TLSv12, TLSv13}) {
		t.Errorf("EnabledProtocols %v", got)
	}
	if !r.Enabled(TLSv13) || r.Enabled(TLSv11) || r.Enabled("TLSv9") {
		t.Error("Enabled")
	}
	want0 := Cipher{Name: "TLS_AES_128_GCM_SHA256", Protocol: TLSv13, Bits: 128, ID: 0x1301, Preferred: true, Strength: "acceptable", Curve: "25519"}
	if len(r.Ciphers) != 8 || r.Ciphers[0] != want0 {
		t.Fatalf("ciphers %+v", r.Ciphers)
	}
	if c := r.CiphersFor(TLSv12); len(c) != 5 || c[0].Name != "ECDHE-ECDSA-AES128-GCM-SHA256" || !c[0].Preferred || c[1].Preferred || c[0].ID != 0xC02B {
		t.Errorf("TLS 1.2 ciphers %+v", c)
	}
	if len(r.Groups) != 8 || r.Groups[3] != (Group{Name: "x25519", Protocol: TLSv13, Bits: 128, ID: 0x1d}) {
		t.Errorf("groups %+v", r.Groups)
	}
	if r.Renegotiation == nil || r.Renegotiation.Supported || r.Compression != nil || len(r.Heartbleed) != 2 || r.Heartbleed[0].Vulnerable {
		t.Errorf("renegotiation %+v compression %v heartbleed %+v", r.Renegotiation, r.Compression, r.Heartbleed)
	}
	if w := r.Weak(); w != nil {
		t.Errorf("Weak: %q", w)
	}
	if len(r.Errors) != 0 {
		t.Errorf("errors %q", r.Errors)
	}
}

func TestParseLegacy(t *testing.T) {
	r := readFixture(t, "legacy-rsa.xml")
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{TLSv10, TLSv11, TLSv12}) {
		t.Errorf("EnabledProtocols %v", got)
	}
	// Suites Debian's OpenSSL lacks are found by raw ClientHellos and
	// named the IANA way, without a curve.
	var rc4 *Cipher
	for i, c := range r.Ciphers {
		if c.Name == "TLS_ECDHE_RSA_WITH_RC4_128_SHA" && c.Protocol == TLSv12 {
			rc4 = &r.Ciphers[i]
		}
	}
	if rc4 == nil || rc4.ID != 0xC011 || rc4.Bits != 128 || rc4.Strength != "medium" || rc4.Curve != "" {
		t.Fatalf("RC4 suite: %+v", rc4)
	}
	weak := r.Weak()
	want := []string{
		"protocol TLSv1.0 enabled",
		"protocol TLSv1.1 enabled",
		"cipher TLSv1.2 AES128-SHA (128 bits): CBC with SHA-1 and no forward secrecy",
		"cipher TLSv1.2 TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA (112 bits): key strength below 128 bits, DES or 3DES",
		"cipher TLSv1.2 TLS_RSA_WITH_3DES_EDE_CBC_SHA (112 bits): key strength below 128 bits, DES or 3DES, CBC with SHA-1 and no forward secrecy",
		"cipher TLSv1.2 TLS_ECDHE_RSA_WITH_RC4_128_SHA (128 bits): RC4",
		"cipher TLSv1.2 TLS_RSA_WITH_RC4_128_SHA (128 bits): RC4",
	}
	for _, w := range want {
		if !slices.Contains(weak, w) {
			t.Errorf("Weak lacks %q", w)
		}
	}
	for _, w := range weak {
		for _, fine := range []string{"ECDHE-RSA-AES128-GCM-SHA256 ", "ECDHE-RSA-AES128-SHA ", "AES128-GCM-SHA256 ", "AES128-SHA256 "} {
			if strings.Contains(w, " "+fine) {
				t.Errorf("Weak lists %q", w)
			}
		}
	}
	if t.Failed() {
		t.Logf("Weak:\n%s", strings.Join(weak, "\n"))
	}
}

func TestParseRefused(t *testing.T) {
	r := readFixture(t, "refused.xml")
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "Could not open a connection") || r.Protocols != nil {
		t.Errorf("%+v", r)
	}
}

func TestParseSynthetic(t *testing.T) {
	// Elements a healthy Go server never produces, in sslscan's format.
	const doc = `<?xml version="1.0" encoding="UTF-8"?>
<document title="SSLScan Results" version="2.0.7" web="http://github.com/rbsec/sslscan">
 <ssltest host="::1" sniname="sbc.example.test" port="5061">
  <protocol type="ssl" version="2" enabled="0" />
  <protocol type="ssl" version="3" enabled="1" />
  <renegotiation supported="1" secure="0" />
  <compression supported="1" />
  <heartbleed sslversion="TLSv1.2" vulnerable="1" />
  <cipher status="accepted" sslversion="TLSv1.2" bits="-1" cipher="TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC" id="0xC100" strength="medium" />
  <error><![CDATA[Could not connect.]]></error>
 </ssltest>
</document>`
	r, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"protocol SSLv3 enabled",
		"cipher TLSv1.2 TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC (-1 bits): key strength unknown",
		"heartbleed: TLSv1.2 vulnerable",
		"insecure renegotiation supported",
		"TLS compression supported",
	}
	if got := r.Weak(); !slices.Equal(got, want) {
		t.Errorf("Weak:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(r.Errors, []string{"Could not connect."}) {
		t.Errorf("errors %q", r.Errors)
	}

	for _, bad := range []string{
		"",
		"<document><ssltest/><ssltest/></document>",
		"<document></document>",
		`<document><ssltest><protocol type="tls" version="1.4" enabled="1"/></ssltest></document>`,
		`<document><ssltest><cipher cipher="X" id="zz"/></ssltest></document>`,
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestWeakness(t *testing.T) {
	for _, tc := range []struct {
		name, protocol string
		bits           int
		want           string // "" or a substring of the reason
	}{
		// Not weak.
		{"TLS_AES_128_GCM_SHA256", TLSv13, 128, ""},
		{"TLS_CHACHA20_POLY1305_SHA256", TLSv13, 256, ""},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", TLSv12, 128, ""},
		{"ECDHE-ECDSA-AES128-SHA", TLSv12, 128, ""},
		{"DHE-RSA-AES256-SHA", TLSv12, 256, ""},
		{"EDH-RSA-AES256-SHA", TLSv12, 256, ""},
		{"ECDHE-PSK-AES128-CBC-SHA", TLSv12, 128, ""},
		{"AES128-GCM-SHA256", TLSv12, 128, ""},
		{"AES256-SHA256", TLSv12, 256, ""},
		{"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", TLSv12, 128, ""},
		{"TLS_DHE_RSA_WITH_AES_128_CBC_SHA", TLSv12, 128, ""},
		{"TLS_RSA_WITH_AES_128_CBC_SHA256", TLSv12, 128, ""},
		// Weak.
		{"AES128-SHA", TLSv12, 128, "CBC with SHA-1 and no forward secrecy"},
		{"CAMELLIA256-SHA", TLSv12, 256, "CBC with SHA-1"},
		{"PSK-AES128-CBC-SHA", TLSv12, 128, "CBC with SHA-1"},
		{"TLS_RSA_WITH_AES_256_CBC_SHA", TLSv12, 256, "CBC with SHA-1"},
		{"TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA", TLSv12, 128, "CBC with SHA-1"},
		{"DES-CBC3-SHA", TLSv12, 112, "DES or 3DES"},
		{"ECDHE-RSA-DES-CBC3-SHA", TLSv12, 112, "DES or 3DES"},
		{"EDH-RSA-DES-CBC-SHA", TLSv10, 56, "below 128"},
		{"TLS_RSA_WITH_3DES_EDE_CBC_SHA", TLSv12, 112, "DES or 3DES"},
		{"RC4-SHA", TLSv12, 128, "RC4"},
		{"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", TLSv12, 128, "RC4"},
		{"NULL-SHA256", TLSv12, 0, "NULL"},
		{"ECDHE-ECDSA-NULL-SHA", TLSv12, 0, "NULL"},
		{"TLS_RSA_WITH_NULL_SHA", TLSv12, 0, "NULL"},
		{"EXP-RC4-MD5", TLSv10, 40, "EXPORT"},
		{"EXP1024-DES-CBC-SHA", TLSv10, 56, "EXPORT"},
		{"TLS_RSA_EXPORT_WITH_RC4_40_MD5", TLSv10, 40, "EXPORT"},
		{"ADH-AES256-GCM-SHA384", TLSv12, 256, "anonymous"},
		{"AECDH-AES128-SHA", TLSv12, 128, "anonymous"},
		{"TLS_DH_anon_WITH_AES_128_GCM_SHA256", TLSv12, 128, "anonymous"},
		{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", TLSv12, -1, "unknown"},
	} {
		got := Cipher{Name: tc.name, Protocol: tc.protocol, Bits: tc.bits}.Weakness()
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s %s %d bits: Weakness %q, want %q", tc.protocol, tc.name, tc.bits, got, tc.want)
		}
	}
}

func TestFormatTarget(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5061":       "127.0.0.1:5061",
		"[::1]:5061":           "[::1]:5061",
		"::1:5061":             "[::1]:5061",
		"sbc.example.test:443": "sbc.example.test:443",
		"127.0.0.1":            "",
		":5061":                "",
		"127.0.0.1:0":          "",
		"127.0.0.1:x":          "",
		"[::1]5061":            "",
	} {
		got, err := formatTarget(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("formatTarget(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// listen starts a Go TLS server on addr that completes handshakes and
// closes, until cleanup.
func listen(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	ca, err := certgen.NewCA("test CA", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certgen.LeafOptions{
		CN:          "sbc",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		IsServer:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return leaf.TLSCertificate()
}

func scan(t *testing.T, addr string, extra ...string) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := Scan(ctx, addr, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScanMinTLS12(t *testing.T) {
	Require(t)
	addr := listen(t, "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert(t)},
		MinVersion:   tls.VersionTLS12,
	})
	r := scan(t, addr)
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{TLSv12, TLSv13}) {
		t.Errorf("protocols %v, want TLSv1.2 and TLSv1.3", got)
	}
	if w := r.Weak(); w != nil {
		t.Errorf("weak:\n%s", strings.Join(w, "\n"))
	}
	if len(r.CiphersFor(TLSv12)) == 0 || len(r.CiphersFor(TLSv13)) == 0 {
		t.Errorf("ciphers %+v", r.Ciphers)
	}
	for _, c := range r.Ciphers {
		if c.Protocol != TLSv12 && c.Protocol != TLSv13 {
			t.Errorf("cipher %+v", c)
		}
	}
}

func TestScanMinTLS13(t *testing.T) {
	Require(t)
	addr := listen(t, "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert(t)},
		MinVersion:   tls.VersionTLS13,
	})
	r := scan(t, addr)
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{TLSv13}) {
		t.Errorf("protocols %v, want TLSv1.3 only", got)
	}
	if len(r.Ciphers) == 0 {
		t.Error("no cipher accepted")
	}
	for _, c := range r.Ciphers {
		if c.Protocol != TLSv13 {
			t.Errorf("cipher %+v", c)
		}
	}
	if w := r.Weak(); w != nil {
		t.Errorf("weak:\n%s", strings.Join(w, "\n"))
	}
}

func TestScanIPv6(t *testing.T) {
	Require(t)
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	addr := listen(t, "[::1]:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert(t)},
		MinVersion:   tls.VersionTLS13,
	})
	r := scan(t, addr, "--tls13", "--sni-name=localhost")
	if r.Host != "::1" || r.SNIName != "localhost" {
		t.Errorf("host %q SNI %q", r.Host, r.SNIName)
	}
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{TLSv13}) {
		t.Errorf("protocols %v", got)
	}
}

// TestScanFindsWeak checks that a weak server is reported as such, so
// that "nothing weak" from the other tests means something.
func TestScanFindsWeak(t *testing.T) {
	Require(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "legacy"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	addr := listen(t, "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
			tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA,
		},
	})
	r := scan(t, addr)
	weak := r.Weak()
	for _, want := range []string{"protocol TLSv1.0 enabled", "protocol TLSv1.1 enabled",
		"cipher TLSv1.2 AES128-SHA ", "cipher TLSv1.2 TLS_RSA_WITH_3DES_EDE_CBC_SHA ", "cipher TLSv1.2 TLS_ECDHE_RSA_WITH_RC4_128_SHA "} {
		if !slices.ContainsFunc(weak, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("Weak lacks %q", want)
		}
	}
	for _, w := range weak {
		if strings.Contains(w, "ECDHE-RSA-AES128-GCM-SHA256") {
			t.Errorf("Weak lists %q", w)
		}
	}
	if t.Failed() {
		t.Logf("Weak:\n%s\nXML:\n%s", strings.Join(weak, "\n"), r.XML)
	}
}

func TestScanErrors(t *testing.T) {
	Require(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := Scan(ctx, closed)
	if err == nil || r == nil || len(r.Errors) == 0 {
		t.Fatalf("scan of a closed port: %+v, %v", r, err)
	}
	if _, err := Scan(ctx, "127.0.0.1"); err == nil {
		t.Error("scan without a port succeeded")
	}
	// A cancelled context stops the scan.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := Scan(cctx, closed); err == nil {
		t.Error("scan with a cancelled context succeeded")
	}
}

func TestAvailable(t *testing.T) {
	Require(t)
	t.Setenv("PATH", t.TempDir())
	if Available() == nil {
		t.Error("Available with an empty PATH")
	}
}
