package sbc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/secrets"
)

// testRegistrar is a carrier's registrar (sipgo, UDP on 127.0.0.9): it
// answers every REGISTER 200 with the Contact and the expiry asked for
// (code, when set, instead) and records "user expires" of each.
type testRegistrar struct {
	addr string
	mu   sync.Mutex
	got  []string
	code int
	ch   chan struct{}
	// auth, when set before the first REGISTER, challenges each REGISTER
	// without credentials (401) and verifies the answer (403 if wrong).
	auth *digestCarrier
}

func newTestRegistrar(t *testing.T) *testRegistrar {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.9:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistrar{addr: pc.LocalAddr().String(), ch: make(chan struct{}, 100)}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		exp := ""
		if h := req.GetHeader("Expires"); h != nil {
			exp = h.Value()
		}
		user := ""
		if c := req.Contact(); c != nil {
			user = c.Address.User
		}
		if r.auth != nil {
			if h := req.GetHeader("Authorization"); h == nil {
				plan := r.auth.answer(req)
				res := sip.NewResponseFromRequest(req, plan.Final, "Unauthorized", nil)
				for _, h := range plan.Headers {
					res.AppendHeader(h)
				}
				_ = tx.Respond(res)
				return
			} else if !r.auth.verify(req, h.Value()) {
				r.auth.failed.Add(1)
				_ = tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
				return
			}
			r.auth.verified.Add(1)
		}
		r.mu.Lock()
		r.got = append(r.got, user+" "+exp)
		code := r.code
		r.mu.Unlock()
		select {
		case r.ch <- struct{}{}:
		default:
		}
		if code != 0 {
			_ = tx.Respond(sip.NewResponseFromRequest(req, code, "Refused", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if c := req.Contact(); c != nil {
			res.AppendHeader(sip.NewHeader("Contact", c.Value()+";expires="+exp))
		}
		_ = tx.Respond(res)
	})
	go func() { _ = srv.ServeUDP(pc) }()
	t.Cleanup(func() { srv.Close(); ua.Close(); pc.Close() })
	return r
}

// next waits for the REGISTER after the first n and returns it.
func (r *testRegistrar) next(ctx context.Context, t *testing.T, n int) string {
	t.Helper()
	for {
		r.mu.Lock()
		if len(r.got) > n {
			g := r.got[n]
			r.mu.Unlock()
			return g
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-ctx.Done():
			t.Fatalf("no REGISTER #%d (got %v)", n+1, r.got)
		}
	}
}

func registerPolicy(reg *testRegistrar, pbx string, user string) *testpolicy.Policy {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, pbx).UDPOnly()
	pl := testpolicy.Pool{Name: "carrier-a", Realm: "external", Targets: testpolicy.Targets(reg.addr),
		Health: &testpolicy.Health{Interval: policy.D(0)}}
	if user != "" {
		pl.Extra = "[pool.register]\nuser = \"" + user + "\"\nexpires = \"60s\"\n"
	}
	pb.Pools = append(pb.Pools, pl)
	return pb
}

// TestOutboundRegistrationReload: a reload that leaves a registration as
// it was sends nothing; one that changes it unregisters the old one
// before registering the new one; one that removes it unregisters it;
// the metric follows.
func TestOutboundRegistrationReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := newTestRegistrar(t)
	pb := registerPolicy(reg, "127.0.0.5:5080", "u1")
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	if got := reg.next(ctx, t, 0); got != "u1 60" {
		t.Fatalf("REGISTER %q, want u1 60", got)
	}
	up := func() float64 {
		return testutil.ToFloat64(s.metrics.OutboundRegistered.WithLabelValues("carrier-a", reg.addr))
	}
	waitUntil(ctx, t, "registered", func() bool { return up() == 1 })
	// The same registration: nothing sent (the next REGISTER seen is the
	// unregistration below).
	if err := s.Reload(registerPolicy(reg, "127.0.0.5:5080", "u1").Parse(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(registerPolicy(reg, "127.0.0.5:5080", "u2").Parse(t)); err != nil {
		t.Fatal(err)
	}
	if got := reg.next(ctx, t, 1); got != "u1 0" {
		t.Fatalf("REGISTER %q after the change, want the old one's unregistration u1 0", got)
	}
	if got := reg.next(ctx, t, 2); got != "u2 60" {
		t.Fatalf("REGISTER %q, want u2 60", got)
	}
	if err := s.Reload(registerPolicy(reg, "127.0.0.5:5080", "").Parse(t)); err != nil {
		t.Fatal(err)
	}
	if got := reg.next(ctx, t, 3); got != "u2 0" {
		t.Fatalf("REGISTER %q after the removal, want u2 0", got)
	}
	waitUntil(ctx, t, "the registration's series removed", func() bool {
		return testutil.CollectAndCount(s.metrics.OutboundRegistered) == 0
	})
}

// TestOutboundRegistrationRetry: a registrar that refuses (403) is
// retried with backoff; the failures are counted, and a registrar that
// then accepts gets the registration.
func TestOutboundRegistrationRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := newTestRegistrar(t)
	reg.code = 403
	pb := registerPolicy(reg, "127.0.0.5:5080", "")
	pb.Pools[len(pb.Pools)-1].Extra = "[pool.register]\nuser = \"u1\"\nexpires = \"60s\"\nretry_min = \"50ms\"\nretry_max = \"100ms\"\n"
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	fails := func() float64 {
		return testutil.ToFloat64(s.metrics.OutboundRegFailures.WithLabelValues("carrier-a", regFailRejected))
	}
	waitUntil(ctx, t, "three refusals counted", func() bool { return fails() >= 3 })
	reg.mu.Lock()
	reg.code = 0
	reg.mu.Unlock()
	waitUntil(ctx, t, "registered", func() bool {
		return testutil.ToFloat64(s.metrics.OutboundRegistered.WithLabelValues("carrier-a", reg.addr)) == 1
	})
}

func TestRegistrationTimers(t *testing.T) {
	for _, c := range []struct{ granted, want time.Duration }{
		{3600 * time.Second, 3570 * time.Second},
		{60 * time.Second, 30 * time.Second},
		{2 * time.Second, time.Second},
	} {
		if got := refreshIn(c.granted); got != c.want {
			t.Errorf("refreshIn(%s) = %s, want %s", c.granted, got, c.want)
		}
	}
	lo, hi := time.Second, 8*time.Second
	for n := 1; n <= 6; n++ {
		full := min(lo<<(n-1), hi)
		for range 50 {
			if d := backoff(lo, hi, n); d < full/2 || d > full {
				t.Fatalf("backoff #%d = %s, want within [%s, %s]", n, d, full/2, full)
			}
		}
	}
	res := sip.NewResponse(200, "OK")
	ours := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "u", Host: "127.0.0.3", Port: 5060}}
	other := sip.NewParams()
	other.Add("expires", "10")
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "other", Host: "192.0.2.1", Port: 5060}, Params: other})
	res.AppendHeader(sip.NewHeader("Expires", "300"))
	if got := grantedExpiry(res, ours, time.Hour); got != 300*time.Second {
		t.Errorf("granted %s, want the Expires header's 300s (the other binding's expires is not ours)", got)
	}
	mine := sip.NewParams()
	mine.Add("expires", "120")
	res.AppendHeader(&sip.ContactHeader{Address: ours.Address, Params: mine})
	if got := grantedExpiry(res, ours, time.Hour); got != 120*time.Second {
		t.Errorf("granted %s, want our Contact's 120s", got)
	}
	if got := grantedExpiry(sip.NewResponse(200, "OK"), ours, time.Hour); got != time.Hour {
		t.Errorf("granted %s, want what was asked", got)
	}
	for v, want := range map[string]time.Duration{"30": 30 * time.Second, "30 (maintenance)": 30 * time.Second, "x": 0, "-1": 0} {
		r := sip.NewResponse(503, "x")
		r.AppendHeader(sip.NewHeader("Retry-After", v))
		if got := headerSeconds(r, "Retry-After"); got != want {
			t.Errorf("Retry-After %q: %s, want %s", v, got, want)
		}
	}
}

// TestOutboundTimeOfDay: with the SBC's clock injected, a call inside
// the window of the +44 office-hours route goes to carrier A, the same
// call outside it to carrier B (the always-on route).
func TestOutboundTimeOfDay(t *testing.T) {
	e := newOutboundEnv(t, nil, nil, func(p *testpolicy.Policy) {
		for i := range p.Pools {
			p.Pools[i].Auth = nil
		}
		p.OutboundRoutes = []testpolicy.OutboundRoute{
			{Prefix: "+44", Pools: []string{"carrier-b"}},
			{Prefix: "+44", Pools: []string{"carrier-a"}, Hours: "08:00-18:00", Days: []string{"mon-fri"}, Timezone: "Europe/London"},
		}
	})
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		when time.Time
		to   *sipua.Backend
	}{
		{time.Date(2026, 12, 7, 10, 0, 0, 0, london), e.a},  // Monday morning
		{time.Date(2026, 12, 7, 20, 0, 0, 0, london), e.b},  // Monday evening
		{time.Date(2026, 12, 12, 10, 0, 0, 0, london), e.b}, // Saturday
		{time.Date(2026, 7, 6, 17, 30, 0, 0, london), e.a},  // summer time
	} {
		now := func() time.Time { return c.when }
		e.sbc.clock.Store(&now)
		n := len(c.to.Calls())
		call, res := e.call(t, "+442079460000")
		if res.StatusCode != 200 || len(c.to.Calls()) != n+1 {
			t.Fatalf("#%d at %s: %d, the call did not reach %s", i, c.when, res.StatusCode, c.to.Addr())
		}
		if err := call.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutboundRegistrationSealedPassword: the registrar challenges; the
// SBC answers with [pool.auth]'s password sealed under the master key
// (opened when the policy is applied), and the registrar verifies it,
// on the registration and on the unregistration at Close.
func TestOutboundRegistrationSealedPassword(t *testing.T) {
	sealed, _ := sealUnderKey(t, secrets.GenerateKey(), "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := newTestRegistrar(t)
	reg.auth = newDigestCarrier("acct", "s3cret")
	pb := registerPolicy(reg, "127.0.0.5:5080", "u1")
	pb.Pool("carrier-a").Auth = &testpolicy.PoolAuth{Username: "acct", Password: sealed}
	s, err := New(pb.Parse(t), Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := reg.next(ctx, t, 0); got != "u1 60" {
		t.Fatalf("REGISTER %q, want u1 60", got)
	}
	s.Close()
	if got := reg.next(ctx, t, 1); got != "u1 0" {
		t.Fatalf("REGISTER %q at Close, want the unregistration u1 0", got)
	}
	if v, f := reg.auth.verified.Load(), reg.auth.failed.Load(); v != 2 || f != 0 {
		t.Fatalf("registrar verified %d digest answers, refused %d; want 2, 0", v, f)
	}
}

// TestRegisteredCarrierCallsIn: the carrier the SBC registered with calls
// the registered contact (sip:u1@the SBC's external face) from its
// address; a trunk whose sources hold that address takes the call and
// routes it to the PBX, like any inbound carrier call.
func TestRegisteredCarrierCallsIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pbx, err := sipua.NewBackend(sipua.BackendOptions{UDP: "127.0.0.5:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	reg := newTestRegistrar(t)
	pb := registerPolicy(reg, pbx.Addr(), "u1")
	pb.Trunks[0].Sources = []string{"127.0.0.9/32"} // the carrier's address
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	if got := reg.next(ctx, t, 0); got != "u1 60" {
		t.Fatalf("REGISTER %q, want u1 60", got)
	}
	carrier, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.9:0", User: "+15551230000", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer carrier.Close()
	ext, _ := s.ListenAddr("external", "udp")
	c, err := carrier.Dial(ctx, ext.String(), sipua.DialOptions{User: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.WaitFinal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || len(pbx.Calls()) != 1 {
		t.Fatalf("call to the registered contact: %d, PBX calls %d", res.StatusCode, len(pbx.Calls()))
	}
	if err := c.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "the call counted for the trunk", func() bool {
		return testutil.ToFloat64(s.metrics.TrunkCalls.WithLabelValues("carrier", resultAnswered)) == 1
	})
}
