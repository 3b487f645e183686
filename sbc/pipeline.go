package sbc

import (
	"github.com/sbc-project/sbc/ratelimit"
	"net/netip"

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
		s.metrics.Requests.WithLabelValues(ep.name, "ACK").Inc()
		src, err := netip.ParseAddrPort(req.Source())
		if err != nil {
			s.drop("classify", "bad_source")
			return
		}
		// An ACK belongs to a call: classified with the call's snapshot.
		c, from := s.findDialog(req)
		st := s.state.Load()
		if c != nil {
			st = c.st
		}
		if p := s.classify(st, ep, src); p.trunk == nil && !p.backend {
			s.drop("classify", "unknown_source")
			s.dropLog("classify", "unknown_source", src, "method", "ACK")
			return
		}
		s.onAck(ep, c, from, req)
	})
}

// handle is the entry of every request except ACK.
func (s *SBC) handle(ep *endpoint, req *sip.Request, tx sip.ServerTransaction) {
	s.metrics.Requests.WithLabelValues(ep.name, methodLabel(string(req.Method))).Inc()
	st := s.state.Load()

	// In-dialog requests are matched to their call first and classified
	// with the snapshot the call started with: a reload that changes a
	// trunk's sources does not orphan its calls.
	var c *call
	var from *leg
	inDialog := req.To() != nil && tagOf(req.To().Params) != ""
	if inDialog {
		if c, from = s.findDialog(req); c != nil {
			st = c.st
		}
	}

	// 1 classify
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		s.drop("classify", "bad_source")
		tx.Terminate()
		return
	}
	p := s.classify(st, ep, src)
	if pattern, scan := s.scanner(req); scan && !p.backend {
		// Known scanner: never answered, whoever it claims to be.
		s.drop("classify", "scanner_ua")
		s.dropLog("classify", "scanner_ua", src, "pattern", pattern)
		s.fail(src.Addr(), ratelimit.ReasonScannerUA, p.trunk != nil)
		tx.Terminate()
		return
	}
	if p.trunk == nil && !p.backend {
		s.drop("classify", "unknown_source")
		s.dropLog("classify", "unknown_source", src, "method", string(req.Method))
		s.fail(src.Addr(), ratelimit.ReasonUnknownSource, false)
		if st.pol.Headers.UnknownSourceAction == "reject" {
			s.reject(ep, req, tx, 403, "Forbidden")
		} else {
			// Silent: not even the automatic 100 Trying goes out.
			tx.Terminate()
		}
		return
	}

	// 2 validate
	if !s.validateRequest(ep, p, req, tx) {
		return
	}

	// In-dialog requests go to their call.
	if inDialog {
		s.inDialog(ep, c, from, req, tx)
		return
	}

	switch req.Method {
	case sip.INVITE:
		if p.trunk == nil {
			// Calls from the backends to carriers are not routed (yet).
			s.drop("route", "no_outbound_route")
			s.dropLog("route", "no_outbound_route", src, "ruri_user", req.Recipient.User)
			s.reject(ep, req, tx, 403, "Forbidden")
			return
		}
		// 3 admit
		release, ok := s.admitInvite(ep, st, p, req, tx)
		if !ok {
			return
		}
		// 4 route + 5 bridge
		s.newCall(ep, st, p, req, tx, release)
	case sip.OPTIONS:
		s.answerOptions(req, tx)
	case sip.REGISTER:
		if !registerAllowed(p.trunk, req) {
			s.drop("route", "register_not_allowed")
			s.dropLog("route", "register_not_allowed", src, "domain", req.Recipient.Host)
			s.fail(src.Addr(), "register_not_allowed", p.trunk != nil)
			s.reject(ep, req, tx, 403, "Forbidden")
			return
		}
		if !s.admitRegister(ep, st, p, req, tx) {
			return
		}
		s.relayRegister(ep, st, p, req, tx)
	case sip.CANCEL:
		// A CANCEL matching a transaction never reaches here.
		s.drop("dialog", "no_transaction")
		s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist")
	case sip.BYE, sip.PRACK, sip.UPDATE, sip.INFO, sip.NOTIFY:
		s.drop("dialog", "no_dialog")
		s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist")
	default:
		s.drop("route", "method_not_allowed")
		s.reject(ep, req, tx, 405, "Method Not Allowed", sip.NewHeader("Allow", allowMethods))
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

// reject answers a request with an SBC-generated final response.
func (s *SBC) reject(ep *endpoint, req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(sip.NewHeader("Server", s.state.Load().pol.Server.UserAgent))
	res.SetBody(nil)
	if err := tx.Respond(res); err != nil {
		s.log.Warn("response not sent", "realm", ep.name, "code", code, "error", err.Error())
		s.drop("bridge", "send_failed")
	}
}
