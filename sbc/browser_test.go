package sbc

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/browser"
	"github.com/sbc-project/sbc/internal/kamailio"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// TestBrowserRegistersThroughWSS: a real WebRTC signalling client,
// headless Chromium running JsSIP, registers over the SBC's WSS listener
// with a registrar behind it (Kamailio from Debian, digest
// authentication over UDP): the challenge is relayed, the second REGISTER
// gets 200 and JsSIP considers itself registered. The same client on a
// page of another origin is refused at the upgrade and counted; a call
// from the browser reaches a UDP backend, is answered, and the browser's
// BYE ends it.
func TestBrowserRegistersThroughWSS(t *testing.T) {
	browser.Require(t)
	if err := kamailio.Available(); err != nil && testing.Short() {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := newTestPKI(t)
	reg := kamailio.Start(t, kamailio.Options{
		CertFile: k.file("backend"), KeyFile: k.key("backend"),
		Auth: map[string]string{"alice": "wonderland"}, Realm: "example.test",
	})
	// A PBX for the call: the browser's answer must be one Chromium
	// accepts (DTLS fingerprint, ICE), so the backend answers with one.
	pbx, err := sipua.NewBackend(sipua.BackendOptions{UDP: backendIP + ":0", TCP: backendIP + ":0", Logger: testLogger(),
		Answer: func(req *sip.Request) sipua.Plan {
			ans, err := browser.AnswerSDP(req.Body())
			if err != nil {
				return sipua.Plan{Final: 488}
			}
			return sipua.Plan{Body: ans}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()

	const origin = "https://app.example.test"
	pb := testpolicy.New(sbcExtIP, sbcIntIP, reg.Addr("udp").String())
	pb.Server = testpolicy.Server{UserAgent: "TestSBC", LogLevel: "debug"}
	ext := pb.Realm("external")
	ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "wss", Bind: "127.0.0.1:0", Origins: []string{origin},
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
	tr := pb.Trunk("carrier")
	tr.Name, tr.Sources = "webrtc", []string{"127.0.0.1/32"}
	tr.AllowRegister, tr.RegisterDomains = true, []string{"example.test"}
	pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "calls", Realm: "internal", Targets: testpolicy.Targets(pbx.Addr()),
		Health: &testpolicy.Health{Interval: policy.D(0)}})
	pb.Routes = []testpolicy.Route{{Trunk: "webrtc", Prefix: "alice", Pool: "pbx"}, {Trunk: "webrtc", Prefix: "100", Pool: "calls"}}
	pb.Routing = &testpolicy.Routing{TargetTimeout: policy.D(2 * time.Second), MaxAttempts: 1}
	// This test is about signalling: WebRTC media (DTLS-SRTP, ICE) is not
	// terminated yet, so the browser's SDP passes untouched.
	pb.Extra += "\n[media]\nanchor = false\n"
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	la, _ := s.ListenAddr("external", "wss")
	url := "wss://" + la.String()

	res, err := browser.Register(ctx, t, browser.RegisterOptions{WSSURL: url, URI: "sip:alice@example.test", Password: "wonderland", Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || !res.Registered {
		t.Fatalf("REGISTER: status %d registered %v cause %q error %q", res.Status, res.Registered, res.Cause, res.Error)
	}
	if !reg.WaitLog("auth user=alice result=1", 10*time.Second) {
		t.Errorf("Kamailio did not authenticate alice:\n%s", reg.Log())
	}
	// The browser saw the challenge relayed, and nothing of the inside.
	var sawChallenge bool
	for _, m := range res.Messages {
		if m.Dir == "received" && strings.HasPrefix(m.Text, "SIP/2.0 401") {
			sawChallenge = true
		}
		if m.Dir == "received" && strings.Contains(m.Text, sbcIntIP) {
			t.Errorf("the browser received the SBC's internal address:\n%s", m.Text)
		}
	}
	if !sawChallenge {
		t.Errorf("no 401 challenge reached the browser")
	}

	bad, err := browser.Register(ctx, t, browser.RegisterOptions{WSSURL: url, URI: "sip:alice@example.test", Password: "wonderland", Origin: "https://evil.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if bad.Status != 0 || bad.Error == "" {
		t.Errorf("a page of another origin: status %d error %q, want a refused connection", bad.Status, bad.Error)
	}
	waitCount(ctx, t, "wss handshakes ws_origin", func() float64 {
		return testutil.ToFloat64(s.metrics.TLSHandshakes.WithLabelValues("external", "wss", "server", string(reasonWSOrigin)))
	}, 1)

	call, err := browser.Call(ctx, t, browser.CallOptions{WSSURL: url, URI: "sip:alice@example.test", Password: "wonderland",
		Origin: origin, Target: "sip:100@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if call.Status != 200 || call.ByeStatus != 200 {
		t.Fatalf("call: status %d, BYE %d, cause %q, error %q", call.Status, call.ByeStatus, call.Cause, call.Error)
	}
	if _, err := pbx.WaitCall(ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateEnded }); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserCalledThroughWSS: calls to a WebRTC user. Headless Chromium
// with JsSIP registers alice over the SBC's WSS listener with Kamailio
// (digest auth) behind it; a phone on the PBX side calls alice at
// Kamailio twice, and Kamailio sends each INVITE to alice's contact, the
// SBC's token, which the SBC sends over the browser's WebSocket. JsSIP
// answers both (no media: its answer has no candidate); it hangs up the
// first itself (its BYE reaches the caller, answered 200) and the caller
// hangs up the second (the BYE reaches the browser). Each INVITE came
// over the WebSocket, to JsSIP's own Contact, offers DTLS-SRTP with
// ICE-lite (Chromium refuses an offer without ICE: before the fix the
// SBC offered DTLS alone and JsSIP answered 488), and names no internal
// address (neither the SBC's internal face nor Kamailio's).
func TestBrowserCalledThroughWSS(t *testing.T) {
	browser.Require(t)
	if err := kamailio.Available(); err != nil && testing.Short() {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := newTestPKI(t)
	const domain, password = "example.test", "wonderland"
	reg := kamailio.Start(t, kamailio.Options{
		UDP:      netip.MustParseAddrPort(backendIP + ":0"),
		CertFile: k.file("backend"), KeyFile: k.key("backend"),
		Auth: map[string]string{"alice": password}, Realm: domain,
	})
	const origin = "https://app.example.test"
	pb := testpolicy.New(sbcExtIP, sbcIntIP, reg.Addr("udp").String())
	pb.Server = testpolicy.Server{UserAgent: "TestSBC", LogLevel: "debug"}
	ext := pb.Realm("external")
	ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "wss", Bind: "127.0.0.1:0", Origins: []string{origin},
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
	tr := pb.Trunk("carrier")
	tr.Name, tr.Sources = "webrtc", []string{"127.0.0.1/32"}
	tr.AllowRegister, tr.RegisterDomains = true, []string{domain}
	pb.Routes = []testpolicy.Route{{Trunk: "webrtc", Pool: "pbx"}}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	la, _ := s.ListenAddr("external", "wss")

	caller, err := sipua.NewCaller(sipua.CallerOptions{Addr: pbxPhoneIP + ":0", Logger: testLogger(), UserAgent: "DeskPhone/1.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	// The PBX side, beside the browser (browser.Answer blocks): once
	// Kamailio holds alice's contact, two calls, ended by the browser and
	// by the caller.
	pbxDone := make(chan error, 1)
	go func() {
		pbxDone <- func() error {
			deadline := time.Now().Add(time.Minute)
			for {
				cs, err := reg.Contacts("alice")
				if err == nil && len(cs) == 1 {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("Kamailio holds %+v %v for alice", cs, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			for i, byCaller := range []bool{false, true} {
				call, err := caller.Dial(ctx, reg.Addr("udp").String(), sipua.DialOptions{User: "alice",
					SDP: sipua.SDP(pbxPhoneIP, 40000, 1, "sendrecv")})
				if err != nil {
					return err
				}
				if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode != 200 {
					return fmt.Errorf("call %d: %v %v", i+1, res, err)
				}
				if byCaller {
					if err := call.Bye(ctx); err != nil {
						return fmt.Errorf("call %d: BYE: %v", i+1, err)
					}
					continue
				}
				select {
				case <-call.Ended():
				case <-ctx.Done():
					return fmt.Errorf("call %d: the browser's BYE did not come", i+1)
				}
			}
			return nil
		}()
	}()

	res, err := browser.Answer(ctx, t, browser.AnswerOptions{WSSURL: "wss://" + la.String(), URI: "sip:alice@" + domain,
		Password: password, Origin: origin, Hangups: []string{browser.HangupLocal, browser.HangupRemote}, HoldFor: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-pbxDone; err != nil {
		t.Fatalf("the PBX side: %v\n%s", err, reg.Log())
	}
	if res.Error != "" || !res.Registered || len(res.Calls) != 2 {
		t.Fatalf("the browser: error %q registered %v cause %q calls %+v", res.Error, res.Registered, res.Cause, res.Calls)
	}
	if c := res.Calls[0]; c.EndedBy != "local" || c.ByeStatus != 200 {
		t.Errorf("call 1 (the browser hangs up): %+v, want ended locally, BYE answered 200", c)
	}
	// JsSIP's cause for a BYE received is "Terminated" (causes.BYE).
	if c := res.Calls[1]; c.EndedBy != "remote" || c.Cause != "Terminated" {
		t.Errorf("call 2 (the caller hangs up): %+v, want ended by the remote BYE", c)
	}
	// JsSIP's Contact, as it registered it: the INVITEs' request-URI.
	var contact string
	var invites, byes int
	for _, m := range res.Messages {
		if m.Dir == "sent" && strings.HasPrefix(m.Text, "REGISTER ") && contact == "" {
			if h := headerOf(m.Text, "Contact"); h != "" {
				contact, _, _ = strings.Cut(strings.TrimPrefix(h, "<"), ">")
				contact, _, _ = strings.Cut(contact, ";")
			}
		}
		if m.Dir != "received" {
			continue
		}
		if strings.HasPrefix(m.Text, "BYE ") {
			byes++
		}
		if strings.HasPrefix(m.Text, "INVITE ") {
			invites++
			if !strings.Contains(m.Text, "a=ice-ufrag:") || !strings.Contains(m.Text, "UDP/TLS/RTP/SAVPF") {
				t.Errorf("the offer to the browser has no ICE (a browser refuses it):\n%s", m.Text)
			}
			if ruri := strings.Fields(m.Text)[1]; contact == "" || !strings.HasPrefix(ruri, contact) {
				t.Errorf("INVITE to %s, want JsSIP's Contact %s", ruri, contact)
			}
		}
		for _, ip := range []string{sbcIntIP, backendIP} {
			if strings.Contains(m.Text, ip) {
				t.Errorf("the browser received the internal address %s:\n%s", ip, m.Text)
			}
		}
	}
	if invites != 2 || byes != 1 {
		t.Errorf("%d INVITEs and %d BYEs came over the WebSocket, want 2 and 1 (the caller's)", invites, byes)
	}
	if n := testutil.ToFloat64(s.metrics.UserCalls.WithLabelValues(resultAnswered)); n != 2 {
		t.Errorf("sbc_user_calls_total{result=answered} %v, want 2", n)
	}
}
