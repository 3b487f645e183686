package sbc

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"
	"github.com/sbc-project/sbc/topology"
)

// Table tests of a transfer the SBC carries out itself (refer = "local"),
// without sockets: every order of a set of events after the backend's
// REFER, with invariants on what the call did.

const xferSDP = "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// newXferFSM is an answered inbound call (trunk "carrier", pool "pbx"
// with refer mode), its media anchored (a relay without streams: the SDP
// rewriting runs, no socket is bound).
func newXferFSM(t *testing.T, mode string) *fsmHarness {
	h := newFSM(t, 1)
	c := h.c
	pl := c.pools[0]
	c.st.pol.Pools = []policy.Pool{*pl.cfg}
	pl.cfg = &c.st.pol.Pools[0]
	pl.cfg.Refer = mode
	c.st.pol.Routing.DefaultPool = "pbx"
	c.trunk = &policy.Trunk{Name: "carrier", Refer: "relay"}
	ext, in := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.1")
	c.media = &callMedia{trunk: c.trunk, poolEnc: "none", aAddr: ext, bAddr: in,
		aOrig: srtp.NewOrigin("sbc", ext), bOrig: srtp.NewOrigin("sbc", in)}
	c.sdpFrom("a", []byte(xferSDP))
	h.ev(event{kind: evStart})
	h.ev(h.resp(1, 200, "btag"))
	h.ev(h.ackFromA())
	if c.phase != phConfirmed {
		t.Fatalf("call not confirmed: %v", c.phase)
	}
	return h
}

// refer is a REFER from leg `from` to Refer-To rt.
func (h *fsmHarness) refer(from *leg, rt string) event {
	req := h.inDialog(sip.REFER, from)
	req.AppendHeader(sip.NewHeader("Refer-To", rt))
	return event{kind: evRequest, leg: from, req: req, tx: nil, sent: make(chan struct{}), replaces: h.c.s.referReplaces(req)}
}

// xferResp is a response of the transfer target to the new leg's INVITE.
func (h *fsmHarness) xferResp(code int, tag string) event {
	h.c.mu.Lock()
	var br *branch
	for _, b := range h.c.branches {
		if b.xfer {
			br = b
		}
	}
	h.c.mu.Unlock()
	if br == nil {
		return event{}
	}
	res := sip.NewResponseFromRequest(br.inv, code, "", nil)
	if tag != "" {
		res.To().Params.Add("tag", tag)
	}
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "target", Host: "10.0.0.10", Port: 5060}})
	if code >= 200 && code < 300 {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
		res.SetBody([]byte(strings.ReplaceAll(xferSDP, "198.51.100.9", "10.0.0.77")))
	} else {
		res.SetBody(nil)
	}
	return event{kind: evBResponse, br: br, res: res}
}

// sipfragCode is the status line's code of a NOTIFY's sipfrag body.
func sipfragCode(req *sip.Request) int {
	var code int
	fmt.Sscanf(string(req.Body()), "SIP/2.0 %d", &code)
	return code
}

func TestLocalTransferEventOrders(t *testing.T) {
	type step func(h *fsmHarness, referrer, transferee *leg) event
	timer := func(k timerKind) step {
		return func(h *fsmHarness, _, _ *leg) event {
			h.c.mu.Lock()
			defer h.c.mu.Unlock()
			for key, e := range h.c.timers {
				if key.kind == k {
					return event{kind: evTimer, timer: key, gen: e.gen}
				}
			}
			return event{}
		}
	}
	r := func(code int, tag string) step {
		return func(h *fsmHarness, _, _ *leg) event { return h.xferResp(code, tag) }
	}
	steps := map[string]step{
		"180":      r(180, "t1"),
		"200":      r(200, "t1"),
		"200b":     r(200, "t2"), // a second dialog of a forking target
		"486":      r(486, "t1"),
		"done":     func(h *fsmHarness, _, _ *leg) event { return h.xferDone() },
		"timeout":  timer(tmTransfer),
		"byeA":     func(h *fsmHarness, _, tr *leg) event { return h.byeFrom(tr) },
		"byeR":     func(h *fsmHarness, re, _ *leg) event { return h.byeFrom(re) },
		"refer2":   func(h *fsmHarness, re, _ *leg) event { return h.refer(re, "<sip:3000@10.0.0.1>") },
		"shutdown": func(*fsmHarness, *leg, *leg) event { return event{kind: evTerminate, reason: "shutdown"} },
	}
	sets := [][]string{
		{"180", "200", "byeR"},
		{"180", "200", "byeA"},
		{"200", "200b", "byeR"},
		{"180", "486", "byeA"},
		{"180", "timeout", "200"},
		{"180", "shutdown", "200"},
		{"200", "refer2", "byeA"},
		{"done", "byeR", "refer2"},
		{"180", "byeR", "200", "byeA"},
		{"486", "refer2", "shutdown"},
	}
	runs := 0
	for _, set := range sets {
		permute(set, func(order []string) {
			runs++
			h := newXferFSM(t, "local")
			c := h.c
			referrer, transferee := c.kept.leg, c.a
			mark := len(h.log)
			h.steps = append(h.steps, "refer:")
			h.ev(h.refer(referrer, "<sip:2000@10.0.0.1>"))
			for _, name := range order {
				e := steps[name](h, referrer, transferee)
				if e.kind == evStart && e.req == nil && e.br == nil {
					h.steps = append(h.steps, name+"(n/a)")
					continue
				}
				h.steps = append(h.steps, name+":")
				h.ev(e)
			}
			h.quiesce()
			checkLocalTransfer(t, h, h.log[mark:], referrer, transferee)
		})
	}
	t.Logf("%d event orders checked", runs)
}

// xferDone is the end of the transfer INVITE's transaction without a
// final response.
func (h *fsmHarness) xferDone() event {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	for _, b := range h.c.branches {
		if b.xfer {
			return event{kind: evBDone, br: b}
		}
	}
	return event{}
}

// checkLocalTransfer: the REFER got one final answer; the referrer got
// NOTIFYs, the last one final, nothing after it; every 2xx dialog of the
// new leg was ACKed once; every leg got at most one BYE from the SBC; the
// transferee got none while the call goes on; when the transfer
// completed the new leg is the call's and the referrer was hung up, and
// when the call ended every answered dialog of the new leg was hung up;
// one transfer result was counted.
func checkLocalTransfer(t *testing.T, h *fsmHarness, acts []action, referrer, transferee *leg) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("events %v: "+format, append([]any{h.steps}, args...)...)
	}
	c := h.c
	referFinals, accepted, notifies := 0, 0, 0
	finalNotify := map[string]bool{} // by Event (one subscription per REFER)
	byes := map[string]int{}
	acks := map[string]int{}
	invited := 0
	for _, a := range acts {
		switch a.kind {
		case actRespond:
			if a.res.CSeq().MethodName == sip.REFER && !a.res.IsProvisional() {
				referFinals++
				if a.res.StatusCode == 202 {
					accepted++
				}
			}
		case actSend:
			if a.req.Method != sip.NOTIFY || a.leg != referrer {
				fail("a request other than a NOTIFY to the referrer: %s to %s", a.req.Method, a.leg.name)
			}
			ev := a.req.GetHeader("Event")
			if ev == nil || !strings.HasPrefix(ev.Value(), "refer;id=") {
				fail("NOTIFY without Event: refer;id=")
			}
			if finalNotify[ev.Value()] {
				fail("a NOTIFY after the final one of %s", ev.Value())
			}
			notifies++
			if code := sipfragCode(a.req); code >= 200 {
				finalNotify[ev.Value()] = true
				ss := a.req.GetHeader("Subscription-State")
				if ss == nil || !strings.HasPrefix(ss.Value(), "terminated") {
					fail("final NOTIFY without Subscription-State terminated")
				}
			}
		case actBye:
			byes[dialogOf(a.req)]++
		case actWrite:
			if a.req.Method == sip.ACK {
				acks[dialogOf(a.req)]++
			}
		case actInvite:
			if !a.br.xfer {
				fail("an INVITE of the call's setup after the answer")
			}
			invited++
		}
	}
	if referFinals < 1 {
		fail("the REFER got no final response")
	}
	if invited != accepted {
		fail("%d transfer INVITEs for %d REFERs accepted", invited, accepted)
	}
	for d, n := range byes {
		if n > 1 {
			fail("dialog %s got %d BYEs", d, n)
		}
	}
	ended := c.phase == phEnded
	completed := c.kept != nil && c.kept.xfer
	for _, xbr := range c.branches {
		if !xbr.xfer {
			continue
		}
		for tag := range xbr.acks {
			d := xbr.leg.callID + "/" + tag
			if acks[d] < 1 {
				fail("2xx dialog %s of the new leg not ACKed", d)
			}
			kept := c.kept == xbr && tag == xbr.leg.getRemoteTag()
			switch {
			case ended && byes[d] != 1:
				fail("call ended but the new leg's dialog %s got %d BYEs", d, byes[d])
			case !ended && !kept && byes[d] != 1:
				fail("a dialog of the new leg the call does not keep (%s) got %d BYEs", d, byes[d])
			case !ended && kept && byes[d] != 0:
				fail("the kept new leg got a BYE while the call goes on")
			}
		}
	}
	if completed {
		if byes[referrer.callID+"/"+referrer.getRemoteTag()] != 1 {
			fail("transfer completed but the referrer's leg was not hung up once: %v", byes)
		}
		if notifies < 2 || len(finalNotify) == 0 {
			fail("transfer completed without NOTIFY 100 and 200 (%d NOTIFYs)", notifies)
		}
	}
	if !ended && byes[transferee.callID+"/"+transferee.getRemoteTag()] != 0 {
		fail("the transferee got a BYE while the call goes on")
	}
	if c.xfer != nil && ended {
		fail("transfer still in progress after the call's end")
	}
	got := testutil.ToFloat64(c.s.metrics.Transfers.WithLabelValues("local", xferCompleted)) +
		testutil.ToFloat64(c.s.metrics.Transfers.WithLabelValues("local", xferFailed))
	if want := float64(accepted); c.xfer == nil && got != want {
		fail("transfer results counted %v times, want %v", got, want)
	}
}

// Policing and modes, one transition each.
func TestReferTransitions(t *testing.T) {
	status := func(acts []action) int {
		for _, a := range acts {
			if a.kind == actRespond && !a.res.IsProvisional() {
				return a.res.StatusCode
			}
		}
		return 0
	}
	relayed := func(acts []action) *sip.Request {
		for _, a := range acts {
			if a.kind == actRelay {
				return a.rel.out
			}
		}
		return nil
	}
	cases := []struct {
		name, mode, referTo string
		want                int    // 0: relayed
		reason              reason // counted under stage transfer
	}{
		{"relay", "relay", "<sip:2000@10.0.0.10:5060;user=phone>", 0, ""},
		{"tel", "relay", "<tel:+442079460000>", 416, reasonReferToScheme},
		{"http", "relay", "<http://example.com/x>", 416, reasonReferToScheme},
		{"no_user", "relay", "<sip:10.0.0.10>", 400, reasonReferToInvalid},
		{"too_long", "relay", "<sip:" + strings.Repeat("9", 1100) + "@10.0.0.10>", 400, reasonReferToInvalid},
		{"replaces_unknown", "relay", "<sip:2000@10.0.0.10?Replaces=nope%3Bto-tag%3Da%3Bfrom-tag%3Db>", 403, reasonReferReplaces},
		{"other_header", "relay", "<sip:2000@10.0.0.10?Call-Info=evil>", 0, reasonReferToHeader},
		{"refuse", "refuse", "<sip:2000@10.0.0.10>", 403, reasonReferRefused},
		{"local_replaces", "local", "<sip:2000@10.0.0.10?Replaces=x%3Bto-tag%3Da%3Bfrom-tag%3Db>", 501, reasonReferLocalUnsupported},
		{"local", "local", "<sip:2000@10.0.0.10>", 202, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newXferFSM(t, tc.mode)
			c := h.c
			acts := h.ev(h.refer(c.kept.leg, tc.referTo))
			if got := status(acts); got != tc.want {
				t.Fatalf("REFER answered %d, want %d (0: relayed)", got, tc.want)
			}
			if tc.reason != "" {
				if n := testutil.ToFloat64(c.s.metrics.Dropped.WithLabelValues(string(stageTransfer), string(tc.reason))); n != 1 {
					t.Errorf("transfer/%s counted %v, want 1", tc.reason, n)
				}
			}
			if tc.want != 0 {
				return
			}
			out := relayed(acts)
			if out == nil {
				t.Fatal("REFER not relayed")
			}
			rt := out.ReferTo()
			if rt == nil || rt.Address.Host != "192.0.2.1" || rt.Address.User != "2000" {
				t.Fatalf("relayed Refer-To %v: want user 2000 on the SBC's external face", out.GetHeader("Refer-To"))
			}
			if rt.Address.Headers != nil && len(rt.Address.Headers.Keys()) > 0 {
				t.Errorf("relayed Refer-To keeps headers: %s", rt.Value())
			}
		})
	}
}

// A Refer-To's Replaces naming the call's own other dialog is mapped to
// the receiving side's dialog; Referred-By is re-homed.
func TestReferRelayMapsReplacesAndReferredBy(t *testing.T) {
	h := newXferFSM(t, "relay")
	c := h.c
	// Referred-By on the allow-list: still re-homed, never copied raw.
	c.st.headers = topology.NewHeaderFilter(append(append([]string(nil), c.st.pol.Headers.Allow...), "Referred-By"))
	c.s.calls.put(c.a, c)
	c.s.calls.put(c.kept.leg, c)
	b := c.kept.leg
	// The backend names its own dialog with the SBC as the target's.
	repl := b.callID + "%3Bto-tag%3D" + b.localTag + "%3Bfrom-tag%3Dbtag"
	e := h.refer(b, "<sip:2000@10.0.0.10?Replaces="+repl+">")
	if e.replaces == nil || !e.replaces.ok {
		t.Fatalf("Replaces not mapped before the transition: %+v", e.replaces)
	}
	e.req.AppendHeader(sip.NewHeader("Referred-By", "<sip:4000@10.0.0.10:5060;secret=1>"))
	acts := h.ev(e)
	var out *sip.Request
	for _, a := range acts {
		if a.kind == actRelay {
			out = a.rel.out
		}
	}
	if out == nil {
		t.Fatalf("not relayed: %v", acts)
	}
	rt := out.ReferTo()
	v, _ := rt.Address.Headers.Get("Replaces")
	want := "a-call-id%3Bto-tag%3Datag%3Bfrom-tag%3Dsbctag"
	if v != want {
		t.Fatalf("Replaces %q, want %q (the caller's dialog as the caller knows it)", v, want)
	}
	if n := len(out.GetHeaders("Referred-By")); n != 1 {
		t.Fatalf("%d Referred-By headers relayed, want 1", n)
	}
	rb := out.GetHeader("Referred-By")
	if rb == nil || !strings.Contains(rb.Value(), "4000@192.0.2.1") || strings.Contains(rb.Value(), "10.0.0.10") || strings.Contains(rb.Value(), "secret") {
		t.Fatalf("Referred-By %v: want user 4000 on the SBC's external face, nothing of the backend's", rb)
	}
}
