package sbc

import (
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Tombs: what an ended call leaves behind. For lingerFor (64*T1) after its
// end a call's dialogs must still answer what the network delivers late: an
// ACK a BYE overtook (absorbed), a BYE that crossed ours or is
// retransmitted (200), any other in-dialog request (481), and a 2xx to a
// B-leg INVITE retransmitted because our ACK was lost (the same ACK
// again) or sent late by a fork the call never kept (ACK, then BYE). None
// of that needs the call: its parsed messages, legs, branches, timers and
// media go with it, and each dialog key in the call table points to a
// tomb of a few hundred bytes instead (measured: BENCHMARKS.md, "Memory of
// established and ended calls").
//
// The call is buried by its end action (finish), after its lock, once
// every branch has its final answer; a branch still waiting for one (a
// CANCEL crossing a 2xx) keeps the call reachable until it has it, and
// the call buries itself then (actBury).

// tomb is an ended call's dialog, as the call table keeps it.
type tomb struct {
	key string // the call-table key (Call-ID, local tag)
	ep  *endpoint
	st  *snapshot // the call's snapshot: late requests are classified with it
	// a: the caller's leg (A); else a B-leg.
	a bool
	// For the A-leg, who may speak for it: the call's trunk, or for a
	// call out from a backend ("" trunk) the backend pool it came from.
	trunk, srcPool string
	// B-leg: the peer's address, the transport and where a late ACK goes,
	// the CSeq of the INVITE, and the ACK sent for each 2xx dialog (by To
	// tag), as bytes.
	peer       netip.Addr
	transport  string
	dest       netip.AddrPort
	inviteCSeq uint32
	acks       []tombAck
}

type tombAck struct {
	tag string
	raw []byte
}

// sentBy is call.sentBy for a tomb.
func (t *tomb) sentBy(p peer) bool {
	if t.a {
		if t.trunk == "" {
			return p.backend && p.pool == t.srcPool
		}
		return p.trunk != nil && p.trunk.Name == t.trunk
	}
	return p.backend || p.src.Addr().Unmap() == t.peer
}

// settled reports whether a branch will hear nothing more the call must
// act on through its own transaction: it has its final answer (or its
// transaction is over).
func (br *branch) settled() bool {
	return br.state == brAnswered || br.state == brFailed || br.state == brGone
}

// tombsLocked builds the tombs of the call's dialogs that can be buried
// now: the A-leg, and each settled branch's B-leg not buried yet. Under
// c.mu.
func (c *call) tombsLocked() []*tomb {
	var out []*tomb
	if !c.aBuried {
		c.aBuried = true
		t := &tomb{key: dialogKey(c.a.callID, c.a.localTag), ep: c.a.ep, st: c.st, a: true, transport: c.a.transport}
		if c.trunk != nil {
			t.trunk = c.trunk.Name
		} else {
			t.srcPool = c.srcPool
		}
		out = append(out, t)
	}
	for _, br := range c.branches {
		if br.buried || !br.settled() {
			continue
		}
		br.buried = true
		l := br.leg
		t := &tomb{key: dialogKey(l.callID, l.localTag), ep: l.ep, st: c.st, peer: l.peer.Addr().Unmap(),
			transport: l.transport, dest: l.dest(), inviteCSeq: l.inviteCSeq}
		for tag, raw := range br.acks {
			t.acks = append(t.acks, tombAck{tag: tag, raw: raw})
		}
		out = append(out, t)
	}
	// The legs a local transfer took out of the call (transfer.go): BYEd
	// already; a BYE of theirs crossing it still gets its 200.
	for _, l := range c.detached[c.detachedBuried:] {
		out = append(out, &tomb{key: dialogKey(l.callID, l.localTag), ep: l.ep, st: c.st, peer: l.peer.Addr().Unmap(),
			transport: l.transport, dest: l.dest(), inviteCSeq: l.inviteCSeq})
	}
	c.detachedBuried = len(c.detached)
	return out
}

// bury replaces the call's settled dialogs in the call table by tombs,
// forgotten after lingerFor. The call itself is then referenced by nothing
// of the SBC's once every branch is settled. Never under c.mu.
func (c *call) bury() {
	c.mu.Lock()
	tombs := c.tombsLocked()
	c.mu.Unlock()
	if len(tombs) == 0 {
		return
	}
	c.s.calls.bury(tombs, time.Duration(lingerFor.Load()))
}

// lateRequest answers an in-dialog request (not ACK) for the dialog of an
// ended call: 200 to a BYE (crossed, or retransmitted after its
// transaction ended), 481 to anything else.
func (s *SBC) lateRequest(ep *endpoint, p peer, t *tomb, req *sip.Request, tx sip.ServerTransaction) {
	if t.ep != ep {
		s.act(ep, p, req, tx, answer(stageDialog, reasonNoDialog, 481, "Call/Transaction Does Not Exist"))
		return
	}
	if !t.sentBy(p) {
		s.act(ep, p, req, tx, answer(stageDialog, reasonNotDialogPeer, 481, "Call/Transaction Does Not Exist"))
		return
	}
	if req.Method == sip.BYE {
		s.reject(ep, req, tx, 200, "OK")
		return
	}
	// Not a stray, just late. An answer, not a drop.
	s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist")
}

// lateAck absorbs an ACK for the dialog of an ended call (one a BYE
// overtook, or a retransmission): nothing to do, and not a stray.
func (s *SBC) lateAck(ep *endpoint, p peer, t *tomb, req *sip.Request) {
	switch {
	case t.ep != ep:
		s.act(ep, p, req, nil, silent(stageDialog, reasonStrayACK))
	case !t.sentBy(p):
		s.act(ep, p, req, nil, silent(stageDialog, reasonNotDialogPeer))
	}
}

// retransmitted2xx handles a 2xx to one of the SBC's INVITEs that came
// outside the reader of its transaction: a retransmission (sipgo's
// OnRetransmission hook, while the client transaction lives), or one
// that came after the transaction ended (a stray response: the
// transaction is ended once the call is confirmed). A live call gets it
// as its branch's response; a tomb answers it itself. p is the sender as
// classified, or nil when sipgo matched the response to a transaction of
// ours (the hook). It reports whether the response was a 2xx to an
// INVITE of a call, live or buried.
func (s *SBC) retransmitted2xx(ep *endpoint, p *peer, res *sip.Response) bool {
	cs, from, to, cid := res.CSeq(), res.From(), res.To(), res.CallID()
	if !res.IsSuccess() || cs == nil || cs.MethodName != sip.INVITE || from == nil || to == nil || cid == nil {
		return false
	}
	r := s.calls.lookup(cid.Value(), tagOf(from.Params))
	switch {
	case r.c != nil:
		if r.l == r.c.a || r.l.ep != ep || (p != nil && !r.c.sentBy(r.l, *p)) {
			return false
		}
		r.c.mu.Lock()
		br := r.c.branchOf(r.l, cs.SeqNo)
		r.c.mu.Unlock()
		if br == nil {
			return false
		}
		r.c.post(event{kind: evBResponse, br: br, res: res})
		return true
	case r.t != nil:
		t := r.t
		if t.a || t.ep != ep || cs.SeqNo != t.inviteCSeq || (p != nil && !t.sentBy(*p)) {
			return false
		}
		t.answer2xx(s, res)
		return true
	}
	return false
}

// branchOf is the branch whose INVITE was sent on leg l's dialog with
// CSeq cseq (a digest retry is a branch of its own in the same dialog).
// Under c.mu.
func (c *call) branchOf(l *leg, cseq uint32) *branch {
	for _, br := range c.branches {
		if br.leg.callID == l.callID && br.leg.localTag == l.localTag && br.leg.inviteCSeq == cseq {
			return br
		}
	}
	return nil
}

// answer2xx answers a late 2xx on a buried B-leg: the dialog's ACK again
// when the call acknowledged it, else (a fork the call never heard of)
// an ACK and a BYE built from the response.
func (t *tomb) answer2xx(s *SBC, res *sip.Response) {
	tag := tagOf(res.To().Params)
	for _, a := range t.acks {
		if a.tag != tag {
			continue
		}
		ack := parseRequest(a.raw)
		if ack == nil {
			return
		}
		if err := t.ep.write(ack, t.transport, t.dest); err != nil {
			s.log.Warn("ACK of an ended call not resent", "error", err.Error())
			s.drop(stageBridge, reasonSendFailed)
		}
		return
	}
	ua := t.st.pol.Server.UserAgent
	d := &leg{
		name: "b", ep: t.ep, transport: t.transport, peer: t.dest,
		callID: res.CallID().Value(), localTag: tagOf(res.From().Params),
		localURI: res.From().Address, localName: res.From().DisplayName,
		remoteURI: res.To().Address, remoteName: res.To().DisplayName,
		inviteCSeq: t.inviteCSeq, remoteTag: tag, routes: recordRoutes(res, true),
	}
	if ct := res.Contact(); ct != nil {
		d.target = *ct.Address.Clone()
	} else {
		d.target = *res.To().Address.Clone()
	}
	d.cseq.Store(t.inviteCSeq)
	ack := d.newRequest(sip.ACK, t.inviteCSeq, ua)
	ack.SetBody(nil)
	bye := d.newRequest(sip.BYE, 0, ua)
	bye.SetBody(nil)
	dest := d.dest()
	if err := t.ep.write(ack, t.transport, dest); err != nil {
		s.log.Warn("ACK of a late 2xx not sent", "error", err.Error())
		s.drop(stageBridge, reasonSendFailed)
		return
	}
	s.hangups.Add(1)
	t.ep.doAsync(bye, t.transport, dest, func(_ *sip.Response, err error) {
		defer s.hangups.Add(-1)
		if err != nil {
			s.log.Warn("BYE of a late 2xx not answered", "error", err.Error())
		}
	})
}
