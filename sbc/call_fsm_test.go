package sbc

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/topology"
	"golang.org/x/time/rate"
)

// Table tests of the call's transition function, without sockets: a
// harness feeds events, collects the actions each transition queues, fires
// timers by hand, and checks invariants that must hold for every order of
// events the network can produce.

type nopStop struct{}

func (nopStop) Stop() bool { return true }

type fsmHarness struct {
	t   *testing.T
	c   *call
	log []action
	// what the network did, for the invariants
	twoxx      map[string]bool // "branch/tag" of every 2xx delivered
	byeFromA   int             // BYEs from A while its dialog was up
	byeFromB   int             // BYEs from B on the kept dialog while it was up
	sipgo487   bool            // sipgo answered A's INVITE with 487 itself
	sipgo487At int             // at this index of log
	provisBr   map[int]bool    // branches that sent a provisional
	finalBr    map[int]bool    // branches that sent a final response
	steps      []string
	answeredAt int                  // index in log of the 2xx to A
	a2xx       *sip.Response        // the 2xx sent to A, if any
	invs       map[int]*sip.Request // each branch's INVITE as sent
}

func newFSM(t *testing.T, targets int) *fsmHarness {
	p := policy.Default()
	p.Routing.MaxAttempts = 3
	p.Calls.MaxDuration = policy.Duration{Duration: time.Hour}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &SBC{log: discard, metrics: newMetrics(), calls: newCallTable(), realms: map[string]*endpoint{},
		def: &defence{logLimit: rate.NewLimiter(0, 0)}}
	ext := &endpoint{name: "external", sbc: s, msgs: newMsgCounters(s.metrics, "external"), faces: map[string]topology.Face{"udp": {Realm: "external", Transport: "udp", Host: "192.0.2.1", Port: 5060}}}
	in := &endpoint{name: "internal", sbc: s, msgs: newMsgCounters(s.metrics, "internal"), faces: map[string]topology.Face{"udp": {Realm: "internal", Transport: "udp", Host: "10.0.0.1", Port: 5062}}}
	s.realms["external"], s.realms["internal"] = ext, in
	pl := &pool{cfg: &policy.Pool{Name: "pbx", Realm: "internal", Transport: "udp"}}
	for i := 0; i < targets; i++ {
		pl.targets = append(pl.targets, &target{pool: "pbx", addr: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:5060", 10+i)), up: true})
		pl.weights = append(pl.weights, 1)
	}
	st := &snapshot{pol: p, headers: topology.NewHeaderFilter(p.Headers.Allow), limits: p.Calls, pools: map[string]*pool{"pbx": pl}}

	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1000", Host: "192.0.2.1"})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "198.51.100.9", Port: 5060, Params: params("branch", "z9hG4bKa1")})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "carrier", Host: "198.51.100.9"}, Params: params("tag", "atag")})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1000", Host: "192.0.2.1"}, Params: sip.NewParams()})
	cid := sip.CallIDHeader("a-call-id")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "198.51.100.9", Port: 5060}})
	req.SetBody(nil)

	c := &call{s: s, id: "test", st: st, pool: pl, pools: []*pool{pl}, maxDuration: time.Hour, src: netip.MustParseAddrPort("198.51.100.9:5060"),
		created: time.Now(), ended: make(chan struct{}), finalSent: make(chan struct{}), release: func() {},
		after: func(time.Duration, func()) stopper { return nopStop{} }, tried: map[*target]bool{}, user: "1000"}
	c.a = &leg{name: "a", ep: ext, transport: "udp", peer: c.src, callID: "a-call-id", localTag: "sbctag",
		localURI: req.To().Address, remoteURI: req.From().Address, inviteCSeq: 1, remoteTag: "atag", remoteCSeq: 1,
		target: req.Contact().Address, routes: []sip.Uri{}}
	c.aReq = req.Clone()
	c.aReq.To().Params.Add("tag", "sbctag")
	return &fsmHarness{t: t, c: c, twoxx: map[string]bool{}, provisBr: map[int]bool{}, finalBr: map[int]bool{}, invs: map[int]*sip.Request{}}
}

func params(kv ...string) sip.HeaderParams {
	p := sip.NewParams()
	for i := 0; i+1 < len(kv); i += 2 {
		p.Add(kv[i], kv[i+1])
	}
	return p
}

// ev runs one transition and records its actions.
func (h *fsmHarness) ev(e event) []action {
	c := h.c
	c.mu.Lock()
	before := c.aFinal
	beforePhase := c.phase
	c.step(e)
	acts := c.queue
	c.queue = nil
	after := c.aFinal
	c.mu.Unlock()
	if e.kind == evCancel && before == 0 && after == 487 {
		h.sipgo487, h.sipgo487At = true, len(h.log)
	}
	switch e.kind {
	case evBye:
		if beforePhase == phAccepted || beforePhase == phConfirmed {
			if e.leg == c.a {
				h.byeFromA++
			} else {
				h.byeFromB++
			}
		}
	case evBResponse:
		if !e.res.IsProvisional() {
			h.finalBr[e.br.n] = true
		}
		if e.res.IsSuccess() {
			h.twoxx[fmt.Sprintf("%d/%s", e.br.n, tagOf(e.res.To().Params))] = true
		} else if e.res.IsProvisional() {
			h.provisBr[e.br.n] = true
		}
	}
	for _, a := range acts {
		if a.kind == actRespondA && a.res.IsSuccess() {
			h.answeredAt = len(h.log)
			h.a2xx = a.res
		}
		if a.kind == actInvite {
			h.invs[a.br.n] = a.br.inv
		}
		h.log = append(h.log, a)
	}
	h.steps = append(h.steps, e.kind.String())
	return acts
}

func (h *fsmHarness) br(n int) *branch {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.c.branch(n)
}

// resp builds a response of branch n's target to its INVITE.
func (h *fsmHarness) resp(n, code int, tag string) event {
	br := h.br(n)
	if br == nil {
		return event{}
	}
	res := sip.NewResponseFromRequest(h.invs[n], code, "", nil)
	if tag != "" {
		res.To().Params.Add("tag", tag)
	}
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: br.tgt.addr.Addr().String(), Port: int(br.tgt.addr.Port())}})
	res.SetBody(nil)
	return event{kind: evBResponse, br: br, res: res}
}

// fire fires a timer if it is armed.
func (h *fsmHarness) fire(k timerKey) bool {
	h.c.mu.Lock()
	e, ok := h.c.timers[k]
	h.c.mu.Unlock()
	if !ok {
		return false
	}
	h.ev(event{kind: evTimer, timer: k, gen: e.gen})
	return true
}

// quiesce lets time pass: fires armed timers (the most urgent kinds
// first) until none is left.
func (h *fsmHarness) quiesce() {
	for i := 0; i < 200; i++ {
		h.c.mu.Lock()
		var keys []timerKey
		for k := range h.c.timers {
			keys = append(keys, k)
		}
		h.c.mu.Unlock()
		if len(keys) == 0 {
			return
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].kind != keys[j].kind {
				return keys[i].kind > keys[j].kind
			}
			return keys[i].id < keys[j].id
		})
		h.fire(keys[0])
	}
	h.t.Fatalf("timers never settle: %v", h.steps)
}

func (h *fsmHarness) inDialog(method sip.RequestMethod, from *leg) *sip.Request {
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", Host: "192.0.2.1"})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "198.51.100.9", Port: 5060, Params: params("branch", sip.GenerateBranch())})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", Host: "x"}, Params: params("tag", from.getRemoteTag())})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "y"}, Params: params("tag", from.localTag)})
	cid := sip.CallIDHeader(from.callID)
	req.AppendHeader(&cid)
	seq := uint32(1)
	if method != sip.ACK {
		seq = from.remoteCSeq + 1
		from.remoteCSeq = seq
	}
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetBody(nil)
	return req
}

func (h *fsmHarness) ackFromA() event {
	req := h.inDialog(sip.ACK, h.c.a)
	req.CSeq().SeqNo = h.c.a.inviteCSeq
	return event{kind: evAck, leg: h.c.a, req: req}
}

func (h *fsmHarness) byeFrom(l *leg) event {
	if l == nil {
		return event{}
	}
	return event{kind: evBye, leg: l, req: h.inDialog(sip.BYE, l)}
}

func isFinal(res *sip.Response) bool { return res != nil && !res.IsProvisional() }

func dialogOf(r *sip.Request) string {
	return r.CallID().Value() + "/" + tagOf(r.To().Params)
}

// check asserts the invariants over everything the call did.
func (h *fsmHarness) check() {
	t := h.t
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("events %v: "+format, append([]any{h.steps}, args...)...)
	}
	c := h.c
	finals, ends := 0, 0
	ended := false
	acks := map[string]int{}
	byes := map[string]int{}
	cancels := map[*branch]int{}
	for i, a := range h.log {
		if h.sipgo487 && i == h.sipgo487At {
			finals++
		}
		switch a.kind {
		case actRespondA:
			if ended {
				fail("response %d to A after the end (action %d)", a.res.StatusCode, i)
			}
			if isFinal(a.res) {
				finals++
			} else if finals > 0 {
				fail("provisional %d to A after its final", a.res.StatusCode)
			}
		case actInvite:
			if ended || finals > 0 {
				fail("INVITE sent after A's final or the end")
			}
		case actRelay:
			if ended {
				fail("request relayed after the end")
			}
		case actEnd:
			ends++
			ended = true
		case actWrite:
			if a.req.Method == sip.ACK {
				acks[dialogOf(a.req)]++
			}
		case actBye:
			byes[dialogOf(a.req)]++
		case actCancel:
			cancels[a.br]++
			if !h.provisBr[a.br.n] {
				fail("CANCEL on branch %d before any provisional from it", a.br.n)
			}
		}
	}
	if h.sipgo487 && h.sipgo487At == len(h.log) {
		finals++
	}
	if ends != 1 {
		fail("the call ended %d times", ends)
	}
	// A's INVITE has exactly one final response; a 2xx that crossed a
	// CANCEL inside sipgo counts once (sipgo sent 487, our 2xx was
	// dropped).
	if finals != 1 && !(finals == 2 && h.sipgo487 && c.result == "cancelled") {
		fail("A got %d final responses (sipgo 487: %v)", finals, h.sipgo487)
	}
	for br, n := range cancels {
		if n != 1 {
			fail("branch %d cancelled %d times", br.n, n)
		}
	}
	// A branch that rang and never answered is cancelled.
	for _, br := range c.branches {
		if h.provisBr[br.n] && !h.finalBr[br.n] && cancels[br] != 1 {
			fail("branch %d left ringing (CANCELs: %d)", br.n, cancels[br])
		}
	}
	// Every 2xx dialog is ACKed; every dialog but the kept one is BYEd
	// exactly once; the kept one ends exactly once.
	keptKey := ""
	if c.kept != nil {
		keptKey = c.kept.leg.callID + "/" + c.kept.leg.getRemoteTag()
	}
	for k := range h.twoxx {
		var n int
		var tag string
		fmt.Sscanf(k, "%d/%s", &n, &tag)
		br := c.branch(n)
		d := br.leg.callID + "/" + tag
		if acks[d] < 1 {
			fail("2xx dialog %s never ACKed", k)
		}
		if d == keptKey {
			if byes[d]+h.byeFromB != 1 {
				fail("kept B dialog ended %d times (BYE sent %d, BYE received %d)", byes[d]+h.byeFromB, byes[d], h.byeFromB)
			}
			continue
		}
		if byes[d] != 1 {
			fail("dialog %s not kept but BYEd %d times", k, byes[d])
		}
	}
	// A's dialog, once a 2xx reached it, ends exactly once.
	aKey := c.a.callID + "/" + c.a.remoteTag
	if h.a2xx != nil && c.result != "cancelled" && c.result != "undeliverable" {
		if byes[aKey]+h.byeFromA != 1 {
			fail("A dialog ended %d times (BYE sent %d, received %d), result %s", byes[aKey]+h.byeFromA, byes[aKey], h.byeFromA, c.result)
		}
	} else if byes[aKey] != 0 {
		fail("BYE to A whose dialog never got a 2xx")
	}
}

// TestCallEventOrders runs every order of each set of events and checks
// the invariants after letting all timers fire.
func TestCallEventOrders(t *testing.T) {
	type step func(h *fsmHarness) event
	b := func(code int, tag string) step {
		return func(h *fsmHarness) event { return h.resp(1, code, tag) }
	}
	timer := func(k timerKey) step {
		return func(h *fsmHarness) event {
			h.c.mu.Lock()
			defer h.c.mu.Unlock()
			if e, ok := h.c.timers[k]; ok {
				return event{kind: evTimer, timer: k, gen: e.gen}
			}
			return event{}
		}
	}
	steps := map[string]step{
		"100":      b(100, ""),
		"180":      b(180, "x"),
		"183y":     b(183, "y"),
		"200":      b(200, "x"),
		"200y":     b(200, "y"),
		"486":      b(486, "x"),
		"503":      b(503, "x"),
		"cancel":   func(*fsmHarness) event { return event{kind: evCancel} },
		"tgt":      timer(timerKey{kind: tmTarget, id: 1}),
		"ring":     timer(timerKey{kind: tmRing}),
		"ackwait":  timer(timerKey{kind: tmAckWait}),
		"ackA":     func(h *fsmHarness) event { return h.ackFromA() },
		"byeA":     func(h *fsmHarness) event { return h.byeFrom(h.c.a) },
		"byeB":     func(h *fsmHarness) event { h.c.mu.Lock(); l := h.c.b(); h.c.mu.Unlock(); return h.byeFrom(l) },
		"bdone":    func(h *fsmHarness) event { return event{kind: evBDone, br: h.br(1)} },
		"shutdown": func(*fsmHarness) event { return event{kind: evTerminate, reason: "shutdown"} },
		"fail2xx": func(h *fsmHarness) event {
			h.c.mu.Lock()
			defer h.c.mu.Unlock()
			return event{kind: evADeliveryFailed, res: h.a2xx}
		},
	}
	sets := [][]string{
		{"180", "200", "cancel"},
		{"180", "183y", "cancel"},
		{"100", "tgt", "180", "cancel", "ring"},
		{"180", "shutdown", "byeB"},
		{"180", "200", "200y", "cancel", "ackA"},
		{"100", "tgt", "180", "200", "cancel"},
		{"tgt", "180", "200"},
		{"tgt", "200", "cancel"},
		{"486", "cancel", "180"},
		{"503", "cancel", "180", "200"},
		{"200", "ackA", "byeA", "byeB"},
		{"200", "byeA", "ackA"},
		{"200", "byeB", "ackA", "ackwait"},
		{"200", "ackA", "shutdown", "byeA"},
		{"180", "ring", "200", "cancel"},
		{"183y", "180", "200y", "200", "ackA"},
		{"bdone", "200", "cancel"},
		{"180", "byeA", "200"},
		{"180", "byeB", "200", "ackA"},
		{"200", "fail2xx", "ackA", "cancel"},
		{"200", "ackA", "200y", "200", "byeB"},
	}
	runs := 0
	for _, set := range sets {
		permute(set, func(order []string) {
			runs++
			h := newFSM(t, 2)
			h.ev(event{kind: evStart})
			for _, name := range order {
				e := steps[name](h)
				if e.kind == evStart && e.br == nil && e.req == nil {
					h.steps = append(h.steps, name+"(n/a)")
					continue
				}
				h.steps = append(h.steps, name+":")
				h.ev(e)
			}
			h.quiesce()
			h.check()
		})
	}
	t.Logf("%d event orders checked", runs)
}

func permute(s []string, f func([]string)) {
	a := append([]string(nil), s...)
	var rec func(int)
	rec = func(k int) {
		if k == len(a) {
			f(a)
			return
		}
		for i := k; i < len(a); i++ {
			a[k], a[i] = a[i], a[k]
			rec(k + 1)
			a[k], a[i] = a[i], a[k]
		}
	}
	rec(0)
}

func countKind(acts []action, k actKind) int {
	n := 0
	for _, a := range acts {
		if a.kind == k {
			n++
		}
	}
	return n
}

func statuses(acts []action) []int {
	var out []int
	for _, a := range acts {
		if a.kind == actRespondA || a.kind == actRespond {
			out = append(out, a.res.StatusCode)
		}
	}
	return out
}

// Specific outcomes, event by event.
func TestCallTransitions(t *testing.T) {
	t.Run("cancel after 180 cancels B and ends once", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 180, "x"))
		acts := h.ev(event{kind: evCancel})
		if countKind(acts, actCancel) != 1 || countKind(acts, actEnd) != 1 || countKind(acts, actRespondA) != 0 {
			t.Fatalf("actions %v", acts)
		}
		// The 487 of B after the CANCEL is not relayed.
		if acts := h.ev(h.resp(1, 487, "x")); countKind(acts, actRespondA) != 0 {
			t.Fatalf("487 relayed after cancel: %v", acts)
		}
	})
	t.Run("provisional after final is not relayed", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		if acts := h.ev(h.resp(1, 180, "x")); countKind(acts, actRespondA) != 0 {
			t.Fatalf("180 relayed after 200: %v", statuses(acts))
		}
	})
	t.Run("target timeout then a late 200 gets ACK and BYE", func(t *testing.T) {
		h := newFSM(t, 2)
		h.ev(event{kind: evStart})
		acts := h.ev(event{kind: evTimer, timer: timerKey{kind: tmTarget, id: 1}, gen: h.c.timers[timerKey{kind: tmTarget, id: 1}].gen})
		if countKind(acts, actInvite) != 1 {
			t.Fatalf("no failover INVITE: %v", acts)
		}
		acts = h.ev(h.resp(1, 180, "x"))
		if countKind(acts, actCancel) != 1 || countKind(acts, actRespondA) != 0 {
			t.Fatalf("late 180 of a timed-out target: %v, want CANCEL only", acts)
		}
		acts = h.ev(h.resp(1, 200, "x"))
		if countKind(acts, actWrite) != 1 || countKind(acts, actBye) != 1 || countKind(acts, actRespondA) != 0 {
			t.Fatalf("late 200 of a timed-out target: %v, want ACK + BYE", acts)
		}
		// The second target answers: that one is the call.
		acts = h.ev(h.resp(2, 200, "z"))
		if s := statuses(acts); len(s) != 1 || s[0] != 200 {
			t.Fatalf("answer of the second target: %v", s)
		}
	})
	t.Run("second 2xx of a fork is ACKed and BYEd, retransmission re-ACKed", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		acts := h.ev(h.resp(1, 200, "y"))
		if countKind(acts, actWrite) != 1 || countKind(acts, actBye) != 1 {
			t.Fatalf("fork 2xx: %v", acts)
		}
		if dialogOf(acts[len(acts)-1].req) == dialogOf(parseRequest(h.c.kept.acks["x"])) {
			t.Fatal("BYE sent on the kept dialog")
		}
		acts = h.ev(h.resp(1, 200, "x"))
		if countKind(acts, actWrite) != 1 || countKind(acts, actBye) != 0 {
			t.Fatalf("2xx retransmission: %v, want the ACK again", acts)
		}
	})
	t.Run("cancel after 2xx was queued hangs up B and is not answered", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		acts := h.ev(event{kind: evCancel})
		if countKind(acts, actWrite) != 1 || countKind(acts, actBye) != 1 || countKind(acts, actEnd) != 1 {
			t.Fatalf("cancel racing the 2xx: %v", acts)
		}
		if h.c.result != "cancelled" || !h.c.answered.IsZero() {
			t.Fatalf("result %q answered %v", h.c.result, h.c.answered)
		}
	})
	t.Run("ACK timeout BYEs both legs and is not answered", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		acts := h.ev(event{kind: evTimer, timer: timerKey{kind: tmAckWait}, gen: h.c.timers[timerKey{kind: tmAckWait}].gen})
		if countKind(acts, actBye) != 2 || countKind(acts, actWrite) != 1 || !h.c.answered.IsZero() {
			t.Fatalf("ACK timeout: %v", acts)
		}
	})
	t.Run("early BYE from the callee answers the caller", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 180, "x"))
		acts := h.ev(h.byeFrom(h.br(1).leg))
		if s := statuses(acts); len(s) != 2 || s[0] != 200 || s[1] != 480 {
			t.Fatalf("early BYE: responses %v, want 200 to the BYE and 480 to A", s)
		}
		if countKind(acts, actBye) != 0 || countKind(acts, actCancel) != 1 {
			t.Fatalf("early BYE: %v, want CANCEL to B and no BYE to A", acts)
		}
	})
	t.Run("re-INVITE 2xx resent until ACK, ACK resent on retransmitted 2xx", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		reinv := h.inDialog(sip.INVITE, h.c.a)
		acts := h.ev(event{kind: evRequest, leg: h.c.a, req: reinv})
		if countKind(acts, actRelay) != 1 {
			t.Fatalf("re-INVITE not relayed: %v", acts)
		}
		rel := acts[0].rel
		ok := sip.NewResponseFromRequest(rel.out, 200, "OK", nil)
		acts = h.ev(event{kind: evRelayResponse, rel: rel, res: ok})
		if s := statuses(acts); len(s) != 1 || s[0] != 200 {
			t.Fatalf("re-INVITE 2xx not relayed: %v", s)
		}
		if !h.fire(timerKey{kind: tmRetransmit, id: rel.id}) || statuses(h.log[len(h.log)-1:])[0] != 200 {
			t.Fatal("re-INVITE 2xx not retransmitted")
		}
		ack := h.inDialog(sip.ACK, h.c.a)
		ack.CSeq().SeqNo = reinv.CSeq().SeqNo
		acts = h.ev(event{kind: evAck, leg: h.c.a, req: ack})
		if countKind(acts, actWrite) != 1 {
			t.Fatalf("ACK not relayed: %v", acts)
		}
		if h.fire(timerKey{kind: tmRetransmit, id: rel.id}) {
			t.Fatal("2xx still retransmitted after the ACK")
		}
		// B retransmits its 2xx: our ACK was lost.
		acts = h.ev(event{kind: evRelayResponse, rel: rel, res: ok})
		if countKind(acts, actWrite) != 1 || acts[0].req.Method != sip.ACK {
			t.Fatalf("retransmitted 2xx not re-ACKed: %v", acts)
		}
	})
	t.Run("481 to a relayed request ends both legs", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		acts := h.ev(event{kind: evRequest, leg: h.c.a, req: h.inDialog(sip.INFO, h.c.a)})
		rel := acts[0].rel
		acts = h.ev(event{kind: evRelayResponse, rel: rel, res: sip.NewResponseFromRequest(rel.out, 481, "Gone", nil)})
		if countKind(acts, actBye) != 2 || countKind(acts, actEnd) != 1 {
			t.Fatalf("481: %v", acts)
		}
	})
	t.Run("glare: re-INVITE while one is pending gets 491", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		h.ev(event{kind: evRequest, leg: h.c.a, req: h.inDialog(sip.INVITE, h.c.a)})
		b := h.c.kept.leg
		b.remoteCSeq = 10
		acts := h.ev(event{kind: evRequest, leg: b, req: h.inDialog(sip.INVITE, b)})
		if s := statuses(acts); len(s) != 1 || s[0] != 491 {
			t.Fatalf("glare: %v, want 491", s)
		}
	})
	t.Run("failover after 503 and no target left answers 503 with Retry-After", func(t *testing.T) {
		h := newFSM(t, 2)
		h.ev(event{kind: evStart})
		if acts := h.ev(h.resp(1, 503, "x")); countKind(acts, actInvite) != 1 {
			t.Fatalf("no failover: %v", acts)
		}
		acts := h.ev(h.resp(2, 503, "z"))
		s := statuses(acts)
		if len(s) != 1 || s[0] != 503 || h.c.aFinal != 503 {
			t.Fatalf("all targets refused: %v", s)
		}
		for _, a := range acts {
			if a.kind == actRespondA && a.res.GetHeader("Retry-After") == nil {
				t.Fatal("503 without Retry-After")
			}
		}
	})
	t.Run("session timer tears an unrefreshed call down", func(t *testing.T) {
		h := newFSM(t, 1)
		h.ev(event{kind: evStart})
		e := h.resp(1, 200, "x")
		e.res.AppendHeader(sip.NewHeader("Session-Expires", "90;refresher=uac"))
		h.ev(e)
		h.ev(h.ackFromA())
		if !h.fire(timerKey{kind: tmSession}) || h.c.result != "session_expired" {
			t.Fatalf("session not enforced: result %q", h.c.result)
		}
	})
}

func TestMapReplaces(t *testing.T) {
	h := newFSM(t, 1)
	h.ev(event{kind: evStart})
	h.ev(h.resp(1, 200, "btag"))
	h.ev(h.ackFromA())
	s := h.c.s
	s.calls.put(h.c.a, h.c)
	s.calls.put(h.c.kept.leg, h.c)
	b := h.c.kept.leg
	got, ok := s.mapReplaces("a-call-id;to-tag=sbctag;from-tag=atag;early-only")
	want := b.callID + ";to-tag=btag;from-tag=" + b.localTag + ";early-only"
	if !ok || got != want {
		t.Fatalf("mapReplaces = %q, %v; want %q", got, ok, want)
	}
	if _, ok := s.mapReplaces("a-call-id;to-tag=sbctag;from-tag=wrong"); ok {
		t.Fatal("a wrong from-tag matched")
	}
	if _, ok := s.mapReplaces("nope;to-tag=x;from-tag=y"); ok {
		t.Fatal("an unknown dialog matched")
	}
	// A Refer-To's, mapped before the REFER's transition.
	req := h.inDialog(sip.REFER, h.c.a)
	req.AppendHeader(sip.NewHeader("Refer-To", "<sip:2000@x?Replaces=a-call-id%3Bto-tag%3Dsbctag%3Bfrom-tag%3Datag>"))
	rm := s.referReplaces(req)
	if rm == nil || !rm.ok || !strings.Contains(rm.mapped, b.callID) || strings.Contains(rm.mapped, "a-call-id") {
		t.Fatalf("Refer-To Replaces = %+v", rm)
	}
}

// newOutboundFSM is newFSM for an outbound call: from the PBX to carrier
// pools "carrier-a" (one target, digest credentials) and "carrier-b" (one
// target), tried in that order.
func newOutboundFSM(t *testing.T) *fsmHarness {
	h := newFSM(t, 1)
	c := h.c
	mk := func(name, addr string, auth *policy.PoolAuth) *pool {
		return &pool{cfg: &policy.Pool{Name: name, Realm: "external", Transport: "udp", Auth: auth},
			targets: []*target{{pool: name, addr: netip.MustParseAddrPort(addr), up: true}}, weights: []int{1}}
	}
	a := mk("carrier-a", "203.0.113.10:5060", &policy.PoolAuth{Username: "sbc", Password: "secret", Clear: "secret"})
	b := mk("carrier-b", "203.0.113.20:5060", nil)
	c.pools, c.pool = []*pool{a, b}, a
	c.route = &policy.OutboundRoute{Pools: []string{"carrier-a", "carrier-b"}, PAI: "keep", Privacy: "keep"}
	c.srcPool, c.user, c.toUser, c.fromUser = "pbx", "+442079460000", "+442079460000", "1001"
	return h
}

// challenge is a 401 (or 407) of branch n's target with a digest
// challenge.
func (h *fsmHarness) challenge(n, code int) event {
	e := h.resp(n, code, "c")
	if e.res == nil {
		return e
	}
	hdr := "WWW-Authenticate"
	if code == 407 {
		hdr = "Proxy-Authenticate"
	}
	e.res.AppendHeader(sip.NewHeader(hdr, `Digest realm="carrier", nonce="n`+fmt.Sprint(n)+`", algorithm=MD5, qop="auth"`))
	return e
}

// TestOutboundCallEventOrders: the invariants hold for every order of
// events of an outbound call with a carrier's challenge and failover to
// the next carrier.
func TestOutboundCallEventOrders(t *testing.T) {
	type step func(h *fsmHarness) event
	steps := map[string]step{
		"401":    func(h *fsmHarness) event { return h.challenge(1, 401) },
		"407b2":  func(h *fsmHarness) event { return h.challenge(2, 407) },
		"180b2":  func(h *fsmHarness) event { return h.resp(2, 180, "x") },
		"200b2":  func(h *fsmHarness) event { return h.resp(2, 200, "x") },
		"503b2":  func(h *fsmHarness) event { return h.resp(2, 503, "x") },
		"502":    func(h *fsmHarness) event { return h.resp(1, 502, "x") },
		"180b3":  func(h *fsmHarness) event { return h.resp(3, 180, "y") },
		"200b3":  func(h *fsmHarness) event { return h.resp(3, 200, "y") },
		"cancel": func(*fsmHarness) event { return event{kind: evCancel} },
		"ackA":   func(h *fsmHarness) event { return h.ackFromA() },
		"byeA":   func(h *fsmHarness) event { return h.byeFrom(h.c.a) },
		"tgt2": func(h *fsmHarness) event {
			h.c.mu.Lock()
			defer h.c.mu.Unlock()
			if e, ok := h.c.timers[timerKey{kind: tmTarget, id: 2}]; ok {
				return event{kind: evTimer, timer: timerKey{kind: tmTarget, id: 2}, gen: e.gen}
			}
			return event{}
		},
	}
	sets := [][]string{
		{"401", "180b2", "200b2", "cancel"},
		{"401", "200b2", "ackA", "byeA"},
		{"401", "407b2", "180b3", "200b3", "cancel"},
		{"401", "503b2", "200b3", "ackA"},
		{"401", "tgt2", "180b2", "200b3", "cancel"},
		{"502", "180b2", "200b2", "cancel"},
		{"401", "180b2", "503b2", "200b3", "byeA"},
	}
	runs := 0
	for _, set := range sets {
		permute(set, func(order []string) {
			runs++
			h := newOutboundFSM(t)
			h.ev(event{kind: evStart})
			for _, name := range order {
				e := steps[name](h)
				if e.kind == evStart && e.br == nil && e.req == nil {
					h.steps = append(h.steps, name+"(n/a)")
					continue
				}
				h.steps = append(h.steps, name+":")
				h.ev(e)
			}
			h.quiesce()
			h.check()
		})
	}
	t.Logf("%d event orders checked", runs)
}

func TestOutboundTransitions(t *testing.T) {
	t.Run("a carrier's 401 is answered once in the same dialog with CSeq + 1", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.ev(event{kind: evStart})
		first := h.invs[1]
		acts := h.ev(h.challenge(1, 401))
		if countKind(acts, actInvite) != 1 || countKind(acts, actRespondA) != 0 {
			t.Fatalf("401: %v, want a new INVITE and nothing to A", acts)
		}
		inv := h.invs[2]
		if inv.CallID().Value() != first.CallID().Value() || tagOf(inv.From().Params) != tagOf(first.From().Params) {
			t.Fatal("the answering INVITE left the dialog (Call-ID or From tag changed)")
		}
		if inv.CSeq().SeqNo != first.CSeq().SeqNo+1 {
			t.Fatalf("CSeq %d after %d, want +1", inv.CSeq().SeqNo, first.CSeq().SeqNo)
		}
		b1, _ := first.Via().Params.Get("branch")
		b2, _ := inv.Via().Params.Get("branch")
		if b1 == b2 {
			t.Fatal("the answering INVITE reuses the transaction's Via branch")
		}
		auth := inv.GetHeader("Authorization")
		if auth == nil || !strings.Contains(auth.Value(), `username="sbc"`) || !strings.Contains(auth.Value(), `nonce="n1"`) ||
			!strings.Contains(auth.Value(), `uri="`+inv.Recipient.String()+`"`) {
			t.Fatalf("Authorization = %v", auth)
		}
		if h.br(2).tgt != h.br(1).tgt {
			t.Fatal("the answering INVITE went to another target")
		}
		if s := statuses(h.ev(h.resp(2, 200, "x"))); len(s) != 1 || s[0] != 200 {
			t.Fatalf("answer after auth: %v", s)
		}
	})
	t.Run("a second challenge fails over to the next carrier", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.ev(event{kind: evStart})
		h.ev(h.challenge(1, 401))
		acts := h.ev(h.challenge(2, 407))
		if countKind(acts, actInvite) != 1 || countKind(acts, actRespondA) != 0 {
			t.Fatalf("second challenge: %v, want an INVITE to carrier-b", acts)
		}
		if br := h.br(3); br.pool.cfg.Name != "carrier-b" || br.inv.GetHeader("Authorization") != nil || br.inv.GetHeader("Proxy-Authorization") != nil {
			t.Fatalf("third INVITE to pool %s, with credentials %v", br.pool.cfg.Name, br.inv.GetHeader("Authorization"))
		}
		// carrier-b has no credentials: its challenge is relayed.
		acts = h.ev(h.challenge(3, 401))
		if s := statuses(acts); len(s) != 1 || s[0] != 401 {
			t.Fatalf("challenge of a pool without auth: %v, want it relayed", s)
		}
	})
	t.Run("a challenge of another realm is not answered", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.c.pools[0].cfg.Auth.Realm = "other"
		h.ev(event{kind: evStart})
		h.ev(h.challenge(1, 401))
		if br := h.br(2); br == nil || br.pool.cfg.Name != "carrier-b" {
			t.Fatal("no failover after a challenge of another realm")
		}
	})
	t.Run("408 and any 5xx of a carrier fail over; 6xx does not", func(t *testing.T) {
		for _, code := range []int{408, 500, 502, 503, 504, 580} {
			h := newOutboundFSM(t)
			h.ev(event{kind: evStart})
			if acts := h.ev(h.resp(1, code, "x")); countKind(acts, actInvite) != 1 || h.br(2).pool.cfg.Name != "carrier-b" {
				t.Fatalf("%d: %v, want failover to carrier-b", code, acts)
			}
		}
		h := newOutboundFSM(t)
		h.ev(event{kind: evStart})
		if s := statuses(h.ev(h.resp(1, 603, "x"))); len(s) != 1 || s[0] != 603 {
			t.Fatalf("603: %v, want it relayed", s)
		}
	})
	t.Run("a backend's 502 is relayed (inbound failover codes unchanged)", func(t *testing.T) {
		h := newFSM(t, 2)
		h.ev(event{kind: evStart})
		if s := statuses(h.ev(h.resp(1, 502, "x"))); len(s) != 1 || s[0] != 502 {
			t.Fatalf("502 from a backend: %v, want relayed", s)
		}
	})
	t.Run("no carrier left answers 503", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 503, "x"))
		if s := statuses(h.ev(h.resp(2, 503, "x"))); len(s) != 1 || s[0] != 503 || h.c.result != resultNoTarget {
			t.Fatalf("all carriers failed: %v result %s", s, h.c.result)
		}
	})
	t.Run("the route's caller-ID policy shapes the INVITE", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.c.route.PAI, h.c.route.Privacy = "from", "id"
		h.c.aReq.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:1001@10.0.0.5>"))
		h.c.aReq.AppendHeader(sip.NewHeader("Privacy", "none"))
		h.c.fromUser = "+441234567890"
		h.ev(event{kind: evStart})
		inv := h.invs[1]
		if inv.From().Address.User != "+441234567890" || inv.Recipient.User != "+442079460000" || inv.To().Address.User != "+442079460000" {
			t.Fatalf("From %s, R-URI %s, To %s", inv.From().Address.User, inv.Recipient.User, inv.To().Address.User)
		}
		pai := inv.GetHeaders("P-Asserted-Identity")
		if len(pai) != 1 || !strings.Contains(pai[0].Value(), "+441234567890@") || strings.Contains(pai[0].Value(), "10.0.0.5") {
			t.Fatalf("P-Asserted-Identity %v", pai)
		}
		if pv := inv.GetHeaders("Privacy"); len(pv) != 1 || pv[0].Value() != "id" {
			t.Fatalf("Privacy %v", pv)
		}
	})
	t.Run("per-route max duration", func(t *testing.T) {
		h := newOutboundFSM(t)
		h.c.maxDuration = 0
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		if h.fire(timerKey{kind: tmMaxDuration}) {
			t.Fatal("max_duration timer armed with the route's 0s")
		}
		h = newOutboundFSM(t)
		h.c.maxDuration = 30 * time.Minute
		h.ev(event{kind: evStart})
		h.ev(h.resp(1, 200, "x"))
		h.ev(h.ackFromA())
		if !h.fire(timerKey{kind: tmMaxDuration}) || h.c.result != resultMaxDuration {
			t.Fatalf("the route's max_duration did not end the call: result %q", h.c.result)
		}
	})
}
