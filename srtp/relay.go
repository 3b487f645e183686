package srtp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

const (
	// readSize is the largest datagram relayed; a read that fills it may
	// have been truncated and is dropped as malformed.
	readSize = 2048
	// trailer is the room left after a packet for what SRTP appends
	// (GCM tag 16 or HMAC tag 10, SRTCP index 4, MKI up to 8).
	trailer = 64
	// maxReadErrors ends a reader after that many consecutive read errors
	// that are not a close (a broken socket must not spin a core).
	maxReadErrors = 1000
)

// serve is a socket's reader goroutine. The buffer is its own for the
// goroutine's life: decrypt and encrypt work in place in it.
func (s *Stream) serve(k *sock) {
	defer s.wg.Done()
	buf := make([]byte, readSize+trailer)
	sio := newSockIO()
	errs := 0
	for errs < maxReadErrors {
		n, src, err := sio.read(k, buf[:readSize])
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			k.leg.c.readErrors.Add(1)
			errs++
			continue
		}
		errs = 0
		s.handle(k, sio, buf, n, src, 0)
	}
}

// handle runs one datagram through demux, latch, inbound transform,
// normalisation, outbound transform and send. No allocation on the way,
// except when the leg latches (once). now is the receive time in Unix
// nanoseconds (a relay loop reads the clock once per batch), 0 to read
// it here.
func (s *Stream) handle(k *sock, sio *sockIO, buf []byte, n int, src netip.AddrPort, now int64) {
	l := k.leg
	if n == 0 {
		l.drop(DropMalformed)
		return
	}
	pkt := buf[:n]
	// An opaque stream (SetOpaque: UDPTL) carries datagrams of any first
	// byte, RTP socket to RTP socket, without transform or normalisation.
	opaque := s.opaque.Load()
	isRTCP := false
	switch b := pkt[0]; {
	case opaque:
		if k != l.rtp {
			l.drop(DropUnknownType) // the RTCP socket of a leg without rtcp-mux
			return
		}
	// RFC 7983 demultiplexing on the first byte.
	case b <= 3:
		s.datagram(k, KindSTUN, pkt, src)
		return
	case b >= 20 && b <= 63:
		s.datagram(k, KindDTLS, pkt, src)
		return
	case b < 128 || b > 191:
		l.drop(DropUnknownType)
		return
	default:
		isRTCP = k.rtcpOnly || (k.mux && n >= 2 && pkt[1] >= 192 && pkt[1] <= 223) // RFC 5761 §4
		if n < 8 || (!isRTCP && n < 12) {
			l.drop(DropMalformed)
			return
		}
	}
	if n >= readSize {
		l.drop(DropMalformed)
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())

	st := k.latch.Load()
	if st.latched {
		if src != st.source {
			l.drop(DropNotLatchedSource)
			return
		}
	} else if !l.learn && src != st.expected {
		l.drop(DropUnexpectedSource)
		return
	}

	var plain []byte
	var err error
	var tr, otr Transform = Plain{}, Plain{}
	if !opaque {
		tr, otr = l.transform.Load().t, l.other.transform.Load().t
	}
	if isRTCP {
		plain, err = tr.InboundRTCP(buf[:0], pkt)
	} else {
		plain, err = tr.InboundRTP(buf[:0], pkt)
	}
	if err != nil {
		l.drop(inboundReason(err))
		return
	}
	// Only a packet that passed the transform (authenticated, for SRTP)
	// latches: a forged packet cannot steer the relay.
	if !st.latched {
		if k.latch.CompareAndSwap(st, &latchState{expected: st.expected, source: src, latched: true}) && s.kernel != nil {
			s.maybeOffload()
		}
	}
	if now == 0 {
		now = time.Now().UnixNano()
	}
	l.lastRx.Store(now)
	l.c.packets.Add(1)
	l.c.bytes.Add(uint64(n))
	if isRTCP {
		l.c.rtcp.Add(1)
	}

	o := l.other
	out := o.rtp
	if isRTCP {
		out = o.rtcp
	}
	dst, ok := out.dest()
	if !ok {
		l.drop(DropNoDestination)
		return
	}
	if o.norm != nil && !opaque {
		if isRTCP {
			if !o.norm.rtcp(plain) {
				l.drop(DropStaleRTCP)
				return
			}
		} else {
			o.norm.rtp(plain, now)
		}
	}
	var wire []byte
	if isRTCP {
		wire, err = otr.OutboundRTCP(buf[:0], plain)
	} else {
		wire, err = otr.OutboundRTP(buf[:0], plain)
	}
	if err != nil {
		if errors.Is(err, ErrNotReady) {
			l.drop(DropNotReady)
		} else {
			l.drop(DropEncrypt)
		}
		return
	}
	if err := sio.write(out, wire, dst); err != nil {
		l.drop(DropSendError)
		return
	}
	l.c.forwarded.Add(1)
}

func inboundReason(err error) DropReason {
	switch {
	case errors.Is(err, ErrNotReady):
		return DropNotReady
	case isAuthFailure(err):
		return DropAuth
	case isReplay(err):
		return DropReplay
	}
	return DropDecrypt
}

func (s *Stream) datagram(k *sock, kind DatagramKind, pkt []byte, src netip.AddrPort) {
	l := k.leg
	h := l.handler.Load().h
	if h == nil {
		if kind == KindSTUN {
			l.drop(DropSTUN)
		} else {
			l.drop(DropDTLS)
		}
		return
	}
	h.HandleDatagram(l.id, kind, pkt, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), k)
}

// normalizer rewrites SSRC, sequence number and timestamp of the RTP sent
// to one leg so that the leg sees one continuous source. The first source
// keeps its values; on a switch, the new source's numbers are shifted to
// continue from the highest ones sent, the timestamp advanced by the wall
// time elapsed, and the marker bit set (a new talkspurt).
//
// rtp runs on the one goroutine that forwards RTP to the leg; rtcp may run
// on another and reads only the atomics.
type normalizer struct {
	clockRate uint32

	started   bool
	inSSRC    uint32
	outSSRC   uint32
	seqDelta  uint16
	tsDelta   uint32
	maxOutSeq uint16
	maxOutTS  uint32
	lastAt    int64

	curIn, out, tsOff atomic.Uint32
	active            atomic.Bool
	switches          atomic.Uint64
}

func (n *normalizer) rtp(pkt []byte, now int64) {
	seq := binary.BigEndian.Uint16(pkt[2:])
	ts := binary.BigEndian.Uint32(pkt[4:])
	ssrc := binary.BigEndian.Uint32(pkt[8:])
	switch {
	case !n.started:
		n.started = true
		n.inSSRC, n.outSSRC = ssrc, ssrc
		n.maxOutSeq, n.maxOutTS = seq, ts
		n.out.Store(ssrc)
		n.curIn.Store(ssrc)
		n.active.Store(true)
	case ssrc != n.inSSRC:
		elapsed := max(now-n.lastAt, 0)
		ticks := uint32(min(elapsed/1e3*int64(n.clockRate)/1e6, 1<<30))
		n.seqDelta = n.maxOutSeq + 1 - seq
		n.tsDelta = n.maxOutTS + max(ticks, 1) - ts
		n.inSSRC = ssrc
		n.curIn.Store(ssrc)
		n.tsOff.Store(n.tsDelta)
		n.switches.Add(1)
		pkt[1] |= 0x80 // marker
	}
	outSeq := seq + n.seqDelta
	outTS := ts + n.tsDelta
	if int16(outSeq-n.maxOutSeq) > 0 {
		n.maxOutSeq = outSeq
	}
	if int32(outTS-n.maxOutTS) > 0 {
		n.maxOutTS = outTS
	}
	n.lastAt = now
	binary.BigEndian.PutUint16(pkt[2:], outSeq)
	binary.BigEndian.PutUint32(pkt[4:], outTS)
	binary.BigEndian.PutUint32(pkt[8:], n.outSSRC)
}

// rtcp rewrites the sender SSRC (and an SR's RTP timestamp) of a compound
// RTCP packet from the current source; it reports false for RTCP of a
// source the stream switched away from (drop it). Report blocks are left
// alone.
func (n *normalizer) rtcp(pkt []byte) bool {
	if !n.active.Load() || len(pkt) < 8 {
		return true
	}
	cur, out, off := n.curIn.Load(), n.out.Load(), n.tsOff.Load()
	sender := binary.BigEndian.Uint32(pkt[4:])
	if sender != cur {
		if sender == out {
			return false // the original source, after a switch
		}
		for p := 0; p+8 <= len(pkt); {
			if pkt[p+1] == 203 { // BYE of a source that is not current
				return false
			}
			p += (int(binary.BigEndian.Uint16(pkt[p+2:])) + 1) * 4
		}
		return true
	}
	if cur == out && off == 0 {
		return true
	}
	for p := 0; p+8 <= len(pkt); {
		l := (int(binary.BigEndian.Uint16(pkt[p+2:])) + 1) * 4
		if pkt[p]>>6 != 2 || p+l > len(pkt) {
			break
		}
		if pt := pkt[p+1]; pt >= 200 && pt <= 204 && binary.BigEndian.Uint32(pkt[p+4:]) == cur {
			binary.BigEndian.PutUint32(pkt[p+4:], out)
			if pt == 200 && l >= 20 {
				binary.BigEndian.PutUint32(pkt[p+16:], binary.BigEndian.Uint32(pkt[p+16:])+off)
			}
		}
		p += l
	}
	return true
}
