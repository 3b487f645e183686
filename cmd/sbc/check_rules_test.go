package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckHeaderRules: sbc check names the rule and the offending field
// of each header-rule problem, at its line and column.
func TestCheckHeaderRules(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "rules.toml")
	// Hand-written: the test checks the FILE:LINE:COL of each problem.
	os.WriteFile(bad, []byte(`[[realm]]
name = "external"
  [[realm.listener]]
  bind = "127.0.0.1:0"

[[header_rule]]
name = "strip-via"
  [header_rule.match]
  realm = "external"
  direction = "out"
  [[header_rule.action]]
  op = "remove"
  header = "Via"

[[header_rule]]
name = "e164"
  [header_rule.match]
  realm = "external"
  direction = "sideways"
  [[header_rule.action]]
  op = "rewrite"
  part = "ruri.user"
  regexp = "^0(\\d+"
`), 0o644)
	var out, errb bytes.Buffer
	if code := runMain([]string{"check", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; out=%s err=%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		bad + `:13:12: header_rule[0].action[0].header: rule "strip-via": Via is owned by the SBC`,
		bad + `:19:15: header_rule[1].match.direction: rule "e164": unknown direction "sideways"`,
		bad + `:22:10: header_rule[1].action[0].part: rule "e164": ruri.user is rewritten on the initial INVITE only`,
		bad + `:23:12: header_rule[1].action[0].regexp: rule "e164": invalid regexp`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}
