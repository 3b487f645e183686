package sbc

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Stage 5, bridge: a call is an A-leg (carrier, SBC as UAS) and a B-leg
// (backend, SBC as UAC). This file holds the setup of a call: the INVITE
// towards a chosen target with failover, relaying of provisional and final
// responses, CANCEL, and the 2xx/ACK handshake on both legs.

type callState int32

const (
	stSetup     callState = iota // INVITE sent to a target, no final yet
	stAnswered                   // 2xx relayed to A, waiting for A's ACK
	stConfirmed                  // both legs confirmed
	stEnded
)

type call struct {
	s    *SBC
	id   string
	st   *snapshot
	log  *slog.Logger
	pool *pool

	trunk     *policy.Trunk
	user      string // request-URI user towards the backend (changes on a followed 3xx)
	redirects int
	a         *leg
	b         atomic.Pointer[leg] // current B attempt
	// setupRelay is the initial INVITE's relay once B answered.
	setupRelay atomic.Pointer[inviteRelay]
	// ending is set when a BYE from a peer is being handled.
	ending atomic.Bool
	// release frees the trunk's concurrent-call slot.
	release func()
	src     netip.AddrPort // the caller's source
	aReq    *sip.Request   // A's INVITE with our To tag: template of every response to it
	aTx     sip.ServerTransaction

	ctx    context.Context // ends when the call ends or A cancels
	cancel context.CancelFunc

	mu       sync.Mutex
	state    callState
	final    bool // a final response to A's INVITE was sent (or A cancelled)
	canceled bool
	result   string

	created  time.Time
	answered time.Time
	activity atomic.Int64 // unix nanos of the last in-dialog request
	ended    chan struct{}
	endOnce  sync.Once
}

// attemptOutcome says how one INVITE attempt towards a target finished.
type attemptOutcome int

const (
	outcomeDone     attemptOutcome = iota // the call is answered or finally failed
	outcomeFailover                       // try the next target
	outcomeRedirect                       // a 3xx to follow (policy follow_redirects)
)

// maxRedirects bounds how many 3xx one call follows.
const maxRedirects = 3

// newCall runs the setup of an inbound call from a trunk. It returns when A
// has a final answer and, for a 2xx, when A's ACK came (or never did).
func (s *SBC) newCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, release func()) {
	// 100 Trying at once: the carrier must stop retransmitting while we route.
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))

	pc := st.pol.RouteFor(p.trunk.Name, req.Recipient.User)
	if pc == nil {
		release()
		s.drop("route", "no_route")
		s.reject(ep, req, tx, 404, "Not Found", nil)
		s.metrics.Calls.WithLabelValues("no_route").Inc()
		return
	}
	c := &call{
		s: s, id: newID(), st: st, pool: st.pools[pc.Name], trunk: p.trunk, aTx: tx,
		created: time.Now(), ended: make(chan struct{}), release: release, src: p.src,
	}
	c.log = s.log.With("call", c.id, "trunk", p.trunk.Name, "pool", pc.Name)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.touch()

	from, to := req.From(), req.To()
	c.a = &leg{
		name: "a", ep: ep, transport: transportOf(req), dst: p.src,
		callID: req.CallID().Value(), localTag: sip.GenerateTagN(16),
		localURI: *to.Address.Clone(), localName: to.DisplayName,
		remoteURI: *from.Address.Clone(), remoteName: from.DisplayName,
		inviteCSeq: req.CSeq().SeqNo, remoteTag: tagOf(from.Params),
		remoteCSeq: req.CSeq().SeqNo, routes: recordRoutes(req, false),
		acks: map[uint32]*inviteRelay{},
	}
	if ct := req.Contact(); ct != nil {
		c.a.target = *ct.Address.Clone()
	} else {
		c.a.target = *from.Address.Clone()
	}
	c.user = req.Recipient.User
	c.aReq = req.Clone()
	c.aReq.To().Params.Add("tag", c.a.localTag)
	s.calls.put(c.a, c)
	s.metrics.CallsActive.Inc()
	c.log.Debug("call setup", "from", p.src.String(), "ruri_user", req.Recipient.User)

	if !tx.OnCancel(func(*sip.Request) { c.onCancel() }) {
		c.onCancel()
	}
	c.setup()
}

func transportOf(m interface{ Transport() string }) string {
	switch m.Transport() {
	case "TCP", "tcp":
		return "tcp"
	}
	return "udp"
}

func (c *call) touch() { c.activity.Store(time.Now().UnixNano()) }

// onCancel runs when A cancels its INVITE. sipgo has already answered the
// CANCEL with 200 and the INVITE with 487; the B-leg is cancelled by the
// attempt loop watching c.ctx.
func (c *call) onCancel() {
	c.mu.Lock()
	if c.final {
		c.mu.Unlock()
		return
	}
	c.final = true
	c.canceled = true
	c.mu.Unlock()
	c.log.Info("call cancelled by caller")
	c.cancel()
}

// setup tries targets of the pool until one gives a final answer.
func (c *call) setup() {
	lim := c.st.pol.Routing
	ringCtx, cancel := context.WithTimeout(c.ctx, c.st.limits.RingTimeout.Duration)
	defer cancel()
	tried := map[*target]bool{}
	for attempt := 0; attempt < lim.MaxAttempts; attempt++ {
		t := c.pool.pick(tried)
		if t == nil {
			break
		}
		tried[t] = true
		if attempt > 0 {
			c.s.metrics.Failovers.WithLabelValues(c.pool.cfg.Name).Inc()
			c.log.Info("failover", "target", t.addr.String(), "attempt", attempt+1)
		}
		switch c.attempt(ringCtx, t) {
		case outcomeDone:
			return
		case outcomeRedirect:
			// Follow within the same pool: every target may be tried again
			// for the new user.
			tried = map[*target]bool{}
			attempt = -1
		}
		if ringCtx.Err() != nil {
			break
		}
	}
	switch {
	case c.isCanceled():
		c.end("cancelled", "caller")
	case ringCtx.Err() != nil:
		c.finalToA(408, "Request Timeout", nil)
		c.end("timeout", "sbc")
	default:
		c.s.drop("route", "no_target")
		h := sip.NewHeader("Retry-After", strconv.Itoa(c.st.pol.Routing.RetryAfter))
		c.finalToA(503, "Service Unavailable", nil, h)
		c.end("no_target", "sbc")
	}
}

func (c *call) isCanceled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.canceled
}

// newBLeg builds the B-leg for one attempt: fresh Call-ID and tag, the
// caller's user parts with the SBC's host, the target as request-URI.
func (c *call) newBLeg(t *target) *leg {
	ep := c.s.realms[c.pool.cfg.Realm]
	tr := c.pool.cfg.Transport
	face := ep.face(tr)
	aFrom, aTo := c.aReq.From(), c.aReq.To()
	user := c.user
	host := t.addr.Addr().String()
	b := &leg{
		name: "b", ep: ep, transport: tr, dst: t.addr,
		callID: newID(), localTag: sip.GenerateTagN(16),
		localURI:   sip.Uri{Scheme: "sip", User: aFrom.Address.User, Host: face.Host},
		localName:  aFrom.DisplayName,
		remoteURI:  sip.Uri{Scheme: "sip", User: aTo.Address.User, Host: host},
		remoteName: aTo.DisplayName,
		target:     sip.Uri{Scheme: "sip", User: user, Host: host, Port: int(t.addr.Port())},
		routes:     []sip.Uri{},
		acks:       map[uint32]*inviteRelay{},
	}
	if tr == "tcp" {
		b.target.UriParams = sip.NewParams()
		b.target.UriParams.Add("transport", "tcp")
	}
	b.cseq.Store(uint32(time.Now().UnixNano()%30000) + 1)
	return b
}

// attempt sends the INVITE to one target and follows it to a final answer.
func (c *call) attempt(ctx context.Context, t *target) attemptOutcome {
	b := c.newBLeg(t)
	inv := b.newRequest(sip.INVITE, 0, c.st.pol.Server.UserAgent)
	b.inviteCSeq = inv.CSeq().SeqNo
	c.st.headers.Copy(inv, c.aReq, "content-type")
	if mf := c.aReq.MaxForwards(); mf != nil && mf.Val() > 1 && mf.Val() <= 70 {
		v := sip.MaxForwardsHeader(mf.Val() - 1)
		inv.ReplaceHeader(&v)
	}
	copyBody(inv, c.aReq)
	c.b.Store(b)
	c.s.calls.put(b, c)

	rel := &inviteRelay{c: c, from: c.a, to: b, fromCSeq: c.a.inviteCSeq, toCSeq: b.inviteCSeq, ackCh: make(chan *sip.Request, 1)}
	c.a.mu.Lock()
	c.a.acks[c.a.inviteCSeq] = rel
	c.a.mu.Unlock()

	tx, err := b.ep.request(context.Background(), inv, b.transport, b.dst)
	if err != nil {
		c.log.Warn("invite to target failed", "target", t.addr.String(), "error", err)
		c.s.calls.del(b)
		return outcomeFailover
	}
	tx.OnRetransmission(rel.onRetransmission)

	noAnswer := time.NewTimer(c.st.pol.Routing.TargetTimeout.Duration)
	defer noAnswer.Stop()
	heard := false
	for {
		select {
		case res := <-tx.Responses():
			c.s.countResponse(b.ep.name, res)
			c.s.passiveHealth(c.pool, t, true) // any response: the target is alive
			if !c.s.validResponse(b.ep.name, res) {
				continue
			}
			if !res.IsProvisional() {
				c.s.watchResponse(c.src, true, c.aReq, res)
			}
			if !heard {
				heard = true
				noAnswer.Stop()
			}
			switch {
			case res.StatusCode == 100:
				continue
			case res.IsProvisional():
				if tag := tagOf(res.To().Params); tag != "" {
					b.setRemote(tag, res.Contact(), recordRoutes(res, true))
				}
				c.provisionalToA(res)
			case res.IsSuccess():
				b.setRemote(tagOf(res.To().Params), res.Contact(), recordRoutes(res, true))
				c.answer(rel, res)
				return outcomeDone
			case res.IsRedirection() && c.st.pol.Routing.FollowRedirects && c.redirects < maxRedirects:
				if ct := res.Contact(); ct != nil && ct.Address.User != "" {
					c.redirects++
					c.log.Info("following redirect", "status", res.StatusCode, "user", ct.Address.User)
					c.user = ct.Address.User
					c.s.calls.del(b)
					return outcomeRedirect
				}
				c.failFromB(res)
				return outcomeDone
			case res.StatusCode == 503 || res.StatusCode == 500 || res.StatusCode == 408:
				// The target is unwell, not the call: try another one.
				c.log.Info("target refused call", "target", t.addr.String(), "status", res.StatusCode)
				c.s.calls.del(b)
				return outcomeFailover
			default:
				c.failFromB(res)
				return outcomeDone
			}
		case <-noAnswer.C:
			c.log.Warn("target did not answer INVITE", "target", t.addr.String(), "timeout", c.st.pol.Routing.TargetTimeout.Duration.String())
			c.s.passiveHealth(c.pool, t, false) // no response within target_timeout
			tx.Terminate()
			c.s.calls.del(b)
			return outcomeFailover
		case <-tx.Done():
			c.log.Warn("invite transaction to target failed", "target", t.addr.String(), "error", errString(tx.Err()))
			c.s.calls.del(b)
			return outcomeFailover
		case <-ctx.Done():
			// A cancelled, or the ring timeout expired: cancel B in the
			// background (it may still answer: that gets ACK + BYE).
			go c.cancelB(rel, tx, inv, heard)
			if c.isCanceled() {
				c.end("cancelled", "caller")
			} else {
				c.finalToA(408, "Request Timeout", nil)
				c.end("timeout", "sbc")
			}
			return outcomeDone
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// cancelB sends CANCEL for an INVITE to the backend and drains the INVITE
// transaction. RFC 3261 9.1: CANCEL only after a provisional response; a
// 2xx that crosses the CANCEL is ACKed and the dialog ended with BYE.
func (c *call) cancelB(rel *inviteRelay, tx sip.ClientTransaction, inv *sip.Request, heard bool) {
	b := rel.to
	defer c.s.calls.del(b)
	wait := time.NewTimer(c.st.pol.Routing.TargetTimeout.Duration)
	defer wait.Stop()
	sent := false
	sendCancel := func() {
		sent = true
		creq := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
		creq.AppendHeader(inv.Via().Clone())
		for _, h := range inv.GetHeaders("Route") {
			creq.AppendHeader(sip.HeaderClone(h))
		}
		mf := sip.MaxForwardsHeader(70)
		creq.AppendHeader(&mf)
		creq.AppendHeader(sip.HeaderClone(inv.From()))
		creq.AppendHeader(sip.HeaderClone(inv.To()))
		creq.AppendHeader(sip.HeaderClone(inv.CallID()))
		creq.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
		creq.SetBody(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		if _, err := b.ep.do(ctx, creq, b.transport, b.dst); err != nil {
			c.log.Warn("CANCEL to backend failed", "error", err)
		}
	}
	if heard {
		go sendCancel()
	}
	for {
		select {
		case res := <-tx.Responses():
			switch {
			case res.IsProvisional():
				if !sent && res.StatusCode >= 100 {
					go sendCancel()
				}
			case res.IsSuccess():
				// The backend answered anyway: confirm and hang up.
				b.setRemote(tagOf(res.To().Params), res.Contact(), recordRoutes(res, true))
				ack := b.newRequest(sip.ACK, b.inviteCSeq, c.st.pol.Server.UserAgent)
				ack.SetBody(nil)
				_ = b.ep.write(ack, b.transport, b.dst)
				c.byeLeg(context.Background(), b, "cancelled")
				return
			default:
				return
			}
		case <-wait.C:
			if !sent {
				tx.Terminate()
				return
			}
		case <-tx.Done():
			return
		}
	}
}

// provisionalToA relays a 1xx (>100) to A unless a final was already sent:
// sipgo may deliver a 180 after the 200 (one goroutine per message).
func (c *call) provisionalToA(res *sip.Response) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return
	}
	out := c.responseToA(res)
	if err := c.aTx.Respond(out); err != nil {
		c.log.Debug("provisional to caller failed", "error", err)
	}
}

// responseToA builds A's copy of a B response to the initial INVITE.
func (c *call) responseToA(res *sip.Response) *sip.Response {
	out := sip.NewResponseFromRequest(c.aReq, res.StatusCode, res.Reason, nil)
	c.st.headers.Copy(out, res, "content-type")
	if res.StatusCode > 100 && res.StatusCode < 300 {
		out.AppendHeader(c.a.face().Contact(""))
	}
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		c.redirectContacts(out, res)
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	copyBody(out, res)
	return out
}

// redirectContacts relays a 3xx's Contacts with the backend's host
// replaced by the SBC's face: the carrier retries through the SBC.
func (c *call) redirectContacts(out, res *sip.Response) {
	f := c.a.face()
	for _, h := range res.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		u := f.URI(ct.Address.User)
		out.AppendHeader(&sip.ContactHeader{Address: u})
	}
}

// finalToA sends a final response of the SBC's own to A's INVITE.
func (c *call) finalToA(code int, reason string, body []byte, hdrs ...sip.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return
	}
	c.final = true
	out := sip.NewResponseFromRequest(c.aReq, code, reason, body)
	for _, h := range hdrs {
		out.AppendHeader(h)
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	if err := c.aTx.Respond(out); err != nil {
		c.log.Debug("final to caller failed", "error", err)
	}
}

// failFromB relays a final non-2xx answer of the backend to A.
func (c *call) failFromB(res *sip.Response) {
	c.s.calls.del(c.b.Load())
	c.mu.Lock()
	if !c.final {
		c.final = true
		if err := c.aTx.Respond(c.responseToA(res)); err != nil {
			c.log.Debug("final to caller failed", "error", err)
		}
	}
	c.mu.Unlock()
	c.end(resultOf(res.StatusCode), "callee")
}

func resultOf(code int) string {
	switch {
	case code == 486 || code == 600:
		return "busy"
	case code == 487:
		return "cancelled"
	case code >= 300 && code < 400:
		return "redirected"
	case code == 404 || code == 604:
		return "not_found"
	case code == 480 || code == 408:
		return "no_answer"
	case code >= 400 && code < 500:
		return "rejected"
	case code >= 500 && code < 600:
		return "failed"
	default:
		return "declined"
	}
}

// answer relays B's 2xx to A and completes the three-way handshake: the
// 2xx is retransmitted to A until A's ACK, which is then relayed to B
// (carrying the SDP answer in a delayed-offer call).
func (c *call) answer(rel *inviteRelay, res *sip.Response) {
	c.mu.Lock()
	if c.final {
		// A cancelled while B answered: confirm B and hang it up.
		c.mu.Unlock()
		rel.ackTo(nil)
		c.byeLeg(context.Background(), rel.to, "cancelled")
		c.end("cancelled", "caller")
		return
	}
	c.final = true
	c.state = stAnswered
	c.answered = time.Now()
	out := c.responseToA(res)
	c.mu.Unlock()
	c.setupRelay.Store(rel)
	c.log.Debug("call answered")

	ack, ok := c.retransmitUntilAck(rel, func() error { return c.aTx.Respond(out) })
	if !ok {
		rel.ackTo(nil) // B's 2xx is acknowledged whatever happens next
		if c.stateNow() == stEnded {
			return // a BYE crossed the ACK and ended the call
		}
		c.log.Warn("caller never acknowledged 2xx; ending call")
		c.byeLeg(context.Background(), rel.to, "ack_timeout")
		c.end("ack_timeout", "sbc")
		return
	}
	rel.ackTo(ack)
	c.mu.Lock()
	if c.state == stAnswered {
		c.state = stConfirmed
	}
	c.mu.Unlock()
	go c.watch()
}

// retransmitUntilAck sends a 2xx, repeating it at T1, 2T1 … T2 (RFC 3261
// 13.3.1.4) until the matching ACK arrives or 64*T1 passes.
func (c *call) retransmitUntilAck(rel *inviteRelay, send func() error) (*sip.Request, bool) {
	if err := send(); err != nil {
		c.log.Debug("2xx send failed", "error", err)
	}
	interval := sip.T1
	timer := time.NewTimer(interval)
	defer timer.Stop()
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	for {
		select {
		case ack := <-rel.ackCh:
			return ack, true
		case <-timer.C:
			if rel.from.transport == "udp" {
				_ = send()
			}
			interval = min(2*interval, sip.T2)
			timer.Reset(interval)
		case <-deadline.C:
			return nil, false
		case <-c.ended:
			return nil, false
		}
	}
}

// byeLeg ends one leg with a BYE (best effort, bounded by ctx and 64*T1).
func (c *call) byeLeg(ctx context.Context, l *leg, reason string) {
	if l == nil {
		return
	}
	bye := l.newRequest(sip.BYE, 0, c.st.pol.Server.UserAgent)
	if reason != "" {
		bye.AppendHeader(sip.NewHeader("Reason", `SIP;cause=200;text="`+reason+`"`))
	}
	bye.SetBody(nil)
	ctx, cancel := context.WithTimeout(ctx, 64*sip.T1)
	defer cancel()
	res, err := l.ep.do(ctx, bye, l.transport, l.dst)
	if err != nil {
		c.log.Debug("BYE failed", "leg", l.name, "error", err)
		return
	}
	if res.StatusCode >= 300 {
		c.log.Debug("BYE refused", "leg", l.name, "status", res.StatusCode)
	}
}

// terminate ends an established call from the SBC's side (limits,
// shutdown): BYE on both legs, waiting for their answers at most until ctx
// ends.
func (c *call) terminate(ctx context.Context, reason string) {
	c.mu.Lock()
	st := c.state
	final := c.final
	c.mu.Unlock()
	if st == stEnded || c.ending.Load() {
		return
	}
	if !final {
		// Still ringing: cancel B (the attempt loop does it) and answer A.
		c.finalToA(503, "Service Unavailable", nil)
		c.cancel()
		c.end(reason, "sbc")
		return
	}
	c.log.Info("call terminated by sbc", "reason", reason)
	var wg sync.WaitGroup
	for _, l := range []*leg{c.a, c.b.Load()} {
		wg.Add(1)
		go func(l *leg) { defer wg.Done(); c.byeLeg(ctx, l, reason) }(l)
	}
	c.end(reason, "sbc")
	wg.Wait()
}

// watch enforces the call's duration and inactivity limits.
func (c *call) watch() {
	lim := c.st.limits
	var maxC <-chan time.Time
	if d := lim.MaxDuration.Duration; d > 0 {
		t := time.NewTimer(d - time.Since(c.answered))
		defer t.Stop()
		maxC = t.C
	}
	var idleC <-chan time.Time
	if d := lim.InactivityTimeout.Duration; d > 0 {
		t := time.NewTicker(max(d/8, 10*time.Millisecond))
		defer t.Stop()
		idleC = t.C
	}
	for {
		select {
		case <-c.ended:
			return
		case <-maxC:
			c.terminate(context.Background(), "max_duration")
			return
		case <-idleC:
			if time.Since(time.Unix(0, c.activity.Load())) >= lim.InactivityTimeout.Duration {
				c.terminate(context.Background(), "inactivity")
				return
			}
		}
	}
}

// end records the call's result once and removes it from the table.
func (c *call) end(result, by string) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.state = stEnded
		c.result = result
		c.mu.Unlock()
		c.cancel()
		close(c.ended)
		c.release()
		// The dialogs stay findable for 64*T1, so that a late ACK (a BYE
		// can overtake it: one goroutine per message) or a retransmission
		// is absorbed quietly instead of counted as a stray.
		time.AfterFunc(64*sip.T1, func() {
			c.s.calls.del(c.a)
			if b := c.b.Load(); b != nil {
				c.s.calls.del(b)
			}
		})
		c.s.metrics.CallsActive.Dec()
		if !c.answered.IsZero() {
			result = "answered"
		}
		c.s.metrics.Calls.WithLabelValues(result).Inc()
		attrs := []any{"result", result, "ended_by", by}
		if !c.answered.IsZero() {
			attrs = append(attrs, "setup_ms", c.answered.Sub(c.created).Milliseconds(),
				"duration_ms", time.Since(c.answered).Milliseconds(), "reason", c.result)
		} else {
			attrs = append(attrs, "setup_ms", time.Since(c.created).Milliseconds())
		}
		c.log.Info("call ended", attrs...)
	})
}
