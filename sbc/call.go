package sbc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
)

// Stage 5, bridge: a call is an A-leg (carrier, SBC as UAS) and a B-leg
// (backend, SBC as UAC). Before the answer the B side is a list of
// branches: one INVITE per target tried (failover, redirects), each of
// which may fork into several early dialogs. The call is an explicit state
// machine (call_fsm.go): every input is an event, a transition changes the
// state under c.mu and queues actions, and the actions (call_exec.go) run
// after the lock is released. Nothing here calls into sipgo while holding
// c.mu.

// phase is where the call stands as a whole.
type phase uint8

const (
	phSetup     phase = iota // A's INVITE has no final answer yet
	phAccepted               // 2xx sent to A, waiting for A's ACK
	phConfirmed              // both legs confirmed
	phEnded                  // the call is over; only clean-up of stray dialogs remains
)

var phaseNames = [...]string{"setup", "accepted", "confirmed", "ended"}

func (p phase) String() string { return phaseNames[p] }

// brState is where one branch (one INVITE towards one target) stands.
type brState uint8

const (
	brCalling  brState = iota // INVITE sent, nothing heard
	brEarly                   // a provisional response came
	brAnswered                // a 2xx came (the first 2xx of the branch)
	brFailed                  // a final non-2xx came
	brGone                    // the transaction ended without a final
)

// branch is one INVITE sent to one target.
type branch struct {
	n    int
	tgt  *target
	pool *pool // the pool of tgt
	// authed: this INVITE answers a digest challenge (a second one fails
	// the target).
	authed bool
	leg    *leg         // the B-leg dialog of this attempt (its first 2xx's dialog)
	inv    *sip.Request // the INVITE as sent (template of the CANCEL)
	state  brState
	// abandoned: the call no longer wants this branch (target timeout, A
	// cancelled, ring timeout, another outcome). A 1xx is then answered
	// with CANCEL and a 2xx with ACK + BYE.
	abandoned  bool
	cancelSent bool
	// acks holds the ACK sent for each 2xx dialog of the branch (by To
	// tag), as bytes, resent when the 2xx is retransmitted. byed marks the dialogs
	// the SBC does not keep and has hung up.
	acks map[string][]byte
	byed map[string]bool
	tx   sip.ClientTransaction // set by the executor once sent
	// buried: the branch's dialog is a tomb in the call table (tomb.go).
	buried bool
	// xfer: the new leg of a transfer the SBC carries out (transfer.go),
	// not a branch of the call's setup.
	xfer bool
}

// call is one call through the SBC. Fields above mu are set at creation
// and read-only afterwards; the rest belongs to the state machine.
type call struct {
	s  *SBC
	id string
	st *snapshot
	// logp is the call's logger, built from logAttrs the first time the
	// call logs (logger): most calls never do, and building it formats
	// its attributes.
	logp     atomic.Pointer[slog.Logger]
	logAttrs []slog.Attr
	pools    []*pool // in order of preference: the route's carriers, or the one backend pool
	trunk    *policy.Trunk
	// route is an outbound call's route (nil: a call from a trunk); its
	// srcPool is the backend pool it came from.
	route   *policy.OutboundRoute
	srcPool string
	// binding is a call to a registered user's device (regcall.go):
	// the B-leg's request-URI is its Contact, reached over its flow.
	binding *binding
	// toUser, fromUser: the To and From users of the B-leg INVITEs.
	toUser, fromUser string
	// maxDuration: the answered call is torn down after it (0: never).
	maxDuration time.Duration
	src         netip.AddrPort // the caller's source
	a           *leg
	// ref is what sipgo's hooks on A's INVITE transaction hold instead of
	// the call: cleared when the call is buried, so that a transaction
	// lingering in sipgo does not keep the ended call alive.
	ref *callRef
	// release frees the trunk's concurrent-call slot.
	release func()
	created time.Time
	// after starts a timer; tests replace it to fire timers by hand.
	after func(time.Duration, func()) stopper
	// started is the call_started event: call_terminated repeats its
	// fields (audit.go).
	started events.Event

	done atomic.Bool // set when the call ended (lock-free reads)
	// finalSent is closed once A's INVITE has its final response on the
	// wire (or sipgo answered a CANCEL with 487): sipgo ends the server
	// transaction when the INVITE handler returns, so newCall waits for it.
	finalSent     chan struct{}
	finalSentOnce sync.Once
	// aTxDetached is A's server transaction when its handler returned before
	// the final response (endpoint.detach): markFinalSent ends it.
	aTxDetached atomic.Pointer[sip.ServerTx]
	ended       chan struct{} // closed when the call ended
	activity    atomic.Int64  // unix nanos of the last in-dialog request

	mu sync.Mutex
	// aReq is A's INVITE as received (a copy when its Replaces was
	// mapped): template of every response to it (aResponse adds our To
	// tag), and of the B-leg INVITEs. aTx is its server transaction. Both go
	// once the call is confirmed (an established call does not keep the
	// messages that made it; the transaction is ended then, see confirm).
	aReq *sip.Request
	aTx  sip.ServerTransaction
	// from, to, ruri: A's From and To URIs and request-URI, for the CDR.
	from, to, ruri string
	// aBuried: the A-leg is a tomb in the call table (tomb.go).
	aBuried  bool
	phase    phase
	pool     *pool // the pool being tried: pools[poolIdx]
	poolIdx  int
	aFinal   int // status of the final response to A's INVITE (0: none yet)
	user     string
	tried    map[*target]bool
	attempts int // branches created
	// attemptBase is attempts when the last redirect was followed: each
	// redirect gets max_attempts targets of its own.
	attemptBase int
	redirect    int
	timerSeq    uint64
	branches    []*branch
	cur         *branch // the branch being tried
	kept        *branch // the branch whose 2xx was accepted
	ok2xx       *sip.Response
	interval    time.Duration // 2xx retransmission interval towards A
	relays      map[int]*relay
	deferred    []event // re-INVITEs from A that overtook its ACK
	relayN      int
	timers      map[timerKey]timerEntry
	result      string
	endedBy     string
	answered    time.Time
	// For the CDR (cdr.go): the reason phrase of A's final response, the
	// Reason headers of the message that ended the call (BYE, or B's
	// final response), when it ended, whether the caller heard ringing.
	aFinalPhrase string
	endReasons   []string
	endedAt      time.Time
	alerted      bool
	sessExp      time.Duration // negotiated session interval (RFC 4028), 0 if none
	media        *callMedia    // the call's relay (media.go); nil without anchoring
	offerB       []byte        // the SDP of the B-leg INVITEs (nil: delayed offer, or no anchoring)
	// queue holds the actions the transitions queued; queue[qhead:] are
	// the ones not yet run. Its array comes from a pool shared by every
	// call (actionQueues) and goes back to it when a drain empties the
	// queue (emptied entries are zeroed): a call's own array grown per
	// call was ~2.3 kB and 4 allocations per call, and an established
	// call holds none.
	queue    []action
	qbox     *[]action // the pool's box of queue's array (nil: none taken)
	qhead    int
	draining bool
	// Transfers (transfer.go): the one the SBC carries out (refer =
	// "local"), the last SDP each side ("a", "b") sent, and the legs a
	// transfer took out of the call (findable until it ends).
	xfer     *xfer
	referMap *referReplaces // the REFER being handled's mapped Replaces
	lastSDP  map[string][]byte
	detached []*leg
	// detachedBuried: how many of detached are tombs already (tomb.go).
	detachedBuried int
}

// sdpFrom records the last SDP received from side name ("a", "b").
func (c *call) sdpFrom(name string, b []byte) {
	if len(b) == 0 {
		return
	}
	if c.lastSDP == nil {
		c.lastSDP = map[string][]byte{}
	}
	c.lastSDP[name] = b
}

// b is the B-leg in-dialog requests from A go to: the accepted dialog,
// or the early dialog of the branch being tried.
func (c *call) b() *leg {
	if c.kept != nil {
		return c.kept.leg
	}
	if c.cur != nil {
		return c.cur.leg
	}
	return nil
}

// other is the leg facing the other side of l.
func (c *call) other(l *leg) *leg {
	if l == c.a {
		return c.b()
	}
	return c.a
}

// maxRedirects bounds how many 3xx one call follows.
const maxRedirects = 3

// lingerFor is how long an ended call's dialogs stay findable, so that a
// late ACK (a BYE can overtake it), a retransmission or a crossing BYE is
// absorbed quietly instead of counted as a stray. Tests shorten it
// (atomic: a call of an earlier test may still be ending when one does).
var lingerFor = func() *atomic.Int64 {
	var d atomic.Int64
	d.Store(int64(64 * sip.T1))
	return &d
}()

// logger returns the call's logger (built on first use from logAttrs).
func (c *call) logger() *slog.Logger {
	if lg := c.logp.Load(); lg != nil {
		return lg
	}
	c.logp.CompareAndSwap(nil, c.detachedLog().get())
	return c.logp.Load()
}

// detachedLog is what logs for the call from a goroutine that must not
// keep the call reachable (waiting for the answer to a BYE it sent).
func (c *call) detachedLog() callLog {
	return callLog{s: c.s, l: c.logp.Load(), attrs: c.logAttrs}
}

// callLog is a call's logger, or what builds one when it is used.
type callLog struct {
	s     *SBC
	l     *slog.Logger
	attrs []slog.Attr
}

func (l callLog) get() *slog.Logger {
	if l.l != nil {
		return l.l
	}
	return slog.New(l.s.log.Handler().WithAttrs(l.attrs))
}

// newCall starts an inbound call from a trunk. It answers 100 Trying,
// routes, and hands the call to its state machine; it never blocks on the
// network.
func (s *SBC) newCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, release func()) {
	if plan := s.transferHairpin(ep, req); plan != nil {
		s.startCall(ep, st, p, req, tx, release, plan)
		return
	}
	pc, v := routeCall(st, p, req)
	if !v.pass() {
		release()
		s.act(ep, p, req, tx, v)
		s.callRefused(p, resultNoRoute, false)
		return
	}
	s.startCall(ep, st, p, req, tx, release, &callPlan{pools: []*pool{st.pools[pc.Name]},
		user: req.Recipient.User, toUser: req.To().Address.User, fromUser: req.From().Address.User})
}

// newOutboundCall starts a call from a backend to carriers (outbound.go):
// routed by its outbound route, then the same as an inbound call.
func (s *SBC) newOutboundCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, release func()) {
	if plan := s.transferHairpin(ep, req); plan != nil {
		plan.srcPool = p.pool
		s.startCall(ep, st, p, req, tx, release, plan)
		return
	}
	plan, v := routeOutbound(st, p, req, s.now())
	if !v.pass() {
		release()
		s.act(ep, p, req, tx, v)
		s.callRefused(p, resultNoRoute, false)
		return
	}
	s.startCall(ep, st, p, req, tx, release, plan)
}

// callRefused counts a call refused before it started (toUser: a call
// to a registered user, regcall.go).
func (s *SBC) callRefused(p peer, result string, toUser bool) {
	s.metrics.Calls.WithLabelValues(result).Inc()
	switch {
	case p.trunk != nil:
		s.trunkCall(p.trunk.Name, result)
	case toUser:
		s.metrics.UserCalls.WithLabelValues(result).Inc()
	default:
		s.metrics.OutboundCalls.WithLabelValues(result).Inc()
	}
}

// startCall is stage 5 for a routed call: 100 Trying, the media relay,
// and the call's state machine.
func (s *SBC) startCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, release func(), plan *callPlan) {
	replaces := ""
	if h := req.GetHeader("Replaces"); h != nil && plan.hairpin {
		replaces = h.Value() // to the holder of the dialog it names, as it is
	} else if h != nil {
		v, ok := s.mapReplaces(h.Value())
		if !ok {
			release()
			s.act(ep, p, req, tx, answer(stageDialog, reasonReplacesNoDialog, 481, "Call/Transaction Does Not Exist"))
			s.callRefused(p, resultRejected, plan.binding != nil)
			return
		}
		replaces = v
	}
	// 100 Trying at once: the carrier must stop retransmitting while we
	// set up media and route, and the relay's ports and SDP (~10-20 µs
	// when anchored) need not delay it. Over UDP, the reader may have
	// sent it already, when it read the INVITE (trying.go).
	udp := !sip.IsReliable(req.Transport())
	if udp && ep.peers.tookTrying(p.src, req) {
		if stx, ok := tx.(interface{ TryingSent() }); ok {
			stx.TryingSent()
		}
		s.setupCall(ep, st, p, req, tx, release, plan, replaces, false)
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	// In a UDP read loop with more of the batch to handle (a burst), the
	// rest waits for that: the INVITEs behind this one get their 100
	// after its checks, not after its whole set-up (udppeers.go).
	// (The closure is built only then: it escapes.)
	if udp && ep.peers.deferring() {
		ep.detach(req, tx)
		ep.peers.afterBatch(func() { s.setupCall(ep, st, p, req, tx, release, plan, replaces, true) })
		return
	}
	s.setupCall(ep, st, p, req, tx, release, plan, replaces, false)
}

// setupCall is startCall after the 100 Trying: the media, the call, its
// state machine started. later: it runs after the handler returned
// (afterBatch), the transaction detached.
func (s *SBC) setupCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, release func(), plan *callPlan, replaces string, later bool) {
	pc := plan.pools[0].cfg
	// The media relay: a call without relay ports is refused (503), one
	// whose SDP the SBC cannot take too (488), before any leg exists.
	var ct string
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	mediaTrunk := p.trunk
	if mediaTrunk == nil {
		// The caller is a backend: what its pool's media_encryption
		// says is what it takes and is offered ("none" by default).
		enc := "none"
		if sp := st.pol.Pool(plan.srcPool); sp != nil && sp.MediaEncryption != "" {
			enc = sp.MediaEncryption
		}
		mediaTrunk = &policy.Trunk{Name: plan.srcPool, MediaEncryption: enc}
	}
	cm, offerB, err := s.setupMedia(st, ep.name, pc.Realm, mediaTrunk, pc, req.Body(), ct)
	if err != nil {
		release()
		me := &mediaError{code: 500, phrase: "Server Internal Error", r: reasonMediaBind, err: err}
		errors.As(err, &me)
		s.act(ep, p, req, tx, answer(stageMedia, me.r, me.code, me.phrase).with("error", err.Error()))
		if later {
			endDetached(tx)
		}
		s.callRefused(p, resultNoMedia, plan.binding != nil)
		return
	}
	c := &call{
		s: s, id: newID(), st: st, pools: plan.pools, pool: plan.pools[0], trunk: p.trunk, aTx: tx, ref: &callRef{},
		route: plan.route, srcPool: plan.srcPool, toUser: plan.toUser, fromUser: plan.fromUser, binding: plan.binding,
		maxDuration: st.limits.MaxDuration.Duration,
		created:     time.Now(), ended: make(chan struct{}), finalSent: make(chan struct{}), release: release, src: p.src,
		after: realAfter, tried: map[*target]bool{}, user: plan.user,
		media: cm, offerB: offerB,
	}
	switch {
	case plan.binding != nil:
		c.logAttrs = []slog.Attr{slog.String("call", c.id), slog.String("source_pool", plan.srcPool), slog.String("pool", pc.Name),
			slog.String("direction", "to_user"), slog.String("realm", plan.binding.realm), slog.String("transport", plan.binding.transport)}
	case plan.route != nil:
		c.maxDuration = plan.route.MaxDuration.Duration
		c.logAttrs = []slog.Attr{slog.String("call", c.id), slog.String("source_pool", plan.srcPool), slog.String("pool", pc.Name),
			slog.String("direction", "outbound")}
		if len(plan.rewritten) > 0 && req.GetHeader("Identity") != nil {
			// RFC 8224: the PASSporT signs the From/To numbers; a verifier
			// downstream will see numbers it did not sign.
			c.logger().Warn("STIR/SHAKEN: the route rewrote numbers an Identity header covers",
				"rewritten", strings.Join(plan.rewritten, ","), "ruri_user", req.Recipient.User, "number", plan.user,
				"from_user", req.From().Address.User, "sent_from_user", plan.fromUser)
		}
	case p.trunk != nil:
		c.logAttrs = []slog.Attr{slog.String("call", c.id), slog.String("trunk", p.trunk.Name), slog.String("pool", pc.Name)}
	default:
		c.logAttrs = []slog.Attr{slog.String("call", c.id), slog.String("source_pool", plan.srcPool), slog.String("pool", pc.Name)}
	}
	if cm != nil {
		c.sdpFrom("a", req.Body())
	}
	if cm != nil {
		cm.onConsentLost(func(realm string) { c.post(event{kind: evConsentLost, realm: realm}) })
	}
	c.touch()
	from, to := req.From(), req.To()
	c.a = &leg{
		name: "a", ep: ep, transport: transportOf(req), peer: p.src,
		// A copy: a substring of the parsed INVITE would keep all of it
		// reachable from the call table's Call-ID index until the tombs go.
		callID: strings.Clone(req.CallID().Value()), localTag: sip.GenerateTagN(16),
		localURI: keepURI(&to.Address), localName: strings.Clone(to.DisplayName),
		remoteURI: keepURI(&from.Address), remoteName: strings.Clone(from.DisplayName),
		inviteCSeq: req.CSeq().SeqNo, remoteTag: strings.Clone(tagOf(from.Params)),
		remoteCSeq: req.CSeq().SeqNo, routes: recordRoutes(req, false),
	}
	c.a.sips = req.Recipient.Scheme == "sips"
	// A remote user (a trunk that may register) is often behind NAT and
	// advertises a Contact nobody can reach: requests towards it go where
	// its INVITE came from (its flow), like those to a registered device.
	c.a.flow = p.trunk != nil && p.trunk.AllowRegister
	if ct := req.Contact(); ct != nil {
		c.a.target = keepURI(&ct.Address)
	} else {
		c.a.target = keepURI(&from.Address)
	}
	c.ref.c.Store(c)
	c.from, c.to, c.ruri = from.Address.String(), to.Address.String(), req.Recipient.String()
	c.aReq = req
	if replaces != "" {
		// Copied: the transaction's request stays as received.
		c.aReq = req.Clone()
		c.aReq.RemoveHeader("Replaces")
		c.aReq.AppendHeader(sip.NewHeader("Replaces", replaces))
	}
	// Admitted: reported before its state machine starts (no call lock
	// is held here, and emitting never blocks), and before the call is
	// in the call table: from there on another goroutine may end it
	// (SBC.Close ends every call it finds), and finish reads c.started.
	c.started = events.Event{Kind: events.CallStarted, SessionID: c.id, CallID: c.a.callID,
		Caller: capped(from.Address.User), Called: capped(req.Recipient.User), SourceIP: p.src.Addr().Unmap().String(),
		UserAgent: headerValue(req, "User-Agent"), Realm: ep.name,
		Detail: map[string]string{"pool": pc.Name}}
	if p.trunk != nil {
		c.started.Trunk = p.trunk.Name
	} else {
		// A call out from a backend (outbound.go): its source pool.
		c.started.Detail["source_pool"] = p.pool
	}
	s.emit(c.started)
	s.calls.putCaller(c, topBranch(req))
	s.metrics.CallsActive.Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) { // the attributes cost allocations
		c.logger().Debug("call setup", "from", p.src.String(), "ruri_user", req.Recipient.User, "a_call_id", c.a.callID)
	}

	// In a UDP read loop the handler returns at once: the transaction is
	// ended once A's final response is out (markFinalSent). Elsewhere it
	// waits for that, as sipgo ends the transaction when it returns.
	detached := later || ep.detach(req, tx)
	if detached {
		c.aTxDetached.Store(tx.(*sip.ServerTx))
	}
	ref := c.ref
	if !tx.OnCancel(func(*sip.Request) {
		if c := ref.c.Load(); c != nil {
			c.postAsync(event{kind: evCancel})
		}
	}) {
		c.post(event{kind: evCancel})
	} else {
		c.post(event{kind: evStart})
	}
	if !detached {
		<-c.finalSent
	}
}

// callRef points to a call until it is buried.
type callRef struct{ c atomic.Pointer[call] }

func (c *call) markFinalSent() {
	c.finalSentOnce.Do(func() {
		close(c.finalSent)
		if tx := c.aTxDetached.Swap(nil); tx != nil {
			endDetached(tx)
		}
	})
}

func transportOf(m interface{ Transport() string }) string {
	switch strings.ToLower(m.Transport()) {
	case "tcp":
		return "tcp"
	case "tls":
		return "tls"
	case "wss":
		return "wss"
	}
	return "udp"
}

func (c *call) touch() { c.activity.Store(time.Now().UnixNano()) }

// newBLeg builds the B-leg for one attempt: fresh Call-ID and tag, the
// caller's user parts with the SBC's host, the target as request-URI.
func (c *call) newBLeg(pl *pool, t *target, tr string) *leg {
	ep := c.s.realms[pl.cfg.Realm]
	face := ep.face(tr)
	aFrom, aTo := c.aReq.From(), c.aReq.To()
	host := t.addr.Addr().String()
	b := &leg{
		name: "b", ep: ep, transport: tr, peer: t.addr,
		callID: newID(), localTag: sip.GenerateTagN(16),
		localURI:   sip.Uri{Scheme: "sip", User: c.fromUser, Host: face.Host},
		localName:  aFrom.DisplayName,
		remoteURI:  sip.Uri{Scheme: "sip", User: c.toUser, Host: host},
		remoteName: aTo.DisplayName,
		target:     sip.Uri{Scheme: "sip", User: c.user, Host: host, Port: int(t.addr.Port())},
		routes:     []sip.Uri{},
	}
	if tr != "udp" {
		b.target.UriParams = sip.NewParams()
		b.target.UriParams.Add("transport", tr)
	}
	if c.binding != nil {
		// A registered device: its own Contact as request-URI, every
		// request over its flow.
		b.target = *c.binding.contact.Clone()
		b.flow = true
	}
	b.cseq.Store(uint32(time.Now().UnixNano()%30000) + 1)
	return b
}

// largeUDP is the size above which a request must not go over UDP when a
// congestion-controlled transport can be used (RFC 3261 18.1.1).
const largeUDP = 1300

// newBranch builds the INVITE for target t. A request too large for UDP
// goes over TCP when the pool allows it.
func (c *call) newBranch(t *target) *branch {
	pl := c.pool
	tr := pl.cfg.Transport
	b := c.newBLeg(pl, t, tr)
	inv := c.buildInvite(b)
	if tr == "udp" && pl.cfg.LargeOverTCP() && wireSize(inv) > largeUDP {
		b = c.newBLeg(pl, t, "tcp")
		inv = c.buildInvite(b)
	}
	c.attempts++
	return &branch{n: c.attempts, tgt: t, pool: pl, leg: b, inv: inv, acks: map[string][]byte{}, byed: map[string]bool{}}
}

// authBranch is the INVITE that answers br's digest challenge res with
// br's pool credentials: a new transaction (new branch, CSeq + 1) in the
// same dialog (Call-ID, From tag) to the same target (RFC 3261 22.2). It
// counts as the same attempt.
func (c *call) authBranch(br *branch, res *sip.Response) (*branch, error) {
	old := br.leg
	b := c.newBLeg(br.pool, br.tgt, old.transport)
	b.callID, b.localTag = old.callID, old.localTag
	b.cseq.Store(old.cseq.Load())
	inv := c.buildInvite(b)
	if err := authorize(inv, res, br.pool.cfg.Auth); err != nil {
		return nil, err
	}
	c.attempts++
	c.attemptBase++
	return &branch{n: c.attempts, tgt: br.tgt, pool: br.pool, authed: true, leg: b, inv: inv,
		acks: map[string][]byte{}, byed: map[string]bool{}}, nil
}

// wireSize is the size of a message on the wire, counted without building
// it.
func wireSize(m interface{ StringWrite(io.StringWriter) }) int {
	var n byteCounter
	m.StringWrite(&n)
	return int(n)
}

type byteCounter int

func (n *byteCounter) WriteString(s string) (int, error) {
	*n += byteCounter(len(s))
	return len(s), nil
}

func (c *call) buildInvite(b *leg) *sip.Request {
	inv := b.newRequest(sip.INVITE, 0, c.st.pol.Server.UserAgent)
	b.inviteCSeq = inv.CSeq().SeqNo
	c.st.headers.Copy(inv, c.aReq, "content-type", "replaces")
	if h := c.aReq.GetHeader("Replaces"); h != nil {
		inv.AppendHeader(sip.NewHeader("Replaces", h.Value()))
	}
	if mf := c.aReq.MaxForwards(); mf != nil && mf.Val() > 1 && mf.Val() <= 70 {
		v := sip.MaxForwardsHeader(mf.Val() - 1)
		inv.ReplaceHeader(&v)
	}
	if r := c.route; r != nil {
		// The route's caller-ID policy, as the carrier wants it.
		switch r.PAI {
		case "from":
			inv.RemoveHeader("P-Asserted-Identity")
			u := b.localURI
			inv.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<"+u.String()+">"))
		case "remove":
			inv.RemoveHeader("P-Asserted-Identity")
		}
		switch r.Privacy {
		case "id":
			inv.RemoveHeader("Privacy")
			inv.AppendHeader(sip.NewHeader("Privacy", "id"))
		case "none":
			inv.RemoveHeader("Privacy")
		}
	}
	switch {
	case c.media == nil:
		copyBody(inv, c.aReq)
	case c.offerB != nil:
		v := sip.ContentTypeHeader("application/sdp")
		inv.AppendHeader(&v)
		inv.SetBody(c.offerB)
	default:
		inv.SetBody(nil) // delayed offer: the backend offers
	}
	c.headerRules(inv, b, c.pool, true)
	return inv
}

// buildCancel builds the CANCEL of a branch's INVITE (RFC 3261 9.1).
func buildCancel(inv *sip.Request) *sip.Request {
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
	return creq
}

// responseToA builds A's copy of a B response to the initial INVITE.
func (c *call) responseToA(res *sip.Response) *sip.Response {
	out, _ := c.responseToAChecked(res)
	return out
}

// responseToAChecked is responseToA that also returns why the response's
// SDP could not be relayed (a *mediaError): the copy then has no body.
func (c *call) responseToAChecked(res *sip.Response) (*sip.Response, error) {
	var bodyErr error
	out := c.aResponse(res.StatusCode, res.Reason)
	c.st.headers.Copy(out, res, "content-type")
	if res.StatusCode > 100 && res.StatusCode < 300 {
		out.AppendHeader(c.a.contact(""))
	}
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		c.redirectContacts(out, res)
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	if res.StatusCode < 300 {
		// The answer to A's offer, or the backend's offer when A's INVITE
		// had none. An answer belongs to one of the backend's (early)
		// dialogs: the media follows the dialog that answered last, and
		// the one whose 2xx is kept.
		tag := tagOf(res.To().Params)
		if c.media != nil && c.offerB != nil && res.IsSuccess() && len(res.Body()) == 0 {
			if err := c.media.followDialog(tag); err != nil {
				c.logf("early dialog's SDP not applied", "error", err.Error())
			}
			c.closeReplaced()
		}
		bodyErr = c.relayBody(c.b(), c.offerB == nil, out, res)
		if bodyErr == nil && c.offerB != nil {
			c.media.answerFrom(tag, res.Body())
		}
	} else {
		out.SetBody(nil)
	}
	c.headerRules(out, c.a, c.bPool(), false)
	return out, bodyErr
}

// aResponse is a response to A's INVITE with A's leg's tag in its To.
func (c *call) aResponse(code int, reason string) *sip.Response {
	return sip.NewResponseFromRequestTag(c.aReq, code, reason, nil, c.a.localTag)
}

// localResponseToA builds a final response of the SBC's own to A's INVITE.
func (c *call) localResponseToA(code int, reason string, hdrs ...sip.Header) *sip.Response {
	out := c.aResponse(code, reason)
	for _, h := range hdrs {
		out.AppendHeader(h)
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	out.SetBody(nil)
	return out
}

// redirectContacts relays a 3xx's Contacts with the backend's host
// replaced by the SBC's face: the carrier retries through the SBC.
func (c *call) redirectContacts(out, res *sip.Response) {
	for _, h := range res.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		u := c.a.uri(ct.Address.User)
		out.AppendHeader(&sip.ContactHeader{Address: u})
	}
}

func resultOf(code int) string {
	switch {
	case code == 486 || code == 600:
		return resultBusy
	case code == 487:
		return resultCancelled
	case code >= 300 && code < 400:
		return resultRedirected
	case code == 404 || code == 604:
		return resultNotFound
	case code == 480 || code == 408:
		return resultNoAnswer
	case code >= 400 && code < 500:
		return resultRejected
	case code >= 500 && code < 600:
		return resultFailed
	default:
		return resultDeclined
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sessionInterval reads the Session-Expires of a 2xx (RFC 4028), 0 if
// none or invalid.
func sessionInterval(m interface{ GetHeader(string) sip.Header }) time.Duration {
	h := m.GetHeader("Session-Expires")
	if h == nil {
		h = m.GetHeader("x")
	}
	if h == nil {
		return 0
	}
	v := h.Value()
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// sessionDeadline is when a session not refreshed is torn down (RFC 4028
// 10: the interval minus the smaller of 32 s and a third of it).
func sessionDeadline(d time.Duration) time.Duration {
	return d - min(32*time.Second, d/3)
}
