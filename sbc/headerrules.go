package sbc

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/policy"
)

// Header manipulation rules ([[header_rule]], policy/headerrules.go): the
// last thing done to a message of a call before it is sent, after
// topology hiding. Compiled once per snapshot (buildSnapshot); a message
// no rule matches costs a few string comparisons per rule and no
// allocation (BenchmarkHeaderRules). Hooks, one line each, sit where the
// call builds what it sends: buildInvite (call.go: the INVITE to each
// target), responseToA (call.go), the relay of in-dialog requests,
// inDialogResponse and byeLegRaw (call_fsm.go: every BYE of the call). They run inside the call's transition:
// no socket, no lock of their own.

// Why an action was skipped: the values of
// sbc_header_rule_skips_total's reason.
const (
	skipExposure     = "exposure"      // the value names an address of another realm of the SBC
	skipInvalidValue = "invalid_value" // a control character, too long, or not fit for the URI part
)

var hdrSkipReasons = []string{skipExposure, skipInvalidValue}

func newHdrRuleMetrics(m *Metrics) {
	m.HeaderRuleMatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_header_rule_matches_total", Help: "Messages a header rule matched and ran on, by rule.",
	}, []string{"rule"})
	m.HeaderRuleSkips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_header_rule_skips_total", Help: "Header rule actions not applied, by rule and reason: exposure (the value named an address of another realm of the SBC), invalid_value (a control character, over 1024 bytes, or a character the URI part cannot hold).",
	}, []string{"rule", "reason"})
	m.Registry.MustRegister(m.HeaderRuleMatches, m.HeaderRuleSkips)
}

// Action kinds.
const (
	opAdd uint8 = iota
	opSet
	opRemove
	opRewrite
)

// hdrAct is one compiled action.
type hdrAct struct {
	op      uint8
	header  string // as written (add, set); the prefix of a remove glob
	compact string // the compact form of header, if it has one
	glob    bool
	part    string
	tmpl    []policy.HeaderTemplatePart
	re      *regexp.Regexp
	replace string
}

// hdrRule is one compiled rule.
type hdrRule struct {
	name               string
	trunk, pool, realm string
	in                 bool
	methods            []string // nil: any
	requests           bool
	responses          bool
	status             []int
	acts               []hdrAct
	matched            prometheus.Counter
	skipped            [2]prometheus.Counter // exposure, invalid_value
}

// hdrRules are a snapshot's rules. nil when the policy has none.
type hdrRules struct {
	rules []hdrRule
	// expose holds, by realm, the addresses of the SBC's other realms
	// that are not also this realm's: a value sent on the realm must not
	// name one.
	expose map[string][]string
}

// compactOf maps long header names (lower case) to their compact form
// (RFC 3261 7.3.3 and later), for the headers rules may name.
var compactOf = map[string]string{
	"accept-contact": "a", "referred-by": "b", "request-disposition": "d", "content-encoding": "e",
	"reject-contact": "j", "supported": "k", "identity-info": "n", "event": "o", "refer-to": "r",
	"subject": "s", "allow-events": "u", "session-expires": "x", "identity": "y",
}

// compileHeaderRules builds the rules of a validated policy (nil when it
// has none). The policy's validation compiled every regexp already: an
// error here is a policy that was not validated.
func compileHeaderRules(p *policy.Policy, m *Metrics) (*hdrRules, error) {
	if len(p.HeaderRules) == 0 {
		return nil, nil
	}
	hr := &hdrRules{expose: realmExposure(p)}
	for _, r := range p.HeaderRules {
		cr := hdrRule{name: r.Name, trunk: r.Match.Trunk, pool: r.Match.Pool, realm: r.Match.Realm,
			in: r.Match.Direction == "in", methods: r.Match.Methods, status: r.Match.Status,
			requests:  r.Match.Messages != "responses",
			responses: r.Match.Messages == "responses" || r.Match.Messages == "both",
			matched:   m.HeaderRuleMatches.WithLabelValues(r.Name)}
		for i, reason := range hdrSkipReasons {
			cr.skipped[i] = m.HeaderRuleSkips.WithLabelValues(r.Name, reason)
		}
		for _, a := range r.Actions {
			ca := hdrAct{header: a.Header, part: a.Part, replace: a.Replace}
			switch a.Op {
			case "add":
				ca.op = opAdd
			case "set":
				ca.op = opSet
			case "remove":
				ca.op = opRemove
				if h, ok := strings.CutSuffix(a.Header, "*"); ok {
					ca.header, ca.glob = h, true
				}
			case "rewrite":
				ca.op = opRewrite
				re, err := policy.CompileHeaderRegexp(a.Regexp)
				if err != nil {
					return nil, err
				}
				ca.re = re
			}
			if ca.op == opAdd || ca.op == opSet {
				t, err := policy.ParseHeaderTemplate(a.Value)
				if err != nil {
					return nil, err
				}
				ca.tmpl = t
			}
			ca.compact = compactOf[strings.ToLower(ca.header)]
			cr.acts = append(cr.acts, ca)
		}
		hr.rules = append(hr.rules, cr)
	}
	return hr, nil
}

// realmExposure gives, for each realm, the addresses of the other realms
// (listener binds and advertised IPs, media addresses, pool targets) that
// are not this realm's own.
func realmExposure(p *policy.Policy) map[string][]string {
	own := map[string]map[netip.Addr]bool{}
	add := func(realm string, a netip.Addr) {
		if !a.IsValid() || a.IsUnspecified() {
			return
		}
		if own[realm] == nil {
			own[realm] = map[netip.Addr]bool{}
		}
		own[realm][a.Unmap()] = true
	}
	for _, r := range p.Realms {
		own[r.Name] = map[netip.Addr]bool{}
		for _, l := range r.Listeners {
			add(r.Name, l.BindAddr.Addr())
			if a, err := netip.ParseAddr(l.AdvertiseHost); err == nil {
				add(r.Name, a)
			}
		}
		add(r.Name, r.Media.Addr)
		add(r.Name, r.Media.AdvertiseAddr)
	}
	for _, pl := range p.Pools {
		for _, t := range pl.Targets {
			add(pl.Realm, t.Addr.Addr())
		}
	}
	out := make(map[string][]string, len(own))
	for realm, mine := range own {
		var list []string
		for other, theirs := range own {
			if other == realm {
				continue
			}
			for a := range theirs {
				if !mine[a] {
					list = append(list, a.String())
				}
			}
		}
		slices.Sort(list)
		out[realm] = slices.Compact(list)
	}
	return out
}

// ruleMsg is what the rules need of a request or response.
type ruleMsg interface {
	Headers() []sip.Header
	AppendHeader(sip.Header)
	RemoveHeader(string) bool
	GetHeader(string) sip.Header
	From() *sip.FromHeader
	To() *sip.ToHeader
}

// peerRef is the peer of one leg, as rules match it.
type peerRef struct{ trunk, pool, realm string }

func (r *hdrRule) peerMatches(p peerRef) bool {
	return (r.trunk == "" || r.trunk == p.trunk) && (r.pool == "" || r.pool == p.pool) && (r.realm == "" || r.realm == p.realm)
}

// headerRules runs the snapshot's rules on m, which the call is about to
// send on leg `to`; bp is the pool of the call's B side (the pool being
// tried, or the one whose target answered). initial marks the INVITE that
// creates a B-leg dialog: the only message whose URI parts are rewritten,
// and whose rewritten From and To the leg then keeps.
func (c *call) headerRules(m ruleMsg, to *leg, bp *pool, initial bool) {
	if c.st.rules == nil {
		return
	}
	c.st.rules.apply(c, m, to, bp, initial)
}

// bPool is the pool of the B side: the answered branch's, else the one
// being tried.
func (c *call) bPool() *pool {
	switch {
	case c.kept != nil:
		return c.kept.pool
	case c.cur != nil:
		return c.cur.pool
	}
	return c.pool
}

// ruleRun is one message going through the rules.
type ruleRun struct {
	c       *call
	m       ruleMsg
	req     *sip.Request // nil for a response
	bp      *pool
	initial bool
	realm   string // the realm the message is sent on
	rule    *hdrRule
	covered string // what changed that an Identity header signs (",rule:what"...)
}

func (hr *hdrRules) apply(c *call, m ruleMsg, to *leg, bp *pool, initial bool) {
	var method string
	status := 0
	req, _ := m.(*sip.Request)
	if req != nil {
		method = string(req.Method)
	} else if res, ok := m.(*sip.Response); ok {
		status = res.StatusCode
		if cs := res.CSeq(); cs != nil {
			method = string(cs.MethodName)
		}
	}
	aPeer := peerRef{pool: c.srcPool, realm: c.a.ep.name}
	if c.trunk != nil {
		aPeer.trunk = c.trunk.Name
	}
	var bPeer peerRef
	if bp != nil {
		bPeer = peerRef{pool: bp.cfg.Name, realm: bp.cfg.Realm}
	}
	toPeer, fromPeer := bPeer, aPeer
	if to == c.a {
		toPeer, fromPeer = aPeer, bPeer
	}
	var run ruleRun // on the stack: a message no rule matches allocates nothing
	for i := range hr.rules {
		r := &hr.rules[i]
		switch {
		case req != nil && !r.requests, req == nil && !r.responses:
			continue
		case r.in && !r.peerMatches(fromPeer), !r.in && !r.peerMatches(toPeer):
			continue
		case r.methods != nil && !slices.Contains(r.methods, method):
			continue
		case status != 0 && r.status != nil && !slices.Contains(r.status, status):
			continue
		}
		if run.c == nil {
			run = ruleRun{c: c, m: m, req: req, bp: bp, initial: initial && req != nil, realm: toPeer.realm}
		}
		run.rule = r
		r.matched.Inc()
		for j := range r.acts {
			run.act(&r.acts[j], hr.expose[toPeer.realm])
		}
	}
	if run.c == nil {
		return
	}
	if run.initial {
		// The dialog keeps what the INVITE carried (RFC 3261 12.1.2).
		if f := m.From(); f != nil {
			to.localURI.User, to.localName = f.Address.User, f.DisplayName
		}
		if t := m.To(); t != nil {
			to.remoteURI.User = t.Address.User
		}
		to.target.User = req.Recipient.User
	}
	if run.covered != "" && (m.GetHeader("Identity") != nil || m.GetHeader("y") != nil) {
		// RFC 8224: the PASSporT signs the From/To (or P-Asserted-Identity)
		// numbers; a verifier downstream sees numbers it did not sign.
		c.warnf("STIR/SHAKEN: a header rule rewrote numbers an Identity header covers",
			"changed", strings.TrimPrefix(run.covered, ","))
	}
}

// nameIs reports whether header name h is the action's header (any case,
// long or compact form), or starts with its prefix (a remove glob).
func (a *hdrAct) nameIs(h string) bool {
	if a.glob {
		return len(h) >= len(a.header) && strings.EqualFold(h[:len(a.header)], a.header)
	}
	return strings.EqualFold(h, a.header) || a.compact != "" && strings.EqualFold(h, a.compact)
}

// removeAll removes every header the action names.
func (r *ruleRun) removeAll(a *hdrAct) bool {
	removed := false
	for {
		i := slices.IndexFunc(r.m.Headers(), func(h sip.Header) bool { return a.nameIs(h.Name()) })
		if i < 0 {
			return removed
		}
		name := r.m.Headers()[i].Name()
		if policy.ProtectedHeader(name) || !r.m.RemoveHeader(name) {
			// Never reached: validation refuses names and globs that match
			// a protected header. Stop rather than loop.
			return removed
		}
		removed = true
	}
}

func (r *ruleRun) act(a *hdrAct, expose []string) {
	switch a.op {
	case opRemove:
		if r.removeAll(a) && isPAI(a.header) {
			r.cover("P-Asserted-Identity")
		}
	case opAdd, opSet:
		v := r.expand(a.tmpl)
		if v != "" && !r.check(v, expose, false) {
			return
		}
		changed := false
		if a.op == opSet {
			changed = r.removeAll(a)
		}
		if v != "" {
			r.m.AppendHeader(sip.NewHeader(a.header, v))
			changed = true
		}
		if changed && isPAI(a.header) {
			r.cover("P-Asserted-Identity")
		}
	case opRewrite:
		if a.part != "" {
			r.rewritePart(a, expose)
			return
		}
		hs := r.m.Headers()
		for i, h := range hs {
			if !a.nameIs(h.Name()) {
				continue
			}
			old := h.Value()
			v := a.re.ReplaceAllString(old, a.replace)
			if v == old || !r.check(v, expose, false) {
				continue
			}
			// In place: the header keeps its position. Rules never name
			// the headers sipgo keeps typed references to (Via, From, To,
			// Call-ID, CSeq, Contact, Route, Record-Route, Content-*,
			// Max-Forwards), so a generic header may replace this one.
			hs[i] = sip.NewHeader(h.Name(), v)
			if isPAI(a.header) {
				r.cover("P-Asserted-Identity")
			}
		}
	}
}

// cover notes a change to what an Identity header signs: "rule:what".
func (r *ruleRun) cover(what string) { r.covered += "," + r.rule.name + ":" + what }

func isPAI(name string) bool { return strings.EqualFold(name, "P-Asserted-Identity") }

func (r *ruleRun) rewritePart(a *hdrAct, expose []string) {
	if a.part == "pai.user" {
		hs := r.m.Headers()
		for i, h := range hs {
			if !isPAI(h.Name()) {
				continue
			}
			val := h.Value()
			s, e := uriUserSpan(val)
			if s < 0 {
				continue
			}
			u := a.re.ReplaceAllString(val[s:e], a.replace)
			if u == val[s:e] || !r.check(u, expose, true) {
				continue
			}
			hs[i] = sip.NewHeader(h.Name(), val[:s]+u+val[e:])
			r.cover("pai.user")
		}
		return
	}
	if !r.initial {
		return
	}
	var p *string
	user := true
	switch a.part {
	case "ruri.user":
		p = &r.req.Recipient.User
	case "from.user":
		if f := r.m.From(); f != nil {
			p = &f.Address.User
		}
	case "to.user":
		if t := r.m.To(); t != nil {
			p = &t.Address.User
		}
	case "from.display":
		if f := r.m.From(); f != nil {
			p, user = &f.DisplayName, false
		}
	}
	if p == nil {
		return
	}
	v := a.re.ReplaceAllString(*p, a.replace)
	if v == *p || !r.check(v, expose, user) {
		return
	}
	if !user && strings.ContainsAny(v, "\"\\") {
		// sipgo writes the display name between quotes as it is.
		r.rule.skipped[1].Inc()
		return
	}
	*p = v
	if a.part == "from.user" || a.part == "to.user" {
		r.cover(a.part)
	}
}

// uriUserSpan finds the user part of the URI in a name-addr or addr-spec
// header value (sip:, sips: or tel:): start and end offsets, or -1.
func uriUserSpan(v string) (int, int) {
	start := 0
	if i := strings.IndexByte(v, '<'); i >= 0 {
		start = i + 1
	}
	rest := v[start:]
	var s int
	switch {
	case len(rest) >= 4 && strings.EqualFold(rest[:4], "sip:"):
		s = 4
	case len(rest) >= 5 && strings.EqualFold(rest[:5], "sips:"):
		s = 5
	case len(rest) >= 4 && strings.EqualFold(rest[:4], "tel:"):
		e := strings.IndexAny(rest[4:], ";>")
		if e < 0 {
			e = len(rest) - 4
		}
		if strings.ContainsAny(rest[4:4+e], "@<") {
			return -1, -1
		}
		return start + 4, start + 4 + e
	default:
		return -1, -1
	}
	e := strings.IndexByte(rest[s:], '@')
	if e < 0 || strings.ContainsAny(rest[s:s+e], "<>;") {
		return -1, -1
	}
	return start + s, start + s + e
}

// check decides whether a value an action wrote may be sent: no control
// character, within MaxHeaderValue, characters a URI user part may hold
// (user), and no address of another realm. A refusal is counted.
func (r *ruleRun) check(v string, expose []string, user bool) bool {
	ok := len(v) <= policy.MaxHeaderValue
	for i := 0; ok && i < len(v); i++ {
		c := v[i]
		switch {
		case c < 0x20 && c != '\t' || c == 0x7f:
			ok = false
		case user && !uriUserChar(c):
			ok = false
		}
	}
	if !ok {
		r.rule.skipped[1].Inc()
		r.c.logf("header rule action skipped: invalid value", "rule", r.rule.name)
		return false
	}
	for _, a := range expose {
		if containsAddr(v, a) {
			r.rule.skipped[0].Inc()
			r.c.warnf("header rule action skipped: its value names an address of another realm",
				"rule", r.rule.name, "realm", r.realm, "address", a)
			return false
		}
	}
	return true
}

// uriUserChar: RFC 3261 25.1 user = 1*( unreserved / escaped /
// user-unreserved ).
func uriUserChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-_.!~*'()%&=+$,;?/", c) >= 0
}

// containsAddr reports whether v holds the address a as a whole (not
// inside a longer one: 10.0.0.1 is not in 10.0.0.12 nor in 110.0.0.1).
func containsAddr(v, a string) bool {
	v6 := strings.IndexByte(a, ':') >= 0
	for off := 0; ; {
		i := strings.Index(v[off:], a)
		if i < 0 {
			return false
		}
		i += off
		if !addrGoesOn(v, i-1, -1, v6) && !addrGoesOn(v, i+len(a), 1, v6) {
			return true
		}
		off = i + 1
	}
}

// addrGoesOn reports whether the byte of v at i (beside a match, in
// direction dir) continues an address: a hex digit or ':' for IPv6; a
// digit, or a '.' before one, for IPv4.
func addrGoesOn(v string, i, dir int, v6 bool) bool {
	if i < 0 || i >= len(v) {
		return false
	}
	c := v[i]
	if v6 {
		return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == ':'
	}
	if c == '.' {
		j := i + dir
		return j >= 0 && j < len(v) && '0' <= v[j] && v[j] <= '9'
	}
	return '0' <= c && c <= '9'
}

// expand substitutes the template's variables, read from the message as
// it stands.
func (r *ruleRun) expand(t []policy.HeaderTemplatePart) string {
	if len(t) == 1 && t[0].Var == "" {
		return t[0].Lit
	}
	var b strings.Builder
	for _, p := range t {
		if p.Var == "" {
			b.WriteString(p.Lit)
			continue
		}
		b.WriteString(r.variable(p.Var))
	}
	return b.String()
}

func (r *ruleRun) variable(name string) string {
	c := r.c
	switch name {
	case "from.user":
		if f := r.m.From(); f != nil {
			return f.Address.User
		}
	case "from.display":
		if f := r.m.From(); f != nil {
			return f.DisplayName
		}
	case "to.user":
		if t := r.m.To(); t != nil {
			return t.Address.User
		}
	case "ruri.user":
		if r.req != nil {
			return r.req.Recipient.User
		}
	case "pai.user":
		for _, h := range r.m.Headers() {
			if isPAI(h.Name()) {
				v := h.Value()
				if s, e := uriUserSpan(v); s >= 0 {
					return v[s:e]
				}
			}
		}
	case "trunk":
		if c.trunk != nil {
			return c.trunk.Name
		}
	case "pool":
		if r.bp != nil {
			return r.bp.cfg.Name
		}
	case "source_pool":
		return c.srcPool
	case "call_id_hash":
		sum := sha256.Sum256([]byte(c.a.callID))
		return hex.EncodeToString(sum[:8])
	}
	return ""
}
