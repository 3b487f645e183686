package sbc

import (
	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/ratelimit"
	"github.com/sbc-project/sbc/sbc/validate"
)

// Stage 2, validate: RFC 3261 sanity the parser does not check
// (sbc/validate), for requests before they are handled and for responses
// before they are relayed.

// validateRequest is stage 2. It reports false when the request was
// answered or dropped.
func (s *SBC) validateRequest(ep *endpoint, p peer, req *sip.Request, tx sip.ServerTransaction) bool {
	r := validate.Request(req, s.def.valOpt)
	if r == nil {
		return true
	}
	s.drop("validate", r.Why)
	s.dropLog("validate", r.Why, p.src, "method", string(req.Method))
	s.fail(p.src.Addr(), ratelimit.ReasonMalformed, p.trunk != nil)
	if r.Drop {
		tx.Terminate()
		return false
	}
	var hdrs []sip.Header
	if r.Header != nil {
		hdrs = append(hdrs, r.Header)
	}
	s.reject(ep, req, tx, r.Code, r.Reason, hdrs...)
	return false
}

// validResponse drops invalid responses (from either side) before they
// are relayed.
func (s *SBC) validResponse(res *sip.Response) bool {
	if r := validate.Response(res, s.def.valOpt); r != nil {
		s.drop("validate", r.Why)
		return false
	}
	return true
}
