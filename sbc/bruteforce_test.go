package sbc

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// Finding 7: a password brute force from a source that may register,
// against a registrar that really checks digest credentials. Counted per
// source and per AoR: one AoR guessed is locked for that source (the other
// phones behind the same NAT keep registering); guesses spread over AoRs
// block the source; forged guesses (a nonce the source never received)
// count for nobody.

// digestRegistrar is a registrar on backendIP that challenges every
// REGISTER (MD5, qop=auth) and checks the answer against its users'
// passwords: 200 when right, a fresh 401 when wrong.
type digestRegistrar struct {
	addr  string
	realm string
	users map[string]string
	open  bool // set before use: every REGISTER is answered 200, unchallenged

	mu     sync.Mutex
	nonces map[string]bool
	failed map[string]int // wrong guesses by user
	ok     map[string]int // successful registrations by user
}

func newDigestRegistrar(t *testing.T, realm string, users map[string]string) *digestRegistrar {
	t.Helper()
	c, err := net.ListenPacket("udp", backendIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &digestRegistrar{addr: c.LocalAddr().String(), realm: realm, users: users,
		nonces: map[string]bool{}, failed: map[string]int{}, ok: map[string]int{}}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			req, _ := m.(*sip.Request)
			if err != nil || req == nil || req.Method != sip.REGISTER {
				continue
			}
			c.WriteTo([]byte(r.answer(req).String()), from)
		}
	}()
	return r
}

func (r *digestRegistrar) answer(req *sip.Request) *sip.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	user := req.To().Address.User
	if r.open {
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		for _, c := range req.GetHeaders("Contact") {
			res.AppendHeader(sip.HeaderClone(c))
		}
		return res
	}
	if h := req.GetHeader("Authorization"); h != nil {
		v := h.Value()
		p := func(k string) string { return digestParam(v, k) }
		md := func(s string) string { x := md5.Sum([]byte(s)); return hex.EncodeToString(x[:]) }
		ha1 := md(p("username") + ":" + r.realm + ":" + r.users[user])
		ha2 := md("REGISTER:" + p("uri"))
		want := md(ha1 + ":" + p("nonce") + ":" + p("nc") + ":" + p("cnonce") + ":" + p("qop") + ":" + ha2)
		if _, known := r.users[user]; known && r.nonces[p("nonce")] && p("username") == user && p("response") == want {
			r.ok[user]++
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			for _, c := range req.GetHeaders("Contact") {
				res.AppendHeader(sip.HeaderClone(c))
			}
			return res
		}
		r.failed[user]++
	}
	var b [12]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	r.nonces[nonce] = true
	res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
	res.AppendHeader(sip.NewHeader("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", qop="auth", algorithm=MD5`, r.realm, nonce)))
	return res
}

func (r *digestRegistrar) counts() (failed, ok map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	failed, ok = map[string]int{}, map[string]int{}
	for k, v := range r.failed {
		failed[k] = v
	}
	for k, v := range r.ok {
		ok[k] = v
	}
	return failed, ok
}

// registeringEnv is an SBC whose trunk "customers" (strangerIP: a NAT
// with phones behind it) may register at reg. The default guess limits
// apply unless ab says otherwise; the REGISTER rate is lifted so that
// only the guess guard stops the guesser.
func registeringEnv(t *testing.T, reg string, ab *testpolicy.AutoBlock) *env {
	t.Helper()
	return newEnv(t, envOpts{
		autoBlock: ab,
		limits:    &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "customers", Realm: "external", Sources: []string{strangerIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{"pbx.example.com"},
			})
			p.Pools = append(p.Pools, testpolicy.Pool{
				Name: "reg", Realm: "internal", Targets: testpolicy.Targets(reg),
				Health: &testpolicy.Health{Interval: policy.D(0)},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "customers", Pool: "reg"})
		},
	})
}

// register registers ext with password from strangerIP (another port of
// the NAT) and reports whether the registrar accepted it.
func (e *env) register(ext, password string) bool {
	e.t.Helper()
	rep, err := attack.DigestBruteForce(e.ctx, attack.DigestBruteForceConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"), Domain: "pbx.example.com",
		Extension: ext, Passwords: []string{password}, UserAgent: "Phone/1.0",
		Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return rep.Found
}

// bruteForceGuesses returns the password lists of the brute-force tests
// (guessing 1002 alone, then spraying 1003…1010, on the default limits
// register_guesses 5 and register_source_guesses 20). Each list holds the
// real passwords of the extensions it targets, placed just past the guess
// where the guard must have stopped the guesser, so that "0 passwords
// found" shows the guard stopped a guess that would have succeeded:
//
//   - one: 1002's password is the 6th guess; the AoR lock after the 5th
//     failed guess must drop it;
//   - spray: each extension is guessed from the top of the list. The
//     passwords of 1006…1010 come first: the source is blocked at its 20th
//     failed guess (5 at 1002, then 5 each at 1003, 1004 and 1005), before
//     1006 is challenged, so only the block keeps 1006 from its first
//     guess. The passwords of 1003, 1004 and 1005 follow (the 6th, 7th and
//     8th guesses), past their AoR locks.
//
// The rest are wrong guesses, n in all per list.
func bruteForceGuesses(users map[string]string, n int) (one, spray []string) {
	wrong := func(i int) string { return fmt.Sprintf("guess%02d", i) }
	for i := range 5 {
		one = append(one, wrong(i))
	}
	one = append(one, users["1002"])
	for _, ext := range []string{"1006", "1007", "1008", "1009", "1010", "1003", "1004", "1005"} {
		spray = append(spray, users[ext])
	}
	for i := 5; len(one) < n; i++ {
		one = append(one, wrong(i))
	}
	for i := 0; len(spray) < n; i++ {
		spray = append(spray, wrong(i))
	}
	return one, spray
}

func TestRegisterBruteForceBehindNAT(t *testing.T) {
	users := map[string]string{}
	for i := 1001; i <= 1010; i++ {
		users[fmt.Sprint(i)] = fmt.Sprintf("Rq7-%d-xz", i)
	}
	reg := newDigestRegistrar(t, "pbx.example.com", users)
	e := registeringEnv(t, reg.addr, nil) // register_guesses 5, register_source_guesses 20
	oneList, sprayList := bruteForceGuesses(users, 30)
	if !e.register("1001", users["1001"]) {
		t.Fatal("the phone 1001 does not register")
	}

	// One AoR guessed: locked for the NAT after 5 failed guesses (its
	// real password, the 6th guess, is dropped), the source is not
	// blocked, the phone next to the guesser registers.
	one, err := attack.DigestBruteForce(e.ctx, attack.DigestBruteForceConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"), Domain: "pbx.example.com",
		Extension: "1002", Passwords: oneList, UserAgent: "Zoiper rv2.10", Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if one.Found || one.Stop != attack.StopUnanswered || one.Refused != 5 || one.Attempts != 6 {
		t.Fatalf("guessing 1002: %s, refused %d of %d guesses, found %v (password %q)", one.Report, one.Refused, one.Attempts, one.Found, one.Password)
	}
	if _, blocked := e.blocked(strangerIP); blocked {
		t.Fatal("the NAT blocked for one AoR's guesses")
	}
	if n := testutil.ToFloat64(e.sbc.metrics.RegisterLocks); n != 1 {
		t.Fatalf("locks %v, want 1", n)
	}
	if !e.register("1001", users["1001"]) {
		t.Fatal("the phone behind the same NAT is locked out")
	}

	// Guesses spread over AoRs: the source is blocked at the 20th, before
	// 1006 (whose password is the first guess of the list) is challenged.
	var exts []string
	for i := 1003; i <= 1010; i++ {
		exts = append(exts, fmt.Sprint(i))
	}
	spray, err := attack.RegisterBruteForce(e.ctx, attack.RegisterBruteForceConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"), Domain: "pbx.example.com",
		Extensions: exts, Passwords: sprayList, UserAgent: "Zoiper rv2.10", Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !spray.Blocked || spray.BlockedAfter != 15 || len(spray.Found) != 0 {
		t.Fatalf("spray: %s, blocked %v after %d refused, found %v", spray.Report, spray.Blocked, spray.BlockedAfter, spray.Found)
	}
	ent, ok := e.blocked(strangerIP)
	if !ok || ent.Reason != string(failRegisterBrute) {
		t.Fatalf("blocklist entry %+v %v", ent, ok)
	}
	failed, okd := reg.counts()
	total := 0
	for _, n := range failed {
		total += n
	}
	accepted := 0
	for ext, n := range okd {
		if ext != "1001" {
			accepted += n
		}
	}
	if total != 20 || accepted != 0 {
		t.Fatalf("the registrar saw %d failed guesses (%v), want 20; accepted %v", total, failed, okd)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.RegisterGuesses.WithLabelValues(proofNonce)); n != 20 {
		t.Fatalf("guesses with a nonce proof: %v, want 20", n)
	}
	t.Logf("one AoR: locked after %d guesses; spray over %d AoRs: source blocked after %d more (%d in all), %d passwords found",
		one.Refused, len(spray.Extensions), spray.BlockedAfter, total, len(spray.Found))
}

// Forged guesses (credentials with a nonce never challenged to their
// source, as a spoofer in the phones' name must send) count for nobody:
// no lock, no block, the phone registers.
func TestRegisterForgedGuessesCountForNobody(t *testing.T) {
	reg := newDigestRegistrar(t, "pbx.example.com", map[string]string{"1001": "right"})
	e := registeringEnv(t, reg.addr, &testpolicy.AutoBlock{RegisterGuesses: 2, RegisterSourceGuesses: 3})
	spoof := udpFrom(t, strangerIP)
	from := spoof.LocalAddr().String()
	for i := range 30 {
		auth := fmt.Sprintf("Authorization: Digest username=\"1001\", realm=\"pbx.example.com\", nonce=\"forged-%d\", uri=\"sip:pbx.example.com\", response=\"%032x\", qop=auth, nc=00000001, cnonce=\"c\"\r\n", i, i)
		msg := rawRequest("REGISTER", from, e.ext, "pbx.example.com", "Phone", 1001, auth)
		msg = []byte(strings.NewReplacer("Call-ID: trust-1001@", fmt.Sprintf("Call-ID: forged-%d-", i),
			"branch=z9hG4bK-t1001", fmt.Sprintf("branch=z9hG4bK-forged%d", i)).Replace(string(msg)))
		sendTo(t, spoof, e.ext, msg)
	}
	e.eventually("forged guesses seen", func() bool {
		return testutil.ToFloat64(e.sbc.metrics.RegisterGuesses.WithLabelValues(proofNone)) >= 30
	})
	if n := testutil.ToFloat64(e.sbc.metrics.RegisterLocks); n != 0 {
		t.Fatalf("%v locks from forged guesses", n)
	}
	if _, blocked := e.blocked(strangerIP); blocked {
		t.Fatal("blocked for forged guesses")
	}
	if !e.register("1001", "right") {
		t.Fatal("the phone cannot register after forged guesses in its name")
	}
}

func TestDigestParam(t *testing.T) {
	v := `Digest username="a\"b", realm="pbx, inc", nonce=abc,qop=auth, stale=TRUE`
	for k, want := range map[string]string{"username": `a\"b`, "realm": "pbx, inc", "nonce": "abc", "qop": "auth", "stale": "TRUE", "opaque": ""} {
		if got := digestParam(v, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	res := sip.NewResponse(401, "Unauthorized")
	res.AppendHeader(sip.NewHeader("WWW-Authenticate", v))
	if !stale(res) {
		t.Error("stale=TRUE not seen")
	}
}
