package sbc

import (
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/ratelimit"
)

// Stage 3, admit: per-source and per-trunk call rates, concurrent-call
// caps and the REGISTER rate. Over a limit: 503 + Retry-After (or a drop,
// per policy), never an unbounded queue.

// admitInvite is stage 3 for a new call: per-source and per-trunk call
// rates, then the trunk's concurrent-call cap. It returns the release of
// the call slot, or ok=false when the request was answered or dropped.
func (s *SBC) admitInvite(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) (release func(), ok bool) {
	now := time.Now()
	key := acl.SourceKey(p.src.Addr())
	budget := s.def.tracker.Budget(key, now)
	if ok, wait := s.def.invites.Check(key, now, 1, budget); !ok {
		s.overLimit(ep, st, p, req, tx, "source_cps", wait)
		return nil, false
	}
	if ok, wait := s.def.invites.CheckTrunk(p.trunk.Name, now, 1); !ok {
		s.overLimit(ep, st, p, req, tx, "trunk_cps", wait)
		return nil, false
	}
	release, ok = s.def.calls.Acquire(p.trunk.Name)
	if !ok {
		s.overLimit(ep, st, p, req, tx, "trunk_calls", time.Second)
		return nil, false
	}
	return release, true
}

// admitRegister is stage 3 for REGISTER.
func (s *SBC) admitRegister(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) bool {
	now := time.Now()
	key := acl.SourceKey(p.src.Addr())
	if ok, wait := s.def.registers.Check(key, now, 1, s.def.tracker.Budget(key, now)); !ok {
		s.overLimit(ep, st, p, req, tx, "register_rate", wait)
		return false
	}
	return true
}

// overLimit answers 503 + Retry-After, or drops, per policy.
func (s *SBC) overLimit(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction, reason string, wait time.Duration) {
	s.drop("admit", reason)
	s.dropLog("admit", reason, p.src, "method", string(req.Method))
	if st.pol.Limits.OverLimitAction == "drop" {
		tx.Terminate()
		return
	}
	secs := ratelimit.RetryAfterSeconds(wait)
	if secs < 1 {
		secs = 1
	}
	s.reject(ep, req, tx, 503, "Service Unavailable", nil, sip.NewHeader("Retry-After", strconv.Itoa(secs)))
}
