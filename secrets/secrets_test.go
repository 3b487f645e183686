package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKey(t *testing.T) *Key {
	t.Helper()
	k, err := ParseKey(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	r := NewKeyring(mustKey(t))
	for _, plain := range [][]byte{nil, []byte("x"), []byte("webhook secret ✓"), bytes.Repeat([]byte{0, 255}, 5000)} {
		s, err := r.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if !IsSealed(s) || strings.ContainsAny(s, " \n\"\\") {
			t.Fatalf("sealed form %q is not one printable token", s)
		}
		if len(plain) > 3 && strings.Contains(s, string(plain)) {
			t.Fatal("plaintext visible in the sealed value")
		}
		got, err := r.Open(s)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open: %q %v, want %q", got, err, plain)
		}
		s2, _ := r.Seal(plain)
		if s2 == s {
			t.Fatal("two seals of one value are equal (nonce reused)")
		}
	}
	if v, err := r.Reveal("plain"); err != nil || v != "plain" {
		t.Fatalf("Reveal of a plain value: %q %v", v, err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	a, b := NewKeyring(mustKey(t)), NewKeyring(mustKey(t))
	s, _ := a.Seal([]byte("secret"))
	_, err := b.Open(s)
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), a.CurrentID()) {
		t.Fatalf("Open under another key: %v, want ErrNoKey naming %s", err, a.CurrentID())
	}
	var none *Keyring
	if _, err := none.Open(s); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), EnvKey) {
		t.Fatalf("Open without a key: %v", err)
	}
	if _, err := none.Seal([]byte("x")); err == nil {
		t.Fatal("Seal without a key succeeded")
	}
	// A different key forged under the same id fails authentication.
	raw := make([]byte, 32)
	k, _ := NewKey(raw)
	k.id = a.CurrentID()
	if _, err := NewKeyring(k).Open(s); !errors.Is(err, ErrTampered) {
		t.Fatalf("wrong key with the right id: %v, want ErrTampered", err)
	}
	for _, bad := range []string{"", "c2hvcnQ=", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestTamperedRefused(t *testing.T) {
	r := NewKeyring(mustKey(t))
	s, _ := r.Seal([]byte("the pepper"))
	body := s[len(Prefix)+9:]
	raw, _ := base64.RawURLEncoding.DecodeString(body)
	for i := range raw {
		c := append([]byte(nil), raw...)
		c[i] ^= 0x01
		v := s[:len(Prefix)+9] + base64.RawURLEncoding.EncodeToString(c)
		if _, err := r.Open(v); !errors.Is(err, ErrTampered) {
			t.Fatalf("byte %d flipped: %v, want ErrTampered", i, err)
		}
	}
	for _, v := range []string{s[:len(s)-4], s + "AAAA", s[:len(Prefix)+9] + "!!", "sbcsec:v1:zz:abc", "sbcsec:v2:" + s[len(Prefix):]} {
		if _, err := r.Open(v); err == nil {
			t.Errorf("%q opened", v)
		}
	}
}

func TestRotation(t *testing.T) {
	oldK, newK := mustKey(t), mustKey(t)
	oldR := NewKeyring(oldK)
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.toml")
	s1, _ := oldR.Seal([]byte("carrier-password"))
	s2, _ := oldR.Seal([]byte("hook-secret"))
	text := "[x]\npassword = \"" + s1 + "\"\n# comment stays\nsecret = \"" + s2 + "\"\nplain = \"p\"\n"
	if err := os.WriteFile(path, []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	// During the rotation: the new key seals, both open.
	rot := NewKeyring(newK, oldK)
	n, err := rot.ResealFile(path)
	if err != nil || n != 2 {
		t.Fatalf("ResealFile: %d %v, want 2", n, err)
	}
	out, _ := os.ReadFile(path)
	if strings.Contains(string(out), oldK.ID()) || !strings.Contains(string(out), "# comment stays") || !strings.Contains(string(out), `plain = "p"`) {
		t.Fatalf("after rotation:\n%s", out)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v not kept", st.Mode().Perm())
	}
	// The new key alone opens the file's values; the old one alone cannot.
	newR := NewKeyring(newK)
	vals := sealedRE.FindAllString(string(out), -1)
	for i, want := range []string{"carrier-password", "hook-secret"} {
		if got, err := newR.Open(vals[i]); err != nil || string(got) != want {
			t.Fatalf("value %d under the new key: %q %v", i, got, err)
		}
		if _, err := oldR.Open(vals[i]); !errors.Is(err, ErrNoKey) {
			t.Fatalf("value %d under the old key: %v", i, err)
		}
	}
	// Values sealed before the rotation still open while both keys are
	// loaded (no downtime between deploying the key and resealing).
	if got, err := rot.Open(s1); err != nil || string(got) != "carrier-password" {
		t.Fatalf("old value during rotation: %q %v", got, err)
	}
	// Resealing again changes nothing; without the old key it fails and
	// leaves the file alone.
	if n, err := rot.ResealFile(path); err != nil || n != 0 {
		t.Fatalf("second reseal: %d %v", n, err)
	}
	other := filepath.Join(dir, "b.toml")
	_ = os.WriteFile(other, []byte(s1), 0o600)
	if _, err := NewKeyring(mustKey(t)).ResealFile(other); !errors.Is(err, ErrNoKey) {
		t.Fatalf("reseal without the old key: %v", err)
	}
	if b, _ := os.ReadFile(other); string(b) != s1 {
		t.Fatal("a failed reseal changed the file")
	}
}

func TestLoadKeyring(t *testing.T) {
	dir := t.TempDir()
	k := GenerateKey()
	env := map[string]string{}
	getenv := func(s string) string { return env[s] }
	if r, err := LoadKeyring(Sources{Getenv: getenv}); r != nil || err != nil {
		t.Fatalf("no key configured: %v %v, want nil nil", r, err)
	}
	env[EnvKey] = "not base64!"
	if _, err := LoadKeyring(Sources{Getenv: getenv}); err == nil || !strings.Contains(err.Error(), EnvKey) {
		t.Fatalf("bad env key: %v", err)
	}
	env[EnvKey] = k
	r, err := LoadKeyring(Sources{Getenv: getenv})
	if err != nil || r == nil {
		t.Fatal(err)
	}
	kf := filepath.Join(dir, "master.key")
	_ = os.WriteFile(kf, []byte(k+"\n"), 0o644)
	if _, err := LoadKeyring(Sources{KeyFile: kf, Getenv: getenv}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key file: %v", err)
	}
	_ = os.Chmod(kf, 0o600)
	rf, err := LoadKeyring(Sources{KeyFile: kf, Getenv: getenv})
	if err != nil || rf.CurrentID() != r.CurrentID() {
		t.Fatalf("key file: %v %v", rf, err)
	}
	if _, err := LoadKeyring(Sources{KeyFile: filepath.Join(dir, "missing"), Getenv: getenv}); err == nil {
		t.Fatal("a missing key file was accepted")
	}
	env = map[string]string{EnvPreviousKey: k}
	if _, err := LoadKeyring(Sources{Getenv: getenv}); err == nil {
		t.Fatal("a previous key alone was accepted")
	}
}
