package sbc

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
)

// Late messages after a call ended are answered by the tombs its dialogs
// left in the call table (tomb.go), without the call: each test ends a
// call, checks that it is buried (no live call, its dialogs tombs), and
// then plays what the network can deliver late.

// rawCall is a call placed by a raw peer at the trunk's address, scripted
// message by message.
type rawCall struct {
	p      *rawPeer
	to     string // the SBC's address
	callID string
	tag    string
	branch int
	inv    string // the INVITE as sent
	ok     *sip.Response
}

func (rc *rawCall) via() string {
	rc.branch++
	return fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport", rc.p.addr(), rc.callID, rc.branch)
}

func (rc *rawCall) send(msg string) {
	rc.p.t.Helper()
	dst, err := net.ResolveUDPAddr("udp", rc.to)
	if err != nil {
		rc.p.t.Fatal(err)
	}
	if _, err := rc.p.conn.WriteTo([]byte(msg), dst); err != nil {
		rc.p.t.Fatal(err)
	}
}

func rawDial(e *env, p *rawPeer, callID string) *rawCall {
	rc := &rawCall{p: p, to: e.ext, callID: callID, tag: "rawtag"}
	body := string(sipua.SDP("192.0.2.10", 40000, 1, "sendrecv"))
	rc.inv = rc.via() + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:carrier@" + callerIP + ">;tag=" + rc.tag + "\r\n" +
		"To: <sip:1000@" + callerIP + ">\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:carrier@" + p.addr() + ">\r\n" +
		"Content-Type: application/sdp\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	rc.send("INVITE sip:1000@" + e.ext + " SIP/2.0\r\n" + rc.inv)
	return rc
}

// waitResp returns the next response whose CSeq method and status match.
func (p *rawPeer) waitResp(e *env, method sip.RequestMethod, code int) *sip.Response {
	p.t.Helper()
	for {
		select {
		case r := <-p.resp:
			if r.CSeq().MethodName == method && r.StatusCode == code {
				return r
			}
		case <-e.ctx.Done():
			p.t.Fatalf("raw peer: no %d to %s", code, method)
			return nil
		}
	}
}

// inDialog sends an in-dialog request of the raw caller's dialog.
func (rc *rawCall) inDialog(method sip.RequestMethod, cseq int) {
	to := rc.ok.To()
	rc.send(string(method) + " sip:" + rc.ok.Contact().Address.Host + ":" + fmt.Sprint(rc.ok.Contact().Address.Port) + " SIP/2.0\r\n" +
		rc.via() + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:carrier@" + callerIP + ">;tag=" + rc.tag + "\r\n" +
		"To: " + to.Value() + "\r\n" +
		"Call-ID: " + rc.callID + "\r\n" +
		fmt.Sprintf("CSeq: %d %s\r\n", cseq, method) +
		"Content-Length: 0\r\n\r\n")
}

// buried waits until the call is over and all its dialogs are tombs.
func (e *env) buried(n int) {
	e.t.Helper()
	e.eventually("call ended", func() bool { return e.sbc.calls.len() == 0 })
	e.eventually("dialogs buried", func() bool { return e.sbc.calls.tombs() == n && e.sbc.calls.entries() == n })
}

// A caller's late messages after its call ended: the ACK a BYE overtook
// is absorbed (no stray), a retransmitted BYE gets 200, another request
// 481; and a retransmission of its INVITE after the call was confirmed
// (sipgo's transaction is gone then) starts no second call.
func TestTombAnswersCallerLate(t *testing.T) {
	e := newEnv(t, envOpts{})
	caller := newRawPeer(t, callerIP+":0")
	rc := rawDial(e, caller, "tomb-a-1")
	rc.ok = caller.waitResp(e, sip.INVITE, 200)
	ack := func() {
		rc.send("ACK " + rc.ok.Contact().Address.String() + " SIP/2.0\r\n" + rc.via() + "\r\nMax-Forwards: 70\r\n" +
			"From: <sip:carrier@" + callerIP + ">;tag=" + rc.tag + "\r\nTo: " + rc.ok.To().Value() + "\r\nCall-ID: " + rc.callID +
			"\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
	}
	ack()
	e.backendMsg(e.backends[0], isReq("ACK"))
	// The INVITE again, as a late retransmission: absorbed, counted.
	// Until the SBC ended A's INVITE transaction (an action queued with
	// the ACK's), sipgo's transaction absorbs the retransmission itself:
	// send again (bounded) until one reaches the SBC.
	for i := 0; i < 100 && e.dropped("dialog", "invite_retransmission") == 0; i++ {
		rc.send("INVITE sip:1000@" + e.ext + " SIP/2.0\r\n" + rc.inv)
		for j := 0; j < 20 && e.dropped("dialog", "invite_retransmission") == 0; j++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	e.eventually("INVITE retransmission counted", func() bool { return e.dropped("dialog", "invite_retransmission") == 1 })
	rc.inDialog(sip.BYE, 2)
	caller.waitResp(e, sip.BYE, 200)
	e.buried(2)
	// Late: the BYE again, the ACK again, an INFO.
	rc.inDialog(sip.BYE, 2)
	caller.waitResp(e, sip.BYE, 200)
	ack()
	rc.inDialog(sip.INFO, 3)
	caller.waitResp(e, sip.INFO, 481)
	if n := e.dropped("dialog", "stray_ack"); n != 0 {
		t.Fatalf("late ACK counted as stray (%v)", n)
	}
	if n := e.calls("answered"); n != 1 {
		t.Fatalf("%v answered calls, want 1 (the retransmitted INVITE must not start a call)", n)
	}
	if n := len(e.backends[0].Calls()); n != 1 {
		t.Fatalf("backend saw %d calls, want 1", n)
	}
}

// A backend's late 2xx after the call ended: a retransmission (our ACK
// was lost) gets the same ACK again from the tomb; a 2xx of a fork never
// heard of gets an ACK and a BYE; a crossing BYE gets 200; nothing of it
// is a stray.
func TestTombAnswersBackendLate(t *testing.T) {
	e, peer := rawEnv(t, envOpts{})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	inv := peer.wait(e.ctx, sip.INVITE, nil)
	ok := peer.respond(inv, 200, "x", sipua.SDP("10.0.0.5", 30000, 1, "sendrecv"))
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
		t.Fatalf("caller: %v %v", res, err)
	}
	ack := peer.wait(e.ctx, sip.ACK, nil)
	go call.Bye(e.ctx)
	bye := peer.wait(e.ctx, sip.BYE, nil)
	peer.respond(bye, 200, "", nil)
	e.buried(2)

	// The 2xx again: the same ACK.
	peer.write(ok.String(), inv)
	again := peer.wait(e.ctx, sip.ACK, nil)
	if again.CSeq().SeqNo != ack.CSeq().SeqNo || toTag(again) != "x" || again.CallID().Value() != ack.CallID().Value() {
		t.Fatalf("re-sent ACK %q (to tag %q) differs from %q", again.CSeq().Value(), toTag(again), ack.CSeq().Value())
	}
	if again.String() != ack.String() {
		t.Fatalf("re-sent ACK is not the ACK sent:\n%s\nvs\n%s", again, ack)
	}
	// A fork's late 2xx: ACK and BYE on its dialog.
	fork := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	fork.To().Params.Add("tag", "late-fork")
	host, port, _ := net.SplitHostPort(peer.addr())
	var pn int
	fmt.Sscan(port, &pn)
	fork.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: host, Port: pn}})
	fork.SetBody(nil)
	peer.write(fork.String(), inv)
	peer.wait(e.ctx, sip.ACK, func(r *sip.Request) bool { return toTag(r) == "late-fork" })
	fbye := peer.wait(e.ctx, sip.BYE, func(r *sip.Request) bool { return toTag(r) == "late-fork" })
	if fbye.CallID().Value() != inv.CallID().Value() || fbye.CSeq().SeqNo <= inv.CSeq().SeqNo {
		t.Fatalf("BYE of the late fork: %s %s", fbye.CallID().Value(), fbye.CSeq().Value())
	}
	peer.respond(fbye, 200, "", nil)
	// The dialog the call kept was BYEd once, at the call's end, and
	// never again.
	select {
	case r := <-peer.in:
		if r.Method == sip.BYE {
			t.Fatalf("unexpected BYE to dialog %q", toTag(r))
		}
	default:
	}
	// The backend's own BYE, crossing: 200; an INFO: 481.
	for _, m := range []struct {
		method sip.RequestMethod
		code   int
	}{{sip.BYE, 200}, {sip.INFO, 481}} {
		req := sip.NewRequest(m.method, inv.Contact().Address)
		req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: host, Port: pn, Params: params("branch", "z9hG4bK-late-"+string(m.method))})
		req.AppendHeader(&sip.FromHeader{Address: inv.To().Address, Params: params("tag", "x")})
		req.AppendHeader(&sip.ToHeader{Address: inv.From().Address, Params: params("tag", tagOf(inv.From().Params))})
		cid := sip.CallIDHeader(inv.CallID().Value())
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: 7, MethodName: m.method})
		req.SetBody(nil)
		peer.write(req.String(), inv)
		for {
			var r *sip.Response
			select {
			case r = <-peer.resp:
			case <-e.ctx.Done():
				t.Fatalf("no answer to the late %s", m.method)
			}
			if r.CSeq().MethodName == m.method {
				if r.StatusCode != m.code {
					t.Fatalf("late %s answered %d, want %d", m.method, r.StatusCode, m.code)
				}
				break
			}
		}
	}
	if n := e.dropped("dialog", "stray_response"); n != 0 {
		t.Fatalf("%v late 2xx counted as strays", n)
	}
	if !strings.Contains(fbye.Via().Host, "127.0.0") {
		t.Fatalf("BYE Via %s", fbye.Via().Value())
	}
}

// The tombs go after lingerFor, and the call itself is not kept alive by
// anything of sipgo's in the meantime (the hooks on its transactions go
// through callRef and the table).
func TestTombsForgotten(t *testing.T) {
	old := lingerFor.Swap(int64(100 * time.Millisecond))
	t.Cleanup(func() { lingerFor.Store(old) })
	e := newEnv(t, envOpts{})
	cl, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	var ref *callRef
	e.sbc.calls.each(func(c *call) { ref = c.ref })
	if ref == nil || ref.c.Load() == nil {
		t.Fatal("no live call ref")
	}
	if err := cl.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.eventually("call ref cleared", func() bool { return ref.c.Load() == nil })
	e.eventually("tombs forgotten", func() bool { return e.sbc.calls.entries() == 0 })
	if e.sbc.calls.correlation(cl.CallID()) != cl.CallID() || e.sbc.calls.isALeg(cl.CallID(), "") {
		t.Fatal("the call's Call-ID is still known after its tombs went")
	}
}

// The 2xx to a caller that does not ACK is retransmitted until the ACK
// (RFC 3261 13.3.1.4), also after sipgo's INVITE transaction has ended
// (Timer L is a round trip here, endpoint.go): the retransmissions go out
// by the transport layer. The ACK then confirms the call as usual.
func TestCaller2xxRetransmittedAfterItsTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	caller := newRawPeer(t, callerIP+":0")
	rc := rawDial(e, caller, "tomb-retx-1")
	rc.ok = caller.waitResp(e, sip.INVITE, 200)
	// T1, 2*T1 and 4*T1 later: the third copy comes 3.5 s after the
	// first, well after Timer L (T1) ended the transaction.
	for i := 0; i < 3; i++ {
		again := caller.waitResp(e, sip.INVITE, 200)
		if again.To().Value() != rc.ok.To().Value() || again.CSeq().Value() != rc.ok.CSeq().Value() {
			t.Fatalf("retransmission %d differs: To %q CSeq %q", i+1, again.To().Value(), again.CSeq().Value())
		}
	}
	rc.send("ACK " + rc.ok.Contact().Address.String() + " SIP/2.0\r\n" + rc.via() + "\r\nMax-Forwards: 70\r\n" +
		"From: <sip:carrier@" + callerIP + ">;tag=" + rc.tag + "\r\nTo: " + rc.ok.To().Value() + "\r\nCall-ID: " + rc.callID +
		"\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
	e.backendMsg(e.backends[0], isReq("ACK"))
	rc.inDialog(sip.BYE, 2)
	caller.waitResp(e, sip.BYE, 200)
	e.eventually("call counted answered", func() bool { return e.calls("answered") == 1 })
}

// A proxy that forks one INVITE to two contacts on the SBC (a registrar
// forking to two devices) sends the same Call-ID with two branches: the
// second is a call of its own, not a retransmission of the first.
func TestForkedInviteIsNotARetransmission(t *testing.T) {
	tb := newCallTable()
	c := &call{a: &leg{callID: "fork-1", localTag: "t1"}}
	tb.putCaller(c, "z9hG4bK-one")
	if !tb.isALeg("fork-1", "z9hG4bK-one") {
		t.Errorf("the same branch is a retransmission")
	}
	if tb.isALeg("fork-1", "z9hG4bK-two") {
		t.Errorf("another branch of the same Call-ID was taken for a retransmission")
	}
	if tb.isALeg("other", "z9hG4bK-one") {
		t.Errorf("an unknown Call-ID was taken for a retransmission")
	}
	// Forks of one Call-ID: the first buried while the second lives, then
	// a third comes; the second's INVITE is still known by its branch.
	forks := newCallTable()
	c1, c2, c3 := &call{a: &leg{callID: "fork-2", localTag: "f1"}}, &call{a: &leg{callID: "fork-2", localTag: "f2"}}, &call{a: &leg{callID: "fork-2", localTag: "f3"}}
	forks.putCaller(c1, "z9hG4bK-f1")
	forks.putCaller(c2, "z9hG4bK-f2")
	forks.bury([]*tomb{{key: dialogKey("fork-2", "f1"), a: true}}, time.Hour)
	forks.putCaller(c3, "z9hG4bK-f3")
	for _, br := range []string{"z9hG4bK-f1", "z9hG4bK-f2", "z9hG4bK-f3"} {
		if !forks.isALeg("fork-2", br) {
			t.Errorf("fork branch %s forgotten once a sibling was buried", br)
		}
	}
	if forks.isALeg("fork-2", "z9hG4bK-f4") {
		t.Error("a fourth fork was taken for a retransmission")
	}

	// Buried: the same answers from the tomb, until it is forgotten.
	tb.bury([]*tomb{{key: dialogKey("fork-1", "t1"), a: true}}, 20*time.Millisecond)
	if tb.entries() != 1 || tb.tombs() != 1 {
		t.Fatalf("entries %d, tombs %d after bury; want 1, 1", tb.entries(), tb.tombs())
	}
	if !tb.isALeg("fork-1", "z9hG4bK-one") || tb.isALeg("fork-1", "z9hG4bK-two") {
		t.Errorf("buried: the branches are not those of the live call")
	}
	if tb.correlation("fork-1") != "fork-1" {
		t.Errorf("buried: correlation %q", tb.correlation("fork-1"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for tb.entries() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("tomb not forgotten after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if tb.isALeg("fork-1", "z9hG4bK-one") {
		t.Errorf("remembered after the tomb went")
	}
}

// The table forgets tombs in the order they were buried, once due, with
// one timer; it re-arms after running empty, and keeps no chunk of
// records that all went.
func TestTombSweep(t *testing.T) {
	tbl := newCallTable()
	bury := func(n int, prefix string, linger time.Duration) {
		var tombs []*tomb
		for i := 0; i < n; i++ {
			tombs = append(tombs, &tomb{key: dialogKey(fmt.Sprintf("%s-%d", prefix, i), "tag")})
		}
		tbl.bury(tombs, linger)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 10 s (entries %d)", what, tbl.entries())
			}
			time.Sleep(time.Millisecond)
		}
	}
	state := func() (chunks int, armed bool) {
		tbl.mu.RLock()
		defer tbl.mu.RUnlock()
		return len(tbl.dead.chunks), tbl.sweepArmed
	}

	// Three batches, due in order; the last lingers long. The first is
	// larger than a sweep's batch and than a chunk.
	bury(3*sweepBatch, "a", 5*time.Millisecond)
	bury(10, "b", 10*time.Millisecond)
	bury(50, "c", time.Hour)
	if chunks, _ := state(); chunks < 2 {
		t.Fatalf("%d chunks for %d tombs; the test wants several", chunks, 3*sweepBatch+60)
	}
	waitFor("the due tombs forgotten", func() bool { return tbl.entries() == 50 })
	if tbl.tomb("c-0", "tag") == nil || tbl.tomb("c-49", "tag") == nil || tbl.tomb("a-0", "tag") != nil || tbl.tomb("b-9", "tag") != nil {
		t.Fatal("forgot the wrong tombs")
	}
	if chunks, armed := state(); chunks != 1 || !armed {
		t.Fatalf("%d chunks kept, armed %v; want 1 (the 50 tombs left), armed", chunks, armed)
	}

	// Run empty, then bury again: the timer is armed anew.
	tbl = newCallTable()
	bury(3, "d", time.Millisecond)
	waitFor("first batch forgotten", func() bool { return tbl.entries() == 0 })
	waitFor("sweep idle", func() bool { _, armed := state(); return !armed })
	bury(3, "e", time.Millisecond)
	waitFor("batch after idle forgotten", func() bool { return tbl.entries() == 0 })
	if tbl.dead.pending() {
		t.Fatal("records kept after all went")
	}
}

// An established call holds no action queue: its array went back to the
// shared pool when the drain that confirmed it emptied it.
func TestEstablishedCallHoldsNoQueue(t *testing.T) {
	e := newEnv(t, envOpts{})
	cl, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	var c *call
	e.sbc.calls.each(func(x *call) { c = x })
	if c == nil {
		t.Fatal("no live call")
	}
	e.eventually("queue released", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.qbox == nil && c.queue == nil && !c.draining
	})
	if err := cl.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}
