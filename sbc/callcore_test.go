package sbc

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// freeUDPTCP finds a port free for both UDP and TCP on ip.
func freeUDPTCP(t *testing.T, ip string) string {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// Socket-level tests of the call core's races and failures. rawPeer is a
// backend scripted message by message: the tests decide exactly which
// response goes out when, which a real UA would not do (forks, late
// answers, retransmitted 2xx).

type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
	in   chan *sip.Request
	resp chan *sip.Response
	last net.Addr
	mu   sync.Mutex
}

func newRawPeer(t *testing.T, addr string) *rawPeer {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, conn: c, in: make(chan *sip.Request, 64), resp: make(chan *sip.Response, 64)}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		parser := sip.NewParser()
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.last = from
			p.mu.Unlock()
			m, err := parser.ParseSIP(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			switch m := m.(type) {
			case *sip.Request:
				p.in <- m
			case *sip.Response:
				p.resp <- m
			}
		}
	}()
	return p
}

func (p *rawPeer) addr() string { return p.conn.LocalAddr().String() }

// wait returns the next request of the given method, skipping others
// (retransmissions of what the test already saw).
func (p *rawPeer) wait(ctx context.Context, method sip.RequestMethod, match func(*sip.Request) bool) *sip.Request {
	p.t.Helper()
	for {
		select {
		case r := <-p.in:
			if r.Method == method && (match == nil || match(r)) {
				return r
			}
		case <-ctx.Done():
			p.t.Fatalf("raw peer: no %s", method)
			return nil
		}
	}
}

// send answers req with a response the test shapes.
func (p *rawPeer) respond(req *sip.Request, code int, tag string, body []byte, hdrs ...sip.Header) *sip.Response {
	p.t.Helper()
	res := sip.NewResponseFromRequest(req, code, "", nil)
	if tag != "" {
		res.To().Params.Add("tag", tag) // replaces the random one sipgo adds
	}
	if code > 100 && code < 300 {
		host, port, _ := net.SplitHostPort(p.addr())
		var pn int
		fmt.Sscan(port, &pn)
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: host, Port: pn}})
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if len(body) > 0 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	res.SetBody(body)
	p.write(res.String(), req)
	return res
}

func (p *rawPeer) write(msg string, req *sip.Request) {
	p.t.Helper()
	dst, err := net.ResolveUDPAddr("udp", req.Source())
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.WriteTo([]byte(msg), dst); err != nil {
		p.t.Fatal(err)
	}
}

func toTag(r *sip.Request) string { return tagOf(r.To().Params) }

// rawEnv starts an SBC whose only backend is a raw peer (plus, optionally,
// real backends listed after it).
// The raw peer is the pool's first target, with a weight that makes it
// the first choice.
func rawEnv(t *testing.T, o envOpts, more ...sipua.BackendOptions) (*env, *rawPeer) {
	peer := newRawPeer(t, backendIP+":0")
	o.backends = append([]sipua.BackendOptions{}, more...)
	prev := o.edit
	o.edit = func(pb *testpolicy.Policy) {
		w := 1000000
		pool := pb.Pool("pbx")
		pool.Targets = append([]testpolicy.Target{{Address: peer.addr(), Weight: &w}}, pool.Targets...)
		if prev != nil {
			prev(pb)
		}
	}
	return newEnv(t, o), peer
}

func TestForkSecond2xxAckedAndByed(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	peer.respond(inv, 180, "x", nil)
	peer.respond(inv, 200, "x", sipua.SDP("10.0.0.5", 30000, 1, "sendrecv"))
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "x" })
	// A second answer, from another fork of the same INVITE.
	peer.respond(inv, 200, "y", sipua.SDP("10.0.0.6", 30002, 1, "sendrecv"))
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "y" })
	bye := peer.wait(e.ctx, sip.BYE, nil)
	if toTag(bye) != "y" {
		t.Fatalf("BYE went to dialog %q, want the extra fork y", toTag(bye))
	}
	peer.respond(bye, 200, "", nil)
	// The call itself is untouched: the caller's BYE reaches dialog x.
	go call.Bye(e.ctx)
	bye = peer.wait(e.ctx, sip.BYE, nil)
	if toTag(bye) != "x" {
		t.Fatalf("caller's BYE went to %q", toTag(bye))
	}
	peer.respond(bye, 200, "", nil)
	e.eventually("call counted answered", func() bool { return e.calls("answered") == 1 })
}

func TestTargetTimeoutThenLate200(t *testing.T) {
	// The raw peer is tried first (weight), stays silent past the target
	// timeout, then rings and answers while the second target has the
	// call.
	e, peer := rawEnv(t, envOpts{}, sipua.BackendOptions{Answer: sipua.Always(sipua.Plan{Delay: 200 * time.Millisecond})})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	// Wait until the SBC has failed over to the real backend.
	e.backendMsg(e.backends[0], isReq("INVITE"))
	peer.respond(inv, 180, "late", nil)
	cancel := peer.wait(e.ctx, sip.CANCEL, nil)
	peer.respond(cancel, 200, "", nil)
	// The 200 crosses the CANCEL: it must be ACKed and BYEd.
	peer.respond(inv, 200, "late", sipua.SDP("10.0.0.5", 30000, 1, "sendrecv"))
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "late" })
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	e.backendMsg(e.backends[0], isReq("ACK"))
	call.Bye(e.ctx)
	e.eventually("one answered call", func() bool { return e.calls("answered") == 1 })
}

func TestReInviteAckResentOn2xxRetransmission(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	peer.respond(inv, 200, "x", sipua.SDP("10.0.0.5", 30000, 1, "sendrecv"))
	if _, err := call.WaitFinal(e.ctx); err != nil {
		t.Fatal(err)
	}
	peer.wait(e.ctx, sip.ACK, nil)
	done := make(chan *sip.Response, 1)
	go func() {
		res, _ := call.ReInvite(e.ctx, sipua.SDP("192.0.2.10", 40000, 2, "sendonly"))
		done <- res
	}()
	reinv := peer.wait(e.ctx, sip.INVITE, nil)
	ok := peer.respond(reinv, 200, "", sipua.SDP("10.0.0.5", 30000, 2, "recvonly"))
	ack := peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return r.CSeq().SeqNo == reinv.CSeq().SeqNo })
	// The ACK "was lost": the peer retransmits its 2xx and must get the
	// same ACK again.
	peer.write(ok.String(), reinv)
	again := peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return r.CSeq().SeqNo == reinv.CSeq().SeqNo })
	if again.CSeq().SeqNo != ack.CSeq().SeqNo || toTag(again) != toTag(ack) {
		t.Fatalf("re-sent ACK %v differs from %v", again.StartLine(), ack.StartLine())
	}
	if res := <-done; res == nil || res.StatusCode != 200 {
		t.Fatalf("caller's re-INVITE: %v", res)
	}
}

func TestInDialog481EndsBothLegs(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		InDialog: map[sip.RequestMethod]int{sip.INFO: 481},
	})}}})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	e.backendMsg(e.backends[0], isReq("ACK"))
	r, err := call.Info(e.ctx, []byte("Signal=5"))
	if r == nil || r.StatusCode != 481 {
		t.Fatalf("INFO: %v %v, want the backend's 481", r, err)
	}
	// The SBC ends the call: a BYE to the caller and to the backend.
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("caller never got a BYE")
	}
	e.backendMsg(e.backends[0], isReq("BYE"))
	e.eventually("call ended", func() bool { return e.sbc.calls.len() == 0 })
}

func TestReplacesMappedToOtherLeg(t *testing.T) {
	e := newEnv(t, envOpts{})
	first, res := e.dial(sipua.DialOptions{User: "1001"})
	if res.StatusCode != 200 {
		t.Fatalf("first call %d", res.StatusCode)
	}
	b := e.backends[0]
	binv := e.backendMsg(b, isReq("INVITE"))
	sbcTag := tagIn(res.To().Value())
	replaces := fmt.Sprintf("%s;to-tag=%s;from-tag=%s", first.CallID(), sbcTag, first.Tag())
	second, res := e.dial(sipua.DialOptions{User: "1001", Headers: []sip.Header{sip.NewHeader("Replaces", replaces)}})
	if res.StatusCode != 200 {
		t.Fatalf("INVITE with Replaces: %d", res.StatusCode)
	}
	inv2 := e.backendMsg(b, func(m sipua.Msg) bool { return m.Method == "INVITE" && m.Header("Replaces") != "" })
	got := inv2.Header("Replaces")
	info, _ := b.Call(binv.Header("Call-ID"))
	want := fmt.Sprintf("%s;to-tag=%s;from-tag=%s", binv.Header("Call-ID"), info.Tag, tagIn(binv.Header("From")))
	if got != want {
		t.Fatalf("backend got Replaces %q, want %q", got, want)
	}
	if strings.Contains(got, first.CallID()) {
		t.Fatal("the caller's Call-ID leaked")
	}
	// A Replaces naming no dialog is refused with 481.
	_, res = e.dial(sipua.DialOptions{Headers: []sip.Header{sip.NewHeader("Replaces", "nope;to-tag=a;from-tag=b")}})
	if res.StatusCode != 481 {
		t.Fatalf("unknown Replaces: %d, want 481", res.StatusCode)
	}
	second.Bye(e.ctx)
	first.Bye(e.ctx)
}

// bigSDP is an SDP offer of about 2.2 KB (many codecs and candidates).
func bigSDP(ip string) []byte {
	var b strings.Builder
	b.Write(sipua.SDP(ip, 40000, 1, "sendrecv"))
	for i := 0; b.Len() < 2200; i++ {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp 2130706431 %s %d typ host\r\n", i, ip, 41000+i)
	}
	return []byte(b.String())
}

func TestBigInviteAndBig200OverUDP(t *testing.T) {
	big200 := bigSDP("10.0.0.7")
	// The backend listens on UDP and TCP at the same address, as the
	// pool's tcp_for_large expects.
	addr := freeUDPTCP(t, backendIP)
	// Media passes untouched (anchoring would trim the candidates, and
	// the INVITE would fit in a datagram).
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{UDP: addr, TCP: addr, Answer: sipua.Always(sipua.Plan{Body: big200})}},
		edit: func(p *testpolicy.Policy) { p.Extra += "\n[media]\nanchor = false\n" }})
	b := e.backends[0]
	call, res := e.dial(sipua.DialOptions{SDP: bigSDP("192.0.2.10")})
	if res.StatusCode != 200 {
		t.Fatalf("big INVITE: final %d", res.StatusCode)
	}
	inv := e.backendMsg(b, isReq("INVITE"))
	if inv.Transport != "TCP" {
		t.Errorf("the 2.2 KB INVITE reached the backend over %s, want TCP", inv.Transport)
	}
	if !strings.Contains(string(res.Body()), "10.0.0.7") || len(res.Body()) < 2000 {
		t.Errorf("the caller got a %d-byte body", len(res.Body()))
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.eventually("answered", func() bool { return e.calls("answered") == 1 })
}

func TestReloadMidCallTrunkSourcesChanged(t *testing.T) {
	e := newEnv(t, envOpts{})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	e.backendMsg(e.backends[0], isReq("ACK"))
	pb2 := e.pb.Clone()
	pb2.Trunk("carrier").Sources = []string{"127.0.0.99/32"}
	if err := e.sbc.Reload(pb2.Parse(t)); err != nil {
		t.Fatal(err)
	}
	// New calls from the old source are now unknown...
	ctx, cancel := context.WithTimeout(e.ctx, 500*time.Millisecond)
	defer cancel()
	if c2, err := e.caller.Dial(ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")}); err == nil {
		if r, err := c2.WaitFinal(ctx); err == nil {
			t.Fatalf("a new call from a removed source was answered %d", r.StatusCode)
		}
	}
	// ...but the call in flight keeps the snapshot it started with: its
	// re-INVITE and BYE are relayed.
	if r, err := call.ReInvite(e.ctx, sipua.SDP("192.0.2.10", 40000, 2, "sendonly")); err != nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE after the reload: %v %v", r, err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatalf("BYE after the reload: %v", err)
	}
	e.backendMsg(e.backends[0], isReq("BYE"))
	if n := e.dropped("classify", "unknown_source"); n == 0 {
		t.Log("the new call was dropped as unknown (expected)")
	}
}

// TestCallRacesStress fires CANCEL, answers and BYEs against each other in
// a bounded loop under -race and checks that nothing deadlocks and that
// every call, dialog and goroutine is gone at the end.
func TestCallRacesStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	callRacesStress(t, 0)
}

// callRacesStress is TestCallRacesStress with udpReaders goroutines
// reading each UDP socket (0: the default). It returns the env.
func callRacesStress(t *testing.T, udpReaders int) *env {
	old := lingerFor.Swap(int64(50 * time.Millisecond))
	t.Cleanup(func() { lingerFor.Store(old) })
	e := newEnv(t, envOpts{udpReaders: udpReaders, backends: []sipua.BackendOptions{{Answer: func(r *sip.Request) sipua.Plan {
		// Vary how the backend answers: ringing then an answer it hangs
		// up at once, busy, or an answer after early media.
		switch r.CallID().Value()[0] % 3 {
		case 0:
			return sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, HangupAfter: time.Millisecond}
		case 1:
			return sipua.Plan{Final: 486}
		}
		return sipua.Plan{Provisional: []sipua.Provisional{{Code: 183}}, Delay: time.Millisecond}
	}}}})
	base := runtime.NumGoroutine()
	const rounds = 60
	var wg sync.WaitGroup
	deadline, cancel := context.WithTimeout(e.ctx, 40*time.Second)
	defer cancel()
	for i := 0; i < rounds; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			call, err := e.caller.Dial(deadline, e.ext, sipua.DialOptions{User: fmt.Sprint(1000 + i), SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
			if err != nil {
				return
			}
			switch i % 4 {
			case 0: // CANCEL at once: crosses the 100/18x/2xx
				call.Cancel(deadline)
			case 1: // CANCEL right after the first provisional
				call.WaitStatus(deadline, 180, 183, 200, 486)
				call.Cancel(deadline)
			}
			res, err := call.WaitFinal(deadline)
			if err == nil && res.StatusCode == 200 {
				call.Bye(deadline) // may cross the backend's own BYE
			}
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
	// Goroutines: INVITE transactions end 64*T1 after their final at the
	// latest; their readers stop at the final. Allow sipgo's timers.
	e.eventually("goroutines back near the start", func() bool { return runtime.NumGoroutine() <= base+20 })
	return e
}

// A request the SBC sends towards the caller follows the caller's route
// set (Record-Route of its INVITE), not the INVITE's source address.
func TestRequestsTowardsCallerFollowRouteSet(t *testing.T) {
	proxy := newRawPeer(t, callerIP+":0")
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{HangupAfter: 10 * time.Millisecond})}}})
	host, port, _ := net.SplitHostPort(proxy.addr())
	var pn int
	fmt.Sscan(port, &pn)
	rr := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: pn, UriParams: params("lr", "")}}
	call, res := e.dial(sipua.DialOptions{Headers: []sip.Header{rr}})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	// The caller's ACK follows the route set too: the proxy passes it on.
	ack := proxy.wait(e.ctx, sip.ACK, nil)
	dst, _ := net.ResolveUDPAddr("udp", e.ext)
	if _, err := proxy.conn.WriteTo([]byte(ack.String()), dst); err != nil {
		t.Fatal(err)
	}
	// The backend hangs up: the SBC's BYE to the caller goes to the
	// proxy that record-routed, with a Route header naming it.
	bye := proxy.wait(e.ctx, sip.BYE, nil)
	if bye.CallID().Value() != call.CallID() {
		t.Fatalf("BYE for call %q, want the caller's %q", bye.CallID().Value(), call.CallID())
	}
	route := bye.GetHeader("Route")
	if route == nil || !strings.Contains(route.Value(), proxy.addr()) {
		t.Fatalf("BYE Route %v, want the record-routed proxy %s", route, proxy.addr())
	}
	proxy.respond(bye, 200, "", nil)
	e.eventually("call ended", func() bool { return e.sbc.calls.len() == 0 })
	// The table forgets a call before its end is counted: wait for the
	// count, whichever result it is.
	e.eventually("call counted", func() bool { return e.calls("answered")+e.calls("ack_timeout") >= 1 })
	if e.calls("answered") != 1 {
		t.Fatal("the call was not counted answered: the ACK did not reach it")
	}
}

// Over TCP, a request towards the caller reuses the connection the caller
// opened while it is up (its Contact names a different port).
func TestRequestsTowardsTCPCallerReuseItsConnection(t *testing.T) {
	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{HangupAfter: 10 * time.Millisecond})}}})
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Transport: "tcp", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tcp, _ := e.sbc.ListenAddr("external", "tcp")
	call, err := c.Dial(e.ctx, tcp.String(), sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("final %v %v", res, err)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the caller never got the BYE")
	}
	var final, bye sipua.Msg
	for _, m := range c.Received() {
		switch {
		case m.Status == 200 && final.Raw == nil:
			final = m
		case m.Method == "BYE":
			bye = m
		}
	}
	if bye.Local != final.Local || bye.Source != final.Source {
		t.Fatalf("BYE arrived on %s from %s, the 200 on %s from %s: the caller's connection was not reused", bye.Local, bye.Source, final.Local, final.Source)
	}
	if bye.Local == c.Addr() {
		t.Fatalf("BYE arrived on the caller's listening address %s", bye.Local)
	}
}

// Another trunk that learned a call's dialog identifiers cannot end it.
func TestInDialogFromAnotherTrunkRefused(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Trunks = append(p.Trunks, testpolicy.Trunk{Name: "other", Realm: "external", Sources: []string{"127.0.0.9/32"}})
	}})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	e.backendMsg(e.backends[0], isReq("ACK"))
	other := e.newCaller("127.0.0.9:0")
	bye := fmt.Sprintf("BYE sip:100@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-forged1\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:caller@127.0.0.1>;tag=%s\r\n"+
		"To: <sip:100@%s>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 99 BYE\r\n"+
		"Content-Length: 0\r\n\r\n",
		e.ext, other.Addr(), call.Tag(), e.ext, tagIn(res.To().Value()), call.CallID())
	if err := other.Send(e.ctx, []byte(bye), e.ext); err != nil {
		t.Fatal(err)
	}
	got, err := other.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Status != 0 })
	if err != nil || got.Status != 481 {
		t.Fatalf("forged BYE from another trunk: %v %v, want 481", got.StartLine, err)
	}
	if e.dropped("dialog", "not_dialog_peer") != 1 {
		t.Fatal("not counted as dialog/not_dialog_peer")
	}
	// The call is untouched: its own caller ends it.
	if err := call.Bye(e.ctx); err != nil {
		t.Fatalf("the real caller's BYE: %v", err)
	}
	e.backendMsg(e.backends[0], isReq("BYE"))
}
