package sbc

import (
	"context"
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
