package sbc

import (
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
)

// Stage 6, watch: final responses and failures feed the failure tracker
// (auto-block with escalation, demotion, trust). Drops are counted and
// logged by act (verdict.go).

// fail records failure f of a source and acts on the tracker's decision:
// block (blocklist entry, with f as its reason), or log "would block".
func (s *SBC) fail(src netip.Addr, f failure, trunk bool) {
	if !s.state.Load().pol.AutoBlock.Enabled {
		return
	}
	now := time.Now()
	dec := s.def.tracker.Fail(acl.SourceKey(src), string(f), now, trunk)
	switch {
	case dec.Block && !dec.AlreadyBlocked:
		err := s.def.blocklist.Add(acl.Entry{
			Prefix: dec.Prefix, Reason: string(f), Origin: acl.OriginAuto,
			Created: now, Expires: dec.Until,
		})
		if err != nil {
			s.log.Warn("auto-block refused", "prefix", dec.Prefix.String(), "reason", string(f), "error", err.Error())
			return
		}
		s.metrics.Blocks.WithLabelValues(blockOriginAuto, string(f)).Inc()
		s.log.Warn("source blocked", "decision", dec)
	case dec.WouldBlock && !dec.AlreadyBlocked:
		s.metrics.Blocks.WithLabelValues(blockOriginObserve, string(f)).Inc()
		s.log.Warn("source would be blocked (observe mode)", "decision", dec)
	}
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
			f := failAuth
			if req.Method == sip.REGISTER {
				f = failRegisterBrute
			}
			s.fail(src.Addr(), f, trunk)
		}
	case res.StatusCode == 403:
		s.fail(src.Addr(), failBackend403, trunk)
	case res.StatusCode == 404:
		s.fail(src.Addr(), failBackend404, trunk)
	}
}
