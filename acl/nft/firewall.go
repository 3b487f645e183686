package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Defaults and limits.
const (
	// DefaultTable is the table name used when Options.Table is empty.
	DefaultTable = "sbc"
	// DefaultMaxEntries is used when Options.MaxEntries is zero.
	DefaultMaxEntries = 1 << 18
	// MaxTTL is the longest timeout given to the kernel; longer TTLs are
	// shortened to it (use 0 for "no timeout").
	MaxTTL = 10 * 365 * 24 * time.Hour
	// syncTolerance: Sync leaves an element alone when the time it has
	// left differs from the wanted TTL by at most this.
	syncTolerance = time.Second
)

// Errors. Kernel errors are wrapped with the operation that failed.
var (
	ErrClosed        = errors.New("nft: firewall closed")
	ErrInvalidPrefix = errors.New("nft: invalid prefix")
	ErrInvalidTTL    = errors.New("nft: negative ttl")
	ErrFull          = errors.New("nft: too many entries")
)

// FullError is Sync's error when the sets cannot hold every entry: the
// others are installed, and Missing lists the prefixes that are not, in
// the order given. errors.Is(err, ErrFull) is true.
type FullError struct {
	Missing []netip.Prefix
}

func (e *FullError) Error() string {
	return fmt.Sprintf("%v: sync: %d prefixes not installed", ErrFull, len(e.Missing))
}

// Is reports whether target is ErrFull.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// Options configures New.
type Options struct {
	// Table is the name of the inet table the firewall owns. Default
	// DefaultTable ("sbc").
	Table string
	// SIPPorts are the SIP listening ports (UDP and TCP) to guard.
	SIPPorts []uint16
	// MediaPorts is the inclusive media relay port range to guard; the
	// zero value means none.
	MediaPorts [2]uint16
	// UDPMediaPorts are more inclusive port ranges to guard, for UDP only
	// (set media_udp): the SBC's own media relay ranges.
	UDPMediaPorts [][2]uint16
	// TrunksOnly adds rules dropping packets to the SIP ports from sources
	// that are not in the trunk sets (see SetTrunks). Until SetTrunks is
	// called (or a previous run left trunks), that is every source.
	TrunksOnly bool
	// NetNS is an open file descriptor of the network namespace to work
	// in (for example of /run/netns/NAME); 0 means the caller's own. The
	// caller keeps it open while the Firewall is in use.
	NetNS int
	// MaxEntries bounds each of the address sets (kernel set size) and
	// the number of prefixes held for the interval sets. Default
	// DefaultMaxEntries.
	MaxEntries int
}

// Entry is one blocked prefix for Sync: a single address (/32, /128) or a
// wider prefix, and how long it stays blocked (0: no timeout).
type Entry struct {
	Prefix netip.Prefix
	TTL    time.Duration
}

// Counters are the values of the table's named counters.
type Counters struct {
	// BlockedPackets and BlockedBytes count packets dropped because their
	// source is in a blocked set (counter "blocked").
	BlockedPackets, BlockedBytes uint64
	// NotTrunkPackets and NotTrunkBytes count SIP packets dropped by the
	// TrunksOnly rules (counter "not_trunk").
	NotTrunkPackets, NotTrunkBytes uint64
}

// Firewall mirrors a blocklist into an nftables table it owns. All methods
// are safe for concurrent use; changes are serialized.
type Firewall struct {
	opts       Options
	l          *layout
	netTimeout bool      // interval sets have per-element timeouts
	epoch      time.Time // stamps are nanoseconds since epoch (monotonic)
	closed     atomic.Bool
	sndBuf     atomic.Int64 // netlink send buffer obtained (raiseSndBuf)
	maxBatch   int          // tests: batch size limit instead of batchLimit's

	mu sync.Mutex
	// nets holds the blocked prefixes wider than one address, with their
	// deadlines; pieces[0] (IPv4) and pieces[1] (IPv6) hold what the
	// interval sets contain: envelope(nets) as of the last change.
	nets   map[netip.Prefix]stamp
	pieces [2][]span
	// stale means pieces may differ from the kernel (a batch failed
	// midway): they are read back before the next change of a net.
	stale bool
}

// New creates the table (see the package documentation for its layout), or
// adopts it after a restart: the elements of the blocked and trunk sets
// (with the time they have left) and the counter values are kept, while
// sets, chains and rules are re-created as this version defines them, all in
// one transaction, so filtering never stops. Nothing outside the table is
// touched.
func New(opts Options) (*Firewall, error) {
	f, err := newFirewall(opts, true)
	if err != nil && errors.Is(err, unix.EOPNOTSUPP) {
		// A kernel whose interval sets cannot time out elements: nets
		// then stay until Unblock or Sync removes them.
		f, err = newFirewall(opts, false)
	}
	return f, err
}

// newFirewall validates opts and installs the table; netTimeout says
// whether the interval sets get the timeout flag.
func newFirewall(opts Options, netTimeout bool) (*Firewall, error) {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if len(opts.Table) > 64 || strings.ContainsRune(opts.Table, 0) {
		return nil, fmt.Errorf("nft: invalid table name %q", opts.Table)
	}
	if opts.MaxEntries == 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.MaxEntries < 0 || opts.MaxEntries > 1<<24 {
		return nil, fmt.Errorf("nft: MaxEntries %d out of range", opts.MaxEntries)
	}
	opts.SIPPorts = slices.Clone(opts.SIPPorts)
	slices.Sort(opts.SIPPorts)
	opts.SIPPorts = slices.Compact(opts.SIPPorts)
	if slices.Contains(opts.SIPPorts, 0) {
		return nil, errors.New("nft: SIP port 0")
	}
	if m := opts.MediaPorts; m != [2]uint16{} && (m[0] == 0 || m[0] > m[1]) {
		return nil, fmt.Errorf("nft: invalid media port range %d-%d", m[0], m[1])
	}
	opts.UDPMediaPorts = slices.Clone(opts.UDPMediaPorts)
	for _, m := range opts.UDPMediaPorts {
		if m[0] == 0 || m[0] > m[1] {
			return nil, fmt.Errorf("nft: invalid media port range %d-%d", m[0], m[1])
		}
	}
	if len(opts.SIPPorts) == 0 && opts.MediaPorts == [2]uint16{} && len(opts.UDPMediaPorts) == 0 {
		return nil, errors.New("nft: no ports to guard (SIPPorts, MediaPorts and UDPMediaPorts empty)")
	}
	if opts.TrunksOnly && len(opts.SIPPorts) == 0 {
		return nil, errors.New("nft: TrunksOnly needs SIPPorts")
	}
	f := &Firewall{opts: opts, epoch: time.Now(), nets: map[netip.Prefix]stamp{}, netTimeout: netTimeout}
	if err := f.install(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Firewall) now() stamp { return stamp(time.Since(f.epoch)) }

func (f *Firewall) deadline(now stamp, ttl time.Duration) stamp {
	if ttl == 0 {
		return never
	}
	return now + stamp(min(ttl, MaxTTL))
}

// netTimeoutFor is timeoutFor for an interval set element.
func (f *Firewall) netTimeoutFor(dl, now stamp) time.Duration {
	if !f.netTimeout {
		return 0
	}
	return timeoutFor(dl, now)
}

// state is what a previous run left in the table.
type state struct {
	addrs    [2]map[netip.Addr]stamp
	pieces   [2][]span
	trunks   [2][]span
	blocked  nftables.CounterObj
	notTrunk nftables.CounterObj
}

func fam(v4 bool) int {
	if v4 {
		return 0
	}
	return 1
}

func famWidth(i int) int {
	if i == 0 {
		return 32
	}
	return 128
}

// install (re)creates the table in one transaction (or more when the kept
// state is larger than a batch).
func (f *Firewall) install() error {
	f.l = newLayout(f.opts.Table, f.opts.MaxEntries, f.netTimeout)
	c, err := f.conn()
	if err != nil {
		return fmt.Errorf("nft: new: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nft: new: list tables: %w", explain(err))
	}
	exists := slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == f.opts.Table })
	now := f.now()
	var st state
	if exists {
		if st, err = f.readState(c, now); err != nil {
			return fmt.Errorf("nft: new: adopt table inet %s: %w", f.opts.Table, err)
		}
	}
	var units []unit
	for i := range 2 {
		addrSet, netSet := f.l.familySets(i == 0)
		addrs := keepLatest(st.addrs[i], f.opts.MaxEntries)
		for _, a := range addrs {
			units = append(units, unit{set: addrSet, add: []nftables.SetElement{addrElem(a, timeoutFor(st.addrs[i][a], now))}})
		}
		for _, s := range st.pieces[i] {
			units = append(units, unit{set: netSet, add: spanElems(s, famWidth(i), f.netTimeoutFor(s.dl, now))})
		}
		trunkSet := f.l.trunks4
		if i == 1 {
			trunkSet = f.l.trunks6
		}
		for _, s := range st.trunks[i] {
			units = append(units, unit{set: trunkSet, add: spanElems(s, famWidth(i), 0)})
		}
	}
	units = append(units, f.portUnits()...)
	head := func(c *nftables.Conn) error {
		if exists {
			c.DelTable(f.l.table)
		}
		return f.l.create(c, f.opts.TrunksOnly, st.blocked, st.notTrunk)
	}
	if err := f.run("create table inet "+f.opts.Table, head, units); err != nil {
		return err
	}
	for i := range 2 {
		f.pieces[i] = st.pieces[i]
		for _, s := range st.pieces[i] {
			for _, p := range spanPrefixes(s.lo, s.hi, famWidth(i)) {
				f.nets[p] = s.dl
			}
		}
	}
	return nil
}

// keepLatest returns the addresses of m, at most n of them, preferring the
// latest deadlines (a table left with a larger MaxEntries).
func keepLatest(m map[netip.Addr]stamp, n int) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	if len(out) > n {
		slices.SortFunc(out, func(a, b netip.Addr) int { return -compareStamp(m[a], m[b]) })
		out = out[:n]
	}
	return out
}

func compareStamp(a, b stamp) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// portUnits fills the port sets.
func (f *Firewall) portUnits() []unit {
	var spans []span
	var sip []nftables.SetElement
	for _, p := range f.opts.SIPPorts {
		v := u128{0, uint64(p)}
		spans = append(spans, span{v, v, never})
		sip = append(sip, nftables.SetElement{Key: keyBytes(v, 16)})
	}
	if m := f.opts.MediaPorts; m != [2]uint16{} {
		spans = append(spans, span{u128{0, uint64(m[0])}, u128{0, uint64(m[1])}, never})
	}
	var ports []nftables.SetElement
	for _, s := range envelope(spans, 16) {
		ports = append(ports, spanElems(s, 16, 0)...)
	}
	spans = nil
	for _, m := range f.opts.UDPMediaPorts {
		spans = append(spans, span{u128{0, uint64(m[0])}, u128{0, uint64(m[1])}, never})
	}
	var media []nftables.SetElement
	for _, s := range envelope(spans, 16) {
		media = append(media, spanElems(s, 16, 0)...)
	}
	return []unit{{set: f.l.ports, add: ports}, {set: f.l.sipPorts, add: sip}, {set: f.l.mediaUDP, add: media}}
}

// readState reads the elements and counters of an existing table. Sets or
// counters that do not exist, have another key type, or that the library
// cannot describe (a set of some other layout) are skipped: the table is
// rebuilt anyway, and the caller's Sync restores the blocklist. Kernel
// errors (permissions, memory) fail New.
func (f *Firewall) readState(c *nftables.Conn, now stamp) (state, error) {
	var (
		st  state
		err error
	)
	read := func(s *nftables.Set, width int) ([]nftables.SetElement, error) {
		got, err := c.GetSetByName(f.l.table, s.Name)
		if err != nil {
			var errno unix.Errno
			if errors.Is(err, unix.ENOENT) || !errors.As(err, &errno) {
				return nil, nil
			}
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		if got.KeyType.Bytes != uint32(width/8) || got.IsMap {
			return nil, nil
		}
		els, err := c.GetSetElements(got)
		if err != nil {
			return nil, fmt.Errorf("elements of set %s: %w", s.Name, err)
		}
		return els, nil
	}
	for i := range 2 {
		w := famWidth(i)
		addrSet, netSet := f.l.familySets(i == 0)
		trunkSet := f.l.trunks4
		if i == 1 {
			trunkSet = f.l.trunks6
		}
		var els []nftables.SetElement
		if els, err = read(addrSet, w); err != nil {
			return st, err
		}
		st.addrs[i] = decodeAddrs(els, w, now)
		for a, dl := range st.addrs[i] {
			if dl <= now {
				delete(st.addrs[i], a)
			}
		}
		if els, err = read(netSet, w); err != nil {
			return st, err
		}
		for _, s := range decodeSpans(els, w, now) {
			if s.dl > now {
				st.pieces[i] = append(st.pieces[i], s)
			}
		}
		if els, err = read(trunkSet, w); err != nil {
			return st, err
		}
		for _, s := range decodeSpans(els, w, now) {
			s.dl = never
			st.trunks[i] = append(st.trunks[i], s)
		}
	}
	// Counters restart from zero if they cannot be read.
	st.blocked, st.notTrunk, _ = readCounters(c, f.l.table)
	return st, nil
}

// Block blocks p for ttl (0: no timeout; TTLs above MaxTTL are shortened).
// A single address (/32, /128) goes to blocked4/blocked6, a wider prefix to
// blocked4_net/blocked6_net. Blocking a prefix again replaces its timeout,
// shorter or longer. Prefixes that overlap are kept apart in the interval
// set: every address is blocked until the latest deadline of the prefixes
// containing it. A prefix inside a trunk's allow entry is still blocked.
func (f *Firewall) Block(p netip.Prefix, ttl time.Duration) error {
	q, ok := normalize(p)
	if !ok {
		return fmt.Errorf("%w: %v", ErrInvalidPrefix, p)
	}
	if ttl < 0 {
		return fmt.Errorf("%w: block %s for %v", ErrInvalidTTL, q, ttl)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	now := f.now()
	dl := f.deadline(now, ttl)
	what := fmt.Sprintf("block %s for %v", q, ttl)
	if q.IsSingleIP() {
		set, _ := f.l.familySets(q.Addr().Is4())
		key := addrElem(q.Addr(), 0)
		return f.run(what, nil, []unit{{
			set:    set,
			remove: []nftables.SetElement{key},
			add:    []nftables.SetElement{addrElem(q.Addr(), timeoutFor(dl, now))},
		}})
	}
	f.pruneNets(now)
	old, had := f.nets[q]
	if !had && len(f.nets) >= f.opts.MaxEntries {
		return fmt.Errorf("%w (%d prefixes): cannot block %s", ErrFull, f.opts.MaxEntries, q)
	}
	f.nets[q] = dl
	err := f.applyNets(what, fam(q.Addr().Is4()), now)
	if err != nil {
		if had {
			f.nets[q] = old
		} else {
			delete(f.nets, q)
		}
	}
	return err
}

// Unblock removes the entry for exactly p (as given to Block or Sync):
// entries inside p or containing p stay. Unblocking a prefix that is not
// blocked is not an error.
func (f *Firewall) Unblock(p netip.Prefix) error {
	q, ok := normalize(p)
	if !ok {
		return fmt.Errorf("%w: %v", ErrInvalidPrefix, p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	what := "unblock " + q.String()
	if q.IsSingleIP() {
		set, _ := f.l.familySets(q.Addr().Is4())
		return f.run(what, nil, []unit{{set: set, remove: []nftables.SetElement{addrElem(q.Addr(), 0)}}})
	}
	old, had := f.nets[q]
	if !had {
		return nil
	}
	now := f.now()
	delete(f.nets, q)
	f.pruneNets(now)
	err := f.applyNets(what, fam(q.Addr().Is4()), now)
	if err != nil {
		f.nets[q] = old
	}
	return err
}

// pruneNets forgets prefixes whose deadline has passed (the kernel has
// removed or is removing their elements).
func (f *Firewall) pruneNets(now stamp) {
	for p, dl := range f.nets {
		if dl <= now {
			delete(f.nets, p)
		}
	}
}

// netSpans returns the spans of f.nets of one family.
func netSpans(nets map[netip.Prefix]stamp, i int) []span {
	out := make([]span, 0, len(nets))
	for p, dl := range nets {
		if fam(p.Addr().Is4()) != i {
			continue
		}
		lo, hi := prefixSpan(p)
		out = append(out, span{lo, hi, dl})
	}
	return out
}

// applyNets brings the interval set of family i in line with f.nets.
func (f *Firewall) applyNets(what string, i int, now stamp) error {
	if err := f.reloadIfStale(now); err != nil {
		return fmt.Errorf("nft: %s: %w", what, err)
	}
	next := envelope(netSpans(f.nets, i), famWidth(i))
	_, set := f.l.familySets(i == 0)
	units := f.spanUnits(set, famWidth(i), f.pieces[i], next, 0, now)
	if err := f.run(what, nil, units); err != nil {
		f.stale = true
		return err
	}
	f.pieces[i] = next
	return nil
}

// reloadIfStale reads the interval sets back after a failed batch.
func (f *Firewall) reloadIfStale(now stamp) error {
	if !f.stale {
		return nil
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	for i := range 2 {
		_, set := f.l.familySets(i == 0)
		els, err := c.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("read set %s: %w", set.Name, explain(err))
		}
		f.pieces[i] = decodeSpans(els, famWidth(i), now)
	}
	f.stale = false
	return nil
}

// spanUnits returns the units turning an interval set holding old into one
// holding next (both sorted and disjoint): removals first, then additions.
// A piece in both with deadlines at most tol apart is left alone.
func (f *Firewall) spanUnits(set *nftables.Set, width int, old, next []span, tol time.Duration, now stamp) []unit {
	var rem, add []unit
	drop := func(s span) { rem = append(rem, unit{set: set, remove: spanElems(s, width, 0)}) }
	put := func(s span) {
		add = append(add, unit{set: set, add: spanElems(s, width, f.netTimeoutFor(s.dl, now))})
	}
	i, j := 0, 0
	for i < len(old) && j < len(next) {
		o, n := old[i], next[j]
		c := o.lo.cmp(n.lo)
		if c == 0 {
			c = o.hi.cmp(n.hi)
		}
		switch {
		case c < 0:
			drop(o)
			i++
		case c > 0:
			put(n)
			j++
		default:
			if !sameDeadline(o.dl, n.dl, tol) && f.netTimeout {
				drop(o)
				put(n)
			}
			i++
			j++
		}
	}
	for ; i < len(old); i++ {
		drop(old[i])
	}
	for ; j < len(next); j++ {
		put(next[j])
	}
	return append(rem, add...)
}

// Sync makes the blocked sets hold exactly entries, reading what the kernel
// holds first (so it also repairs changes made behind the firewall's back).
// Elements whose time left is within a second of the wanted TTL are left
// alone; others are removed, added or refreshed. Entries with a negative TTL
// are taken as expired and left out; when a prefix appears twice, the
// longest TTL wins. An invalid prefix fails the whole call before anything
// changes. When there are more than MaxEntries addresses of a family or
// MaxEntries wider prefixes, the first MaxEntries of each kind (in the
// order given) are installed and the error is a *FullError naming the
// others. A change that fits one batch (4 MiB: about 100,000 new addresses
// or 35,000 refreshed ones) is applied atomically; a larger one is split,
// removals first.
func (f *Firewall) Sync(entries []Entry) error {
	var addrs [2]map[netip.Addr]stamp
	addrs[0], addrs[1] = map[netip.Addr]stamp{}, map[netip.Addr]stamp{}
	nets := make(map[netip.Prefix]stamp)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	now := f.now()
	for _, e := range entries {
		if _, ok := normalize(e.Prefix); !ok {
			return fmt.Errorf("%w: sync: %v", ErrInvalidPrefix, e.Prefix)
		}
	}
	var full *FullError
	for _, e := range entries {
		q, _ := normalize(e.Prefix)
		if e.TTL < 0 {
			continue
		}
		dl := f.deadline(now, e.TTL)
		if q.IsSingleIP() {
			m := addrs[fam(q.Addr().Is4())]
			old, held := m[q.Addr()]
			switch {
			case !held && len(m) >= f.opts.MaxEntries:
				full = appendMissing(full, q)
			case !held || dl > old:
				m[q.Addr()] = dl
			}
			continue
		}
		old, held := nets[q]
		switch {
		case !held && len(nets) >= f.opts.MaxEntries:
			full = appendMissing(full, q)
		case !held || dl > old:
			nets[q] = dl
		}
	}

	c, err := f.conn()
	if err != nil {
		return fmt.Errorf("nft: sync: %w", err)
	}
	var units []unit
	var next [2][]span
	for i := range 2 {
		w := famWidth(i)
		addrSet, netSet := f.l.familySets(i == 0)
		els, err := c.GetSetElements(addrSet)
		if err != nil {
			return fmt.Errorf("nft: sync: read set %s: %w", addrSet.Name, explain(err))
		}
		have := decodeAddrs(els, w, now)
		for a := range have {
			if _, ok := addrs[i][a]; !ok {
				units = append(units, unit{set: addrSet, remove: []nftables.SetElement{addrElem(a, 0)}})
			}
		}
		for a, dl := range addrs[i] {
			u := unit{set: addrSet, add: []nftables.SetElement{addrElem(a, timeoutFor(dl, now))}}
			if old, ok := have[a]; ok {
				if sameDeadline(old, dl, syncTolerance) {
					continue
				}
				u.remove = []nftables.SetElement{addrElem(a, 0)}
			}
			units = append(units, u)
		}
		if els, err = c.GetSetElements(netSet); err != nil {
			return fmt.Errorf("nft: sync: read set %s: %w", netSet.Name, explain(err))
		}
		cur := decodeSpans(els, w, now)
		next[i] = envelope(netSpans(nets, i), w)
		units = append(units, f.spanUnits(netSet, w, cur, next[i], syncTolerance, now)...)
	}
	if err := f.run(fmt.Sprintf("sync %d entries", len(entries)), nil, units); err != nil {
		f.stale = true
		return err
	}
	f.nets, f.pieces, f.stale = nets, next, false
	if full != nil {
		return full
	}
	return nil
}

func appendMissing(full *FullError, p netip.Prefix) *FullError {
	if full == nil {
		full = &FullError{}
	}
	full.Missing = append(full.Missing, p)
	return full
}

// sameDeadline reports whether two deadlines are at most tol apart.
func sameDeadline(a, b stamp, tol time.Duration) bool {
	if a == never || b == never {
		return a == b
	}
	d := a - b
	return d <= stamp(tol) && -d <= stamp(tol)
}

// SetTrunks replaces the allow-list (sets trunks4 and trunks6) with ps,
// merged (contained and adjacent prefixes collapse). It matters only with
// Options.TrunksOnly, where SIP packets from other sources are dropped: ps
// must hold every peer that sends to the SIP ports, the SBC passes the
// trunks' sources and the pool targets (backends answer and send requests
// to the internal listeners).
func (f *Firewall) SetTrunks(ps []netip.Prefix) error {
	for _, p := range ps {
		if _, ok := normalize(p); !ok {
			return fmt.Errorf("%w: trunk %v", ErrInvalidPrefix, p)
		}
	}
	v4, v6 := splitFamilies(ps, never)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	var units []unit
	for _, s := range envelope(v4, 32) {
		units = append(units, unit{set: f.l.trunks4, add: spanElems(s, 32, 0)})
	}
	for _, s := range envelope(v6, 128) {
		units = append(units, unit{set: f.l.trunks6, add: spanElems(s, 128, 0)})
	}
	head := func(c *nftables.Conn) error {
		c.FlushSet(f.l.trunks4)
		c.FlushSet(f.l.trunks6)
		return nil
	}
	return f.run(fmt.Sprintf("set %d trunks", len(ps)), head, units)
}

// Counters reads the table's named counters.
func (f *Firewall) Counters() (Counters, error) {
	if f.closed.Load() {
		return Counters{}, ErrClosed
	}
	c, err := f.conn()
	if err != nil {
		return Counters{}, fmt.Errorf("nft: counters: %w", err)
	}
	blocked, notTrunk, err := readCounters(c, f.l.table)
	if err != nil {
		return Counters{}, fmt.Errorf("nft: counters: %w", explain(err))
	}
	return Counters{
		BlockedPackets: blocked.Packets, BlockedBytes: blocked.Bytes,
		NotTrunkPackets: notTrunk.Packets, NotTrunkBytes: notTrunk.Bytes,
	}, nil
}

// readCounters reads the table's two named counters (zero when missing).
func readCounters(c *nftables.Conn, t *nftables.Table) (blocked, notTrunk nftables.CounterObj, err error) {
	objs, err := c.GetObjects(t)
	if err != nil {
		return blocked, notTrunk, err
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			switch co.Name {
			case CounterBlocked:
				blocked = *co
			case CounterNotTrunk:
				notTrunk = *co
			}
		}
	}
	return blocked, notTrunk, nil
}

// Close releases the Firewall and leaves the table in place, so blocking
// goes on and the next New adopts it. It does not close Options.NetNS.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed.Store(true)
	return nil
}

// Remove deletes the table (sets, counters, chains and rules) and closes
// the Firewall. Removing a table that is already gone is not an error; on
// a closed Firewall Remove returns ErrClosed (a new one can remove it).
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	c, err := f.conn()
	if err != nil {
		return fmt.Errorf("nft: remove: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nft: remove: list tables: %w", explain(err))
	}
	if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == f.opts.Table }) {
		c.DelTable(f.l.table)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nft: remove table inet %s: %w", f.opts.Table, explain(err))
		}
	}
	f.closed.Store(true)
	return nil
}
