package sbc

import (
	"fmt"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/kamailio"
)

// TestRegisterBruteForceKamailio runs the REGISTER brute-force generators
// of bench/attack through the SBC against a real digest-challenging
// registrar: Kamailio from Debian, UDP, ten extensions with passwords,
// the SBC on its default guess limits (register_guesses 5,
// register_source_guesses 20). From one source (a NAT with a phone behind
// it): guessing one extension locks that extension for the source after 5
// failed challenges, and the phone next to the guesser keeps registering;
// spraying the other extensions blocks the source at the 20th failed
// challenge. No password is found although each list holds the targeted
// extensions' real passwords just past where the guard must stop the
// guesser (bruteForceGuesses): with either limit raised the test finds
// them and fails. Kamailio's own log counts the failed checks. The
// figures are in BENCHMARKS.md (REGISTER brute force).
func TestRegisterBruteForceKamailio(t *testing.T) {
	if err := kamailio.Available(); err != nil && testing.Short() {
		t.Skip(err)
	}
	k := newTestPKI(t)
	users := map[string]string{}
	for i := 1001; i <= 1010; i++ {
		users[fmt.Sprint(i)] = fmt.Sprintf("Kx-%d-7qv!", i)
	}
	reg := kamailio.Start(t, kamailio.Options{
		UDP:      netip.MustParseAddrPort(backendIP + ":0"),
		CertFile: k.file("backend"), KeyFile: k.key("backend"),
		Auth: users, Realm: "pbx.example.com",
	})
	e := registeringEnv(t, reg.Addr("udp").String(), nil)
	oneList, sprayList := bruteForceGuesses(users, 30) // the real passwords just past where the guard must stop
	src := netip.MustParseAddrPort(strangerIP + ":0")

	if !e.register("1001", users["1001"]) {
		t.Fatalf("the phone 1001 does not register:\n%s", reg.Log())
	}
	start := time.Now()
	one, err := attack.DigestBruteForce(e.ctx, attack.DigestBruteForceConfig{
		Target: e.extAddr(), Local: src, Domain: "pbx.example.com", Extension: "1002",
		Passwords: oneList, UserAgent: "Zoiper rv2.10", Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if one.Found || one.Refused != 5 || one.Attempts != 6 || one.Stop != attack.StopUnanswered {
		t.Fatalf("one extension: %s, refused %d of %d guesses, found %v (password %q)", one.Report, one.Refused, one.Attempts, one.Found, one.Password)
	}
	if _, blocked := e.blocked(strangerIP); blocked {
		t.Fatal("the source blocked for one extension's guesses")
	}
	if !e.register("1001", users["1001"]) {
		t.Fatal("the phone behind the same address cannot register")
	}

	var exts []string
	for i := 1003; i <= 1010; i++ {
		exts = append(exts, fmt.Sprint(i))
	}
	spray, err := attack.RegisterBruteForce(e.ctx, attack.RegisterBruteForceConfig{
		Target: e.extAddr(), Local: src, Domain: "pbx.example.com", Extensions: exts,
		Passwords: sprayList, UserAgent: "Zoiper rv2.10", Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	guesses := one.Refused + spray.Refused
	if !spray.Blocked || guesses != 20 || len(spray.Found) != 0 || one.Found {
		t.Fatalf("spray: %s, blocked %v after %d, %d guesses refused in all, found %v", spray.Report, spray.Blocked, spray.BlockedAfter, guesses, spray.Found)
	}
	ent, ok := e.blocked(strangerIP)
	if !ok || ent.Reason != string(failRegisterBrute) {
		t.Fatalf("blocklist entry %+v %v", ent, ok)
	}
	wrongPw := regexp.MustCompile(`auth user=10(0[2-9]|10) result=-2\b`)
	e.eventually("Kamailio logged 20 failed checks", func() bool { return len(wrongPw.FindAllString(reg.Log(), -1)) >= 20 })
	if n := len(wrongPw.FindAllString(reg.Log(), -1)); n != 20 {
		t.Fatalf("Kamailio checked %d wrong passwords, want 20", n)
	}
	tried := one.Attempts + spray.Guesses
	t.Logf("source blocked after %d guesses, 0 passwords found (Kamailio checked %d wrong passwords; %d guesses sent, %d of them dropped by the SBC; one extension locked after %d; %d extensions tried; %s)",
		guesses, 20, tried, tried-guesses, one.Refused, len(spray.Extensions)+1, elapsed.Round(time.Millisecond))
}
