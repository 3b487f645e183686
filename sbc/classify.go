package sbc

import (
	"net/netip"
	"slices"

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
	pool    string        // a backend's pool (the first in the policy with its address:port, else its address)
	// why a source that looked like a trunk's is not that trunk (its TLS
	// identity does not hold); "" otherwise.
	why reason
}

// classify identifies the sender of a message arriving on realm ep over
// transport ("udp", "TLS", ...; "" for the source address alone). Over TLS
// and WSS, a verified client certificate that a trunk of the realm claims
// (tls_identities) names the trunk, if the source is also one of the
// trunk's sources when it has any; otherwise, and on other transports,
// the longest source prefix does, unless that trunk requires an identity.
// A trunk with transports is recognised on those only. A source that
// looks like a trunk's but is not (why) is never charged a failure: its
// address may be forged.
func (s *SBC) classify(st *snapshot, ep *endpoint, src netip.AddrPort, transport string) peer {
	p := peer{src: src}
	if len(st.tls.ids) > 0 && secureTransport(transport) {
		if v, ok := s.tlsPeers.Load(peerKey(ep.name, src)); ok {
			if tr := st.tls.trunkOf(v.(*tlsPeer).cert, ep.name); tr != nil {
				switch {
				case len(tr.Prefixes) > 0 && !slices.ContainsFunc(tr.Prefixes, func(pf netip.Prefix) bool { return pf.Contains(src.Addr()) }):
					p.why = reasonTLSIdentity
				case !tr.OnTransport(transport):
					p.why = reasonTrunkTransport
				default:
					p.trunk = tr
					// A handshake proved this address: a spoofer's junk in
					// its name must not block it (trust.go).
					s.def.learn(src.Addr(), tr.Name)
				}
				return p
			}
		}
	}
	if name, ok := st.trunks.Lookup(src.Addr()); ok {
		if tr := st.pol.Trunk(name); tr != nil && tr.Realm == ep.name {
			switch {
			case len(tr.Identities) > 0:
				p.why = reasonTLSNeedIdentity
			case transport != "" && !tr.OnTransport(transport):
				p.why = reasonTrunkTransport
			default:
				p.trunk = tr
			}
			return p
		}
	}
	// Pools in policy order, so that a source in two pools is always
	// the same pool's.
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	for i := range st.pol.Pools {
		pc := &st.pol.Pools[i]
		if pc.Realm != ep.name {
			continue
		}
		for _, t := range pc.Targets {
			if t.Addr.Addr() != src.Addr() {
				continue
			}
			if !p.backend {
				p.backend, p.pool = true, pc.Name
			}
			if t.Addr == src {
				p.pool = pc.Name
				return p
			}
		}
	}
	return p
}

// classifyRequest is stage 1 for a request other than ACK: its sender,
// and the verdict on a sender that may not send it (the zero verdict when
// it may). Known scanners are dropped whoever they claim to be; unknown
// sources are dropped or answered 403 per policy, and charged either way.
func (s *SBC) classifyRequest(st *snapshot, ep *endpoint, req *sip.Request) (peer, verdict) {
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return peer{}, silent(stageClassify, reasonBadSource).with("source_raw", req.Source())
	}
	p := s.classify(st, ep, src, req.Transport())
	if pattern, scan := s.scanner(req); scan && !p.backend {
		// Never answered: a scanner learns nothing, not even 100 Trying.
		return p, silent(stageClassify, reasonScannerUA).charge(failScannerUA).with("pattern", pattern)
	}
	if p.trunk == nil && !p.backend {
		r := reasonUnknownSource
		if p.why != "" {
			r = p.why
		}
		v := silent(stageClassify, r)
		if st.pol.Headers.UnknownSourceAction == "reject" {
			v = answer(stageClassify, r, 403, "Forbidden")
		}
		if p.why != "" {
			// A trunk's address without the trunk's certificate, or
			// over a transport the trunk does not use: the address may
			// be forged (UDP) or the trunk misconfigured; neither is
			// charged to the trunk's source.
			return p, v
		}
		return p, v.charge(failUnknownSource)
	}
	return p, verdict{}
}

// sourcePeer is what the read filter knows of a datagram's sender before
// any realm applies: its address, and its trunk if a trunk's prefix holds
// it (only whether it is a trunk's matters there: trunks are spared blocks
// unless the policy says otherwise).
func (s *SBC) sourcePeer(src netip.AddrPort) peer {
	st := s.state.Load()
	p := peer{src: src}
	if name, ok := st.trunks.Lookup(src.Addr()); ok {
		p.trunk = st.pol.Trunk(name)
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
