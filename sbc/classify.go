package sbc

import (
	"net/netip"

	"github.com/sbc-project/sbc/policy"
)

// Stage 1, classify: which trunk sent this? A request on a carrier-facing
// realm is admitted only from a trunk's source prefixes (longest prefix
// wins); anything else is an unknown source, dropped silently by default or
// answered 403 if the policy says so, and counted either way.

// trunkTable maps source addresses to trunks.
type trunkTable struct {
	entries []trunkEntry
}

type trunkEntry struct {
	prefix netip.Prefix
	trunk  *policy.Trunk
}

func newTrunkTable(p *policy.Policy) trunkTable {
	var t trunkTable
	for i := range p.Trunks {
		tr := &p.Trunks[i]
		for _, pf := range tr.Prefixes {
			t.entries = append(t.entries, trunkEntry{prefix: pf, trunk: tr})
		}
	}
	return t
}

// lookup returns the trunk whose longest prefix contains addr.
func (t trunkTable) lookup(addr netip.Addr) *policy.Trunk {
	addr = addr.Unmap()
	var best *policy.Trunk
	bits := -1
	for _, e := range t.entries {
		if e.prefix.Bits() > bits && e.prefix.Contains(addr) {
			best, bits = e.trunk, e.prefix.Bits()
		}
	}
	return best
}

// peer is what classify learned about a request's sender.
type peer struct {
	src     netip.AddrPort
	trunk   *policy.Trunk // nil for a backend or unknown source
	backend bool          // source is a target of a pool on this realm
}

// classify identifies the sender of a request arriving on realm ep.
func (s *SBC) classify(st *snapshot, ep *endpoint, src netip.AddrPort) peer {
	p := peer{src: src}
	if tr := st.trunks.lookup(src.Addr()); tr != nil && tr.Realm == ep.name {
		p.trunk = tr
		return p
	}
	for _, pl := range st.pools {
		if pl.cfg.Realm != ep.name {
			continue
		}
		for _, t := range pl.targets {
			if t.addr.Addr() == src.Addr().Unmap() {
				p.backend = true
				return p
			}
		}
	}
	return p
}
