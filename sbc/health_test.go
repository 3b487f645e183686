package sbc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/policy"
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

// target.passive, without sockets: a call's answer is proof of life, an
// INVITE without answer is one failure counted with the pings.
func TestTargetPassive(t *testing.T) {
	h := policy.Health{Interval: policy.Duration{Duration: 5 * time.Second}, Up: 2, Down: 3}
	tg := &target{up: true}
	fail := func(n int) {
		for i := 0; i < n; i++ {
			tg.passive(false, h)
		}
	}
	fail(2)
	if changed, up := tg.passive(true, h); changed || !up {
		t.Fatalf("answered call on an up target: changed %v up %v", changed, up)
	}
	fail(2) // the answer reset the failure run: 2 < Down
	if !tg.isUp() {
		t.Fatal("down after 2 failures following an answered call (Down = 3)")
	}
	if changed, up := tg.passive(false, h); !changed || up {
		t.Fatalf("3rd INVITE timeout in a row: changed %v up %v, want down", changed, up)
	}
	// A down target that answers a call is up at once, without Up pings.
	if changed, up := tg.passive(true, h); !changed || !up {
		t.Fatalf("down target answered a call: changed %v up %v, want up", changed, up)
	}
	// Pings and calls count together.
	tg.observe(false, h)
	tg.observe(false, h)
	if changed, up := tg.passive(false, h); !changed || up {
		t.Fatalf("2 failed pings and an INVITE timeout: changed %v up %v, want down", changed, up)
	}

	// Health checks off: targets are always up, failures not recorded
	// (no ping would bring the target back).
	off := policy.Health{Up: 2, Down: 1}
	tg = &target{up: true}
	for i := 0; i < 10; i++ {
		if _, up := tg.passive(false, off); !up {
			t.Fatalf("health checks off: down after %d INVITE timeouts", i+1)
		}
	}
}

// seen returns when the target last answered (a ping or a call).
func (t *target) seen() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastSeen
}

// INVITEs the target does not answer count as failed health checks: with
// down = 2, two calls that time out take the only target down, and the
// third call is not sent to it (503 at once). The OPTIONS pings are
// answered and come once an hour: only the calls move the state.
func TestHealthInviteTimeoutsTakeTargetDown(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{NoResponse: true})}},
		health:   "  interval = \"1h\"\n  timeout = \"1s\"\n  up = 2\n  down = 2",
	})
	b := e.backends[0]
	tg := e.sbc.state.Load().pools["pbx"].targets[0]
	e.eventually("first ping answered", func() bool { return !tg.seen().IsZero() })
	for i := 1; i <= 3; i++ {
		_, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 503 {
			t.Fatalf("call %d to a target that never answers: final %d, want 503", i, res.StatusCode)
		}
		if want := i < 2; tg.isUp() != want {
			t.Fatalf("after %d unanswered INVITEs (down = 2): up %v, want %v", i, tg.isUp(), want)
		}
	}
	if n := len(b.Calls()); n != 2 {
		t.Fatalf("the target got %d INVITEs, want 2 (none once it was down)", n)
	}
}

// A target marked down that answers a call is up again at once. Call X
// rings at the target; call Y gets no answer and takes the (only) target
// down; then the target answers X with 200: it is up, and the next call
// goes to it. Pings are answered and come once an hour, with up = 1000:
// only the answer to X can bring the target back.
func TestHealthDownTargetAnsweringCallIsUp(t *testing.T) {
	p := newAutoPeer(t)
	e := newEnv(t, envOpts{
		targets: []string{p.addr()},
		health:  "  interval = \"1h\"\n  timeout = \"1s\"\n  up = 1000\n  down = 1",
	})
	tg := e.sbc.state.Load().pools["pbx"].targets[0]
	e.eventually("first ping answered", func() bool { return !tg.seen().IsZero() })
	sdp := sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")

	x, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sdp})
	if err != nil {
		t.Fatal(err)
	}
	invX := p.next(e.ctx, t)
	p.respond(t, invX, 180)
	if _, err := x.WaitStatus(e.ctx, 180); err != nil {
		t.Fatalf("call X: no 180: %v", err)
	}

	y, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sdp})
	if err != nil {
		t.Fatal(err)
	}
	p.next(e.ctx, t) // Y: never answered
	if res, err := y.WaitFinal(e.ctx); err != nil || res.StatusCode != 503 {
		t.Fatalf("call Y to a target that does not answer it: %v %v, want 503", res, err)
	}
	if tg.isUp() {
		t.Fatal("target still up after an unanswered INVITE (down = 1)")
	}

	p.respond(t, invX, 200)
	if res, err := x.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("call X: %v %v, want 200", res, err)
	}
	if !tg.isUp() {
		t.Fatal("a down target that answered a call is still down")
	}
	if err := x.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}

	z, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sdp})
	if err != nil {
		t.Fatal(err)
	}
	p.respond(t, p.next(e.ctx, t), 486)
	if res, err := z.WaitFinal(e.ctx); err != nil || res.StatusCode != 486 {
		t.Fatalf("call Z after the target came back: %v %v, want the target's 486", res, err)
	}
}

// autoPeer is a UDP backend the test drives by hand: it answers every
// request but INVITE and ACK with 200 at once (OPTIONS pings, BYE), and
// hands each new INVITE to the test, which answers it with respond.
type autoPeer struct {
	conn    *net.UDPConn
	invites chan rawInvite
}

type rawInvite struct {
	req  *sip.Request
	from *net.UDPAddr
}

func newAutoPeer(t *testing.T) *autoPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(backendIP)})
	if err != nil {
		t.Fatal(err)
	}
	p := &autoPeer{conn: conn, invites: make(chan rawInvite, 16)}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		seen := map[string]bool{}
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok || req.CallID() == nil {
				continue
			}
			switch req.Method {
			case sip.ACK:
			case sip.INVITE:
				if cid := req.CallID().Value(); !seen[cid] { // not a retransmission
					seen[cid] = true
					select {
					case p.invites <- rawInvite{req: req, from: from}:
					default: // the test stopped taking them
					}
				}
			default:
				p.write(req, from, 200, nil)
			}
		}
	}()
	return p
}

func (p *autoPeer) addr() string { return p.conn.LocalAddr().String() }

// next returns the next new INVITE.
func (p *autoPeer) next(ctx context.Context, t *testing.T) rawInvite {
	t.Helper()
	select {
	case inv := <-p.invites:
		return inv
	case <-ctx.Done():
		t.Fatal("the raw peer got no INVITE")
		return rawInvite{}
	}
}

// respond answers an INVITE; a 2xx carries an SDP answer.
func (p *autoPeer) respond(t *testing.T, inv rawInvite, code int) {
	t.Helper()
	var body []byte
	if code >= 200 && code < 300 {
		body = sipua.SDP("192.0.2.20", 40002, 1, "sendrecv")
	}
	if err := p.write(inv.req, inv.from, code, body); err != nil {
		t.Fatal(err)
	}
}

func (p *autoPeer) write(req *sip.Request, to *net.UDPAddr, code int, body []byte) error {
	reason := map[int]string{180: "Ringing", 200: "OK", 486: "Busy Here"}[code]
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if code > 100 && !res.To().Params.Has("tag") {
		// One dialog per INVITE: the tag is derived from its Call-ID.
		h := fnv.New32a()
		h.Write([]byte(req.CallID().Value()))
		res.To().Params.Add("tag", fmt.Sprintf("raw%08x", h.Sum32()))
	}
	if code > 100 && code < 300 && req.Method == sip.INVITE {
		me := p.conn.LocalAddr().(*net.UDPAddr)
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: me.IP.String(), Port: me.Port}})
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	res.SetBody(body)
	_, err := p.conn.WriteToUDP([]byte(res.String()), to)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
