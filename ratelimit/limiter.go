package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for LimiterConfig and TrackerConfig fields left zero.
const (
	DefaultMaxSources    = 100_000
	DefaultPressureBurst = 1
	DefaultPromoteAge    = time.Second
)

// LimiterConfig configures a Limiter. Zero fields take the documented
// defaults.
type LimiterConfig struct {
	// Source is the limit of every source key (the same for all sources;
	// the caller scales it per source with a budget, see Check).
	// The zero Limit disables per-source limiting.
	Source Limit
	// Trunks holds a limit per trunk name. Trunk buckets live in their
	// own table that is never evicted; a trunk that is absent, or whose
	// Limit is unlimited, is not limited.
	Trunks map[string]Limit
	// MaxSources caps the number of source keys kept (default 100 000).
	// Each costs about 100 bytes. Update may change it.
	MaxSources int
	// Shards is the number of lock shards of the source table (0: about
	// 4×GOMAXPROCS, rounded to a power of two). Fixed at construction.
	Shards int
	// PressureBurst is the number of tokens a new source starts with
	// when making room for it evicted a source whose bucket was not yet
	// full again (default 1). Otherwise a new source starts with a full
	// bucket. This stops a flood of spoofed sources, or one attacker whose
	// key the flood keeps evicting, from earning a fresh burst per
	// eviction, while a legitimate newcomer in calm times still gets its
	// burst.
	PressureBurst int
	// PromoteAge is how long a new source must stay in the table and
	// then be seen again before it counts as established and is protected
	// from eviction by newcomers (default 1s). See doc.go.
	PromoteAge time.Duration
}

func (c LimiterConfig) withDefaults() LimiterConfig {
	if c.MaxSources == 0 {
		c.MaxSources = DefaultMaxSources
	}
	if c.PressureBurst == 0 {
		c.PressureBurst = DefaultPressureBurst
	}
	if c.PromoteAge == 0 {
		c.PromoteAge = DefaultPromoteAge
	}
	return c
}

// srcParams is the compiled source side of a LimiterConfig.
type srcParams struct {
	g             gcra
	pressureBurst int
	promoteAge    int64
}

// trunkBucket is one trunk's bucket. want is the limit set by the last
// Update; g is the one tat is expressed in. The first check after a reload
// converts tat (same missing tokens) under the bucket's mutex.
type trunkBucket struct {
	want atomic.Pointer[gcra]
	mu   sync.Mutex
	g    *gcra
	tat  int64
}

// Limiter is a set of token buckets of one kind (say "INVITEs per
// second"): one per source key in a bounded table, and one per trunk name
// in an unbounded but policy-sized table that is never evicted. It is safe
// for concurrent use. The source hot path (existing key) takes one shard
// lock and does not allocate.
type Limiter struct {
	src    atomic.Pointer[srcParams]
	tab    *table[int64]
	trunks atomic.Pointer[map[string]*trunkBucket]
	upd    sync.Mutex // serialises Update
}

// NewLimiter builds a Limiter from cfg (zero fields take defaults).
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	cfg = cfg.withDefaults()
	c, err := compileLimiter(cfg)
	if err != nil {
		return nil, err
	}
	l := &Limiter{}
	l.install(c)
	l.tab = newTable[int64](cfg.MaxSources, cfg.Shards)
	for i := range l.tab.shards {
		l.tab.shards[i].aux = l.src.Load()
	}
	return l, nil
}

// Update replaces the limits on a policy reload. Existing bucket state is
// kept: every source and trunk bucket keeps the number of tokens it was
// missing (clamped to the new burst), converted lazily at its first check
// under the new limit; so a source that had spent its burst is still
// empty and refills at the new rate. Trunks absent from cfg.Trunks are
// dropped; trunks present in both keep their bucket. A changed MaxSources
// resizes the source table keeping the most valuable entries (protected,
// then most recently used); Shards is ignored. On error nothing changes.
//
// Update is Prepare followed by Apply. A caller that updates several
// limiters together and wants all or none to change prepares them all
// first.
func (l *Limiter) Update(cfg LimiterConfig) error {
	u, err := l.Prepare(cfg)
	if err != nil {
		return err
	}
	u.Apply()
	return nil
}

// LimiterUpdate is a configuration checked and compiled by
// Limiter.Prepare. Apply installs it and cannot fail.
type LimiterUpdate struct {
	l *Limiter
	c compiledLimiter
}

// Prepare checks and compiles cfg for l without changing l. Every error
// Update can return comes from here.
func (l *Limiter) Prepare(cfg LimiterConfig) (*LimiterUpdate, error) {
	c, err := compileLimiter(cfg.withDefaults())
	if err != nil {
		return nil, err
	}
	return &LimiterUpdate{l: l, c: c}, nil
}

// Apply installs the prepared configuration, as Update does. Bucket state
// is carried over from what is in force when Apply runs, so a prepared
// update may be applied later; applying it again re-installs the same
// limits.
func (u *LimiterUpdate) Apply() {
	l := u.l
	l.upd.Lock()
	defer l.upd.Unlock()
	l.install(u.c)
	if u.c.maxSources != l.tab.capacity() {
		l.tab.resize(u.c.maxSources)
	}
}

// compiledLimiter is a checked LimiterConfig.
type compiledLimiter struct {
	src        srcParams
	trunks     map[string]gcra
	maxSources int
}

func compileLimiter(cfg LimiterConfig) (compiledLimiter, error) {
	switch {
	case cfg.PromoteAge < 0:
		return compiledLimiter{}, fmt.Errorf("ratelimit: negative PromoteAge %v", cfg.PromoteAge)
	case cfg.MaxSources < 0:
		return compiledLimiter{}, fmt.Errorf("ratelimit: negative MaxSources %d", cfg.MaxSources)
	case cfg.PressureBurst < 0:
		return compiledLimiter{}, fmt.Errorf("ratelimit: negative PressureBurst %d", cfg.PressureBurst)
	}
	g, err := compile(cfg.Source)
	if err != nil {
		return compiledLimiter{}, fmt.Errorf("ratelimit: source limit: %w", err)
	}
	comp := make(map[string]gcra, len(cfg.Trunks))
	for name, lim := range cfg.Trunks {
		tg, err := compile(lim)
		if err != nil {
			return compiledLimiter{}, fmt.Errorf("ratelimit: trunk %q limit: %w", name, err)
		}
		comp[name] = tg
	}
	return compiledLimiter{
		src:        srcParams{g: g, pressureBurst: cfg.PressureBurst, promoteAge: int64(cfg.PromoteAge)},
		trunks:     comp,
		maxSources: cfg.MaxSources,
	}, nil
}

// install publishes c, keeping the buckets of trunks that stay. The
// caller holds upd (or owns l exclusively).
func (l *Limiter) install(c compiledLimiter) {
	var old map[string]*trunkBucket
	if p := l.trunks.Load(); p != nil {
		old = *p
	}
	m := make(map[string]*trunkBucket, len(c.trunks))
	for name, tg := range c.trunks {
		b := old[name]
		if b == nil {
			b = &trunkBucket{g: &tg}
		}
		b.want.Store(&tg)
		m[name] = b
	}
	src := c.src // a fresh pointer per install: shards rescale when it changes
	l.src.Store(&src)
	l.trunks.Store(&m)
}

// rescaleShard converts the shard's buckets to p after a reload, keeping
// each bucket's missing tokens. It runs once per shard per reload, at the
// first check that meets the new limit (the caller holds s.mu).
func rescaleShard(s *shard[int64], p *srcParams, now int64) {
	if old, ok := s.aux.(*srcParams); ok && old.g != p.g {
		for i := range s.nodes {
			if nd := &s.nodes[i]; nd.seg != segFree {
				nd.v = p.g.rescale(&old.g, nd.v, now)
			}
		}
	}
	s.aux = p
}

// Allow reports whether one event from source key src may happen at now,
// and if so takes it. src should come from SourceKey; an invalid prefix is
// always allowed and never stored.
func (l *Limiter) Allow(src netip.Prefix, now time.Time) bool {
	ok, _ := l.Check(src, now, 1, 1)
	return ok
}

// AllowN is Allow for n events at once (all or nothing). n larger than the
// burst is never allowed; n <= 0 always is.
func (l *Limiter) AllowN(src netip.Prefix, now time.Time, n int) bool {
	ok, _ := l.Check(src, now, n, 1)
	return ok
}

// Check is AllowN with a budget multiplier and the wait on denial. budget
// scales this source's rate and burst (Tracker.Budget gives one from the
// source's trust: e.g. 4 for trusted, 0.25 for demoted); values <= 0, NaN
// or Inf count as 1. When denied, retryAfter is how long until the same
// request would pass (Never if it never can); feed it to
// RetryAfterSeconds for a 503's Retry-After.
func (l *Limiter) Check(src netip.Prefix, now time.Time, n int, budget float64) (ok bool, retryAfter time.Duration) {
	p := l.src.Load()
	if p.g.unlimited || n <= 0 {
		return true, 0
	}
	k, valid := keyOf(src)
	if !valid {
		return true, 0
	}
	t := now.UnixNano()
	s := l.tab.shard(k)
	s.mu.Lock()
	if s.aux != any(p) {
		rescaleShard(s, p, t)
	}
	i, found := s.get(k, t, p.promoteAge)
	tat := t // a new key starts with a full bucket ...
	if found {
		tat = s.nodes[i].v
	} else {
		var old int64
		var evicted bool
		i, old, evicted = s.insert(k, t)
		if evicted && old > t {
			// ... unless its slot came from a source whose bucket was not
			// full again: that is live state lost to pressure.
			s.pressured++
			tat = p.g.startTat(t, p.pressureBurst, budget)
		}
	}
	nt, ok, wait := p.g.take(tat, t, int64(n), budget)
	s.nodes[i].v = nt
	s.mu.Unlock()
	return ok, wait
}

// Protect marks src as established at once (moves its bucket to the
// protected segment), without waiting for PromoteAge. Call it for sources
// that proved they are not spoofed: a completed TCP/TLS handshake, a call
// or registration that succeeded. It reports whether src had a bucket.
func (l *Limiter) Protect(src netip.Prefix) bool {
	k, ok := keyOf(src)
	if !ok {
		return false
	}
	s := l.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if found {
		s.protect(i)
	}
	return found
}

// AllowTrunk reports whether one event for trunk may happen at now, and if
// so takes it. Unknown trunks are not limited.
func (l *Limiter) AllowTrunk(trunk string, now time.Time) bool {
	ok, _ := l.CheckTrunk(trunk, now, 1)
	return ok
}

// AllowTrunkN is AllowTrunk for n events at once (all or nothing).
func (l *Limiter) AllowTrunkN(trunk string, now time.Time, n int) bool {
	ok, _ := l.CheckTrunk(trunk, now, n)
	return ok
}

// CheckTrunk is AllowTrunkN with the wait on denial (see Check).
func (l *Limiter) CheckTrunk(trunk string, now time.Time, n int) (ok bool, retryAfter time.Duration) {
	b := (*l.trunks.Load())[trunk]
	if b == nil || n <= 0 {
		return true, 0
	}
	g := b.want.Load()
	if g.unlimited {
		return true, 0
	}
	t := now.UnixNano()
	b.mu.Lock()
	if b.g != g {
		b.tat = g.rescale(b.g, b.tat, t)
		b.g = g
	}
	b.tat, ok, retryAfter = g.take(b.tat, t, int64(n), 1)
	b.mu.Unlock()
	return ok, retryAfter
}

// TableStats describes a bounded per-source table.
type TableStats struct {
	Capacity  int    // slots (MaxSources)
	Len       int    // resident source keys
	Protected int    // keys in the protected (established) segment
	Evictions uint64 // keys evicted to make room, since construction
	Pressured uint64 // evictions that dropped live state (Limiter: a bucket not yet full again; Tracker: a source with failures, trust or a block)
}

// Stats reports the source table's size and eviction counters.
func (l *Limiter) Stats() TableStats { return l.tab.stats() }
