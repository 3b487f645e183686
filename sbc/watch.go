package sbc

import (
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/ratelimit"
)

// Stage 6, watch: final responses and failures feed the failure tracker
// (auto-block with escalation, demotion, trust); drops are logged, rate
// limited.

// fail records a failure of a source and acts on the tracker's decision:
// block (blocklist entry, with its reason), or log "would block".
func (s *SBC) fail(src netip.Addr, reason string, trunk bool) {
	if !s.state.Load().pol.AutoBlock.Enabled {
		return
	}
	now := time.Now()
	dec := s.def.tracker.Fail(acl.SourceKey(src), reason, now, trunk)
	switch {
	case dec.Block && !dec.AlreadyBlocked:
		err := s.def.blocklist.Add(acl.Entry{
			Prefix: dec.Prefix, Reason: dec.Reason, Origin: acl.OriginAuto,
			Created: now, Expires: dec.Until,
		})
		if err != nil {
			s.log.Warn("auto-block refused", "prefix", dec.Prefix.String(), "reason", dec.Reason, "error", err.Error())
			return
		}
		s.metrics.Blocks.WithLabelValues("auto", dec.Reason).Inc()
		s.log.Warn("source blocked", "decision", dec)
	case dec.WouldBlock && !dec.AlreadyBlocked:
		s.metrics.Blocks.WithLabelValues("observe", dec.Reason).Inc()
		s.log.Warn("source would be blocked (observe mode)", "decision", dec)
	}
}

// dropLog writes one line about a drop, rate limited.
func (s *SBC) dropLog(stage, reason string, src netip.AddrPort, attrs ...any) {
	if !s.def.logLimit.Allow() {
		return
	}
	s.log.Info("dropped", append([]any{"stage", stage, "reason", reason, "source", src.String()}, attrs...)...)
}

// watchResponse is stage 6 for a final response the backend gave to a
// request of source src: authentication failures and 403/404 answers
// count against the source; successes earn it trust.
func (s *SBC) watchResponse(src netip.AddrPort, trunk bool, req *sip.Request, res *sip.Response) {
	switch {
	case res.IsSuccess():
		if req.Method == sip.INVITE || req.Method == sip.REGISTER {
			key := acl.SourceKey(src.Addr())
			s.def.tracker.Success(key, time.Now())
			s.def.invites.Protect(key)
		}
	case res.StatusCode == 401 || res.StatusCode == 407:
		// The first challenge is normal; a challenge to a request that
		// carried credentials is a failed attempt.
		if req.GetHeader("Authorization") != nil || req.GetHeader("Proxy-Authorization") != nil {
			reason := ratelimit.ReasonAuthFailure
			if req.Method == sip.REGISTER {
				reason = ratelimit.ReasonRegisterBruteforce
			}
			s.fail(src.Addr(), reason, trunk)
		}
	case res.StatusCode == 403:
		s.fail(src.Addr(), "backend_403", trunk)
	case res.StatusCode == 404:
		s.fail(src.Addr(), "backend_404", trunk)
	}
}
