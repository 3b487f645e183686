package ratelimit

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
)

// Failure reasons: stable codes for Tracker.Fail, metric labels and the
// audit log. Fail accepts any string; these are the ones the SBC uses.
const (
	ReasonUnknownSource      = "unknown_source"      // request from a source no trunk claims
	ReasonMalformed          = "malformed"           // failed validation / parse
	ReasonScannerUA          = "scanner_ua"          // User-Agent matched a ScannerMatcher
	ReasonAuthFailure        = "auth_failure"        // digest auth failed
	ReasonBackend403         = "backend_403"         // backend answered 403
	ReasonBackend404         = "backend_404"         // backend answered 404 (number/user scan)
	ReasonRegisterBruteforce = "register_bruteforce" // REGISTER storm with failing credentials
	ReasonAdminAuth          = "admin_auth"          // a failed authentication on the admin API (wrong key or certificate)
)

// ReasonRegisterNotAllowed: a REGISTER from a source that may not register,
// or for a domain that is not its own.
const ReasonRegisterNotAllowed = "register_not_allowed"

// Trust is a source's standing, from which its rate budget follows.
type Trust int8

const (
	// TrustUnknown: no notable history (also any source not in the table).
	TrustUnknown Trust = iota
	// TrustTrusted: at least TrustAfter successes, the last within TrustFor,
	// and not demoted.
	TrustTrusted
	// TrustDemoted: at least DemoteAt failures in the window, or inside a
	// block. Never in observe mode, which changes nothing but the log.
	TrustDemoted
)

func (t Trust) String() string {
	switch t {
	case TrustUnknown:
		return "unknown"
	case TrustTrusted:
		return "trusted"
	case TrustDemoted:
		return "demoted"
	}
	return fmt.Sprintf("Trust(%d)", int8(t))
}

// Exemption says why a source cannot be blocked.
type Exemption uint8

const (
	NotExempt        Exemption = iota
	ExemptNeverBlock           // the source overlaps a NeverBlock prefix
)

func (e Exemption) String() string {
	switch e {
	case NotExempt:
		return ""
	case ExemptNeverBlock:
		return "never_block"
	}
	return fmt.Sprintf("Exemption(%d)", uint8(e))
}

// TrackerConfig configures a Tracker. Zero fields take the default named
// in their comment (DefaultTrackerConfig returns them all filled in).
type TrackerConfig struct {
	// Threshold: more than Threshold failures (weighted, see Weights)
	// within Window block the source. Default 10.
	Threshold int
	// Window is the sliding failure window. Default 60s. It is kept as 16
	// sub-windows of Window/16, so a failure counts for between
	// 15/16·Window and Window after it happened.
	Window time.Duration
	// BlockFor is the first block's duration. Default 10m.
	BlockFor time.Duration
	// Escalate multiplies the duration of each further block of the same
	// source (≥ 1; 1 = no escalation). Default 4.
	Escalate float64
	// MaxBlock caps escalated blocks (≥ BlockFor). Default 24h.
	MaxBlock time.Duration
	// Decay: the offence level (escalation memory) is forgotten once a
	// source has gone Decay past the end of its last block without a new
	// one. Default 24h.
	Decay time.Duration
	// DemoteAt: this many failures within Window demote the source (a
	// smaller rate budget) before it reaches the block threshold.
	// Default max(1, Threshold/2).
	DemoteAt int
	// TrustAfter successes make a source trusted. Default 3.
	TrustAfter int
	// TrustFor: trust (the success count) is forgotten this long after the
	// last success. Default 24h.
	TrustFor time.Duration
	// Budget multipliers returned by Budget for each trust level
	// (all > 0). Defaults: trusted 4, unknown 1, demoted 0.25.
	BudgetTrusted, BudgetUnknown, BudgetDemoted float64
	// Weights gives a failure reason a weight other than 1 (0 to 65535):
	// e.g. {"scanner_ua": 11} blocks a scanner on its first request with
	// the default threshold; 0 records nothing for that reason.
	Weights map[string]int
	// NeverBlock lists prefixes that are never blocked or demoted: Fail on
	// a source overlapping one of them (either containing it or inside it)
	// records nothing and returns Exempt = ExemptNeverBlock.
	NeverBlock []netip.Prefix
	// Observe: decisions carry WouldBlock instead of Block, so thresholds
	// can be tuned on live traffic. Escalation and the would-be block
	// period are tracked as if the block had happened (a would-be block is
	// reported once), but nothing is demoted: in observe mode Trust is
	// never TrustDemoted and Budget never BudgetDemoted.
	Observe bool
	// MaxSources caps the number of sources tracked. Default 100 000
	// (about 170 bytes each). Update may change it.
	MaxSources int
	// Shards: lock shards of the source table (0: about 4×GOMAXPROCS).
	// Fixed at construction.
	Shards int
	// PromoteAge: a source seen again at least this long after it was
	// first recorded is protected from eviction by newcomers; sources
	// with a block or earned trust are protected at once. Default 1s.
	PromoteAge time.Duration
}

// DefaultTrackerConfig returns the defaults: block after more than 10
// failures in 60s for 10m, ×4 per repeat up to 24h, offences forgotten 24h
// after the last block ends, demoted from 5 failures, trusted after 3
// successes, 100 000 sources.
func DefaultTrackerConfig() TrackerConfig {
	return TrackerConfig{}.withDefaults()
}

func (c TrackerConfig) withDefaults() TrackerConfig {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Threshold == 0 {
		c.Threshold = 10
	}
	def(&c.Window, time.Minute)
	def(&c.BlockFor, 10*time.Minute)
	if c.Escalate == 0 {
		c.Escalate = 4
	}
	def(&c.MaxBlock, 24*time.Hour)
	def(&c.Decay, 24*time.Hour)
	if c.DemoteAt == 0 {
		c.DemoteAt = max(1, c.Threshold/2)
	}
	if c.TrustAfter == 0 {
		c.TrustAfter = 3
	}
	def(&c.TrustFor, 24*time.Hour)
	if c.BudgetTrusted == 0 {
		c.BudgetTrusted = 4
	}
	if c.BudgetUnknown == 0 {
		c.BudgetUnknown = 1
	}
	if c.BudgetDemoted == 0 {
		c.BudgetDemoted = 0.25
	}
	if c.MaxSources == 0 {
		c.MaxSources = DefaultMaxSources
	}
	def(&c.PromoteAge, DefaultPromoteAge)
	return c
}

// Validate reports the first invalid field of c after defaults are
// applied.
func (c TrackerConfig) Validate() error {
	_, err := c.withDefaults().compile()
	return err
}

const winSlots = 16

// trackerParams is a compiled TrackerConfig.
type trackerParams struct {
	TrackerConfig
	width      int64 // ns per sub-window
	neverBlock *bart.Lite
	weights    map[string]uint16
}

func (c TrackerConfig) compile() (*trackerParams, error) {
	pos := func(name string, d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("ratelimit: tracker %s must be positive, got %v", name, d)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Window", c.Window}, {"BlockFor", c.BlockFor}, {"MaxBlock", c.MaxBlock}, {"Decay", c.Decay}, {"TrustFor", c.TrustFor}} {
		if err := pos(f.name, f.d); err != nil {
			return nil, err
		}
	}
	switch {
	case c.Threshold < 1:
		return nil, fmt.Errorf("ratelimit: tracker Threshold must be ≥ 1, got %d", c.Threshold)
	case c.Window < winSlots:
		return nil, fmt.Errorf("ratelimit: tracker Window %v too short", c.Window)
	case !(c.Escalate >= 1) || math.IsInf(c.Escalate, 0):
		return nil, fmt.Errorf("ratelimit: tracker Escalate must be ≥ 1, got %g", c.Escalate)
	case c.MaxBlock < c.BlockFor:
		return nil, fmt.Errorf("ratelimit: tracker MaxBlock %v shorter than BlockFor %v", c.MaxBlock, c.BlockFor)
	case c.DemoteAt < 1:
		return nil, fmt.Errorf("ratelimit: tracker DemoteAt must be ≥ 1, got %d", c.DemoteAt)
	case c.TrustAfter < 1:
		return nil, fmt.Errorf("ratelimit: tracker TrustAfter must be ≥ 1, got %d", c.TrustAfter)
	case c.MaxSources < 1:
		return nil, fmt.Errorf("ratelimit: tracker MaxSources must be ≥ 1, got %d", c.MaxSources)
	case c.PromoteAge < 0:
		return nil, fmt.Errorf("ratelimit: tracker PromoteAge must not be negative, got %v", c.PromoteAge)
	}
	for _, b := range []float64{c.BudgetTrusted, c.BudgetUnknown, c.BudgetDemoted} {
		if !(b > 0) || math.IsInf(b, 0) {
			return nil, fmt.Errorf("ratelimit: tracker budgets must be positive and finite, got %g", b)
		}
	}
	p := &trackerParams{TrackerConfig: c, width: int64(c.Window) / winSlots}
	if len(c.Weights) > 0 {
		p.weights = make(map[string]uint16, len(c.Weights))
		for r, w := range c.Weights {
			if w < 0 || w > math.MaxUint16 {
				return nil, fmt.Errorf("ratelimit: tracker weight of %q out of 0..65535: %d", r, w)
			}
			p.weights[r] = uint16(w)
		}
	}
	if len(c.NeverBlock) > 0 {
		p.neverBlock = new(bart.Lite)
		for _, pfx := range c.NeverBlock {
			if !pfx.IsValid() {
				return nil, fmt.Errorf("ratelimit: tracker NeverBlock has an invalid prefix %v", pfx)
			}
			p.neverBlock.Insert(pfx.Masked())
		}
	}
	p.NeverBlock = append([]netip.Prefix(nil), c.NeverBlock...)
	p.Weights = nil // compiled into weights; do not share the caller's map
	return p, nil
}

func (p *trackerParams) weight(reason string) uint16 {
	if w, ok := p.weights[reason]; ok {
		return w
	}
	return 1
}

func (p *trackerParams) blockDuration(level uint8) time.Duration {
	f := float64(p.BlockFor) * math.Pow(p.Escalate, float64(level)-1)
	if f >= float64(p.MaxBlock) {
		return p.MaxBlock
	}
	return time.Duration(f)
}

// tstate is one source's record.
type tstate struct {
	slots           // failures per sub-window
	until    int64  // unix ns: end of the current (or would-be) block
	lastEnd  int64  // unix ns: end of the most recent block
	lastSucc int64  // unix ns of the last success
	succ     uint32 // successes (forgotten TrustFor after the last)
	level    uint8  // offence level: number of blocks not yet decayed
}

// slots is a sliding window of counts: winSlots sub-windows in a ring.
type slots struct {
	win   [winSlots]uint16 // counts per sub-window (ring)
	wbase int64            // absolute sub-window index of the newest slot
}

func (e *slots) advance(b int64) {
	if b <= e.wbase {
		return
	}
	if b-e.wbase >= winSlots {
		e.win = [winSlots]uint16{}
	} else {
		for j := e.wbase + 1; j <= b; j++ {
			e.win[j%winSlots] = 0
		}
	}
	e.wbase = b
}

// count sums the sub-windows that are still inside the window at
// sub-window index b.
func (e *slots) count(b int64) int {
	n := 0
	for i := int64(0); i < winSlots; i++ {
		j := e.wbase - i
		if j < 0 || b-j >= winSlots {
			break
		}
		n += int(e.win[j%winSlots])
	}
	return n
}

// settle forgets what has decayed at now.
func (p *trackerParams) settle(e *tstate, now int64) {
	if e.level > 0 && now-e.lastEnd >= int64(p.Decay) {
		e.level = 0
	}
	if e.succ > 0 && now-e.lastSucc >= int64(p.TrustFor) {
		e.succ = 0
	}
}

func (p *trackerParams) trust(e *tstate, now int64) Trust {
	switch {
	case p.Observe: // observe mode changes nothing but the log
	case e.until > now:
		return TrustDemoted
	case e.count(now/p.width) >= p.DemoteAt:
		return TrustDemoted
	}
	if int(e.succ) >= p.TrustAfter && now-e.lastSucc < int64(p.TrustFor) {
		return TrustTrusted
	}
	return TrustUnknown
}

// idle reports whether dropping e loses nothing.
func (p *trackerParams) idle(e *tstate, now int64) bool {
	p.settle(e, now)
	return e.until <= now && e.level == 0 && e.succ == 0 && e.count(now/p.width) == 0
}

// Tracker records failures and successes per source, decides auto-blocks
// with escalation for repeat offenders, and grades each source's trust
// into a rate budget. State is bounded by MaxSources (see doc.go for how a
// flood of spoofed sources is kept from flushing established ones). Safe
// for concurrent use.
type Tracker struct {
	p   atomic.Pointer[trackerParams]
	tab *table[tstate]
	upd sync.Mutex
}

// NewTracker builds a Tracker from cfg (zero fields take defaults).
func NewTracker(cfg TrackerConfig) (*Tracker, error) {
	p, err := cfg.withDefaults().compile()
	if err != nil {
		return nil, err
	}
	t := &Tracker{tab: newTable[tstate](p.MaxSources, p.Shards)}
	t.p.Store(p)
	for i := range t.tab.shards {
		t.tab.shards[i].aux = p
	}
	return t, nil
}

// Update replaces the configuration on a policy reload, keeping every
// source's record (failures, offence level, blocks in progress, trust).
// New thresholds apply from the next call; durations of blocks already
// decided are not changed. If Window changes, the failures a source has in
// the old window carry over and expire one new Window later. A changed
// MaxSources resizes the table keeping the most valuable entries; Shards
// is ignored. On error nothing changes.
//
// Update is Prepare followed by Apply.
func (t *Tracker) Update(cfg TrackerConfig) error {
	u, err := t.Prepare(cfg)
	if err != nil {
		return err
	}
	u.Apply()
	return nil
}

// TrackerUpdate is a configuration checked and compiled by
// Tracker.Prepare. Apply installs it and cannot fail.
type TrackerUpdate struct {
	t *Tracker
	p *trackerParams
}

// Prepare checks and compiles cfg for t without changing t. Every error
// Update can return comes from here.
func (t *Tracker) Prepare(cfg TrackerConfig) (*TrackerUpdate, error) {
	p, err := cfg.withDefaults().compile()
	if err != nil {
		return nil, err
	}
	return &TrackerUpdate{t: t, p: p}, nil
}

// Apply installs the prepared configuration, as Update does.
func (u *TrackerUpdate) Apply() {
	t, p := u.t, u.p
	t.upd.Lock()
	defer t.upd.Unlock()
	t.p.Store(p)
	if p.MaxSources != t.tab.capacity() {
		t.tab.resize(p.MaxSources)
	}
}

// Config returns the configuration in force, with defaults filled in.
func (t *Tracker) Config() TrackerConfig {
	c := t.p.Load().TrackerConfig
	c.NeverBlock = append([]netip.Prefix(nil), c.NeverBlock...)
	return c
}

// Decision is the outcome of one Fail (or Convict). At most one of Block
// and WouldBlock is set, and only on the failure that crossed the
// threshold; while the resulting period lasts further failures are not
// counted and return AlreadyBlocked.
type Decision struct {
	// Prefix is the (masked) source key; block this prefix.
	Prefix netip.Prefix
	// Reason is the reason passed to Fail.
	Reason string
	// Block: the caller must block Prefix for Duration (until Until).
	Block bool
	// WouldBlock: observe mode; Block would have been set. Log it.
	WouldBlock bool
	// Exempt says why this source cannot be blocked: ExemptNeverBlock
	// (then nothing was recorded).
	Exempt Exemption
	// AlreadyBlocked: the source is inside a block (or would-be block)
	// decided earlier, until Until; this failure was not counted.
	AlreadyBlocked bool
	// Duration and Until of the block decided now; when AlreadyBlocked,
	// the time left and the end of the block in progress.
	Duration time.Duration
	Until    time.Time
	// Level is the offence level: 1 for a first block, 2 for the next
	// (Duration = BlockFor × Escalate^(Level-1), capped at MaxBlock).
	Level int
	// Failures is the weighted failure count in the window after this
	// failure (before the window is cleared by a block).
	Failures int
	// Trust is the source's trust after this failure; Demoted is set when
	// this failure changed it to TrustDemoted.
	Trust   Trust
	Demoted bool
}

// LogValue renders d compactly for log/slog.
func (d Decision) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("prefix", d.Prefix.String()),
		slog.String("reason", d.Reason),
		slog.Int("failures", d.Failures),
		slog.String("trust", d.Trust.String()),
	}
	switch {
	case d.Block:
		attrs = append(attrs, slog.String("action", "block"))
	case d.WouldBlock:
		attrs = append(attrs, slog.String("action", "would_block"))
	case d.AlreadyBlocked:
		attrs = append(attrs, slog.String("action", "already_blocked"))
	case d.Demoted:
		attrs = append(attrs, slog.String("action", "demote"))
	}
	if d.Exempt != NotExempt {
		attrs = append(attrs, slog.String("exempt", d.Exempt.String()))
	}
	if d.Duration > 0 {
		attrs = append(attrs, slog.Duration("duration", d.Duration), slog.Time("until", d.Until), slog.Int("level", d.Level))
	}
	return slog.GroupValue(attrs...)
}

// lock locks k's shard and returns it with the parameters in force,
// first converting the shard's failure windows if a reload changed Window.
func (t *Tracker) lock(k key, now int64) (*shard[tstate], *trackerParams) {
	s := t.tab.shard(k)
	s.mu.Lock()
	p := t.p.Load()
	if s.aux != any(p) {
		rewindow(s, p, now)
	}
	return s, p
}

// rewindow converts every record of s to p's sub-window width: the
// failures still in the old window move to the newest slot of the new one
// (they keep counting, and expire together one new Window later).
func rewindow(s *shard[tstate], p *trackerParams, now int64) {
	if old, ok := s.aux.(*trackerParams); ok && old.width != p.width {
		for i := range s.nodes {
			nd := &s.nodes[i]
			if nd.seg == segFree {
				continue
			}
			e := &nd.v
			n := e.count(now / old.width)
			e.win = [winSlots]uint16{}
			e.wbase = now / p.width
			e.win[e.wbase%winSlots] = uint16(min(n, math.MaxUint16))
		}
	}
	s.aux = p
}

// lookup finds or creates src's record; the caller holds s.mu.
func (t *Tracker) lookup(s *shard[tstate], p *trackerParams, k key, now int64) int32 {
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

// Fail records a failure of reason from source key src (from SourceKey) at
// now and returns what to do about it. An invalid src records nothing and
// returns a zero Decision with Reason. Which failures reach the tracker is
// the caller's trust model: the SBC charges none that a spoofer could
// cause to a trunk or backend address (see the sbc package).
func (t *Tracker) Fail(src netip.Prefix, reason string, now time.Time) Decision {
	return t.record(src, reason, now, false)
}

// Convict records an offence decided outside the failure window (a
// Guard's per-source threshold, say) and returns the decision Fail gives
// to the failure that crosses the threshold: Block (WouldBlock in observe
// mode) for BlockFor escalated by the source's offence level. A source
// overlapping NeverBlock is exempt and nothing is recorded; a source
// already inside a block returns AlreadyBlocked.
func (t *Tracker) Convict(src netip.Prefix, reason string, now time.Time) Decision {
	return t.record(src, reason, now, true)
}

func (t *Tracker) record(src netip.Prefix, reason string, now time.Time, convict bool) Decision {
	p := t.p.Load()
	d := Decision{Reason: reason}
	k, ok := keyOf(src)
	if !ok {
		return d
	}
	d.Prefix = k.prefix()
	if p.neverBlock != nil && p.neverBlock.OverlapsPrefix(d.Prefix) {
		d.Exempt = ExemptNeverBlock
		d.Trust = t.Trust(src, now)
		return d
	}
	tn := now.UnixNano()
	s, p := t.lock(k, tn)
	defer s.mu.Unlock()
	i := t.lookup(s, p, k, tn)
	e := &s.nodes[i].v
	p.settle(e, tn)
	before := p.trust(e, tn)
	d.Level = int(e.level)
	b := tn / p.width
	if e.until > tn {
		d.AlreadyBlocked = true
		d.Until = time.Unix(0, e.until)
		d.Duration = time.Duration(e.until - tn)
		d.Failures = e.count(b)
		d.Trust = before
		return d
	}
	e.advance(b)
	if w := p.weight(reason); w > 0 && !convict {
		j := e.wbase % winSlots // a clock step back lands in the newest slot
		e.win[j] = uint16(min(int(e.win[j])+int(w), math.MaxUint16))
	}
	d.Failures = e.count(b)
	if convict || d.Failures > p.Threshold {
		if e.level < math.MaxUint8 {
			e.level++
		}
		d.Level = int(e.level)
		d.Duration = p.blockDuration(e.level)
		e.until = tn + int64(d.Duration)
		e.lastEnd = e.until
		d.Until = time.Unix(0, e.until)
		e.win = [winSlots]uint16{}
		e.succ = 0
		if p.Observe {
			d.WouldBlock = true
		} else {
			d.Block = true
		}
		s.protect(i)
	}
	d.Trust = p.trust(e, tn)
	d.Demoted = d.Trust == TrustDemoted && before != TrustDemoted
	return d
}

// Success records a completed call or registration from src at now and
// returns the source's trust afterwards. Reaching TrustAfter successes
// makes it trusted (unless demoted) and protects its record from eviction.
func (t *Tracker) Success(src netip.Prefix, now time.Time) Trust {
	k, ok := keyOf(src)
	if !ok {
		return TrustUnknown
	}
	tn := now.UnixNano()
	s, p := t.lock(k, tn)
	defer s.mu.Unlock()
	i := t.lookup(s, p, k, tn)
	e := &s.nodes[i].v
	p.settle(e, tn)
	if e.succ < math.MaxUint32 {
		e.succ++
	}
	e.lastSucc = tn
	tr := p.trust(e, tn)
	if tr == TrustTrusted {
		s.protect(i)
	}
	return tr
}

// Trust reports src's trust at now without recording anything. Sources
// not in the table are TrustUnknown.
func (t *Tracker) Trust(src netip.Prefix, now time.Time) Trust {
	k, ok := keyOf(src)
	if !ok {
		return TrustUnknown
	}
	tn := now.UnixNano()
	s, p := t.lock(k, tn)
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if !found {
		return TrustUnknown
	}
	e := &s.nodes[i].v
	p.settle(e, tn)
	return p.trust(e, tn)
}

// Budget is the rate multiplier for src at now: BudgetTrusted,
// BudgetUnknown or BudgetDemoted by its Trust. Pass it to Limiter.Check.
func (t *Tracker) Budget(src netip.Prefix, now time.Time) float64 {
	p := t.p.Load()
	switch t.Trust(src, now) {
	case TrustTrusted:
		return p.BudgetTrusted
	case TrustDemoted:
		return p.BudgetDemoted
	}
	return p.BudgetUnknown
}

// NeverBlocked reports whether src overlaps a NeverBlock prefix.
func (t *Tracker) NeverBlocked(src netip.Prefix) bool {
	p := t.p.Load()
	return p.neverBlock != nil && src.IsValid() && p.neverBlock.OverlapsPrefix(src.Masked())
}

// SourceState is a snapshot of one source's record.
type SourceState struct {
	Prefix    netip.Prefix
	Failures  int       // weighted failures in the window
	Successes int       // successes not yet forgotten
	Level     int       // offence level
	Trust     Trust     // trust now
	Until     time.Time // end of the block in progress (zero if none)
}

// State returns src's record at now; ok is false if src is not tracked.
func (t *Tracker) State(src netip.Prefix, now time.Time) (st SourceState, ok bool) {
	k, valid := keyOf(src)
	if !valid {
		return st, false
	}
	tn := now.UnixNano()
	s, p := t.lock(k, tn)
	defer s.mu.Unlock()
	i, found := s.peek(k)
	if !found {
		return st, false
	}
	e := &s.nodes[i].v
	p.settle(e, tn)
	st = SourceState{
		Prefix:    k.prefix(),
		Failures:  e.count(tn / p.width),
		Successes: int(e.succ),
		Level:     int(e.level),
		Trust:     p.trust(e, tn),
	}
	if e.until > tn {
		st.Until = time.Unix(0, e.until)
	}
	return st, true
}

// Forget drops src's record (an operator's unblock/pardon): its failures,
// offence level and trust. It reports whether there was one. Removing the
// prefix from the blocklist is the caller's job.
func (t *Tracker) Forget(src netip.Prefix) bool {
	k, ok := keyOf(src)
	if !ok {
		return false
	}
	s := t.tab.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(k)
}

// Stats reports the source table's size and eviction counters.
func (t *Tracker) Stats() TableStats { return t.tab.stats() }
