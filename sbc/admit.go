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

// admitInvite is stage 3 for a new call (see admitCall): the release of
// its call slot, or the verdict on a call over a limit.
func (s *SBC) admitInvite(st *snapshot, p peer) (release func(), v verdict) {
	// A draining node and a disabled trunk take no new calls (admin API):
	// always answered, so the caller tries elsewhere at once.
	if r := s.closedFor(p); r != "" {
		return nil, answer(stageAdmit, r, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(max(st.pol.Routing.RetryAfter, 1))))
	}
	release, r, wait := s.admitCall(p, time.Now())
	if r != "" {
		return nil, overLimit(st, r, wait)
	}
	if p.trunk != nil {
		s.runtime.meter(p.trunk.Name).add(time.Now())
	}
	return release, verdict{}
}

// closedFor says why the node takes no new call from p: it drains, or
// p's trunk is disabled; "" if it takes them.
func (s *SBC) closedFor(p peer) reason {
	if s.runtime.drain.Load() != nil {
		return reasonDraining
	}
	if p.trunk != nil && s.runtime.trunkDisabled(p.trunk.Name) {
		return reasonTrunkDisabled
	}
	return ""
}

// admitCall decides on a new call: the release of its call slot, or the
// reason of the refusal and how long the caller should wait.
//
// A trunk's calls are limited by the trunk's own cps and max_calls only. A
// trunk is many callers behind one or a few addresses (a carrier's
// switches, a PBX), so a per-source rate would cap a busy trunk at
// source_cps calls per second whatever its cps says. The per-source rate
// (source_cps, scaled by the source's trust) is for sources that are not
// trunks.
func (s *SBC) admitCall(p peer, now time.Time) (release func(), r reason, wait time.Duration) {
	if p.trunk == nil {
		key := acl.SourceKey(p.src.Addr())
		if ok, wait := s.def.invites.Check(key, now, 1, s.def.tracker.Budget(key, now)); !ok {
			return nil, reasonSourceCPS, wait
		}
		return func() {}, "", 0
	}
	if ok, wait := s.def.invites.CheckTrunk(p.trunk.Name, now, 1); !ok {
		return nil, reasonTrunkCPS, wait
	}
	release, ok := s.def.calls.Acquire(p.trunk.Name)
	if !ok {
		return nil, reasonTrunkCalls, time.Second
	}
	return release, "", 0
}

// admitRegister is stage 3 for REGISTER.
func (s *SBC) admitRegister(st *snapshot, p peer) verdict {
	now := time.Now()
	key := acl.SourceKey(p.src.Addr())
	if ok, wait := s.def.registers.Check(key, now, 1, s.def.tracker.Budget(key, now)); !ok {
		return overLimit(st, reasonRegisterRate, wait)
	}
	return verdict{}
}

// overLimit is the verdict on a request over a limit: 503 + Retry-After,
// or a silent drop, per policy (limits.over_limit_action).
func overLimit(st *snapshot, r reason, wait time.Duration) verdict {
	if st.pol.Limits.OverLimitAction == "drop" {
		return silent(stageAdmit, r)
	}
	secs := max(ratelimit.RetryAfterSeconds(wait), 1)
	return answer(stageAdmit, r, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(secs)))
}
