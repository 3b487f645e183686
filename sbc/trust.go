package sbc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
)

// The trust model: what a forged source address can and cannot cause.
//
// A UDP datagram's source address is whatever its sender wrote. Anything
// the SBC concludes from a message that needs no answer to be sent (a
// malformed or junk datagram, a request for a dialog that does not exist,
// a scanner's User-Agent, a REGISTER for a domain not allowed, and the
// outcome of a call that the sender never has to see: the backend's
// 403/404, a failed authentication) can be forged in anybody's name. So:
//
//   - Such failures are never charged to an address that a trunk's
//     sources cover (on any realm) or to a pool target: they count for the
//     trunk (sbc_trunk_failures_total, the "trunk health" line) and charge
//     nobody. Trunks are never demoted or blocked automatically, and the
//     outcomes of the calls a carrier relays are its callers', not its own.
//   - Failures that prove a return path can block: a REGISTER guess that
//     answers a challenge the registrar sent to that very address (its
//     nonce, see register_guard.go), or that came over a connection (the
//     TCP handshake needs the return path). They are counted per source
//     and AoR by the Guard; a source that may register (a trunk with
//     allow_register) can be blocked for them, one source key at a time.
//   - Never blocked, automatically or by hand unless forced: the sources
//     of trunks that may not register, the pool targets, the admin
//     listener's address and the clients that authenticated to it, the addresses of TLS connections
//     that proved a trunk's certificate, and never_block (protections,
//     peerSet). IPv6 blocks widened to a /56 or /48 obey the same list.
//   - Packet budgets: trunk sources on their own realm and pool targets on
//     their pool's realm have limits.trunk_pps (high), others
//     limits.source_pps; a trunk's address on another realm is an ordinary
//     source.
//
// What a spoofer can still do: send in a UDP trunk's name. Its forged
// INVITEs are calls of that trunk (they use its cps and max_calls), its
// forged datagrams use the trunk's packet budget. A trunk that needs a
// stronger identity sends over TCP or TLS and says so (transports,
// tls_identities): forged UDP in its name is then dropped as
// trunk_transport or tls_identity_needed, and charged to nobody.

// protection is one never-block prefix and what it protects, for the
// messages that refuse a block.
type protection struct {
	prefix netip.Prefix
	what   string
}

// protections is the policy's part of the never-block list: never_block,
// the sources of every trunk that may not register, every pool target and
// the admin listener's address.
func protections(p *policy.Policy) []protection {
	var out []protection
	for _, pf := range p.AutoBlock.NeverBlockPrefixes {
		out = append(out, protection{pf, "autoblock.never_block"})
	}
	for _, t := range p.Trunks {
		if t.AllowRegister {
			continue // its sources are phones: a proven guesser among them is blocked
		}
		for _, pf := range t.Prefixes {
			out = append(out, protection{pf, fmt.Sprintf("trunk %q", t.Name)})
		}
	}
	for _, pl := range p.Pools {
		for _, t := range pl.Targets {
			a := t.Addr.Addr().Unmap()
			out = append(out, protection{netip.PrefixFrom(a, a.BitLen()), fmt.Sprintf("pool %q target %s", pl.Name, t.Addr)})
		}
	}
	if a := p.Admin.Addr.Addr(); a.IsValid() && !a.IsUnspecified() {
		out = append(out, protection{netip.PrefixFrom(a, a.BitLen()), "the admin listener"})
	}
	return out
}

// maxPeers bounds the addresses learnt at run time (peerSet).
const maxPeers = 256

// peerSet holds addresses learnt at run time that are never blocked: the
// clients that authenticated to the admin API, and the sources of TLS connections whose
// certificate identified a trunk. It is bounded (maxPeers, the oldest
// learnt go first); has is lock-free.
type peerSet struct {
	mu   sync.Mutex
	m    map[netip.Addr]peerMark
	snap atomic.Pointer[map[netip.Addr]peerMark]
}

// peerMark says what a learnt address is.
type peerMark struct {
	trunk string // the trunk a TLS connection from it proved; "" for an admin client
	added time.Time
}

func (m peerMark) what() string {
	if m.trunk != "" {
		return fmt.Sprintf("trunk %q (TLS peer)", m.trunk)
	}
	return "an admin listener client"
}

// has reports whether a is a learnt peer, and what it is.
func (ps *peerSet) has(a netip.Addr) (peerMark, bool) {
	m := ps.snap.Load()
	if m == nil {
		return peerMark{}, false
	}
	pm, ok := (*m)[a]
	return pm, ok
}

// learn adds a to the learnt peers (if new), and with it to the
// never-block list of the blocklist: a block that covers it is lifted.
func (d *defence) learn(a netip.Addr, trunk string) {
	a = a.Unmap()
	if _, ok := d.peers.has(a); ok || !a.IsValid() {
		return
	}
	d.peers.mu.Lock()
	if d.peers.m == nil {
		d.peers.m = map[netip.Addr]peerMark{}
	}
	if len(d.peers.m) >= maxPeers {
		oldest := netip.Addr{}
		for k, v := range d.peers.m {
			if !oldest.IsValid() || v.added.Before(d.peers.m[oldest].added) {
				oldest = k
			}
		}
		delete(d.peers.m, oldest)
	}
	d.peers.m[a] = peerMark{trunk: trunk, added: time.Now()}
	snap := maps.Clone(d.peers.m)
	d.peers.snap.Store(&snap)
	d.peers.mu.Unlock()
	d.neverMu.Lock()
	p := d.neverPol
	d.neverMu.Unlock()
	if p != nil {
		_ = d.setNeverBlock(p) // only fails once the blocklist is closed
	}
}

// setNeverBlock installs the never-block list of p and the learnt peers,
// and remembers p as the policy of the list in force (a peer learnt later
// is added to it). Once p validated (neverBlockList), its only error is
// the blocklist's closing.
func (d *defence) setNeverBlock(p *policy.Policy) error {
	d.neverMu.Lock()
	defer d.neverMu.Unlock()
	n, err := d.neverBlockList(p)
	if err != nil {
		return err
	}
	if _, err := d.blocklist.SetNeverBlockList(n); err != nil {
		return err
	}
	d.neverPol = p
	return nil
}

// neverBlockList is the never-block list of p and the learnt peers.
func (d *defence) neverBlockList(p *policy.Policy) (*acl.NeverBlockList, error) {
	list := neverBlock(p)
	if m := d.peers.snap.Load(); m != nil {
		for a := range *m {
			list = append(list, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return acl.NewNeverBlockList(list)
}

// protectedBy names what a prefix overlaps on the never-block list ("" if
// nothing): the message of a refused block.
func (s *SBC) protectedBy(pf netip.Prefix) string {
	pf = pf.Masked()
	var whats []string
	for _, pr := range protections(s.state.Load().pol) {
		if pr.prefix.Overlaps(pf) {
			whats = append(whats, fmt.Sprintf("%s (%s)", pr.what, pr.prefix))
		}
	}
	if m := s.def.peers.snap.Load(); m != nil {
		var learnt []string
		for a, pm := range *m {
			if pf.Contains(a) {
				learnt = append(learnt, fmt.Sprintf("%s (%s)", pm.what(), a))
			}
		}
		slices.Sort(learnt)
		whats = append(whats, learnt...)
	}
	if len(whats) == 0 {
		if nb, ok := s.def.blocklist.NeverBlocked(pf); ok {
			return "the never-block list (" + nb.String() + ")"
		}
		return ""
	}
	if len(whats) > 4 {
		whats = append(whats[:4], fmt.Sprintf("and %d more", len(whats)-4))
	}
	return strings.Join(whats, ", ")
}

// charge is the trust model for a failure that needs no return path (see
// above): a trunk's address counts it for the trunk, a pool target or a
// learnt peer for nobody, any other source gets it in the failure tracker.
func (s *SBC) charge(p peer, f failure) {
	addr := p.src.Addr().Unmap()
	tr := p.trunk
	st := s.state.Load()
	if tr == nil {
		if name, ok := st.trunks.Lookup(addr); ok {
			tr = st.pol.Trunk(name)
		}
	}
	if tr == nil {
		if pm, ok := s.def.peers.has(addr); ok && pm.trunk != "" {
			tr = st.pol.Trunk(pm.trunk)
		}
	}
	switch {
	case tr != nil:
		s.trunkFailure(tr.Name, f)
	case p.backend || st.backends[addr]:
	default:
		if _, ok := s.def.peers.has(addr); !ok {
			s.fail(addr, f)
		}
	}
}

// trunkHealth sums up each trunk's calls and the failures seen from its
// addresses since the last "trunk health" line.
type trunkHealth struct {
	mu sync.Mutex
	t  map[string]*trunkTally
}

type trunkTally struct {
	calls    map[string]uint64 // by result
	failures map[string]uint64 // by failure
}

func (h *trunkHealth) tally(trunk string) *trunkTally {
	if h.t == nil {
		h.t = map[string]*trunkTally{}
	}
	t := h.t[trunk]
	if t == nil {
		t = &trunkTally{calls: map[string]uint64{}, failures: map[string]uint64{}}
		h.t[trunk] = t
	}
	return t
}

// trunkCall counts a finished call of a trunk by result.
func (s *SBC) trunkCall(trunk, result string) {
	s.metrics.TrunkCalls.WithLabelValues(trunk, result).Inc()
	h := &s.def.health
	h.mu.Lock()
	h.tally(trunk).calls[result]++
	h.mu.Unlock()
}

// trunkFailure counts a failure seen from a trunk's address (charged to
// nobody: see charge).
func (s *SBC) trunkFailure(trunk string, f failure) {
	s.metrics.TrunkFailures.WithLabelValues(trunk, string(f)).Inc()
	h := &s.def.health
	h.mu.Lock()
	h.tally(trunk).failures[string(f)]++
	h.mu.Unlock()
}

// trunkHealthLoop writes the "trunk health" lines every
// autoblock.trunk_health_interval (read again after each line: a reload
// applies from the next one).
func (s *SBC) trunkHealthLoop(ctx context.Context) {
	for {
		iv := s.state.Load().pol.AutoBlock.TrunkHealthInterval.Duration
		wait := iv
		if wait <= 0 {
			wait = time.Minute // off: look again later
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if iv > 0 && s.state.Load().pol.AutoBlock.TrunkHealthInterval.Duration > 0 {
			s.logTrunkHealth()
		} else {
			s.takeTrunkHealth()
		}
	}
}

// takeTrunkHealth returns the tallies since the last call and starts new
// ones.
func (s *SBC) takeTrunkHealth() map[string]*trunkTally {
	h := &s.def.health
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.t
	h.t = nil
	return t
}

// logTrunkHealth writes one "trunk health" line per trunk with calls or
// failures since the last one: calls, answered, the answer ratio, the
// calls not answered by result, and the failures seen from the trunk's
// addresses (which were charged to nobody).
func (s *SBC) logTrunkHealth() {
	tallies := s.takeTrunkHealth()
	for _, name := range slices.Sorted(maps.Keys(tallies)) {
		t := tallies[name]
		var calls uint64
		failed := map[string]uint64{}
		for r, n := range t.calls {
			calls += n
			if r != resultAnswered {
				failed[r] = n
			}
		}
		var failures uint64
		for _, n := range t.failures {
			failures += n
		}
		ratio := 0.0
		if calls > 0 {
			ratio = math.Round(float64(t.calls[resultAnswered])/float64(calls)*1000) / 1000
		}
		s.log.Info("trunk health", "trunk", name, "calls", calls, "answered", t.calls[resultAnswered],
			"answer_ratio", ratio, "not_answered", failed, "failures_seen", failures,
			"failures", t.failures)
	}
}

// block puts an auto-block decided by the tracker on the blocklist, or
// says why it may not, then widens IPv6 blocks where aggregate_v6 says.
func (s *SBC) block(dec ratelimit.Decision, f failure, attrs ...any) {
	err := s.def.blocklist.Add(acl.Entry{
		Prefix: dec.Prefix, Reason: string(f), Origin: acl.OriginAuto,
		Created: time.Now(), Expires: dec.Until,
	})
	if err != nil {
		if errors.Is(err, acl.ErrNeverBlock) {
			s.log.Warn("auto-block refused: protected", append([]any{"prefix", dec.Prefix.String(), "reason", string(f),
				"protects", s.protectedBy(dec.Prefix)}, attrs...)...)
			return
		}
		s.log.Warn("auto-block refused", "prefix", dec.Prefix.String(), "reason", string(f), "error", err.Error())
		return
	}
	s.metrics.Blocks.WithLabelValues(blockOriginAuto, string(f)).Inc()
	s.log.Warn("source blocked", append([]any{"decision", dec}, attrs...)...)
	s.aggregate(dec.Prefix, f)
}

// aggregate widens IPv6 auto-blocks: autoblock.aggregate_v6 auto-blocked
// /64s inside one /56 become the /56, as many /56s inside one /48 the /48
// (the narrower entries are removed; the wider one lasts as long as the
// longest of them). Never where the wider prefix overlaps the never-block
// list: the narrower blocks then stay, and a line says why.
func (s *SBC) aggregate(pf netip.Prefix, f failure) {
	n := s.state.Load().pol.AutoBlock.AggregateV6
	if n < 2 || !pf.Addr().Is6() {
		return
	}
	bl := s.def.blocklist
	for _, step := range [...]struct{ child, parent int }{{64, 56}, {56, 48}} {
		if pf.Bits() != step.child {
			return
		}
		parent := netip.PrefixFrom(pf.Addr(), step.parent).Masked()
		var kids []acl.Entry
		var until time.Time
		forever := false
		for _, e := range bl.Within(parent) {
			if e.Prefix.Bits() != step.child || e.Origin != acl.OriginAuto {
				continue
			}
			kids = append(kids, e)
			if e.Expires.IsZero() {
				forever = true
			} else if e.Expires.After(until) {
				until = e.Expires
			}
		}
		if len(kids) < n {
			return
		}
		if forever {
			until = time.Time{}
		}
		if what := s.protectedBy(parent); what != "" {
			s.log.Warn("blocks not aggregated: protected", "prefix", parent.String(), "blocks", len(kids), "protects", what)
			return
		}
		if err := bl.Add(acl.Entry{Prefix: parent, Reason: string(f), Origin: acl.OriginAuto, Created: time.Now(), Expires: until}); err != nil {
			s.log.Warn("blocks not aggregated", "prefix", parent.String(), "blocks", len(kids), "error", err.Error())
			return
		}
		for _, e := range kids {
			bl.Remove(e.Prefix)
		}
		s.metrics.Blocks.WithLabelValues(blockOriginAggregate, string(f)).Inc()
		s.log.Warn("blocks aggregated", "prefix", parent.String(), "replaces", len(kids), "reason", string(f), "until", until)
		pf = parent
	}
}
