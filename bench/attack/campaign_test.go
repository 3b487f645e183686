package attack

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// guardPeer challenges every REGISTER, never accepts a password, goes
// silent for an extension after perExt failed guesses and for everything
// after total: a registrar behind an SBC that locks AoRs and blocks.
type guardPeer struct {
	perExt, total int

	mu     sync.Mutex
	n      int
	failed map[string]int
	all    int
}

func (p *guardPeer) handle(r received) [][]byte {
	if r.req == nil || r.req.Method != "REGISTER" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed == nil {
		p.failed = map[string]int{}
	}
	ext := toUser(r.req)
	if p.all >= p.total || p.failed[ext] >= p.perExt {
		return nil
	}
	if r.req.GetHeader("Authorization") != nil {
		p.failed[ext]++
		p.all++
	}
	p.n++
	return [][]byte{reply(r.req, 401, "Unauthorized", fmt.Sprintf(`WWW-Authenticate: Digest realm="pbx", nonce="n%d", qop="auth"`, p.n))}
}

func TestRegisterBruteForce(t *testing.T) {
	p := &guardPeer{perExt: 3, total: 7}
	peer := newResponder(t, p.handle)
	rep, err := RegisterBruteForce(testCtx(t), RegisterBruteForceConfig{
		Target: peer.addr(), Local: local66, Domain: "pbx.example",
		Extensions: []string{"100", "101", "102", "103", "104"},
		Passwords:  []string{"a", "b", "c", "d", "e"},
		Timeout:    100 * time.Millisecond, MaxTimeouts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 3 + 3 + 1 refused; each silenced extension's last guess went
	// unanswered (sent, not refused).
	if !rep.Blocked || rep.BlockedAfter != 7 || rep.Refused != 7 || rep.Guesses != 10 || len(rep.Found) != 0 || rep.Stop != StopUnanswered {
		t.Fatalf("%s: blocked %v after %d, refused %d, guesses %d, found %v", rep.Report, rep.Blocked, rep.BlockedAfter, rep.Refused, rep.Guesses, rep.Found)
	}
	if want := []string{"100", "101", "102"}; fmt.Sprint(rep.Silenced) != fmt.Sprint(want) {
		t.Fatalf("silenced %v, want %v", rep.Silenced, want)
	}
	if len(rep.Extensions) != 4 || rep.Extensions[3].Challenges != 0 {
		t.Fatalf("per extension: %+v", rep.Extensions)
	}
	for _, r := range peer.all() {
		if r.from.Addr() != local66.Addr() {
			t.Errorf("request from %s", r.from)
		}
	}
}

func TestRegisterBruteForceFinds(t *testing.T) {
	p := &authPeer{password: "c", code: 401, qop: "auth", failCode: 401}
	peer := newResponder(t, p.handle)
	rep, err := RegisterBruteForce(testCtx(t), RegisterBruteForceConfig{
		Target: peer.addr(), Local: local66, Extensions: []string{"100"},
		Passwords: []string{"a", "b", "c", "d"}, PerExtension: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Found["100"] != "c" || rep.Guesses != 3 || rep.Refused != 2 || rep.Blocked || rep.Stop != StopCount {
		t.Fatalf("%s %+v", rep.Report, rep)
	}
	if _, err := RegisterBruteForce(testCtx(t), RegisterBruteForceConfig{Target: peer.addr()}); err == nil {
		t.Fatal("no extensions accepted")
	}
}
