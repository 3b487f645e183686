package sbc

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// Header rules applied without sockets: a call object as newCall makes
// it (legs, snapshot, pools), and messages built by hand.

// ruleEnv is a call with rules: inbound (A: trunk "carrier" on
// "external", B: pool "pbx" on "internal") or outbound (A: pool "pbx",
// B: pool "carrier-a" on "external").
type ruleEnv struct {
	c       *call
	m       *Metrics
	b       *leg
	bp      *pool
	logs    *bytes.Buffer
	pol     *policy.Policy
	inbound bool
}

func newRuleEnv(t testing.TB, rules string, inbound bool) *ruleEnv {
	t.Helper()
	pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5080")
	pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "carrier-a", Realm: "external", Targets: testpolicy.Targets(carrierAIP + ":5070")})
	pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier-a"}}}
	pb.Extra = rules
	pol := pb.Parse(t)
	m := newMetrics()
	hr, err := compileHeaderRules(pol, m)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	st := &snapshot{pol: pol, rules: hr, pools: map[string]*pool{}}
	for i := range pol.Pools {
		st.pools[pol.Pools[i].Name] = &pool{cfg: &pol.Pools[i]}
	}
	e := &ruleEnv{m: m, logs: logs, pol: pol, inbound: inbound}
	c := &call{st: st}
	c.logp.Store(slog.New(slog.NewTextHandler(logs, nil)))
	ext, in := &endpoint{name: "external"}, &endpoint{name: "internal"}
	if inbound {
		c.trunk = pol.Trunk("carrier")
		c.a = &leg{name: "a", ep: ext, callID: "a-call-id@carrier"}
		e.bp = st.pools["pbx"]
		e.b = &leg{name: "b", ep: in}
	} else {
		c.srcPool = "pbx"
		c.a = &leg{name: "a", ep: in, callID: "a-call-id@pbx"}
		e.bp = st.pools["carrier-a"]
		e.b = &leg{name: "b", ep: ext}
	}
	c.pool = e.bp
	e.c = c
	return e
}

// invite is an INVITE as the SBC builds it for the B-leg, with extra
// headers.
func invite(user string, hdrs ...sip.Header) *sip.Request {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: user, Host: backendIP, Port: 5080})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: sbcIntIP, Port: 5062, Params: sip.NewParams()})
	from := &sip.FromHeader{DisplayName: "Alice", Address: sip.Uri{Scheme: "sip", User: "02071234567", Host: sbcIntIP}, Params: sip.NewParams()}
	from.Params.Add("tag", "ftag")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: backendIP}, Params: sip.NewParams()})
	cid := sip.CallIDHeader("b-call-id")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: sbcIntIP, Port: 5062}})
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	return req
}

func inDialog(method sip.RequestMethod, hdrs ...sip.Header) *sip.Request {
	req := invite("2000", hdrs...)
	req.Method = method
	req.CSeq().MethodName = method
	return req
}

func values(m interface{ Headers() []sip.Header }, name string) []string {
	var out []string
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h.Value())
		}
	}
	return out
}

func names(m interface{ Headers() []sip.Header }) []string {
	var out []string
	for _, h := range m.Headers() {
		out = append(out, h.Name())
	}
	return out
}

// rule writes one [[header_rule]] with its match lines and actions.
func rule(name, match string, actions ...string) string {
	var b strings.Builder
	b.WriteString("[[header_rule]]\nname = \"" + name + "\"\n  [header_rule.match]\n" + match + "\n")
	for _, a := range actions {
		b.WriteString("  [[header_rule.action]]\n" + a + "\n")
	}
	return b.String()
}

func TestHeaderRuleActions(t *testing.T) {
	e := newRuleEnv(t, rule("all", `trunk = "carrier"
direction = "in"`,
		// Order matters: each action sees what the previous ones did.
		`op = "add"
header = "X-Tenant"
value = "${trunk}/${from.user}/${to.user}/${ruri.user}/${pool}/$$"`,
		`op = "set"
header = "X-Set"
value = "one ${call_id_hash}"`,
		`op = "remove"
header = "x-drop"`,
		`op = "remove"
header = "X-Internal-*"`,
		`op = "remove"
header = "Subject"`, // also its compact form "s"
		`op = "rewrite"
header = "X-Num"
regexp = '^0(\d+)$'
replace = "+44$1"`,
		`op = "rewrite"
header = "X-Tenant"
regexp = "carrier"
replace = "CARRIER"`,
		`op = "add"
header = "X-After"
value = "${to.user}"`,
		`op = "set"
header = "X-Gone"
value = "${pai.user}"`), true)
	req := invite("2000",
		sip.NewHeader("X-Set", "a"), sip.NewHeader("X-Set", "b"), sip.NewHeader("X-Drop", "1"),
		sip.NewHeader("X-Internal-Node", "pbx1"), sip.NewHeader("x-internal-trace", "t"), sip.NewHeader("X-Internals", "kept"),
		sip.NewHeader("s", "compact subject"), sip.NewHeader("Subject", "long subject"),
		sip.NewHeader("X-Num", "02079460000"), sip.NewHeader("X-Num", "+15551234"), sip.NewHeader("X-Gone", "old"))
	e.c.headerRules(req, e.b, e.bp, false)

	want := map[string][]string{
		"X-Tenant":         {"CARRIER/02071234567/2000/2000/pbx/$"},
		"X-Set":            nil, // set below
		"X-Drop":           nil,
		"X-Internal-Node":  nil,
		"X-Internal-Trace": nil,
		"X-Internals":      {"kept"},
		"Subject":          nil,
		"s":                nil,
		"X-Num":            {"+442079460000", "+15551234"},
		"X-After":          {"2000"},
		"X-Gone":           nil, // set to an empty expansion only removes
	}
	// The call_id_hash is the SHA-256 of A's Call-ID: compute it here
	// rather than trust the literal above.
	want["X-Set"] = []string{"one " + e.c.hashForTest()}
	for name, w := range want {
		if got := values(req, name); !slices.Equal(got, w) {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	// The SBC's own headers are where they were; X-Num kept its place.
	got := names(req)
	if got[0] != "Via" || got[1] != "From" || got[5] != "Contact" {
		t.Errorf("header order: %v", got)
	}
	if i, j := slices.Index(got, "X-Num"), slices.Index(got, "X-Internals"); i < j {
		t.Errorf("rewritten X-Num moved: %v", got)
	}
	if n := testutil.ToFloat64(e.m.HeaderRuleMatches.WithLabelValues("all")); n != 1 {
		t.Errorf("matches = %v", n)
	}
}

// hashForTest is ${call_id_hash} computed independently.
func (c *call) hashForTest() string {
	r := &ruleRun{c: c}
	return r.variable("call_id_hash")
}

func TestHeaderRuleCallIDHash(t *testing.T) {
	e := newRuleEnv(t, "", true)
	h := e.c.hashForTest()
	// sha256("a-call-id@carrier"), first 8 bytes.
	if len(h) != 16 || h == strings.Repeat("0", 16) {
		t.Fatalf("hash %q", h)
	}
	e.c.a.callID = "other"
	if e.c.hashForTest() == h {
		t.Fatal("hash does not depend on the Call-ID")
	}
}

// TestHeaderRuleMatching: direction, peer (trunk, pool, realm), method,
// message kind and status decide whether a rule runs.
func TestHeaderRuleMatching(t *testing.T) {
	const hit = `op = "add"
header = "X-Hit"
value = "1"`
	type msg struct {
		toA     bool
		method  sip.RequestMethod
		status  int // 0: request
		inbound bool
	}
	inv := msg{method: sip.INVITE, inbound: true}                           // carrier → PBX INVITE
	ok200 := msg{toA: true, method: sip.INVITE, status: 200, inbound: true} // PBX's 200 → carrier
	bye := msg{toA: true, method: sip.BYE, inbound: true}                   // PBX's BYE → carrier
	outInv := msg{method: sip.INVITE}                                       // PBX → carrier-a INVITE
	out180 := msg{toA: true, method: sip.INVITE, status: 180}               // carrier-a's 180 → PBX
	for _, c := range []struct {
		name  string
		match string
		msg   msg
		want  bool
	}{
		{"in from trunk", "trunk = \"carrier\"\ndirection = \"in\"", inv, true},
		{"out to trunk: the INVITE goes to the PBX", "trunk = \"carrier\"\ndirection = \"out\"", inv, false},
		{"out to trunk: a response", "trunk = \"carrier\"\ndirection = \"out\"\nmessages = \"responses\"", ok200, true},
		{"out to trunk: requests only by default", "trunk = \"carrier\"\ndirection = \"out\"", ok200, false},
		{"out to trunk: BYE", "trunk = \"carrier\"\ndirection = \"out\"", bye, true},
		{"out to pool", "pool = \"pbx\"\ndirection = \"out\"", inv, true},
		{"in from pool", "pool = \"pbx\"\ndirection = \"in\"", inv, false},
		{"in from pool: response", "pool = \"pbx\"\ndirection = \"in\"\nmessages = \"both\"", ok200, true},
		{"realm out", "realm = \"internal\"\ndirection = \"out\"", inv, true},
		{"realm out, wrong realm", "realm = \"external\"\ndirection = \"out\"", inv, false},
		{"realm and pool", "realm = \"internal\"\npool = \"pbx\"\ndirection = \"out\"", inv, true},
		{"method matches", "pool = \"pbx\"\ndirection = \"out\"\nmethods = [\"BYE\", \"INVITE\"]", inv, true},
		{"method does not", "pool = \"pbx\"\ndirection = \"out\"\nmethods = [\"BYE\"]", inv, false},
		{"response to INVITE", "trunk = \"carrier\"\ndirection = \"out\"\nmethods = [\"INVITE\"]\nmessages = \"responses\"", ok200, true},
		{"status matches", "trunk = \"carrier\"\ndirection = \"out\"\nmessages = \"responses\"\nstatus = [180, 200]", ok200, true},
		{"status does not", "trunk = \"carrier\"\ndirection = \"out\"\nmessages = \"responses\"\nstatus = [180]", ok200, false},
		{"responses only", "pool = \"pbx\"\ndirection = \"out\"\nmessages = \"responses\"", inv, false},
		{"outbound: to carrier pool", "pool = \"carrier-a\"\ndirection = \"out\"", outInv, true},
		{"outbound: from the PBX pool", "pool = \"pbx\"\ndirection = \"in\"", outInv, true},
		{"outbound: not a trunk's call", "trunk = \"carrier\"\ndirection = \"out\"", outInv, false},
		{"outbound: realm external out", "realm = \"external\"\ndirection = \"out\"", outInv, true},
		{"outbound: response to the PBX", "pool = \"pbx\"\ndirection = \"out\"\nmessages = \"responses\"", out180, true},
		{"outbound: response from carrier", "pool = \"carrier-a\"\ndirection = \"in\"\nmessages = \"responses\"\nstatus = [180]", out180, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newRuleEnv(t, rule("r", c.match, hit), c.msg.inbound)
			to := e.b
			if c.msg.toA {
				to = e.c.a
			}
			var m ruleMsg
			req := inDialog(c.msg.method)
			m = req
			if c.msg.status != 0 {
				m = sip.NewResponseFromRequest(req, c.msg.status, "x", nil)
			}
			e.c.headerRules(m, to, e.bp, false)
			if got := len(values(m, "X-Hit")) == 1; got != c.want {
				t.Errorf("applied = %v, want %v", got, c.want)
			}
		})
	}
}

func TestHeaderRuleURIParts(t *testing.T) {
	e := newRuleEnv(t, rule("e164", `trunk = "carrier"
direction = "in"
methods = ["INVITE"]`,
		`op = "rewrite"
part = "ruri.user"
regexp = '^0(\d{9,10})$'
replace = "+44$1"`,
		`op = "rewrite"
part = "to.user"
regexp = '^0(\d{9,10})$'
replace = "+44$1"`,
		`op = "rewrite"
part = "from.user"
regexp = '^0'
replace = "+44"`,
		`op = "rewrite"
part = "from.display"
regexp = '^(.*)$'
replace = "$1 (carrier)"`,
		`op = "rewrite"
part = "pai.user"
regexp = '^0'
replace = "+44"`), true)
	e.b.localURI = sip.Uri{Scheme: "sip", User: "02071234567", Host: sbcIntIP}
	e.b.remoteURI = sip.Uri{Scheme: "sip", User: "02079460000", Host: backendIP}
	e.b.target = sip.Uri{Scheme: "sip", User: "02079460000", Host: backendIP, Port: 5080}
	req := invite("02079460000", sip.NewHeader("P-Asserted-Identity", `"A" <sip:02071234567@carrier.example;user=phone>`),
		sip.NewHeader("P-Asserted-Identity", "<tel:02071234567;cpc=ordinary>"))
	e.c.headerRules(req, e.b, e.bp, true)
	if req.Recipient.User != "+442079460000" || req.To().Address.User != "+442079460000" ||
		req.From().Address.User != "+442071234567" || req.From().DisplayName != "Alice (carrier)" {
		t.Errorf("INVITE: %s", req.String())
	}
	if got := values(req, "P-Asserted-Identity"); !slices.Equal(got, []string{`"A" <sip:+442071234567@carrier.example;user=phone>`, "<tel:+442071234567;cpc=ordinary>"}) {
		t.Errorf("PAI: %q", got)
	}
	// The B-leg dialog keeps what its INVITE carried.
	if e.b.localURI.User != "+442071234567" || e.b.localName != "Alice (carrier)" || e.b.remoteURI.User != "+442079460000" || e.b.target.User != "+442079460000" {
		t.Errorf("leg: local %v %q remote %v target %v", e.b.localURI, e.b.localName, e.b.remoteURI, e.b.target)
	}
	// A re-INVITE in the dialog: URI parts untouched, PAI still rewritten.
	re := invite("02079460000", sip.NewHeader("P-Asserted-Identity", "<sip:0123@x>"))
	e.c.headerRules(re, e.b, e.bp, false)
	if re.Recipient.User != "02079460000" || re.To().Address.User != "02079460000" || re.From().Address.User != "02071234567" {
		t.Errorf("re-INVITE rewritten: %s", re.String())
	}
	if got := values(re, "P-Asserted-Identity"); !slices.Equal(got, []string{"<sip:+44123@x>"}) {
		t.Errorf("re-INVITE PAI: %q", got)
	}
	// No Identity header: nothing to warn about.
	if strings.Contains(e.logsText(), "STIR/SHAKEN") {
		t.Errorf("warned without Identity: %s", e.logsText())
	}
}

// TestHeaderRuleIdentityWarning: a rule that changes the numbers a
// PASSporT signs says so; one that does not, does not.
func TestHeaderRuleIdentityWarning(t *testing.T) {
	for _, c := range []struct {
		name, action string
		warn         bool
		compact      bool // Identity as "y"
	}{
		{"to.user", "op = \"rewrite\"\npart = \"to.user\"\nregexp = '^0'\nreplace = \"+44\"", true, false},
		{"to.user, compact Identity", "op = \"rewrite\"\npart = \"to.user\"\nregexp = '^0'\nreplace = \"+44\"", true, true},
		{"PAI set", "op = \"set\"\nheader = \"P-Asserted-Identity\"\nvalue = \"<sip:+441@x>\"", true, false},
		{"PAI removed", "op = \"remove\"\nheader = \"P-Asserted-Identity\"", true, false},
		{"ruri.user", "op = \"rewrite\"\npart = \"ruri.user\"\nregexp = '^0'\nreplace = \"+44\"", false, false},
		{"unrelated header", "op = \"add\"\nheader = \"X-A\"\nvalue = \"1\"", false, false},
		{"to.user unchanged", "op = \"rewrite\"\npart = \"to.user\"\nregexp = '^9'\nreplace = \"+44\"", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newRuleEnv(t, rule("r", "trunk = \"carrier\"\ndirection = \"in\"\nmethods = [\"INVITE\"]", c.action), true)
			idName := "Identity"
			if c.compact {
				idName = "y"
			}
			req := invite("02079460000", sip.NewHeader(idName, "eyJhbGciOi.x.y;info=<https://cert.example/c.pem>"),
				sip.NewHeader("P-Asserted-Identity", "<sip:02071234567@x>"))
			e.c.headerRules(req, e.b, e.bp, true)
			if got := strings.Contains(e.logsText(), "STIR/SHAKEN"); got != c.warn {
				t.Errorf("warned = %v, want %v: %s", got, c.warn, e.logsText())
			}
			if c.warn && !strings.Contains(e.logsText(), "changed=r:") {
				t.Errorf("the warning does not name the rule: %s", e.logsText())
			}
		})
	}
}

// TestHeaderRuleGuards: values that would re-expose another realm's
// address, hostile values from the peer, and the SBC's own headers.
func TestHeaderRuleGuards(t *testing.T) {
	e := newRuleEnv(t, rule("g", `trunk = "carrier"
direction = "in"
methods = ["INVITE"]`,
		`op = "add"
header = "X-Where"
value = "pbx at 127.0.0.2:5080"`, // the PBX (a pool target of the internal realm) … sent to the internal realm: fine
		`op = "add"
header = "X-Leak"
value = "sbc ${from.user}"`, // From user set below to the external face's address
		`op = "add"
header = "X-Display"
value = "${from.display}"`, // a control character from the peer
		`op = "rewrite"
part = "ruri.user"
regexp = '^(.*)$'
replace = "$1 x"`, // a space cannot be in a user part
		`op = "remove"
header = "X-*"`), true)
	req := invite("2000", sip.NewHeader("X-Old", "1"))
	req.From().Address.User = sbcExtIP
	req.From().DisplayName = "Eve\x00"
	e.c.headerRules(req, e.b, e.bp, true)
	// The remove glob ran last and took every X- header, including those
	// added: check the counts instead, and that the SBC's headers stay.
	skips := func(reason string) float64 {
		return testutil.ToFloat64(e.m.HeaderRuleSkips.WithLabelValues("g", reason))
	}
	if skips(skipExposure) != 1 || skips(skipInvalidValue) != 2 {
		t.Errorf("skips: exposure %v, invalid %v", skips(skipExposure), skips(skipInvalidValue))
	}
	if req.Recipient.User != "2000" {
		t.Errorf("ruri.user = %q", req.Recipient.User)
	}
	if got := names(req); !slices.Equal(got, []string{"Via", "From", "To", "Call-ID", "CSeq", "Contact"}) {
		t.Errorf("headers left: %v", got)
	}

	// The same values towards the external realm: the internal PBX's
	// address is what must not leak there.
	e = newRuleEnv(t, rule("g", `trunk = "carrier"
direction = "out"
messages = "responses"`,
		`op = "add"
header = "X-Where"
value = "pbx at 127.0.0.2:5080"`,
		`op = "add"
header = "X-Near"
value = "127.0.0.21 127.0.0.20"`, // longer addresses that start alike: no match
		`op = "rewrite"
header = "X-Node"
regexp = "(node)"
replace = "${1}`+sbcIntIP+`"`), true)
	res := sip.NewResponseFromRequest(invite("2000", sip.NewHeader("X-Node", "node")), 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("X-Node", "node"))
	e.c.headerRules(res, e.c.a, e.bp, false)
	if v := values(res, "X-Where"); v != nil {
		t.Errorf("internal address sent to the carrier: %q", v)
	}
	if v := values(res, "X-Near"); len(v) != 1 {
		t.Errorf("X-Near = %q", v)
	}
	if v := values(res, "X-Node"); !slices.Equal(v, []string{"node"}) {
		t.Errorf("X-Node = %q", v)
	}
	if n := testutil.ToFloat64(e.m.HeaderRuleSkips.WithLabelValues("g", skipExposure)); n != 2 {
		t.Errorf("exposure skips %v, want 2", n)
	}
	if !strings.Contains(e.logsText(), "another realm") {
		t.Errorf("no log line: %s", e.logsText())
	}
}

// TestHeaderRuleProtectedAtApply: even a policy that skipped validation
// cannot make a remove glob take the SBC's own headers.
func TestHeaderRuleProtectedAtApply(t *testing.T) {
	e := newRuleEnv(t, "", true)
	pol := *e.pol
	pol.HeaderRules = []policy.HeaderRule{{Name: "bad", Match: policy.HeaderMatch{Realm: "internal", Direction: "out", Messages: "requests"},
		Actions: []policy.HeaderAction{{Op: "remove", Header: "C*"}, {Op: "remove", Header: "V*"}}}}
	hr, err := compileHeaderRules(&pol, e.m)
	if err != nil {
		t.Fatal(err)
	}
	e.c.st.rules = hr
	req := invite("2000")
	e.c.headerRules(req, e.b, e.bp, false)
	if got := names(req); !slices.Equal(got, []string{"Via", "From", "To", "Call-ID", "CSeq", "Contact"}) {
		t.Errorf("headers left: %v", got)
	}
}

func TestRealmExposure(t *testing.T) {
	e := newRuleEnv(t, "", true)
	ex := realmExposure(e.pol)
	if got := ex["external"]; !slices.Equal(got, []string{backendIP, sbcIntIP}) {
		t.Errorf("external: %v", got)
	}
	if got := ex["internal"]; !slices.Equal(got, []string{sbcExtIP, carrierAIP}) {
		t.Errorf("internal: %v", got)
	}
	for _, c := range []struct {
		v, a string
		want bool
	}{
		{"10.0.0.1", "10.0.0.1", true},
		{"<sip:x@10.0.0.1:5060>", "10.0.0.1", true},
		{"10.0.0.12", "10.0.0.1", false},
		{"110.0.0.1", "10.0.0.1", false},
		{"a 10.0.0.12 and 10.0.0.1", "10.0.0.1", true},
		{"[2001:db8::1]", "2001:db8::1", true},
		{"2001:db8::10", "2001:db8::1", false},
		{"at 10.0.0.1.", "10.0.0.1", true},
		{"10.0.0.1.5", "10.0.0.1", false},
	} {
		if got := containsAddr(c.v, c.a); got != c.want {
			t.Errorf("containsAddr(%q, %q) = %v", c.v, c.a, got)
		}
	}
}

func TestURIUserSpan(t *testing.T) {
	for v, want := range map[string]string{
		"<sip:123@h>":                 "123",
		`"N" <sips:+44@h;user=phone>`: "+44",
		"sip:alice@h":                 "alice",
		"<tel:+4420;cpc=x>":           "+4420",
		"tel:+4420":                   "+4420",
		"<sip:h>":                     "",
		"<sip:h;x=a@b>":               "",
		"<urn:x>":                     "",
	} {
		s, e := uriUserSpan(v)
		got := ""
		if s >= 0 {
			got = v[s:e]
		}
		if got != want {
			t.Errorf("%q: %q, want %q", v, got, want)
		}
	}
}

// TestHeaderRulesNoMatchAllocs: the hot path with rules that do not
// match a message allocates nothing.
func TestHeaderRulesNoMatchAllocs(t *testing.T) {
	e := newRuleEnv(t, rule("a", "trunk = \"carrier\"\ndirection = \"out\"\nmethods = [\"BYE\"]", "op = \"remove\"\nheader = \"X-A\"")+
		rule("b", "realm = \"external\"\ndirection = \"out\"\nmessages = \"both\"", "op = \"remove\"\nheader = \"X-B\""), true)
	req := invite("2000")
	if n := testing.AllocsPerRun(1000, func() { e.c.headerRules(req, e.b, e.bp, true) }); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}

// BenchmarkHeaderRules: a B-leg INVITE through no rules, two rules that
// do not match it, and those plus one matching rule that sets a header
// from a variable (set: the message keeps its size from one iteration to
// the next; an add would grow it).
func BenchmarkHeaderRules(b *testing.B) {
	noMatch := rule("a", "trunk = \"carrier\"\ndirection = \"out\"\nmethods = [\"BYE\"]", "op = \"remove\"\nheader = \"X-A\"") +
		rule("b", "realm = \"external\"\ndirection = \"out\"\nmessages = \"both\"", "op = \"remove\"\nheader = \"X-B\"")
	for _, c := range []struct{ name, rules string }{
		{"none", ""},
		{"no_match", noMatch},
		{"one_match", noMatch + rule("tenant", "trunk = \"carrier\"\ndirection = \"in\"\nmethods = [\"INVITE\"]",
			"op = \"set\"\nheader = \"X-Tenant\"\nvalue = \"${trunk}\"")},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newRuleEnv(b, c.rules, true)
			req := invite("2000", sip.NewHeader("Supported", "100rel"), sip.NewHeader("Allow", "INVITE, ACK, BYE"))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.c.headerRules(req, e.b, e.bp, false)
			}
		})
	}
}

// TestHeaderRulesEndToEnd: the rules through the SBC, checked on what the
// peers received. Inbound: carrier A's INVITE reaches the PBX with
// X-Tenant and its national number in E.164 (request-URI and To); carrier
// B's (another trunk) untouched; the PBX's X-Internal-* never reaches a
// carrier (its 200). Outbound (PBX → carrier through outbound routing):
// the INVITE and an INFO reach the carrier without X-Internal-*; the
// carrier's own X-Internal-* reaches the PBX (the rule is towards
// carriers only).
func TestHeaderRulesEndToEnd(t *testing.T) {
	const carrier2IP = "127.0.0.8"
	pbxBackend, err := sipua.NewBackend(sipua.BackendOptions{UDP: pbxIP + ":0", Logger: testLogger(),
		Answer: sipua.Always(sipua.Plan{Headers: []sip.Header{sip.NewHeader("X-Internal-Node", "pbx1"), sip.NewHeader("X-Keep", "pbx")}})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbxBackend.Close() })
	carrierAnswer := sipua.Always(sipua.Plan{Headers: []sip.Header{sip.NewHeader("X-Internal-Route", "r7"), sip.NewHeader("X-Keep", "carrier")}})
	e := newOutboundEnv(t, carrierAnswer, nil, func(p *testpolicy.Policy) {
		p.Pool("pbx").Targets = []testpolicy.Target{{Address: pbxBackend.Addr()}, {Address: p.Pool("pbx").Targets[0].Address, Weight: new(0)}}
		p.Trunks = append(p.Trunks, testpolicy.Trunk{Name: "carrier2", Realm: "external", Sources: []string{carrier2IP + "/32"}})
		p.Headers = &testpolicy.Headers{Allow: append(slices.Clone(policy.DefaultAllowedHeaders), "X-Internal-Node", "X-Internal-Route", "X-Keep")}
		p.Extra = rule("tenant-from-carrier", `trunk = "carrier"
direction = "in"
methods = ["INVITE"]`,
			`op = "add"
header = "X-Tenant"
value = "${trunk}"`,
			`op = "rewrite"
part = "ruri.user"
regexp = '^0(\d{9,10})$'
replace = "+44$1"`,
			`op = "rewrite"
part = "to.user"
regexp = '^0(\d{9,10})$'
replace = "+44$1"`) + rule("no-internal-to-carriers", `realm = "external"
direction = "out"
messages = "both"`,
			`op = "remove"
header = "X-Internal-*"`)
	})
	ext, _ := e.sbc.ListenAddr("external", "udp")
	dial := func(from string) (*sipua.Caller, *sipua.Call, *sip.Response) {
		c, err := sipua.NewCaller(sipua.CallerOptions{Addr: from + ":0", Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		call, err := c.Dial(e.ctx, ext.String(), sipua.DialOptions{User: "02079460000",
			Headers: []sip.Header{sip.NewHeader("X-Internal-Node", "carrier-side"), sip.NewHeader("X-Keep", "caller")}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := call.WaitFinal(e.ctx)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("call from %s: %v %v", from, res, err)
		}
		return c, call, res
	}
	inviteFrom := func(b *sipua.Backend, ruri string) sipua.Msg {
		t.Helper()
		m, err := b.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" && strings.Contains(m.StartLine, ruri) })
		if err != nil {
			t.Fatalf("no INVITE with %s: %v", ruri, err)
		}
		return m
	}

	// Inbound from carrier A (trunk "carrier").
	_, callA, resA := dial(callerIP)
	m := inviteFrom(pbxBackend, "sip:+442079460000@")
	if got := m.HeaderValues("X-Tenant"); !slices.Equal(got, []string{"carrier"}) {
		t.Errorf("PBX got X-Tenant %q", got)
	}
	if to := m.Header("To"); !strings.Contains(to, "sip:+442079460000@") {
		t.Errorf("PBX got To %q", to)
	}
	if got := m.HeaderValues("X-Internal-Node"); !slices.Equal(got, []string{"carrier-side"}) {
		t.Errorf("PBX got X-Internal-Node %q: the rule is towards the external realm only", got)
	}
	if got := resA.GetHeader("X-Internal-Node"); got != nil {
		t.Errorf("carrier A got the PBX's %s", got)
	}
	if got := resA.GetHeader("X-Keep"); got == nil || got.Value() != "pbx" {
		t.Errorf("carrier A got X-Keep %v, want the PBX's (allowed, no rule)", got)
	}
	if err := callA.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}

	// Inbound from carrier2: another trunk, no tenant, no rewrite.
	_, call2, _ := dial(carrier2IP)
	m = inviteFrom(pbxBackend, "sip:02079460000@")
	if got := m.HeaderValues("X-Tenant"); got != nil {
		t.Errorf("carrier2's call got X-Tenant %q", got)
	}
	if err := call2.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}

	// Outbound from the PBX to carrier A, through outbound routing.
	out, res := e.call(t, "+442079460000", sip.NewHeader("X-Internal-Node", "pbx1"), sip.NewHeader("X-Keep", "pbx-out"))
	if res.StatusCode != 200 {
		t.Fatalf("outbound call: %d", res.StatusCode)
	}
	m = inviteFrom(e.a, "sip:+442079460000@")
	if got := m.HeaderValues("X-Internal-Node"); got != nil {
		t.Errorf("carrier got the PBX's X-Internal-Node %q", got)
	}
	if got := m.HeaderValues("X-Keep"); !slices.Equal(got, []string{"pbx-out"}) {
		t.Errorf("carrier got X-Keep %q", got)
	}
	if got := m.HeaderValues("X-Tenant"); got != nil {
		t.Errorf("carrier got X-Tenant %q", got)
	}
	if got := res.GetHeader("X-Internal-Route"); got == nil || got.Value() != "r7" {
		t.Errorf("PBX got X-Internal-Route %v, want the carrier's (towards the PBX no rule removes it)", got)
	}
	// In the dialog: an INFO from the PBX reaches the carrier without it.
	if r, err := out.Request(e.ctx, sip.INFO, nil, sip.NewHeader("X-Internal-Node", "pbx1"), sip.NewHeader("X-Keep", "info")); err != nil || r.StatusCode != 200 {
		t.Fatalf("INFO: %v %v", r, err)
	}
	m, err = e.a.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "INFO" })
	if err != nil {
		t.Fatal(err)
	}
	if got, keep := m.HeaderValues("X-Internal-Node"), m.HeaderValues("X-Keep"); got != nil || !slices.Equal(keep, []string{"info"}) {
		t.Errorf("carrier's INFO: X-Internal-Node %q, X-Keep %q", got, keep)
	}
	if err := out.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	metric := func(name string) float64 {
		return testutil.ToFloat64(e.sbc.metrics.HeaderRuleMatches.WithLabelValues(name))
	}
	// tenant: carrier A's INVITE only. no-internal: carrier A's 100-less
	// responses (its 200), the outbound INVITE and INFO, at least.
	if metric("tenant-from-carrier") != 1 || metric("no-internal-to-carriers") < 3 {
		t.Errorf("matches: tenant %v, no-internal %v", metric("tenant-from-carrier"), metric("no-internal-to-carriers"))
	}
}

// TestHeaderRulesReload: a reload applies new rules to the next call (and
// a call in progress keeps its snapshot's: its BYE has no rule then).
func TestHeaderRulesReload(t *testing.T) {
	var pb *testpolicy.Policy
	e := newOutboundEnv(t, nil, nil, func(p *testpolicy.Policy) { pb = p })
	tagged := func(callN int) []string {
		t.Helper()
		n := 0
		m, err := e.a.WaitFor(e.ctx, func(m sipua.Msg) bool {
			if m.Method == "INVITE" {
				n++
			}
			return m.Method == "INVITE" && n == callN
		})
		if err != nil {
			t.Fatalf("INVITE %d: %v", callN, err)
		}
		return m.HeaderValues("X-Source")
	}
	first, res := e.call(t, "+15551234")
	if res.StatusCode != 200 {
		t.Fatalf("before the reload: %d", res.StatusCode)
	}
	if got := tagged(1); got != nil {
		t.Fatalf("before the reload: X-Source %q", got)
	}
	next := pb.Clone()
	next.Extra = rule("source", `pool = "carrier-a"
direction = "out"`, `op = "add"
header = "X-Source"
value = "${source_pool}"`)
	if err := e.sbc.Reload(next.Parse(t)); err != nil {
		t.Fatal(err)
	}
	second, res := e.call(t, "+15551235")
	if res.StatusCode != 200 {
		t.Fatalf("after the reload: %d", res.StatusCode)
	}
	if got := tagged(2); !slices.Equal(got, []string{"pbx"}) {
		t.Fatalf("after the reload: X-Source %q, want the source pool", got)
	}
	for _, c := range []*sipua.Call{first, second} {
		if err := c.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	byes := map[string][]string{}
	_, err := e.a.WaitFor(e.ctx, func(m sipua.Msg) bool {
		if m.Method == "BYE" {
			byes[m.CallID()] = m.HeaderValues("X-Source")
		}
		return len(byes) == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	with := 0
	for _, v := range byes {
		if slices.Equal(v, []string{"pbx"}) {
			with++
		}
	}
	if with != 1 {
		t.Fatalf("BYEs with X-Source: %d of 2, want 1 (only the call started after the reload): %v", with, byes)
	}
}

// FuzzURIUserSpan: the span found in any header value lies within it
// and holds no '@', '<', '>' or ';' of the URI around it (a tel: number
// stops at ';' or '>').
func FuzzURIUserSpan(f *testing.F) {
	for _, s := range []string{"<sip:1@h>", `"x" <sips:+1@h;a=b>`, "tel:+1;x", "<sip:h>", "sip:@", "<", "<tel:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, e := uriUserSpan(v)
		if s < 0 {
			return
		}
		if s > e || e > len(v) {
			t.Fatalf("%q: span %d..%d", v, s, e)
		}
		if strings.ContainsAny(v[s:e], "@<>;") {
			t.Fatalf("%q: user %q", v, v[s:e])
		}
	})
}

// logsText runs the log actions the rules queued (they log after the
// call's lock, like every action) and returns what was logged.
func (e *ruleEnv) logsText() string {
	for _, a := range e.c.queue {
		if a.kind == actLog {
			e.c.exec(a)
		}
	}
	e.c.queue = nil
	return e.logs.String()
}
