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
