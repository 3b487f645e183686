package sbc

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// A trunk is many callers behind a few addresses: its calls are limited by
// the trunk's cps and max_calls, never by the per-source source_cps (which
// capped a 50 calls/s SIPp trunk at 10–40 calls/s with the shipped
// policy). A burst of INVITEs from the trunk, far over source_cps, is
// admitted whole.
func TestTrunkCallsNotLimitedBySourceCPS(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Final: 486})}},
		policy:   "[limits]\nsource_cps = 1",
		// The backend answers 60 INVITEs at 300/s: under the race detector
		// on a loaded machine some answers take longer than the harness's
		// 300 ms target timeout, and a timed-out target is a 503 that is
		// not the limit under test.
		edit: func(p *testpolicy.Policy) { p.Routing.TargetTimeout = policy.D(10 * time.Second) },
	})
	const n = 60
	rep, err := attack.InviteFlood(e.ctx, attack.InviteFloodConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(callerIP + ":0"),
		Rate: 300, Count: n, Duration: 10 * time.Second, UserAgent: "CarrierSwitch", Linger: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Responses[503] != 0 || e.dropped("admit", "source_cps") != 0 {
		t.Fatalf("trunk INVITEs refused by source_cps = 1: responses %v, admit/source_cps %v",
			rep.Responses, e.dropped("admit", "source_cps"))
	}
	e.eventually("every INVITE reached the backend", func() bool { return len(e.backends[0].Calls()) == n })
}

// admitCall at one instant (no refill): trunks by their own cps only,
// other sources by source_cps.
func TestAdmitCallTrunkVersusSource(t *testing.T) {
	e := newEnv(t, envOpts{policy: "[limits]\nsource_cps = 2"})
	now := time.Now()
	trunk := peer{src: netip.MustParseAddrPort(callerIP + ":5060"), trunk: e.pol.Trunk("carrier")}
	for i := 0; i < 50; i++ {
		release, reason, _ := e.sbc.admitCall(trunk, now)
		if reason != "" {
			t.Fatalf("trunk call %d (trunk without cps) refused: %s", i, reason)
		}
		release()
	}

	// A source that is not a trunk: a burst of source_cps, then refused
	// with a wait.
	stranger := peer{src: netip.MustParseAddrPort(strangerIP + ":5060")}
	for i := 0; i < 2; i++ {
		release, reason, _ := e.sbc.admitCall(stranger, now)
		if reason != "" {
			t.Fatalf("call %d of a non-trunk source within source_cps refused: %s", i, reason)
		}
		release()
	}
	if _, reason, wait := e.sbc.admitCall(stranger, now); reason != "source_cps" || wait <= 0 {
		t.Fatalf("3rd call of a non-trunk source with source_cps = 2: reason %q wait %v, want source_cps", reason, wait)
	}
}

// The trunk's own cps is what limits a trunk.
func TestAdmitCallTrunkCPS(t *testing.T) {
	e := newEnv(t, envOpts{trunk: "cps = 3", policy: "[limits]\nsource_cps = 1000"})
	now := time.Now()
	trunk := peer{src: netip.MustParseAddrPort(callerIP + ":5060"), trunk: e.pol.Trunk("carrier")}
	for i := 0; i < 3; i++ {
		release, reason, _ := e.sbc.admitCall(trunk, now)
		if reason != "" {
			t.Fatalf("trunk call %d within cps = 3 refused: %s", i, reason)
		}
		release()
	}
	if _, reason, wait := e.sbc.admitCall(trunk, now); reason != "trunk_cps" || wait <= 0 {
		t.Fatalf("4th call with cps = 3: reason %q wait %v, want trunk_cps", reason, wait)
	}
}

// register_rate applies to trunk sources too, deliberately: REGISTER has
// no per-trunk cap, and REGISTER comes only from trunks (allow_register),
// so exempting trunks would leave registrations unlimited; the per-source
// rate is the brake on a digest brute force from inside a trunk's
// prefixes. Five REGISTERs sent back to back with register_rate = 1: the
// first is relayed, the others get 503 register_rate.
func TestRegisterRateAppliesToTrunkSources(t *testing.T) {
	e := newEnv(t, envOpts{
		trunk:  "allow_register = true\nregister_domains = [\"pbx.example.com\"]",
		policy: "[limits]\nregister_rate = 1",
	})
	c := e.caller
	const n = 5
	for i := 0; i < n; i++ {
		raw := fmt.Sprintf("REGISTER sip:pbx.example.com SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-rr%[2]d\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:1001@pbx.example.com>;tag=rr%[2]d\r\n"+
			"To: <sip:1001@pbx.example.com>\r\n"+
			"Call-ID: regrate-%[2]d@x\r\n"+
			"CSeq: 1 REGISTER\r\n"+
			"Contact: <sip:1001@%[1]s>;expires=60\r\n"+
			"Content-Length: 0\r\n\r\n", c.Addr(), i)
		if err := c.Send(e.ctx, []byte(raw), e.ext); err != nil {
			t.Fatal(err)
		}
	}
	got503 := 0
	for i := 0; i < n; i++ {
		cid := fmt.Sprintf("regrate-%d@x", i)
		m, err := c.WaitFor(e.ctx, func(m sipua.Msg) bool {
			return m.CallID() == cid && m.CSeqMethod() == "REGISTER" && m.Status >= 200
		})
		if err != nil {
			t.Fatalf("REGISTER %d: %v", i, err)
		}
		if m.Status == 503 {
			got503++
			if !strings.Contains(m.Head(), "Retry-After") {
				t.Errorf("503 without Retry-After:\n%s", m.Head())
			}
		}
	}
	if got503 == 0 || e.dropped("admit", "register_rate") == 0 {
		t.Fatalf("%d REGISTERs at once from a trunk with register_rate = 1: no 503 register_rate", n)
	}
}
