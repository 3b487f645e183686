package sipua

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Plan says how a Backend handles one incoming INVITE.
type Plan struct {
	// Provisional responses sent in order before the final response.
	Provisional []Provisional
	// Delay waits this long (after the provisional responses) before the
	// final response; a CANCEL during the wait ends the call with 487.
	Delay time.Duration
	// Hold, when not nil, waits after Delay until it is closed: a test
	// answers once something else has happened (a CANCEL during the wait
	// ends the call with 487). Shared by every INVITE the plan answers.
	Hold <-chan struct{}
	// Final is the final status code (200 to 699); 0 means 200.
	Final int
	// Headers are added to the final response (a Contact for a 3xx, a
	// Retry-After for a 503, ...). A Contact given here replaces ours.
	Headers []sip.Header
	// Body replaces the body of the final response. By default a 2xx
	// carries an SDP answer (or, for an INVITE without SDP, an offer) and
	// other codes carry none.
	Body []byte
	// NoResponse drops the INVITE, its retransmissions and a CANCEL for it
	// unanswered, not even 100 Trying: the backend looks dead. (Over UDP
	// they never reach the SIP stack; over TCP the INVITE transaction is
	// ended at once, and a CANCEL gets 481.)
	NoResponse bool
	// HangupAfter, if positive, makes the backend send BYE this long after
	// the ACK for its 2xx.
	HangupAfter time.Duration
	// InDialog sets the response code for requests received later in the
	// dialog, by method (INVITE for a re-INVITE, UPDATE, INFO, MESSAGE,
	// NOTIFY, REFER, BYE). Missing methods get 200 (REFER 202); a
	// re-INVITE or UPDATE answered 2xx carries an SDP answer. NoAnswer
	// leaves the request unanswered.
	InDialog map[sip.RequestMethod]int
}

// Provisional is one provisional response of a Plan. (If nothing is sent
// within 200 ms of the INVITE, sipgo's transaction layer sends 100 Trying by
// itself.)
type Provisional struct {
	// Code is the status code, 100 to 199.
	Code int
	// Delay waits this long before sending the response.
	Delay time.Duration
	// SDP attaches the SDP answer (early media); for an INVITE without SDP
	// it attaches an offer.
	SDP bool
	// Reliable sends the response reliably (RFC 3262: Require: 100rel and
	// RSeq, retransmitted until PRACK, the next response waits for the
	// PRACK) when the INVITE lists 100rel in Supported or Require;
	// otherwise the response is sent unreliably, as RFC 3262 demands.
	Reliable bool
}

// Always returns an Answer function that gives every INVITE the same plan.
func Always(p Plan) func(*sip.Request) Plan {
	return func(*sip.Request) Plan { return p }
}

// CallState is the state of a call at a Backend.
type CallState string

// Call states, in the order a call goes through them.
const (
	StateTrying    CallState = "trying"    // INVITE received, no provisional above 100 sent
	StateRinging   CallState = "ringing"   // a provisional response above 100 sent
	StateAnswered  CallState = "answered"  // 2xx sent
	StateRejected  CallState = "rejected"  // final response >= 300 sent
	StateCancelled CallState = "cancelled" // CANCEL received before the final response
	StateEnded     CallState = "ended"     // answered, then BYE (see EndedBy)
	StateIgnored   CallState = "ignored"   // Plan.NoResponse: INVITE dropped
)

// CallInfo is a snapshot of one call at a Backend.
type CallInfo struct {
	CallID    string    // Call-ID of the INVITE
	User      string    // user part of the INVITE's Request-URI
	Tag       string    // the backend's To tag (for topology-hiding checks)
	State     CallState // see the State constants
	EndedBy   Party     // who ended an ended or cancelled call
	Final     int       // final status sent (487 after CANCEL), 0 if none
	Source    string    // address the INVITE came from
	Transport string    // "UDP" or "TCP"
	Invite    []byte    // body of the INVITE (nil: delayed offer)
	Acked     bool      // the ACK for the 2xx arrived
	AckBody   []byte    // body of that ACK (the answer, for a delayed offer)
	Started   time.Time // when the INVITE arrived

	inviteCSeq string // CSeq number of the INVITE
}

// BackendOptions configures a Backend.
type BackendOptions struct {
	// UDP is the UDP address to listen on; default "127.0.0.1:0"
	// (port 0 picks a free port: read it back with Addr).
	UDP string
	// TCP, if set, is a TCP address to listen on as well.
	TCP string
	// TLSAddr, if set, is a TLS address to listen on as well, with TLS
	// as the server configuration (Certificates required; ClientAuth and
	// ClientCAs for mutual TLS). TLS is also the client side of the TLS
	// connections the backend opens.
	TLSAddr string
	TLS     *tls.Config
	// Answer decides how to handle each new INVITE; nil answers every call
	// with 180 then 200. It is called once per INVITE (retransmissions
	// excluded), from sipgo's goroutines, and must return quickly.
	Answer func(req *sip.Request) Plan
	// UserAgent is the User-Agent and Server header value; default
	// "sipua-backend".
	UserAgent string
	// User is the user part of the Contact; default "pbx".
	User string
	// MediaIP is the address put into SDP; default the listen IP.
	MediaIP string
	// MediaPort, if set, is the port put into every SDP the backend sends
	// (a test's own media socket at MediaIP); default a made-up port per
	// call.
	MediaPort int
	// Logger receives sipgo's logs; nil discards them.
	Logger *slog.Logger
	// LogLimit bounds the Received log (the oldest half is dropped when it
	// is full) and the call list; 0 means 10000. Negative stores no
	// messages (the call list then keeps the default bound).
	LogLimit int
}

// Backend is a scriptable UAS playing a PBX. It answers INVITEs according to
// a Plan, answers in-dialog requests, and records everything it receives.
type Backend struct {
	ep      *endpoint
	answer  func(*sip.Request) Plan
	options atomic.Int32
	regCSeq atomic.Uint32 // CSeq of Register's REGISTERs
	limit   int

	mu      sync.Mutex
	calls   map[string]*CallInfo
	order   []string
	pending map[string]Plan // UDP INVITE plans decided in the read filter, by Via branch
	n       notifier
}

// NewBackend starts a Backend.
func NewBackend(opts BackendOptions) (*Backend, error) {
	if opts.UDP == "" {
		opts.UDP = "127.0.0.1:0"
	}
	if opts.Answer == nil {
		opts.Answer = Always(Plan{Provisional: []Provisional{{Code: 180}}})
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "sipua-backend"
	}
	if opts.User == "" {
		opts.User = "pbx"
	}
	limit := opts.LogLimit
	if limit <= 0 {
		limit = defaultLogLimit
	}
	b := &Backend{
		answer:  opts.Answer,
		limit:   limit,
		calls:   make(map[string]*CallInfo),
		pending: make(map[string]Plan),
	}
	b.options.Store(200)
	ep, err := newEndpoint(epConfig{
		udp:       opts.UDP,
		tcp:       opts.TCP,
		tls:       opts.TLSAddr,
		tlsServer: opts.TLS,
		tlsClient: opts.TLS,
		name:      opts.UserAgent,
		user:      opts.User,
		mediaIP:   opts.MediaIP,
		mediaPort: opts.MediaPort,
		logger:    opts.Logger,
		logLimit:  opts.LogLimit,
		dropUDP:   b.dropUDP,
		onRequest: b.wireRequest,
		onInvite:  b.onInvite,
		options:   func() int { return int(b.options.Load()) },
	})
	if err != nil {
		return nil, err
	}
	b.ep = ep
	if err := ep.serve(); err != nil {
		return nil, err
	}
	return b, nil
}

// Addr returns the bound UDP address ("ip:port").
func (b *Backend) Addr() string { return b.ep.udpAddr }

// TCPAddr returns the bound TCP address, or "" without TCP.
func (b *Backend) TCPAddr() string { return b.ep.tcpAddr }

// TLSAddr returns the bound TLS address, or "" without TLS.
func (b *Backend) TLSAddr() string { return b.ep.tlsAddr }

// Close stops the Backend: calls in progress are abandoned without BYE.
func (b *Backend) Close() error { return b.ep.close() }

// SetOptionsReply sets the status code answered to OPTIONS (default 200);
// 0 leaves OPTIONS unanswered, which fails a health check.
func (b *Backend) SetOptionsReply(code int) { b.options.Store(int32(code)) }

// Received returns a copy of the log of received messages.
func (b *Backend) Received() []Msg { return b.ep.rec.all() }

// WaitFor returns the first received message (oldest first, waiting for new
// ones) for which f is true, or ctx's error.
func (b *Backend) WaitFor(ctx context.Context, f func(Msg) bool) (Msg, error) {
	return b.ep.rec.waitFor(ctx, f)
}

// Calls returns a snapshot of the calls, in the order their INVITEs arrived.
func (b *Backend) Calls() []CallInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]CallInfo, 0, len(b.order))
	for _, id := range b.order {
		out = append(out, *b.calls[id])
	}
	return out
}

// Call returns the call with the given Call-ID.
func (b *Backend) Call(callID string) (CallInfo, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.calls[callID]
	if !ok {
		return CallInfo{}, false
	}
	return *c, true
}

// WaitCall returns the first call (oldest first) for which f is true,
// waiting for calls to appear or change state, or ctx's error.
func (b *Backend) WaitCall(ctx context.Context, f func(CallInfo) bool) (CallInfo, error) {
	for {
		ch := b.n.wait()
		for _, c := range b.Calls() {
			if f(c) {
				return c, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return CallInfo{}, ctx.Err()
		}
	}
}

// Bye hangs up an answered call.
func (b *Backend) Bye(ctx context.Context, callID string) error {
	d := b.ep.dialog(callID)
	if d == nil {
		return ErrNoDialog
	}
	res, err := d.request(ctx, sip.BYE, nil, nil)
	return statusError(res, err)
}

// ReInvite sends a re-INVITE with the given SDP (nil: no offer, the ACK
// then carries the answer to the offer in the 2xx) and returns the final
// response. Use SDP(..., SendOnly) to put the peer on hold.
func (b *Backend) ReInvite(ctx context.Context, callID string, sdp []byte) (*sip.Response, error) {
	d := b.ep.dialog(callID)
	if d == nil {
		return nil, ErrNoDialog
	}
	return d.reinvite(ctx, sdp, nil)
}

// Request sends an in-dialog request (INFO, NOTIFY, MESSAGE, REFER, UPDATE,
// ...) with the given body and extra headers, and returns the final
// response. The Content-Type follows the method unless given in hdrs; a
// REFER needs a Refer-To header in hdrs.
func (b *Backend) Request(ctx context.Context, callID string, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	d := b.ep.dialog(callID)
	if d == nil {
		return nil, ErrNoDialog
	}
	return d.request(ctx, method, body, hdrs)
}

func statusError(res *sip.Response, err error) error {
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return fmt.Errorf("sipua: %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// --- call table --------------------------------------------------------

func (b *Backend) newCall(req *sip.Request, state CallState) {
	c := &CallInfo{
		CallID:    callIDOf(req),
		User:      req.Recipient.User,
		State:     state,
		Source:    req.Source(),
		Transport: req.Transport(),
		Started:   time.Now(),
	}
	if body := req.Body(); len(body) > 0 {
		c.Invite = bytes.Clone(body)
	}
	if cseq := req.CSeq(); cseq != nil {
		c.inviteCSeq = strconv.FormatUint(uint64(cseq.SeqNo), 10)
	}
	b.mu.Lock()
	if _, ok := b.calls[c.CallID]; !ok {
		b.order = append(b.order, c.CallID)
	}
	b.calls[c.CallID] = c
	if len(b.order) > b.limit {
		drop := b.order[:len(b.order)/2]
		for _, id := range drop {
			delete(b.calls, id)
		}
		b.order = append([]string(nil), b.order[len(b.order)/2:]...)
	}
	b.mu.Unlock()
	b.n.broadcast()
}

func (b *Backend) update(callID string, f func(*CallInfo)) {
	b.mu.Lock()
	c, ok := b.calls[callID]
	if ok {
		f(c)
	}
	b.mu.Unlock()
	if ok {
		b.n.broadcast()
	}
}

// wireRequest notes the ACK for a 2xx as it comes off the socket: sipgo
// may process an ACK after a BYE sent right behind it.
func (b *Backend) wireRequest(m Msg) {
	if m.Method != "ACK" {
		return
	}
	f := strings.Fields(m.Header("CSeq"))
	if len(f) != 2 {
		return
	}
	b.update(m.CallID(), func(c *CallInfo) {
		if c.State != StateAnswered || c.Acked || f[0] != c.inviteCSeq {
			return
		}
		c.Acked = true
		if len(m.Body) > 0 {
			c.AckBody = bytes.Clone(m.Body)
		}
	})
}

// --- INVITE handling ---------------------------------------------------

func branchOf(req *sip.Request) string {
	if v := req.Via(); v != nil {
		b, _ := v.Params.Get("branch")
		return b
	}
	return ""
}

// dropUDP decides the plan of a new UDP INVITE before the SIP stack sees it,
// so that Plan.NoResponse can swallow it (and its retransmissions) without
// even the automatic 100 Trying.
func (b *Backend) dropUDP(p sip.TransportReadProps, data []byte) bool {
	invite := bytes.HasPrefix(data, []byte("INVITE "))
	if !invite && !bytes.HasPrefix(data, []byte("CANCEL ")) {
		return false
	}
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return false
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.To() == nil || req.To().Params.Has("tag") || (invite && !validInvite(req)) {
		return false
	}
	key := branchOf(req)
	if key == "" {
		return false
	}
	b.mu.Lock()
	plan, seen := b.pending[key]
	b.mu.Unlock()
	if seen || !invite {
		// A retransmission, or a CANCEL: silent if the INVITE was.
		return plan.NoResponse
	}
	req.SetSource(p.RemoteAddr.String())
	req.SetTransport("UDP")
	plan = b.answer(req)
	b.mu.Lock()
	if len(b.pending) >= 4096 {
		clear(b.pending)
	}
	b.pending[key] = plan
	b.mu.Unlock()
	if plan.NoResponse {
		b.newCall(req, StateIgnored)
	}
	return plan.NoResponse
}

func (b *Backend) planFor(req *sip.Request) Plan {
	if key := branchOf(req); key != "" {
		b.mu.Lock()
		plan, ok := b.pending[key]
		if ok {
			delete(b.pending, key)
		}
		b.mu.Unlock()
		if ok {
			return plan
		}
	}
	return b.answer(req)
}

// sleep waits d; it returns false if the INVITE was cancelled or the
// Backend closed meanwhile.
func (b *Backend) sleep(d time.Duration, cancelled <-chan struct{}, tx sip.ServerTransaction) bool {
	if d <= 0 {
		select {
		case <-cancelled:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	return until(b, t.C, cancelled, tx)
}

// hold waits for release to be closed (at once when it is nil); false
// when the INVITE was cancelled or the backend closed first.
func (b *Backend) hold(release <-chan struct{}, cancelled <-chan struct{}, tx sip.ServerTransaction) bool {
	if release == nil {
		return true
	}
	return until(b, release, cancelled, tx)
}

// until waits for done; false if the INVITE was cancelled, its
// transaction ended or the Backend closed first.
func until[T any](b *Backend, done <-chan T, cancelled <-chan struct{}, tx sip.ServerTransaction) bool {
	select {
	case <-done:
		return true
	case <-cancelled:
	case <-tx.Done():
	case <-b.ep.closed:
	}
	return false
}

// validInvite checks what the Backend needs of an INVITE before planning.
func validInvite(req *sip.Request) bool {
	return req.Contact() != nil && req.From() != nil && req.To() != nil &&
		req.CSeq() != nil && req.CallID() != nil && req.Via() != nil
}

func (b *Backend) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if !validInvite(req) {
		b.ep.respond(tx, req, 400, nil)
		return
	}
	plan := b.planFor(req)
	callID := callIDOf(req)
	if plan.NoResponse {
		tx.Terminate()
		b.newCall(req, StateIgnored)
		return
	}

	cancelled := make(chan struct{})
	var once sync.Once
	if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(cancelled) }) }) {
		b.newCall(req, StateCancelled)
		return
	}

	d := newDialog(b.ep, callID, req.Transport())
	d.localTag = newTag()
	d.remoteTag = tagOf(req.From().Params)
	d.localURI = *req.To().Address.Clone()
	d.remoteURI = *req.From().Address.Clone()
	d.remoteTarget = *req.Contact().Address.Clone()
	for _, h := range req.GetHeaders("Record-Route") {
		d.routeSet = append(d.routeSet, h.Value())
	}
	d.policy = plan.InDialog
	d.onEnd = func(by Party) {
		b.update(callID, func(c *CallInfo) {
			if c.State == StateAnswered {
				c.State = StateEnded
				c.EndedBy = by
			}
		})
	}
	b.ep.addDialog(d)
	b.newCall(req, StateTrying)
	b.update(callID, func(c *CallInfo) { c.Tag = d.localTag })

	// Responses are built from a copy of the INVITE carrying our To tag.
	inv := req.Clone()
	inv.To().Params.Add("tag", d.localTag)
	sdpFor := func() []byte { return d.initialSDP(req.Body()) }
	reliableOK := hasOption(req, "Supported", "100rel") || hasOption(req, "Require", "100rel")
	contact := b.ep.contact(d.transport)

	finish := func(state CallState, final int) {
		b.update(callID, func(c *CallInfo) {
			c.State, c.Final = state, final
			if state == StateCancelled {
				c.EndedBy = Remote
			}
		})
		if state != StateAnswered {
			d.end("")
		}
	}
	cancelledNow := func() bool {
		select {
		case <-cancelled:
			return true
		default:
			return false
		}
	}

	var rseq uint32
	for _, p := range plan.Provisional {
		if p.Code < 100 || p.Code > 199 {
			b.ep.log.Warn("sipua: invalid provisional status in plan, skipped", "status", p.Code)
			continue
		}
		if !b.sleep(p.Delay, cancelled, tx) {
			finish(StateCancelled, 487)
			return
		}
		var body []byte
		if p.SDP {
			body = sdpFor()
		}
		res := b.ep.response(inv, p.Code, body, contact)
		if p.Reliable && reliableOK && p.Code > 100 {
			rseq++
			res.AppendHeader(sip.NewHeader("Require", "100rel"))
			res.AppendHeader(sip.NewHeader("RSeq", strconv.FormatUint(uint64(rseq), 10)))
			if _, err := d.sendReliable(tx, res, rseq, cancelled); err != nil {
				switch {
				case err == errCancelled || cancelledNow():
					finish(StateCancelled, 487)
				case err == errNoPrack:
					// RFC 3262 3: reject the INVITE with a 5xx.
					_ = tx.Respond(b.ep.response(inv, 500, nil))
					finish(StateRejected, 500)
				default:
					finish(StateRejected, 0)
				}
				return
			}
		} else if err := tx.Respond(res); err != nil {
			finish(StateRejected, 0)
			return
		}
		if cancelledNow() {
			finish(StateCancelled, 487)
			return
		}
		if p.Code > 100 {
			b.update(callID, func(c *CallInfo) { c.State = StateRinging })
		}
	}
	if !b.sleep(plan.Delay, cancelled, tx) || !b.hold(plan.Hold, cancelled, tx) {
		finish(StateCancelled, 487)
		return
	}

	final := plan.Final
	switch {
	case final == 0:
		final = 200
	case final < 200 || final > 699:
		b.ep.log.Warn("sipua: invalid final status in plan, sending 500", "status", final)
		final = 500
	}
	hdrs := append([]sip.Header(nil), plan.Headers...)
	hasContact := false
	for _, h := range hdrs {
		if h != nil && strings.EqualFold(h.Name(), "Contact") {
			hasContact = true
		}
	}
	if final >= 300 {
		err := tx.Respond(b.ep.response(inv, final, plan.Body, hdrs...))
		switch {
		case cancelledNow():
			finish(StateCancelled, 487)
		case err != nil:
			b.ep.log.Debug("sipua: final response", "call", callID, "error", err)
			finish(StateRejected, 0)
		default:
			finish(StateRejected, final)
		}
		return
	}

	if !hasContact {
		hdrs = append(hdrs, contact)
	}
	body := plan.Body
	if body == nil {
		body = sdpFor()
	}
	// The call counts as answered from here; a CANCEL that wins the race
	// against the 2xx turns it into cancelled, a BYE into ended.
	d.setConfirmed()
	b.update(callID, func(c *CallInfo) { c.State, c.Final = StateAnswered, final })
	ack, err := d.send2xx(tx, b.ep.response(inv, final, body, hdrs...), req.CSeq().SeqNo, cancelled)
	if err == errCancelled {
		finish(StateCancelled, 487)
		return
	}
	if ack != nil {
		b.update(callID, func(c *CallInfo) {
			c.Acked = true
			if body := ack.Body(); len(body) > 0 {
				c.AckBody = bytes.Clone(body)
			}
		})
	}
	if err != nil {
		b.ep.log.Debug("sipua: 2xx not acknowledged", "call", callID, "error", err)
		return
	}
	if plan.HangupAfter > 0 {
		b.ep.spawn(func() {
			t := time.NewTimer(plan.HangupAfter)
			defer t.Stop()
			select {
			case <-t.C:
			case <-d.done:
				return
			case <-b.ep.closed:
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
			defer cancel()
			_ = b.Bye(ctx, callID)
		})
	}
}
