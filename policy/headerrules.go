package policy

import (
	"fmt"
	"maps"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
)

// HeaderRule is one [[header_rule]]: header manipulation applied to the
// messages of calls the SBC sends, after topology hiding (the allow-list
// of [headers] and the SBC's own headers), in file order. It is data, not
// a script: a match on the peer, the direction and the message, and an
// ordered list of actions (add, set, remove, rewrite).
type HeaderRule struct {
	// Name identifies the rule in errors, logs and metrics; unique;
	// letters, digits, '_', '-', '.'.
	Name string `toml:"name"`
	// Match selects the messages the rule applies to.
	Match HeaderMatch `toml:"match"`
	// Actions run in order on each matching message: at least one, at
	// most MaxHeaderRuleActions.
	Actions []HeaderAction `toml:"action"`
}

// HeaderMatch selects messages by the peer on one side of the call, the
// direction and the message. Every field given must hold.
type HeaderMatch struct {
	// Trunk, Pool, Realm name the peer: a trunk (the caller of an inbound
	// call), a pool (the backend or carrier pool of a B-leg, or the
	// backend pool an outbound call came from) and/or the realm of that
	// peer's leg. At least one; a trunk and a pool never name the same
	// peer, so not both.
	Trunk string `toml:"trunk"`
	Pool  string `toml:"pool"`
	Realm string `toml:"realm"`
	// Direction: "out" — messages the SBC sends to that peer; "in" —
	// messages that came from that peer, as the SBC sends them on the
	// call's other leg. Required.
	Direction string `toml:"direction"`
	// Methods: the request's method, for a response the method it
	// answers (CSeq). Empty: any. ACK and CANCEL are built by the SBC
	// from its INVITE and never rewritten; REGISTER is not a call.
	Methods []string `toml:"methods"`
	// Messages: "requests" (default), "responses" or "both".
	Messages string `toml:"messages"`
	// Status: response codes (100..699) the rule applies to; empty: any.
	// Only with messages "responses" or "both" (requests have none).
	Status []int `toml:"status"`
}

// HeaderAction is one action of a rule. Op says which fields apply:
//
//	add      header, value   append a header (another one if present)
//	set      header, value   remove every value of the header, then add
//	remove   header          remove the header; "X-Foo-*" removes every
//	                         header whose name starts with "X-Foo-"
//	rewrite  header or part, regexp, replace
//	                         replace the matches of regexp in every value
//	                         of the header, or in a URI part
type HeaderAction struct {
	Op     string `toml:"op"`
	Header string `toml:"header"`
	// Part (rewrite only, instead of header): "ruri.user", "from.user",
	// "to.user", "from.display" (the initial INVITE only) or "pai.user"
	// (the user of every P-Asserted-Identity URI).
	Part string `toml:"part"`
	// Value (add, set): text with ${variable} substitutions from a closed
	// list (HeaderRuleVars); "$$" is a literal "$".
	Value string `toml:"value"`
	// Regexp (rewrite): Go RE2 syntax, matched in linear time.
	Regexp string `toml:"regexp"`
	// Replace (rewrite): Go's regexp template: $1, ${1}, ${name} of the
	// regexp's groups; "$$" is a literal "$". ${variable}s are not
	// expanded here.
	Replace string `toml:"replace"`
}

// Limits of header rules, enforced at load.
const (
	MaxHeaderRules         = 64
	MaxHeaderRuleActions   = 16
	MaxHeaderRuleValue     = 256  // bytes of a value template or replace
	MaxHeaderRuleRegexp    = 256  // bytes of a regexp
	MaxHeaderRuleRegexpOps = 2000 // instructions of a compiled regexp
	// MaxHeaderValue bounds a value after substitution (checked when the
	// rule runs: a longer one is skipped and counted).
	MaxHeaderValue = 1024
)

// HeaderRuleVars are the ${variable}s a value may use.
var HeaderRuleVars = []string{
	"from.user", "from.display", "to.user", "ruri.user", "pai.user",
	"trunk", "pool", "source_pool", "call_id_hash",
}

// HeaderRuleParts are the URI parts a rewrite may name; the first four
// only on the initial INVITE.
var HeaderRuleParts = []string{"ruri.user", "from.user", "to.user", "from.display", "pai.user"}

// headerRuleMethods are the methods a rule may match.
var headerRuleMethods = []string{"INVITE", "BYE", "OPTIONS", "PRACK", "UPDATE", "INFO", "MESSAGE", "REFER", "NOTIFY", "SUBSCRIBE"}

// protectedHeaders are the headers the SBC owns for correctness: rules
// may not name them (long and compact forms, lower case).
var protectedHeaders = map[string]string{
	"via": "Via", "v": "Via", "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
	"from": "From", "f": "From", "to": "To", "t": "To", "contact": "Contact", "m": "Contact",
	"route": "Route", "record-route": "Record-Route", "content-length": "Content-Length", "l": "Content-Length",
	"max-forwards": "Max-Forwards", "content-type": "Content-Type", "c": "Content-Type",
}

// ProtectedHeader reports whether a header (any case, long or compact
// form) is one the SBC owns and header rules may not touch: Via, Call-ID,
// CSeq, From, To, Contact, Route, Record-Route, Content-Length,
// Max-Forwards, Content-Type.
func ProtectedHeader(name string) bool {
	for p := range protectedHeaders {
		if strings.EqualFold(p, name) { // no allocation, unlike ToLower
			return true
		}
	}
	return false
}

// HeaderTemplatePart is a piece of a parsed value: literal text, or a
// variable (Var set).
type HeaderTemplatePart struct {
	Lit string
	Var string
}

// ParseHeaderTemplate parses a value with ${variable} substitutions.
func ParseHeaderTemplate(s string) ([]HeaderTemplatePart, error) {
	if len(s) > MaxHeaderRuleValue {
		return nil, fmt.Errorf("longer than %d bytes", MaxHeaderRuleValue)
	}
	var out []HeaderTemplatePart
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, fmt.Errorf("control character at byte %d", i)
		}
		if c != '$' {
			lit.WriteByte(c)
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '$':
			lit.WriteByte('$')
			i++
		case i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ${ at byte %d", i)
			}
			name := s[i+2 : i+end]
			if !slices.Contains(HeaderRuleVars, name) {
				return nil, fmt.Errorf("unknown variable ${%s} (known: %s)", name, strings.Join(HeaderRuleVars, ", "))
			}
			if lit.Len() > 0 {
				out = append(out, HeaderTemplatePart{Lit: lit.String()})
				lit.Reset()
			}
			out = append(out, HeaderTemplatePart{Var: name})
			i += end
		default:
			return nil, fmt.Errorf("lone $ at byte %d (write $$ for a dollar sign, ${variable} for a substitution)", i)
		}
	}
	if lit.Len() > 0 {
		out = append(out, HeaderTemplatePart{Lit: lit.String()})
	}
	return out, nil
}

// CompileHeaderRegexp compiles a rewrite's regexp (RE2: linear time in
// the input) within the size limits.
func CompileHeaderRegexp(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, fmt.Errorf("empty regexp")
	}
	if len(expr) > MaxHeaderRuleRegexp {
		return nil, fmt.Errorf("longer than %d bytes", MaxHeaderRuleRegexp)
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, err
	}
	if len(prog.Inst) > MaxHeaderRuleRegexpOps {
		return nil, fmt.Errorf("compiles to %d instructions, more than %d (a smaller regexp, fewer counted repetitions)", len(prog.Inst), MaxHeaderRuleRegexpOps)
	}
	return regexp.Compile(expr)
}

// checkReplace checks a rewrite's replacement template against re: only
// its groups ($1, ${name}) may be referenced, and no control characters.
func checkReplace(repl string, re *regexp.Regexp) error {
	if len(repl) > MaxHeaderRuleValue {
		return fmt.Errorf("longer than %d bytes", MaxHeaderRuleValue)
	}
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("control character at byte %d", i)
		}
		if c != '$' {
			continue
		}
		if i+1 < len(repl) && repl[i+1] == '$' {
			i++
			continue
		}
		var name string
		j := i + 1
		if j < len(repl) && repl[j] == '{' {
			end := strings.IndexByte(repl[j:], '}')
			if end < 0 {
				return fmt.Errorf("unterminated ${ at byte %d", i)
			}
			name = repl[j+1 : j+end]
			i = j + end
		} else {
			for j < len(repl) && (repl[j] == '_' || 'a' <= repl[j] && repl[j] <= 'z' || 'A' <= repl[j] && repl[j] <= 'Z' || '0' <= repl[j] && repl[j] <= '9') {
				j++
			}
			name = repl[i+1 : j]
			i = j - 1
		}
		if name == "" {
			return fmt.Errorf("lone $ (write $$ for a dollar sign)")
		}
		if n, err := strconv.Atoi(name); err == nil {
			if n > re.NumSubexp() {
				return fmt.Errorf("$%s: the regexp has %d groups", name, re.NumSubexp())
			}
			continue
		}
		if re.SubexpIndex(name) < 0 {
			if slices.Contains(HeaderRuleVars, name) {
				return fmt.Errorf("${%s}: variables are not expanded in replace (only the regexp's groups: $1, ${name})", name)
			}
			return fmt.Errorf("${%s}: no such group in the regexp", name)
		}
	}
	return nil
}

func (v *validator) headerRules() {
	rules := v.p.HeaderRules
	if len(rules) > MaxHeaderRules {
		v.errf(elemPath("header_rule", MaxHeaderRules), "more than %d header rules", MaxHeaderRules)
	}
	names := map[string]string{}
	for i := range rules {
		r := &rules[i]
		rp := elemPath("header_rule", i)
		switch {
		case r.Name == "":
			v.errf(rp+".name", "header rule without a name (add name = \"...\")")
		case !validName(r.Name):
			v.errf(rp+".name", "invalid rule name %s: use letters, digits, '_', '-' and '.', at most %d", quote(r.Name), maxNameLen)
		default:
			if prev, dup := names[r.Name]; dup {
				v.errf(rp+".name", "duplicate header rule name %q (first at %s)", r.Name, v.where(prev))
			}
			names[r.Name] = rp + ".name"
		}
		// Every message names the rule: the path alone is hard to find
		// in a long file.
		rerr := func(path, format string, args ...any) {
			v.errf(path, "rule %s: %s", quote(r.Name), fmt.Sprintf(format, args...))
		}
		v.headerMatch(r, rp+".match", rerr)
		if len(r.Actions) == 0 {
			rerr(rp, "no action (add [[header_rule.action]] tables)")
		}
		if len(r.Actions) > MaxHeaderRuleActions {
			rerr(elemPath(rp+".action", MaxHeaderRuleActions), "more than %d actions", MaxHeaderRuleActions)
		}
		for j := range r.Actions {
			v.headerAction(r, elemPath(rp+".action", j), &r.Actions[j], rerr)
		}
	}
}

func (v *validator) headerMatch(r *HeaderRule, mp string, rerr func(string, string, ...any)) {
	m := &r.Match
	if m.Trunk == "" && m.Pool == "" && m.Realm == "" {
		rerr(mp, "match names no peer: give trunk, pool and/or realm")
	}
	if m.Trunk != "" && m.Pool != "" {
		rerr(mp+".pool", "a trunk and a pool are different peers: give one of them")
	}
	if ruleRef(mp+".trunk", "trunk", m.Trunk, v.trunks, v.badNames, rerr) && m.Realm != "" {
		if t := v.p.Trunks[v.trunks[m.Trunk]]; t.Realm != m.Realm {
			rerr(mp+".realm", "trunk %s arrives on realm %s, not %s: the rule could never match", quote(m.Trunk), quote(t.Realm), quote(m.Realm))
		}
	}
	if ruleRef(mp+".pool", "pool", m.Pool, v.pools, v.badNames, rerr) && m.Realm != "" {
		if p := v.p.Pools[v.pools[m.Pool]]; p.Realm != m.Realm {
			rerr(mp+".realm", "pool %s is on realm %s, not %s: the rule could never match", quote(m.Pool), quote(p.Realm), quote(m.Realm))
		}
	}
	ruleRef(mp+".realm", "realm", m.Realm, v.realms, v.badNames, rerr)
	switch m.Direction {
	case "in", "out":
	case "":
		rerr(mp+".direction", "direction is required: \"out\" (messages sent to the peer) or \"in\" (messages from the peer, sent on the other leg)")
	default:
		rerr(mp+".direction", "unknown direction %s (want \"in\" or \"out\")", quote(m.Direction))
	}
	seen := map[string]bool{}
	for k, meth := range m.Methods {
		kp := elemPath(mp+".methods", k)
		switch {
		case meth == "ACK" || meth == "CANCEL":
			rerr(kp, "%s is built by the SBC from its INVITE and never rewritten", meth)
		case meth == "REGISTER":
			rerr(kp, "REGISTER is not a call: header rules apply to the messages of calls")
		case !slices.Contains(headerRuleMethods, meth):
			rerr(kp, "unknown method %s (want one of %s, upper case)", quote(meth), strings.Join(headerRuleMethods, ", "))
		case seen[meth]:
			rerr(kp, "method %s listed twice", meth)
		}
		seen[meth] = true
	}
	switch m.Messages {
	case "":
		m.Messages = "requests"
	case "requests", "responses", "both":
	default:
		rerr(mp+".messages", "unknown value %s (want \"requests\", \"responses\" or \"both\")", quote(m.Messages))
	}
	if len(m.Status) > 0 && m.Messages == "requests" {
		rerr(mp+".status", "status applies to responses: set messages = \"responses\" or \"both\"")
	}
	for k, st := range m.Status {
		if st < 100 || st > 699 {
			rerr(elemPath(mp+".status", k), "invalid status code %d (100..699)", st)
		}
	}
}

func (v *validator) headerAction(r *HeaderRule, ap string, a *HeaderAction, rerr func(string, string, ...any)) {
	unused := func(field, val string) {
		if val != "" {
			rerr(ap+"."+field, "%s is not used by op %s", field, quote(a.Op))
		}
	}
	switch a.Op {
	case "add", "set":
		v.ruleHeaderName(ap+".header", a.Header, false, rerr)
		if _, err := ParseHeaderTemplate(a.Value); err != nil {
			rerr(ap+".value", "invalid value: %v", err)
		}
		if a.Op == "add" && a.Value == "" {
			rerr(ap+".value", "add needs a value")
		}
		unused("part", a.Part)
		unused("regexp", a.Regexp)
		unused("replace", a.Replace)
	case "remove":
		v.ruleHeaderName(ap+".header", a.Header, true, rerr)
		unused("part", a.Part)
		unused("value", a.Value)
		unused("regexp", a.Regexp)
		unused("replace", a.Replace)
	case "rewrite":
		switch {
		case a.Header != "" && a.Part != "":
			rerr(ap+".part", "give header or part, not both")
		case a.Header != "":
			v.ruleHeaderName(ap+".header", a.Header, false, rerr)
		case a.Part == "":
			rerr(ap, "rewrite needs header or part (%s)", strings.Join(HeaderRuleParts, ", "))
		case !slices.Contains(HeaderRuleParts, a.Part):
			rerr(ap+".part", "unknown part %s (want one of %s)", quote(a.Part), strings.Join(HeaderRuleParts, ", "))
		case a.Part != "pai.user" && (r.Match.Messages != "requests" || !slices.Equal(r.Match.Methods, []string{"INVITE"})):
			rerr(ap+".part", "%s is rewritten on the initial INVITE only (a dialog's From, To and request-URI stay as created): the rule needs match.methods = [\"INVITE\"] and messages = \"requests\"", a.Part)
		}
		re, err := CompileHeaderRegexp(a.Regexp)
		if err != nil {
			rerr(ap+".regexp", "invalid regexp: %v", err)
		} else if err := checkReplace(a.Replace, re); err != nil {
			rerr(ap+".replace", "invalid replace: %v", err)
		}
		unused("value", a.Value)
	case "":
		rerr(ap+".op", "op is required: \"add\", \"set\", \"remove\" or \"rewrite\"")
	default:
		rerr(ap+".op", "unknown op %s (want \"add\", \"set\", \"remove\" or \"rewrite\")", quote(a.Op))
	}
}

// ruleRef checks a rule's reference to a trunk, pool or realm: true when
// it names one that exists.
func ruleRef(path, kind, name string, known map[string]int, bad map[string]bool, rerr func(string, string, ...any)) bool {
	if name == "" {
		return false
	}
	if _, ok := known[name]; ok {
		return true
	}
	if !bad[kind] {
		defined := slices.Sorted(maps.Keys(known))
		if len(defined) > 10 {
			defined = append(defined[:10], "...")
		}
		rerr(path, "unknown %s %s (defined: %s)", kind, quote(name), strings.Join(defined, ", "))
	}
	return false
}

// ruleHeaderName checks a header name of an action; glob allows a
// trailing '*' (remove).
func (v *validator) ruleHeaderName(path, name string, glob bool, rerr func(string, string, ...any)) {
	if name == "" {
		rerr(path, "header is required")
		return
	}
	base := name
	isGlob := glob && strings.HasSuffix(name, "*")
	if isGlob {
		base = strings.TrimSuffix(name, "*")
		if base == "" {
			rerr(path, "\"*\" alone would remove every header: name a prefix (\"X-Internal-*\")")
			return
		}
	}
	if !validToken(base) || strings.Contains(base, "*") {
		if glob {
			rerr(path, "invalid header name %s (a name, or a prefix followed by one trailing '*')", quote(name))
		} else {
			rerr(path, "invalid header name %s", quote(name))
		}
		return
	}
	lower := strings.ToLower(base)
	if isGlob {
		for _, p := range slices.Sorted(maps.Keys(protectedHeaders)) {
			if strings.HasPrefix(p, lower) {
				rerr(path, "%s would match %s, a header the SBC owns and rules may not touch", name, protectedHeaders[p])
				return
			}
		}
		return
	}
	if long, ok := protectedHeaders[lower]; ok {
		rerr(path, "%s is owned by the SBC (Via, Call-ID, CSeq, From, To, Contact, Route, Record-Route, Content-Length, Max-Forwards, Content-Type): rules may not touch it (rewrite from.user, to.user or ruri.user with part instead)", long)
	}
}
