package sipua

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// testTimeout bounds every wait of a test; nothing here should come close.
const testTimeout = 10 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newBackend(t *testing.T, opts BackendOptions) *Backend {
	t.Helper()
	b, err := NewBackend(opts)
	if err != nil {
		t.Fatalf("NewBackend: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("backend close: %v", err)
		}
	})
	return b
}

func newCaller(t *testing.T, opts CallerOptions) *Caller {
	t.Helper()
	c, err := NewCaller(opts)
	if err != nil {
		t.Fatalf("NewCaller: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("caller close: %v", err)
		}
	})
	return c
}

// answered dials b from c and waits for the 2xx and the backend's ACK.
func answered(t *testing.T, ctx context.Context, c *Caller, target string, b *Backend, opts DialOptions) (*Call, CallInfo) {
	t.Helper()
	call, err := c.Dial(ctx, target, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	res, err := call.WaitFinal(ctx)
	if err != nil {
		t.Fatalf("WaitFinal: %v", err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("final = %d, want 200", res.StatusCode)
	}
	info, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.CallID == call.CallID() && ci.Acked })
	if err != nil {
		t.Fatalf("backend never got the ACK: %v", err)
	}
	return call, info
}

func codes(rs []*sip.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

func waitEnded(t *testing.T, ctx context.Context, call *Call) {
	t.Helper()
	select {
	case <-call.Ended():
	case <-ctx.Done():
		t.Fatalf("call did not end: %v", ctx.Err())
	}
}

func TestCallByeFromCaller(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	call, info := answered(t, ctx, c, b.Addr(), b, DialOptions{User: "4711"})

	if got := codes(call.Responses()); len(got) < 2 || got[len(got)-2] != 180 || got[len(got)-1] != 200 {
		t.Errorf("responses = %v, want ... 180 200", got)
	}
	if info.State != StateAnswered || info.Final != 200 || info.Transport != "UDP" {
		t.Errorf("backend call = %+v", info)
	}
	if info.Source != c.Addr() {
		t.Errorf("INVITE source = %q, want %q", info.Source, c.Addr())
	}
	if to := call.Final().To(); tagOf(to.Params) != info.Tag || info.Tag == "" {
		t.Errorf("200 To tag %q, backend tag %q", tagOf(to.Params), info.Tag)
	}
	if Direction(info.Invite) != SendRecv {
		t.Errorf("offer direction = %q", Direction(info.Invite))
	}
	inv, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "INVITE" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(inv.StartLine, "INVITE sip:4711@") || inv.Header("User-Agent") != "sipua-caller" ||
		!strings.Contains(inv.Header("From"), "tag="+call.Tag()) || inv.Header("Supported") != "100rel" {
		t.Errorf("INVITE head:\n%s", inv.Head())
	}

	if err := call.Bye(ctx); err != nil {
		t.Fatalf("Bye: %v", err)
	}
	waitEnded(t, ctx, call)
	if call.EndedBy() != Local {
		t.Errorf("caller EndedBy = %q", call.EndedBy())
	}
	info, err = b.WaitCall(ctx, func(ci CallInfo) bool { return ci.CallID == call.CallID() && ci.State == StateEnded })
	if err != nil {
		t.Fatal(err)
	}
	if info.EndedBy != Remote {
		t.Errorf("backend EndedBy = %q", info.EndedBy)
	}
	// A second BYE has no dialog any more.
	if err := call.Bye(ctx); err == nil {
		t.Error("second Bye succeeded")
	}
}

func TestCallByeFromBackend(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})

	if err := b.Bye(ctx, call.CallID()); err != nil {
		t.Fatalf("backend Bye: %v", err)
	}
	waitEnded(t, ctx, call)
	if call.EndedBy() != Remote {
		t.Errorf("caller EndedBy = %q", call.EndedBy())
	}
	info, _ := b.Call(call.CallID())
	if info.State != StateEnded || info.EndedBy != Local {
		t.Errorf("backend call = %+v", info)
	}
	bye, err := c.WaitFor(ctx, func(m Msg) bool { return m.Method == "BYE" })
	if err != nil {
		t.Fatal(err)
	}
	if bye.Header("User-Agent") != "sipua-backend" || bye.Source != b.Addr() {
		t.Errorf("BYE from %s:\n%s", bye.Source, bye.Head())
	}
}

func TestHangupAfter(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{Answer: Always(Plan{HangupAfter: 20 * time.Millisecond})})
	c := newCaller(t, CallerOptions{})
	call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})
	waitEnded(t, ctx, call)
	if call.EndedBy() != Remote {
		t.Errorf("EndedBy = %q", call.EndedBy())
	}
	if _, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.State == StateEnded && ci.EndedBy == Local }); err != nil {
		t.Fatal(err)
	}
}

func TestRejections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plan  Plan
		check func(t *testing.T, res *sip.Response)
	}{
		{name: "busy", plan: Plan{Final: 486}},
		{name: "unavailable", plan: Plan{Final: 503, Headers: []sip.Header{sip.NewHeader("Retry-After", "30")}},
			check: func(t *testing.T, res *sip.Response) {
				if v := headerValue(res, "Retry-After"); v != "30" {
					t.Errorf("Retry-After = %q", v)
				}
			}},
		{name: "not found", plan: Plan{Final: 404}},
		{name: "redirect", plan: Plan{Final: 302, Headers: []sip.Header{sip.NewHeader("Contact", "<sip:200@192.0.2.7>")}},
			check: func(t *testing.T, res *sip.Response) {
				if len(res.GetHeaders("Contact")) != 1 || !strings.Contains(res.GetHeaders("Contact")[0].Value(), "192.0.2.7") {
					t.Errorf("Contact = %v", res.GetHeaders("Contact"))
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			b := newBackend(t, BackendOptions{Answer: Always(tc.plan)})
			c := newCaller(t, CallerOptions{})
			call, err := c.Dial(ctx, b.Addr(), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := call.WaitFinal(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.plan.Final {
				t.Fatalf("final = %d, want %d", res.StatusCode, tc.plan.Final)
			}
			if tc.check != nil {
				tc.check(t, res)
			}
			waitEnded(t, ctx, call)
			if call.EndedBy() != Remote {
				t.Errorf("EndedBy = %q", call.EndedBy())
			}
			info, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.State == StateRejected })
			if err != nil || info.Final != tc.plan.Final {
				t.Errorf("backend call = %+v, %v", info, err)
			}
			// sipgo's transaction layer ACKs the non-2xx.
			if _, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "ACK" }); err != nil {
				t.Errorf("no ACK for %d: %v", tc.plan.Final, err)
			}
			if err := call.Bye(ctx); err == nil {
				t.Error("Bye on a rejected call succeeded")
			}
		})
	}
}

func TestCancel(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{Answer: Always(Plan{
		Provisional: []Provisional{{Code: 180}},
		Delay:       time.Hour,
	})})
	c := newCaller(t, CallerOptions{})
	call, err := c.Dial(ctx, b.Addr(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.WaitStatus(ctx, 180); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.State == StateRinging }); err != nil {
		t.Fatal(err)
	}
	if err := call.Cancel(ctx); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	res, err := call.WaitFinal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 487 {
		t.Errorf("final = %d, want 487", res.StatusCode)
	}
	waitEnded(t, ctx, call)
	if call.EndedBy() != Local {
		t.Errorf("EndedBy = %q", call.EndedBy())
	}
	info, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.State == StateCancelled })
	if err != nil {
		t.Fatal(err)
	}
	if info.EndedBy != Remote || info.Final != 487 {
		t.Errorf("backend call = %+v", info)
	}
	if err := call.Cancel(ctx); err != ErrFinal {
		t.Errorf("second Cancel = %v, want ErrFinal", err)
	}
}

// TestHold: a plan with Hold rings until the channel is closed, then
// answers; a CANCEL while it holds ends the call with 487.
func TestHold(t *testing.T) {
	for _, release := range []bool{true, false} {
		t.Run(map[bool]string{true: "released", false: "cancelled"}[release], func(t *testing.T) {
			ctx := ctxT(t)
			hold := make(chan struct{})
			b := newBackend(t, BackendOptions{Answer: Always(Plan{Provisional: []Provisional{{Code: 180}}, Hold: hold})})
			c := newCaller(t, CallerOptions{})
			call, err := c.Dial(ctx, b.Addr(), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.WaitCall(ctx, func(ci CallInfo) bool { return ci.State == StateRinging }); err != nil {
				t.Fatal(err)
			}
			want := 200
			if release {
				close(hold)
			} else {
				want = 487
				if err := call.Cancel(ctx); err != nil {
					t.Fatalf("Cancel: %v", err)
				}
			}
			res, err := call.WaitFinal(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != want {
				t.Errorf("final = %d, want %d", res.StatusCode, want)
			}
			if release {
				if err := call.Bye(ctx); err != nil {
					t.Errorf("BYE: %v", err)
				}
			}
		})
	}
}

func TestReInviteBothWays(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})

	// Caller puts the backend on hold, then resumes.
	res, err := call.ReInvite(ctx, SDP("127.0.0.1", 30000, 2, SendOnly))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("hold: %v %v", res, err)
	}
	if d := Direction(res.Body()); d != RecvOnly {
		t.Errorf("hold answer direction = %q", d)
	}
	res, err = call.ReInvite(ctx, SDP("127.0.0.1", 30000, 3, SendRecv))
	if err != nil || res.StatusCode != 200 || Direction(res.Body()) != SendRecv {
		t.Fatalf("resume: %v %v", res, err)
	}
	if _, err := b.WaitFor(ctx, func(m Msg) bool {
		return m.Method == "ACK" && m.CSeqMethod() == "ACK" && strings.HasPrefix(m.Header("CSeq"), "3 ")
	}); err != nil {
		t.Errorf("no ACK for the second re-INVITE: %v", err)
	}

	// Backend puts the caller on hold.
	res, err = b.ReInvite(ctx, call.CallID(), SDP("127.0.0.1", 40000, 5, Inactive))
	if err != nil || res.StatusCode != 200 || Direction(res.Body()) != Inactive {
		t.Fatalf("backend hold: %v %v", res, err)
	}
	// A re-INVITE without SDP: the 200 carries an offer, the ACK the answer.
	res, err = b.ReInvite(ctx, call.CallID(), nil)
	if err != nil || res.StatusCode != 200 || len(res.Body()) == 0 {
		t.Fatalf("offerless re-INVITE: %v %v", res, err)
	}
	ack, err := c.WaitFor(ctx, func(m Msg) bool { return m.Method == "ACK" && len(m.Body) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ack.Body, []byte("v=0")) {
		t.Errorf("ACK body = %q", ack.Body)
	}
	if err := call.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestReInviteRejectedByPolicy(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{Answer: Always(Plan{
		InDialog: map[sip.RequestMethod]int{sip.INVITE: 488, sip.INFO: 415},
	})})
	c := newCaller(t, CallerOptions{})
	call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})
	res, err := call.ReInvite(ctx, SDP("127.0.0.1", 30000, 2, SendOnly))
	if err != nil || res.StatusCode != 488 {
		t.Fatalf("re-INVITE: %v %v", res, err)
	}
	res, err = call.Info(ctx, []byte("Signal=1\r\nDuration=100\r\n"))
	if err != nil || res.StatusCode != 415 {
		t.Fatalf("INFO: %v %v", res, err)
	}
	// The dialog survives a rejected re-INVITE.
	if err := call.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDelayedOffer(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	answer := SDP("127.0.0.1", 31000, 1, SendRecv)
	call, info := answered(t, ctx, c, b.Addr(), b, DialOptions{DelayedOffer: true, AckSDP: answer})
	if info.Invite != nil {
		t.Errorf("INVITE body = %q, want none", info.Invite)
	}
	if fin := call.Final(); len(fin.Body()) == 0 {
		t.Error("200 carries no offer")
	}
	if !bytes.Equal(info.AckBody, answer) {
		t.Errorf("ACK body = %q, want %q", info.AckBody, answer)
	}
}

func TestReliableProvisional(t *testing.T) {
	plan := Plan{Provisional: []Provisional{
		{Code: 100},
		{Code: 183, SDP: true, Reliable: true},
		{Code: 180, Reliable: true},
	}}
	t.Run("supported", func(t *testing.T) {
		ctx := ctxT(t)
		b := newBackend(t, BackendOptions{Answer: Always(plan)})
		c := newCaller(t, CallerOptions{})
		call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})
		// The 100 and the 183 leave back to back and may be delivered in
		// either order; each reliable one waits for the PRACK of the last.
		var got []*sip.Response
		for _, r := range call.Responses() {
			if r.StatusCode != 100 {
				got = append(got, r)
			}
		}
		if cs := codes(got); len(cs) != 3 || cs[0] != 183 || cs[1] != 180 || cs[2] != 200 {
			t.Fatalf("responses = %v", codes(call.Responses()))
		}
		for i, want := range []string{"1", "2"} {
			r := got[i]
			if !hasOption(r, "Require", "100rel") || headerValue(r, "RSeq") != want {
				t.Errorf("%d: Require %q RSeq %q", r.StatusCode, headerValue(r, "Require"), headerValue(r, "RSeq"))
			}
		}
		if len(got[0].Body()) == 0 {
			t.Error("183 without SDP")
		}
		for _, rseq := range []string{"1", "2"} {
			if _, err := b.WaitFor(ctx, func(m Msg) bool {
				return m.Method == "PRACK" && strings.HasPrefix(m.Header("RAck"), rseq+" ")
			}); err != nil {
				t.Errorf("no PRACK for RSeq %s: %v", rseq, err)
			}
		}
		if err := call.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		ctx := ctxT(t)
		b := newBackend(t, BackendOptions{Answer: Always(plan)})
		c := newCaller(t, CallerOptions{})
		call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{No100rel: true})
		for _, r := range call.Responses() {
			if hasOption(r, "Require", "100rel") || headerValue(r, "RSeq") != "" {
				t.Errorf("%d sent reliably to a UAC without 100rel", r.StatusCode)
			}
		}
		for _, m := range b.Received() {
			if m.Method == "PRACK" {
				t.Error("PRACK without reliable provisional")
			}
		}
	})
	t.Run("delayed offer", func(t *testing.T) {
		ctx := ctxT(t)
		b := newBackend(t, BackendOptions{Answer: Always(Plan{Provisional: []Provisional{{Code: 183, SDP: true, Reliable: true}}})})
		c := newCaller(t, CallerOptions{})
		call, info := answered(t, ctx, c, b.Addr(), b, DialOptions{DelayedOffer: true})
		prack, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "PRACK" })
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(prack.Body, []byte("v=0")) {
			t.Errorf("PRACK carries no answer: %q", prack.Body)
		}
		if len(info.AckBody) != 0 {
			t.Errorf("ACK repeats the answer: %q", info.AckBody)
		}
		_ = call.Bye(ctx)
	})
}

func TestInDialogRequests(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	call, _ := answered(t, ctx, c, b.Addr(), b, DialOptions{})

	check := func(name string, res *sip.Response, err error, want int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", name, res.StatusCode, want)
		}
	}
	res, err := call.Info(ctx, []byte("Signal=5\r\nDuration=160\r\n"))
	check("INFO", res, err, 200)
	res, err = call.Message(ctx, []byte("hello"))
	check("MESSAGE", res, err, 200)
	res, err = call.Refer(ctx, "sip:300@127.0.0.1")
	check("REFER", res, err, 202)
	res, err = call.Update(ctx, SDP("127.0.0.1", 30000, 2, SendOnly))
	check("UPDATE", res, err, 200)
	if Direction(res.Body()) != RecvOnly {
		t.Errorf("UPDATE answer direction = %q", Direction(res.Body()))
	}
	res, err = b.Request(ctx, call.CallID(), sip.NOTIFY, []byte("SIP/2.0 200 OK\r\n"))
	check("NOTIFY", res, err, 200)
	res, err = b.Request(ctx, call.CallID(), sip.INFO, []byte("Signal=#\r\n"))
	check("backend INFO", res, err, 200)
	res, err = b.Request(ctx, call.CallID(), sip.REFER, nil, sip.NewHeader("Refer-To", "<sip:400@127.0.0.1>"))
	check("backend REFER", res, err, 202)

	for _, want := range []struct{ method, ctype string }{
		{"INFO", "application/dtmf-relay"},
		{"MESSAGE", "text/plain"},
		{"REFER", ""},
		{"UPDATE", "application/sdp"},
	} {
		m, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == want.method })
		if err != nil {
			t.Fatal(err)
		}
		if m.Header("Content-Type") != want.ctype {
			t.Errorf("%s Content-Type = %q", want.method, m.Header("Content-Type"))
		}
	}
	notify, err := c.WaitFor(ctx, func(m Msg) bool { return m.Method == "NOTIFY" })
	if err != nil {
		t.Fatal(err)
	}
	if notify.Header("Event") != "refer" || string(notify.Body) != "SIP/2.0 200 OK\r\n" {
		t.Errorf("NOTIFY:\n%s", notify.Raw)
	}
	if err := call.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := call.Info(ctx, nil); err != ErrNoDialog {
		t.Errorf("INFO after BYE = %v, want ErrNoDialog", err)
	}
}

func TestOptionsSwitchable(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})
	res, err := c.Options(ctx, b.Addr())
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	b.SetOptionsReply(503)
	if res, err = c.Options(ctx, b.Addr()); err != nil || res.StatusCode != 503 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}

	b.SetOptionsReply(0)
	before := len(b.Received())
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if res, err := c.Options(short, b.Addr()); err == nil {
		t.Fatalf("silent backend answered %d", res.StatusCode)
	}
	if _, err := b.WaitFor(ctx, func(m Msg) bool { return m.Seq > uint64(before) && m.Method == "OPTIONS" }); err != nil {
		t.Fatal(err)
	}

	b.SetOptionsReply(200)
	if res, err = c.Options(ctx, b.Addr()); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
}

func TestNoResponse(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{Answer: Always(Plan{NoResponse: true})})
	c := newCaller(t, CallerOptions{})
	call, err := c.Dial(ctx, b.Addr(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "INVITE" })
	if err != nil {
		t.Fatal(err)
	}
	// A CANCEL for it (sent raw: Cancel waits for a provisional) is
	// swallowed too.
	inv := parseRaw(first.Raw)
	cancelMsg := strings.Replace(strings.SplitN(string(inv.Raw), "\r\n", 2)[0], "INVITE", "CANCEL", 1) + "\r\n"
	for _, h := range inv.Headers {
		switch {
		case strings.HasPrefix(h, "CSeq:"):
			cancelMsg += "CSeq: 1 CANCEL\r\n"
		case strings.HasPrefix(h, "Via:"), strings.HasPrefix(h, "From:"), strings.HasPrefix(h, "To:"),
			strings.HasPrefix(h, "Call-ID:"), strings.HasPrefix(h, "Max-Forwards:"):
			cancelMsg += h + "\r\n"
		}
	}
	cancelMsg += "Content-Length: 0\r\n\r\n"
	if err := c.Send(ctx, []byte(cancelMsg), b.Addr()); err != nil {
		t.Fatal(err)
	}
	cm, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "CANCEL" })
	if err != nil {
		t.Fatal(err)
	}
	// The INVITE retransmission (Timer A = T1 = 500 ms) comes well after
	// sipgo's automatic 100 Trying (200 ms) or an answer to the CANCEL
	// would have gone out: seeing it, and nothing at the caller, proves
	// the backend stayed silent.
	if _, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "INVITE" && m.Seq > cm.Seq }); err != nil {
		t.Fatal(err)
	}
	if got := c.Received(); len(got) != 0 {
		t.Errorf("caller received %d messages, first:\n%s", len(got), got[0].Raw)
	}
	if got := call.Responses(); len(got) != 0 {
		t.Errorf("responses = %v", codes(got))
	}
	calls := b.Calls()
	if len(calls) != 1 || calls[0].State != StateIgnored {
		t.Errorf("calls = %+v", calls)
	}
}

func TestTCP(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{TCP: "127.0.0.1:0", Answer: Always(Plan{
		Provisional: []Provisional{{Code: 183, SDP: true, Reliable: true}},
	})})
	c := newCaller(t, CallerOptions{Transport: "tcp"})
	call, info := answered(t, ctx, c, b.TCPAddr(), b, DialOptions{})
	if info.Transport != "TCP" {
		t.Errorf("transport = %q", info.Transport)
	}
	if got := codes(call.Responses()); len(got) < 2 || got[len(got)-2] != 183 {
		t.Errorf("responses = %v", got)
	}
	if prack, err := b.WaitFor(ctx, func(m Msg) bool { return m.Method == "PRACK" }); err != nil || prack.Transport != "TCP" {
		t.Errorf("PRACK over TCP: %v %v", prack.Transport, err)
	}
	fin := call.Final()
	if !bytes.Equal(fin.Body(), call.Responses()[len(call.Responses())-2].Body()) {
		t.Error("200 does not repeat the SDP answer of the 183")
	}
	if res, err := call.Info(ctx, []byte("Signal=1\r\n")); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO: %v %v", res, err)
	}
	if err := b.Bye(ctx, call.CallID()); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, ctx, call)
	m, err := c.WaitFor(ctx, func(m Msg) bool { return m.Method == "BYE" })
	if err != nil {
		t.Fatal(err)
	}
	if m.Transport != "TCP" {
		t.Errorf("BYE over %s", m.Transport)
	}
	// The second call reuses nothing of the first.
	call2, _ := answered(t, ctx, c, b.TCPAddr(), b, DialOptions{})
	if err := call2.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOtherLoopbackSource(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{Addr: "127.0.0.66:0"})
	call, info := answered(t, ctx, c, b.Addr(), b, DialOptions{})
	if host, _, _ := net.SplitHostPort(info.Source); host != "127.0.0.66" {
		t.Errorf("source = %q", info.Source)
	}
	if err := b.Bye(ctx, call.CallID()); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, ctx, call)
}

func TestRawSend(t *testing.T) {
	ctx := ctxT(t)
	b := newBackend(t, BackendOptions{})
	c := newCaller(t, CallerOptions{})

	// Garbage is recorded, answered by nothing, and harms nothing.
	garbage := []byte("\x00\xffNOT SIP AT ALL\r\n\r\n")
	if err := c.Send(ctx, garbage, b.Addr()); err != nil {
		t.Fatal(err)
	}
	m, err := b.WaitFor(ctx, func(m Msg) bool { return bytes.Equal(m.Raw, garbage) })
	if err != nil {
		t.Fatal(err)
	}
	if m.Method != "" || m.Status != 0 || m.Source != c.Addr() {
		t.Errorf("garbage parsed as %+v", m)
	}

	host, port, _ := net.SplitHostPort(c.Addr())
	raw := "OPTIONS sip:" + b.Addr() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + net.JoinHostPort(host, port) + ";branch=z9hG4bK-raw-1\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:raw@" + host + ">;tag=raw1\r\n" +
		"To: <sip:" + b.Addr() + ">\r\n" +
		"i: raw-call-1\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"l: 0\r\n\r\n"
	if err := c.Send(ctx, []byte(raw), b.Addr()); err != nil {
		t.Fatal(err)
	}
	res, err := c.WaitFor(ctx, func(m Msg) bool { return m.CallID() == "raw-call-1" })
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.CSeqMethod() != "OPTIONS" || res.Header("Server") != "sipua-backend" {
		t.Errorf("response:\n%s", res.Raw)
	}
	got, err := b.WaitFor(ctx, func(m Msg) bool { return m.CallID() == "raw-call-1" })
	if err != nil {
		t.Fatal(err)
	}
	if got.Header("Call-ID") != "raw-call-1" || len(got.HeaderValues("via")) != 1 {
		t.Errorf("recorded:\n%s", got.Raw)
	}

	// An INVITE without Contact cannot start a dialog: 400.
	noContact := strings.NewReplacer("OPTIONS sip:", "INVITE sip:", "CSeq: 1 OPTIONS", "CSeq: 1 INVITE",
		"raw-call-1", "raw-call-3", "z9hG4bK-raw-1", "z9hG4bK-raw-3").Replace(raw)
	if err := c.Send(ctx, []byte(noContact), b.Addr()); err != nil {
		t.Fatal(err)
	}
	res, err = c.WaitFor(ctx, func(m Msg) bool { return m.CallID() == "raw-call-3" && m.Status >= 200 })
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 400 {
		t.Errorf("INVITE without Contact answered %d", res.Status)
	}

	// TCP raw send to a TCP backend: the response comes back on the
	// connection and is recorded.
	bt := newBackend(t, BackendOptions{TCP: "127.0.0.1:0"})
	ct := newCaller(t, CallerOptions{Transport: "tcp"})
	th, _, _ := net.SplitHostPort(ct.Addr())
	rawTCP := strings.ReplaceAll(raw, "SIP/2.0/UDP "+net.JoinHostPort(host, port), "SIP/2.0/TCP "+th+":9")
	rawTCP = strings.ReplaceAll(rawTCP, "raw-call-1", "raw-call-2")
	if err := ct.Send(ctx, []byte(rawTCP), bt.TCPAddr()); err != nil {
		t.Fatal(err)
	}
	res, err = ct.WaitFor(ctx, func(m Msg) bool { return m.CallID() == "raw-call-2" })
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Transport != "TCP" {
		t.Errorf("TCP response:\n%s", res.Raw)
	}
}

func TestCloseWithCallInProgress(t *testing.T) {
	ctx := ctxT(t)
	b, err := NewBackend(BackendOptions{Answer: Always(Plan{Provisional: []Provisional{{Code: 180}}, Delay: time.Hour})})
	if err != nil {
		t.Fatal(err)
	}
	c := newCaller(t, CallerOptions{})
	call, err := c.Dial(ctx, b.Addr(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.WaitStatus(ctx, 180); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Bye(ctx, call.CallID()); err == nil {
		t.Error("Bye after Close succeeded")
	}
}

func TestWaitForContext(t *testing.T) {
	b := newBackend(t, BackendOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.WaitFor(ctx, func(Msg) bool { return true }); err != context.Canceled {
		t.Errorf("WaitFor = %v", err)
	}
	if _, err := b.WaitCall(ctx, func(CallInfo) bool { return true }); err != context.Canceled {
		t.Errorf("WaitCall = %v", err)
	}
}

func TestParseRaw(t *testing.T) {
	raw := "SIP/2.0 180 Ringing\r\n" +
		"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.2\r\n" +
		"Subject: folded\r\n  line\r\n" +
		"CSeq: 7 invite\r\n" +
		"Content-Length: 4\r\n\r\nbodyEXTRA"
	m := parseRaw([]byte(raw))
	if m.Status != 180 || m.Method != "" || m.IsRequest() {
		t.Errorf("start line parsed as %q %d", m.Method, m.Status)
	}
	if v := m.HeaderValues("Via"); len(v) != 2 || !strings.Contains(v[0], "10.0.0.1") {
		t.Errorf("Via = %q", v)
	}
	if m.Header("subject") != "folded line" {
		t.Errorf("Subject = %q", m.Header("subject"))
	}
	if m.CSeqMethod() != "INVITE" || string(m.Body) != "body" {
		t.Errorf("CSeq method %q body %q", m.CSeqMethod(), m.Body)
	}
	for _, bad := range []string{"", "\r\n\r\n", "x", "SIP/2.0 abc\r\n\r\n", "INVITE\r\n", "A B C D\r\nno colon\r\n\r\n"} {
		m := parseRaw([]byte(bad))
		if m.Method != "" || m.Status != 0 {
			t.Errorf("%q parsed as %q %d", bad, m.Method, m.Status)
		}
	}
}

func TestStreamFraming(t *testing.T) {
	r := newRecorder(0)
	msg1 := "OPTIONS sip:a SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc"
	msg2 := "MESSAGE sip:a SIP/2.0\r\nCall-ID: 2\r\nl: 2\r\n\r\nhi"
	stream := "\r\n\r\n" + msg1 + msg2
	la := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	ra := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
	for i := 0; i < len(stream); i += 7 {
		r.feed("TCP", la, ra, []byte(stream[i:min(i+7, len(stream))]))
	}
	got := r.all()
	if len(got) != 2 || string(got[0].Raw) != msg1 || string(got[1].Raw) != msg2 || got[1].Seq != 2 {
		t.Fatalf("framed %d messages: %+v", len(got), got)
	}
	// An endless header is dropped once it exceeds the buffer bound.
	for i := 0; i < maxStreamBuffer/1024+2; i++ {
		r.feed("TCP", la, ra, bytes.Repeat([]byte("A"), 1024))
	}
	r.mu.Lock()
	for k, b := range r.streams {
		if b.Len() > maxStreamBuffer {
			t.Errorf("stream %s buffers %d bytes", k, b.Len())
		}
	}
	r.mu.Unlock()
	// A bad Content-Length records the rest and resets the stream.
	ra2 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3}
	r.feed("TCP", la, ra2, []byte("INFO sip:a SIP/2.0\r\nContent-Length: -5\r\n\r\nxyz"))
	if got := r.all(); len(got) != 3 || got[2].Method != "INFO" {
		t.Errorf("bad Content-Length: %d messages", len(got))
	}
}

func TestRecorderLimit(t *testing.T) {
	r := newRecorder(10)
	for i := 0; i < 25; i++ {
		r.feed("UDP", nil, nil, []byte("x"))
	}
	got := r.all()
	if len(got) > 10 || got[len(got)-1].Seq != 25 {
		t.Errorf("kept %d, last seq %d", len(got), got[len(got)-1].Seq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m, err := r.waitFor(ctx, func(m Msg) bool { return m.Seq >= 20 })
	if err != nil || m.Seq != 20 {
		t.Errorf("waitFor = %d, %v", m.Seq, err)
	}
	none := newRecorder(-1)
	none.feed("UDP", nil, nil, []byte("x"))
	if len(none.all()) != 0 {
		t.Error("negative limit recorded")
	}
}

func TestSDP(t *testing.T) {
	s := string(SDP("192.0.2.1", 4000, 3, ""))
	for _, want := range []string{
		"v=0\r\n", " 3 IN IP4 192.0.2.1\r\n", "c=IN IP4 192.0.2.1\r\n",
		"m=audio 4000 RTP/AVP 0 8 101\r\n", "a=rtpmap:101 telephone-event/8000\r\n", "a=sendrecv\r\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("SDP lacks %q:\n%s", want, s)
		}
	}
	if !strings.HasSuffix(s, "\r\n") || strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Error("SDP lines must end in CRLF")
	}
	s6 := string(SDP("::1", 4000, 1, Inactive))
	if !strings.Contains(s6, "c=IN IP6 ::1\r\n") || Direction([]byte(s6)) != Inactive {
		t.Errorf("IPv6 SDP:\n%s", s6)
	}
	o1 := strings.Fields(strings.Split(s, "\r\n")[1])[1]
	o2 := strings.Fields(strings.Split(string(SDP("192.0.2.1", 4000, 4, SendOnly)), "\r\n")[1])[1]
	if o1 != o2 {
		t.Errorf("session id changed across versions: %s %s", o1, o2)
	}
	for offer, want := range map[string]string{SendOnly: RecvOnly, RecvOnly: SendOnly, Inactive: Inactive, SendRecv: SendRecv} {
		if got := answerDirection(SDP("192.0.2.1", 1, 1, offer)); got != want {
			t.Errorf("answer to %s = %s, want %s", offer, got, want)
		}
	}
	if Direction(nil) != SendRecv {
		t.Error("no attribute means sendrecv")
	}
}
