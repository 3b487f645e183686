package sbc

import (
	"testing"

	"github.com/sbc-project/sbc/internal/sipua"
)

// A remote user behind NAT (a trunk that may register) advertises its
// private address in its Contact. Requests towards it inside the call it
// placed go to where its INVITE came from, not to that Contact: the PBX's
// BYE reaches it.
func TestRegisteringTrunkCallerReachedOverItsFlow(t *testing.T) {
	e := newEnv(t, envOpts{trunk: "allow_register = true\nregister_domains = [\"pbx.example.com\"]"})
	phone, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Logger: testLogger(),
		ContactAddr: "127.0.0.99:5999"}) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { phone.Close() })
	call, err := phone.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("call not answered: %v %v", res, err)
	}
	be := e.backends[0]
	ci, err := be.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Bye(e.ctx, ci.CallID); err != nil {
		t.Fatalf("the PBX's BYE was not answered through the SBC: %v", err)
	}
	if _, err := phone.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "BYE" }); err != nil {
		t.Fatalf("the BYE never reached the phone: %v", err)
	}
}
