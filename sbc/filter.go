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

// readFilter runs on every datagram before sipgo parses it. It must not
// allocate on the drop path and must never return an error (an error stops
// sipgo's UDP read loop).
func (s *SBC) readFilter() sip.TransportReadFilter {
	return func(info sip.TransportReadProps, data []byte) ([]byte, error) {
		ua, ok := info.RemoteAddr.(*net.UDPAddr)
		if !ok {
			// TCP: chunks of a stream, not messages. Sources were
			// filtered when the connection was accepted.
			return data, nil
		}
		ip, _ := netip.AddrFromSlice(ua.IP)
		ip = ip.Unmap()
		if r := s.preParse(ip); r != "" {
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

// preParse decides on a source before any parsing: "" to pass, else the
// reason of the drop. It runs for every datagram and every accepted TCP
// connection, so it must not allocate.
func (s *SBC) preParse(src netip.Addr) reason {
	d := s.def
	if d.blocklist.Blocked(src) {
		return reasonBlocked
	}
	st := s.state.Load()
	if _, trunk := st.trunks.Lookup(src); trunk || st.backends[src] {
		return "" // trunks and backends are limited per call, not per packet
	}
	if ok, _ := d.pps.Check(acl.SourceKey(src), time.Now(), 1, 1); !ok {
		return reasonSourcePPS
	}
	return ""
}
