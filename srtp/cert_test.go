package srtp

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
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

// testSealer is a stand-in for package secrets' Keyring: it "seals" by
// base64 under a named key and refuses another key's values.
type testSealer struct{ key string }

func (s testSealer) Seal(p []byte) (string, error) {
	return s.key + ":" + base64.StdEncoding.EncodeToString(p), nil
}

func (s testSealer) Open(v string) ([]byte, error) {
	rest, ok := strings.CutPrefix(v, s.key+":")
	if !ok {
		return nil, errors.New("wrong key")
	}
	return base64.StdEncoding.DecodeString(rest)
}

func TestSealedCertificateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dtls")
	// A plain key of an earlier run is sealed, its plain file removed, the
	// fingerprint kept.
	c0, err := LoadOrCreateCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	k1 := testSealer{"k1"}
	c1, err := LoadOrCreateSealedCertificate(dir, k1)
	if err != nil || c1.Fingerprint.String() != c0.Fingerprint.String() {
		t.Fatalf("migration: %v, fingerprint changed: %v", err, c1 != nil && c1.Fingerprint.String() != c0.Fingerprint.String())
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFileName)); !os.IsNotExist(err) {
		t.Fatal("the plain key file is still there after sealing")
	}
	b, err := os.ReadFile(filepath.Join(dir, SealedKeyFileName))
	if err != nil || !strings.HasPrefix(string(b), "k1:") || strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatalf("sealed key file: %q %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, SealedKeyFileName)); st.Mode().Perm() != 0o600 {
		t.Fatalf("sealed key mode %v", st.Mode().Perm())
	}
	c2, err := LoadOrCreateSealedCertificate(dir, k1)
	if err != nil || c2.Fingerprint.String() != c0.Fingerprint.String() {
		t.Fatal("the sealed certificate was not reused", err)
	}
	// The wrong key, or none, fails and changes nothing.
	if _, err := LoadOrCreateSealedCertificate(dir, testSealer{"k2"}); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := LoadOrCreateCertificate(dir); !errors.Is(err, ErrSealedKeyNoSealer) {
		t.Fatalf("no key: %v", err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, SealedKeyFileName)); string(b2) != string(b) {
		t.Fatal("a refused start rewrote the sealed key")
	}
	// A fresh directory gets a sealed key at once.
	dir2 := filepath.Join(t.TempDir(), "fresh")
	if _, err := LoadOrCreateSealedCertificate(dir2, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir2, KeyFileName)); !os.IsNotExist(err) {
		t.Fatal("a plain key was written with a sealer")
	}
}
