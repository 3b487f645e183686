package certgen

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func readCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("%s: not one PEM certificate", name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func readKey(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
		t.Fatalf("%s: not one PEM PKCS#8 key", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k
}

func TestExamples(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "examples", "certs")
	if err := Examples(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("directory: %v %v", fi, err)
	}
	first := readCert(t, filepath.Join(dir, "sbc.pem"))
	// A second run replaces every file.
	if err := Examples(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"admin-key.pem", "admin.pem", "backend-key.pem", "backend.pem", "ca-key.pem", "ca.pem", "carrier-key.pem", "carrier.pem",
		"monitoring-key.pem", "monitoring.pem", "sbc-key.pem", "sbc.pem"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}

	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA || ca.Subject.CommonName != "sbc test CA" {
		t.Errorf("ca.pem: IsCA %v CN %q", ca.IsCA, ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		base  string
		cn    string
		dns   []string
		ips   []net.IP
		usage []x509.ExtKeyUsage
		names []string // each must verify (DNS name or IP literal)
	}{
		{"sbc", "sbc", []string{"localhost", "sbc.example.test"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			[]string{"localhost", "sbc.example.test", "127.0.0.1", "::1"}},
		{"carrier", "carrier", []string{"carrier.example.test"}, nil, client, nil},
		{"backend", "backend", []string{"backend.example.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}, server,
			[]string{"backend.example.test", "127.0.0.1"}},
		{"admin", "admin", nil, nil, client, nil},
		{"monitoring", "monitoring", nil, nil, client, nil},
	} {
		t.Run(tc.base, func(t *testing.T) {
			c := readCert(t, filepath.Join(dir, tc.base+".pem"))
			if c.Subject.CommonName != tc.cn || !slices.Equal(c.DNSNames, tc.dns) ||
				!slices.EqualFunc(c.IPAddresses, tc.ips, net.IP.Equal) || !slices.Equal(c.ExtKeyUsage, tc.usage) {
				t.Errorf("CN %q DNS %v IP %v usage %v", c.Subject.CommonName, c.DNSNames, c.IPAddresses, c.ExtKeyUsage)
			}
			for _, u := range tc.usage {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
					t.Errorf("verify for %v: %v", u, err)
				}
			}
			for _, n := range tc.names {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: n, KeyUsages: tc.usage}); err != nil {
					t.Errorf("verify for %s: %v", n, err)
				}
			}
			key := readKey(t, filepath.Join(dir, tc.base+"-key.pem"))
			signer, ok := key.(crypto.Signer)
			if !ok {
				t.Fatalf("key %T", key)
			}
			if eq, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(c.PublicKey) {
				t.Error("key does not match certificate")
			}
			checkFile(t, filepath.Join(dir, tc.base+"-key.pem"), 0o600, nil)
			checkFile(t, filepath.Join(dir, tc.base+".pem"), 0o644, nil)
		})
	}
	if first.Equal(readCert(t, filepath.Join(dir, "sbc.pem"))) {
		t.Error("second run did not replace sbc.pem")
	}
	readKey(t, filepath.Join(dir, "ca-key.pem"))
	checkFile(t, filepath.Join(dir, "ca-key.pem"), 0o600, nil)
}
