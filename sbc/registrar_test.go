package sbc

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// regPBXEnv is an SBC with the registrar (a digest registrar of the test,
// pool "reg", the users' route) and a PBX that calls the users (a caller
// on a target of pool "pbx"), both on the internal realm. policyTOML is
// appended to the policy ([registrations]).
func regPBXEnv(t *testing.T, policyTOML string) (*env, *digestRegistrar, *sipua.Caller) {
	t.Helper()
	return regPBXEnvWith(t, policyTOML, nil)
}

// regPBXEnvWith is regPBXEnv with the policy changed by edit last.
func regPBXEnvWith(t *testing.T, policyTOML string, edit func(*testpolicy.Policy)) (*env, *digestRegistrar, *sipua.Caller) {
	t.Helper()
	reg := newDigestRegistrar(t, "example.test", map[string]string{"alice": "pw-alice", "bob": "pw-bob"})
	pbx, err := sipua.NewCaller(sipua.CallerOptions{Addr: backendIP + ":0", Logger: testLogger(), UserAgent: "PBX/1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbx.Close() })
	e := newEnv(t, envOpts{
		targets: []string{pbx.Addr()},
		limits:  &testpolicy.Limits{RegisterRate: new(1000)},
		policy:  policyTOML,
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{phoneUDPIP + "/32", phoneTCPIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{"example.test"},
			})
			p.Pools = append(p.Pools, testpolicy.Pool{Name: "reg", Realm: "internal", Targets: testpolicy.Targets(reg.addr),
				Health: &testpolicy.Health{Interval: policy.D(0)}})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "reg"})
			if edit != nil {
				edit(p)
			}
		},
	})
	return e, reg, pbx
}

func (e *env) registerPhone(ph *sipua.Backend, tr, user string, expires int) int {
	e.t.Helper()
	to, _ := e.sbc.ListenAddr("external", strings.ToLower(tr))
	res, err := ph.Register(e.ctx, sipua.RegisterOptions{Registrar: to.String(), Transport: tr, User: user, Domain: "example.test",
		Expires: expires, Username: user, Password: "pw-" + user})
	if err != nil {
		e.t.Fatalf("REGISTER: %v", err)
	}
	return res.StatusCode
}

// TestCallToRegisteredUser: the PBX calls a registered phone by its
// binding's token through the SBC (no registrar in the way): the call
// reaches the phone over its TCP connection and is answered. A token the
// SBC does not hold gets 404 (user_unknown); once the phone's connection
// is closed its binding is unreachable: 480 (user_unreachable). Each is
// counted as a drop with its reason and in sbc_user_calls_total.
func TestCallToRegisteredUser(t *testing.T) {
	e, _, pbx := regPBXEnv(t, "")
	intUDP, _ := e.sbc.ListenAddr("internal", "udp")
	phone := newUserPhone(t, phoneTCPIP, true, sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}})
	if code := e.registerPhone(phone, "TCP", "alice", 600); code != 200 {
		t.Fatalf("REGISTER: %d", code)
	}
	bs := e.sbc.regs.ofAoR("alice@example.test")
	if len(bs) != 1 {
		t.Fatalf("bindings %+v, want 1", bs)
	}
	b := bs[0]
	if b.transport != "tcp" || b.src.Addr().String() != phoneTCPIP || time.Until(b.expires) > 600*time.Second || time.Until(b.expires) < 590*time.Second {
		t.Fatalf("binding %+v: want tcp from %s expiring in 600 s (the registrar echoes the Expires asked)", b, phoneTCPIP)
	}

	call, err := pbx.Dial(e.ctx, intUDP.String(), sipua.DialOptions{User: b.token})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("call to the binding: %v %v", res, err)
	}
	ci, err := phone.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.Acked })
	if err != nil {
		t.Fatal(err)
	}
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")
	if ci.Transport != "TCP" || ci.Source != extTCP.String() {
		t.Errorf("the INVITE reached the phone from %s over %s, want over its connection to %s", ci.Source, ci.Transport, extTCP)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}

	unknown := tokenPrefix + strings.Repeat("a", tokenLen-len(tokenPrefix))
	call, err = pbx.Dial(e.ctx, intUDP.String(), sipua.DialOptions{User: unknown})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 404 {
		t.Fatalf("call to an unknown token: %v %v, want 404", res, err)
	}

	phone.Close() // its connection closes
	ep := e.sbc.realms["external"]
	e.eventually("the phone's connection closed at the SBC", func() bool { return !ep.connUp("tcp", b.src) })
	call, err = pbx.Dial(e.ctx, intUDP.String(), sipua.DialOptions{User: b.token})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 480 {
		t.Fatalf("call to a binding whose connection closed: %v %v, want 480", res, err)
	}
	for _, c := range []struct {
		r    reason
		want float64
	}{{reasonUserUnknown, 1}, {reasonUserUnreachable, 1}} {
		if n := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageRoute), string(c.r))); n != c.want {
			t.Errorf("sbc_dropped_total{stage=route,reason=%s} %v, want %v", c.r, n, c.want)
		}
	}
	e.eventually("calls to users counted", func() bool {
		m := e.sbc.metrics.UserCalls
		return testutil.ToFloat64(m.WithLabelValues(resultAnswered)) == 1 && testutil.ToFloat64(m.WithLabelValues(userCallNotFound)) == 1 &&
			testutil.ToFloat64(m.WithLabelValues(userCallUnreachable)) == 1
	})
}

// TestUnreachableWhy: a binding past its expiry (not yet swept) or whose
// connection is closed cannot be called; a live UDP binding needs no
// connection.
func TestUnreachableWhy(t *testing.T) {
	now := time.Now()
	src := netip.MustParseAddrPort("192.0.2.9:5060")
	connUp := func(open bool) func(string, netip.AddrPort) bool {
		return func(tr string, a netip.AddrPort) bool { return open && a == src }
	}
	cases := []struct {
		name string
		b    binding
		up   func(string, netip.AddrPort) bool
		want string
	}{
		{"udp live", binding{transport: "udp", src: src, expires: now.Add(time.Minute)}, connUp(false), ""},
		{"udp expired", binding{transport: "udp", src: src, expires: now}, connUp(false), "expired"},
		{"tcp open", binding{transport: "tcp", src: src, expires: now.Add(time.Minute)}, connUp(true), ""},
		{"tcp closed", binding{transport: "tcp", src: src, expires: now.Add(time.Minute)}, connUp(false), "connection closed"},
		{"wss marked", binding{transport: "wss", src: src, expires: now.Add(time.Minute), unreachable: true}, connUp(true), "connection closed"},
		{"realm gone", binding{transport: "udp", src: src, expires: now.Add(time.Minute)}, nil, "realm gone"},
	}
	for _, c := range cases {
		if got := unreachableWhy(c.b, now, c.up); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestRegistrationBounds: past registrations.max_bindings a new device
// gets 503 with Retry-After (registrations_full) and the registrar never
// sees it; a refresh of a device already bound still works; a REGISTER
// with more Contacts than max_bindings_per_aor is a 400.
func TestRegistrationBounds(t *testing.T) {
	e, reg, _ := regPBXEnv(t, "[registrations]\nmax_bindings = 1\nmax_bindings_per_aor = 2\n")
	first := newUserPhone(t, phoneUDPIP, false, sipua.Plan{})
	second := newUserPhone(t, phoneTCPIP, false, sipua.Plan{})
	if code := e.registerPhone(first, "UDP", "alice", 300); code != 200 {
		t.Fatalf("first REGISTER: %d", code)
	}
	_, okBefore := reg.counts()
	if code := e.registerPhone(second, "UDP", "bob", 300); code != 503 {
		t.Fatalf("a binding past max_bindings: %d, want 503", code)
	}
	if _, ok := reg.counts(); ok["bob"] != okBefore["bob"] {
		t.Fatal("the registrar saw the REGISTER refused for a full cache")
	}
	if code := e.registerPhone(first, "UDP", "alice", 300); code != 200 {
		t.Fatalf("a refresh at the bound: %d, want 200", code)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageAdmit), string(reasonRegistrationsFull))); n != 1 {
		t.Errorf("registrations_full counted %v, want 1", n)
	}

	ext, _ := e.sbc.ListenAddr("external", "udp")
	c := e.newCaller(phoneTCPIP + ":0")
	raw := "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP " + c.Addr() + ";branch=z9hG4bK-many;rport\r\n" +
		"From: <sip:alice@example.test>;tag=m1\r\nTo: <sip:alice@example.test>\r\nCall-ID: many-1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n" +
		"Contact: <sip:a@" + c.Addr() + ">, <sip:b@" + c.Addr() + ">, <sip:c@" + c.Addr() + ">\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := c.Send(ctx, []byte(raw), ext.String()); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitFor(ctx, func(m sipua.Msg) bool { return m.Status != 0 && strings.Contains(m.CallID(), "many-1") })
	if err != nil || m.Status != 400 {
		t.Fatalf("three Contacts past max_bindings_per_aor 2: %+v %v, want 400", m, err)
	}
}

// TestKeepaliveOptions: with registrations.keepalive_interval, a phone
// registered over UDP gets OPTIONS from the SBC at its source address.
func TestKeepaliveOptions(t *testing.T) {
	e, _, _ := regPBXEnv(t, "[registrations]\nkeepalive_interval = \"1s\"\n")
	phone := newUserPhone(t, phoneUDPIP, false, sipua.Plan{})
	if code := e.registerPhone(phone, "UDP", "alice", 300); code != 200 {
		t.Fatalf("REGISTER: %d", code)
	}
	ext, _ := e.sbc.ListenAddr("external", "udp")
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	m, err := phone.WaitFor(ctx, func(m sipua.Msg) bool { return m.Method == "OPTIONS" })
	if err != nil {
		t.Fatalf("no keep-alive OPTIONS: %v", err)
	}
	if m.Source != ext.String() || !strings.HasPrefix(m.StartLine, "OPTIONS sip:alice@"+phone.Addr()) {
		t.Errorf("keep-alive %q from %s, want to the phone's Contact from %s", m.StartLine, m.Source, ext)
	}
}

// TestClientExpiresMax: with client_expires_max 30 s the phone is granted
// 30 s although the registrar grants 600; its refresh from the same flow
// and Call-ID is answered by the SBC (the registrar sees nothing), while
// an unregistration and the refresh of a binding that would not outlive
// the device's next one (the registrar grants 40 s) go to the registrar.
func TestClientExpiresMax(t *testing.T) {
	e, reg, _ := regPBXEnv(t, "[registrations]\nclient_expires_max = \"30s\"\n")
	phone := newUserPhone(t, phoneUDPIP, false, sipua.Plan{})
	ext, _ := e.sbc.ListenAddr("external", "udp")
	register := func(expires int) (int, string) {
		t.Helper()
		res, err := phone.Register(e.ctx, sipua.RegisterOptions{Registrar: ext.String(), User: "alice", Domain: "example.test",
			Expires: expires, Username: "alice", Password: "pw-alice"})
		if err != nil {
			t.Fatal(err)
		}
		ct := ""
		if h := res.GetHeader("Contact"); h != nil {
			ct = h.Value()
		}
		return res.StatusCode, ct
	}
	registered := func() int { _, ok := reg.counts(); return ok["alice"] }
	if code, ct := register(600); code != 200 || !strings.Contains(ct, "expires=30") {
		t.Fatalf("REGISTER 600 s: %d %q, want 200 with expires=30", code, ct)
	}
	if n := registered(); n != 1 {
		t.Fatalf("the registrar bound %d times, want 1", n)
	}
	if code, ct := register(600); code != 200 || !strings.Contains(ct, "expires=30") {
		t.Fatalf("refresh: %d %q, want 200 with expires=30", code, ct)
	}
	if n := registered(); n != 1 {
		t.Fatalf("the refresh reached the registrar (%d bindings made), want it answered by the SBC", n)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registers.WithLabelValues(regLocal)); n != 1 {
		t.Errorf("sbc_registers_total{result=local} %v, want 1", n)
	}
	if code, _ := register(0); code != 200 || registered() != 2 || e.sbc.regs.len() != 0 {
		t.Fatalf("unregistration: %d, registrar %d, cache %d; want it relayed and the binding gone", code, registered(), e.sbc.regs.len())
	}
	if code, _ := register(40); code != 200 || registered() != 3 {
		t.Fatalf("REGISTER 40 s: %d, registrar bindings %d; want it relayed", code, registered())
	}
	if code, _ := register(40); code != 200 || registered() != 4 {
		t.Fatalf("refresh of a 40 s binding: %d, registrar bindings %d; want it relayed (40 s < 30 s + 32 s)", code, registered())
	}
}

// TestRegisterBusy: REGISTERs waiting for a registrar are bounded by
// registrations.max_pending: with one waiting for a registrar that never
// answers, the next is answered 503 with Retry-After at once
// (register_busy), without reaching the registrar.
func TestRegisterBusy(t *testing.T) {
	silent, err := net.ListenPacket("udp", backendIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := silent.ReadFrom(buf)
			if err != nil {
				return
			}
			if m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil {
				if req, ok := m.(*sip.Request); ok && req.Method == sip.REGISTER {
					got <- req.To().Address.User
				}
			}
		}
	}()
	e := newEnv(t, envOpts{
		targets: []string{silent.LocalAddr().String()},
		limits:  &testpolicy.Limits{RegisterRate: new(1000)},
		policy:  "[registrations]\nmax_pending = 1\n",
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{phoneUDPIP + "/32", phoneTCPIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{"example.test"},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "pbx"})
		},
	})
	ext, _ := e.sbc.ListenAddr("external", "udp")
	first := newUserPhone(t, phoneUDPIP, false, sipua.Plan{})
	second := newUserPhone(t, phoneTCPIP, false, sipua.Plan{})
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	go func() {
		_, _ = first.Register(ctx, sipua.RegisterOptions{Registrar: ext.String(), User: "alice", Domain: "example.test", Expires: 60})
	}()
	select {
	case u := <-got:
		if u != "alice" {
			t.Fatalf("the registrar got %s", u)
		}
	case <-e.ctx.Done():
		t.Fatal("the first REGISTER never reached the registrar")
	}
	res, err := second.Register(e.ctx, sipua.RegisterOptions{Registrar: ext.String(), User: "bob", Domain: "example.test", Expires: 60})
	if err != nil || res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("a second REGISTER while one waits: %v %v, want 503 with Retry-After", res, err)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageAdmit), string(reasonRegisterBusy))); n != 1 {
		t.Errorf("register_busy counted %v, want 1", n)
	}
	for {
		select {
		case u := <-got:
			if u == "bob" {
				t.Fatal("the refused REGISTER reached the registrar")
			}
			continue
		default:
		}
		break
	}
}
