package sbc

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/baresip"
	"github.com/sbc-project/sbc/internal/kamailio"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// Tests of remote users with real SIP clients: baresip phones (and, in
// browser_test.go, JsSIP in Chromium) registering through the SBC with
// Kamailio as the registrar, and called from the PBX side through it.

// baresipTCPSource is where a baresip's TCP and TLS connections come
// from: libre 1.0.0 does not bind its outgoing connections to its
// sip_listen address, so the kernel picks 127.0.0.1 on loopback.
const baresipTCPSource = "127.0.0.1"

// regWait bounds the waits for a registration to appear or go.
const regWait = 20 * time.Second

// waitContacts waits until Kamailio holds n contacts of aor and returns
// them.
func waitContacts(t *testing.T, reg *kamailio.Kamailio, aor string, n int) []kamailio.Contact {
	t.Helper()
	deadline := time.Now().Add(regWait)
	for {
		cs, err := reg.Contacts(aor)
		if err == nil && len(cs) == n {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("Kamailio holds %+v (%v) for %s, want %d contacts\n%s", cs, err, aor, n, reg.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkTokenContacts checks that Kamailio's contacts are the SBC's (a
// token on the internal face, held in the SBC's cache), pairwise
// distinct, naming none of the phones' addresses; it returns the SBC's
// bindings of them.
func checkTokenContacts(t *testing.T, e *env, cs []kamailio.Contact, maxExpires int, phones ...string) []binding {
	t.Helper()
	intUDP, _ := e.sbc.ListenAddr("internal", "udp")
	var bs []binding
	seen := map[string]bool{}
	for _, c := range cs {
		var u sip.Uri
		if err := sip.ParseUri(c.Address, &u); err != nil {
			t.Fatalf("contact %q: %v", c.Address, err)
		}
		if !isToken(u.User) || u.Host != intUDP.Addr().String() || u.Port != int(intUDP.Port()) || c.Expires > maxExpires {
			t.Errorf("Kamailio's contact %+v: want sip:<token>@%s, expiring within %d s", c, intUDP, maxExpires)
		}
		for _, ip := range phones {
			if strings.Contains(c.Address, ip) {
				t.Errorf("Kamailio learnt a phone's address (%s): %s", ip, c.Address)
			}
		}
		if seen[u.User] {
			t.Errorf("one contact for two devices: %s", c.Address)
		}
		seen[u.User] = true
		// The SBC applies the registrar's 200 after the registrar
		// stored the contact: wait for it (bounded).
		b, ok := e.sbc.regs.get(u.User)
		for deadline := time.Now().Add(regWait); !ok && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			b, ok = e.sbc.regs.get(u.User)
		}
		if !ok {
			t.Errorf("the SBC does not hold the binding %s", u.User)
			continue
		}
		bs = append(bs, b)
	}
	return bs
}

// sipMessages returns the messages of a baresip's trace whose start line
// begins with prefix (e.g. "INVITE ", "SIP/2.0 200") and, when cseq is
// set, whose CSeq method is cseq.
func sipMessages(msgs []baresip.Message, prefix, cseq string) []baresip.Message {
	var out []baresip.Message
	for _, m := range msgs {
		if !strings.HasPrefix(m.StartLine(), prefix) {
			continue
		}
		if cseq != "" && !regexp.MustCompile(`(?mi)^CSeq:\s*\d+\s+`+cseq+`\s*$`).MatchString(m.Text) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// waitTrace waits until f holds for what the baresip traced.
func waitTrace(t *testing.T, ua *baresip.UA, what string, timeout time.Duration, f func([]baresip.Message) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f(ua.SIPTrace()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var contactExpires = regexp.MustCompile(`(?mi)^(?:Contact|m):.*;expires=(\d+)`)

// TestRegisteredBaresipsKamailio is the must-show of issue 13 with real
// clients: Debian's Kamailio (usrloc, digest auth with a test subscriber,
// max_expires 30) is the registrar behind the SBC; two baresip phones
// register the same AoR through the SBC, one over UDP from 127.0.0.5, one
// over TCP (from 127.0.0.1: see baresipTCPSource), each asking 3600 s.
//   - Each phone's 200 lists its own Contact with expires=30 (Kamailio's
//     max_expires), and baresip acts on it: it refreshes within the 30 s,
//     and the refresh keeps its binding (same token, Kamailio still holds
//     two contacts).
//   - Kamailio holds two contacts, both the SBC's (a token each on the
//     internal face), no phone address.
//   - A call from the PBX side (an INVITE to Kamailio, which forks to both
//     contacts) reaches both phones through the SBC, the TCP one over the
//     connection it opened; both ring, the UDP phone answers (told to
//     once both ring), the TCP one gets CANCEL; neither INVITE names an
//     internal address. The PBX's BYE reaches the phone that answered.
//   - Quitting baresip unregisters (expires 0): Kamailio's location and
//     the SBC's cache are empty, sbc_registrations is 0.
func TestRegisteredBaresipsKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Kamailio and two baresips for about a minute")
	}
	if err := kamailio.Available(); err != nil {
		t.Skip(err) // kamailio.Start fails it in CI
	}
	const domain, password, maxExpires = "example.test", "Al1ce-s3cret", 30
	pki := newTestPKI(t)
	reg := kamailio.Start(t, kamailio.Options{
		UDP:      netip.MustParseAddrPort(backendIP + ":0"),
		CertFile: pki.file("backend"), KeyFile: pki.key("backend"),
		Auth: map[string]string{"alice": password}, Realm: domain, MaxExpires: maxExpires,
	})
	e := newEnv(t, envOpts{
		targets: []string{reg.Addr("udp").String()},
		limits:  &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			// The TCP phone connects from 127.0.0.1, the carrier's address
			// in the other tests: no carrier here.
			p.Trunk("carrier").Sources = []string{strangerIP + "/32"}
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{phoneUDPIP + "/32", baresipTCPSource + "/32"},
				AllowRegister: true, RegisterDomains: []string{domain},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "pbx"})
		},
	})
	// Longer than newEnv's minute: baresip's refresh comes after 27 s.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.ctx = ctx
	extUDP, _ := e.sbc.ListenAddr("external", "udp")
	extTCP, _ := e.sbc.ListenAddr("external", "tcp")

	// The UDP phone answers when told to (its console): only once both
	// phones ring. Auto-answer raced the fork: its 200 came back within
	// milliseconds, and Kamailio's CANCEL of the other branch could reach
	// the SBC before its INVITE to the TCP phone went out, which the SBC
	// then rightly never sent.
	answers := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(phoneUDPIP), User: "alice", Quit: 5 * time.Minute,
		Registrar: extUDP, Domain: domain, Transport: "udp", Password: password, Expires: 3600, AnswerMode: "manual", Console: true})
	rings := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(phoneTCPIP), User: "alice", Quit: 5 * time.Minute,
		Registrar: extTCP, Domain: domain, Transport: "tcp", Password: password, Expires: 3600, AnswerMode: "manual"})
	phones := []struct {
		name string
		ua   *baresip.UA
		tr   string
	}{{"UDP phone", answers, "udp"}, {"TCP phone", rings, "tcp"}}

	cs := waitContacts(t, reg, "alice", 2)
	bs := checkTokenContacts(t, e, cs, maxExpires, phoneUDPIP, phoneTCPIP, baresipTCPSource)
	trs := map[string]binding{}
	for _, b := range bs {
		trs[b.transport] = b
	}
	if trs["udp"].src.Addr().String() != phoneUDPIP || trs["tcp"].src.Addr().String() != baresipTCPSource {
		t.Errorf("the SBC's bindings %+v, want one over UDP from %s and one over TCP from %s", bs, phoneUDPIP, baresipTCPSource)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registrations.WithLabelValues("external")); n != 2 {
		t.Errorf("sbc_registrations{realm=external} %v, want 2", n)
	}
	// What each phone was told: its own Contact, granted 30 s.
	for _, ph := range phones {
		waitTrace(t, ph.ua, ph.name+" registered", regWait, func(m []baresip.Message) bool {
			return len(sipMessages(m, "SIP/2.0 200", "REGISTER")) > 0
		})
		ok := sipMessages(ph.ua.SIPTrace(), "SIP/2.0 200", "REGISTER")[0]
		m := contactExpires.FindAllStringSubmatch(ok.Text, -1)
		if len(m) != 1 || m[0][1] != fmt.Sprint(maxExpires) || !strings.Contains(ok.Text, "@"+ph.ua.SIPAddr().Addr().String()) {
			t.Errorf("%s: the 200 to its REGISTER, want its own Contact only with expires=%d:\n%s", ph.name, maxExpires, ok.Text)
		}
		if strings.Contains(ok.Text, sbcIntIP) || strings.Contains(ok.Text, backendIP) {
			t.Errorf("%s: the 200 names an internal address:\n%s", ph.name, ok.Text)
		}
	}

	// A call from the PBX side: Kamailio forks to both contacts.
	pbx := e.newCaller(pbxPhoneIP + ":0")
	call, err := pbx.Dial(ctx, reg.Addr("udp").String(), sipua.DialOptions{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range phones {
		waitTrace(t, ph.ua, ph.name+" rings", regWait, func(m []baresip.Message) bool {
			return len(sipMessages(m, "SIP/2.0 180", "INVITE")) > 0
		})
	}
	if err := answers.Command("accept"); err != nil {
		t.Fatal(err)
	}
	final, err := call.WaitFinal(ctx)
	if err != nil || final.StatusCode != 200 {
		t.Fatalf("the call to alice: %v %v\n%s", final, err, reg.Log())
	}
	waitTrace(t, rings, "the TCP phone got CANCEL", regWait, func(m []baresip.Message) bool {
		return len(sipMessages(m, "CANCEL ", "")) > 0
	})
	for _, ph := range phones {
		invs := sipMessages(ph.ua.SIPTrace(), "INVITE ", "")
		if len(invs) != 1 {
			t.Fatalf("%s received %d INVITEs, want 1", ph.name, len(invs))
		}
		inv := invs[0]
		if !strings.EqualFold(inv.Transport, ph.tr) {
			t.Errorf("%s: INVITE over %s, want %s", ph.name, inv.Transport, ph.tr)
		}
		want := extUDP
		if ph.tr == "tcp" {
			want = extTCP
		}
		if inv.Src != want {
			t.Errorf("%s: INVITE from %s, want the SBC's %s", ph.name, inv.Src, want)
		}
		if !strings.HasPrefix(inv.StartLine(), "INVITE sip:alice") || !strings.Contains(inv.StartLine(), "@"+ph.ua.SIPAddr().Addr().String()) {
			t.Errorf("%s: INVITE request line %q, want its own Contact", ph.name, inv.StartLine())
		}
		for _, ip := range []string{sbcIntIP, backendIP} {
			if strings.Contains(inv.Text, ip) {
				t.Errorf("%s: the INVITE names the internal address %s:\n%s", ph.name, ip, inv.Text)
			}
		}
	}
	if n := len(sipMessages(answers.SIPTrace(), "SIP/2.0 200", "INVITE")); n == 0 {
		t.Error("the UDP phone did not answer")
	}
	if n := len(sipMessages(rings.SIPTrace(), "SIP/2.0 180", "INVITE")); n == 0 {
		t.Error("the TCP phone did not ring")
	}
	if n := len(sipMessages(rings.SIPTrace(), "SIP/2.0 487", "INVITE")); n == 0 {
		t.Error("the TCP phone's INVITE did not end with 487 after the CANCEL")
	}
	if err := call.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	waitTrace(t, answers, "the BYE reached the UDP phone", regWait, func(m []baresip.Message) bool {
		return len(sipMessages(m, "BYE ", "")) > 0
	})
	e.eventually("two calls to users counted", func() bool {
		return testutil.ToFloat64(e.sbc.metrics.UserCalls.WithLabelValues(resultAnswered)) == 1 &&
			testutil.ToFloat64(e.sbc.metrics.UserCalls.WithLabelValues(resultCancelled)) == 1
	})

	// baresip refreshes at 90 % of the 30 s granted (it asked 3600):
	// a second REGISTER answered 200, within the binding's life.
	for _, ph := range phones {
		waitTrace(t, ph.ua, ph.name+" refreshed", 2*maxExpires*time.Second, func(m []baresip.Message) bool {
			return len(sipMessages(m, "SIP/2.0 200", "REGISTER")) >= 2
		})
	}
	cs2 := waitContacts(t, reg, "alice", 2)
	for _, b := range checkTokenContacts(t, e, cs2, maxExpires, phoneUDPIP, phoneTCPIP, baresipTCPSource) {
		if trs[b.transport].token != b.token {
			t.Errorf("the %s phone's refresh changed its binding: %s, was %s", b.transport, b.token, trs[b.transport].token)
		}
	}

	// Quitting unregisters.
	for _, ph := range phones {
		ph.ua.Stop()
		if n := len(sipMessages(ph.ua.SIPTrace(), "SIP/2.0 200", "REGISTER")); n < 3 {
			t.Errorf("%s: %d REGISTERs answered 200, want its unregistration's too", ph.name, n)
		}
	}
	waitContacts(t, reg, "alice", 0)
	e.eventually("the SBC's cache empty", func() bool { return e.sbc.regs.len() == 0 })
	if n := testutil.ToFloat64(e.sbc.metrics.Registrations.WithLabelValues("external")); n != 0 {
		t.Errorf("sbc_registrations{realm=external} %v, want 0", n)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.Registers.WithLabelValues(regUnregistered)); n != 2 {
		t.Errorf("sbc_registers_total{result=unregistered} %v, want 2", n)
	}
}

// TestRegisteredBaresipOverTLS: calls to a user registered over TLS. A
// baresip phone registers through the SBC's TLS listener with Kamailio
// behind (sip_cafile is the test CA, but baresip 1.0.0 registers with a
// wrong CA file too: it does not verify the SBC's certificate, so this
// shows the TLS transport, not server authentication); two calls from the PBX side reach it over the TLS connection it
// opened and are answered. The caller hangs up the first (its BYE
// reaches the phone); the phone hangs up the second (quitting baresip
// sends BYE over TLS, which reaches the caller, then unregisters: the SBC's
// cache and Kamailio are empty). Nothing the phone received names an
// internal address.
func TestRegisteredBaresipOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Kamailio and baresip")
	}
	if err := kamailio.Available(); err != nil {
		t.Skip(err) // kamailio.Start fails it in CI
	}
	const domain, password = "example.test", "Al1ce-s3cret"
	pki := newTestPKI(t)
	reg := kamailio.Start(t, kamailio.Options{
		UDP:      netip.MustParseAddrPort(backendIP + ":0"),
		CertFile: pki.file("backend"), KeyFile: pki.key("backend"),
		Auth: map[string]string{"alice": password}, Realm: domain, MaxExpires: 600,
	})
	e := newEnv(t, envOpts{
		targets: []string{reg.Addr("udp").String()},
		limits:  &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			ext := p.Realm("external")
			ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "tls", Bind: sbcExtIP + ":0",
				TLS: &testpolicy.ListenerTLS{CertFile: pki.file("sbc"), KeyFile: pki.key("sbc"), ClientAuth: "none"}})
			p.Trunk("carrier").Sources = []string{strangerIP + "/32"}
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{baresipTCPSource + "/32"},
				AllowRegister: true, RegisterDomains: []string{domain},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "pbx"})
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.ctx = ctx
	extTLS, _ := e.sbc.ListenAddr("external", "tls")
	phone := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(phoneTCPIP), User: "alice", Quit: 5 * time.Minute,
		Registrar: extTLS, Domain: domain, Transport: "tls", Password: password, Expires: 3600, CAFile: pki.file("ca")})

	cs := waitContacts(t, reg, "alice", 1)
	bs := checkTokenContacts(t, e, cs, 600, phoneTCPIP, baresipTCPSource)
	if len(bs) != 1 || bs[0].transport != "tls" {
		t.Fatalf("the SBC's bindings %+v, want one over tls", bs)
	}
	pbx := e.newCaller(pbxPhoneIP + ":0")
	for i, phoneHangsUp := range []bool{false, true} {
		call, err := pbx.Dial(ctx, reg.Addr("udp").String(), sipua.DialOptions{User: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if final, err := call.WaitFinal(ctx); err != nil || final.StatusCode != 200 {
			t.Fatalf("call %d to alice: %v %v\n%s", i+1, final, err, reg.Log())
		}
		if phoneHangsUp {
			phone.Stop() // baresip hangs up its call, unregisters and exits
			select {
			case <-call.Ended():
			case <-ctx.Done():
				t.Fatalf("call %d: the phone's BYE did not reach the caller", i+1)
			}
			continue
		}
		if err := call.Bye(ctx); err != nil {
			t.Fatalf("call %d: BYE: %v", i+1, err)
		}
		waitTrace(t, phone, "the caller's BYE reached the phone", regWait, func(m []baresip.Message) bool {
			return len(sipMessages(m, "BYE ", "")) > 0
		})
	}
	trace := phone.SIPTrace()
	invs := sipMessages(trace, "INVITE ", "")
	if len(invs) != 2 {
		t.Fatalf("the phone received %d INVITEs, want 2", len(invs))
	}
	for _, inv := range invs {
		if !strings.EqualFold(inv.Transport, "tls") || inv.Src != extTLS {
			t.Errorf("INVITE over %s from %s, want over TLS from the SBC's %s", inv.Transport, inv.Src, extTLS)
		}
	}
	for _, m := range trace {
		if m.Src == extTLS {
			for _, ip := range []string{sbcIntIP, backendIP} {
				if strings.Contains(m.Text, ip) {
					t.Errorf("the phone received the internal address %s:\n%s", ip, m.Text)
				}
			}
		}
	}
	if n := len(sipMessages(trace, "BYE ", "")); n != 2 {
		t.Errorf("%d BYEs in the phone's trace, want 2 (the caller's, its own)", n)
	}
	waitContacts(t, reg, "alice", 0)
	e.eventually("the SBC's cache empty", func() bool { return e.sbc.regs.len() == 0 })
	e.eventually("two calls to users answered", func() bool {
		return testutil.ToFloat64(e.sbc.metrics.UserCalls.WithLabelValues(resultAnswered)) == 2
	})
}
