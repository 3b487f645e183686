package sbc

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func testBinding(rc *regCache, aor, callID string, src string, transport string, exp time.Time) *binding {
	ap := netip.MustParseAddrPort(src)
	u := sip.Uri{Scheme: "sip", User: "dev", Host: ap.Addr().String(), Port: int(ap.Port())}
	return &binding{token: rc.bindingToken("external", aor, deviceKey("", "", callID, ap, u.String())),
		aor: aor, realm: "external", transport: transport, src: ap, contact: u, callID: callID, expires: exp}
}

// TestBindingTokenStable: the same device refreshing (same Call-ID,
// source and Contact, or same instance) gets the same token; any other
// device, AoR, realm or key another one; tokens have the shape isToken
// recognises and nothing else does.
func TestBindingTokenStable(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	rc := newRegCache(key)
	src := netip.MustParseAddrPort("192.0.2.7:5060")
	dk := deviceKey("", "", "call-1", src, "sip:alice@10.0.0.2:5060")
	tok := rc.bindingToken("external", "alice@example.test", dk)
	if !isToken(tok) || len(tok) != tokenLen {
		t.Fatalf("token %q not a token", tok)
	}
	if again := newRegCache(key).bindingToken("external", "alice@example.test", dk); again != tok {
		t.Fatalf("same key and device: %q then %q", tok, again)
	}
	inst := func(callID string, src netip.AddrPort) string {
		return rc.bindingToken("external", "alice@example.test", deviceKey(`"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"`, "1", callID, src, "sip:x@h"))
	}
	if inst("a", src) != inst("b", netip.MustParseAddrPort("198.51.100.1:1")) {
		t.Fatal("an instance's token changes with its Call-ID or address")
	}
	rebound := rc.bindingToken("external", "alice@example.test", deviceKey("", "", "call-1", netip.MustParseAddrPort("192.0.2.7:40000"), "sip:alice@10.0.0.2:5060"))
	if rebound != tok {
		t.Fatal("a refresh from another port of the same address (NAT rebinding, TCP reconnect) changes the token")
	}
	others := map[string]string{
		"other Call-ID": rc.bindingToken("external", "alice@example.test", deviceKey("", "", "call-2", src, "sip:alice@10.0.0.2:5060")),
		"other source":  rc.bindingToken("external", "alice@example.test", deviceKey("", "", "call-1", netip.MustParseAddrPort("192.0.2.8:5060"), "sip:alice@10.0.0.2:5060")),
		"other Contact": rc.bindingToken("external", "alice@example.test", deviceKey("", "", "call-1", src, "sip:alice@10.0.0.3:5060")),
		"other AoR":     rc.bindingToken("external", "bob@example.test", dk),
		"other realm":   rc.bindingToken("access", "alice@example.test", dk),
		"other key":     newRegCache(nil).bindingToken("external", "alice@example.test", dk),
		"instance":      inst("call-1", src),
	}
	seen := map[string]string{tok: "first"}
	for what, o := range others {
		if prev, dup := seen[o]; dup {
			t.Errorf("%s: token %q equals %s's", what, o, prev)
		}
		seen[o] = what
	}
	for _, bad := range []string{"", "rb", "alice", tok[:tokenLen-1], tok + "a", "xx" + tok[2:], strings.ToUpper(tok),
		tok[:tokenLen-1] + "1", tok[:tokenLen-1] + "@", tokenPrefix + strings.Repeat("8", tokenLen-2)} {
		if isToken(bad) {
			t.Errorf("isToken(%q) = true", bad)
		}
	}
}

// TestRegCacheBounds: reserve refuses bindings past max_bindings and
// max_bindings_per_aor, counting those already reserved; tokens already
// held cost nothing; a release gives the room back.
func TestRegCacheBounds(t *testing.T) {
	rc := newRegCache(nil)
	exp := time.Now().Add(time.Hour)
	var toks []string
	for i := range 3 {
		b := testBinding(rc, "alice@example.test", fmt.Sprint("c", i), fmt.Sprintf("192.0.2.1:%d", 5000+i), "udp", exp)
		toks = append(toks, b.token)
	}
	rel, ok := rc.reserve("alice@example.test", toks, 4, 3)
	if !ok {
		t.Fatal("3 bindings refused under bounds 4 and 3")
	}
	if _, ok := rc.reserve("bob@example.test", []string{"rbx", "rby"}, 4, 3); ok {
		t.Fatal("2 more reserved past max_bindings 4 with 3 pending")
	}
	for i, tok := range toks {
		b := testBinding(rc, "alice@example.test", fmt.Sprint("c", i), fmt.Sprintf("192.0.2.1:%d", 5000+i), "udp", exp)
		if b.token != tok {
			t.Fatal("token changed")
		}
		rc.put(b)
	}
	rel()
	rel() // twice: once only
	if n := rc.len(); n != 3 {
		t.Fatalf("%d bindings, want 3", n)
	}
	// A refresh of the three: no new room needed.
	if r, ok := rc.reserve("alice@example.test", toks, 3, 3); !ok {
		t.Fatal("a refresh refused at the bound")
	} else {
		r()
	}
	// A fourth device of the AoR: over max_bindings_per_aor.
	if _, ok := rc.reserve("alice@example.test", []string{"rbnew"}, 100, 3); ok {
		t.Fatal("a fourth binding of the AoR reserved past max_bindings_per_aor 3")
	}
	// Another AoR: one fits max_bindings 4, two do not.
	if _, ok := rc.reserve("bob@example.test", []string{"rb1", "rb2"}, 4, 10); ok {
		t.Fatal("two bindings reserved past max_bindings 4")
	}
	r, ok := rc.reserve("bob@example.test", []string{"rb1"}, 4, 10)
	if !ok {
		t.Fatal("one binding refused under max_bindings 4")
	}
	r()
	if len(rc.pending) != 0 {
		t.Fatalf("pending %v after every release", rc.pending)
	}
}

// TestRegCacheReserveSameDevice: a device whose first REGISTER still
// holds its reservation (the registrar's 401 on its way back) and that
// sends again with credentials takes no second room: at max_bindings 1
// it is not refused; another device is; the room is held until the
// last of the device's REGISTERs is released.
func TestRegCacheReserveSameDevice(t *testing.T) {
	rc := newRegCache(nil)
	tok := rc.bindingToken("external", "alice@example.test", "dev-a")
	first, ok := rc.reserve("alice@example.test", []string{tok}, 1, 1)
	if !ok {
		t.Fatal("the first REGISTER refused under bound 1")
	}
	again, ok := rc.reserve("alice@example.test", []string{tok}, 1, 1)
	if !ok {
		t.Fatal("the same device's second REGISTER refused while its first is pending")
	}
	if _, ok := rc.reserve("bob@example.test", []string{rc.bindingToken("external", "bob@example.test", "dev-b")}, 1, 1); ok {
		t.Fatal("another device reserved past max_bindings 1")
	}
	first()
	if _, ok := rc.reserve("bob@example.test", []string{rc.bindingToken("external", "bob@example.test", "dev-b")}, 1, 1); ok {
		t.Fatal("another device reserved while the same device's second REGISTER still holds the room")
	}
	again()
	if len(rc.pending) != 0 {
		t.Fatalf("pending %v after every release", rc.pending)
	}
	r, ok := rc.reserve("bob@example.test", []string{rc.bindingToken("external", "bob@example.test", "dev-b")}, 1, 1)
	if !ok {
		t.Fatal("another device refused once the room was given back")
	}
	r()
}

// TestRegCacheSweep: expired bindings are forgotten, connection bindings
// whose connection is closed are marked unreachable (and kept until they
// expire), the per-realm count follows every change.
func TestRegCacheSweep(t *testing.T) {
	rc := newRegCache(nil)
	count := map[string]float64{}
	rc.count = func(realm string, d float64) { count[realm] += d }
	now := time.Now()
	old := testBinding(rc, "a@x", "c1", "192.0.2.1:1", "udp", now.Add(-time.Second))
	live := testBinding(rc, "a@x", "c2", "192.0.2.1:2", "udp", now.Add(time.Hour))
	tcpUp := testBinding(rc, "b@x", "c3", "192.0.2.1:3", "tcp", now.Add(time.Hour))
	tcpDown := testBinding(rc, "b@x", "c4", "192.0.2.1:4", "tcp", now.Add(time.Hour))
	for _, b := range []*binding{old, live, tcpUp, tcpDown} {
		rc.put(b)
	}
	rc.put(testBinding(rc, "b@x", "c3", "192.0.2.1:3", "tcp", now.Add(time.Hour))) // a refresh replaces
	if count["external"] != 4 {
		t.Fatalf("gauge %v, want 4", count["external"])
	}
	gone := rc.sweep(now, func(b binding) bool { return b.src == tcpDown.src })
	if gone != 1 || rc.len() != 3 {
		t.Fatalf("swept %d, %d left; want 1 and 3", gone, rc.len())
	}
	if _, ok := rc.get(old.token); ok {
		t.Fatal("the expired binding is still there")
	}
	if b, _ := rc.get(tcpDown.token); !b.unreachable {
		t.Fatal("the binding of the closed connection is not unreachable")
	}
	if b, _ := rc.get(tcpUp.token); b.unreachable {
		t.Fatal("a binding of an open connection is unreachable")
	}
	if n := len(rc.udpFlows()); n != 1 {
		t.Fatalf("%d UDP flows, want 1", n)
	}
	if n := rc.removeAoR("b@x"); n != 2 || rc.len() != 1 || len(rc.ofAoR("b@x")) != 0 {
		t.Fatalf("removeAoR: %d removed, %d left", n, rc.len())
	}
	if !rc.remove(live.token) || rc.remove(live.token) {
		t.Fatal("remove: not once")
	}
	if count["external"] != 0 || len(rc.byAoR) != 0 {
		t.Fatalf("gauge %v, AoRs %d after removing everything", count["external"], len(rc.byAoR))
	}
}

func registerReq(t *testing.T, hdrs ...string) *sip.Request {
	t.Helper()
	raw := "REGISTER sip:example.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n" +
		"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\n" +
		"Call-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n" +
		strings.Join(hdrs, "\r\n")
	if len(hdrs) > 0 {
		raw += "\r\n"
	}
	raw += "Content-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m.(*sip.Request)
}

// TestParseRegister: what RFC 3261 10.3 refuses is a 400 with a reason
// (wildcard misuse, expiry that is no number, too many Contacts); valid
// forms give their contacts with the expiry that applies to each.
func TestParseRegister(t *testing.T) {
	many := make([]string, 11)
	for i := range many {
		many[i] = fmt.Sprintf("Contact: <sip:a@192.0.2.1:%d>", 5000+i)
	}
	bad := []struct {
		name string
		hdrs []string
		want reason
	}{
		{"wildcard with a contact", []string{"Contact: *", "Contact: <sip:a@192.0.2.1>", "Expires: 0"}, reasonRegisterMalformed},
		{"wildcard without Expires", []string{"Contact: *"}, reasonRegisterMalformed},
		{"wildcard with Expires 3600", []string{"Contact: *", "Expires: 3600"}, reasonRegisterMalformed},
		{"expires param no number", []string{"Contact: <sip:a@192.0.2.1>;expires=soon"}, reasonRegisterMalformed},
		{"expires param negative", []string{"Contact: <sip:a@192.0.2.1>;expires=-1"}, reasonRegisterMalformed},
		{"Expires header no number", []string{"Contact: <sip:a@192.0.2.1>", "Expires: 1e9"}, reasonRegisterMalformed},
		{"two Expires", []string{"Contact: <sip:a@192.0.2.1>", "Expires: 60", "Expires: 0"}, reasonRegisterMalformed},
		{"too many contacts", many, reasonRegisterContacts},
	}
	for _, c := range bad {
		_, v := parseRegister(registerReq(t, c.hdrs...), 10)
		if v.pass() || v.reason != c.want || v.code != 400 {
			t.Errorf("%s: verdict %s %d, want %s 400", c.name, v.reason, v.code, c.want)
		}
	}
	rr, v := parseRegister(registerReq(t, "Contact: *", "Expires: 0"), 10)
	if !v.pass() || !rr.wildcard || len(rr.contacts) != 0 {
		t.Fatalf("Contact: * with Expires: 0: %v %+v", v.reason, rr)
	}
	rr, v = parseRegister(registerReq(t, `Contact: <sip:a@192.0.2.1:5070;transport=tcp>;expires=60;+sip.instance="<urn:uuid:1>";reg-id=1`,
		"Contact: <sip:a@192.0.2.1:5071>;q=0.5", "Expires: 99999999999999"), 10)
	if !v.pass() || len(rr.contacts) != 2 {
		t.Fatalf("two contacts: %v %+v", v.reason, rr)
	}
	c0, c1 := rr.contacts[0], rr.contacts[1]
	if c0.expires != 60 || c0.instance != `"<urn:uuid:1>"` || c0.regID != "1" || c0.uri.Port != 5070 {
		t.Errorf("first contact %+v", c0)
	}
	if c1.expires != maxExpires || c1.q != "0.5" {
		t.Errorf("second contact: expires %d (want the Expires header capped at %d), q %q", c1.expires, maxExpires, c1.q)
	}
	rr, v = parseRegister(registerReq(t), 10)
	if !v.pass() || rr.wildcard || len(rr.contacts) != 0 {
		t.Fatalf("a query: %v %+v", v.reason, rr)
	}
}

// BenchmarkRegCacheCallLookup is what an INVITE from a backend costs
// before its call starts: the token check and the cache lookup, with
// 10000 bindings held.
func BenchmarkRegCacheCallLookup(b *testing.B) {
	rc := newRegCache(nil)
	exp := time.Now().Add(time.Hour)
	var toks []string
	for i := range 10000 {
		bd := testBinding(rc, fmt.Sprintf("u%d@x", i), "c", fmt.Sprintf("192.0.2.1:%d", 1024+i), "udp", exp)
		rc.put(bd)
		toks = append(toks, bd.token)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tok := toks[i%len(toks)]
		if !isToken(tok) {
			b.Fatal("not a token")
		}
		if _, ok := rc.get(tok); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkBindingToken is the token of one device Contact, made for each
// Contact of each REGISTER.
func BenchmarkBindingToken(b *testing.B) {
	rc := newRegCache(nil)
	src := netip.MustParseAddrPort("192.0.2.7:5060")
	b.ReportAllocs()
	for b.Loop() {
		_ = rc.bindingToken("external", "alice@example.test", deviceKey("", "", "call-1", src, "sip:alice@10.0.0.2:5060"))
	}
}

// TestRegCacheAbsorb: a refresh is answered locally only from the
// binding's own flow, Call-ID and Contact, with a higher CSeq, while the
// binding outlives keep; the CSeq is remembered.
func TestRegCacheAbsorb(t *testing.T) {
	rc := newRegCache(nil)
	now := time.Now()
	b := testBinding(rc, "a@x", "c1", "192.0.2.1:5060", "udp", now.Add(10*time.Minute))
	b.cseq = 5
	rc.put(b)
	ct := b.contact.String()
	keep := time.Minute
	cases := []struct {
		name   string
		src    string
		tr     string
		callID string
		ct     string
		cseq   uint32
		keep   time.Duration
		ok     bool
	}{
		{"other port", "192.0.2.1:5061", "udp", "c1", ct, 6, keep, false},
		{"other transport", "192.0.2.1:5060", "tcp", "c1", ct, 6, keep, false},
		{"other Call-ID", "192.0.2.1:5060", "udp", "c2", ct, 6, keep, false},
		{"other Contact", "192.0.2.1:5060", "udp", "c1", "sip:dev@192.0.2.9:5060", 6, keep, false},
		{"same CSeq", "192.0.2.1:5060", "udp", "c1", ct, 5, keep, false},
		{"binding too short", "192.0.2.1:5060", "udp", "c1", ct, 6, 10 * time.Minute, false},
		{"refresh", "192.0.2.1:5060", "udp", "c1", ct, 6, keep, true},
		{"replayed", "192.0.2.1:5060", "udp", "c1", ct, 6, keep, false},
	}
	for _, c := range cases {
		_, ok := rc.absorb(b.token, netip.MustParseAddrPort(c.src), c.tr, c.callID, c.ct, c.cseq, now, c.keep)
		if ok != c.ok {
			t.Errorf("%s: absorbed %v, want %v", c.name, ok, c.ok)
		}
	}
	if _, ok := rc.absorb("rbunknown", netip.MustParseAddrPort("192.0.2.1:5060"), "udp", "c1", ct, 9, now, keep); ok {
		t.Error("an unknown token absorbed")
	}
}

// TestRegKeyPersists: the token key is made once in state_dir (0600) and
// read back by the next start, so tokens survive a restart; a damaged
// file is an error, not a silent new key; without a state_dir each start
// has its own.
func TestRegKeyPersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadRegKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadRegKey(dir)
	if err != nil || string(k1) != string(k2) || len(k1) != 32 {
		t.Fatalf("second start: %x %v, want the first key %x", k2, err, k1)
	}
	st, err := os.Stat(filepath.Join(dir, regKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, regKeyFile), []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadRegKey(dir); err == nil {
		t.Fatal("a damaged key file was accepted")
	}
	a, _ := loadRegKey("")
	b, _ := loadRegKey("")
	if string(a) == string(b) {
		t.Fatal("two starts without state_dir share a key")
	}
}
