package srtp

import (
	"net/netip"
	"time"
)

// KernelPath is an in-kernel relay for plain RTP (package srtp/kfwd's
// Forwarder): once both legs of a plain↔plain stream are latched, the
// stream offloads each direction of each socket pair as an exact flow
// (the latched source → the relay socket, sent on as the other leg's
// relay socket → its latched source), so that those packets no longer
// wake user space. Anything else still reaches the sockets: other sources
// (dropped as not_latched_source), STUN, DTLS, and every packet of a
// stream that is not plain on both legs, normalised, or has a
// DatagramHandler.
type KernelPath interface {
	// Offload installs the forwarding of datagrams from src to local.
	Offload(src, local, from, to netip.AddrPort) error
	// Unload removes it.
	Unload(src, local netip.AddrPort)
	// Counters reports what the kernel relayed for the flow: packets,
	// bytes at the interface (with Ethernet, IPv4 and UDP headers) and
	// the time of the last packet.
	Counters(src, local netip.AddrPort) (packets, bytes uint64, last time.Time, ok bool)
}

// kernelHeaders is what a kernel flow's byte count has beyond the UDP
// payload that the relay counts (Ethernet 14, IPv4 20, UDP 8).
const kernelHeaders = 14 + 20 + 8

// kflow is one offloaded direction: packets into k from src.
type kflow struct {
	k          *sock
	src, local netip.AddrPort
}

// plainLeg: nothing of the leg's packets needs user space once latched.
func plainLeg(l *leg) bool {
	if _, ok := l.transform.Load().t.(Plain); !ok {
		return false
	}
	return l.norm == nil && l.handler.Load().h == nil
}

// maybeOffload installs the kernel flows of every socket pair whose two
// sockets are latched, if the stream qualifies. It runs when a socket
// latches (rare), on the goroutine that relays it.
func (s *Stream) maybeOffload() {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	if s.closed.Load() || !plainLeg(s.legs[0]) || !plainLeg(s.legs[1]) {
		return
	}
	a, b := s.legs[0], s.legs[1]
	if (a.rtcp == a.rtp) != (b.rtcp == b.rtp) {
		return // RTCP muxed on one leg only: a flow cannot tell RTP from RTCP
	}
	pairs := [][2]*sock{{a.rtp, b.rtp}}
	if a.rtcp != a.rtp {
		pairs = append(pairs, [2]*sock{a.rtcp, b.rtcp})
	}
	for i, p := range pairs {
		if s.kpair[i] {
			continue
		}
		x, y := p[0].latch.Load(), p[1].latch.Load()
		if !x.latched || !y.latched {
			continue
		}
		lx, ly := p[0].local, p[1].local
		if err := s.kernel.Offload(x.source, lx, ly, y.source); err != nil {
			s.kerrors.Add(1)
			continue
		}
		if err := s.kernel.Offload(y.source, ly, lx, x.source); err != nil {
			s.kernel.Unload(x.source, lx)
			s.kerrors.Add(1)
			continue
		}
		s.kpair[i] = true
		s.kflows = append(s.kflows, kflow{p[0], x.source, lx}, kflow{p[1], y.source, ly})
	}
}

// unloadKernel takes every flow back to user space, folding what the
// kernel counted into the legs' counters.
func (s *Stream) unloadKernel() {
	if s.kernel == nil {
		return
	}
	s.kmu.Lock()
	defer s.kmu.Unlock()
	for _, f := range s.kflows {
		pk, by, last, ok := s.kernel.Counters(f.src, f.local)
		s.kernel.Unload(f.src, f.local)
		if ok {
			addKernel(&f.k.leg.c, f.k.rtcpOnly, pk, by)
			if !last.IsZero() {
				for n := last.UnixNano(); ; {
					old := f.k.leg.lastRx.Load()
					if old >= n || f.k.leg.lastRx.CompareAndSwap(old, n) {
						break
					}
				}
			}
		}
	}
	s.kflows = s.kflows[:0]
	s.kpair = [2]bool{}
}

func addKernel(c *counters, rtcp bool, packets, bytes uint64) {
	c.packets.Add(packets)
	c.forwarded.Add(packets)
	c.offloaded.Add(packets)
	c.bytes.Add(bytes - min(bytes, packets*kernelHeaders))
	if rtcp {
		c.rtcp.Add(packets)
	}
}

// kernelLast returns the last kernel packet time per leg (Unix ns, 0 if
// none).
func (s *Stream) kernelLast() [2]int64 {
	if s.kernel == nil {
		return [2]int64{}
	}
	s.kmu.Lock()
	defer s.kmu.Unlock()
	return s.kernelStatsLocked(nil)
}

// kernelStatsLocked adds the live kernel counters to st (if not nil), and
// returns the last kernel packet time per leg. s.kmu is held.
func (s *Stream) kernelStatsLocked(st *StreamStats) (last [2]int64) {
	for _, f := range s.kflows {
		pk, by, t, ok := s.kernel.Counters(f.src, f.local)
		if !ok {
			continue
		}
		id := f.k.leg.id
		if st != nil {
			p := [2]*LegStats{&st.A, &st.B}[id]
			p.Packets += pk
			p.Forwarded += pk
			p.Bytes += by - min(by, pk*kernelHeaders)
			if f.k.rtcpOnly {
				p.RTCPPackets += pk
			}
			p.Offloaded += pk
		}
		if !t.IsZero() && t.UnixNano() > last[id] {
			last[id] = t.UnixNano()
		}
	}
	return last
}
