package baresip

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestDirectCall: two agents call each other without anything in
// between, plain RTP and SDES-SRTP: the helper's own check (the trace,
// the statistics, the decoded tone are where it says).
func TestDirectCall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs baresip for seconds")
	}
	for _, enc := range []string{"", "srtp-mand"} {
		name := enc
		if name == "" {
			name = "plain"
		}
		t.Run(name, func(t *testing.T) {
			callee := Start(t, Options{IP: netip.MustParseAddr("127.0.0.2"), User: "b", MediaEnc: enc, ToneHz: 440})
			caller := Start(t, Options{User: "a", MediaEnc: enc, ToneHz: 440, Quit: 3 * time.Second,
				Dial: "sip:b@" + callee.SIPAddr().String()})
			if err := caller.Wait(30 * time.Second); err != nil {
				t.Fatalf("caller: %v", err)
			}
			if !callee.WaitLog("packets:", 10*time.Second) {
				t.Fatal("the callee printed no statistics")
			}
			callee.Stop()
			for _, u := range []*UA{caller, callee} {
				st, err := u.RTPStats()
				if err != nil {
					t.Fatal(err)
				}
				if st.RxPackets == 0 || st.TxPackets == 0 || st.RxErrors != 0 {
					t.Errorf("%s: %+v", u.Dir(), st)
				}
				wav, err := u.DecodedWAV()
				if err != nil {
					t.Fatal(err)
				}
				tone := Measure(t, wav)
				if math.Abs(tone.Frequency-440) > 22 || tone.RMS < 0.1 {
					t.Errorf("decoded %+v", tone)
				}
				t.Logf("%s: %+v %+v", u.Dir(), st, tone)
			}
			var invite Message
			for _, m := range callee.Received() {
				if strings.HasPrefix(m.StartLine(), "INVITE ") {
					invite = m
				}
			}
			if invite.Src.Addr() != netip.MustParseAddr("127.0.0.1") || !strings.Contains(invite.Body(), "m=audio ") {
				t.Errorf("the callee's INVITE: %+v", invite)
			}
			if got := strings.Contains(invite.Body(), "a=crypto:"); got != (enc != "") {
				t.Errorf("a=crypto in the offer: %v\n%s", got, invite.Body())
			}
			if src, ok := callee.RTPSource(); !ok || src.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("the callee's RTP came from %v", src)
			}
		})
	}
}

// TestConsoleAnswer: a manual-answer agent rings until told to accept
// through its console, then answers; an agent without a console refuses
// Command.
func TestConsoleAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs baresip for seconds")
	}
	callee := Start(t, Options{IP: netip.MustParseAddr("127.0.0.2"), User: "b", AnswerMode: "manual", Console: true})
	caller := Start(t, Options{User: "a", Quit: 20 * time.Second, Dial: "sip:b@" + callee.SIPAddr().String()})
	if err := caller.Command("accept"); err == nil {
		t.Error("Command on an agent without a console: no error")
	}
	sent := func(start string) bool {
		for _, m := range callee.Sent() {
			if strings.HasPrefix(m.StartLine(), start) && strings.Contains(m.Text, "INVITE") {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !sent("SIP/2.0 180") {
		if time.Now().After(deadline) {
			t.Fatal("the callee did not ring")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sent("SIP/2.0 200") {
		t.Fatal("the manual-answer callee answered by itself")
	}
	if err := callee.Command("accept"); err != nil {
		t.Fatal(err)
	}
	for !sent("SIP/2.0 200") {
		if time.Now().After(deadline) {
			t.Fatal("the callee did not answer after accept")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
