package sbc

import (
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
)

// Stage 6, watch: final responses and failures feed the failure tracker
// (auto-block with escalation, trust) and the trunk health figures. What
// may be charged to whom is the trust model (trust.go). Drops are counted
// and logged by act (verdict.go).

// fail records failure f of a source that is no trunk's, no pool target
// and no learnt peer (charge decides that), and acts on the tracker's
// decision: block (blocklist entry, with f as its reason), or log "would
// block".
func (s *SBC) fail(src netip.Addr, f failure) {
	if !s.state.Load().pol.AutoBlock.Enabled {
		return
	}
	s.decided(s.def.tracker.Fail(acl.SourceKey(src), string(f), time.Now()), f)
}

// decided acts on a tracker decision for failure f.
func (s *SBC) decided(dec ratelimit.Decision, f failure, attrs ...any) {
	switch {
	case dec.AlreadyBlocked:
	case dec.Block:
		s.block(dec, f, attrs...)
	case dec.WouldBlock:
		s.metrics.Blocks.WithLabelValues(blockOriginObserve, string(f)).Inc()
		s.log.Warn("source would be blocked (observe mode)", append([]any{"decision", dec}, attrs...)...)
	}
}

// watchResponse is stage 6 for the final response a backend gave to a
// call of trunk tr from source src. A success earns the source trust; the
// failures (403, 404, a challenge to credentials) are the caller's, not
// the carrier's: they are counted for the trunk, never charged.
func (s *SBC) watchResponse(tr *policy.Trunk, src netip.AddrPort, req *sip.Request, res *sip.Response) {
	switch {
	case res.IsSuccess():
		key := acl.SourceKey(src.Addr())
		s.def.tracker.Success(key, time.Now())
		s.def.invites.Protect(key)
	case tr == nil:
	case res.StatusCode == 401 || res.StatusCode == 407:
		// The first challenge is normal; a challenge to a request that
		// carried credentials is a failed attempt.
		if req.GetHeader("Authorization") != nil || req.GetHeader("Proxy-Authorization") != nil {
			s.trunkFailure(tr.Name, failAuth)
		}
	case res.StatusCode == 403:
		s.trunkFailure(tr.Name, failBackend403)
	case res.StatusCode == 404:
		s.trunkFailure(tr.Name, failBackend404)
	}
}
