package sbc

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Connections sipgo opens on its own (TCP and TLS): towards pool
// targets and trunks for the SBC's requests, but also, when a peer's
// connection is gone before its request's transaction is made, towards
// whatever its Via names, to answer there (RFC 3261 18.2.2). A peer that
// sends a request and closes at once could so make the SBC connect to any
// address and port it likes, and keep the connection (and a pool entry)
// until it idles out. The SBC connects to the sources of the realm's
// trunks and the targets of its pools only (in the snapshot in force or
// one a call still uses); any other connection is refused before it is
// made, counted (bridge/dial_refused), and the request it was for is
// dropped.

// errDialRefused is the error of a refused connection.
var errDialRefused = errors.New("sbc: no connection to an address that is no trunk source and no pool target")

// dialer is sipgo's DialerCreate for the realm's TCP and TLS transports.
func (ep *endpoint) dialer(laddr net.Addr) net.Dialer {
	return net.Dialer{LocalAddr: laddr, Timeout: 10 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return errDialRefused
			}
			if !ep.sbc.mayDial(ep, ap.Addr().Unmap()) {
				ep.sbc.act(ep, peer{src: ap}, nil, nil, silent(stageBridge, reasonDialRefused))
				return errDialRefused
			}
			return nil
		}}
}

// mayDial reports whether the SBC connects to addr from realm ep.
func (s *SBC) mayDial(ep *endpoint, addr netip.Addr) bool {
	known := func(st *snapshot) bool { return st.peerOn(ep.name, addr) }
	if known(s.state.Load()) {
		return true
	}
	if old := s.snaps.retired.Load(); old != nil {
		for _, o := range *old {
			if known(o) {
				return true
			}
		}
	}
	return false
}
