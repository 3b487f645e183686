package sbc

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Backend health: each target's up/down state, kept across reloads, and
// the OPTIONS pings (healthLoop) that move it.

// target is one backend with its health. It outlives policy snapshots: a
// reload that keeps the same pool+address keeps its health state.
type target struct {
	pool string
	addr netip.AddrPort
	// drained: no new calls (admin API); kept across reloads with the
	// target.
	drained atomic.Bool

	mu       sync.Mutex
	up       bool
	okRun    int // consecutive successes
	failRun  int // consecutive failures
	lastSeen time.Time
}

func (t *target) isUp() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.up
}

// observe records one health-check outcome and reports whether the up/down
// state changed.
func (t *target) observe(ok bool, h policy.Health) (changed, up bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		t.okRun++
		t.failRun = 0
		t.lastSeen = time.Now()
		if !t.up && t.okRun >= h.Up {
			t.up = true
			return true, true
		}
	} else {
		t.failRun++
		t.okRun = 0
		if t.up && t.failRun >= h.Down {
			t.up = false
			return true, false
		}
	}
	return false, t.up
}

// passive records what a call learned about a target. ok: the target
// answered an INVITE with some response, any response: it is alive, and a
// target marked down is up again at once (without waiting for h.Up
// answered pings). !ok: an INVITE got no response within the routing
// target_timeout; that is one failure like an unanswered ping, and h.Down
// failures in a row, pings and calls together, take the target down. With
// health checks off (interval 0) targets are always up and a failure is
// not recorded: no ping would ever bring the target back.
func (t *target) passive(ok bool, h policy.Health) (changed, up bool) {
	if !ok {
		if h.Interval.Duration <= 0 {
			return false, t.isUp()
		}
		return t.observe(false, h)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.okRun++
	t.failRun = 0
	t.lastSeen = time.Now()
	if !t.up {
		t.up = true
		return true, true
	}
	return false, true
}

// passiveHealth is the call core's hook into target health: ok when a
// target answered an INVITE (any response), !ok when it gave none within
// target_timeout (see target.passive). A change of state is logged and
// shown in sbc_target_up like one a ping made.
func (s *SBC) passiveHealth(pl *pool, tg *target, ok bool) {
	if pl.binding || pl.hairpin {
		return
	}
	changed, up := tg.passive(ok, pl.cfg.Health)
	if !changed {
		return
	}
	s.metrics.TargetUp.WithLabelValues(pl.cfg.Name, tg.addr.String()).Set(boolGauge(up))
	reason := "answered a call"
	if !ok {
		reason = "no answer to INVITE"
	}
	s.log.Warn("backend target health changed", "pool", pl.cfg.Name, "target", tg.addr.String(), "up", up, "reason", reason)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// healthLoop pings every target of every pool with OPTIONS at the pool's
// interval until ctx ends. It re-reads the pools on every round so reloads
// take effect.
func (s *SBC) healthLoop(ctx context.Context) {
	const tick = 250 * time.Millisecond
	next := map[*target]time.Time{}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		now := time.Now()
		st := s.state.Load()
		live := map[*target]bool{}
		for _, pl := range st.pools {
			h := pl.cfg.Health
			if h.Interval.Duration <= 0 {
				continue
			}
			for _, tg := range pl.targets {
				live[tg] = true
				if now.Before(next[tg]) {
					continue
				}
				next[tg] = now.Add(h.Interval.Duration)
				go s.ping(ctx, pl, tg)
			}
		}
		for tg := range next {
			if !live[tg] {
				delete(next, tg) // removed by a reload
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping sends one OPTIONS to a target and records the outcome. Any final
// response means alive, whatever its code: a backend that handles calls
// but answers OPTIONS 404, 405 or 503 (RFC 3261 21.5.4: overloaded, which
// a call to it would tell anyway, and then fail over) is up. Only no
// answer within the timeout, or a transport error, counts as a failure.
func (s *SBC) ping(ctx context.Context, pl *pool, tg *target) {
	ep := s.realms[pl.cfg.Realm]
	if ep == nil {
		return
	}
	face := ep.face(pl.cfg.Transport)
	ctx, cancel := context.WithTimeout(ctx, pl.cfg.Health.Timeout.Duration)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", Host: tg.addr.Addr().String(), Port: int(tg.addr.Port())}
	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(face.Via())
	from := &sip.FromHeader{Address: face.URI("sbc"), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: uri, Params: sip.NewParams()})
	cid := sip.CallIDHeader(newID())
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", s.state.Load().pol.Server.UserAgent))
	req.SetBody(nil)
	res, err := ep.do(ctx, req, pl.cfg.Transport, tg.addr)
	changed, up := tg.observe(err == nil, pl.cfg.Health)
	s.metrics.TargetUp.WithLabelValues(pl.cfg.Name, tg.addr.String()).Set(boolGauge(up))
	if changed {
		reason := ""
		if err != nil {
			reason = err.Error()
		} else {
			reason = "options answered " + strconv.Itoa(res.StatusCode)
		}
		s.log.Warn("backend target health changed", "pool", pl.cfg.Name, "target", tg.addr.String(), "up", up, "reason", reason)
	}
}
