package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/policy"
)

// "sbc run FILE" runs FILE: a broken FILE is reported and nothing starts.
// Before, the positional argument was ignored and the embedded example
// policy ran instead.
func TestRunTakesPolicyFileAsArgument(t *testing.T) {
	old := defaultPolicy
	defer func() { defaultPolicy = old }()
	defaultPolicy = func() *policy.Policy {
		t.Fatal("sbc run FILE ran the embedded default policy instead of FILE")
		return nil
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	// Hand-written, not internal/testpolicy: deliberately invalid, and
	// the test checks the line of the problem.
	if err := os.WriteFile(bad, []byte("[server]\ncolour = \"blue\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runMain([]string{"run", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errb.String())
	}
	if !strings.Contains(errb.String(), bad+":2:") {
		t.Fatalf("the problem of %s is not reported:\n%s", bad, errb.String())
	}
}

// Arguments that are neither flags nor the one policy file are errors
// with usage, for run and check alike.
func TestRunAndCheckRejectStrayArguments(t *testing.T) {
	old := defaultPolicy
	defer func() { defaultPolicy = old }()
	defaultPolicy = func() *policy.Policy {
		t.Fatal("stray arguments ran the embedded default policy")
		return nil
	}
	for _, args := range [][]string{
		{"run", "a.toml", "b.toml"},
		{"run", "-config", "a.toml", "b.toml"},
		{"run", "a.toml", "-config", "a.toml"},
		{"check", "a.toml", "b.toml"},
		{"check", "-config", "a.toml", "b.toml"},
		{"check"},
	} {
		var out, errb bytes.Buffer
		if code := runMain(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2; out=%s err=%s", args, code, out.String(), errb.String())
			continue
		}
		if !strings.Contains(errb.String(), "usage: sbc "+args[0]) {
			t.Errorf("%q: no usage in:\n%s", args, errb.String())
		}
	}
}

func TestCheckTakesPolicyFileAsArgument(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"check", "../../sbc.example.toml"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "sbc.example.toml: ok") {
		t.Fatalf("output: %s", out.String())
	}
	out.Reset()
	if code := runMain([]string{"check", "-config", "../../sbc.example.toml", "../../sbc.example.toml"}, &out, &errb); code != 0 {
		t.Fatalf("same file twice: exit %d: %s%s", code, out.String(), errb.String())
	}
}
