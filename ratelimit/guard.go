package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Guard counts failed digest challenges (a password guessed wrong) per
// source and per identity, the address-of-record or digest user being
// guessed. It is the brake on a password brute force from a source that
// may register at all:
//
//   - the PerIdentity-th failure of one identity from one source within
//     Window locks that identity for that source for LockFor: the caller
//     refuses its requests without asking the registrar. Other identities
//     from the same source (the other phones behind a NAT) are untouched;
//   - the PerSource-th failure from one source within Window, whatever the
//     identities, reports Block: the caller blocks the source (hand it to
//     Tracker.Convict for the escalation of repeat offenders).
//
// A Guard also remembers the last few nonces challenged to each source
// (Challenged, Issued): a guess that carries a nonce the registrar sent
// to that source proves the guesser receives what is sent to the address,
// which a spoofer does not. The caller counts only such guesses (or those
// on a connection, whose handshake proves the same), so that nobody can
// lock an identity or block a source by forging its address.
//
// Per source it keeps up to guardIdentities identities (a fifth failing
// identity takes the slot of the stalest unlocked one) and guardNonces
// nonces, in the bounded table of the package (about 300 bytes a source).
// Safe for concurrent use.
type Guard struct {
	p    atomic.Pointer[guardParams]
	tab  *table[gstate]
	seed maphash.Seed
	upd  sync.Mutex
}

// GuardConfig configures a Guard. Zero fields take the default named in
// their comment.
type GuardConfig struct {
	// PerIdentity: this many failures of one identity from one source
	// within Window lock the identity for that source. Default 5.
	PerIdentity int
	// PerSource: this many failures from one source within Window, all
	// identities together, block the source. Default 20.
	PerSource int
	// Window over which failures are counted. Default 10m. The source
	// count slides (16 sub-windows); an identity's count starts with its
	// first failure and is forgotten Window later.
	Window time.Duration
	// LockFor is how long a locked identity stays locked. Default 15m.
	LockFor time.Duration
	// MaxSources caps the sources tracked. Default 100 000.
	MaxSources int
	// Shards: lock shards of the source table (0: about 4×GOMAXPROCS).
	Shards int
	// PromoteAge: see TrackerConfig.PromoteAge. Default 1s.
	PromoteAge time.Duration
}

const (
	guardIdentities = 4
	guardNonces     = 16
)

func (c GuardConfig) withDefaults() GuardConfig {
	if c.PerIdentity == 0 {
		c.PerIdentity = 5
	}
	if c.PerSource == 0 {
		c.PerSource = 20
	}
	if c.Window == 0 {
		c.Window = 10 * time.Minute
	}
	if c.LockFor == 0 {
		c.LockFor = 15 * time.Minute
	}
	if c.MaxSources == 0 {
		c.MaxSources = DefaultMaxSources
	}
	if c.PromoteAge == 0 {
		c.PromoteAge = DefaultPromoteAge
	}
	return c
}

type guardParams struct {
	GuardConfig
	width int64 // ns per sub-window of the source count
}

func (c GuardConfig) compile() (*guardParams, error) {
	switch {
	case c.PerIdentity < 1 || c.PerIdentity > math.MaxUint16:
		return nil, fmt.Errorf("ratelimit: guard PerIdentity must be 1..65535, got %d", c.PerIdentity)
	case c.PerSource < 1 || c.PerSource > math.MaxUint16:
		return nil, fmt.Errorf("ratelimit: guard PerSource must be 1..65535, got %d", c.PerSource)
	case c.Window < winSlots:
		return nil, fmt.Errorf("ratelimit: guard Window %v too short", c.Window)
	case c.LockFor <= 0:
		return nil, fmt.Errorf("ratelimit: guard LockFor must be positive, got %v", c.LockFor)
	case c.MaxSources < 1:
		return nil, fmt.Errorf("ratelimit: guard MaxSources must be ≥ 1, got %d", c.MaxSources)
	case c.PromoteAge < 0:
		return nil, fmt.Errorf("ratelimit: guard PromoteAge must not be negative, got %v", c.PromoteAge)
	}
	return &guardParams{GuardConfig: c, width: int64(c.Window) / winSlots}, nil
}

// gident is one identity's record at one source.
type gident struct {
	h     uint64 // hash of the identity; 0: free slot
	first int64  // unix ns of the first failure of the current count
	until int64  // unix ns: end of the lock (0: not locked)
	n     uint16 // failures since first
}

// gstate is one source's record.
type gstate struct {
	slots                          // failures of the source, all identities
	ids    [guardIdentities]gident // the identities failing from it
	nonces [guardNonces]uint64     // hashes of the last nonces challenged to it
	next   uint8                   // next nonce slot (ring)
}

func (p *guardParams) idle(e *gstate, now int64) bool {
	if e.count(now/p.width) > 0 {
		return false
	}
	for i := range e.ids {
		id := &e.ids[i]
		if id.until > now || (id.n > 0 && now-id.first < int64(p.Window)) {
			return false
		}
	}
	return true
}

// NewGuard builds a Guard from cfg (zero fields take defaults).
func NewGuard(cfg GuardConfig) (*Guard, error) {
	p, err := cfg.withDefaults().compile()
	if err != nil {
		return nil, err
	}
	g := &Guard{tab: newTable[gstate](p.MaxSources, p.Shards), seed: maphash.MakeSeed()}
	g.p.Store(p)
	return g, nil
}

// GuardUpdate is a configuration checked by Guard.Prepare; Apply installs
// it and cannot fail.
type GuardUpdate struct {
	g *Guard
	p *guardParams
}

// Prepare checks cfg for g without changing g.
func (g *Guard) Prepare(cfg GuardConfig) (*GuardUpdate, error) {
	p, err := cfg.withDefaults().compile()
	if err != nil {
		return nil, err
	}
	return &GuardUpdate{g: g, p: p}, nil
}

// Apply installs the prepared configuration. Counts and locks carry over:
// locks keep their end, counts are judged against the new thresholds from
// the next failure. A changed Window rescales nothing: the source count
// keeps its sub-windows (of the old width) until they slide out. A
// changed MaxSources resizes the table keeping the most valuable entries.
func (u *GuardUpdate) Apply() {
	g := u.g
	g.upd.Lock()
	defer g.upd.Unlock()
	g.p.Store(u.p)
	if u.p.MaxSources != g.tab.capacity() {
		g.tab.resize(u.p.MaxSources)
	}
}

// Config returns the configuration in force, with defaults filled in.
func (g *Guard) Config() GuardConfig { return g.p.Load().GuardConfig }

func (g *Guard) hash(s string) uint64 {
	h := maphash.String(g.seed, s)
	if h == 0 {
		h = 1 // 0 marks a free slot
	}
	return h
}

// lookup finds or creates src's record; the caller holds s.mu.
func (g *Guard) lookup(s *shard[gstate], p *guardParams, k key, now int64) int32 {
	if i, ok := s.get(k, now, int64(p.PromoteAge)); ok {
		return i
	}
	i, old, evicted := s.insert(k, now)
	if evicted && !p.idle(&old, now) {
		s.pressured++
	}
	s.nodes[i].v.wbase = now / p.width
	return i
}

// Challenged records that nonce was sent to source src (from SourceKey)
// in a challenge at now. The last guardNonces nonces of each source are
// kept.
func (g *Guard) Challenged(src netip.Prefix, nonce string, now time.Time) {
	k, ok := keyOf(src)
	if !ok || nonce == "" {
		return
	}
	h := g.hash(nonce)
	p := g.p.Load()
	tn := now.UnixNano()
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &s.nodes[g.lookup(s, p, k, tn)].v
	for _, x := range e.nonces {
		if x == h {
			return
		}
	}
	e.nonces[e.next%guardNonces] = h
	e.next = (e.next + 1) % guardNonces
}

// Issued reports whether nonce is one of the last nonces challenged to
// src: the request carrying it answers a challenge its sender received.
func (g *Guard) Issued(src netip.Prefix, nonce string) bool {
	k, ok := keyOf(src)
	if !ok || nonce == "" {
		return false
	}
	h := g.hash(nonce)
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if !found {
		return false
	}
	for _, x := range s.nodes[i].v.nonces {
		if x == h {
			return true
		}
	}
	return false
}

// Locked reports whether identity is locked for src at now, and until
// when.
func (g *Guard) Locked(src netip.Prefix, identity string, now time.Time) (bool, time.Time) {
	k, ok := keyOf(src)
	if !ok {
		return false, time.Time{}
	}
	h := g.hash(identity)
	tn := now.UnixNano()
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if !found {
		return false, time.Time{}
	}
	for _, id := range s.nodes[i].v.ids {
		if id.h == h && id.until > tn {
			return true, time.Unix(0, id.until)
		}
	}
	return false, time.Time{}
}

// GuardDecision is the outcome of one Guard.Fail.
type GuardDecision struct {
	// Prefix is the (masked) source key.
	Prefix netip.Prefix
	// IdentityFailures: failures of this identity from this source in its
	// window, this one included. SourceFailures: of the source, all
	// identities, in Window.
	IdentityFailures, SourceFailures int
	// Locked: this failure locked the identity for this source, until
	// LockedUntil.
	Locked      bool
	LockedUntil time.Time
	// Block: this failure reached PerSource; the source's count starts
	// again from zero.
	Block bool
}

// Fail records a failed challenge of identity from src at now.
func (g *Guard) Fail(src netip.Prefix, identity string, now time.Time) GuardDecision {
	var d GuardDecision
	k, ok := keyOf(src)
	if !ok {
		return d
	}
	d.Prefix = k.prefix()
	h := g.hash(identity)
	p := g.p.Load()
	tn := now.UnixNano()
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := g.lookup(s, p, k, tn)
	e := &s.nodes[i].v

	id := e.identity(h, tn, int64(p.Window))
	if tn-id.first >= int64(p.Window) || id.n == 0 {
		id.first, id.n = tn, 0
	}
	if id.n < math.MaxUint16 {
		id.n++
	}
	d.IdentityFailures = int(id.n)
	if int(id.n) >= p.PerIdentity && id.until <= tn {
		id.until = tn + int64(p.LockFor)
		id.n = 0 // a new count once the lock ends
		d.Locked, d.LockedUntil = true, time.Unix(0, id.until)
		s.protect(i) // a lock is state worth keeping under a flood
	}

	b := tn / p.width
	e.advance(b)
	j := e.wbase % winSlots
	e.win[j] = uint16(min(int(e.win[j])+1, math.MaxUint16))
	d.SourceFailures = e.count(b)
	if d.SourceFailures >= p.PerSource {
		d.Block = true
		e.win = [winSlots]uint16{}
	}
	return d
}

// identity returns e's slot of identity hash h. A new identity takes a
// free slot, else one whose count has expired and that is not locked,
// else the unlocked one with the oldest count, else (all four locked) the
// one whose lock ends first.
func (e *gstate) identity(h uint64, now, window int64) *gident {
	rank := func(id *gident) (int, int64) {
		switch {
		case id.h == 0:
			return 0, 0
		case id.until <= now && now-id.first >= window:
			return 1, 0
		case id.until <= now:
			return 2, id.first
		}
		return 3, id.until
	}
	var pick *gident
	var pr int
	var pt int64
	for i := range e.ids {
		id := &e.ids[i]
		if id.h == h {
			return id
		}
		r, t := rank(id)
		if pick == nil || r < pr || (r == pr && t < pt) {
			pick, pr, pt = id, r, t
		}
	}
	*pick = gident{h: h}
	return pick
}

// Success records that identity authenticated from src: its failure
// count is forgotten (a phone that got its password right after a few
// tries starts clean). The source's count is not: successes of one
// identity must not wash out guesses at others.
func (g *Guard) Success(src netip.Prefix, identity string, now time.Time) {
	k, ok := keyOf(src)
	if !ok {
		return
	}
	h := g.hash(identity)
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if !found {
		return
	}
	for j := range s.nodes[i].v.ids {
		if id := &s.nodes[i].v.ids[j]; id.h == h && id.until <= now.UnixNano() {
			*id = gident{}
		}
	}
}

// Forget drops src's record (an operator's pardon). It reports whether
// there was one.
func (g *Guard) Forget(src netip.Prefix) bool {
	k, ok := keyOf(src)
	if !ok {
		return false
	}
	s := g.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(k)
}

// Stats reports the source table's size and eviction counters.
func (g *Guard) Stats() TableStats { return g.tab.stats() }
