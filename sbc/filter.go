package sbc

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/sbc/validate"
)

// The read filter: before the SIP parser, every datagram's source is
// checked against the blocklist and its packet budget, the gate for
// unknown sources (gate.go), and its bytes against the raw pre-parse
// checks. TCP sources are filtered at accept (acceptFilter, endpoint.go)
// with the same preParse and gate, and so are TLS and WSS ones; then
// each message on a TCP or TLS connection is checked by streamConn
// (stream.go), and each WebSocket message here, like a datagram.

// tracedFilter is readFilter, and gives what it passes to the HEP export
// (hep.go).
func (s *SBC) tracedFilter(ep *endpoint) sip.TransportReadFilter {
	f := s.readFilter(ep)
	return func(info sip.TransportReadProps, data []byte) ([]byte, error) {
		out, err := f(info, data)
		if out != nil && err == nil {
			s.hepRead(info, out)
		}
		return out, err
	}
}

// readFilter runs on every datagram (and WebSocket message) of realm ep
// before sipgo parses it. It must not allocate on the drop path and must
// never return an error for a datagram (an error stops sipgo's UDP read
// loop; on a WebSocket connection it closes the connection).
func (s *SBC) readFilter(ep *endpoint) sip.TransportReadFilter {
	return func(info sip.TransportReadProps, data []byte) ([]byte, error) {
		ua, ok := info.RemoteAddr.(*net.UDPAddr)
		if !ok {
			if info.Transport == "WS" || info.Transport == "WSS" {
				return s.filterWSMessage(ep, info.RemoteAddr, data)
			}
			// TCP, TLS: chunks of a stream, not messages; streamConn
			// checked the messages in them.
			return data, nil
		}
		ip, _ := netip.AddrFromSlice(ua.IP)
		ip = ip.Unmap()
		// An unknown source is dropped before its packet budget is
		// looked at (a spoofed flood makes no buckets), as blocked if it
		// is, else at the gate.
		if r, charge := s.unknown(s.state.Load(), ep, ip, "udp"); r != "" {
			v := silent(stageFilter, r)
			switch {
			case s.def.blocklist.Blocked(ip):
				v = silent(stageFilter, reasonBlocked)
			case charge:
				v = v.charge(failUnknownSource)
			}
			// Per packet, maybe a flood: act allocates nothing here
			// unless its rate-limited log line goes out (or the
			// failure tracker meets a new source).
			s.act(ep, peer{src: netip.AddrPortFrom(ip, uint16(ua.Port))}, nil, nil, v)
			return nil, nil
		}
		if r := s.preParse(ep, ip); r != "" {
			s.act(nil, peer{src: netip.AddrPortFrom(ip, uint16(ua.Port))}, nil, nil, silent(stageFilter, r))
			return nil, nil
		}
		if r := validate.Raw(data, s.def.valOpt); r != nil {
			src := netip.AddrPortFrom(ip, uint16(ua.Port))
			s.act(nil, s.sourcePeer(src), nil, nil, validateVerdict(r))
			return nil, nil
		}
		if u := ep.peers; u != nil {
			// sipgo is about to remember this source (udppeers.go).
			if u.full.Load() && !s.state.Load().backends[ip] && !u.known(ua) {
				s.act(ep, peer{src: netip.AddrPortFrom(ip, uint16(ua.Port))}, nil, nil, silent(stageFilter, reasonUDPPeersFull))
				return nil, nil
			}
			u.passedOne()
		}
		return data, nil
	}
}

// filterWSMessage checks one WebSocket message of an open wss (or ws)
// connection, like a datagram: a source blocked since the connection was
// accepted loses it (the error makes sipgo close it), a message over the
// packet budget or failing the raw checks is dropped.
func (s *SBC) filterWSMessage(ep *endpoint, ra net.Addr, data []byte) ([]byte, error) {
	ap, err := netip.ParseAddrPort(ra.String())
	if err != nil {
		return data, nil
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if len(data) <= 4 && onlyCRLF(data) {
		return data, nil // keep-alive: sipgo answers it
	}
	switch r := s.preParse(ep, ap.Addr()); r {
	case "":
	case reasonBlocked:
		s.act(ep, peer{src: ap}, nil, nil, silent(stageStream, r))
		return nil, errConnBlocked
	default:
		s.act(ep, peer{src: ap}, nil, nil, silent(stageStream, r))
		return nil, nil
	}
	if r := validate.Raw(data, s.def.valOpt); r != nil {
		s.act(ep, s.sourcePeer(ap), nil, nil, validateVerdict(r))
		return nil, nil
	}
	return data, nil
}

// errConnBlocked closes a connection whose source was blocked while it
// was open.
var errConnBlocked = errors.New("source blocked")

func onlyCRLF(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
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
