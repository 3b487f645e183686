package sbc

import (
	"net/netip"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Stage 1, classify: which trunk sent this? A request on a carrier-facing
// realm is admitted only from a trunk's source prefixes (longest prefix
// wins); anything else is an unknown source, dropped silently by default or
// answered 403 if the policy says so, and counted either way.

// peer is what classify learned about a request's sender.
type peer struct {
	src     netip.AddrPort
	trunk   *policy.Trunk // nil for a backend or unknown source
	backend bool          // source is a target of a pool on this realm
}

// classify identifies the sender of a request arriving on realm ep.
func (s *SBC) classify(st *snapshot, ep *endpoint, src netip.AddrPort) peer {
	p := peer{src: src}
	if name, ok := st.trunks.Lookup(src.Addr()); ok {
		if tr := st.pol.Trunk(name); tr != nil && tr.Realm == ep.name {
			p.trunk = tr
			return p
		}
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

// scanner reports whether the request's User-Agent is a known scanner's.
func (s *SBC) scanner(req *sip.Request) (string, bool) {
	h := req.GetHeader("User-Agent")
	if h == nil {
		return "", false
	}
	return s.def.scanner.Load().Match(h.Value())
}
