package srtp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// LegID names the two legs of a stream.
type LegID uint8

// The two legs. Which is the caller's is up to the owner.
const (
	LegA LegID = 0
	LegB LegID = 1
)

func (l LegID) String() string {
	if l == LegA {
		return "A"
	}
	return "B"
}

// DropReason says why a packet received on a leg was not relayed.
type DropReason uint8

// Drop reasons. Their String values are stable metric label values.
const (
	// DropNotLatchedSource: the leg is latched and the packet came from
	// another source (strict source; a hijack attempt or a stale peer).
	DropNotLatchedSource DropReason = iota
	// DropUnexpectedSource: before latching, a source that is not the
	// address the SDP announced, on a leg that does not learn.
	DropUnexpectedSource
	// DropMalformed: too short for RTP/RTCP, or truncated (too long).
	DropMalformed
	// DropUnknownType: first byte outside the RFC 7983 ranges.
	DropUnknownType
	// DropSTUN and DropDTLS: no handler for STUN or DTLS on this leg.
	DropSTUN
	DropDTLS
	// DropNotReady: a transform without keys yet (DTLS pending), on
	// either side. Not an error.
	DropNotReady
	// DropAuth: SRTP/SRTCP authentication failed (forged, or wrong key).
	DropAuth
	// DropReplay: SRTP/SRTCP index already seen or too old.
	DropReplay
	// DropDecrypt: any other inbound transform error.
	DropDecrypt
	// DropEncrypt: the outbound transform failed.
	DropEncrypt
	// DropNoDestination: the other leg has no address to send to yet.
	DropNoDestination
	// DropSendError: the kernel refused the send.
	DropSendError
	// DropStaleRTCP: RTCP of a source the normalised egress has switched
	// away from (its SR or BYE would confuse the receiver).
	DropStaleRTCP
	// DropIdlePort: a datagram on a relay port no call holds (a kept
	// socket, quarantined or free): a late packet of an ended call, or a
	// scan. Counted by the pool (PortStats.IdleDrops), never on a leg.
	DropIdlePort
	// NumDropReasons is the number of reasons (array size).
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	"not_latched_source", "unexpected_source", "malformed", "unknown_type",
	"stun_unhandled", "dtls_unhandled", "not_ready", "srtp_auth", "srtp_replay",
	"decrypt_error", "encrypt_error", "no_destination", "send_error", "stale_rtcp",
	"idle_port",
}

func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// DatagramKind is the class of a non-RTP datagram (RFC 7983).
type DatagramKind uint8

// Kinds handed to a DatagramHandler.
const (
	KindSTUN DatagramKind = iota + 1 // first byte 0–3
	KindDTLS                         // first byte 20–63
)

// PacketWriter sends a datagram from a relay socket; *net.UDPConn is one.
type PacketWriter interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// DatagramHandler receives the STUN and DTLS datagrams that arrive on a
// leg's sockets: the seam for ICE-lite and DTLS-SRTP. It runs on the
// socket's reader goroutine; pkt is only valid during the call (copy it to
// keep it), and via writes from the same socket (the reply must come from
// the port the peer sent to). It is called whatever the latch says: the
// handler checks the source itself (ICE validates it, DTLS checks the
// fingerprint). A DTLS layer installs the transform it derives with
// Stream.SetTransform, and Stream.Expect for the ICE-selected address.
type DatagramHandler interface {
	HandleDatagram(leg LegID, kind DatagramKind, pkt []byte, from netip.AddrPort, via PacketWriter)
}

// StreamBinder is implemented by a DatagramHandler that needs its stream
// (to install a transform, move the leg's destination, check the latch):
// NewStream and SetHandler call BindStream before the handler can receive
// a datagram. The ICELite, DTLS and SecureLeg handlers implement it.
type StreamBinder interface {
	BindStream(s *Stream, leg LegID)
}

// LegConfig describes one leg: its relay sockets, what its SDP said, and
// how it protects media.
type LegConfig struct {
	// Ports are the leg's relay sockets (RTCP nil for rtcp-mux). The
	// stream owns them from NewStream on and releases them on Close.
	Ports *Ports
	// Remote is the RTP address this leg's SDP announced (c= and m= port).
	// Zero or unspecified when unknown (0.0.0.0 hold, ICE not done yet):
	// nothing is sent to the leg until it latches.
	Remote netip.AddrPort
	// RemoteRTCP is the announced RTCP address (a=rtcp); zero means the
	// RTP address with rtcp-mux, port+1 without.
	RemoteRTCP netip.AddrPort
	// Learn lets the first valid packet from any source latch the leg
	// (symmetric RTP behind NAT, where the SDP address is private).
	// Without it, only a packet from Remote (RemoteRTCP) latches.
	Learn bool
	// Transform protects the leg's packets; nil means Plain.
	Transform Transform
	// Normalize keeps one SSRC with continuous sequence numbers and
	// timestamps on packets sent to this leg, whatever the source does on
	// the other leg (music on hold, transfer, early media then answer).
	// Set it for SRTP legs: their receivers' replay windows would drop a
	// sequence that jumps back (notes, pitfall 7).
	Normalize bool
	// ClockRate is the RTP clock of the media (default 8000), used to
	// advance the timestamp across a source switch.
	ClockRate uint32
	// Handler gets STUN and DTLS datagrams; nil drops and counts them. A
	// StreamBinder is bound to the stream before its first datagram, an
	// io.Closer is closed with the stream (DTLS, ICELite, SecureLeg are
	// both).
	Handler DatagramHandler
}

// StreamConfig configures NewStream.
type StreamConfig struct {
	A, B LegConfig
	// IdleTimeout, when set with OnIdle, calls OnIdle once when no valid
	// packet has arrived from either leg for that long. The stream does
	// not end the call: the owner decides.
	IdleTimeout time.Duration
	OnIdle      func(idle time.Duration)
	// Kernel, if set, relays the stream in the kernel once both legs are
	// plain and latched (see KernelPath); nil keeps every packet in user
	// space.
	Kernel KernelPath
}

// LegStats are one leg's ingress counters: what its remote sent us.
type LegStats struct {
	// Packets and Bytes count valid packets received (RTP and RTCP);
	// RTCPPackets the RTCP among them; Forwarded those sent on to the other
	// leg.
	Packets, Bytes, RTCPPackets, Forwarded uint64
	// Dropped counts refused packets by reason.
	Dropped [NumDropReasons]uint64
	// ReadErrors counts socket read errors other than close.
	ReadErrors uint64
	// SSRCSwitches counts source changes normalised on egress to this leg.
	SSRCSwitches uint64
	// Offloaded counts the packets among Packets (and Forwarded) that the
	// kernel path relayed (StreamConfig.Kernel); their Bytes are UDP
	// payload, as for the others.
	Offloaded uint64
}

// AuthFailures is the number of SRTP/SRTCP packets whose tag failed.
func (s LegStats) AuthFailures() uint64 { return s.Dropped[DropAuth] }

// StreamStats holds both legs' counters.
type StreamStats struct{ A, B LegStats }

// Leg returns the stats of one leg.
func (s StreamStats) Leg(id LegID) LegStats {
	if id == LegA {
		return s.A
	}
	return s.B
}

type latchState struct {
	expected netip.AddrPort // from SDP (may be invalid)
	source   netip.AddrPort // latched source
	latched  bool
}

type sock struct {
	// conn is the socket of a net.UDPConn pool (modeNet); ps the pool's
	// raw socket otherwise (modeRaw, modeKeep), whose descriptor is fd
	// for the sock's life.
	conn     *net.UDPConn
	ps       *poolSock
	raw      rawConn // conn's RawConn (or the raw socket's family), for sockIO
	local    netip.AddrPort
	leg      *leg
	rtcpOnly bool // RTCP socket of a non-mux leg
	mux      bool // RTP and RTCP share this socket
	latch    atomic.Pointer[latchState]
	stream   *Stream
	// fd: a raw socket's descriptor; with a relay loop reading a
	// net.UDPConn (engine_linux.go), its descriptor while the socket is
	// in the loop's epoll (negative otherwise), and ent its entry there
	// (loop goroutine and add/remove only).
	fd  int
	ent *loopEntry
}

// relayConn is what DTLS sessions write through: a leg's socket.
type relayConn interface {
	PacketWriter
	LocalAddr() net.Addr
}

// WriteToUDPAddrPort sends b from the socket (the PacketWriter handed to
// a DatagramHandler). After the stream closed it fails with
// net.ErrClosed.
func (k *sock) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if k.conn != nil {
		return k.conn.WriteToUDPAddrPort(b, addr)
	}
	if k.stream.closed.Load() {
		return 0, net.ErrClosed
	}
	if err := sendTo(k.fd, k.local.Addr().Is6(), b, addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

// LocalAddr is the socket's local address.
func (k *sock) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(k.local) }

// newSock makes a leg's socket from its ports: the RTP one, or the RTCP
// one of a leg without rtcp-mux.
func newSock(p *Ports, rtcp bool, l *leg, s *Stream) *sock {
	k := &sock{leg: l, stream: s, fd: -1, mux: p.mux, rtcpOnly: rtcp, local: p.RTPAddr()}
	conn, ps := p.rtpConn, p.rtp
	if rtcp {
		conn, ps, k.local = p.rtcpConn, p.rtcp, p.RTCPAddr()
	}
	if conn != nil {
		k.conn, k.raw = conn, newRawConn(conn)
	} else {
		k.ps, k.fd, k.raw = ps, ps.fd, rawFor(k.local)
	}
	return k
}

// dest is where packets for this socket's peer go: the latched source,
// else the announced address.
func (k *sock) dest() (netip.AddrPort, bool) {
	st := k.latch.Load()
	if st.latched {
		return st.source, true
	}
	return st.expected, usable(st.expected)
}

func usable(a netip.AddrPort) bool {
	return a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified()
}

type transformBox struct{ t Transform }

type handlerBox struct{ h DatagramHandler }

type counters struct {
	packets, bytes, rtcp, forwarded, readErrors atomic.Uint64
	offloaded                                   atomic.Uint64
	dropped                                     [NumDropReasons]atomic.Uint64
}

type leg struct {
	id        LegID
	ports     *Ports
	rtp, rtcp *sock // rtcp == rtp with mux
	other     *leg
	learn     bool
	transform atomic.Pointer[transformBox]
	handler   atomic.Pointer[handlerBox]
	norm      *normalizer // egress normalisation towards this leg, or nil
	lastRx    atomic.Int64
	c         counters
}

func (l *leg) drop(r DropReason) { l.c.dropped[r].Add(1) }

// Stream relays one media stream (one m= line) between two legs. On
// Linux its sockets join one of the relay loops (engine_linux.go), which
// each watch the sockets of many streams through an epoll instance of
// their own; elsewhere (or with RelayOptions.PerSocket) it runs one
// reader goroutine per socket (two per leg without rtcp-mux, one with
// it). Either way the packet is forwarded from a preallocated buffer
// straight to the other leg's socket: no channel and no allocation. See
// the package doc for latching.
type Stream struct {
	legs    [2]*leg
	worker  *relayWorker // nil: reader goroutines
	kernel  KernelPath
	kmu     sync.Mutex // kflows, kpair
	kflows  []kflow
	kpair   [2]bool // RTP pair, RTCP pair offloaded
	kerrors atomic.Uint64
	// opaque: the stream carries datagrams of a transport that is not
	// RTP (UDPTL for T.38 fax): no demultiplexing, transform or
	// normalisation, RTP socket to RTP socket (SetOpaque).
	opaque  atomic.Bool
	created int64
	wg      sync.WaitGroup
	closed  atomic.Bool
	once    sync.Once

	timerMu     sync.Mutex
	timer       *time.Timer
	idleTimeout time.Duration
	onIdle      func(time.Duration)
}

// NewStream builds the stream and starts its readers. On error the ports
// are left to the caller; on success the stream owns them.
func NewStream(cfg StreamConfig) (*Stream, error) {
	s := &Stream{created: time.Now().UnixNano(), idleTimeout: cfg.IdleTimeout, onIdle: cfg.OnIdle, kernel: cfg.Kernel}
	for i, lc := range [2]LegConfig{cfg.A, cfg.B} {
		if lc.Ports == nil || (lc.Ports.rtpConn == nil && lc.Ports.rtp == nil) {
			return nil, fmt.Errorf("srtp: leg %v has no ports", LegID(i))
		}
		l := &leg{id: LegID(i), ports: lc.Ports, learn: lc.Learn}
		l.handler.Store(&handlerBox{lc.Handler})
		t := lc.Transform
		if t == nil {
			t = Plain{}
		}
		l.transform.Store(&transformBox{t})
		if lc.Normalize {
			cr := lc.ClockRate
			if cr == 0 {
				cr = 8000
			}
			l.norm = &normalizer{clockRate: cr}
		}
		mux := lc.Ports.mux
		l.rtp = newSock(lc.Ports, false, l, s)
		if mux {
			l.rtcp = l.rtp
		} else {
			l.rtcp = newSock(lc.Ports, true, l, s)
		}
		rtpAddr, rtcpAddr := expectedPair(lc.Remote, lc.RemoteRTCP, mux)
		l.rtp.latch.Store(&latchState{expected: rtpAddr})
		if !mux {
			l.rtcp.latch.Store(&latchState{expected: rtcpAddr})
		}
		s.legs[i] = l
	}
	s.legs[0].other, s.legs[1].other = s.legs[1], s.legs[0]
	for _, l := range s.legs {
		if b, ok := l.handler.Load().h.(StreamBinder); ok {
			b.BindStream(s, l.id)
		}
	}
	// A pool's raw sockets are in their relay loops already: attach them
	// (their queues drained). net.UDPConns join a loop together, or get
	// reader goroutines.
	var conns []*sock
	kept := false
	for _, k := range s.socks() {
		if k.ps != nil {
			kept = true
		} else {
			conns = append(conns, k)
		}
	}
	if len(conns) > 0 {
		if w := pickWorker(); !kept && w != nil && w.add(conns) == nil {
			// (With a raw socket on the other leg, the loop's writes to
			// these would race with the reader goroutine's add.)
			s.worker = w
		} else {
			for _, k := range conns {
				s.start(k)
			}
		}
	}
	if kept {
		attachKept(s.socks())
	}
	if s.idleTimeout > 0 && s.onIdle != nil {
		s.timerMu.Lock()
		s.timer = time.AfterFunc(s.idleTimeout, s.checkIdle)
		s.timerMu.Unlock()
	}
	return s, nil
}

func expectedPair(rtp, rtcp netip.AddrPort, mux bool) (netip.AddrPort, netip.AddrPort) {
	rtp = netip.AddrPortFrom(rtp.Addr().Unmap(), rtp.Port())
	rtcp = netip.AddrPortFrom(rtcp.Addr().Unmap(), rtcp.Port())
	if mux {
		return rtp, rtp
	}
	if !rtcp.IsValid() && usable(rtp) && rtp.Port() < 65535 {
		rtcp = netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)
	}
	return rtp, rtcp
}

// SetOpaque switches the stream between RTP and opaque datagrams. An
// opaque stream relays whatever arrives on a leg's RTP socket from its
// latched (or expected, or, on a learning leg, first) source to the other
// leg's RTP destination, byte for byte: UDPTL (T.38 fax, RFC 3362) and
// other non-RTP transports that an SDP negotiates on an m= line. Latching,
// lock-in, counters and the media timeout work as for RTP; RFC 7983
// demultiplexing (so ICE and DTLS), the legs' transforms (so SRTP) and
// egress normalisation are skipped, and the RTCP sockets carry nothing
// (datagrams there are dropped as unknown_type). The transforms stay
// installed: switching back to RTP resumes SRTP where it was (the same
// ROC). Safe to call at any time from any goroutine.
func (s *Stream) SetOpaque(on bool) { s.opaque.Store(on) }

// Opaque reports whether the stream relays opaque datagrams (SetOpaque).
func (s *Stream) Opaque() bool { return s.opaque.Load() }

// socks returns the stream's sockets.
func (s *Stream) socks() []*sock {
	out := make([]*sock, 0, 4)
	for _, l := range s.legs {
		out = append(out, l.rtp)
		if l.rtcp != l.rtp {
			out = append(out, l.rtcp)
		}
	}
	return out
}

func (s *Stream) start(k *sock) {
	s.wg.Add(1)
	go s.serve(k)
}

func (s *Stream) leg(id LegID) *leg { return s.legs[id&1] }

// Expect tells a leg its new announced address (a re-INVITE or UPDATE
// changed the SDP, or ICE selected a pair). If the address differs from the
// one it had, the leg unlatches and the next valid packet from the new
// address (from anywhere, if the leg learns) latches it again; until then,
// packets to the leg go to the new address. If it is the same, nothing
// changes (a re-INVITE that keeps the address does not open a window for
// a hijacker). On a leg that learns, the window between Expect and the
// next packet is open to any source, as the first latch was: prefer
// legs that do not learn wherever the SDP address can be trusted. rtcp
// zero means derived as in LegConfig.
func (s *Stream) Expect(id LegID, rtp, rtcp netip.AddrPort) {
	l := s.leg(id)
	rtpAddr, rtcpAddr := expectedPair(rtp, rtcp, l.rtp.mux)
	expect(l.rtp, rtpAddr)
	if l.rtcp != l.rtp {
		expect(l.rtcp, rtcpAddr)
	}
	if st := l.rtp.latch.Load(); !st.latched {
		s.unloadKernel() // the leg relatches in user space first
	}
}

func expect(k *sock, a netip.AddrPort) {
	for range 100 { // CAS retries against the reader latching
		old := k.latch.Load()
		if old.expected == a {
			return
		}
		if k.latch.CompareAndSwap(old, &latchState{expected: a}) {
			return
		}
	}
}

// Latched returns the source a leg's RTP socket is latched to.
func (s *Stream) Latched(id LegID) (netip.AddrPort, bool) {
	st := s.leg(id).rtp.latch.Load()
	return st.source, st.latched
}

// LocalAddr returns a leg's relay RTP and RTCP addresses (the same with
// rtcp-mux): what goes into the SDP sent to that leg's peer.
func (s *Stream) LocalAddr(id LegID) (rtp, rtcp netip.AddrPort) {
	p := s.leg(id).ports
	return p.RTPAddr(), p.RTCPAddr()
}

// SetTransform replaces a leg's transform (keys from a completed DTLS
// handshake, or a new SDES transform after a re-INVITE that changed the
// peer). Packets in flight finish with the old one.
func (s *Stream) SetTransform(id LegID, t Transform) {
	if t == nil {
		t = Plain{}
	}
	s.leg(id).transform.Store(&transformBox{t})
	s.unloadKernel()
}

// Transform returns a leg's current transform (to Rekey an *SRTP).
func (s *Stream) Transform(id LegID) Transform { return s.leg(id).transform.Load().t }

// SetHandler replaces a leg's DatagramHandler (a re-INVITE that needs a
// new DTLS association: new fingerprint or setup, pitfall 2) and returns
// the old one, which the caller closes. The new handler is bound (see
// StreamBinder) before it can receive a datagram, and is closed with the
// stream if it implements io.Closer. A datagram being handled by the old
// one finishes there.
func (s *Stream) SetHandler(id LegID, h DatagramHandler) DatagramHandler {
	if b, ok := h.(StreamBinder); ok {
		b.BindStream(s, id)
	}
	old := s.leg(id).handler.Swap(&handlerBox{h}).h
	s.unloadKernel()
	return old
}

// acceptsFrom reports whether a leg takes a datagram that is not
// authenticated by itself (a DTLS ClientHello) from src: the latched
// source once latched; before, the announced address, or any source on a
// leg that learns.
func (s *Stream) acceptsFrom(id LegID, rtcp bool, src netip.AddrPort) bool {
	l := s.leg(id)
	k := l.rtp
	if rtcp {
		k = l.rtcp
	}
	st := k.latch.Load()
	switch {
	case st.latched:
		return src == st.source
	case l.learn:
		return true
	}
	return usable(st.expected) && src == st.expected
}

// dest returns where a leg's RTP goes now (latched source, else the
// announced address).
func (s *Stream) dest(id LegID) (netip.AddrPort, bool) { return s.leg(id).rtp.dest() }

// compConn returns a leg's RTP socket, or its RTCP socket (the same
// with rtcp-mux).
func (s *Stream) compConn(id LegID, rtcp bool) relayConn {
	if rtcp {
		return s.leg(id).rtcp
	}
	return s.leg(id).rtp
}

// compDest is dest for a leg's RTP or RTCP socket.
func (s *Stream) compDest(id LegID, rtcp bool) (netip.AddrPort, bool) {
	if rtcp {
		return s.leg(id).rtcp.dest()
	}
	return s.leg(id).rtp.dest()
}

// muxed reports whether a leg has one socket for RTP and RTCP.
func (s *Stream) muxed(id LegID) bool {
	l := s.leg(id)
	return l.rtcp == l.rtp
}

// isRTCPSocket reports whether w is the RTCP socket of a leg without
// rtcp-mux.
func (s *Stream) isRTCPSocket(id LegID, w PacketWriter) bool {
	l := s.leg(id)
	k, ok := w.(*sock)
	return ok && l.rtcp != l.rtp && k == l.rtcp
}

// learns reports LegConfig.Learn of a leg.
func (s *Stream) learns(id LegID) bool { return s.leg(id).learn }

// LastPacket returns when the last valid packet came from a leg (zero
// time if none yet).
func (s *Stream) LastPacket(id LegID) time.Time {
	n := max(s.leg(id).lastRx.Load(), s.kernelLast()[id&1])
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Idle returns how long no valid packet has come from either leg, counted
// from the stream's creation when none came yet.
func (s *Stream) Idle(now time.Time) time.Duration {
	k := s.kernelLast()
	last := max(s.created, s.legs[0].lastRx.Load(), s.legs[1].lastRx.Load(), k[0], k[1])
	d := now.UnixNano() - last
	if d < 0 {
		return 0
	}
	return time.Duration(d)
}

func (s *Stream) checkIdle() {
	if s.closed.Load() {
		return
	}
	idle := s.Idle(time.Now())
	if idle >= s.idleTimeout {
		s.onIdle(idle)
		return
	}
	s.timerMu.Lock()
	if s.timer != nil && !s.closed.Load() {
		s.timer.Reset(s.idleTimeout - idle)
	}
	s.timerMu.Unlock()
}

// Stats returns a snapshot of the counters.
func (s *Stream) Stats() StreamStats {
	var st StreamStats
	// Under kmu, so that flows folded back into the counters (unload) are
	// counted once.
	s.kmu.Lock()
	defer s.kmu.Unlock()
	for i, p := range []*LegStats{&st.A, &st.B} {
		c := &s.legs[i].c
		p.Packets, p.Bytes, p.RTCPPackets, p.Forwarded = c.packets.Load(), c.bytes.Load(), c.rtcp.Load(), c.forwarded.Load()
		p.ReadErrors = c.readErrors.Load()
		p.Offloaded = c.offloaded.Load()
		for r := range p.Dropped {
			p.Dropped[r] = c.dropped[r].Load()
		}
		if n := s.legs[i].norm; n != nil {
			p.SSRCSwitches = n.switches.Load()
		}
	}
	if s.kernel != nil {
		s.kernelStatsLocked(&st)
	}
	return st
}

// Close closes the legs' handlers that implement io.Closer (a DTLS
// session sends its close_notify while the socket is still open), takes
// the sockets out of their relay loop (or stops the readers and waits for
// them), and releases both legs' ports to their
// pools (quarantined). It is idempotent and safe from any goroutine,
// OnIdle included, but not from a DatagramHandler of any stream (Close
// waits for the loop or reader that runs it).
func (s *Stream) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		s.timerMu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.timerMu.Unlock()
		for _, l := range s.legs {
			if c, ok := l.handler.Load().h.(io.Closer); ok {
				_ = c.Close()
			}
		}
		s.unloadKernel()
		if s.worker != nil {
			// Out of the loop before the descriptors close (and can be
			// reused by another socket).
			s.worker.remove(s.socks())
		}
		// Raw sockets: all of the stream's at rest before any is released
		// (another call may take a released one at once).
		for _, l := range s.legs {
			l.ports.detach()
		}
		for _, l := range s.legs {
			if l.ports.rtpConn != nil {
				_ = l.ports.rtpConn.Close()
			}
			if l.ports.rtcpConn != nil {
				_ = l.ports.rtcpConn.Close()
			}
		}
		s.wg.Wait()
		for _, l := range s.legs {
			if e := l.ports.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
				err = e
			}
		}
	})
	return err
}
