package sbc

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// Connection flows of registered devices and server.tcp_idle_timeout: a
// device registered over TCP, TLS or WSS can be called only over the
// connection it opened, so the SBC must not close that connection for
// being idle while the registration lives. Phones refresh a 3600 s
// registration after ~50 minutes and many send no CRLF keep-alives in
// between; the idle timeout (default 10 minutes) used to close their
// connection, and calls to them got 480 until the next refresh.

// idleClosed opens n connections from the carrier in turn and waits
// until the SBC closed each for being idle: when it returns, every
// connection that was idle since before the call has been through at
// least n idle timeouts.
func idleClosed(t *testing.T, addr netip.AddrPort, n int) {
	t.Helper()
	for range n {
		c := dialFrom(t, callerIP, addr.String())
		if !closedByServer(c, 30*time.Second) {
			t.Fatal("an idle connection without a registration was kept: the idle timeout is not in force")
		}
		c.Close()
	}
}

// TestRegisteredTCPFlowOutlivesIdleTimeout: with tcp_idle_timeout 1 s,
// a phone registered over TCP (600 s) sends nothing more; after two
// unregistered connections opened later were closed for idleness, a call
// from the PBX still reaches the phone over its connection. Once the
// phone unregisters, its connection is closed by the next idle timeout.
func TestRegisteredTCPFlowOutlivesIdleTimeout(t *testing.T) {
	e, _, pbx := regPBXEnvWith(t, "", func(p *testpolicy.Policy) { p.Server.TCPIdleTimeout = policy.D(time.Second) })
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")
	intUDP, _ := e.sbc.ListenAddr("internal", "udp")
	phone := newUserPhone(t, phoneTCPIP, true, sipua.Plan{})
	if code := e.registerPhone(phone, "TCP", "alice", 600); code != 200 {
		t.Fatalf("REGISTER: %d", code)
	}
	bs := e.sbc.regs.ofAoR("alice@example.test")
	if len(bs) != 1 || bs[0].transport != "tcp" {
		t.Fatalf("bindings %+v, want one over tcp", bs)
	}
	b := bs[0]
	ep := e.sbc.realms["external"]

	idleClosed(t, extTCP, 2)
	if !ep.connUp("tcp", b.src) {
		t.Fatal("the registered phone's connection was closed for idleness")
	}
	call, err := pbx.Dial(e.ctx, intUDP.String(), sipua.DialOptions{User: b.token})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("call to the idle phone: %v %v, want 200", res, err)
	}
	ci, err := phone.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if ci.Transport != "TCP" || ci.Source != extTCP.String() {
		t.Errorf("the INVITE came from %s over %s, want over the phone's connection to %s", ci.Source, ci.Transport, extTCP)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}

	if code := e.registerPhone(phone, "TCP", "alice", 0); code != 200 {
		t.Fatalf("unREGISTER: %d", code)
	}
	e.eventually("the unregistered phone's connection closed", func() bool { return !ep.connUp("tcp", b.src) })
}

// TestRegisteredWSSFlowOutlivesIdleTimeout: the same for a WebSocket
// client, whose connection sipgo's reader times out (one idle timeout
// per message): registered, it is kept while idle and called over it
// (it answers 486, which the PBX gets); unregistered, it is closed.
func TestRegisteredWSSFlowOutlivesIdleTimeout(t *testing.T) {
	reg := newDigestRegistrar(t, "example.test", nil)
	reg.mu.Lock()
	reg.open = true
	reg.mu.Unlock()
	pbx, err := sipua.NewCaller(sipua.CallerOptions{Addr: backendIP + ":0", Logger: testLogger(), UserAgent: "PBX/1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbx.Close() })
	e := newWSSEnvWith(t, func(p *testpolicy.Policy) {
		p.Server.TCPIdleTimeout = policy.D(time.Second)
		no := &testpolicy.Health{Interval: policy.D(0)}
		p.Pools = append(p.Pools,
			testpolicy.Pool{Name: "reg", Realm: "internal", Targets: testpolicy.Targets(reg.addr), Health: no},
			testpolicy.Pool{Name: "callers", Realm: "internal", Targets: testpolicy.Targets(pbx.Addr()), Health: no})
		p.Routes = append(p.Routes, testpolicy.Route{Trunk: "carrier", Prefix: "alice", Pool: "reg"})
	})
	c, _, err := e.dial(wssOrigin, "/sip")
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	cseq := 0
	register := func(expires int) {
		t.Helper()
		cseq++
		r := c.request("REGISTER", "sip:example.test", "reg-"+c.host, newID(), cseq, "Expires: "+strconv.Itoa(expires)+"\r\n", "")
		r = strings.Replace(r, "To: <sip:example.test>", "To: <sip:alice@example.test>", 1)
		if err := c.send(r); err != nil {
			t.Fatal(err)
		}
		if res, err := c.readUntil("SIP/2.0 "); err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
			t.Fatalf("REGISTER (expires %d): %q %v", expires, res, err)
		}
	}
	register(600)
	bs := e.sbc.regs.ofAoR("alice@example.test")
	if len(bs) != 1 || bs[0].transport != "wss" {
		t.Fatalf("bindings %+v, want one over wss", bs)
	}
	b := bs[0]
	ep := e.sbc.realms["external"]
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")
	idleClosed(t, extTCP, 2)
	if !ep.connUp("wss", b.src) {
		t.Fatal("the registered client's WebSocket was closed for idleness")
	}

	intUDP, _ := e.sbc.ListenAddr("internal", "udp")
	call, err := pbx.Dial(e.ctx, intUDP.String(), sipua.DialOptions{User: b.token})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := c.readUntil("INVITE ")
	if err != nil {
		t.Fatalf("the INVITE did not reach the idle client: %v", err)
	}
	busy := "SIP/2.0 486 Busy Here\r\n"
	for _, h := range []string{"Via", "From", "Call-ID", "CSeq"} {
		busy += h + ": " + headerOf(inv, h) + "\r\n"
	}
	busy += "To: " + headerOf(inv, "To") + ";tag=" + newID() + "\r\nContent-Length: 0\r\n\r\n"
	if err := c.send(busy); err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 486 {
		t.Fatalf("the call to the client: %v %v, want its 486", res, err)
	}

	register(0)
	if n := e.sbc.regs.len(); n != 0 {
		t.Fatalf("%d bindings after the unregistration", n)
	}
	if !closedByServer(c.conn, 30*time.Second) {
		t.Fatal("the unregistered client's idle WebSocket was kept")
	}
}

// TestHoldsFlow: a connection flow is held by a binding over it that has
// not expired; UDP bindings hold nothing; removing the binding (or
// replacing it by one over another flow) releases the flow.
func TestHoldsFlow(t *testing.T) {
	rc := newRegCache(nil)
	now := time.Now()
	src := netip.MustParseAddrPort("192.0.2.7:40000")
	other := netip.MustParseAddrPort("192.0.2.7:40001")
	rc.put(&binding{token: "rbone", aor: "a@x", realm: "external", transport: "tcp", src: src, expires: now.Add(time.Minute)})
	rc.put(&binding{token: "rbudp", aor: "a@x", realm: "external", transport: "udp", src: other, expires: now.Add(time.Minute)})
	for _, c := range []struct {
		realm, tr string
		src       netip.AddrPort
		at        time.Time
		want      bool
	}{
		{"external", "tcp", src, now, true},
		{"external", "tcp", src, now.Add(time.Minute), false}, // expired, not yet swept
		{"external", "tls", src, now, false},
		{"internal", "tcp", src, now, false},
		{"external", "tcp", other, now, false},
		{"external", "udp", other, now, false},
	} {
		if got := rc.holdsFlow(c.realm, c.tr, c.src, c.at); got != c.want {
			t.Errorf("holdsFlow(%s %s %s at +%v) = %v, want %v", c.realm, c.tr, c.src, c.at.Sub(now), got, c.want)
		}
	}
	// The same device reconnected: its binding moves to the new flow.
	rc.put(&binding{token: "rbone", aor: "a@x", realm: "external", transport: "tcp", src: other, expires: now.Add(time.Minute)})
	if rc.holdsFlow("external", "tcp", src, now) || !rc.holdsFlow("external", "tcp", other, now) {
		t.Error("a binding replaced on another flow: the old flow still held, or the new one not")
	}
	rc.remove("rbone")
	if rc.holdsFlow("external", "tcp", other, now) || len(rc.byFlow) != 0 {
		t.Errorf("removed binding still holds its flow (%d flows indexed)", len(rc.byFlow))
	}
}

// TestOutboundNotClaimed pins a decision (README, remote users): a
// REGISTER with Supported: outbound, +sip.instance and reg-id (RFC 5626)
// gets a 200 that echoes them on the device's Contact but carries neither
// Require: outbound nor Flow-Timer. The SBC does not answer STUN
// keep-alives on its SIP UDP ports, which a UDP device that was told
// Require: outbound would send; on connections it answers CRLF pings
// whenever a device sends them and keeps the flow open for the binding's
// life without them (TestRegisteredTCPFlowOutlivesIdleTimeout).
func TestOutboundNotClaimed(t *testing.T) {
	e, reg, _ := regPBXEnv(t, "")
	reg.mu.Lock()
	reg.open = true
	reg.mu.Unlock()
	phone := newUserPhone(t, phoneTCPIP, true, sipua.Plan{})
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")
	const instance = "urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6"
	res, err := phone.Register(e.ctx, sipua.RegisterOptions{Registrar: extTCP.String(), Transport: "TCP", User: "alice",
		Domain: "example.test", Expires: 600, Instance: instance})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("REGISTER: %v %v", res, err)
	}
	ct := res.GetHeader("Contact")
	if ct == nil || !strings.Contains(ct.Value(), "reg-id=1") || !strings.Contains(ct.Value(), instance) {
		t.Errorf("200 Contact %v, want the device's with its +sip.instance and reg-id", ct)
	}
	for _, h := range res.GetHeaders("Require") {
		if strings.Contains(strings.ToLower(h.Value()), "outbound") {
			t.Errorf("the 200 claims outbound: Require: %s", h.Value())
		}
	}
	if h := res.GetHeader("Flow-Timer"); h != nil {
		t.Errorf("the 200 carries Flow-Timer: %s", h.Value())
	}
	if bs := e.sbc.regs.ofAoR("alice@example.test"); len(bs) != 1 || bs[0].regID != "1" {
		t.Errorf("bindings %+v, want one with reg-id 1", bs)
	}
}
