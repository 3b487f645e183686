package sbc

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/kamailio"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// Addresses of the remote users' phones: two hosts of the access trunk.
const (
	phoneUDPIP = "127.0.0.5"
	phoneTCPIP = "127.0.0.6"
	pbxPhoneIP = "127.0.0.7" // a phone behind the PBX, calling the remote user through Kamailio
)

// usersEnv is an SBC whose external realm takes REGISTERs of the trunk
// "users" (the phones' hosts) for domain for the pool "pbx" at targets.
func usersEnv(t *testing.T, domain string, targets ...string) *env {
	t.Helper()
	return newEnv(t, envOpts{
		targets: targets,
		limits:  &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{phoneUDPIP + "/32", phoneTCPIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{domain},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "pbx"})
		},
	})
}

// newPhone is a remote user's phone: a sipua backend (it answers INVITEs
// by plan) on ip that registers with Register.
func newUserPhone(t *testing.T, ip string, tcp bool, plan sipua.Plan) *sipua.Backend {
	t.Helper()
	o := sipua.BackendOptions{UDP: ip + ":0", User: "alice", UserAgent: "Phone/1.0", Logger: testLogger(), Answer: sipua.Always(plan)}
	if tcp {
		o.TCP = ip + ":0"
	}
	b, err := sipua.NewBackend(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestRegisteredUsersKamailio: Debian's Kamailio (usrloc, digest auth with
// a test subscriber, max_expires 120) is the registrar behind the SBC. Two
// phones register the same AoR through the SBC from two hosts, one over
// UDP and one over TCP, asking 3600 s: each sees its own Contact granted
// 120 s, and Kamailio holds two contacts, both the SBC's (one per device,
// opaque user, the internal face), neither a phone's address. A call from
// the PBX side to the AoR (an INVITE to Kamailio, which forks to both
// contacts) reaches both phones through the SBC, the TCP one over the
// connection it opened; the UDP phone answers, the TCP phone gets CANCEL.
// Unregistering (expires 0 from one, Contact: * from the other) empties
// Kamailio's location and the SBC's cache; a call to the AoR then fails
// at Kamailio with 404.
func TestRegisteredUsersKamailio(t *testing.T) {
	if err := kamailio.Available(); err != nil && testing.Short() {
		t.Skip(err)
	}
	const domain, password = "example.test", "Al1ce-s3cret"
	pki := newTestPKI(t)
	reg := kamailio.Start(t, kamailio.Options{
		UDP:      netip.MustParseAddrPort(backendIP + ":0"),
		CertFile: pki.file("backend"), KeyFile: pki.key("backend"),
		Auth: map[string]string{"alice": password}, Realm: domain, MaxExpires: 120,
	})
	e := usersEnv(t, domain, reg.Addr("udp").String())
	extUDP, _ := e.sbc.ListenAddr("external", "udp")
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")
	intUDP, _ := e.sbc.ListenAddr("internal", "udp")

	// The UDP phone answers once the TCP phone rings: answering sooner
	// races Kamailio's CANCEL of the other branch against the SBC's INVITE
	// to the TCP phone (which the SBC, cancelled first, never sends).
	ring := make(chan struct{})
	answers := newUserPhone(t, phoneUDPIP, false, sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Hold: ring})
	rings := newUserPhone(t, phoneTCPIP, true, sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Delay: 30 * time.Second})

	register := func(ph *sipua.Backend, tr, to string, expires int, wildcard bool) *sip.Response {
		t.Helper()
		res, err := ph.Register(e.ctx, sipua.RegisterOptions{Registrar: to, Transport: tr, User: "alice", Domain: domain,
			Expires: expires, Wildcard: wildcard, Username: "alice", Password: password})
		if err != nil {
			t.Fatalf("REGISTER over %s: %v", tr, err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("REGISTER over %s: %d %s\n%s", tr, res.StatusCode, res.Reason, reg.Log())
		}
		return res
	}
	for _, ph := range []struct {
		b       *sipua.Backend
		tr, to  string
		contact string
	}{{answers, "UDP", extUDP.String(), answers.Addr()}, {rings, "TCP", extTCP.String(), rings.TCPAddr()}} {
		res := register(ph.b, ph.tr, ph.to, 3600, false)
		cts := res.GetHeaders("Contact")
		if len(cts) != 1 {
			t.Fatalf("%s phone: 200 with %d Contacts, want its own only: %v", ph.tr, len(cts), cts)
		}
		ct := cts[0].Value()
		if !strings.Contains(ct, "sip:alice@"+ph.contact) || !strings.Contains(ct, "expires=120") {
			t.Errorf("%s phone: 200 Contact %q, want its own (sip:alice@%s) with expires=120 (Kamailio's max_expires)", ph.tr, ct, ph.contact)
		}
	}

	cs, err := reg.Contacts("alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("Kamailio holds %+v, want 2 contacts", cs)
	}
	for _, c := range cs {
		var u sip.Uri
		if err := sip.ParseUri(c.Address, &u); err != nil {
			t.Fatalf("contact %q: %v", c.Address, err)
		}
		if !isToken(u.User) || u.Host != intUDP.Addr().String() || u.Port != int(intUDP.Port()) || c.Expires > 120 {
			t.Errorf("Kamailio's contact %+v: want sip:<token>@%s, expiring within 120 s", c, intUDP)
		}
		if strings.Contains(c.Address, phoneUDPIP) || strings.Contains(c.Address, phoneTCPIP) {
			t.Errorf("Kamailio learnt a phone's address: %s", c.Address)
		}
		if _, ok := e.sbc.regs.get(u.User); !ok {
			t.Errorf("the SBC does not hold the binding %s", u.User)
		}
	}
	if cs[0].Address == cs[1].Address {
		t.Fatal("one contact for two devices")
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registrations.WithLabelValues("external")); n != 2 {
		t.Errorf("sbc_registrations{realm=external} %v, want 2", n)
	}

	// A call from the PBX side: Kamailio forks to both contacts.
	pbx := e.newCaller(pbxPhoneIP + ":0")
	call, err := pbx.Dial(e.ctx, reg.Addr("udp").String(), sipua.DialOptions{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rings.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateRinging }); err != nil {
		t.Fatalf("the TCP phone did not ring: %v", err)
	}
	close(ring)
	final, err := call.WaitFinal(e.ctx)
	if err != nil || final.StatusCode != 200 {
		t.Fatalf("the call to alice: %v %v\n%s", final, err, reg.Log())
	}
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	got, err := answers.WaitCall(ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateAnswered && ci.Acked })
	if err != nil {
		t.Fatalf("the UDP phone did not answer: %v", err)
	}
	if got.Source != extUDP.String() || got.Transport != "UDP" {
		t.Errorf("the UDP phone's INVITE came from %s over %s, want the SBC's %s", got.Source, got.Transport, extUDP)
	}
	cancelled, err := rings.WaitCall(ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateCancelled })
	if err != nil {
		t.Fatalf("the TCP phone was not cancelled: %v (calls %+v)", err, rings.Calls())
	}
	if cancelled.Transport != "TCP" || cancelled.Source != extTCP.String() {
		t.Errorf("the TCP phone's INVITE came from %s over %s, want over the connection it opened to %s", cancelled.Source, cancelled.Transport, extTCP)
	}
	for _, ph := range []struct {
		b    *sipua.Backend
		addr string
	}{{answers, answers.Addr()}, {rings, rings.TCPAddr()}} {
		m, err := ph.b.WaitFor(ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" })
		if err != nil {
			t.Fatal(err)
		}
		if want := "INVITE sip:alice@" + ph.addr; !strings.HasPrefix(m.StartLine, want) {
			t.Errorf("INVITE request line %q, want the phone's own Contact (%s...)", m.StartLine, want)
		}
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	if _, err := answers.WaitCall(ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateEnded }); err != nil {
		t.Fatalf("the BYE did not reach the UDP phone: %v", err)
	}
	e.eventually("two calls to users counted", func() bool {
		return testutil.ToFloat64(e.sbc.metrics.UserCalls.WithLabelValues(resultAnswered)) == 1 &&
			testutil.ToFloat64(e.sbc.metrics.UserCalls.WithLabelValues(resultCancelled)) == 1
	})

	// Unregister: expires 0 from the UDP phone, Contact: * from the TCP one.
	if res := register(answers, "UDP", extUDP.String(), 0, false); len(res.GetHeaders("Contact")) != 0 {
		t.Errorf("the 200 to an unregistration lists %v", res.GetHeaders("Contact"))
	}
	if cs, err := reg.Contacts("alice"); err != nil || len(cs) != 1 {
		t.Fatalf("Kamailio after one unregistration: %+v %v, want 1 contact", cs, err)
	}
	register(rings, "TCP", extTCP.String(), 0, true)
	if cs, err := reg.Contacts("alice"); err != nil || len(cs) != 0 {
		t.Fatalf("Kamailio after both unregistered: %+v %v, want none", cs, err)
	}
	if n := e.sbc.regs.len(); n != 0 {
		t.Fatalf("the SBC still holds %d bindings", n)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registrations.WithLabelValues("external")); n != 0 {
		t.Errorf("sbc_registrations{realm=external} %v, want 0", n)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registers.WithLabelValues(regUnregistered)); n != 2 {
		t.Errorf("sbc_registers_total{result=unregistered} %v, want 2", n)
	}
	call2, err := pbx.Dial(e.ctx, reg.Addr("udp").String(), sipua.DialOptions{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if final, err := call2.WaitFinal(e.ctx); err != nil || final.StatusCode != 404 {
		t.Fatalf("a call to the unregistered AoR: %v %v, want 404 from Kamailio", final, err)
	}
}
