package sbc

import (
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/sbc/validate"
)

// The read filter: before the SIP parser, every datagram's source is
// checked against the blocklist and its packet budget, and its bytes
// against the raw pre-parse checks. TCP sources are filtered at accept
// (acceptFilter, endpoint.go) with the same preParse.

// readFilter runs on every datagram of realm ep before sipgo parses it. It
// must not allocate on the drop path and must never return an error (an
// error stops sipgo's UDP read loop).
func (s *SBC) readFilter(ep *endpoint) sip.TransportReadFilter {
	return func(info sip.TransportReadProps, data []byte) ([]byte, error) {
		ua, ok := info.RemoteAddr.(*net.UDPAddr)
		if !ok {
			// TCP: chunks of a stream, not messages. Sources were
			// filtered when the connection was accepted.
			return data, nil
		}
		ip, _ := netip.AddrFromSlice(ua.IP)
		ip = ip.Unmap()
		if r := s.preParse(ep, ip); r != "" {
			// Per packet, maybe a flood: act allocates nothing here
			// unless its rate-limited log line goes out.
			s.act(nil, peer{src: netip.AddrPortFrom(ip, uint16(ua.Port))}, nil, nil, silent(stageFilter, r))
			return nil, nil
		}
		if r := validate.Raw(data, s.def.valOpt); r != nil {
			src := netip.AddrPortFrom(ip, uint16(ua.Port))
			s.act(nil, s.sourcePeer(src), nil, nil, validateVerdict(r))
			return nil, nil
		}
		return data, nil
	}
}

// preParse decides on a source arriving on realm ep before any parsing:
// "" to pass, else the reason of the drop. It runs for every datagram and
// every accepted TCP connection, so it must not allocate.
//
// A trunk's source on the trunk's realm and a pool target on its pool's
// realm have the trunks' packet budget (limits.trunk_pps), in a table of
// its own; every other source, a trunk's address on another realm
// included, has limits.source_pps.
func (s *SBC) preParse(ep *endpoint, src netip.Addr) reason {
	d := s.def
	if d.blocklist.Blocked(src) {
		return reasonBlocked
	}
	st := s.state.Load()
	key := acl.SourceKey(src)
	if st.peerOn(ep.name, src) {
		if ok, _ := d.tpps.Check(key, time.Now(), 1, 1); !ok {
			return reasonTrunkPPS
		}
		return ""
	}
	if ok, _ := d.pps.Check(key, time.Now(), 1, 1); !ok {
		return reasonSourcePPS
	}
	return ""
}

// peerOn reports whether src is a source of a trunk of realm, or a target
// of a pool of realm.
func (st *snapshot) peerOn(realm string, src netip.Addr) bool {
	if name, ok := st.trunks.Lookup(src); ok {
		if t := st.pol.Trunk(name); t != nil && t.Realm == realm {
			return true
		}
	}
	return st.targetOn[realmAddr{realm, src}]
}
