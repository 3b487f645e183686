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

// admitInvite is stage 3 for a new call (see admitCall). It returns the
// release of the call slot, or ok=false when the request was answered or
// dropped.
func (s *SBC) admitInvite(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) (release func(), ok bool) {
	release, reason, wait := s.admitCall(p, time.Now())
	if reason != "" {
		s.overLimit(ep, st, p, req, tx, reason, wait)
		return nil, false
	}
	return release, true
}

// admitCall decides on a new call: the release of its call slot, or the
// reason code of the refusal and how long the caller should wait.
//
// A trunk's calls are limited by the trunk's own cps and max_calls only. A
// trunk is many callers behind one or a few addresses (a carrier's
// switches, a PBX), so a per-source rate would cap a busy trunk at
// source_cps calls per second whatever its cps says. The per-source rate
// (source_cps, scaled by the source's trust) is for sources that are not
// trunks.
func (s *SBC) admitCall(p peer, now time.Time) (release func(), reason string, wait time.Duration) {
	if p.trunk == nil {
		key := acl.SourceKey(p.src.Addr())
		if ok, wait := s.def.invites.Check(key, now, 1, s.def.tracker.Budget(key, now)); !ok {
			return nil, "source_cps", wait
		}
		return func() {}, "", 0
	}
	if ok, wait := s.def.invites.CheckTrunk(p.trunk.Name, now, 1); !ok {
		return nil, "trunk_cps", wait
	}
	release, ok := s.def.calls.Acquire(p.trunk.Name)
	if !ok {
		return nil, "trunk_calls", time.Second
	}
	return release, "", 0
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
	s.reject(ep, req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(secs)))
}
