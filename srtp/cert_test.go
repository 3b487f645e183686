package srtp

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCertificateGenerateAndFingerprint(t *testing.T) {
	c, err := GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.TLS.Certificate[0])
	if c.Fingerprint.Hash != "sha-256" || string(c.Fingerprint.Value) != string(sum[:]) {
		t.Fatal("fingerprint is not the SHA-256 of the DER")
	}
	s := c.Fingerprint.String()
	if !strings.HasPrefix(s, "sha-256 ") || len(s) != len("sha-256 ")+32*3-1 || strings.ToUpper(s[8:]) != s[8:] {
		t.Fatalf("%q", s)
	}
	f, err := ParseFingerprint(strings.ToUpper(s[:7]) + s[7:])
	if err != nil || f.String() != s {
		t.Fatalf("%v %v", f, err)
	}
	if !f.Matches(c.TLS.Certificate[0]) {
		t.Fatal("no match on its own certificate")
	}
	other, _ := GenerateCertificate()
	if f.Matches(other.TLS.Certificate[0]) {
		t.Fatal("matches another certificate")
	}
	for _, h := range []crypto.Hash{crypto.SHA384, crypto.SHA512} {
		g := FingerprintOf(c.TLS.Certificate[0], h)
		if p, err := ParseFingerprint(g.String()); err != nil || !p.Matches(c.TLS.Certificate[0]) {
			t.Fatal(h, err)
		}
	}
	if c.Leaf.PublicKeyAlgorithm.String() != "ECDSA" {
		t.Fatal(c.Leaf.PublicKeyAlgorithm)
	}
}

func TestParseFingerprintRefusals(t *testing.T) {
	for _, v := range []string{
		"",
		"sha-256",
		"sha-1 AB:CD:EF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00",
		"md5 AB:CD:EF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC",
		"sha-256 AB:CD",
		"sha-256 " + strings.Repeat("ZZ:", 31) + "ZZ",
		"sha-256 " + strings.Repeat("ABC", 21) + "A",
		"sha-256 " + strings.Repeat("AB:", 32) + "AB",
	} {
		if _, err := ParseFingerprint(v); !errors.Is(err, ErrBadFingerprint) {
			t.Errorf("%q: %v", v, err)
		}
	}
	if (Fingerprint{Hash: "sha-1", Value: make([]byte, 20)}).Matches([]byte("x")) {
		t.Fatal("sha-1 matched")
	}
}

func TestLoadOrCreateCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dtls")
	c1, err := LoadOrCreateCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	c2, err := LoadOrCreateCertificate(dir)
	if err != nil || c2.Fingerprint.String() != c1.Fingerprint.String() {
		t.Fatal("the persisted certificate was not reused", err)
	}
	c3, err := LoadCertificate(filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName))
	if err != nil || c3.Fingerprint.String() != c1.Fingerprint.String() {
		t.Fatal(err)
	}
	// A broken file is replaced.
	if err := os.WriteFile(filepath.Join(dir, CertFileName), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	c4, err := LoadOrCreateCertificate(dir)
	if err != nil || c4.Fingerprint.String() == c1.Fingerprint.String() {
		t.Fatal("a broken certificate was not replaced", err)
	}
	if _, err := LoadCertificate(filepath.Join(dir, "none.pem"), filepath.Join(dir, KeyFileName)); err == nil {
		t.Fatal("missing file loaded")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(m) != 0 {
		t.Fatal("temporary files left:", m)
	}
}

func TestSetup(t *testing.T) {
	for _, s := range []Setup{SetupActive, SetupPassive, SetupActpass, SetupHoldconn} {
		if p, err := ParseSetup(" " + strings.ToUpper(s.String()) + " "); err != nil || p != s {
			t.Fatal(s, err)
		}
	}
	if _, err := ParseSetup("both"); err == nil {
		t.Fatal("bad setup accepted")
	}
	for _, tc := range []struct{ offer, prefer, want Setup }{
		{SetupActive, SetupActive, SetupPassive},
		{SetupNone, SetupActive, SetupPassive},
		{SetupPassive, SetupPassive, SetupActive},
		{SetupActpass, SetupActive, SetupActive},
		{SetupActpass, SetupPassive, SetupPassive},
		{SetupActpass, SetupNone, SetupPassive},
	} {
		if got, err := AnswerSetup(tc.offer, tc.prefer); err != nil || got != tc.want {
			t.Errorf("%v/%v: %v %v", tc.offer, tc.prefer, got, err)
		}
	}
	if _, err := AnswerSetup(SetupHoldconn, SetupPassive); err == nil {
		t.Fatal("holdconn answered")
	}
}
