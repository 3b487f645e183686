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
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
	"github.com/sbc-project/sbc/sbc/validate"
	"golang.org/x/time/rate"
)

// Edge defence: the read filter before the parser (filter.go), stages
// 2 validate (validate.go), 3 admit (admit.go) and 6 watch (watch.go).
// This file holds their shared state and its translation from the policy.
// Every drop or reject has a stable reason code that is a label of
// sbc_dropped_total{stage,reason}, a field of a (rate limited) log line
// and, for blocks, the blocklist entry's reason.

// defence holds the edge-defence state that outlives policy snapshots:
// the blocklist, rate-limit buckets and failure counts survive a reload.
type defence struct {
	blocklist *acl.Blocklist
	pps       *ratelimit.Limiter // per-source datagrams before parsing
	tpps      *ratelimit.Limiter // the same for trunk sources and pool targets on their realm (limits.trunk_pps)
	invites   *ratelimit.Limiter // per-source and per-trunk INVITE rate
	registers *ratelimit.Limiter // per-source REGISTER rate
	calls     *ratelimit.Concurrency
	tracker   *ratelimit.Tracker
	guard     *ratelimit.Guard // failed REGISTER guesses per source and AoR (register_guard.go)
	peers     peerSet          // admin clients and TLS trunk peers, never blocked (trust.go)
	neverMu   sync.Mutex       // serialises changes of the blocklist's never-block list
	neverPol  *policy.Policy   // the policy of the never-block list in force (neverMu)
	health    trunkHealth      // per-trunk calls and failures for the trunk health line (trust.go)
	scanner   atomic.Pointer[ratelimit.ScannerMatcher]
	valOpt    validate.Options
	statePath string
	logLimit  *rate.Limiter // drop log lines: a flood cannot fill the disk
	floodLog  logGate       // drop log lines of the read and accept filters (see logAllowed)
}

func newDefence(p *policy.Policy, log *slog.Logger) (*defence, error) {
	d := &defence{logLimit: rate.NewLimiter(20, 50)}
	if p.Server.StateDir != "" {
		if err := os.MkdirAll(p.Server.StateDir, 0o750); err != nil {
			return nil, fmt.Errorf("state_dir: %w", err)
		}
		if err := acl.ProbeDir(p.Server.StateDir); err != nil {
			return nil, fmt.Errorf("state_dir %s is not writable (the blocklist is saved there): %w", p.Server.StateDir, err)
		}
		d.statePath = filepath.Join(p.Server.StateDir, "blocklist.json")
	}
	d.blocklist = acl.NewBlocklist(acl.Options{StatePath: d.statePath, Logger: log})
	if err := d.setNeverBlock(p); err != nil {
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
	if d.tpps, err = ratelimit.NewLimiter(trunkPPSConfig(p)); err != nil {
		return nil, err
	}
	if d.guard, err = ratelimit.NewGuard(guardConfig(p)); err != nil {
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

// neverBlock is the policy's part of the never-block list (protections in
// trust.go): never_block, the sources of trunks that may not register,
// the pool targets and the admin listener's address.
func neverBlock(p *policy.Policy) []netip.Prefix {
	var out []netip.Prefix
	for _, pr := range protections(p) {
		out = append(out, pr.prefix)
	}
	return out
}

func ppsConfig(p *policy.Policy) ratelimit.LimiterConfig {
	return ratelimit.LimiterConfig{
		Source:     ratelimit.Limit{Rate: float64(p.Limits.SourcePPS), Burst: p.Limits.SourcePPSBurst},
		MaxSources: p.Limits.MaxSources,
	}
}

// trunkPPSConfig is the packet budget of trunk sources and pool targets
// on their own realm: a table of its own, so that a flood of spoofed
// strangers cannot evict their buckets.
func trunkPPSConfig(p *policy.Policy) ratelimit.LimiterConfig {
	return ratelimit.LimiterConfig{
		Source:     ratelimit.Limit{Rate: float64(p.Limits.TrunkPPS), Burst: p.Limits.TrunkPPSBurst},
		MaxSources: p.Limits.MaxSources,
	}
}

func guardConfig(p *policy.Policy) ratelimit.GuardConfig {
	a := p.AutoBlock
	return ratelimit.GuardConfig{
		PerIdentity: a.RegisterGuesses,
		PerSource:   a.RegisterSourceGuesses,
		Window:      a.RegisterWindow.Duration,
		LockFor:     a.RegisterLock.Duration,
		MaxSources:  p.Limits.MaxSources,
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
		Threshold:  a.Threshold,
		Window:     a.Window.Duration,
		BlockFor:   a.BlockFor.Duration,
		Escalate:   float64(a.Escalation),
		MaxBlock:   a.MaxBlock.Duration,
		Decay:      a.ForgetAfter.Duration,
		NeverBlock: neverBlock(p),
		Observe:    a.Observe,
		MaxSources: p.Limits.MaxSources,
	}
}
