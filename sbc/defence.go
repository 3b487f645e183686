package sbc

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
	"github.com/sbc-project/sbc/sbc/validate"
	"golang.org/x/time/rate"
)

// Edge defence: the read filter (before the parser), stages 2 validate,
// 3 admit and 6 watch. Every drop or reject has a stable reason code that
// is a label of sbc_dropped_total{stage,reason}, a field of a (rate
// limited) log line and, for blocks, the blocklist entry's reason.

// defence holds the edge-defence state that outlives policy snapshots:
// the blocklist, rate-limit buckets and failure counts survive a reload.
type defence struct {
	blocklist *acl.Blocklist
	pps       *ratelimit.Limiter // per-source datagrams before parsing
	invites   *ratelimit.Limiter // per-source and per-trunk INVITE rate
	registers *ratelimit.Limiter // per-source REGISTER rate
	calls     *ratelimit.Concurrency
	tracker   *ratelimit.Tracker
	scanner   atomic.Pointer[ratelimit.ScannerMatcher]
	valOpt    validate.Options
	statePath string
	logLimit  *rate.Limiter // drop log lines: a flood cannot fill the disk
}

func newDefence(p *policy.Policy, log *slog.Logger) (*defence, error) {
	d := &defence{logLimit: rate.NewLimiter(20, 50)}
	if p.Server.StateDir != "" {
		if err := os.MkdirAll(p.Server.StateDir, 0o750); err != nil {
			return nil, fmt.Errorf("state_dir: %w", err)
		}
		d.statePath = filepath.Join(p.Server.StateDir, "blocklist.json")
	}
	d.blocklist = acl.NewBlocklist(acl.Options{StatePath: d.statePath, Logger: log})
	if _, err := d.blocklist.SetNeverBlock(neverBlock(p)); err != nil {
		return nil, fmt.Errorf("never_block: %w", err)
	}
	if d.statePath != "" {
		n, err := d.blocklist.Load(d.statePath)
		switch {
		case err == nil:
			log.Info("blocklist loaded", "path", d.statePath, "entries", n)
		case errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, acl.ErrCorruptState):
			aside := d.statePath + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
			_ = os.Rename(d.statePath, aside)
			log.Error("blocklist state is corrupt; moved aside, starting empty", "path", d.statePath, "moved_to", aside, "error", err.Error())
		default:
			return nil, fmt.Errorf("blocklist: %w", err)
		}
	}
	var err error
	if d.pps, err = ratelimit.NewLimiter(ppsConfig(p)); err != nil {
		return nil, err
	}
	if d.invites, err = ratelimit.NewLimiter(inviteConfig(p)); err != nil {
		return nil, err
	}
	if d.registers, err = ratelimit.NewLimiter(registerConfig(p)); err != nil {
		return nil, err
	}
	d.calls = ratelimit.NewConcurrency(callCaps(p))
	if d.tracker, err = ratelimit.NewTracker(trackerConfig(p)); err != nil {
		return nil, err
	}
	if err := d.setScanner(p); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *defence) setScanner(p *policy.Policy) error {
	pats := p.AutoBlock.ScannerUserAgents
	if pats == nil {
		pats = ratelimit.DefaultScannerPatterns
	}
	m, err := ratelimit.NewScannerMatcher(pats)
	if err != nil {
		return fmt.Errorf("scanner_user_agents: %w", err)
	}
	d.scanner.Store(m)
	return nil
}

// neverBlock is the policy's list plus every pool target.
func neverBlock(p *policy.Policy) []netip.Prefix {
	out := append([]netip.Prefix{}, p.AutoBlock.NeverBlockPrefixes...)
	for _, pl := range p.Pools {
		for _, t := range pl.Targets {
			a := t.Addr.Addr().Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

func ppsConfig(p *policy.Policy) ratelimit.LimiterConfig {
	return ratelimit.LimiterConfig{
		Source:     ratelimit.Limit{Rate: float64(p.Limits.SourcePPS), Burst: p.Limits.SourcePPSBurst},
		MaxSources: p.Limits.MaxSources,
	}
}

func inviteConfig(p *policy.Policy) ratelimit.LimiterConfig {
	c := ratelimit.LimiterConfig{
		Source:     ratelimit.Limit{Rate: float64(p.Limits.SourceCPS), Burst: max(1, p.Limits.SourceCPS)},
		Trunks:     map[string]ratelimit.Limit{},
		MaxSources: p.Limits.MaxSources,
	}
	for _, t := range p.Trunks {
		if t.CPS > 0 {
			c.Trunks[t.Name] = ratelimit.Limit{Rate: float64(t.CPS), Burst: t.CPS}
		}
	}
	return c
}

func registerConfig(p *policy.Policy) ratelimit.LimiterConfig {
	return ratelimit.LimiterConfig{
		Source:     ratelimit.Limit{Rate: float64(p.Limits.RegisterRate), Burst: max(1, p.Limits.RegisterRate)},
		MaxSources: p.Limits.MaxSources,
	}
}

func callCaps(p *policy.Policy) map[string]int {
	m := map[string]int{}
	for _, t := range p.Trunks {
		if t.MaxCalls > 0 {
			m[t.Name] = t.MaxCalls
		}
	}
	return m
}

func trackerConfig(p *policy.Policy) ratelimit.TrackerConfig {
	a := p.AutoBlock
	return ratelimit.TrackerConfig{
		Threshold:   a.Threshold,
		Window:      a.Window.Duration,
		BlockFor:    a.BlockFor.Duration,
		Escalate:    float64(a.Escalation),
		MaxBlock:    a.MaxBlock.Duration,
		Decay:       a.ForgetAfter.Duration,
		NeverBlock:  neverBlock(p),
		BlockTrunks: a.BlockTrunks,
		Observe:     a.Observe,
		MaxSources:  p.Limits.MaxSources,
	}
}

// preParse decides on a source before any parsing: "" to pass, else the
// reason code of the drop. It runs for every datagram and every accepted
// TCP connection, so it must not allocate.
func (s *SBC) preParse(realm string, src netip.Addr) string {
	d := s.def
	if d.blocklist.Blocked(src) {
		return "blocked"
	}
	st := s.state.Load()
	if _, trunk := st.trunks.Lookup(src); trunk || st.backends[src] {
		return "" // trunks and backends are limited per call, not per packet
	}
	if ok, _ := d.pps.Check(acl.SourceKey(src), time.Now(), 1, 1); !ok {
		return "source_pps"
	}
	return ""
}

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
	s.reject(ep, req, tx, r.Code, r.Reason, nil, hdrs...)
	return false
}

// validResponse drops invalid responses (from either side) before they
// are relayed.
func (s *SBC) validResponse(realm string, res *sip.Response) bool {
	if r := validate.Response(res, s.def.valOpt); r != nil {
		s.drop("validate", r.Why)
		return false
	}
	return true
}

// scanner reports whether the request's User-Agent is a known scanner's.
func (s *SBC) scanner(req *sip.Request) (string, bool) {
	h := req.GetHeader("User-Agent")
	if h == nil {
		return "", false
	}
	return s.def.scanner.Load().Match(h.Value())
}

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

// registerAllowed checks "no public extensions": REGISTER only from trunks
// that allow it and only for their configured domains.
func registerAllowed(t *policy.Trunk, req *sip.Request) bool {
	if t == nil || !t.AllowRegister {
		return false
	}
	host := strings.Trim(req.Recipient.Host, "[]")
	for _, d := range t.RegisterDomains {
		if strings.EqualFold(d, host) {
			return true
		}
	}
	return false
}
