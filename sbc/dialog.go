package sbc

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// In-dialog traffic: every request inside an established (or early) call
// is received on one leg and re-originated on the other, with that leg's
// Call-ID, tags, CSeq, route set and the SBC's Contact; responses come back
// the same way. Nothing of one leg's dialog identifiers crosses to the other.

// inviteRelay ties an INVITE received on one leg to the INVITE the SBC sent
// on the other, so the ACK for the 2xx can follow (with its body).
type inviteRelay struct {
	c                *call
	from, to         *leg
	fromCSeq, toCSeq uint32
	ackCh            chan *sip.Request

	ackOnce sync.Once
	mu      sync.Mutex
	ack     *sip.Request // the ACK the SBC sent on `to`, resent on 2xx retransmissions
}

// deliverAck hands an ACK received on `from` to the waiting relay.
func (r *inviteRelay) deliverAck(ack *sip.Request) {
	select {
	case r.ackCh <- ack:
	default: // a retransmitted ACK: the first one was enough
	}
}

// ackTo sends the ACK for the 2xx on `to`, carrying fromAck's body if any.
// Only the first call sends: a BYE that crosses the ACK may have
// acknowledged the 2xx already.
func (r *inviteRelay) ackTo(fromAck *sip.Request) {
	r.ackOnce.Do(func() { r.sendAck(fromAck) })
}

func (r *inviteRelay) sendAck(fromAck *sip.Request) {
	ack := r.to.newRequest(sip.ACK, r.toCSeq, r.c.st.pol.Server.UserAgent)
	if fromAck != nil && len(fromAck.Body()) > 0 {
		copyBody(ack, fromAck)
	} else {
		ack.SetBody(nil)
	}
	r.mu.Lock()
	r.ack = ack
	r.mu.Unlock()
	if err := r.to.ep.write(ack.Clone(), r.to.transport, r.to.dst); err != nil {
		r.c.log.Warn("ACK send failed", "leg", r.to.name, "error", err)
	}
}

// onRetransmission answers a retransmitted 2xx (our ACK was lost) with
// the same ACK again; before that ACK exists the 2xx is absorbed.
func (r *inviteRelay) onRetransmission(res *sip.Response) {
	if !res.IsSuccess() {
		return
	}
	r.mu.Lock()
	ack := r.ack
	r.mu.Unlock()
	if ack != nil {
		_ = r.to.ep.write(ack.Clone(), r.to.transport, r.to.dst)
	}
}

func (c *call) other(l *leg) *leg {
	if l == c.a {
		return c.b.Load()
	}
	return c.a
}

func (c *call) stateNow() callState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// inDialog dispatches a request carrying a To tag.
func (s *SBC) inDialog(ep *endpoint, req *sip.Request, tx sip.ServerTransaction) {
	c, from := s.calls.get(req.CallID().Value(), tagOf(req.To().Params))
	if c == nil || from.ep != ep {
		s.drop("dialog", "no_dialog")
		s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	if c.stateNow() == stEnded {
		// Lingering dialog of an ended call: not a stray, just late.
		s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	if !from.checkCSeq(req.CSeq().SeqNo, req.Method) {
		s.drop("dialog", "cseq_out_of_order")
		s.reject(ep, req, tx, 500, "Server Internal Error", nil, sip.NewHeader("Retry-After", "1"))
		return
	}
	c.touch()
	switch req.Method {
	case sip.BYE:
		c.onBye(from, req, tx)
	default:
		c.relay(from, req, tx)
	}
}

// onAck routes an ACK for a 2xx to the relay waiting for it.
func (s *SBC) onAck(ep *endpoint, req *sip.Request) {
	if req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		s.drop("dialog", "bad_ack")
		return
	}
	c, from := s.calls.get(req.CallID().Value(), tagOf(req.To().Params))
	if c == nil || from.ep != ep {
		s.drop("dialog", "stray_ack")
		return
	}
	if c.stateNow() == stEnded {
		return // late ACK of a call that just ended: absorbed
	}
	c.touch()
	from.mu.Lock()
	rel := from.acks[req.CSeq().SeqNo]
	delete(from.acks, req.CSeq().SeqNo)
	from.mu.Unlock()
	if rel == nil {
		return // retransmission of an ACK already relayed
	}
	rel.deliverAck(req)
}

// onBye ends the call: the BYE is answered on its own leg at once and a
// BYE of the SBC's goes to the other leg.
func (c *call) onBye(from *leg, req *sip.Request, tx sip.ServerTransaction) {
	c.ending.Store(true)
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	_ = tx.Respond(res)
	c.mu.Lock()
	final := c.final
	c.mu.Unlock()
	by := "caller"
	if from.name == "b" {
		by = "callee"
	}
	if !final && from == c.a {
		// BYE in an early dialog: like a CANCEL (RFC 3261 15).
		c.finalToA(487, "Request Terminated", nil)
		c.mu.Lock()
		c.canceled = true
		c.mu.Unlock()
		c.cancel()
		return
	}
	if rel := c.setupRelay.Load(); rel != nil && from == c.a {
		// A BYE that overtook A's ACK: B's 2xx still needs its ACK
		// before B is sent a BYE.
		rel.ackTo(nil)
	}
	reason := ""
	if h := req.GetHeader("Reason"); h != nil && c.st.headers.Allowed("Reason") {
		reason = h.Value()
	}
	other := c.other(from)
	c.end("answered", by)
	if other != nil {
		bye := other.newRequest(sip.BYE, 0, c.st.pol.Server.UserAgent)
		if reason != "" {
			bye.AppendHeader(sip.NewHeader("Reason", reason))
		}
		bye.SetBody(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		if _, err := other.ep.do(ctx, bye, other.transport, other.dst); err != nil {
			c.log.Debug("BYE to other leg failed", "leg", other.name, "error", err)
		}
	}
}

// relay re-originates an in-dialog request on the other leg and relays
// the responses back.
func (c *call) relay(from *leg, req *sip.Request, tx sip.ServerTransaction) {
	to := c.other(from)
	if to == nil || !to.hasRemote() {
		// The other side's dialog does not exist yet (no tagged response).
		c.s.reject(from.ep, req, tx, 491, "Request Pending", nil, sip.NewHeader("Retry-After", "1"))
		return
	}
	ua := c.st.pol.Server.UserAgent
	out := to.newRequest(req.Method, 0, ua)
	c.st.headers.Copy(out, req, "content-type", "rack", "refer-to")
	if mf := req.MaxForwards(); mf != nil && mf.Val() > 1 && mf.Val() <= 70 {
		v := sip.MaxForwardsHeader(mf.Val() - 1)
		out.ReplaceHeader(&v)
	}
	if h := req.GetHeader("RAck"); h != nil && c.st.headers.Allowed("RAck") {
		out.AppendHeader(sip.NewHeader("RAck", rewriteRAck(h.Value(), to.inviteCSeq)))
	}
	if h := req.ReferTo(); h != nil && c.st.headers.Allowed("Refer-To") {
		// The transfer target is re-homed on the SBC's face of the
		// receiving leg: whoever follows it comes back through the SBC.
		u := to.face().URI(h.Address.User)
		u.Headers = h.Address.Headers
		out.AppendHeader(&sip.ReferToHeader{Address: u})
	}
	copyBody(out, req)
	if isTargetRefresh(req.Method) {
		from.refreshTarget(req.Contact())
	}

	var rel *inviteRelay
	if req.Method == sip.INVITE {
		rel = &inviteRelay{c: c, from: from, to: to, fromCSeq: req.CSeq().SeqNo, toCSeq: out.CSeq().SeqNo, ackCh: make(chan *sip.Request, 1)}
		from.mu.Lock()
		from.acks[rel.fromCSeq] = rel
		from.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
	defer cancel()
	otx, err := to.ep.request(ctx, out, to.transport, to.dst)
	if err != nil {
		c.log.Warn("in-dialog relay failed", "method", string(req.Method), "error", err)
		c.s.reject(from.ep, req, tx, 503, "Service Unavailable", nil)
		return
	}
	defer otx.Terminate()
	if rel != nil {
		otx.OnRetransmission(rel.onRetransmission)
	}
	for {
		select {
		case res := <-otx.Responses():
			c.s.countResponse(to.ep.name, res)
			if !c.s.validResponse(to.ep.name, res) {
				continue
			}
			if res.StatusCode == 100 {
				continue
			}
			back := c.inDialogResponse(from, req, res)
			if res.IsProvisional() {
				_ = tx.Respond(back)
				continue
			}
			if res.IsSuccess() && isTargetRefresh(req.Method) {
				to.refreshTarget(res.Contact())
			}
			if rel != nil && res.IsSuccess() {
				ack, ok := c.retransmitUntilAck(rel, func() error { return tx.Respond(back) })
				if ok {
					rel.ackTo(ack)
				} else {
					rel.ackTo(nil)
				}
				return
			}
			_ = tx.Respond(back)
			return
		case <-otx.Done():
			c.s.reject(from.ep, req, tx, 408, "Request Timeout", nil)
			return
		case <-ctx.Done():
			c.s.reject(from.ep, req, tx, 408, "Request Timeout", nil)
			return
		}
	}
}

func (l *leg) hasRemote() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.remoteTag != ""
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
		out.AppendHeader(from.face().Contact(""))
	}
	out.AppendHeader(sip.NewHeader("Server", c.st.pol.Server.UserAgent))
	copyBody(out, res)
	return out
}

// callTable finds calls by (Call-ID, local tag) of either leg.
type callTable struct {
	mu sync.RWMutex
	m  map[string]legRef
}

type legRef struct {
	c *call
	l *leg
}

func newCallTable() *callTable { return &callTable{m: map[string]legRef{}} }

func dialogKey(callID, localTag string) string {
	var b strings.Builder
	b.Grow(len(callID) + len(localTag) + 1)
	b.WriteString(callID)
	b.WriteByte(0)
	b.WriteString(localTag)
	return b.String()
}

func (t *callTable) put(l *leg, c *call) {
	t.mu.Lock()
	t.m[dialogKey(l.callID, l.localTag)] = legRef{c, l}
	t.mu.Unlock()
}

func (t *callTable) del(l *leg) {
	if l == nil {
		return
	}
	t.mu.Lock()
	delete(t.m, dialogKey(l.callID, l.localTag))
	t.mu.Unlock()
}

func (t *callTable) get(callID, localTag string) (*call, *leg) {
	if localTag == "" {
		return nil, nil
	}
	t.mu.RLock()
	r := t.m[dialogKey(callID, localTag)]
	t.mu.RUnlock()
	return r.c, r.l
}

// len returns the number of distinct calls.
func (t *callTable) len() int {
	n := 0
	t.each(func(*call) { n++ })
	return n
}

// each calls f once for every distinct call not yet ended.
func (t *callTable) each(f func(*call)) {
	t.mu.RLock()
	seen := map[*call]bool{}
	var list []*call
	for _, r := range t.m {
		if !seen[r.c] && r.c.stateNow() != stEnded {
			seen[r.c] = true
			list = append(list, r.c)
		}
	}
	t.mu.RUnlock()
	for _, c := range list {
		f(c)
	}
}
