//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Bounds of one measured phase.
const (
	benchMaxPackets  = 4_000_000
	benchMaxDuration = 3 * time.Second
	benchBatch       = 256
)

// mmsghdr mirrors struct mmsghdr; Go pads it like C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// rawSender blasts one pre-built Ethernet frame from namespace A with
// AF_PACKET + sendmmsg, bypassing the qdisc: the cheapest sender available
// without pktgen (not built into this kernel).
type rawSender struct {
	fd    int
	frame []byte
	iov   []unix.Iovec
	hdrs  []mmsghdr
}

func newRawSender(b *testing.B, p *vethPair, frame []byte) *rawSender {
	s := &rawSender{frame: frame, iov: make([]unix.Iovec, benchBatch), hdrs: make([]mmsghdr, benchBatch)}
	err := inNetns(p.nsA, func() error {
		ifc, err := net.InterfaceByName(p.ifA)
		if err != nil {
			return err
		}
		// Protocol 0: transmit only, no receive hook on the sender.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = unix.Close(s.fd) })
	for i := range s.hdrs {
		s.iov[i].Base = &s.frame[0]
		s.iov[i].SetLen(len(s.frame))
		s.hdrs[i].hdr.Iov = &s.iov[i]
		s.hdrs[i].hdr.SetIovlen(1)
	}
	return s
}

// blast sends until benchMaxPackets or benchMaxDuration and returns the
// number sent and the time taken.
func (s *rawSender) blast() (int, time.Duration) {
	sent := 0
	start := time.Now()
	for sent < benchMaxPackets {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd),
			uintptr(unsafe.Pointer(&s.hdrs[0])), benchBatch, 0, 0, 0)
		if errno == 0 {
			sent += int(r)
		}
		if time.Since(start) > benchMaxDuration {
			break
		}
	}
	return sent, time.Since(start)
}

// benchFrame is a 128-byte IPv4/UDP SIP-sized probe from src to B:5060.
func benchFrame(p *vethPair, src netip.Addr) []byte {
	macA, _ := net.ParseMAC(p.macA)
	macB, _ := net.ParseMAC(p.macB)
	f := append([]byte{}, macB...)
	f = append(f, macA...)
	f = binary.BigEndian.AppendUint16(f, etherIPv4)
	payload := []byte("OPTIONS sip:bench@sbc SIP/2.0\r\nVia: SIP/2.0/UDP 10.213.0.3;branch=z9hG4bK-bench\r\n\r\n")
	return append(f, ipv4Hdr(src, addrB, v4opts{protocol: protoUDP}, udpHdr(40000, 5060, payload))...)
}

// udpRcvbufErrors reads RcvbufErrors from the current namespace's /proc/net/snmp.
func udpRcvbufErrors(ns string) uint64 {
	var v uint64
	_ = inNetns(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var header []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "Udp:" {
				continue
			}
			if header == nil {
				header = fields
				continue
			}
			for i, h := range header {
				if h == "RcvbufErrors" && i < len(fields) {
					v, _ = strconv.ParseUint(fields[i], 10, 64)
				}
			}
		}
		return nil
	})
	return v
}

type phase struct {
	sent      int
	dur       time.Duration
	dropped   uint64 // by XDP, or read and discarded in user space
	rcvbufErr uint64 // datagrams the kernel dropped at the full socket buffer
	xdpNs     float64
	cpu       time.Duration // process CPU time (user+sys) during the phase
}

// processCPU is the CPU time used by this process so far (softirq work done
// in the sender's context is charged to it: no IRQ time accounting here).
func processCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerPacket is CPU ns spent per offered packet (every offered packet is
// disposed of one way or another: by XDP, by the reader, or by the kernel at
// the full socket buffer).
func (ph phase) cpuPerPacket() float64 { return float64(ph.cpu.Nanoseconds()) / float64(ph.sent) }

func (ph phase) offeredPPS() float64 { return float64(ph.sent) / ph.dur.Seconds() }
func (ph phase) droppedPPS() float64 { return float64(ph.dropped) / ph.dur.Seconds() }

// BenchmarkDropPath compares, with the same sender in the same run, how many
// packets/s from a blocked source are disposed of by XDP (generic and native
// mode on the receiving veth) and by a user-space read filter (a Go UDP
// socket that reads every datagram, looks the source up and discards it).
// Run with -benchtime=1x; each phase is bounded by benchMaxPackets and
// benchMaxDuration. Its socket sender is the bottleneck on a small machine;
// BenchmarkDropPathLiveFrames measures the same comparison with a
// kernel-side sender that is not.
func BenchmarkDropPath(b *testing.B) {
	requirePriv(b)
	p := newVethPair(b)
	frame := benchFrame(p, addrBlocked)
	tx := newRawSender(b, p, frame)

	// The user-space path: read, look up the source, discard.
	discarded := userDropPath(b, p)

	userPhase := func() phase {
		before, errBefore := discarded.Load(), udpRcvbufErrors(p.nsB)
		cpu0 := processCPU()
		sent, dur := tx.blast()
		cpu := processCPU() - cpu0
		return phase{sent: sent, dur: dur, dropped: discarded.Load() - before,
			rcvbufErr: udpRcvbufErrors(p.nsB) - errBefore, cpu: cpu}
	}
	xdpPhase := func(mode Mode) phase {
		x, err := loadIn(b, p.nsB, Options{Interfaces: []string{p.ifB}, Mode: mode, PinDir: bpffsDir(b), UDPPorts: []uint16{5060}})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = x.Remove() }()
		if err := x.Deny(netip.PrefixFrom(addrBlocked, 32)); err != nil {
			b.Fatal(err)
		}
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Fatal(err)
		}
		defer stats.Close()
		c0, _ := x.Counters()
		s0, _ := x.objs.SbcXdp.Stats()
		cpu0 := processCPU()
		sent, dur := tx.blast()
		cpu := processCPU() - cpu0
		c1, _ := x.Counters()
		s1, _ := x.objs.SbcXdp.Stats()
		ph := phase{sent: sent, dur: dur, dropped: c1.DroppedDeny - c0.DroppedDeny, cpu: cpu}
		if s0 != nil && s1 != nil && s1.RunCount > s0.RunCount {
			ph.xdpNs = float64(s1.Runtime-s0.Runtime) / float64(s1.RunCount-s0.RunCount)
		}
		return ph
	}

	b.ReportAllocs()
	b.ResetTimer()
	var user, gen, nat phase
	for range b.N {
		user = userPhase()
		gen = xdpPhase(ModeGeneric)
		nat = xdpPhase(ModeNative)
	}
	b.StopTimer()
	b.ReportMetric(user.offeredPPS(), "user-offered-pps")
	b.ReportMetric(user.droppedPPS(), "user-drop-pps")
	b.ReportMetric(float64(user.rcvbufErr)/user.dur.Seconds(), "user-rcvbuf-err-pps")
	b.ReportMetric(gen.droppedPPS(), "xdp-generic-drop-pps")
	b.ReportMetric(nat.droppedPPS(), "xdp-native-drop-pps")
	b.ReportMetric(user.cpuPerPacket(), "user-cpu-ns/pkt")
	b.ReportMetric(gen.cpuPerPacket(), "xdp-generic-cpu-ns/pkt")
	b.ReportMetric(nat.cpuPerPacket(), "xdp-native-cpu-ns/pkt")
	b.ReportMetric(gen.xdpNs, "xdp-generic-prog-ns/pkt")
	b.ReportMetric(nat.xdpNs, "xdp-native-prog-ns/pkt")
	if user.dropped > 0 {
		b.ReportMetric(nat.droppedPPS()/user.droppedPPS(), "native/user-x")
		b.ReportMetric(gen.droppedPPS()/user.droppedPPS(), "generic/user-x")
	}
}

// BenchmarkProgRun measures the program alone (BPF_PROG_TEST_RUN, repeat
// inside the kernel) on a denied and a clean frame.
func BenchmarkProgRun(b *testing.B) {
	x := loadTest(b, Options{UDPPorts: []uint16{5060}, RatePPS: 1000, Burst: 1000})
	if err := x.SyncDeny(append(testDeny, mustPrefixes("10.0.0.0/8", "2001:db8:dead::/48")...)); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		frame []byte
	}{
		{"v4-denied", udp4("192.0.2.9", 5060)},
		{"v4-denied-other-port-spared", udp4("192.0.2.9", 53)},
		{"v4-clean-sip-ratelimited-port", udp4("198.18.5.5", 5060)},
		{"v6-denied", udp6("2001:db8:bad::9", 5060)},
		{"v6-clean", udp6("2001:db8:1::1", 5070)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			_, per, err := x.objs.SbcXdp.Benchmark(bc.frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "kernel-ns/pkt")
		})
	}
}

// userDropPath starts the user-space drop path in B's namespace: a Go UDP
// socket on the SIP port that reads every datagram, looks its source up
// and discards it, as the SBC's read filter does. It returns the count of
// discarded datagrams.
func userDropPath(b *testing.B, p *vethPair) *atomic.Uint64 {
	b.Helper()
	var rc *net.UDPConn
	if err := inNetns(p.nsB, func() error {
		var err error
		rc, err = net.ListenUDP("udp", &net.UDPAddr{Port: 5060})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rc.Close() })
	_ = rc.SetReadBuffer(4 << 20)
	blocked := map[netip.Addr]struct{}{addrBlocked: {}}
	discarded := new(atomic.Uint64)
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := rc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, bad := blocked[from.Addr().Unmap()]; bad {
				discarded.Add(1)
			}
		}
	}()
	return discarded
}
