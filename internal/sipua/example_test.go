package sipua_test

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sbc-project/sbc/internal/sipua"
)

// A backend that rings, answers after a moment and hangs up by itself, and a
// caller from an "unknown" loopback source. In SBC tests the caller dials the
// SBC instead, and the SBC routes to b.Addr().
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	b, err := sipua.NewBackend(sipua.BackendOptions{
		Answer: func(req *sip.Request) sipua.Plan {
			if req.Recipient.User == "busy" {
				return sipua.Plan{Final: 486}
			}
			return sipua.Plan{
				Provisional: []sipua.Provisional{{Code: 180}},
				Delay:       10 * time.Millisecond,
				HangupAfter: 10 * time.Millisecond,
			}
		},
	})
	if err != nil {
		panic(err)
	}
	defer b.Close()

	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.66:0"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	for _, user := range []string{"busy", "100"} {
		call, err := c.Dial(ctx, b.Addr(), sipua.DialOptions{User: user})
		if err != nil {
			panic(err)
		}
		final, err := call.WaitFinal(ctx)
		if err != nil {
			panic(err)
		}
		select {
		case <-call.Ended():
		case <-ctx.Done():
			panic("call did not end")
		}
		info, _ := b.WaitCall(ctx, func(ci sipua.CallInfo) bool {
			return ci.CallID == call.CallID() && (ci.State == sipua.StateEnded || ci.State == sipua.StateRejected)
		})
		fmt.Println(user, final.StatusCode, "ended by", call.EndedBy(), "| backend:", info.State)
	}
	// Output:
	// busy 486 ended by remote | backend: rejected
	// 100 200 ended by remote | backend: ended
}
