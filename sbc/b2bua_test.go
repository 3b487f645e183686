package sbc

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

func tagIn(hdr string) string {
	i := strings.Index(hdr, "tag=")
	if i < 0 {
		return ""
	}
	t := hdr[i+4:]
	if j := strings.IndexAny(t, ";,> "); j >= 0 {
		t = t[:j]
	}
	return t
}

func (e *env) backendMsg(b *sipua.Backend, f func(sipua.Msg) bool) sipua.Msg {
	e.t.Helper()
	m, err := b.WaitFor(e.ctx, f)
	if err != nil {
		e.t.Fatalf("backend never received the expected message: %v", err)
	}
	return m
}

func isReq(method string) func(sipua.Msg) bool {
	return func(m sipua.Msg) bool { return m.Method == method }
}

func TestBasicCallTopologyHidden(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{UserAgent: "SecretPBX/13", Answer: sipua.Always(sipua.Plan{
		Provisional: []sipua.Provisional{{Code: 180}},
	})}}})
	call, res := e.dial(sipua.DialOptions{User: "1001", Headers: []sip.Header{
		sip.NewHeader("X-Carrier-Secret", "topsecret"),
		sip.NewHeader("P-Asserted-Identity", "<sip:+441234@carrier.example>"),
	}})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	b := e.backends[0]
	inv := e.backendMsg(b, isReq("INVITE"))
	if !strings.HasPrefix(inv.StartLine, "INVITE sip:1001@"+backendIP) {
		t.Errorf("B-leg request line %q", inv.StartLine)
	}
	if got := inv.Header("P-Asserted-Identity"); got == "" {
		t.Error("allowed header P-Asserted-Identity not copied")
	}
	// The offer is anchored: the SBC's internal relay address, the
	// caller's codecs, nothing of the caller's address.
	if len(inv.Body) == 0 || !strings.Contains(string(inv.Body), "c=IN IP4 "+sbcIntIP) ||
		!strings.Contains(string(inv.Body), "PCMU/8000") || strings.Contains(string(inv.Body), "192.0.2.10") {
		t.Errorf("SDP offer not anchored on the SBC:\n%s", inv.Body)
	}
	if !strings.Contains(string(res.Body()), "c=IN IP4 "+sbcExtIP) || strings.Contains(string(res.Body()), backendIP) {
		t.Errorf("SDP answer not anchored on the SBC:\n%s", res.Body())
	}
	if vias := inv.HeaderValues("Via"); len(vias) != 1 || !strings.Contains(vias[0], sbcIntIP) {
		t.Errorf("B-leg Via %v: want exactly one, the SBC's internal face", vias)
	}
	e.backendMsg(b, isReq("ACK"))
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	bye := e.backendMsg(b, isReq("BYE"))

	// What the backend saw of the caller: nothing.
	callerAddr := e.caller.Addr()
	callerTag := tagIn(inv.Header("From"))
	assertHidden(t, "backend", b.Received(),
		call.CallID(), callerAddr, callerIP+":", "CarrierSwitch", "topsecret", "X-Carrier-Secret", sbcExtIP)
	for _, m := range e.caller.Received() {
		if strings.Contains(m.Head(), callerTag) && callerTag != "" && m.Header("From") == "" {
			t.Errorf("caller tag leaked")
		}
	}
	// What the caller saw of the backend: nothing.
	backendTag := tagIn(bye.Header("To"))
	if backendTag == "" {
		t.Fatal("no backend tag in BYE")
	}
	assertHidden(t, "caller", e.caller.Received(),
		inv.CallID(), backendIP, b.Addr(), backendTag, "SecretPBX", sbcIntIP)
	for _, m := range e.caller.Received() {
		if s := m.Header("Server"); s != "" && s != "TestSBC" {
			t.Errorf("caller saw Server %q", s)
		}
	}
	e.eventually("call counted answered", func() bool { return e.calls("answered") == 1 })
	e.eventually("no active calls", func() bool { return e.sbc.calls.len() == 0 })
}

func TestDelayedOfferAckCarriesAnswer(t *testing.T) {
	e := newEnv(t, envOpts{})
	answer := sipua.SDP("192.0.2.77", 41000, 1, "sendrecv")
	call, res := e.dial(sipua.DialOptions{DelayedOffer: true, AckSDP: answer})
	if res.StatusCode != 200 || len(res.Body()) == 0 {
		t.Fatalf("final %d with body %d bytes: want 200 with the backend's offer", res.StatusCode, len(res.Body()))
	}
	b := e.backends[0]
	ci, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if len(ci.Invite) != 0 {
		t.Error("backend INVITE should carry no SDP")
	}
	// The caller's answer, anchored: the SBC's relay, not 192.0.2.77.
	if !strings.Contains(string(ci.AckBody), "c=IN IP4 "+sbcIntIP) || strings.Contains(string(ci.AckBody), "192.0.2.77") {
		t.Fatalf("ACK to backend lacks the caller's anchored answer: %q", ci.AckBody)
	}
	call.Bye(e.ctx)
}

func TestByeFromCallee(t *testing.T) {
	e := newEnv(t, envOpts{})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	b := e.backends[0]
	ci, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Bye(e.ctx, ci.CallID); err != nil {
		t.Fatalf("backend BYE: %v", err)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("caller never got BYE")
	}
	if call.EndedBy() != sipua.Remote {
		t.Fatalf("ended by %s", call.EndedBy())
	}
	e.eventually("answered counted", func() bool { return e.calls("answered") == 1 })
}

func TestCancelBeforeAnswer(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		Provisional: []sipua.Provisional{{Code: 180}}, Delay: 30 * time.Second,
	})}}})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.WaitStatus(e.ctx, 180); err != nil {
		t.Fatalf("no 180: %v", err)
	}
	if err := call.Cancel(e.ctx); err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 487 {
		t.Fatalf("final %v %v: want 487", res, err)
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.State == sipua.StateCancelled }); err != nil {
		t.Fatalf("backend call not cancelled: %v", err)
	}
	e.eventually("cancelled counted", func() bool { return e.calls("cancelled") == 1 })
}

func TestBusyRelayed(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Final: 486})}}})
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 486 || res.Reason == "" {
		t.Fatalf("final %d %q: want 486 with its reason", res.StatusCode, res.Reason)
	}
	e.eventually("busy counted", func() bool { return e.calls("busy") == 1 })
}

func TestEarlyMediaAndReliableProvisional(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		Provisional: []sipua.Provisional{{Code: 183, SDP: true, Reliable: true}},
	})}}})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	var got183 *sip.Response
	for _, r := range call.Responses() {
		if r.StatusCode == 183 {
			got183 = r
		}
	}
	if got183 == nil || len(got183.Body()) == 0 {
		t.Fatal("183 with early-media SDP not relayed")
	}
	if got183.GetHeader("RSeq") == nil {
		t.Fatal("reliable 183 lost its RSeq")
	}
	prack := e.backendMsg(e.backends[0], isReq("PRACK"))
	rack := prack.Header("RAck")
	inv := e.backendMsg(e.backends[0], isReq("INVITE"))
	if f := strings.Fields(rack); len(f) != 3 || !strings.HasPrefix(inv.Header("CSeq"), f[1]+" ") {
		t.Fatalf("RAck %q does not name the B-leg INVITE CSeq %q", rack, inv.Header("CSeq"))
	}
	call.Bye(e.ctx)
}

func TestInDialogRequestsBothWays(t *testing.T) {
	e := newEnv(t, envOpts{})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	b := e.backends[0]
	ci, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	// Hold from the caller: re-INVITE with sendonly.
	r, err := call.ReInvite(e.ctx, sipua.SDP("192.0.2.10", 40000, 2, "sendonly"))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", r, err)
	}
	if d := sipua.Direction(r.Body()); d != "recvonly" {
		t.Errorf("hold answer direction %q", d)
	}
	reinv := e.backendMsg(b, func(m sipua.Msg) bool {
		return m.Method == "INVITE" && m.CallID() == ci.CallID && tagIn(m.Header("To")) != ""
	})
	if sipua.Direction(reinv.Body) != "sendonly" {
		t.Errorf("backend got re-INVITE SDP %q", reinv.Body)
	}
	e.backendMsg(b, func(m sipua.Msg) bool {
		return m.Method == "ACK" && strings.HasPrefix(m.Header("CSeq"), strings.Fields(reinv.Header("CSeq"))[0]+" ")
	})
	for _, m := range []sip.RequestMethod{sip.UPDATE, sip.INFO, sip.MESSAGE} {
		body := []byte("x")
		if m == sip.UPDATE {
			body = nil // an UPDATE's body is SDP: "x" would be refused (488)
		}
		r, err := call.Request(e.ctx, m, body)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", m, r, err)
		}
		e.backendMsg(b, isReq(string(m)))
	}
	// REFER: Refer-To is passed, re-homed on the SBC's internal face.
	r, err = call.Refer(e.ctx, "sip:2000@"+callerIP+":5999")
	if err != nil || r.StatusCode != 202 {
		t.Fatalf("REFER: %v %v", r, err)
	}
	refer := e.backendMsg(b, isReq("REFER"))
	if rt := refer.Header("Refer-To"); !strings.Contains(rt, "2000@"+sbcIntIP) {
		t.Errorf("Refer-To %q: want user 2000 at the SBC's internal face", rt)
	}
	// From the backend: re-INVITE (resume), NOTIFY, INFO.
	r, err = b.ReInvite(e.ctx, ci.CallID, sipua.SDP(backendIP, 42000, 3, "sendrecv"))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("backend re-INVITE: %v %v", r, err)
	}
	for _, m := range []sip.RequestMethod{sip.NOTIFY, sip.INFO} {
		hdrs := []sip.Header{}
		if m == sip.NOTIFY {
			hdrs = append(hdrs, sip.NewHeader("Event", "refer"), sip.NewHeader("Subscription-State", "active"))
		}
		r, err := b.Request(e.ctx, ci.CallID, m, []byte("SIP/2.0 200 OK"), hdrs...)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("backend %s: %v %v", m, r, err)
		}
	}
	assertHidden(t, "caller", e.caller.Received(), ci.CallID, backendIP+":", b.Addr())
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFailoverOnTimeoutAnd503(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{
			{Answer: sipua.Always(sipua.Plan{NoResponse: true})},
			{Answer: sipua.Always(sipua.Plan{Final: 503})},
			{},
		},
		edit: func(p *testpolicy.Policy) { p.Routing.TargetTimeout = policy.D(200 * time.Millisecond) },
	})
	// Weighted random order: whatever the order, the call must end up on
	// the healthy third backend.
	for i := 0; i < 3; i++ {
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 200 {
			t.Fatalf("call %d: final %d, want 200 after failover", i, res.StatusCode)
		}
		call.Bye(e.ctx)
	}
	if n := len(e.backends[2].Calls()); n != 3 {
		t.Fatalf("healthy backend got %d calls, want 3", n)
	}
}

func TestAllTargetsDown503RetryAfter(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{
		{Answer: sipua.Always(sipua.Plan{Final: 503})},
		{Answer: sipua.Always(sipua.Plan{NoResponse: true})},
	}})
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 503 {
		t.Fatalf("final %d, want 503", res.StatusCode)
	}
	if ra := res.GetHeader("Retry-After"); ra == nil || ra.Value() != "7" {
		t.Fatalf("Retry-After %v, want 7", ra)
	}
	e.eventually("no_target counted", func() bool { return e.calls("no_target") == 1 })
}

func TestHealthCheckMarksTargetDownAndUp(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Pool("pbx").Health = &testpolicy.Health{Interval: policy.D(50 * time.Millisecond), Timeout: policy.D(40 * time.Millisecond), Up: 1, Down: 1}
	}})
	b := e.backends[0]
	tg := e.sbc.state.Load().pools["pbx"].targets[0]
	b.SetOptionsReply(0) // silent: pings time out
	e.eventually("target down", func() bool { return !tg.isUp() })
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 503 {
		t.Fatalf("with the only target down: final %d, want 503", res.StatusCode)
	}
	if n := len(b.Calls()); n != 0 {
		t.Fatalf("down target got %d calls", n)
	}
	b.SetOptionsReply(200)
	e.eventually("target up", func() bool { return tg.isUp() })
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("after recovery: final %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}

func TestOptionsAnsweredLocally(t *testing.T) {
	e := newEnv(t, envOpts{})
	res, err := e.caller.Options(e.ctx, e.ext)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	if res.GetHeader("Allow") == nil {
		t.Error("OPTIONS answer lacks Allow")
	}
	for _, m := range e.backends[0].Received() {
		if m.Method == "OPTIONS" {
			t.Fatal("OPTIONS to the SBC reached the backend")
		}
	}
}

func TestUnknownSourceDroppedSilently(t *testing.T) {
	e := newEnv(t, envOpts{})
	stranger := e.newCaller(strangerIP + ":0")
	ctx, cancel := context.WithTimeout(e.ctx, 1500*time.Millisecond)
	defer cancel()
	call, err := stranger.Dial(ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP(strangerIP, 4000, 1, "sendrecv")})
	if err == nil {
		if res, err := call.WaitFinal(ctx); err == nil {
			t.Fatalf("unknown source got an answer: %d", res.StatusCode)
		}
	}
	for _, m := range stranger.Received() {
		t.Fatalf("unknown source received %q", m.StartLine)
	}
	if n := len(e.backends[0].Received()); n != 0 {
		t.Fatalf("backend received %d messages from an unknown source", n)
	}
	// Dropped by the gate, before the parser (gate.go).
	if e.dropped("filter", "unknown_source") == 0 {
		t.Fatal("drop not counted")
	}
}

func TestUnknownSourceRejectedByPolicy(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Headers = &testpolicy.Headers{UnknownSourceAction: "reject"} }})
	stranger := e.newCaller(strangerIP + ":0")
	call, err := stranger.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP(strangerIP, 4000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("final %v %v, want 403", res, err)
	}
}

func TestMaxDurationEndsBothLegs(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Calls.MaxDuration = policy.D(300 * time.Millisecond) }})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("caller never got BYE")
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.State == sipua.StateEnded }); err != nil {
		t.Fatal("backend leg not ended")
	}
	e.eventually("counted", func() bool { return e.calls("answered") == 1 })
}

func TestInactivityTimeout(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Calls.InactivityTimeout = policy.D(200 * time.Millisecond) }})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("inactive call not ended")
	}
}

func TestRingTimeout(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Delay: 30 * time.Second})}},
		edit:     func(p *testpolicy.Policy) { p.Calls.RingTimeout = policy.D(300 * time.Millisecond) },
	})
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 408 {
		t.Fatalf("final %d, want 408", res.StatusCode)
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.State == sipua.StateCancelled }); err != nil {
		t.Fatal("backend not cancelled")
	}
}

func TestRedirectRelayedRehomed(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		Final: 302, Headers: []sip.Header{sip.NewHeader("Contact", "<sip:2002@"+backendIP+":5999>")},
	})}}})
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 302 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ct := res.GetHeader("Contact")
	if ct == nil || !strings.Contains(ct.Value(), "2002@"+sbcExtIP) || strings.Contains(ct.Value(), backendIP) {
		t.Fatalf("3xx Contact %v: want user 2002 on the SBC's external face", ct)
	}
}

func TestRedirectFollowedByPolicy(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: func(r *sip.Request) sipua.Plan {
			if r.Recipient.User == "2002" {
				return sipua.Plan{}
			}
			return sipua.Plan{Final: 302, Headers: []sip.Header{sip.NewHeader("Contact", "<sip:2002@"+backendIP+">")}}
		}}},
		edit: func(p *testpolicy.Policy) {
			p.Routing = &testpolicy.Routing{DefaultPool: "pbx", FollowRedirects: true, TargetTimeout: policy.D(300 * time.Millisecond)}
		},
	})
	call, res := e.dial(sipua.DialOptions{User: "1000"})
	if res.StatusCode != 200 {
		t.Fatalf("final %d, want 200 after following the 302", res.StatusCode)
	}
	call.Bye(e.ctx)
}

func TestTCPTowardsBackend(t *testing.T) {
	e := newEnv(t, envOpts{transport: "tcp"})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil || ci.Transport != "TCP" {
		t.Fatalf("backend call %+v %v: want TCP", ci, err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsCallsAndChangesRouting(t *testing.T) {
	e := newEnv(t, envOpts{})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	// New policy: same listeners, no default pool any more.
	pb2 := e.pb.Clone()
	pb2.Routing.DefaultPool = ""
	if err := e.sbc.Reload(pb2.Parse(t)); err != nil {
		t.Fatal(err)
	}
	_, res2 := e.dial(sipua.DialOptions{})
	if res2.StatusCode != 404 {
		t.Fatalf("after reload: final %d, want 404 (no route)", res2.StatusCode)
	}
	// The call set up before the reload still works both ways.
	if r, err := call.ReInvite(e.ctx, sipua.SDP("192.0.2.10", 40000, 2, "sendrecv")); err != nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE after reload: %v %v", r, err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	// Listener changes are refused.
	pb3 := e.pb.Clone()
	pb3.Realm("external").Listeners[1].Bind = sbcExtIP + ":5999" // [1] is the TCP listener
	if err := e.sbc.Reload(pb3.Parse(t)); err == nil {
		t.Fatal("reload with a changed listener accepted")
	}
}

var _ = netip.Addr{}

func TestReloadChangesTrunkACL(t *testing.T) {
	e := newEnv(t, envOpts{})
	other := e.newCaller("127.0.0.9:0")
	ctx, cancel := context.WithTimeout(e.ctx, time.Second)
	defer cancel()
	call, err := other.Dial(ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.9", 4000, 1, "sendrecv")})
	if err == nil {
		if res, err := call.WaitFinal(ctx); err == nil {
			t.Fatalf("source outside every trunk answered %d", res.StatusCode)
		}
	}
	// Reload with the source added to the trunk: admitted, no restart,
	// and the call in flight from the first source is untouched.
	first, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("first call %d", res.StatusCode)
	}
	pb2 := e.pb.Clone()
	pb2.Trunk("carrier").Sources = []string{callerIP + "/32", "127.0.0.9"}
	if err := e.sbc.Reload(pb2.Parse(t)); err != nil {
		t.Fatal(err)
	}
	call, err = other.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.9", 4000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("after the ACL reload: %v %v", res, err)
	}
	call.Bye(e.ctx)
	if err := first.Bye(e.ctx); err != nil {
		t.Fatalf("call from before the reload: %v", err)
	}
}

func TestDigestChallengeRelayed(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: func(r *sip.Request) sipua.Plan {
		if r.GetHeader("Authorization") == nil {
			return sipua.Plan{Final: 401, Headers: []sip.Header{sip.NewHeader("WWW-Authenticate", `Digest realm="pbx", nonce="n1", algorithm=MD5`)}}
		}
		return sipua.Plan{}
	}}}})
	_, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 401 {
		t.Fatalf("final %d, want the backend's 401", res.StatusCode)
	}
	if h := res.GetHeader("WWW-Authenticate"); h == nil || !strings.Contains(h.Value(), `nonce="n1"`) {
		t.Fatalf("challenge not relayed: %v", h)
	}
	call, res := e.dial(sipua.DialOptions{Headers: []sip.Header{sip.NewHeader("Authorization", `Digest username="1001", realm="pbx", nonce="n1", uri="sip:100@x", response="0123"`)}})
	if res.StatusCode != 200 {
		t.Fatalf("with credentials: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}
