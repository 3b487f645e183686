package sbc

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/secrets"
)

// Outbound calls over real sockets: a sipua Caller plays the PBX (a
// target of pool "pbx" on the internal realm), sipua Backends play the
// carriers (pools of the external realm).
const (
	pbxIP      = "127.0.0.5"
	carrierAIP = "127.0.0.6"
	carrierBIP = "127.0.0.7"
)

// digestCarrier answers INVITEs without credentials with a 401 digest
// challenge, verifies the response of those with credentials (RFC 2617
// with qop=auth, as icholy/digest computes it) and answers 200 when it
// holds, 403 when not. Each challenge has a fresh nonce; a nonce is
// accepted once.
type digestCarrier struct {
	user, pass, realm string
	n                 atomic.Int64
	verified, failed  atomic.Int64
	nonces            chan string
}

func newDigestCarrier(user, pass string) *digestCarrier {
	return &digestCarrier{user: user, pass: pass, realm: "carrier.test", nonces: make(chan string, 100)}
}

func (d *digestCarrier) answer(req *sip.Request) sipua.Plan {
	h := req.GetHeader("Authorization")
	if h == nil {
		nonce := fmt.Sprintf("nonce%d", d.n.Add(1))
		d.nonces <- nonce
		chal := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=MD5, qop="auth"`, d.realm, nonce)
		return sipua.Plan{Final: 401, Headers: []sip.Header{sip.NewHeader("WWW-Authenticate", chal)}}
	}
	if d.verify(req, h.Value()) {
		d.verified.Add(1)
		return sipua.Plan{}
	}
	d.failed.Add(1)
	return sipua.Plan{Final: 403}
}

func (d *digestCarrier) verify(req *sip.Request, value string) bool {
	cred, err := digest.ParseCredentials(value)
	if err != nil || cred.Username != d.user || cred.Realm != d.realm || cred.URI != req.Recipient.String() {
		return false
	}
	select {
	case nonce := <-d.nonces:
		if nonce != cred.Nonce {
			return false
		}
	default:
		return false
	}
	want, err := digest.Digest(&digest.Challenge{Realm: d.realm, Nonce: cred.Nonce, Algorithm: "MD5", QOP: []string{"auth"}},
		digest.Options{Method: string(req.Method), URI: cred.URI, Username: d.user, Password: d.pass, Cnonce: cred.Cnonce, Count: cred.Nc})
	return err == nil && want.Response == cred.Response
}

type outboundEnv struct {
	sbc    *SBC
	pbx    *sipua.Caller
	a, b   *sipua.Backend
	intUDP string
	ctx    context.Context
	ev     chan events.Event
}

// newOutboundEnv starts carriers A and B with the given answers, a PBX,
// and an SBC routing "+" numbers from the PBX to A then B.
func newOutboundEnv(t *testing.T, ansA, ansB func(*sip.Request) sipua.Plan, edit func(p *testpolicy.Policy)) *outboundEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	e := &outboundEnv{ctx: ctx, ev: make(chan events.Event, 100)}
	var err error
	e.a, err = sipua.NewBackend(sipua.BackendOptions{UDP: carrierAIP + ":0", Answer: ansA, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.a.Close() })
	e.b, err = sipua.NewBackend(sipua.BackendOptions{UDP: carrierBIP + ":0", Answer: ansB, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.b.Close() })
	e.pbx, err = sipua.NewCaller(sipua.CallerOptions{Addr: pbxIP + ":0", User: "1001", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.pbx.Close() })

	pb := testpolicy.New(sbcExtIP, sbcIntIP, e.pbx.Addr()).UDPOnly()
	off := policy.D(0)
	pb.Pools = append(pb.Pools,
		testpolicy.Pool{Name: "carrier-a", Realm: "external", Targets: testpolicy.Targets(e.a.Addr()),
			Health: &testpolicy.Health{Interval: off}, Auth: &testpolicy.PoolAuth{Username: "acct", Password: "s3cret"}},
		testpolicy.Pool{Name: "carrier-b", Realm: "external", Targets: testpolicy.Targets(e.b.Addr()),
			Health: &testpolicy.Health{Interval: off}})
	pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier-a", "carrier-b"}}}
	pb.Routing.TargetTimeout = policy.D(500 * time.Millisecond)
	if edit != nil {
		edit(pb)
	}
	e.sbc = startSBC(t, pb.Parse(t), Options{Logger: testLogger(), Events: events.Func(func(ev events.Event) {
		select {
		case e.ev <- ev:
		default:
		}
	})})
	in, _ := e.sbc.ListenAddr("internal", "udp")
	e.intUDP = in.String()
	return e
}

// call places a call from the PBX to number and waits for its final
// response.
func (e *outboundEnv) call(t *testing.T, number string, hdrs ...sip.Header) (*sipua.Call, *sip.Response) {
	t.Helper()
	c, err := e.pbx.Dial(e.ctx, e.intUDP, sipua.DialOptions{User: number, Headers: hdrs})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.WaitFinal(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

func TestOutboundDigestAuth(t *testing.T) {
	carrier := newDigestCarrier("acct", "s3cret")
	e := newOutboundEnv(t, carrier.answer, nil, nil)
	c, res := e.call(t, "+442079460000")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d, want 200", res.StatusCode)
	}
	if carrier.verified.Load() != 1 || carrier.failed.Load() != 0 {
		t.Fatalf("carrier verified %d digest answers, refused %d", carrier.verified.Load(), carrier.failed.Load())
	}
	if len(e.b.Calls()) != 0 {
		t.Fatal("carrier B got a call although A answered")
	}
	// Both INVITEs in one dialog, CSeq + 1; nothing of the PBX's side in
	// them (topology hiding towards the carrier, SIP and SDP).
	var invs []sipua.Msg
	for _, m := range e.a.Received() {
		if m.Method == "INVITE" {
			invs = append(invs, m)
		}
	}
	if len(invs) != 2 || invs[0].Header("Call-ID") != invs[1].Header("Call-ID") {
		t.Fatalf("carrier got %d INVITEs (want 2 in one dialog)", len(invs))
	}
	if a, b := invs[0].Header("CSeq"), invs[1].Header("CSeq"); !strings.HasSuffix(a, "INVITE") || a == b {
		t.Fatalf("CSeq %q then %q", a, b)
	}
	for _, m := range invs {
		for _, leak := range []string{pbxIP, sbcIntIP, c.CallID()} {
			if strings.Contains(string(m.Raw), leak) {
				t.Fatalf("INVITE to the carrier carries %s:\n%s", leak, m.Raw)
			}
		}
		if !strings.HasPrefix(m.StartLine, "INVITE sip:+442079460000@"+carrierAIP) {
			t.Fatalf("request line %q", m.StartLine)
		}
	}
	if got := testutil.ToFloat64(e.sbc.metrics.CarrierAuth.WithLabelValues("carrier-a", authAnswered)); got != 1 {
		t.Fatalf("sbc_carrier_auth_total{answered} = %v", got)
	}
	if err := c.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(e.ctx, t, "the outbound call counted answered", func() bool {
		return testutil.ToFloat64(e.sbc.metrics.OutboundCalls.WithLabelValues(resultAnswered)) == 1
	})
}

func TestOutboundWrongCredentialsFailOver(t *testing.T) {
	carrier := newDigestCarrier("acct", "other-password")
	e := newOutboundEnv(t, func(req *sip.Request) sipua.Plan {
		p := carrier.answer(req)
		if p.Final == 403 {
			// A carrier challenges a wrong answer again.
			nonce := fmt.Sprintf("again%d", carrier.n.Add(1))
			return sipua.Plan{Final: 401, Headers: []sip.Header{sip.NewHeader("WWW-Authenticate", `Digest realm="carrier.test", nonce="`+nonce+`", qop="auth"`)}}
		}
		return p
	}, nil, nil)
	_, res := e.call(t, "+15551234567")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d, want 200 from carrier B", res.StatusCode)
	}
	if len(e.b.Calls()) != 1 {
		t.Fatalf("carrier B got %d calls, want 1", len(e.b.Calls()))
	}
	if got := testutil.ToFloat64(e.sbc.metrics.CarrierAuth.WithLabelValues("carrier-a", authRejected)); got != 1 {
		t.Fatalf("sbc_carrier_auth_total{rejected} = %v", got)
	}
}

func TestOutboundFailoverBetweenCarriers(t *testing.T) {
	for _, c := range []struct {
		name string
		a    sipua.Plan
	}{
		{"503", sipua.Plan{Final: 503}},
		{"502", sipua.Plan{Final: 502}},
		{"no answer", sipua.Plan{NoResponse: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newOutboundEnv(t, sipua.Always(c.a), nil, nil)
			_, res := e.call(t, "+33123456789")
			if res.StatusCode != 200 || len(e.b.Calls()) != 1 {
				t.Fatalf("call: %d, carrier B calls %d; want 200 through B", res.StatusCode, len(e.b.Calls()))
			}
		})
	}
}

func TestOutboundDenyAndRoutes(t *testing.T) {
	e := newOutboundEnv(t, nil, nil, func(p *testpolicy.Policy) {
		p.OutboundRoutes = append(p.OutboundRoutes, testpolicy.OutboundRoute{Prefix: "0", Strip: 1, Prepend: "+44",
			Pools: []string{"carrier-b"}, FromUser: "+441234567890", PAI: "from", Privacy: "id"})
		p.Outbound = &testpolicy.Outbound{DenyPrefixes: []string{"+882", "+4470"}, PremiumPrefixes: []string{"+449"}, DenyPremium: true}
	})
	for _, c := range []struct {
		number string
		reason string
	}{
		{"+88212345", "denied_destination"},
		{"07012345678", "denied_destination"}, // +4470… after normalisation
		{"+449012345", "premium_destination"},
	} {
		_, res := e.call(t, c.number)
		if res.StatusCode != 403 {
			t.Fatalf("%s: %d, want 403", c.number, res.StatusCode)
		}
		if h := res.GetHeader("Reason"); h == nil || !strings.Contains(h.Value(), c.reason) {
			t.Fatalf("%s: Reason %v, want %s", c.number, h, c.reason)
		}
		if got := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues("route", c.reason)); got < 1 {
			t.Fatalf("%s: sbc_dropped_total{route,%s} = %v", c.number, c.reason, got)
		}
	}
	if len(e.a.Calls())+len(e.b.Calls()) != 0 {
		t.Fatal("a denied call reached a carrier")
	}
	// No route for a short internal number.
	if _, res := e.call(t, "2001"); res.StatusCode != 403 {
		t.Fatalf("unrouted number: %d, want 403", res.StatusCode)
	}
	// National form: normalised, caller-ID policy applied; the Identity
	// header passes untouched.
	const passport = "eyJhbGciOiJFUzI1NiJ9.e30.sig;info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken"
	_, res := e.call(t, "02079460000", sip.NewHeader("Identity", passport),
		sip.NewHeader("P-Asserted-Identity", "<sip:1001@"+pbxIP+">"))
	if res.StatusCode != 200 {
		t.Fatalf("national call: %d", res.StatusCode)
	}
	calls := e.b.Calls()
	if len(calls) != 1 {
		t.Fatalf("carrier B calls %d", len(calls))
	}
	m, err := e.b.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.StartLine, "INVITE sip:+442079460000@") || !strings.Contains(m.Header("From"), "+441234567890@") ||
		!strings.Contains(m.Header("To"), "+442079460000@") {
		t.Fatalf("INVITE: %s\nFrom %s\nTo %s", m.StartLine, m.Header("From"), m.Header("To"))
	}
	if pai := m.Header("P-Asserted-Identity"); !strings.Contains(pai, "+441234567890@"+sbcExtIP) {
		t.Fatalf("P-Asserted-Identity %q", pai)
	}
	if m.Header("Privacy") != "id" || m.Header("Identity") != passport {
		t.Fatalf("Privacy %q Identity %q", m.Header("Privacy"), m.Header("Identity"))
	}
	if strings.Contains(string(m.Raw), pbxIP) || strings.Contains(string(m.Raw), sbcIntIP) {
		t.Fatalf("INVITE to the carrier names the PBX side:\n%s", m.Raw)
	}
}

func TestOutboundCaps(t *testing.T) {
	var n atomic.Int64
	ringFirst := func(*sip.Request) sipua.Plan {
		if n.Add(1) == 1 {
			return sipua.Plan{Delay: 20 * time.Second} // rings until cancelled
		}
		return sipua.Plan{}
	}
	e := newOutboundEnv(t, ringFirst, nil, func(p *testpolicy.Policy) {
		p.Outbound = &testpolicy.Outbound{PoolMaxCalls: 1}
	})
	first, err := e.pbx.Dial(e.ctx, e.intUDP, sipua.DialOptions{User: "+15550001"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(e.ctx, t, "the first call at carrier A", func() bool { return len(e.a.Calls()) == 1 })
	_, res := e.call(t, "+15550002")
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("second call over pool_max_calls: %d, want 503 with Retry-After", res.StatusCode)
	}
	if got := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues("admit", string(reasonOutboundPoolCalls))); got != 1 {
		t.Fatalf("sbc_dropped_total{admit,outbound_pool_calls} = %v", got)
	}
	for tripped := false; !tripped; {
		select {
		case ev := <-e.ev:
			if ev.Kind != events.LimitTripped {
				continue
			}
			if ev.Reason != "pool_max_calls" || ev.Detail["source_pool"] != "pbx" || ev.Called != "+15550002" {
				t.Fatalf("event %+v", ev)
			}
			tripped = true
		case <-e.ctx.Done():
			t.Fatal("no limit_tripped event")
		}
	}
	if err := first.Cancel(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(e.ctx, t, "the slot freed", func() bool {
		e.sbc.outbound.mu.Lock()
		defer e.sbc.outbound.mu.Unlock()
		return e.sbc.outbound.calls[poolKey("pbx")] == 0
	})
	if _, res := e.call(t, "+15550003"); res.StatusCode != 200 {
		t.Fatalf("a call after the slot was freed: %d, want 200", res.StatusCode)
	}
}

// TestOutboundMinuteCaps: the minutes of answered calls count against
// the source pool and the source within the window; past the cap calls
// are refused with the rest of the window as Retry-After, the trip is
// reported once a minute, and a new window admits again.
func TestOutboundMinuteCaps(t *testing.T) {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, pbxIP+":5090")
	pb.Outbound = &testpolicy.Outbound{SourceMaxMinutes: 2, PoolMaxMinutes: 10, MinutesWindow: policy.D(time.Hour)}
	st := &snapshot{pol: pb.Parse(t)}
	var trips []events.Event
	s := &SBC{log: testLogger(), metrics: newMetrics()}
	s.events.Set(events.Func(func(e events.Event) { trips = append(trips, e) }))
	p := peer{src: netipAddrPort(t, pbxIP+":5090"), backend: true, pool: "pbx"}
	release, v := s.admitOutbound(st, p, "+4420")
	if !v.pass() {
		t.Fatalf("first call refused: %+v", v)
	}
	release()
	release() // idempotent
	s.addMinutes(st, "pbx", p.src, 121*time.Second)
	for i := 0; i < 2; i++ {
		_, v = s.admitOutbound(st, p, "+4421")
		if v.pass() || v.reason != reasonOutboundSourceMinutes || v.code != 503 {
			t.Fatalf("over source_max_minutes: %+v", v)
		}
	}
	if len(trips) != 1 || trips[0].Kind != events.LimitTripped || trips[0].Reason != "source_max_minutes" {
		t.Fatalf("events %+v, want one limit_tripped", trips)
	}
	var ra string
	for _, h := range v.hdrs {
		if h.Name() == "Retry-After" {
			ra = h.Value()
		}
	}
	if ra == "" || ra == "1" {
		t.Fatalf("Retry-After %q, want the rest of the window", ra)
	}
	// Another source of the same pool is under its own cap, not the
	// pool's (2 of 10 minutes used).
	other := peer{src: netipAddrPort(t, "127.0.0.8:5090"), backend: true, pool: "pbx"}
	if rel, v := s.admitOutbound(st, other, "+4422"); !v.pass() {
		t.Fatalf("another source refused: %+v", v)
	} else {
		rel()
	}
	// The window ends: admitted again.
	s.outbound.mu.Lock()
	for _, w := range s.outbound.minutes {
		w.start = w.start.Add(-time.Hour)
	}
	s.outbound.mu.Unlock()
	if rel, v := s.admitOutbound(st, p, "+4423"); !v.pass() {
		t.Fatalf("refused in a new window: %+v", v)
	} else {
		rel()
	}
	s.outbound.mu.Lock()
	defer s.outbound.mu.Unlock()
	if len(s.outbound.calls) != 0 {
		t.Fatalf("call counts left after every release: %v", s.outbound.calls)
	}
}

// TestOutboundRoutingAllocs: routing lookups and deny checks of an
// outbound call allocate nothing.
func TestOutboundRoutingAllocs(t *testing.T) {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, pbxIP+":5090")
	pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "carrier", Realm: "external", Targets: testpolicy.Targets(carrierAIP + ":5060")})
	pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier"}}, {Prefix: "+44", Pools: []string{"carrier"}, SourcePool: "pbx"}}
	pb.Outbound = &testpolicy.Outbound{DenyPrefixes: []string{"+882", "+883"}, PremiumPrefixes: []string{"+449"}, DenyPremium: true,
		HomePrefix: "+44", DenyInternational: true}
	pol := pb.Parse(t)
	n := testing.AllocsPerRun(1000, func() {
		r := pol.OutboundRouteFor("pbx", "+442079460000")
		if r == nil || r.Prefix != "+44" {
			t.Fatal("route")
		}
		if why, _ := deniedDestination(&pol.Outbound, "+442079460000", "+442079460000"); why != "" {
			t.Fatal(why)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
	if why, _ := deniedDestination(&pol.Outbound, "+15551234", "+15551234"); why != reasonInternational {
		t.Fatalf("+1 from +44: %q, want international", why)
	}
	if why, _ := deniedDestination(&pol.Outbound, "0015551234", "0015551234"); why != reasonInternational {
		t.Fatalf("00 1 from +44: %q, want international", why)
	}
	if why, _ := deniedDestination(&pol.Outbound, "00442079", "00442079"); why != "" {
		t.Fatalf("00 44 from +44: %q, want allowed", why)
	}
}

func netipAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestOutboundReload: outbound routes and deny lists apply on reload, to
// new calls.
func TestOutboundReload(t *testing.T) {
	var pb *testpolicy.Policy
	e := newOutboundEnv(t, nil, nil, func(p *testpolicy.Policy) { pb = p })
	if _, res := e.call(t, "+15551234"); res.StatusCode != 200 {
		t.Fatalf("before the reload: %d", res.StatusCode)
	}
	next := pb.Clone()
	next.Outbound = &testpolicy.Outbound{DenyPrefixes: []string{"+1"}}
	next.OutboundRoutes[0].Prefix = "+"
	if err := e.sbc.Reload(next.Parse(t)); err != nil {
		t.Fatal(err)
	}
	if _, res := e.call(t, "+15551234"); res.StatusCode != 403 {
		t.Fatalf("after the reload: %d, want 403 (denied)", res.StatusCode)
	}
	next = next.Clone()
	next.OutboundRoutes = nil
	if err := e.sbc.Reload(next.Parse(t)); err != nil {
		t.Fatal(err)
	}
	if _, res := e.call(t, "+33123"); res.StatusCode != 403 {
		t.Fatalf("without outbound routes: %d, want 403", res.StatusCode)
	}
	if got := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues("route", string(reasonNoOutboundRoute))); got != 1 {
		t.Fatalf("no_outbound_route = %v", got)
	}
}

// TestClassifyBackendPool: a PBX is classified as a backend of its pool
// on its pool's realm only, without allocating; a carrier's target on the
// external realm is a backend of the carrier pool.
func TestClassifyBackendPool(t *testing.T) {
	e := newOutboundEnv(t, nil, nil, nil)
	st := e.sbc.state.Load()
	in, ext := e.sbc.realms["internal"], e.sbc.realms["external"]
	pbx := netipAddrPort(t, e.pbx.Addr())
	var p peer
	n := testing.AllocsPerRun(1000, func() { p = e.sbc.classify(st, in, pbx, "udp") })
	if !p.backend || p.pool != "pbx" || p.trunk != nil {
		t.Fatalf("PBX on internal: %+v", p)
	}
	if n != 0 {
		t.Fatalf("classify of a backend: %v allocations", n)
	}
	if p := e.sbc.classify(st, ext, pbx, "udp"); p.backend || p.trunk != nil {
		t.Fatalf("PBX on the external realm: %+v, want unknown", p)
	}
	if p := e.sbc.classify(st, ext, netipAddrPort(t, e.b.Addr()), "udp"); !p.backend || p.pool != "carrier-b" {
		t.Fatalf("carrier B on external: %+v", p)
	}
}

// TestOutboundNotFromCarriers: an INVITE from a carrier pool's address
// (no trunk) is never routed out to the carriers again.
func TestOutboundNotFromCarriers(t *testing.T) {
	e := newOutboundEnv(t, nil, nil, nil)
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: carrierBIP + ":0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ext, _ := e.sbc.ListenAddr("external", "udp")
	call, err := c.Dial(e.ctx, ext.String(), sipua.DialOptions{User: "+442079460000"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("INVITE from a carrier's address: %v, %v; want 403", res, err)
	}
	if len(e.a.Calls())+len(e.b.Calls()) != 0 {
		t.Fatal("a carrier's INVITE was routed to a carrier")
	}
	if got := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues("route", string(reasonNoOutboundRoute))); got != 1 {
		t.Fatalf("no_outbound_route = %v", got)
	}
}

// TestOutboundMedia: media anchoring picks profiles by leg, not by
// direction: the PBX's plain RTP offer reaches an SDES carrier as an
// SRTP offer with the SBC's keys and external address only.
func TestOutboundMedia(t *testing.T) {
	e := newOutboundEnv(t, sipua.Always(sipua.Plan{Final: 486}), nil, func(p *testpolicy.Policy) {
		p.Pool("carrier-a").MediaEncryption = "sdes"
		p.Pool("carrier-b").MediaEncryption = "sdes"
	})
	_, res := e.call(t, "+442079460000")
	if res.StatusCode != 486 {
		t.Fatalf("call: %d, want the carrier's 486", res.StatusCode)
	}
	m, err := e.a.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" })
	if err != nil {
		t.Fatal(err)
	}
	sdp := string(m.Body)
	if !strings.Contains(sdp, "RTP/SAVP") || !strings.Contains(sdp, "a=crypto:") || !strings.Contains(sdp, "c=IN IP4 "+sbcExtIP) {
		t.Fatalf("offer to the SDES carrier:\n%s", sdp)
	}
	if strings.Contains(sdp, pbxIP) || strings.Contains(sdp, sbcIntIP) {
		t.Fatalf("offer to the carrier names the PBX side:\n%s", sdp)
	}
}

// A carrier password sealed under the master key (sbc secrets seal) is
// opened when the policy is applied: the carrier verifies the digest made
// with the clear password. Without the key, or with another, the SBC
// refuses to start and says which setting failed.
func TestOutboundSealedCarrierPassword(t *testing.T) {
	key := secrets.GenerateKey()
	sealed, _ := sealUnderKey(t, key, "s3cret")
	seal := func(p *testpolicy.Policy) { p.Pool("carrier-a").Auth.Password = sealed }
	carrier := newDigestCarrier("acct", "s3cret")
	e := newOutboundEnv(t, carrier.answer, nil, seal)
	if _, res := e.call(t, "+442079460000"); res.StatusCode != 200 || carrier.verified.Load() != 1 {
		t.Fatalf("call with a sealed password: %d, digest verified %d", res.StatusCode, carrier.verified.Load())
	}

	pb := testpolicy.New(sbcExtIP, sbcIntIP, "127.0.0.9:5080").UDPOnly()
	pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "carrier-a", Realm: "external", Targets: testpolicy.Targets("127.0.0.10:5060"),
		Auth: &testpolicy.PoolAuth{Username: "acct", Password: sealed}})
	pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier-a"}}}
	for name, env := range map[string]string{"no key": "", "another key": secrets.GenerateKey()} {
		t.Setenv(secrets.EnvKey, env)
		_, err := New(pb.Parse(t), Options{Logger: testLogger()})
		if err == nil || !strings.Contains(err.Error(), "pool carrier-a: auth.password") {
			t.Errorf("%s: New = %v, want an error naming pool carrier-a's auth.password", name, err)
		}
	}
}
