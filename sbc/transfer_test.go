package sbc

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// TestLocalTransferStress: many calls whose backend transfers them
// (refer = "local") at once, while the caller hangs up, or the backend
// hangs up its own leg, across the transfer; the new legs answer, refuse
// (486) or ring first. Bounded in calls and time. Every call ends, every
// dialog is forgotten, every slot freed, and every REFER the SBC accepted
// has exactly one result (completed or failed).
func TestLocalTransferStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	old := lingerFor.Swap(int64(50 * time.Millisecond))
	t.Cleanup(func() { lingerFor.Store(old) })
	var ids sync.Map // dialled user → the backend's Call-ID
	e := newEnv(t, envOpts{
		edit: func(p *testpolicy.Policy) { p.Pool("pbx").Refer = "local" },
		backends: []sipua.BackendOptions{{Answer: func(r *sip.Request) sipua.Plan {
			u := r.Recipient.User
			if strings.HasPrefix(u, "9") { // a transfer's new leg
				ids.Store(u, r.CallID().Value())
				n, _ := strconv.Atoi(u[1:])
				switch n % 3 {
				case 0:
					return sipua.Plan{Final: 486}
				case 1:
					return sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Delay: time.Millisecond}
				}
				return sipua.Plan{}
			}
			ids.Store(u, r.CallID().Value())
			return sipua.Plan{}
		}}},
	})
	base := runtime.NumGoroutine()
	const rounds = 30
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	deadline, cancel := context.WithTimeout(e.ctx, 40*time.Second)
	defer cancel()
	for i := 0; i < rounds; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := fmt.Sprint(1000 + i)
			call, err := e.caller.Dial(deadline, e.ext, sipua.DialOptions{User: user, SDP: sipua.SDP("192.0.2.10", 40000+2*i, 1, "sendrecv")})
			if err != nil {
				return
			}
			if res, err := call.WaitFinal(deadline); err != nil || res.StatusCode != 200 {
				return
			}
			v, ok := ids.Load(user)
			if !ok {
				return
			}
			cid := v.(string)
			if i%4 == 0 {
				go call.Bye(deadline) // crosses the REFER
			}
			if i%4 == 3 {
				go e.backends[0].Bye(deadline, cid) // the referrer hangs up across its transfer
			}
			// Before the caller's ACK is in the call is not confirmed:
			// 491 (Retry-After), tried again a bounded number of times.
			var res *sip.Response
			for try := 0; try < 20; try++ {
				res, err = e.backends[0].Request(deadline, cid, sip.REFER, nil, sip.NewHeader("Refer-To", fmt.Sprintf("<sip:9%d@192.0.2.99>", i)))
				if err != nil || res.StatusCode != 491 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err == nil && res.StatusCode == 202 {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
			if i%4 == 1 {
				call.Bye(deadline)
				return
			}
			// Let the transfer run its course: the new leg answered and
			// acknowledged (or refused), then the caller hangs up.
			wait, stop := context.WithTimeout(deadline, 5*time.Second)
			defer stop()
			_, _ = e.backends[0].WaitCall(wait, func(ci sipua.CallInfo) bool {
				v, ok := ids.Load(fmt.Sprintf("9%d", i))
				return ok && ci.CallID == v.(string) && (ci.Acked || ci.State == sipua.StateRejected)
			})
			call.Bye(deadline)
		}(i)
	}
	wg.Wait()
	if deadline.Err() != nil {
		t.Fatal("the stress loop did not finish in time: deadlock?")
	}
	e.eventually("no call left", func() bool { return e.sbc.calls.len() == 0 })
	e.eventually("every dialog forgotten", func() bool { return e.sbc.calls.entries() == 0 })
	e.eventually("no leaked trunk slot", func() bool { return e.sbc.def.calls.InUse("carrier") == 0 })
	e.eventually("CallsActive back to 0", func() bool { return testutilValue(e.sbc.metrics.CallsActive) == 0 })
	m := e.sbc.metrics.Transfers
	got := testutilValue(m.WithLabelValues("local", xferCompleted)) + testutilValue(m.WithLabelValues("local", xferFailed))
	if accepted == 0 || got != float64(accepted) {
		t.Errorf("%d REFERs accepted, %v transfer results counted (completed %v)", accepted, got, testutilValue(m.WithLabelValues("local", xferCompleted)))
	}
	if testutilValue(m.WithLabelValues("local", xferCompleted)) == 0 {
		t.Error("no transfer completed")
	}
	e.eventually("goroutines back near the start", func() bool { return runtime.NumGoroutine() <= base+20 })
}

// TestLocalTransferMedia: refer = "local" with anchored media. After the
// transfer the caller's RTP reaches the transfer target and the target's
// the caller, through the same relay ports: the SBC offered the new leg
// its relay's backend-side address, took the target's answer there, and
// sent the caller nothing (its SDP, relay address and keys unchanged).
func TestLocalTransferMedia(t *testing.T) {
	caller, backend, target := newPhone(t, callerIP), newPhone(t, backendIP), newPhone(t, backendIP)
	a := backend.addr()
	e := newEnv(t, envOpts{
		edit: func(p *testpolicy.Policy) { p.Pool("pbx").Refer = "local" },
		backends: []sipua.BackendOptions{{MediaIP: a.Addr().String(), MediaPort: int(a.Port()), Answer: func(r *sip.Request) sipua.Plan {
			if r.Recipient.User == "9000" {
				return sipua.Plan{Body: target.sdp()}
			}
			return sipua.Plan{}
		}}},
	})
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdp()})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	toExt, toInt := remote(t, res.Body()), remote(t, ci.Invite)
	exchange(t, caller, backend, toExt, toInt)

	var r *sip.Response
	for try := 0; try < 20; try++ {
		if r, err = e.backends[0].Request(e.ctx, ci.CallID, sip.REFER, nil, sip.NewHeader("Refer-To", "<sip:9000@192.0.2.99>")); err != nil || r.StatusCode != 491 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || r.StatusCode != 202 {
		t.Fatalf("REFER: %v, %v", r, err)
	}
	nl, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.CallID != ci.CallID && c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if got := remote(t, nl.Invite); got != toInt {
		t.Errorf("the new leg was offered %v, want the relay's backend side %v", got, toInt)
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.CallID == ci.CallID && c.State == sipua.StateEnded }); err != nil {
		t.Fatalf("the referrer's leg was not hung up: %v", err)
	}
	exchange(t, caller, target, toExt, toInt)
	// The old backend's media is no longer the call's.
	backend.send(toInt, 5, "stale")
	target.send(toInt, 1, "after-stale")
	if _, err := caller.recv("after-stale"); err != nil {
		t.Fatal(err)
	}
	for _, m := range e.caller.Received() {
		if m.Method == "INVITE" {
			t.Errorf("the caller got an INVITE: the transferee is sent nothing")
		}
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.eventually("the new leg hung up", func() bool {
		c, ok := e.backends[0].Call(nl.CallID)
		return ok && c.State == sipua.StateEnded
	})
}
