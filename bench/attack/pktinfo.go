package attack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/sbc-project/sbc/internal/netns"
	"golang.org/x/sys/unix"
)

// SpreadAddr returns source number i of prefix p for a flood "across" it.
// For an IPv6 prefix of /64 or shorter the sources are spread over its
// /64s first (one host per subnet, then the next host of each), since
// per-source state is kept per /64: source i is in subnet i mod S, host
// i div S + 1, with S the number of /64s in p (at most 2^16 used, so that a
// /48 or wider prefix cycles its first 65,536 /64s). Any other prefix
// (IPv4, or IPv6 longer than /64) is walked address by address from its
// second one. i wraps around within p.
func SpreadAddr(p netip.Prefix, i uint64) netip.Addr {
	p = p.Masked()
	base := new(big.Int).SetBytes(p.Addr().AsSlice())
	bits := p.Addr().BitLen()
	host := bits - p.Bits()
	off := new(big.Int)
	if p.Addr().Is6() && p.Bits() <= 64 {
		subnetBits := min(64-p.Bits(), 16)
		subnets := uint64(1) << subnetBits
		off.SetUint64(i % subnets)
		off.Lsh(off, 64)
		off.Add(off, new(big.Int).SetUint64(i/subnets%(1<<63)+1))
	} else {
		size := new(big.Int).Lsh(big.NewInt(1), uint(host))
		off.SetUint64(i)
		if size.Cmp(big.NewInt(2)) > 0 {
			size.Sub(size, big.NewInt(1))
			off.Mod(off, size)
			off.Add(off, big.NewInt(1))
		} else {
			off.Mod(off, size)
		}
	}
	base.Add(base, off)
	var b [16]byte
	raw := base.Bytes()
	n := bits / 8
	copy(b[n-len(raw):n], raw)
	if bits == 32 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// pktinfoSender sends from one UDP socket with a source address per
// datagram.
type pktinfoSender struct {
	fd   int
	v6   bool
	sa   unix.Sockaddr
	port uint16
	oob  []byte
}

func newPktinfoSender(ns string, dst netip.AddrPort, sport uint16) (*pktinfoSender, error) {
	s := &pktinfoSender{fd: -1, v6: dst.Addr().Is6()}
	err := netns.Do(ns, func() error {
		family, level := unix.AF_INET, unix.IPPROTO_IP
		if s.v6 {
			family, level = unix.AF_INET6, unix.IPPROTO_IPV6
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
		freebind, transparent := unix.IP_FREEBIND, unix.IP_TRANSPARENT
		if s.v6 {
			freebind, transparent = unix.IPV6_FREEBIND, unix.IPV6_TRANSPARENT
		}
		if err := unix.SetsockoptInt(fd, level, freebind, 1); err != nil {
			return os.NewSyscallError("setsockopt freebind", err)
		}
		_ = unix.SetsockoptInt(fd, level, transparent, 1) // needs CAP_NET_ADMIN; IPv4 needs it or a local prefix
		var local unix.Sockaddr = &unix.SockaddrInet4{Port: int(sport)}
		if s.v6 {
			local = &unix.SockaddrInet6{Port: int(sport)}
		}
		if err := unix.Bind(fd, local); err != nil {
			return os.NewSyscallError("bind", err)
		}
		la, err := unix.Getsockname(fd)
		if err != nil {
			return os.NewSyscallError("getsockname", err)
		}
		switch a := la.(type) {
		case *unix.SockaddrInet4:
			s.port = uint16(a.Port)
		case *unix.SockaddrInet6:
			s.port = uint16(a.Port)
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("attack: pktinfo socket: %w", err)
	}
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if s.v6 {
		s.sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
		s.oob = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	} else {
		s.sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
		s.oob = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	}
	return s, nil
}

func (s *pktinfoSender) send(src netip.Addr, payload []byte) error {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
	data := s.oob[unix.CmsgLen(0):]
	if s.v6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		a := src.As16()
		copy(data[:16], a[:])
		binary.NativeEndian.PutUint32(data[16:20], 0) // any interface
	} else {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		a := src.As4()
		clear(data[:unix.SizeofInet4Pktinfo])
		copy(data[4:8], a[:]) // ipi_spec_dst: the source address
	}
	return retryEINTR("sendmsg", func() error {
		_, err := unix.SendmsgN(s.fd, payload, s.oob, s.sa, 0)
		return err
	})
}

func (s *pktinfoSender) close() {
	if s.fd >= 0 {
		_ = unix.Close(s.fd)
		s.fd = -1
	}
}

// spoofPktinfo is SpoofedFlood in SpoofPktinfo mode.
func spoofPktinfo(ctx context.Context, cfg SpoofedFloodConfig, dst netip.AddrPort) (SpoofReport, error) {
	rep := SpoofReport{Mode: SpoofPktinfo}
	pfx := cfg.Sources.Masked()
	if !pfx.IsValid() || pfx.Addr().Is4() != dst.Addr().Is4() {
		return rep, fmt.Errorf("attack: SpoofedFlood: Sources %s and target %s are not of one family", cfg.Sources, dst)
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
	sender, err := newPktinfoSender(cfg.NetNS, dst, cfg.SourcePort)
	if err != nil {
		return rep, err
	}
	defer sender.close()
	n := uint64(cfg.Count)
	if cfg.MaxSources > 0 && uint64(cfg.MaxSources) < n {
		n = uint64(cfg.MaxSources)
	}
	rep.Sources = int(n)
	domain := domainOf(cfg.Domain, dst)
	ids := idGen{prefix: runID()}
	start := time.Now()
	p := newPacer(ctx, start, deadlineOf(ctx, start, cfg.Duration), cfg.Rate)
	defer p.stop()
	var buf []byte
	rep.Stop = StopCount
	for i := 0; i < cfg.Count; i++ {
		if stop := p.wait(i); stop != "" {
			rep.Stop = stop
			break
		}
		src := SpreadAddr(pfx, uint64(i)%n)
		payload := cfg.Payload
		if payload == nil {
			buf = spoofOptions(buf[:0], src, sender.port, domain, cfg.UserAgent, &ids)
			payload = buf
		}
		if err := sender.send(src, payload); err != nil {
			sendErr(&rep.Report, err)
			continue
		}
		rep.Sent++
	}
	rep.SendElapsed = time.Since(start)
	rep.Elapsed = rep.SendElapsed
	rep.Responses = map[int]int{}
	return rep, nil
}
