package sbc

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// The pipeline: every request that survived the read filter and sipgo's
// parser enters handle, and goes through the stages in order:
//
//	1 classify (classify.go)  which trunk or backend sent it; unknown → drop/403
//	2 validate                RFC 3261 sanity the parser lacks (issue: edge defence)
//	3 admit                   rate limits and call caps (issue: edge defence)
//	4 route (route.go)        trunk + request-URI → pool → target
//	5 bridge (call.go, dialog.go)  the two legs of the call
//	6 watch                   metrics, logs, failure tracking

func (s *SBC) registerHandlers(ep *endpoint) {
	h := func(req *sip.Request, tx sip.ServerTransaction) { s.handle(ep, req, tx) }
	for _, m := range []sip.RequestMethod{sip.INVITE, sip.BYE, sip.CANCEL, sip.OPTIONS,
		sip.INFO, sip.MESSAGE, sip.NOTIFY, sip.REFER, sip.PRACK, sip.UPDATE,
		sip.SUBSCRIBE, sip.REGISTER, sip.PUBLISH} {
		ep.srv.OnRequest(m, h)
	}
	ep.srv.OnNoRoute(h)
	ep.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		ep.countRequest("ACK")
		src, err := netip.ParseAddrPort(req.Source())
		if err != nil {
			s.act(ep, peer{}, req, nil, silent(stageClassify, reasonBadSource).with("source_raw", req.Source()))
			return
		}
		if s.blockedOnConn(req.Transport(), src) {
			s.act(ep, peer{src: src}, req, nil, silent(stageStream, reasonBlocked))
			return
		}
		// An ACK belongs to a call: classified with the call's snapshot.
		c, from := s.findDialog(req)
		var tb *tomb
		st := s.state.Load()
		if c != nil {
			st = c.st
		} else if tb = s.findTomb(req); tb != nil {
			st = tb.st
		}
		p := s.classify(st, ep, src, req.Transport())
		if p.trunk == nil && !p.backend {
			// Counted and logged, not charged: an ACK is never answered.
			s.act(ep, p, req, nil, silent(stageClassify, reasonUnknownSource))
			return
		}
		if tb != nil {
			s.lateAck(ep, p, tb, req)
			return
		}
		s.onAck(ep, p, c, from, req)
	})
}

// blockedOnConn reports whether a message that came over a connection
// (TCP, TLS, WSS) is from a source blocked since: the per-message check
// of open connections. sipgo reads ahead of the handlers, so messages
// read before the block landed (and before watchBlocks closed the
// connection) reach here; they are dropped, not handled. A datagram was
// checked by the read filter moments ago.
func (s *SBC) blockedOnConn(transport string, src netip.AddrPort) bool {
	if strings.EqualFold(transport, "udp") {
		return false
	}
	return s.def.blocklist.Blocked(src.Addr().Unmap())
}

// strayResponse is stage 1 for a response that matches no transaction
// of the SBC (sipgo's unhandled-response hook, which by default wrote an
// INFO line per response): a retransmission that came after its
// transaction ended, or junk. It is dropped and counted; from an unknown
// source it is charged like an unknown source's request (over UDP in
// drop mode it never gets this far: the read filter drops it).
func (ep *endpoint) strayResponse(res *sip.Response) {
	s := ep.sbc
	src, err := netip.ParseAddrPort(res.Source())
	if err != nil {
		s.act(ep, peer{}, nil, nil, silent(stageClassify, reasonBadSource).with("source_raw", res.Source()))
		return
	}
	if s.blockedOnConn(res.Transport(), src) {
		s.act(ep, peer{src: src}, nil, nil, silent(stageStream, reasonBlocked))
		return
	}
	p := s.classify(s.state.Load(), ep, src, res.Transport())
	attrs := []any{"status", res.StatusCode}
	if cs := res.CSeq(); cs != nil {
		attrs = append(attrs, "cseq_method", string(cs.MethodName))
	}
	switch {
	case p.why != "":
		// A trunk's address without its certificate: not charged (see
		// classifyRequest).
		s.act(ep, p, nil, nil, silent(stageClassify, p.why).with(attrs...))
	case p.trunk == nil && !p.backend:
		s.act(ep, p, nil, nil, silent(stageClassify, reasonUnknownSource).charge(failUnknownSource).with(attrs...))
	case s.retransmitted2xx(ep, &p, res):
		// A 2xx to an INVITE of a call whose transaction is over: the
		// call (or its tomb) answered it.
	default:
		s.act(ep, p, nil, nil, silent(stageDialog, reasonStrayResponse).with(attrs...))
	}
}

// handle is the entry of every request except ACK. Each stage returns a
// verdict; act carries out the first that stops the request.
func (s *SBC) handle(ep *endpoint, req *sip.Request, tx sip.ServerTransaction) {
	ep.countRequest(string(req.Method))
	st := s.state.Load()
	if src, err := netip.ParseAddrPort(req.Source()); err == nil && s.blockedOnConn(req.Transport(), src) {
		s.act(ep, peer{src: src}, req, tx, silent(stageStream, reasonBlocked))
		return
	}

	// In-dialog requests are matched to their call first and classified
	// with the snapshot the call started with: a reload that changes a
	// trunk's sources does not orphan its calls.
	var c *call
	var from *leg
	var tb *tomb
	inDialog := req.To() != nil && tagOf(req.To().Params) != ""
	if inDialog {
		if c, from = s.findDialog(req); c != nil {
			st = c.st
		} else if tb = s.findTomb(req); tb != nil {
			st = tb.st
		}
	}

	// 1 classify
	p, v := s.classifyRequest(st, ep, req)
	if !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}

	// 2 validate
	if v := s.validateRequest(req); !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}

	// In-dialog requests go to their call.
	if inDialog {
		if tb != nil {
			s.lateRequest(ep, p, tb, req, tx)
			return
		}
		s.inDialog(ep, p, c, from, req, tx)
		return
	}

	switch req.Method {
	case sip.INVITE:
		if cid := req.CallID(); cid != nil && s.calls.isALeg(cid.Value(), topBranch(req)) {
			// A retransmission of the INVITE of a call in progress or
			// just ended, once its server transaction is gone (ended
			// when the call was confirmed): the call has it already.
			s.act(ep, p, req, tx, silent(stageDialog, reasonInviteRetransmission))
			return
		}
		if p.trunk == nil && isToken(req.Recipient.User) {
			// A call from a backend to a registered user's device
			// (regcall.go).
			s.newUserCall(ep, st, p, req, tx)
			return
		}
		if p.trunk == nil {
			// A call from a backend: to carriers, by the outbound
			// routes (outbound.go), under the outbound caps.
			release, v := s.admitOutbound(st, p, req.Recipient.User)
			if !v.pass() {
				s.act(ep, p, req, tx, v)
				return
			}
			s.newOutboundCall(ep, st, p, req, tx, release)
			return
		}
		// 3 admit
		release, v := s.admitInvite(st, p)
		if !v.pass() {
			s.act(ep, p, req, tx, v)
			return
		}
		// 4 route + 5 bridge
		s.newCall(ep, st, p, req, tx, release)
	case sip.OPTIONS:
		s.answerOptions(req, tx)
	case sip.REGISTER:
		if !registerAllowed(p.trunk, req) {
			s.act(ep, p, req, tx, answer(stageRoute, reasonRegisterDenied, 403, "Forbidden").
				charge(failRegisterDenied).with("domain", req.Recipient.Host))
			return
		}
		if v := s.admitRegister(st, p); !v.pass() {
			s.act(ep, p, req, tx, v)
			return
		}
		if ep.detach(req, tx) {
			// The relay waits for the registrar's answer, which a UDP
			// read loop may have to read: not in one.
			go func() {
				s.relayRegister(ep, st, p, req, tx)
				endDetached(tx)
			}()
			return
		}
		s.relayRegister(ep, st, p, req, tx)
	case sip.CANCEL:
		// A CANCEL matching a transaction never reaches here.
		s.act(ep, p, req, tx, answer(stageDialog, reasonNoTransaction, 481, "Call/Transaction Does Not Exist"))
	case sip.BYE, sip.PRACK, sip.UPDATE, sip.INFO, sip.NOTIFY:
		s.act(ep, p, req, tx, answer(stageDialog, reasonNoDialog, 481, "Call/Transaction Does Not Exist"))
	default:
		s.act(ep, p, req, tx, answer(stageRoute, reasonMethodNotAllowed, 405, "Method Not Allowed",
			sip.NewHeader("Allow", allowMethods)))
	}
}

const allowMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY, MESSAGE"

// answerOptions answers an out-of-dialog OPTIONS addressed to the SBC
// (keepalives and capability queries) itself.
func (s *SBC) answerOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", allowMethods))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	res.AppendHeader(sip.NewHeader("Supported", "100rel, timer, replaces"))
	res.AppendHeader(sip.NewHeader("Server", s.state.Load().pol.Server.UserAgent))
	res.SetBody(nil)
	_ = tx.Respond(res)
}

// topBranch is the branch parameter of a request's top Via ("" if none).
func topBranch(req *sip.Request) string {
	v := req.Via()
	if v == nil || v.Params == nil {
		return ""
	}
	b, _ := v.Params.Get("branch")
	return b
}
