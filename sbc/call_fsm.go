package sbc

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/emiago/sipgo/timing"
)

// The call's transition function. step runs under c.mu: it reads and
// changes the call's state, starts and stops timers, and queues actions;
// it never touches a socket, never calls into sipgo's transaction or
// transport layers, and never blocks. The actions run after the lock is
// released, in the order they were queued (call_exec.go).

type evKind uint8

const (
	evStart           evKind = iota // the call was created: try the first target
	evCancel                        // A cancelled its INVITE (sipgo answered 200 and 487)
	evBResponse                     // a response to a branch's INVITE
	evBDone                         // a branch's INVITE transaction ended (timeout, transport error)
	evTimer                         // a timer fired
	evAck                           // an ACK from a leg (for a 2xx)
	evBye                           // a BYE from a leg
	evRequest                       // another in-dialog request from a leg
	evRelayResponse                 // a response to a relayed in-dialog request
	evRelayDone                     // a relayed request's transaction ended
	evADeliveryFailed               // a final response could not be sent to A
	evTerminate                     // the SBC ends the call (limits, admin, shutdown)
	evConsentLost                   // an ICE leg's consent expired (RFC 7675); realm: the leg's
)

var evNames = [...]string{"start", "cancel", "b_response", "b_done", "timer", "ack", "bye",
	"request", "relay_response", "relay_done", "a_delivery_failed", "terminate", "consent_lost"}

func (k evKind) String() string { return evNames[k] }

// event is one input of the state machine.
type event struct {
	kind   evKind
	br     *branch
	res    *sip.Response
	req    *sip.Request
	tx     sip.ServerTransaction
	leg    *leg
	rel    *relay
	timer  timerKey
	gen    uint64
	reason string
	realm  string // evConsentLost: the realm of the leg that lost consent
	// replaces: a REFER's Refer-To Replaces, mapped before the transition
	// (transfer.go); nil when the Refer-To has none.
	replaces *referReplaces
	// spare: relay streams bound before the transition for the m= lines
	// an offer in the request adds to the call, by line index
	// (preallocLines); what the transition does not take is closed
	// after it.
	spare map[int]*mstream
	err   error
	// sent is closed once the request's (tx's) final response was sent:
	// sipgo ends a server transaction when its handler returns, so the
	// handler waits for it.
	sent chan struct{}
}

type actKind uint8

const (
	actRespondA     actKind = iota // respond res on A's INVITE transaction
	actRespond                     // respond res on tx (in-dialog requests)
	actInvite                      // send br's INVITE (client transaction)
	actCancel                      // send CANCEL for br's INVITE
	actWrite                       // send req on leg outside a transaction (ACK)
	actBye                         // send req (a BYE) on leg as a transaction
	actRelay                       // send rel's request on rel.to
	actTerminateTx                 // give up br's INVITE transaction
	actLog                         // log msg with attrs (logging is I/O: not under the lock)
	actTargetFailed                // br's target gave no answer (passive health)
	actEnd                         // count and log the call's end, free its slot
	actBury                        // replace the call's settled dialogs by tombs (tomb.go)
	actEndTx                       // end a transaction that has done its work (tx, or br's)
	actSend                        // send req (a NOTIFY) on leg as a transaction, its answer only logged
	actCloseMedia                  // close the relay streams of spare, which the transition did not take
)

var actNames = [...]string{"respond_a", "respond", "invite", "cancel", "write", "bye", "relay",
	"terminate_tx", "log", "target_failed", "end", "bury", "end_tx", "send", "close_media"}

func (k actKind) String() string { return actNames[k] }

// action is one thing the call does after a transition.
type action struct {
	kind  actKind
	br    *branch
	leg   *leg
	rel   *relay
	res   *sip.Response
	req   *sip.Request
	tx    sip.ServerTransaction
	msg   string
	attrs []any
	warn  bool          // actLog at WARN (else INFO)
	sent  chan struct{} // closed after a final response was sent (actRespond)
	// retx: a retransmission of the 2xx to A's INVITE, written by the
	// transport layer (A's transaction may be gone: Timer L, endpoint.go).
	retx bool
	// spare: relay streams to close (actCloseMedia); closers: media
	// handlers an offer or answer replaced, to close too.
	spare   map[int]*mstream
	closers []io.Closer
}

type timerKind uint8

const (
	tmRing        timerKind = iota // the call is not answered in time
	tmTarget                       // a target has not answered at all (id: branch)
	tmCancel                       // a CANCELled branch never sent its final (id: branch)
	tmRetransmit                   // resend a 2xx until its ACK (id: relay, 0 for A's INVITE)
	tmAckWait                      // a 2xx got no ACK (id: relay, 0 for A's INVITE)
	tmMaxDuration                  // the call lasted too long
	tmInactivity                   // no in-dialog request for too long
	tmSession                      // the session was not refreshed (RFC 4028)
	tmMedia                        // no media either way for too long (media.timeout)
	tmTransfer                     // a local transfer's target did not answer (id: branch)
)

type timerKey struct {
	kind timerKind
	id   int
}

type stopper interface{ Stop() bool }

// realAfter arms a call timer on sipgo's timing wheel (fork change 28):
// nearly all of a call's timers are stopped before they fire, and arming
// and stopping one there costs a third of a runtime timer's.
func realAfter(d time.Duration, f func()) stopper { return timing.AfterFunc(d, f) }

type timerEntry struct {
	gen uint64
	t   stopper
}

// relay is an in-dialog request received on one leg and re-originated on
// the other.
type relay struct {
	id       int
	from, to *leg
	req      *sip.Request          // as received on from
	tx       sip.ServerTransaction // on from
	out      *sip.Request          // as sent on to
	final    *sip.Response         // the final response sent back (a 2xx to re-INVITE is resent until ACK)
	interval time.Duration
	ack      *sip.Request // the ACK sent on to, resent when to's 2xx is retransmitted
	sent     chan struct{}
	answered bool // a final came back from to
	acked    bool
	// added: the request's offer added m= lines to the call's media
	// beyond its first linesBefore; a refusal of the offer takes them
	// back (RFC 3264 8: the session stays as it was).
	added       bool
	linesBefore int
}

func (c *call) queueAct(a action) {
	if a.kind == actRespondA {
		a.tx = c.aTx // read under c.mu: confirm clears it
	}
	if c.qbox == nil {
		c.qbox = actionQueues.Get().(*[]action)
		c.queue = (*c.qbox)[:0]
	}
	c.queue = append(c.queue, a)
}

// actionQueueCap is the capacity of the pooled action queues: a setup's
// busiest transition queues fewer; a longer queue grows out of the pool's
// array and is not pooled.
const actionQueueCap = 8

// actionQueues pools the calls' action queue arrays (call.queue).
var actionQueues = sync.Pool{New: func() any {
	q := make([]action, 0, actionQueueCap)
	return &q
}}

// releaseQueue gives an emptied queue's array back to the pool. Under
// c.mu, with every entry run (and zeroed).
func (c *call) releaseQueue() {
	if c.qbox != nil {
		if cap(c.queue) != actionQueueCap {
			// The queue grew out of the pooled array, whose entries were
			// copied, not zeroed: they would keep what they point to.
			clear((*c.qbox)[:actionQueueCap])
		}
		actionQueues.Put(c.qbox)
	}
	c.qbox, c.queue, c.qhead = nil, nil, 0
}

// closeReplaced queues the close of what the call's media replaced in
// this transition (an old DTLS association: its close_notify is a send).
func (c *call) closeReplaced() {
	if cl := c.media.takeClosers(); len(cl) > 0 {
		c.queueAct(action{kind: actCloseMedia, closers: cl})
	}
}

func (c *call) logf(msg string, attrs ...any) {
	c.queueAct(action{kind: actLog, msg: msg, attrs: attrs})
}

// warnf is logf at WARN.
func (c *call) warnf(msg string, attrs ...any) {
	c.queueAct(action{kind: actLog, msg: msg, attrs: attrs, warn: true})
}

// startTimer (re)arms a timer; a stale firing of the previous one is
// recognised by its generation and ignored.
func (c *call) startTimer(k timerKey, d time.Duration) {
	if c.timers == nil {
		c.timers = map[timerKey]timerEntry{}
	}
	if e, ok := c.timers[k]; ok {
		e.t.Stop()
	}
	c.timerSeq++
	gen := c.timerSeq
	// An entry by value: one allocation less per timer than a pointer.
	c.timers[k] = timerEntry{gen: gen, t: c.after(d, func() { c.post(event{kind: evTimer, timer: k, gen: gen}) })}
}

func (c *call) stopTimer(k timerKey) {
	if e, ok := c.timers[k]; ok {
		e.t.Stop()
		delete(c.timers, k)
	}
}

// timerLive reports whether a firing is the current one of its timer, and
// disarms it.
func (c *call) timerLive(k timerKey, gen uint64) bool {
	e, ok := c.timers[k]
	if !ok || e.gen != gen {
		return false
	}
	delete(c.timers, k)
	return true
}

// step is the transition function.
func (c *call) step(ev event) {
	c.step1(ev)
	if c.phase == phEnded && c.aBuried {
		// The call was buried at its end with a branch still unsettled:
		// bury the branches that settled since.
		for _, br := range c.branches {
			if !br.buried && br.settled() {
				c.queueAct(action{kind: actBury})
				break
			}
		}
	}
}

func (c *call) step1(ev event) {
	switch ev.kind {
	case evStart:
		if c.phase == phSetup && c.aFinal == 0 {
			c.startTimer(timerKey{kind: tmRing}, c.st.limits.RingTimeout.Duration)
			c.tryNext()
		}
	case evCancel:
		c.onCancel()
	case evBResponse:
		if ev.br.xfer {
			c.onXferResponse(ev.br, ev.res)
			return
		}
		c.onBResponse(ev.br, ev.res)
	case evBDone:
		if ev.br.xfer {
			c.onXferDone(ev.br, ev.err)
			return
		}
		c.onBDone(ev.br, ev.err)
	case evTimer:
		if c.timerLive(ev.timer, ev.gen) {
			c.onTimer(ev.timer)
		}
	case evAck:
		c.onAck(ev.leg, ev.req)
	case evBye:
		c.onBye(ev.leg, ev.req, ev.tx, ev.sent)
	case evRequest:
		c.referMap = ev.replaces
		if c.media != nil {
			c.media.spare = ev.spare
		}
		c.onRequest(ev.leg, ev.req, ev.tx, ev.sent)
		c.referMap = nil
		if left := c.media.takeSpare(); len(left) > 0 {
			c.queueAct(action{kind: actCloseMedia, spare: left})
		}
	case evRelayResponse:
		c.onRelayResponse(ev.rel, ev.res)
	case evRelayDone:
		c.onRelayDone(ev.rel, ev.err)
	case evADeliveryFailed:
		c.onADeliveryFailed(ev.res, ev.err)
	case evTerminate:
		c.terminate(ev.reason)
	case evConsentLost:
		// Media to the leg has already stopped (srtp.ICELite); the call
		// ends, once, and counts on the leg's realm.
		if c.phase == phEnded {
			return
		}
		c.logf("ICE consent lost", "realm", ev.realm)
		if c.media != nil && c.media.plane != nil {
			c.media.plane.countEnding(resultConsentLost, ev.realm)
		}
		c.terminate(resultConsentLost)
	}
}

// tryNext sends the INVITE to the next target, or answers A when none is
// left.
func (c *call) tryNext() {
	c.cur = nil
	lim := c.st.pol.Routing
	for c.attempts-c.attemptBase < lim.MaxAttempts {
		t := c.pool.pick(c.tried)
		if t == nil {
			// The pool has no target left: the next carrier of the
			// route, if any.
			if c.poolIdx+1 >= len(c.pools) {
				break
			}
			c.poolIdx++
			c.pool = c.pools[c.poolIdx]
			c.logf("failover to the next carrier", "pool", c.pool.cfg.Name)
			continue
		}
		c.tried[t] = true
		br := c.newBranch(t)
		c.branches = append(c.branches, br)
		c.cur = br
		if len(c.tried) > 1 {
			c.s.metrics.Failovers.WithLabelValues(c.pool.cfg.Name).Inc()
			c.logf("failover", "target", t.addr.String(), "pool", c.pool.cfg.Name, "attempt", len(c.tried))
		}
		c.queueAct(action{kind: actInvite, br: br})
		c.startTimer(timerKey{kind: tmTarget, id: br.n}, lim.TargetTimeout.Duration)
		return
	}
	c.s.drop(stageRoute, reasonNoTarget)
	c.logf("no target left", "tried", len(c.tried))
	c.finalToA(c.localResponseToA(503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(lim.RetryAfter))))
	c.end(resultNoTarget, "sbc")
}

// finalToA queues a final response to A's INVITE, once.
func (c *call) finalToA(res *sip.Response) {
	if c.aFinal != 0 {
		return
	}
	c.aFinal, c.aFinalPhrase = res.StatusCode, res.Reason
	c.queueAct(action{kind: actRespondA, res: res})
}

// abandon gives up a branch: CANCEL it if it is early; if nothing was
// heard yet, the first provisional will be answered with CANCEL.
func (c *call) abandon(br *branch) {
	if br == nil || br.abandoned {
		return
	}
	br.abandoned = true
	c.stopTimer(timerKey{kind: tmTarget, id: br.n})
	if br.state == brEarly {
		c.sendCancel(br)
	}
}

func (c *call) sendCancel(br *branch) {
	if br.cancelSent {
		return
	}
	br.cancelSent = true
	c.queueAct(action{kind: actCancel, br: br})
	// Give up 64*T1 after the CANCEL if the INVITE never gets its final.
	c.startTimer(timerKey{kind: tmCancel, id: br.n}, 64*sip.T1)
}

func (c *call) onCancel() {
	switch c.phase {
	case phSetup:
		if c.aFinal != 0 {
			return
		}
		c.aFinal, c.aFinalPhrase = 487, "Request Terminated" // sipgo answered the INVITE with 487 itself
		c.logf("call cancelled by caller")
		c.abandon(c.cur)
		c.end(resultCancelled, "caller")
	case phAccepted:
		// The CANCEL won the race against our 2xx inside sipgo's
		// transaction: A got 487, and B's answer reached nobody.
		c.logf("caller cancelled as the call was answered; hanging up the callee")
		c.stopTimer(timerKey{kind: tmRetransmit})
		c.stopTimer(timerKey{kind: tmAckWait})
		c.ackKept(nil)
		c.byeLeg(c.kept.leg, resultCancelled)
		c.answered = time.Time{}
		c.end(resultCancelled, "caller")
	}
}

func (c *call) onBResponse(br *branch, res *sip.Response) {
	tag := tagOf(res.To().Params)
	if res.IsSuccess() {
		c.onB2xx(br, res, tag)
		return
	}
	if res.IsProvisional() {
		if br.state == brCalling {
			br.state = brEarly
		}
		c.stopTimer(timerKey{kind: tmTarget, id: br.n})
		if br.abandoned {
			if res.StatusCode > 100 || !br.cancelSent {
				c.sendCancel(br)
			}
			return
		}
		if res.StatusCode == 100 || br != c.cur || c.phase != phSetup || c.aFinal != 0 {
			return
		}
		if tag != "" {
			br.leg.setRemote(tag, res.Contact(), recordRoutes(res, true))
		}
		c.alerted = true
		c.queueAct(action{kind: actRespondA, res: c.responseToA(res)})
		return
	}
	// A final non-2xx: sipgo ACKs it.
	if br.state == brAnswered || br.state == brFailed || br.state == brGone {
		return
	}
	br.state = brFailed
	c.stopTimer(timerKey{kind: tmTarget, id: br.n})
	c.stopTimer(timerKey{kind: tmCancel, id: br.n})
	if br.abandoned || br != c.cur || c.phase != phSetup || c.aFinal != 0 {
		return
	}
	pol := c.st.pol.Routing
	switch {
	case res.IsRedirection() && pol.FollowRedirects && c.redirect < maxRedirects:
		if ct := res.Contact(); ct != nil && ct.Address.User != "" {
			c.redirect++
			c.logf("following redirect", "status", res.StatusCode, "user", ct.Address.User)
			c.user = ct.Address.User
			// Within the same pool: every target may be tried again for
			// the new user.
			c.tried = map[*target]bool{}
			c.attemptBase = c.attempts
			c.tryNext()
			return
		}
	case (res.StatusCode == 401 || res.StatusCode == 407) && br.pool.cfg.Auth != nil:
		// A carrier's challenge: answered once with the pool's
		// credentials; challenged again, the target failed.
		if br.authed {
			c.s.metrics.CarrierAuth.WithLabelValues(br.pool.cfg.Name, authRejected).Inc()
			c.logf("carrier refused the credentials", "target", br.tgt.addr.String(), "pool", br.pool.cfg.Name, "status", res.StatusCode)
			c.tryNext()
			return
		}
		nb, err := c.authBranch(br, res)
		if err != nil {
			c.s.metrics.CarrierAuth.WithLabelValues(br.pool.cfg.Name, authUnusable).Inc()
			c.logf("carrier challenge not answerable", "target", br.tgt.addr.String(), "pool", br.pool.cfg.Name, "error", err.Error())
			c.tryNext()
			return
		}
		c.s.metrics.CarrierAuth.WithLabelValues(br.pool.cfg.Name, authAnswered).Inc()
		c.branches = append(c.branches, nb)
		c.cur = nb
		c.queueAct(action{kind: actInvite, br: nb})
		c.startTimer(timerKey{kind: tmTarget, id: nb.n}, pol.TargetTimeout.Duration)
		return
	case c.failover(res.StatusCode):
		// The target is unwell, not the call: try another one.
		c.logf("target refused call", "target", br.tgt.addr.String(), "status", res.StatusCode)
		c.tryNext()
		return
	}
	c.finalToA(c.responseToA(res))
	c.endReasons = headerValues(res, "Reason")
	c.end(resultOf(res.StatusCode), "callee")
}

// failover reports whether a final response of a target makes the call
// try the next one: 500, 503 and 408 towards backends; 408 and any 5xx
// towards carriers (another carrier may complete what one cannot).
func (c *call) failover(code int) bool {
	if code == 408 || code == 500 || code == 503 {
		return true
	}
	return c.route != nil && code >= 500 && code < 600
}

// onB2xx handles a 2xx to a branch's INVITE: the first one of the call
// is relayed to A; every other dialog (a fork, a branch given up, a 2xx
// that crossed a CANCEL) is acknowledged and hung up; a retransmission is
// answered with the same ACK again.
func (c *call) onB2xx(br *branch, res *sip.Response, tag string) {
	c.stopTimer(timerKey{kind: tmTarget, id: br.n})
	c.stopTimer(timerKey{kind: tmCancel, id: br.n})
	if raw := br.acks[tag]; raw != nil {
		if ack := parseRequest(raw); ack != nil {
			c.queueAct(action{kind: actWrite, leg: br.leg, req: ack})
		}
		return
	}
	keep := c.kept == nil && br == c.cur && !br.abandoned && c.phase == phSetup && c.aFinal == 0
	if !keep {
		if c.kept == br && br.leg.remoteTagIs(tag) {
			return // the kept 2xx again, before its ACK exists: absorbed
		}
		c.logf("hanging up a dialog the call does not keep", "branch", br.n, "kept", c.kept != nil)
		c.hangUpDialog(br, tag, res)
		return
	}
	out, bodyErr := c.responseToAChecked(res)
	if bodyErr != nil {
		// The backend's SDP in its 2xx cannot be relayed (an answer in
		// another profile than offered, SDP the SBC cannot read): A must
		// not get a 2xx without it. The backend's dialog is confirmed and
		// hung up, and A gets the media error.
		me := &mediaError{code: 488, phrase: "Not Acceptable Here", r: reasonMediaBadSDP}
		errors.As(bodyErr, &me)
		c.warnf("backend's 2xx refused: its SDP cannot be relayed", "branch", br.n, "error", bodyErr.Error())
		c.hangUpDialog(br, tag, res)
		c.finalToA(c.localResponseToA(me.code, me.phrase, sip.NewHeader("Reason", `SIP;cause=`+strconv.Itoa(me.code)+`;text="`+string(me.r)+`"`)))
		c.end(resultNoMedia, "sbc")
		return
	}
	br.state = brAnswered
	c.kept = br
	br.leg.setRemote(tag, res.Contact(), recordRoutes(res, true))
	c.stopTimer(timerKey{kind: tmRing})
	c.phase = phAccepted
	c.answered = time.Now()
	c.sessExp = sessionInterval(res)
	c.aFinal, c.aFinalPhrase = out.StatusCode, out.Reason
	c.ok2xx = out
	c.queueAct(action{kind: actRespondA, res: out})
	c.interval = sip.T1
	if c.a.transport == "udp" {
		c.startTimer(timerKey{kind: tmRetransmit}, c.interval)
	}
	c.startTimer(timerKey{kind: tmAckWait}, 64*sip.T1)
}

// hangUpDialog confirms the dialog a branch's 2xx with To tag `tag`
// created, one the call does not keep, and hangs it up: ACK (kept as
// bytes, for the 2xx's retransmissions) and BYE.
func (c *call) hangUpDialog(br *branch, tag string, res *sip.Response) {
	d := br.leg.fork(tag, res)
	ack := d.newRequest(sip.ACK, d.inviteCSeq, c.st.pol.Server.UserAgent)
	ack.SetBody(nil)
	br.acks[strings.Clone(tag)] = requestBytes(ack) // a copy: the tag is a substring of the parsed 2xx
	br.byed[tag] = true
	if br.state < brAnswered {
		br.state = brAnswered
	}
	c.queueAct(action{kind: actWrite, leg: d, req: ack})
	c.byeLeg(d, "")
}

// ackKept sends the ACK for the kept branch's 2xx once (with the body of
// A's ACK in a delayed-offer call).
func (c *call) ackKept(fromAck *sip.Request) {
	br := c.kept
	if br == nil {
		return
	}
	tag := br.leg.getRemoteTag()
	if br.acks[tag] != nil {
		return
	}
	ack := br.leg.newRequest(sip.ACK, br.leg.inviteCSeq, c.st.pol.Server.UserAgent)
	if fromAck != nil && len(fromAck.Body()) > 0 {
		_ = c.relayBody(c.a, false, ack, fromAck) // A's answer to the backend's offer
	} else {
		ack.SetBody(nil)
	}
	br.acks[strings.Clone(tag)] = requestBytes(ack) // a copy: the tag is a substring of the parsed 2xx
	c.queueAct(action{kind: actWrite, leg: br.leg, req: ack})
}

// requestBytes serialises a request the SBC keeps as bytes (an ACK for
// a 2xx's retransmissions) straight into a byte slice (String and a
// conversion copied it twice), and has the transport send those bytes
// rather than serialise it again (setWire).
func requestBytes(req *sip.Request) []byte {
	var b bytes.Buffer
	b.Grow(512)
	req.StringWrite(&b)
	raw := b.Bytes()
	setWire(req, raw)
	return raw
}

// setWire has the transport write raw, the request as serialised, instead
// of serialising it again (sipgo fork, Request.SetWire), when its top Via
// is complete: sipgo fills a Via's missing host or port at the write.
// Neither may change afterwards.
func setWire(req *sip.Request, raw []byte) {
	if v := req.Via(); v != nil && v.Host != "" && v.Port > 0 {
		req.SetWire(raw)
	}
}

// parseRequest parses a request the SBC serialised itself (an ACK kept as
// bytes: an established call holds its ACK as a few hundred bytes, not as
// a parsed message), to be sent again as those same bytes; nil if it
// does not parse.
func parseRequest(raw []byte) *sip.Request {
	m, err := sip.ParseMessage(raw)
	if err != nil {
		return nil
	}
	req, _ := m.(*sip.Request)
	if req != nil {
		setWire(req, raw)
	}
	return req
}

func (c *call) onBDone(br *branch, err error) {
	if br.state == brCalling || br.state == brEarly {
		br.state = brGone
	}
	c.stopTimer(timerKey{kind: tmTarget, id: br.n})
	c.stopTimer(timerKey{kind: tmCancel, id: br.n})
	if br != c.cur || br.abandoned || c.phase != phSetup || c.aFinal != 0 || br.state != brGone {
		return
	}
	c.logf("invite transaction to target failed", "target", br.tgt.addr.String(), "error", errString(err))
	c.queueAct(action{kind: actTargetFailed, br: br})
	c.tryNext()
}

func (c *call) onTimer(k timerKey) {
	switch k.kind {
	case tmRing:
		if c.phase == phSetup && c.aFinal == 0 {
			c.logf("ring timeout")
			c.abandon(c.cur)
			c.finalToA(c.localResponseToA(408, "Request Timeout"))
			c.end(resultTimeout, "sbc")
		}
	case tmTarget:
		br := c.branch(k.id)
		if br == nil || br != c.cur || br.state != brCalling || c.phase != phSetup || c.aFinal != 0 {
			return
		}
		c.logf("target did not answer INVITE", "target", br.tgt.addr.String(), "timeout", c.st.pol.Routing.TargetTimeout.Duration.String())
		c.queueAct(action{kind: actTargetFailed, br: br})
		// Keep its transaction: a late provisional gets a CANCEL, a late
		// 2xx an ACK and a BYE.
		c.abandon(br)
		c.tryNext()
	case tmCancel:
		if br := c.branch(k.id); br != nil && (br.state == brCalling || br.state == brEarly) {
			c.logf("cancelled branch never answered; giving up", "branch", br.n)
			br.state = brGone
			c.queueAct(action{kind: actTerminateTx, br: br})
		}
	case tmRetransmit:
		if k.id == 0 {
			if c.phase == phAccepted && c.ok2xx != nil {
				c.queueAct(action{kind: actRespondA, res: c.ok2xx, retx: true})
				c.interval = min(2*c.interval, sip.T2)
				c.startTimer(k, c.interval)
			}
			return
		}
		if rel := c.relays[k.id]; rel != nil && !rel.acked && rel.final != nil {
			c.queueAct(action{kind: actRespond, tx: rel.tx, res: rel.final, sent: rel.sent})
			rel.interval = min(2*rel.interval, sip.T2)
			c.startTimer(k, rel.interval)
		}
	case tmAckWait:
		if k.id == 0 {
			if c.phase == phAccepted {
				c.logf("caller never acknowledged 2xx; ending call")
				c.stopTimer(timerKey{kind: tmRetransmit})
				c.ackKept(nil)
				c.answered = time.Time{}
				c.byeLeg(c.kept.leg, resultAckTimeout)
				c.byeLeg(c.a, resultAckTimeout)
				c.end(resultAckTimeout, "sbc")
			}
			return
		}
		if rel := c.relays[k.id]; rel != nil && !rel.acked {
			c.logf("re-INVITE 2xx never acknowledged", "leg", rel.from.name)
			c.stopTimer(timerKey{kind: tmRetransmit, id: rel.id})
			c.ackRelay(rel, nil)
		}
	case tmTransfer:
		c.xferTimeout(k.id)
	case tmMaxDuration:
		c.terminate(resultMaxDuration)
	case tmInactivity:
		d := c.st.limits.InactivityTimeout.Duration
		idle := time.Since(time.Unix(0, c.activity.Load()))
		if idle < d {
			c.startTimer(k, d-idle)
			return
		}
		c.terminate(resultInactivity)
	case tmSession:
		c.terminate(resultSessionExpired)
	case tmMedia:
		d := c.media.timeout
		idle := c.media.idle(time.Now())
		if c.media.held || idle < d {
			// On hold nothing need flow; else check again when the
			// newest packet is d old.
			c.startTimer(k, max(d-idle, d/4))
			return
		}
		c.logf("no media", "idle", idle.Round(time.Millisecond).String())
		if c.phase != phEnded && c.media.plane != nil {
			c.media.plane.countEnding(resultMediaTimeout, c.media.aRealm, c.media.bRealm)
		}
		c.terminate(resultMediaTimeout)
	}
}

func (c *call) branch(n int) *branch {
	if n >= 1 && n <= len(c.branches) && c.branches[n-1].n == n {
		return c.branches[n-1]
	}
	for _, br := range c.branches {
		if br.n == n {
			return br
		}
	}
	return nil
}

func (c *call) onAck(from *leg, ack *sip.Request) {
	cseq := ack.CSeq().SeqNo
	if from == c.a && cseq == c.a.inviteCSeq {
		if c.phase != phAccepted {
			return // a retransmitted ACK, or one that a BYE overtook
		}
		c.stopTimer(timerKey{kind: tmRetransmit})
		c.stopTimer(timerKey{kind: tmAckWait})
		c.ackKept(ack)
		c.confirm()
		c.runDeferred()
		return
	}
	for _, rel := range c.relays {
		if rel.from == from && rel.req.Method == sip.INVITE && rel.req.CSeq().SeqNo == cseq {
			if !rel.acked && rel.final != nil {
				c.stopTimer(timerKey{kind: tmRetransmit, id: rel.id})
				c.stopTimer(timerKey{kind: tmAckWait, id: rel.id})
				c.ackRelay(rel, ack)
			}
			return
		}
	}
}

// confirm: both legs are confirmed; the call's limits start.
func (c *call) confirm() {
	c.phase = phConfirmed
	// What only the setup needed goes: an established call holds its two
	// dialogs, not the messages that made them.
	c.ok2xx = nil
	for _, br := range c.branches {
		if br.state == brAnswered || br.state == brFailed || br.state == brGone {
			br.inv = nil // the template of a CANCEL no longer needed
		}
	}
	// A's INVITE transaction has done its work once the 2xx is ACKed:
	// sipgo would keep it (and A's parsed INVITE) for 64*T1 only to
	// absorb retransmissions of the INVITE, which the pipeline now
	// recognises by its Call-ID (callTable.isALeg). The kept branch's
	// INVITE transaction likewise: a retransmitted 2xx then comes as a
	// stray response and is matched to the call (retransmitted2xx).
	if c.aTx != nil {
		c.queueAct(action{kind: actEndTx, tx: c.aTx})
	}
	c.aTx, c.aReq = nil, nil
	if c.kept != nil {
		c.queueAct(action{kind: actEndTx, br: c.kept})
	}
	lim := c.st.limits
	if d := c.maxDuration; d > 0 {
		c.startTimer(timerKey{kind: tmMaxDuration}, d-time.Since(c.answered))
	}
	if d := lim.InactivityTimeout.Duration; d > 0 {
		c.startTimer(timerKey{kind: tmInactivity}, d)
	}
	if c.sessExp > 0 {
		c.startTimer(timerKey{kind: tmSession}, sessionDeadline(c.sessExp))
	}
	if c.media != nil && c.media.timeout > 0 {
		c.startTimer(timerKey{kind: tmMedia}, c.media.timeout)
	}
}

func (c *call) onBye(from *leg, req *sip.Request, tx sip.ServerTransaction, sent chan struct{}) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	res.SetBody(nil)
	c.queueAct(action{kind: actRespond, tx: tx, res: res, sent: sent})
	by := "caller"
	if from != c.a {
		by = "callee"
	}
	if c.detachedLeg(from) {
		return // a leg a transfer took out of the call (transfer.go)
	}
	switch c.phase {
	case phEnded:
		return // BYEs crossed, or a late one: the dialog is over anyway
	case phSetup:
		if from == c.a {
			// BYE in an early dialog: like a CANCEL (RFC 3261 15).
			c.logf("caller ended the early dialog")
			c.abandon(c.cur)
			c.finalToA(c.localResponseToA(487, "Request Terminated"))
			c.end(resultCancelled, "caller")
			return
		}
		// The callee may not BYE an early dialog (RFC 3261 15); treat it
		// as the end of that attempt: cancel it and tell the caller.
		c.logf("callee sent BYE in an early dialog")
		c.abandon(c.cur)
		c.finalToA(c.localResponseToA(480, "Temporarily Unavailable"))
		c.end(resultNoAnswer, "callee")
		return
	case phAccepted:
		// A BYE that overtook A's ACK (or the callee's, before it got
		// ours): B's 2xx still needs its ACK before B gets a BYE.
		c.stopTimer(timerKey{kind: tmRetransmit})
		c.stopTimer(timerKey{kind: tmAckWait})
		c.ackKept(nil)
	}
	reason := ""
	if h := req.GetHeader("Reason"); h != nil && c.st.headers.Allowed("Reason") {
		reason = h.Value()
	}
	c.endReasons = headerValues(req, "Reason")
	c.byeLegRaw(c.other(from), reason)
	c.end(resultAnswered, by)
}

// byeLeg queues a BYE of the SBC's own on leg l.
func (c *call) byeLeg(l *leg, reason string) {
	if reason != "" {
		reason = `SIP;cause=200;text="` + reason + `"`
	}
	c.byeLegRaw(l, reason)
}

func (c *call) byeLegRaw(l *leg, reason string) {
	if l == nil {
		return
	}
	bye := l.newRequest(sip.BYE, 0, c.st.pol.Server.UserAgent)
	if reason != "" {
		bye.AppendHeader(sip.NewHeader("Reason", reason))
	}
	bye.SetBody(nil)
	c.headerRules(bye, l, c.bPool(), false)
	c.queueAct(action{kind: actBye, leg: l, req: bye})
}

// terminate ends the call from the SBC's side.
func (c *call) terminate(reason string) {
	switch c.phase {
	case phEnded:
		return
	case phSetup:
		c.logf("call terminated by sbc", "reason", reason)
		c.abandon(c.cur)
		c.finalToA(c.localResponseToA(503, "Service Unavailable"))
		c.end(reason, "sbc")
		return
	case phAccepted:
		c.stopTimer(timerKey{kind: tmRetransmit})
		c.stopTimer(timerKey{kind: tmAckWait})
		c.ackKept(nil)
	}
	c.logf("call terminated by sbc", "reason", reason)
	c.byeLeg(c.a, reason)
	c.byeLeg(c.kept.leg, reason)
	c.end(reason, "sbc")
}

func (c *call) onADeliveryFailed(res *sip.Response, err error) {
	if res == nil || !res.IsSuccess() || c.phase != phAccepted {
		return
	}
	c.logf("2xx could not be sent to the caller; ending call", "error", errString(err))
	c.s.drop(stageBridge, reasonSendFailed)
	c.stopTimer(timerKey{kind: tmRetransmit})
	c.stopTimer(timerKey{kind: tmAckWait})
	c.ackKept(nil)
	c.byeLeg(c.kept.leg, resultUndeliverable)
	c.answered = time.Time{}
	c.end(resultUndeliverable, "sbc")
}

// end records the call's result once; what it still has to do after
// (ACK/BYE stray dialogs, CANCEL branches) goes on.
func (c *call) end(result, by string) {
	if c.phase == phEnded {
		return
	}
	c.phase = phEnded
	c.endTransfer()
	c.result, c.endedBy = result, by
	c.endedAt = time.Now()
	for k, e := range c.timers {
		if k.kind != tmCancel && k.kind != tmTarget {
			e.t.Stop()
			delete(c.timers, k)
		}
	}
	for _, ev := range c.deferred {
		res := sip.NewResponseFromRequest(ev.req, 481, "Call/Transaction Does Not Exist", nil)
		res.SetBody(nil)
		c.queueAct(action{kind: actRespond, tx: ev.tx, res: res, sent: ev.sent})
		if len(ev.spare) > 0 {
			c.queueAct(action{kind: actCloseMedia, spare: ev.spare})
		}
	}
	c.deferred = nil
	for _, rel := range c.relays {
		if rel.final == nil && rel.req.Method == sip.INVITE {
			// A re-INVITE's dialog is being torn down: answered now (a
			// 2xx that comes later is ACKed, onRelayResponse).
			rel.final = sip.NewResponseFromRequest(rel.req, 481, "Call/Transaction Does Not Exist", nil)
			c.queueAct(action{kind: actRespond, tx: rel.tx, res: rel.final, sent: rel.sent})
		}
		// Other requests in flight keep waiting for their answer, which
		// is relayed when it comes: a peer that answers a NOTIFY and
		// sends BYE at once may have its BYE handled first. The wait is
		// bounded by the relay's transaction (64*T1, sendRelay), whose
		// end answers 408.
	}
	c.queueAct(action{kind: actEnd})
}

// onRequest relays an in-dialog request (not ACK, not BYE) to the other
// leg.
func (c *call) onRequest(from *leg, req *sip.Request, tx sip.ServerTransaction, sent chan struct{}) {
	reject := func(code int, reason string, hdrs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		res.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
		res.SetBody(nil)
		c.queueAct(action{kind: actRespond, tx: tx, res: res, sent: sent})
	}
	if c.phase == phEnded {
		reject(481, "Call/Transaction Does Not Exist")
		return
	}
	if from != c.a && from != c.b() {
		reject(481, "Call/Transaction Does Not Exist") // an abandoned branch's dialog
		return
	}
	to := c.other(from)
	if to == nil || !to.hasRemote() {
		// The other side's dialog does not exist yet (no tagged response).
		reject(491, "Request Pending", sip.NewHeader("Retry-After", "1"))
		return
	}
	if req.Method == sip.INVITE {
		// RFC 3261 14.1/14.2: one INVITE at a time per dialog, either way.
		for _, rel := range c.relays {
			if rel.req.Method != sip.INVITE || rel.acked || (rel.from != from && rel.to != from) {
				continue
			}
			switch {
			case rel.answered || rel.final != nil:
				// Answered, its ACK not in yet (this INVITE overtook it):
				// relay it after the ACK.
				c.deferred = append(c.deferred, event{kind: evRequest, leg: from, req: req, tx: tx, sent: sent, spare: c.media.takeSpare()})
			case rel.from == from:
				reject(500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
			default:
				reject(491, "Request Pending") // glare
			}
			return
		}
		switch c.phase {
		case phAccepted:
			// Sent after A's ACK, but handled first (one goroutine per
			// message): relay it once the ACK is in.
			c.deferred = append(c.deferred, event{kind: evRequest, leg: from, req: req, tx: tx, sent: sent, spare: c.media.takeSpare()})
			return
		case phSetup:
			reject(491, "Request Pending")
			return
		}
	}
	ua := c.st.pol.Server.UserAgent
	out := to.newRequest(req.Method, 0, ua)
	c.st.headers.Copy(out, req, "content-type", "rack", "refer-to", "referred-by")
	if mf := req.MaxForwards(); mf != nil && mf.Val() > 1 && mf.Val() <= 70 {
		v := sip.MaxForwardsHeader(mf.Val() - 1)
		out.ReplaceHeader(&v)
	}
	if h := req.GetHeader("RAck"); h != nil && c.st.headers.Allowed("RAck") {
		out.AppendHeader(sip.NewHeader("RAck", rewriteRAck(h.Value(), to.inviteCSeq)))
	}
	if req.Method == sip.REFER {
		// Policed, and relayed, carried out or refused by the refer mode
		// of its sender (transfer.go).
		rt, rb, handled := c.onRefer(from, to, req, reject)
		if handled {
			return
		}
		out.AppendHeader(rt)
		if rb != nil {
			out.AppendHeader(rb)
		}
	}
	// An SDP in a request is an offer (re-INVITE, UPDATE), except in
	// PRACK, which answers an offer in a reliable provisional. Other
	// methods' bodies (INFO's DTMF, MESSAGE's text) are not SDP.
	lines := c.media.lines()
	if carriesSDP(req.Method) {
		if err := c.relayBody(from, req.Method != sip.PRACK, out, req); err != nil {
			if gone := c.media.dropLines(lines); len(gone) > 0 {
				c.queueAct(action{kind: actCloseMedia, spare: gone})
			}
			reject(488, "Not Acceptable Here")
			return
		}
	} else {
		copyBody(out, req)
	}
	c.headerRules(out, to, c.bPool(), false)
	if isTargetRefresh(req.Method) {
		from.refreshTarget(req.Contact())
	}
	c.relayN++
	rel := &relay{id: c.relayN, from: from, to: to, req: req, tx: tx, out: out, sent: sent,
		added: c.media.lines() > lines, linesBefore: lines}
	if c.relays == nil {
		c.relays = map[int]*relay{}
	}
	c.relays[rel.id] = rel
	c.queueAct(action{kind: actRelay, rel: rel})
}

func (c *call) onRelayResponse(rel *relay, res *sip.Response) {
	if rel.answered {
		if res.IsSuccess() && rel.req.Method == sip.INVITE && rel.ack != nil {
			// The other side retransmits its 2xx: our ACK was lost.
			c.queueAct(action{kind: actWrite, leg: rel.to, req: rel.ack.Clone()})
		}
		return
	}
	if res.StatusCode == 100 {
		return
	}
	back := c.inDialogResponse(rel.from, rel.req, res)
	if res.IsProvisional() {
		if rel.final == nil {
			c.queueAct(action{kind: actRespond, tx: rel.tx, res: back})
		}
		return
	}
	rel.answered = true
	c.referAnswered(rel, res.StatusCode)
	if rel.final != nil {
		// The call ended meanwhile and the request was answered; a 2xx
		// to a re-INVITE still needs its ACK.
		if res.IsSuccess() && rel.req.Method == sip.INVITE {
			c.ackRelay(rel, nil)
		}
		delete(c.relays, rel.id)
		return
	}
	rel.final = back
	c.queueAct(action{kind: actRespond, tx: rel.tx, res: back, sent: rel.sent})
	if rel.added && !res.IsSuccess() {
		if gone := c.media.dropLines(rel.linesBefore); len(gone) > 0 {
			c.queueAct(action{kind: actCloseMedia, spare: gone})
		}
	}
	if res.IsSuccess() {
		if isTargetRefresh(rel.req.Method) {
			rel.to.refreshTarget(res.Contact())
		}
		if (rel.req.Method == sip.INVITE || rel.req.Method == sip.UPDATE) && c.phase == phConfirmed {
			c.touch()
			if d := sessionInterval(res); d > 0 {
				c.sessExp = d
				c.startTimer(timerKey{kind: tmSession}, sessionDeadline(d))
			}
		}
	}
	if rel.req.Method == sip.INVITE && res.IsSuccess() {
		// Resent until the ACK comes, like the initial 2xx.
		rel.interval = sip.T1
		if rel.from.transport == "udp" {
			c.startTimer(timerKey{kind: tmRetransmit, id: rel.id}, rel.interval)
		}
		c.startTimer(timerKey{kind: tmAckWait, id: rel.id}, 64*sip.T1)
	} else {
		delete(c.relays, rel.id)
	}
	if res.StatusCode == 481 || res.StatusCode == 408 {
		// RFC 5057: the other side's dialog is gone.
		c.logf("in-dialog request answered; ending call", "method", string(rel.req.Method), "status", res.StatusCode)
		c.terminate(resultDialogGone)
	}
}

func (c *call) onRelayDone(rel *relay, err error) {
	if rel.answered {
		return
	}
	rel.answered = true
	delete(c.relays, rel.id)
	c.referAnswered(rel, 408)
	if rel.final != nil {
		return
	}
	rel.final = sip.NewResponseFromRequest(rel.req, 408, "Request Timeout", nil)
	rel.final.SetBody(nil)
	c.queueAct(action{kind: actRespond, tx: rel.tx, res: rel.final, sent: rel.sent})
	if c.phase == phEnded {
		return
	}
	c.logf("in-dialog relay failed; ending call", "method", string(rel.req.Method), "leg", rel.to.name, "error", errString(err))
	c.terminate(resultDialogGone)
}

// runDeferred handles the re-INVITEs that waited for an ACK.
func (c *call) runDeferred() {
	deferred := c.deferred
	c.deferred = nil
	for _, ev := range deferred {
		c.step(ev)
	}
}

// ackRelay sends the ACK for a relayed re-INVITE's 2xx on the other leg,
// with the body of the ACK received (delayed offer), once.
func (c *call) ackRelay(rel *relay, fromAck *sip.Request) {
	if rel.acked {
		return
	}
	rel.acked = true
	ack := rel.to.newRequest(sip.ACK, rel.out.CSeq().SeqNo, c.st.pol.Server.UserAgent)
	if fromAck != nil && len(fromAck.Body()) > 0 {
		_ = c.relayBody(rel.from, false, ack, fromAck) // the answer to an offer in a 2xx
	} else {
		ack.SetBody(nil)
	}
	rel.ack = ack
	c.queueAct(action{kind: actWrite, leg: rel.to, req: ack.Clone()})
	c.runDeferred()
	// Kept until the other side's transaction ends, so that a
	// retransmitted 2xx is answered with this ACK again.
}

func isTargetRefresh(m sip.RequestMethod) bool {
	return m == sip.INVITE || m == sip.UPDATE || m == sip.SUBSCRIBE || m == sip.NOTIFY || m == sip.REFER
}

// inDialogResponse builds the response to req (received on `from`) out of
// the other leg's response res.
func (c *call) inDialogResponse(from *leg, req *sip.Request, res *sip.Response) *sip.Response {
	out := sip.NewResponseFromRequest(req, res.StatusCode, res.Reason, nil)
	c.st.headers.Copy(out, res, "content-type")
	if res.StatusCode < 300 && isTargetRefresh(req.Method) {
		out.AppendHeader(from.contact(""))
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	switch {
	case res.StatusCode >= 300:
		out.SetBody(nil)
	case carriesSDP(req.Method):
		// The answer to the request's offer, or an offer when the request
		// had none (a re-INVITE without SDP).
		_ = c.relayBody(c.other(from), len(req.Body()) == 0, out, res)
	default:
		copyBody(out, res)
	}
	c.headerRules(out, from, c.bPool(), false)
	return out
}

// carriesSDP: the methods whose bodies (and their responses') are SDP
// offers and answers (RFC 3261, 3262, 3311).
func carriesSDP(m sip.RequestMethod) bool {
	return m == sip.INVITE || m == sip.UPDATE || m == sip.PRACK || m == sip.ACK
}
