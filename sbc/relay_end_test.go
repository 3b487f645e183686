package sbc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// A relayed in-dialog request that is still waiting for its answer when
// the call ends (a peer answers a NOTIFY and sends BYE at once; the SBC may
// handle the BYE first) gets the peer's answer relayed, not an invented
// 481: every order of {answer, BYE from the answering side, BYE from the
// requesting side} and the relay's own timeout is tried.
func TestPendingRelayAnsweredAfterEnd(t *testing.T) {
	for _, method := range []sip.RequestMethod{sip.NOTIFY, sip.INFO} {
		for _, fromA := range []bool{true, false} {
			sets := [][]string{
				{"answer", "byeTo"},
				{"answer", "byeFrom"},
				{"answer", "byeTo", "byeFrom"},
				{"timeout", "byeTo"},
				{"answer481", "byeTo"},
			}
			for _, set := range sets {
				permute(set, func(order []string) {
					h := newFSM(t, 1)
					h.ev(event{kind: evStart})
					h.ev(h.resp(1, 200, "x"))
					h.ev(h.ackFromA())
					from, to := h.c.a, h.c.kept.leg
					if !fromA {
						from, to = to, from
					}
					acts := h.ev(event{kind: evRequest, leg: from, req: h.inDialog(method, from)})
					if countKind(acts, actRelay) != 1 {
						t.Fatalf("%s not relayed: %v", method, acts)
					}
					rel := acts[0].rel
					var want int
					for _, name := range order {
						var e event
						switch name {
						case "answer":
							e, want = event{kind: evRelayResponse, rel: rel, res: sip.NewResponseFromRequest(rel.out, 200, "OK", nil)}, 200
						case "answer481":
							e, want = event{kind: evRelayResponse, rel: rel, res: sip.NewResponseFromRequest(rel.out, 481, "Gone", nil)}, 481
						case "timeout":
							e, want = event{kind: evRelayDone, rel: rel, err: errTestTimeout}, 408
						case "byeTo":
							e = h.byeFrom(to)
						case "byeFrom":
							e = h.byeFrom(from)
						}
						h.ev(e)
					}
					// The relayed request's own answers: exactly one
					// final, the peer's.
					var finals []int
					for _, a := range h.log {
						if a.kind == actRespond && a.tx == rel.tx && a.res != nil && a.res.CSeq().MethodName == method && !a.res.IsProvisional() {
							finals = append(finals, a.res.StatusCode)
						}
					}
					if len(finals) != 1 || finals[0] != want {
						t.Fatalf("%s from %s, events %s: finals to the request %v, want [%d]", method, from.name, strings.Join(h.steps, ","), finals, want)
					}
					if h.c.phase != phEnded {
						t.Fatalf("events %s: call not ended", strings.Join(h.steps, ","))
					}
					if len(h.c.relays) != 0 {
						t.Fatalf("events %s: %d relays left", strings.Join(h.steps, ","), len(h.c.relays))
					}
				})
			}
		}
	}
}

// A re-INVITE pending when the call ends is answered 481 at once (its
// dialog is being torn down), and a 2xx that comes later is ACKed.
func TestPendingReInviteAnsweredAtEnd(t *testing.T) {
	h := newFSM(t, 1)
	h.ev(event{kind: evStart})
	h.ev(h.resp(1, 200, "x"))
	h.ev(h.ackFromA())
	acts := h.ev(event{kind: evRequest, leg: h.c.a, req: h.inDialog(sip.INVITE, h.c.a)})
	rel := acts[0].rel
	acts = h.ev(h.byeFrom(h.c.kept.leg))
	found := false
	for _, a := range acts {
		if a.kind == actRespond && a.tx == rel.tx && a.res.StatusCode == 481 {
			found = true
		}
	}
	if !found {
		t.Fatalf("pending re-INVITE not answered 481 at the end: %v", acts)
	}
	acts = h.ev(event{kind: evRelayResponse, rel: rel, res: sip.NewResponseFromRequest(rel.out, 200, "OK", nil)})
	if countKind(acts, actWrite) != 1 || acts[0].req.Method != sip.ACK || countKind(acts, actRespond) != 0 {
		t.Fatalf("late 2xx to the re-INVITE: %v, want its ACK only", acts)
	}
}

var errTestTimeout = errString2("transaction timed out")

type errString2 string

func (e errString2) Error() string { return string(e) }

// TestPendingRelayAnswerThenByeStress: the callee answers each relayed
// INFO or NOTIFY and sends BYE right after it, so the SBC often handles
// the BYE first (sipgo hands each message to its own goroutine). The
// caller must get the callee's 200 every time, and the calls must end.
func TestPendingRelayAnswerThenByeStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	plan := sipua.Plan{InDialog: map[sip.RequestMethod]int{sip.INFO: sipua.AnswerThenBye, sip.NOTIFY: sipua.AnswerThenBye}}
	e := newEnv(t, envOpts{
		// Signalling only: the test's media port range is smaller than
		// the calls.
		edit:     func(p *testpolicy.Policy) { p.Media = &testpolicy.Media{Anchor: new(false)} },
		backends: []sipua.BackendOptions{{Answer: sipua.Always(plan)}},
	})
	const calls = 40
	deadline, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			call, err := e.caller.Dial(deadline, e.ext, sipua.DialOptions{User: fmt.Sprint(2000 + i)})
			if err != nil {
				errs <- fmt.Errorf("call %d: %w", i, err)
				return
			}
			if res, err := call.WaitFinal(deadline); err != nil || res.StatusCode != 200 {
				errs <- fmt.Errorf("call %d: not answered: %v %v", i, res, err)
				return
			}
			var res *sip.Response
			// Until the SBC has A's ACK the call is not confirmed: 491
			// with Retry-After, tried again a bounded number of times.
			for try := 0; try < 20; try++ {
				if i%2 == 0 {
					res, err = call.Info(deadline, []byte("Signal=1\r\nDuration=100\r\n"))
				} else {
					res, err = call.Request(deadline, sip.NOTIFY, []byte("SIP/2.0 200 OK\r\n"),
						sip.NewHeader("Event", "refer"), sip.NewHeader("Subscription-State", "terminated;reason=noresource"),
						sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
				}
				if err != nil || res.StatusCode != 491 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || res.StatusCode != 200 {
				errs <- fmt.Errorf("call %d: in-dialog request answered %v %v, want the callee's 200", i, res, err)
				return
			}
			select {
			case <-call.Ended():
			case <-deadline.Done():
				errs <- fmt.Errorf("call %d: the callee's BYE never reached the caller", i)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.eventually("no call left", func() bool { return e.sbc.calls.len() == 0 })
	e.eventually("CallsActive back to 0", func() bool { return testutilValue(e.sbc.metrics.CallsActive) == 0 })
}
