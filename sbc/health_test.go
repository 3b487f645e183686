package sbc

import (
	"fmt"
	"testing"

	"github.com/sbc-project/sbc/internal/sipua"
)

// Any answer to the OPTIONS ping means the target is alive: a backend that
// handles calls but answers OPTIONS 404, 405, 500 or 503 stays in the pool
// (a 503 used to take it down, and every call then got 503 from the SBC).
// Only silence takes it down.
func TestHealthAnyOptionsAnswerMeansUp(t *testing.T) {
	e := newEnv(t, envOpts{health: "  interval = \"50ms\"\n  timeout = \"40ms\"\n  up = 1\n  down = 1"})
	b := e.backends[0]
	tg := e.sbc.state.Load().pools["pbx"].targets[0]
	for _, code := range []int{503, 404, 405, 500} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			b.SetOptionsReply(0) // silent: pings time out
			e.eventually("target down on unanswered pings", func() bool { return !tg.isUp() })
			b.SetOptionsReply(code)
			e.eventually(fmt.Sprintf("target up on OPTIONS answered %d", code), func() bool { return tg.isUp() })
			call, res := e.dial(sipua.DialOptions{})
			if res.StatusCode != 200 {
				t.Fatalf("call to a target answering OPTIONS %d: final %d, want 200", code, res.StatusCode)
			}
			call.Bye(e.ctx)
		})
	}
}
