package sbc

import (
	"bytes"
	"net"
	"net/netip"
	"time"
)

// Overload: shedding new work that has waited too long.
//
// Past its capacity the SBC reads its UDP sockets slower than they are
// written to: datagrams wait in the kernel's receive queue (4 MiB holds
// seconds of them), and every request read late is one the sender has
// already retransmitted (T1 = 500 ms) or given up on. Working through such
// a backlog is work for nobody: each stale INVITE still becomes a call, a
// B-leg INVITE, a target timeout, a CANCEL and a 503 that is retransmitted
// for 32 s, while the fresh requests behind it wait in turn. Measured
// (BENCHMARKS.md, "Overload recovery"): after an overloaded step the SBC
// answered none of the calls of a step at a rate it carried before, with
// its sockets' queues full and ~60,000 goroutines of stale transactions,
// and recovered only once the load stopped altogether.
//
// So each UDP datagram carries the kernel's receive time (SO_TIMESTAMPNS,
// rxstamp_linux.go), and a request that waited longer than
// limits.queue_delay is dropped before it is parsed (stage filter, reason
// overload): the sender retransmits it, and the retransmission meets a
// shorter queue. Responses, ACK, BYE and CANCEL are never shed: they end
// work in progress (a transaction, a call) rather than start it. The
// drop is never charged to the source: overload is the SBC's state, not
// the sender's fault, so neither a trunk nor a spoofer's victim can be
// blocked for it (issue 12's rule).
//
// Limits: UDP only (a TCP or TLS peer's messages wait in its own stream,
// and TCP pushes back on the sender); the stamp is wall-clock time, so a
// step of the system clock forward by more than queue_delay sheds the
// requests queued at that moment once (their senders retransmit them).

// shed reports whether the datagram b from addr, which waited in the
// receive queue for waited (from the kernel's receive stamp), is a
// request to drop for that delay, and counts the drop. A blocked source's
// request is left to the read filter, so that a flood from blocked
// sources is counted as blocked however late it is read. It runs in the
// socket's read loop for every datagram: no allocation.
func (u *udpPeers) shed(b []byte, addr net.Addr, waited time.Duration) bool {
	s := u.ep.sbc
	limit := s.state.Load().pol.Limits.QueueDelay.Duration
	if limit <= 0 || waited <= limit || !sheddable(b) {
		return false
	}
	var src netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(ua.IP)
		src = netip.AddrPortFrom(ip.Unmap(), uint16(ua.Port))
		if s.def.blocklist.Blocked(src.Addr()) {
			return false // the read filter drops it, counted as blocked
		}
	}
	s.act(u.ep, peer{src: src}, nil, nil, silent(stageFilter, reasonOverload))
	return true
}

// sheddable: a request that starts work (not a response, not ACK, BYE or
// CANCEL).
func sheddable(b []byte) bool {
	switch {
	case bytes.HasPrefix(b, []byte("SIP/")),
		bytes.HasPrefix(b, []byte("ACK ")),
		bytes.HasPrefix(b, []byte("BYE ")),
		bytes.HasPrefix(b, []byte("CANCEL ")):
		return false
	}
	// Keep-alives (CRLF) and junk are not requests: the read filter and
	// the parser deal with them.
	sp := bytes.IndexByte(b, ' ')
	return sp > 0 && sp <= 16
}
