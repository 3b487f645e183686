package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// rulesBase adds a trunk to outboundBase for the rules to name.
const rulesBase = outboundBase + `
[[trunk]]
name = "carrier-a-in"
realm = "external"
sources = ["192.0.2.0/24"]
`

func TestHeaderRulesParse(t *testing.T) {
	p, err := Parse("t.toml", []byte(rulesBase+`
[[header_rule]]
name = "tenant"
  [header_rule.match]
  trunk = "carrier-a-in"
  direction = "in"
  methods = ["INVITE"]
  [[header_rule.action]]
  op = "add"
  header = "X-Tenant"
  value = "${trunk}-$$-${call_id_hash}"
  [[header_rule.action]]
  op = "rewrite"
  part = "ruri.user"
  regexp = '^0(\d+)$'
  replace = "+44$1"

[[header_rule]]
name = "strip-internal"
  [header_rule.match]
  realm = "external"
  direction = "out"
  messages = "both"
  status = [180, 200]
  [[header_rule.action]]
  op = "remove"
  header = "X-Internal-*"
  [[header_rule.action]]
  op = "set"
  header = "X-Empty"
  [[header_rule.action]]
  op = "rewrite"
  header = "P-Asserted-Identity"
  regexp = '(?P<num>\+\d+)'
  replace = "${num}"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.HeaderRules) != 2 {
		t.Fatalf("%d rules", len(p.HeaderRules))
	}
	if m := p.HeaderRules[0].Match; m.Messages != "requests" || m.Direction != "in" {
		t.Errorf("defaults: %+v", m)
	}
	if a := p.HeaderRules[1].Actions; len(a) != 3 || a[0].Header != "X-Internal-*" {
		t.Errorf("actions: %+v", a)
	}
	parts, err := ParseHeaderTemplate(p.HeaderRules[0].Actions[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	want := []HeaderTemplatePart{{Var: "trunk"}, {Lit: "-$-"}, {Var: "call_id_hash"}}
	if fmt.Sprint(parts) != fmt.Sprint(want) {
		t.Errorf("template %v, want %v", parts, want)
	}
}

// TestHeaderRulesRefused: every refusal, each reported at the offending
// field with the rule's name.
func TestHeaderRulesRefused(t *testing.T) {
	rule := func(match, action string) string {
		return "\n[[header_rule]]\nname = \"r1\"\n  [header_rule.match]\n" + match + "\n  [[header_rule.action]]\n" + action + "\n"
	}
	const okMatch = `realm = "external"
direction = "out"`
	const okAction = `op = "add"
header = "X-A"
value = "v"`
	big := strings.Repeat("a", MaxHeaderRuleValue+1)
	for _, c := range []struct {
		name, toml, field, msg string
	}{
		{"no name", "\n[[header_rule]]\n  [header_rule.match]\n" + okMatch + "\n  [[header_rule.action]]\n" + okAction, "header_rule[0].name", "without a name"},
		{"bad name", strings.Replace(rule(okMatch, okAction), `"r1"`, `"a b"`, 1), "header_rule[0].name", "invalid rule name"},
		{"duplicate name", rule(okMatch, okAction) + rule(okMatch, okAction), "header_rule[1].name", "duplicate header rule name"},
		{"no peer", rule(`direction = "out"`, okAction), "header_rule[0].match", "names no peer"},
		{"trunk and pool", rule(`trunk = "carrier-a-in"
pool = "pbx"
direction = "out"`, okAction), "header_rule[0].match.pool", "different peers"},
		{"unknown trunk", rule(`trunk = "nope"
direction = "out"`, okAction), "header_rule[0].match.trunk", "unknown trunk"},
		{"unknown pool", rule(`pool = "nope"
direction = "out"`, okAction), "header_rule[0].match.pool", "unknown pool"},
		{"unknown realm", rule(`realm = "nope"
direction = "out"`, okAction), "header_rule[0].match.realm", "unknown realm"},
		{"trunk on another realm", rule(`trunk = "carrier-a-in"
realm = "internal"
direction = "out"`, okAction), "header_rule[0].match.realm", "could never match"},
		{"pool on another realm", rule(`pool = "pbx"
realm = "external"
direction = "out"`, okAction), "header_rule[0].match.realm", "could never match"},
		{"no direction", rule(`realm = "external"`, okAction), "header_rule[0].match.direction", "direction is required"},
		{"bad direction", rule(`realm = "external"
direction = "up"`, okAction), "header_rule[0].match.direction", "unknown direction"},
		{"ACK", rule(okMatch+"\nmethods = [\"ACK\"]", okAction), "header_rule[0].match.methods[0]", "never rewritten"},
		{"CANCEL", rule(okMatch+"\nmethods = [\"INVITE\", \"CANCEL\"]", okAction), "header_rule[0].match.methods[1]", "never rewritten"},
		{"REGISTER", rule(okMatch+"\nmethods = [\"REGISTER\"]", okAction), "header_rule[0].match.methods[0]", "not a call"},
		{"unknown method", rule(okMatch+"\nmethods = [\"invite\"]", okAction), "header_rule[0].match.methods[0]", "unknown method"},
		{"method twice", rule(okMatch+"\nmethods = [\"BYE\", \"BYE\"]", okAction), "header_rule[0].match.methods[1]", "listed twice"},
		{"bad messages", rule(okMatch+"\nmessages = \"all\"", okAction), "header_rule[0].match.messages", "unknown value"},
		{"status on requests", rule(okMatch+"\nstatus = [200]", okAction), "header_rule[0].match.status", "applies to responses"},
		{"bad status", rule(okMatch+"\nmessages = \"both\"\nstatus = [99]", okAction), "header_rule[0].match.status[0]", "invalid status code"},
		{"no action", "\n[[header_rule]]\nname = \"r1\"\n  [header_rule.match]\n" + okMatch, "header_rule[0]", "no action"},
		{"no op", rule(okMatch, `header = "X-A"`), "header_rule[0].action[0].op", "op is required"},
		{"bad op", rule(okMatch, `op = "append"`), "header_rule[0].action[0].op", "unknown op"},
		{"no header", rule(okMatch, `op = "add"
value = "v"`), "header_rule[0].action[0].header", "header is required"},
		{"bad header", rule(okMatch, `op = "add"
header = "X A"
value = "v"`), "header_rule[0].action[0].header", "invalid header name"},
		{"glob on add", rule(okMatch, `op = "add"
header = "X-*"
value = "v"`), "header_rule[0].action[0].header", "invalid header name"},
		{"inner star", rule(okMatch, `op = "remove"
header = "X-*-Y*"`), "header_rule[0].action[0].header", "invalid header name"},
		{"star alone", rule(okMatch, `op = "remove"
header = "*"`), "header_rule[0].action[0].header", "every header"},
		{"glob over protected", rule(okMatch, `op = "remove"
header = "Co*"`), "header_rule[0].action[0].header", "Contact"},
		{"add Via", rule(okMatch, `op = "add"
header = "Via"
value = "v"`), "header_rule[0].action[0].header", "owned by the SBC"},
		{"remove compact Call-ID", rule(okMatch, `op = "remove"
header = "i"`), "header_rule[0].action[0].header", "Call-ID is owned"},
		{"set From", rule(okMatch, `op = "set"
header = "from"
value = "v"`), "header_rule[0].action[0].header", "From is owned"},
		{"rewrite To", rule(okMatch, `op = "rewrite"
header = "To"
regexp = "a"`), "header_rule[0].action[0].header", "To is owned"},
		{"remove Contact", rule(okMatch, `op = "remove"
header = "Contact"`), "header_rule[0].action[0].header", "Contact is owned"},
		{"remove Route", rule(okMatch, `op = "remove"
header = "Record-Route"`), "header_rule[0].action[0].header", "Record-Route is owned"},
		{"set CSeq", rule(okMatch, `op = "set"
header = "CSeq"
value = "1"`), "header_rule[0].action[0].header", "CSeq is owned"},
		{"set Max-Forwards", rule(okMatch, `op = "set"
header = "Max-Forwards"
value = "1"`), "header_rule[0].action[0].header", "Max-Forwards is owned"},
		{"remove Content-Length", rule(okMatch, `op = "remove"
header = "Content-Length"`), "header_rule[0].action[0].header", "Content-Length is owned"},
		{"add without value", rule(okMatch, `op = "add"
header = "X-A"`), "header_rule[0].action[0].value", "needs a value"},
		{"unknown variable", rule(okMatch, `op = "add"
header = "X-A"
value = "${source_ip}"`), "header_rule[0].action[0].value", "unknown variable"},
		{"lone dollar", rule(okMatch, `op = "add"
header = "X-A"
value = "5$"`), "header_rule[0].action[0].value", "lone $"},
		{"unterminated", rule(okMatch, `op = "add"
header = "X-A"
value = "${trunk"`), "header_rule[0].action[0].value", "unterminated"},
		{"control char", rule(okMatch, `op = "add"
header = "X-A"
value = "a\r\nVia: x"`), "header_rule[0].action[0].value", "control character"},
		{"value too long", rule(okMatch, `op = "add"
header = "X-A"
value = "`+big+`"`), "header_rule[0].action[0].value", "longer than"},
		{"value on remove", rule(okMatch, `op = "remove"
header = "X-A"
value = "v"`), "header_rule[0].action[0].value", "not used by op"},
		{"regexp on add", rule(okMatch, okAction+"\nregexp = \"a\""), "header_rule[0].action[0].regexp", "not used by op"},
		{"part on set", rule(okMatch, `op = "set"
header = "X-A"
part = "ruri.user"`), "header_rule[0].action[0].part", "not used by op"},
		{"value on rewrite", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "a"
value = "b"`), "header_rule[0].action[0].value", "not used by op"},
		{"rewrite nothing", rule(okMatch, `op = "rewrite"
regexp = "a"`), "header_rule[0].action[0]", "needs header or part"},
		{"rewrite both", rule(okMatch, `op = "rewrite"
header = "X-A"
part = "pai.user"
regexp = "a"`), "header_rule[0].action[0].part", "not both"},
		{"unknown part", rule(okMatch, `op = "rewrite"
part = "via.host"
regexp = "a"`), "header_rule[0].action[0].part", "unknown part"},
		{"part outside INVITE", rule(okMatch, `op = "rewrite"
part = "ruri.user"
regexp = "a"`), "header_rule[0].action[0].part", "initial INVITE only"},
		{"part on responses", rule(okMatch+"\nmethods = [\"INVITE\"]\nmessages = \"both\"", `op = "rewrite"
part = "to.user"
regexp = "a"`), "header_rule[0].action[0].part", "initial INVITE only"},
		{"bad regexp", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "a("`), "header_rule[0].action[0].regexp", "invalid regexp"},
		{"empty regexp", rule(okMatch, `op = "rewrite"
header = "X-A"`), "header_rule[0].action[0].regexp", "empty regexp"},
		{"backreference", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = '(a)\1'`), "header_rule[0].action[0].regexp", "invalid regexp"},
		{"regexp too long", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "`+big+`"`), "header_rule[0].action[0].regexp", "longer than"},
		{"regexp too big", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "[a-z]{1000}[0-9]{1000}[A-Z]{1000}"`), "header_rule[0].action[0].regexp", "instructions"},
		{"replace unknown group", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "(a)"
replace = "$2"`), "header_rule[0].action[0].replace", "has 1 groups"},
		{"replace variable", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "(a)"
replace = "${trunk}"`), "header_rule[0].action[0].replace", "not expanded in replace"},
		{"replace no such name", rule(okMatch, `op = "rewrite"
header = "X-A"
regexp = "(?P<n>a)"
replace = "${m}"`), "header_rule[0].action[0].replace", "no such group"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(rulesBase+c.toml))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v, want Errors", err)
			}
			if len(es) != 1 {
				t.Fatalf("%d errors, want 1:\n%v", len(es), err)
			}
			if !strings.Contains(es[0].Msg, c.field+": ") || !strings.Contains(es[0].Msg, c.msg) {
				t.Errorf("error %q, want field %s and %q", es[0].Msg, c.field, c.msg)
			}
			if c.name != "no name" && !strings.Contains(es[0].Msg, `rule "`) && !strings.Contains(es[0].Msg, "name \"") {
				t.Errorf("error %q does not name the rule", es[0].Msg)
			}
		})
	}
}

func TestHeaderRulesLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(rulesBase)
	for i := 0; i <= MaxHeaderRules; i++ {
		fmt.Fprintf(&b, "[[header_rule]]\nname = \"r%d\"\n  [header_rule.match]\n  realm = \"external\"\n  direction = \"out\"\n  [[header_rule.action]]\n  op = \"remove\"\n  header = \"X-A\"\n", i)
	}
	if _, err := Parse("t.toml", []byte(b.String())); err == nil || !strings.Contains(err.Error(), "more than 64 header rules") {
		t.Errorf("%d rules: %v", MaxHeaderRules+1, err)
	}
	b.Reset()
	b.WriteString(rulesBase + "[[header_rule]]\nname = \"many\"\n  [header_rule.match]\n  realm = \"external\"\n  direction = \"out\"\n")
	for i := 0; i <= MaxHeaderRuleActions; i++ {
		b.WriteString("  [[header_rule.action]]\n  op = \"remove\"\n  header = \"X-A\"\n")
	}
	if _, err := Parse("t.toml", []byte(b.String())); err == nil || !strings.Contains(err.Error(), `rule "many": more than 16 actions`) {
		t.Errorf("%d actions: %v", MaxHeaderRuleActions+1, err)
	}
}

// FuzzHeaderTemplate: any text either is refused or parses into parts
// that write back to a text of the same meaning, with known variables
// and no control character.
func FuzzHeaderTemplate(f *testing.F) {
	for _, s := range []string{"", "x", "${trunk}", "$$", "a${from.user}b$${c}", "${", "$", "${nope}", "\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parts, err := ParseHeaderTemplate(s)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Var != "" {
				if !slices.Contains(HeaderRuleVars, p.Var) {
					t.Fatalf("unknown variable %q accepted", p.Var)
				}
				b.WriteString("${" + p.Var + "}")
				continue
			}
			for i := 0; i < len(p.Lit); i++ {
				if c := p.Lit[i]; c < 0x20 && c != '\t' || c == 0x7f {
					t.Fatalf("control character in %q", p.Lit)
				}
			}
			b.WriteString(strings.ReplaceAll(p.Lit, "$", "$$"))
		}
		again, err := ParseHeaderTemplate(b.String())
		if err != nil || fmt.Sprint(again) != fmt.Sprint(parts) {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, parts, b.String(), again, err)
		}
	})
}
