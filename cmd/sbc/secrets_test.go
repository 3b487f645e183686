package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/secrets"
)

// TestSecretsCommands: genkey makes a usable key; seal reads stdin and
// prints a value that opens under the key; rotate re-seals a file under a
// new key given the old one, and refuses (leaving the file) without it.
func TestSecretsCommands(t *testing.T) {
	t.Setenv(secrets.EnvKey, "")
	t.Setenv(secrets.EnvPreviousKey, "")
	dir := t.TempDir()
	run := func(in string, args ...string) (int, string, string) {
		stdin = strings.NewReader(in)
		defer func() { stdin = os.Stdin }()
		var out, errb bytes.Buffer
		code := runMain(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	keyFile := func(name string) string {
		code, out, _ := run("", "secrets", "genkey")
		if code != 0 {
			t.Fatal("genkey failed")
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldK, newK := keyFile("old.key"), keyFile("new.key")
	code, sealed, errs := run("webhook-secret\n", "secrets", "seal", "-key-file", oldK)
	if code != 0 || !secrets.IsSealed(sealed) {
		t.Fatalf("seal: %d %q %s", code, sealed, errs)
	}
	sealed = strings.TrimSpace(sealed)
	kr := func(cur string, prev ...string) *secrets.Keyring {
		var ks []*secrets.Key
		for _, f := range append([]string{cur}, prev...) {
			k, err := secrets.ReadKeyFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ks = append(ks, k)
		}
		return secrets.NewKeyring(ks[0], ks[1:]...)
	}
	if v, err := kr(oldK).Open(sealed); err != nil || string(v) != "webhook-secret" {
		t.Fatalf("sealed value opens to %q %v", v, err)
	}
	if code, _, errs := run("x", "secrets", "seal"); code != 1 || !strings.Contains(errs, "no master key") {
		t.Fatalf("seal without a key: %d %s", code, errs)
	}
	file := filepath.Join(dir, "policy.toml")
	text := "secret = \"" + sealed + "\"\n"
	_ = os.WriteFile(file, []byte(text), 0o600)
	if code, _, errs := run("", "secrets", "rotate", "-key-file", newK, file); code != 1 || !strings.Contains(errs, "unchanged") {
		t.Fatalf("rotate without the old key: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(file); string(b) != text {
		t.Fatal("a refused rotation changed the file")
	}
	code, out, errs := run("", "secrets", "rotate", "-key-file", newK, "-previous-key-file", oldK, file)
	if code != 0 || !strings.Contains(out, "1 value(s)") {
		t.Fatalf("rotate: %d %s %s", code, out, errs)
	}
	b, _ := os.ReadFile(file)
	v, err := kr(newK).Reveal(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(b)), `secret = "`), `"`))
	if err != nil || v != "webhook-secret" {
		t.Fatalf("after rotation the new key alone opens %q %v", v, err)
	}
}
