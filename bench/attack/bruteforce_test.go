package attack

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// authPeer is a registrar that challenges every REGISTER and checks the
// digest itself (independently of DigestResponse).
type authPeer struct {
	password  string
	code      int    // 401 or 407
	qop       string // "auth" or "" (RFC 2069)
	alg       string // "" / "MD5" / "MD5-sess" / "SHA-256"
	failCode  int    // answer to a wrong password: 401/407 (new challenge) or 403
	staleOnce bool   // answer the right password once with a stale challenge

	mu        sync.Mutex
	nonces    map[string]bool
	n         int
	staleSent bool
	attempts  int
}

var authParam = regexp.MustCompile(`([a-zA-Z-]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))`)

func (p *authPeer) challenge(req *sip.Request, stale bool) []byte {
	p.n++
	nonce := fmt.Sprintf("nonce-%d", p.n)
	p.nonces[nonce] = true
	v := fmt.Sprintf(`Digest realm="sbc-test", nonce="%s", opaque="op\"aque"`, nonce)
	if p.qop != "" {
		v += `, qop="` + p.qop + `"`
	}
	if p.alg != "" {
		v += ", algorithm=" + p.alg
	}
	if stale {
		v += ", stale=true"
	}
	name, reason := "WWW-Authenticate", "Unauthorized"
	if p.code == 407 {
		name, reason = "Proxy-Authenticate", "Proxy Authentication Required"
	}
	return reply(req, p.code, reason, name+": "+v)
}

// seen is the number of REGISTERs with credentials the peer checked.
func (p *authPeer) seen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

func (p *authPeer) handle(r received) [][]byte {
	if r.req == nil || r.req.Method != "REGISTER" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nonces == nil {
		p.nonces = map[string]bool{}
	}
	hname := "Authorization"
	if p.code == 407 {
		hname = "Proxy-Authorization"
	}
	h := r.req.GetHeader(hname)
	if h == nil {
		return [][]byte{p.challenge(r.req, false)}
	}
	p.attempts++
	params := map[string]string{}
	for _, m := range authParam.FindAllStringSubmatch(strings.TrimPrefix(h.Value(), "Digest "), -1) {
		params[strings.ToLower(m[1])] = strings.ReplaceAll(m[2]+m[3], `\"`, `"`)
	}
	var newHash func() hash.Hash = md5.New
	if strings.HasPrefix(p.alg, "SHA-256") {
		newHash = sha256.New
	}
	H := func(s string) string { d := newHash(); d.Write([]byte(s)); return hex.EncodeToString(d.Sum(nil)) }
	ha1 := H(params["username"] + ":sbc-test:" + p.password)
	if strings.HasSuffix(p.alg, "-sess") {
		ha1 = H(ha1 + ":" + params["nonce"] + ":" + params["cnonce"])
	}
	ha2 := H("REGISTER:" + params["uri"])
	want := H(ha1 + ":" + params["nonce"] + ":" + ha2)
	if p.qop != "" {
		want = H(ha1 + ":" + params["nonce"] + ":" + params["nc"] + ":" + params["cnonce"] + ":" + params["qop"] + ":" + ha2)
	}
	ok := p.nonces[params["nonce"]] && params["response"] == want && params["opaque"] == `op"aque` &&
		params["username"] == "100" && params["realm"] == "sbc-test" && params["uri"] == r.req.Recipient.String()
	switch {
	case ok && p.staleOnce && !p.staleSent:
		p.staleSent = true
		return [][]byte{p.challenge(r.req, true)}
	case ok:
		return [][]byte{reply(r.req, 200, "OK")}
	case p.failCode == 403:
		return [][]byte{reply(r.req, 403, "Forbidden")}
	}
	return [][]byte{p.challenge(r.req, false)}
}

func TestDigestBruteForce(t *testing.T) {
	passwords := []string{"1234", "password", "s3cret", "letmein"}
	for _, tc := range []struct {
		name           string
		peer           *authPeer
		wantChallenges int
		wantAttempts   int
	}{
		{"401 md5 auth", &authPeer{code: 401, qop: "auth", alg: "MD5", failCode: 401}, 3, 3},
		{"407 md5 auth", &authPeer{code: 407, qop: "auth", failCode: 407}, 3, 3},
		{"401 rfc2069", &authPeer{code: 401, failCode: 401}, 3, 3},
		{"401 md5-sess", &authPeer{code: 401, qop: "auth", alg: "MD5-sess", failCode: 401}, 3, 3},
		{"401 sha-256", &authPeer{code: 401, qop: "auth", alg: "SHA-256", failCode: 401}, 3, 3},
		{"403 on failure", &authPeer{code: 401, qop: "auth", failCode: 403}, 1, 3},
		{"stale nonce", &authPeer{code: 401, qop: "auth", failCode: 401, staleOnce: true}, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.peer
			p.password = "s3cret"
			peer := newResponder(t, p.handle)
			rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
				Target: peer.addr(), Local: local66, Extension: "100", Passwords: passwords, Timeout: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Found || rep.Password != "s3cret" || rep.Stop != StopFound {
				t.Fatalf("not found: %s %+v", rep.Report, rep)
			}
			if rep.Attempts != tc.wantAttempts || rep.Challenges != tc.wantChallenges || p.seen() != tc.wantAttempts {
				t.Errorf("attempts %d (peer saw %d), challenges %d; want %d, %d", rep.Attempts, p.seen(), rep.Challenges, tc.wantAttempts, tc.wantChallenges)
			}
			if rep.Sent != tc.wantAttempts+1 || rep.Responses[200] != 1 {
				t.Errorf("report %s", rep.Report)
			}
			for _, r := range peer.all() {
				if r.from.Addr() != local66.Addr() {
					t.Errorf("request from %s", r.from)
				}
			}
		})
	}
}

func TestDigestBruteForceEnds(t *testing.T) {
	t.Run("exhausted", func(t *testing.T) {
		p := &authPeer{password: "not-in-list", code: 401, qop: "auth", failCode: 401}
		peer := newResponder(t, p.handle)
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a", "b", "c"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Found || rep.Stop != StopCount || rep.Attempts != 3 || rep.Challenges != 4 || rep.Sent != 4 {
			t.Fatalf("%s %+v", rep.Report, rep)
		}
	})
	t.Run("max attempts", func(t *testing.T) {
		p := &authPeer{password: "c", code: 401, qop: "auth", failCode: 401}
		peer := newResponder(t, p.handle)
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a", "b", "c"}, MaxAttempts: 2,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Found || rep.Stop != StopCount || rep.Attempts != 2 {
			t.Fatalf("%s %+v", rep.Report, rep)
		}
	})
	t.Run("no challenge", func(t *testing.T) {
		peer := newResponder(t, func(r received) [][]byte {
			if r.req == nil {
				return nil
			}
			return [][]byte{reply(r.req, 403, "Forbidden")}
		})
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Found || rep.Stop != StopNoChallenge || rep.Attempts != 0 || rep.Sent != 1 {
			t.Fatalf("%s %+v", rep.Report, rep)
		}
	})
	t.Run("open registrar", func(t *testing.T) {
		peer := newResponder(t, func(r received) [][]byte {
			if r.req == nil {
				return nil
			}
			return [][]byte{reply(r.req, 200, "OK")}
		})
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Found || rep.Password != "" || rep.Attempts != 0 {
			t.Fatalf("%s %+v", rep.Report, rep)
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		peer := newResponder(t, func(received) [][]byte { return nil })
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a"},
			Timeout: 20 * time.Millisecond, MaxTimeouts: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Stop != StopUnanswered || rep.Timeouts != 3 || rep.Sent != 3 {
			t.Fatalf("%s", rep.Report)
		}
		got := peer.all()
		if len(got) != 3 || string(got[0].raw) != string(got[2].raw) {
			t.Fatalf("peer got %d datagrams, want 3 equal ones", len(got))
		}
	})
	t.Run("duration", func(t *testing.T) {
		peer := newResponder(t, func(received) [][]byte { return nil })
		rep, err := DigestBruteForce(testCtx(t), DigestBruteForceConfig{
			Target: peer.addr(), Local: local66, Extension: "100", Passwords: []string{"a"},
			Timeout: time.Second, Duration: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Stop != StopDuration || rep.Sent != 1 {
			t.Fatalf("%s", rep.Report)
		}
	})
	for name, cfg := range map[string]DigestBruteForceConfig{
		"no extension": {Target: netipAddrPort("127.0.0.1:5060"), Passwords: []string{"a"}},
		"no passwords": {Target: netipAddrPort("127.0.0.1:5060"), Extension: "100"},
	} {
		if _, err := DigestBruteForce(testCtx(t), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
