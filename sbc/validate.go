package sbc

import (
	"net/netip"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/sbc/validate"
)

// Stage 2, validate: RFC 3261 sanity the parser does not check
// (sbc/validate), for requests before they are handled and for responses
// before they are relayed. The reasons are sbc/validate's Why codes.

// validateRequest is stage 2: the verdict on an invalid request (the zero
// verdict when it is valid).
func (s *SBC) validateRequest(req *sip.Request) verdict {
	r := validate.Request(req, s.def.valOpt)
	if r == nil {
		return verdict{}
	}
	return validateVerdict(r)
}

// validateVerdict turns sbc/validate's result into a verdict: its code,
// phrase and extra header, or silence where no answer may be sent; the
// source is charged a malformed message either way.
func validateVerdict(r *validate.Result) verdict {
	v := verdict{stage: stageValidate, reason: reason(r.Why), code: r.Code, phrase: r.Reason,
		silent: r.Drop, fail: failMalformed}
	if r.Header != nil {
		v.hdrs = []sip.Header{r.Header}
	}
	return v
}

// validResponse drops invalid responses (from either side) before they
// are relayed. They are counted and logged, not charged to their source.
func (s *SBC) validResponse(res *sip.Response) bool {
	r := validate.Response(res, s.def.valOpt)
	if r == nil {
		return true
	}
	src, _ := netip.ParseAddrPort(res.Source())
	s.act(nil, peer{src: src}, nil, nil, silent(stageValidate, reason(r.Why)).with("status", res.StatusCode))
	return false
}
