package sbc

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// The attack generators of bench/attack against a running SBC, from
// sources other than the trunk: each attacker must be blocked after the
// configured number of failures, the backend must receive nothing from
// it, and trunk calls must keep completing meanwhile.

func (e *env) extAddr() netip.AddrPort { return netip.MustParseAddrPort(e.ext) }

// trunkCallsDuring places calls from the trunk until stop is closed and
// reports how many completed and how many failed.
func (e *env) trunkCallsDuring(stop <-chan struct{}) (ok, failed *atomic.Int32, done <-chan struct{}) {
	ok, failed = new(atomic.Int32), new(atomic.Int32)
	d := make(chan struct{})
	go func() {
		defer close(d)
		for i := 0; i < 50; i++ {
			select {
			case <-stop:
				return
			default:
			}
			call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
			if err != nil {
				failed.Add(1)
				continue
			}
			res, err := call.WaitFinal(e.ctx)
			if err != nil || res.StatusCode != 200 {
				failed.Add(1)
				continue
			}
			ok.Add(1)
			call.Bye(e.ctx)
		}
	}()
	return ok, failed, d
}

func (e *env) assertBackendNeverSaw(addr string) {
	e.t.Helper()
	for _, b := range e.backends {
		for _, m := range b.Received() {
			if strings.Contains(m.Head(), addr) {
				e.t.Errorf("backend received from the attacker: %s", m.StartLine)
			}
		}
	}
}

func TestAttackExtensionScan(t *testing.T) {
	for _, ua := range []string{"friendly-scanner", "Linphone/5.0"} {
		t.Run(ua, func(t *testing.T) {
			e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 5}, limits: &testpolicy.Limits{SourceCPS: new(1000)}})
			stop := make(chan struct{})
			ok, failed, done := e.trunkCallsDuring(stop)
			rep, err := attack.ExtensionScan(e.ctx, attack.ExtensionScanConfig{
				Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"),
				First: 100, Last: 160, Methods: []string{"OPTIONS", "REGISTER"},
				UserAgent: ua, Timeout: 20 * time.Millisecond, Window: 8,
			})
			close(stop)
			<-done
			if err != nil {
				t.Fatal(err)
			}
			if rep.Received != 0 {
				t.Errorf("the scanner got %d answers: %v", rep.Received, rep.Responses)
			}
			ent, blocked := e.blocked(strangerIP)
			if !blocked {
				t.Fatal("scanner not blocked")
			}
			t.Logf("scan: %d sent, blocked for %q; trunk calls ok=%d failed=%d", rep.Sent, ent.Reason, ok.Load(), failed.Load())
			// A packet sent after the block dies before the parser.
			late := e.newCaller(strangerIP + ":0")
			late.Send(e.ctx, rawOptions(late.Addr(), e.ext, ua, 999), e.ext)
			e.eventually("a packet after the block dropped before the parser", func() bool { return e.dropped("filter", "blocked") > 0 })
			if ok.Load() == 0 || failed.Load() != 0 {
				t.Errorf("trunk calls during the scan: ok=%d failed=%d", ok.Load(), failed.Load())
			}
			e.assertBackendNeverSaw(strangerIP)
		})
	}
}

// registrar answers every REGISTER with a 401 challenge (it never accepts
// a password) and counts the ones that carried credentials.
func registrar(t *testing.T) (addr string, authorized *atomic.Int32) {
	t.Helper()
	c, err := net.ListenPacket("udp", backendIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	authorized = new(atomic.Int32)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			if !strings.HasPrefix(msg, "REGISTER ") {
				continue
			}
			if strings.Contains(msg, "\r\nAuthorization:") {
				authorized.Add(1)
			}
			var hdrs []string
			for _, l := range strings.Split(msg, "\r\n")[1:] {
				for _, h := range []string{"Via:", "From:", "To:", "Call-ID:", "CSeq:"} {
					if strings.HasPrefix(l, h) {
						if h == "To:" {
							l += ";tag=reg"
						}
						hdrs = append(hdrs, l)
					}
				}
			}
			res := "SIP/2.0 401 Unauthorized\r\n" + strings.Join(hdrs, "\r\n") +
				"\r\nWWW-Authenticate: Digest realm=\"pbx\", nonce=\"" + fmt.Sprint(time.Now().UnixNano()) + "\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n"
			c.WriteTo([]byte(res), from)
		}
	}()
	return c.LocalAddr().String(), authorized
}

func TestAttackDigestBruteForceBlocked(t *testing.T) {
	reg, authorized := registrar(t)
	e := newEnv(t, envOpts{
		// The fourth failed guess from the source blocks it (before any
		// AoR would be locked at the tenth).
		autoBlock: &testpolicy.AutoBlock{RegisterGuesses: 10, RegisterSourceGuesses: 4},
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
	var passwords []string
	for i := 0; i < 40; i++ {
		passwords = append(passwords, fmt.Sprintf("guess%d", i))
	}
	rep, err := attack.DigestBruteForce(e.ctx, attack.DigestBruteForceConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"),
		Domain: "pbx.example.com", Extension: "1001", Passwords: passwords,
		UserAgent: "Zoiper rv2.10", Timeout: 300 * time.Millisecond, MaxTimeouts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stop != attack.StopUnanswered {
		t.Fatalf("brute force ended with %s after %d attempts: want it cut off (blocked)", rep.Stop, rep.Attempts)
	}
	ent, ok := e.blocked(strangerIP)
	if !ok || ent.Reason != "register_bruteforce" {
		t.Fatalf("blocklist entry %+v %v: want register_bruteforce", ent, ok)
	}
	// More than threshold failures block: the registrar sees a bounded
	// number of guesses, not the list.
	if n := authorized.Load(); n > 6 {
		t.Fatalf("registrar received %d guesses, want at most threshold+2", n)
	}
	t.Logf("brute force: %d attempts, %d challenges, registrar saw %d guesses, stop=%s", rep.Attempts, rep.Challenges, authorized.Load(), rep.Stop)
}

func TestAttackInviteFloodFromTrunkLimited(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Final: 486})}},
		edit:     func(p *testpolicy.Policy) { p.Trunk("carrier").CPS = 20 },
	})
	rep, err := attack.InviteFlood(e.ctx, attack.InviteFloodConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(callerIP + ":0"),
		Rate: 400, Count: 400, Duration: 3 * time.Second, UserAgent: "CarrierSwitch", Linger: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Responses[503] == 0 || e.dropped("admit", "trunk_cps") == 0 {
		t.Fatalf("flood of %d INVITEs got no 503: %v", rep.Sent, rep.Responses)
	}
	got := len(e.backends[0].Calls())
	// 20/s over the flood's ~1 s plus a burst of 20, with slack for the
	// time the flood took on a loaded machine (rate-based, not timing).
	limit := 20 + int(20*rep.Elapsed.Seconds()) + 20
	if got > limit {
		t.Fatalf("backend received %d INVITEs from a flood limited to 20/s (bound %d)", got, limit)
	}
	t.Logf("flood: sent %d in %s, responses %v, backend saw %d", rep.Sent, rep.Elapsed, rep.Responses, got)
	// The trunk is not blocked (only rate-limited) and calls resume.
	if _, blocked := e.blocked(callerIP); blocked {
		t.Fatal("trunk source blocked")
	}
}

func TestAttackMalformedStorm(t *testing.T) {
	e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 10}, limits: &testpolicy.Limits{SourceCPS: new(1000)}})
	stop := make(chan struct{})
	ok, failed, done := e.trunkCallsDuring(stop)
	rep, err := attack.MalformedStorm(e.ctx, attack.MalformedStormConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"),
		CorpusDir: "../../shared/corpora/rfc4475", Seed: 42, Count: 2000, Rate: 2000, Duration: 3 * time.Second,
	})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if _, blocked := e.blocked(strangerIP); !blocked {
		t.Fatalf("storm source not blocked after %d datagrams", rep.Sent)
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("trunk calls during the storm: ok=%d failed=%d", ok.Load(), failed.Load())
	}
	e.assertBackendNeverSaw(strangerIP)
	t.Logf("storm: %d sent, %d answers; trunk calls ok=%d", rep.Sent, rep.Received, ok.Load())
}

func TestAttackSpoofedSourcesBoundedState(t *testing.T) {
	e := newEnv(t, envOpts{limits: &testpolicy.Limits{MaxSources: 256, SourceCPS: new(1000)}, autoBlock: &testpolicy.AutoBlock{Threshold: 1000}})
	stop := make(chan struct{})
	ok, failed, done := e.trunkCallsDuring(stop)
	rep, err := attack.SpoofedFlood(e.ctx, attack.SpoofedFloodConfig{
		Target: e.extAddr(), Sources: netip.MustParsePrefix("127.66.0.0/16"), MaxSources: 2000,
		Mode: attack.SpoofLoopback, Count: 6000, Rate: 6000, Duration: 3 * time.Second,
	})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	st := e.sbc.def.tracker.Stats()
	if st.Len > 256 || e.sbc.def.pps.Stats().Len > 256 {
		t.Fatalf("per-source state grew past the cap: tracker %d, limiter %d (cap 256) after %d sources", st.Len, e.sbc.def.pps.Stats().Len, rep.Sources)
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("trunk calls during the flood: ok=%d failed=%d", ok.Load(), failed.Load())
	}
	t.Logf("spoofed flood: %d datagrams from %d sources; trunk calls ok=%d", rep.Sent, rep.Sources, ok.Load())
}

var _ = context.Background
