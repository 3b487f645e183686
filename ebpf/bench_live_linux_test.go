//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Bounds of one live-frames phase.
const (
	liveMaxPackets  = 100_000_000
	liveMaxDuration = 3 * time.Second
	// liveChunk is the Repeat of one BPF_PROG_TEST_RUN call: small enough
	// that the phase stops close to liveMaxDuration even at a low rate.
	liveChunk = 1 << 18
	// liveBatch is the kernel's batch size (frames per page-pool refill and
	// per transmit flush); 256 is the largest it accepts.
	liveBatch = 256
)

// xdpTX is the XDP_TX action (xdpDrop and xdpPass are in prog_linux_test.go).
const xdpTX = 3

// countingXDP returns a program that adds one to slot 0 of the per-CPU
// array m and returns action. As the sender (XDP_TX, run in live-frames
// mode) it counts the frames generated; attached to the receiving veth with
// XDP_PASS it counts the frames offered to the stack and turns the veth's
// NAPI on (a veth only accepts XDP-transmitted frames from its peer then).
func countingXDP(tb testing.TB, m *ebpf.Map, action int32) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "MIT",
		// As the library loads the sbc program (section "xdp"), so that
		// a link can be updated from one to the other.
		AttachType: ebpf.AttachXDP,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, action).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("loading the counting XDP program: %v", err)
	}
	tb.Cleanup(func() { _ = prog.Close() })
	return prog
}

// perCPUCounter is a one-slot per-CPU array for countingXDP.
func perCPUCounter(tb testing.TB) *ebpf.Map {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	return m
}

func sumCounter(tb testing.TB, m *ebpf.Map) uint64 {
	tb.Helper()
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		tb.Fatal(err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// liveSender injects one frame into the sender end of a veth pair at the
// kernel's rate: BPF_PROG_TEST_RUN in XDP live-frames mode runs an XDP_TX
// program on the frame as if received on that end, and XDP_TX transmits it
// to the peer (veth's ndo_xdp_xmit), with no skb and no socket.
type liveSender struct {
	ns      string
	ifindex int
	frame   []byte
	prog    *ebpf.Program
	count   *ebpf.Map
}

func newLiveSender(tb testing.TB, p *vethPair, frame []byte) *liveSender {
	tb.Helper()
	s := &liveSender{ns: p.nsA, frame: frame, count: perCPUCounter(tb)}
	s.prog = countingXDP(tb, s.count, xdpTX)
	if err := inNetns(p.nsA, func() error {
		ifc, err := net.InterfaceByName(p.ifA)
		if err != nil {
			return err
		}
		s.ifindex = ifc.Index
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return s
}

// send runs the sender, repeat frames per BPF_PROG_TEST_RUN call in batches
// of batch, until maxPackets frames are requested or maxDur has passed, and
// returns the frames generated (counted by the program: an interrupted
// call is restarted by the library, so requests are not a count) and the
// time taken. The test run is made from a thread in the sender's
// namespace: the kernel resolves ingress_ifindex there.
func (s *liveSender) send(tb testing.TB, repeat, batch uint32, maxPackets int, maxDur time.Duration) (uint64, time.Duration) {
	tb.Helper()
	before := sumCounter(tb, s.count)
	var dur time.Duration
	err := inNetns(s.ns, func() error {
		ctx := xdpMd{DataEnd: uint32(len(s.frame)), IngressIfindex: uint32(s.ifindex)}
		start := time.Now()
		for runs := 0; runs*int(repeat) < maxPackets && time.Since(start) < maxDur; runs++ {
			_, err := s.prog.Run(&ebpf.RunOptions{
				Data:      s.frame,
				Context:   ctx,
				Repeat:    repeat,
				Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
				BatchSize: batch,
			})
			if err != nil {
				return fmt.Errorf("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (Linux >= 5.18): %w", err)
			}
		}
		dur = time.Since(start)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return sumCounter(tb, s.count) - before, dur
}

// blast is one benchmark phase's worth of sending.
func (s *liveSender) blast(tb testing.TB) (uint64, time.Duration) {
	return s.send(tb, liveChunk, liveBatch, liveMaxPackets, liveMaxDuration)
}

// xdpMd mirrors struct xdp_md, the context of an XDP test run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

type livePhase struct {
	generated uint64        // frames the sender program transmitted
	arrived   uint64        // frames the receiving veth's XDP program saw
	dropped   uint64        // denied by XDP, or read and discarded in user space
	read      uint64        // datagrams the user-space reader read
	rcvbufErr uint64        // datagrams the kernel dropped at the full socket buffer
	dur       time.Duration // wall time of the phase
	cpu       time.Duration // process CPU time (sender, softirqs run in its context, reader)
	softirqd  time.Duration // ksoftirqd CPU time
}

func (ph livePhase) pps(n uint64) float64 { return float64(n) / ph.dur.Seconds() }

// perCPUSecond is the packets dropped per CPU-second spent by the whole
// run (sender included, so it understates the drop path alone).
func (ph livePhase) perCPUSecond() float64 {
	return float64(ph.dropped) / (ph.cpu + ph.softirqd).Seconds()
}

// BenchmarkDropPathLiveFrames compares, with the same kernel-side sender in
// the same run, how many packets/s from a blocked source are disposed of by
// a user-space read filter and by XDP in native mode on the receiving veth.
// The sender is BPF_PROG_TEST_RUN in XDP live-frames mode (as xdp-trafficgen
// does), not a socket: it costs less per packet than either drop path. In
// the xdp phase one thread both makes and drops the frames, while the Go
// reader of the user phase runs on another CPU, so on a small shared
// machine the ratio of the two rates is mostly the ratio of the CPU shares
// those threads get; BenchmarkDropPathCPU gives each path's CPU per packet.
// Run with -benchtime=1x; each phase is bounded by liveMaxPackets and
// liveMaxDuration.
func BenchmarkDropPathLiveFrames(b *testing.B) {
	requirePriv(b)
	p := newVethPair(b)
	frame := benchFrame(p, addrBlocked)
	tx := newLiveSender(b, p, frame)

	discarded := userDropPath(b, p)

	// attachCounting attaches a counting program returning action to B's
	// veth in native mode: XDP_PASS for the user-space phase (it also turns
	// the veth's NAPI on, without which the veth refuses XDP-transmitted
	// frames from its peer), XDP_DROP for the ceiling phase.
	attachCounting := func(prog *ebpf.Program) link.Link {
		var l link.Link
		if err := inNetns(p.nsB, func() error {
			ifc, err := net.InterfaceByName(p.ifB)
			if err != nil {
				return err
			}
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		return l
	}
	measure := func(ph *livePhase, arrived func() uint64) {
		a0, d0, e0 := arrived(), discarded.Load(), udpRcvbufErrors(p.nsB)
		cpu0, sirq0 := processCPU(), softirqdCPU()
		ph.generated, ph.dur = tx.blast(b)
		ph.cpu, ph.softirqd = processCPU()-cpu0, softirqdCPU()-sirq0
		ph.arrived = arrived() - a0
		ph.read = discarded.Load() - d0
		ph.rcvbufErr = udpRcvbufErrors(p.nsB) - e0
	}

	passCount, dropCount := perCPUCounter(b), perCPUCounter(b)
	passProg := countingXDP(b, passCount, xdpPass)
	dropProg := countingXDP(b, dropCount, xdpDrop)
	userPhase := func() (ph livePhase) {
		l := attachCounting(passProg)
		defer l.Close()
		measure(&ph, func() uint64 { return sumCounter(b, passCount) })
		ph.dropped = ph.read
		return ph
	}
	ceilingPhase := func() (ph livePhase) {
		l := attachCounting(dropProg)
		defer l.Close()
		measure(&ph, func() uint64 { return sumCounter(b, dropCount) })
		ph.dropped = ph.arrived
		return ph
	}
	xdpPhase := func() (ph livePhase) {
		x, err := loadIn(b, p.nsB, Options{Interfaces: []string{p.ifB}, Mode: ModeNative, PinDir: bpffsDir(b), UDPPorts: []uint16{5060}})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = x.Remove() }()
		if err := x.Deny(netip.PrefixFrom(addrBlocked, 32)); err != nil {
			b.Fatal(err)
		}
		counters := func() Counters {
			c, err := x.Counters()
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		c0 := counters()
		measure(&ph, func() uint64 {
			c := counters()
			return c.Passed + c.DroppedDeny + c.DroppedRateLimit + c.Malformed + c.NonIP + c.Fragments + c.Allowed
		})
		ph.dropped = counters().sub(c0).DroppedDeny
		return ph
	}

	b.ReportAllocs()
	b.ResetTimer()
	var user, xdp, ceiling livePhase
	for range b.N {
		user = userPhase()
		xdp = xdpPhase()
		ceiling = ceilingPhase()
	}
	b.StopTimer()
	for _, ph := range []livePhase{user, xdp, ceiling} {
		if ph.generated == 0 || ph.arrived == 0 {
			b.Fatalf("the live-frames sender delivered nothing: %+v", ph)
		}
	}
	b.ReportMetric(user.pps(user.generated), "user-gen-pps")
	b.ReportMetric(user.pps(user.arrived), "user-offered-pps")
	b.ReportMetric(user.pps(user.dropped), "user-drop-pps")
	b.ReportMetric(user.pps(user.rcvbufErr), "user-rcvbuf-err-pps")
	b.ReportMetric(user.perCPUSecond(), "user-drop/cpu-s")
	b.ReportMetric(xdp.pps(xdp.generated), "xdp-gen-pps")
	b.ReportMetric(xdp.pps(xdp.dropped), "xdp-drop-pps")
	b.ReportMetric(xdp.perCPUSecond(), "xdp-drop/cpu-s")
	b.ReportMetric(ceiling.pps(ceiling.dropped), "ceiling-drop-pps")
	if user.dropped > 0 {
		b.ReportMetric(xdp.pps(xdp.dropped)/user.pps(user.dropped), "xdp/user-x")
		b.ReportMetric(xdp.perCPUSecond()/user.perCPUSecond(), "xdp/user-per-cpu-x")
	}
	for _, n := range []struct {
		name string
		ph   livePhase
	}{{"user", user}, {"xdp", xdp}, {"ceiling", ceiling}} {
		b.Logf("%-7s generated %d arrived %d dropped %d rcvbuf-errors %d in %v; cpu: process %v ksoftirqd %v",
			n.name, n.ph.generated, n.ph.arrived, n.ph.dropped, n.ph.rcvbufErr,
			n.ph.dur.Round(time.Millisecond), n.ph.cpu.Round(time.Millisecond), n.ph.softirqd.Round(time.Millisecond))
	}
}

// softirqdCPU is the CPU time used so far by the ksoftirqd threads: softirq
// work deferred to them (veth NAPI polls under load) is not charged to the
// process. Other tenants' deferred softirqs are counted too.
func softirqdCPU() time.Duration {
	var total time.Duration
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || !strings.HasPrefix(string(comm), "ksoftirqd/") {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" closing comm: state is field 3, utime 14, stime 15.
		rest := string(stat)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / clockTicks
	}
	return total
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// TestLiveFramesDenied checks the benchmark's sender end to end: frames
// injected with BPF_PROG_TEST_RUN in live-frames mode on A's veth reach B's
// veth as XDP frames and the program, attached there in native mode, denies
// every one of them.
func TestLiveFramesDenied(t *testing.T) {
	requirePriv(t)
	p := newVethPair(t)
	x, err := loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB}, Mode: ModeNative, PinDir: bpffsDir(t), UDPPorts: []uint16{5060}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Remove() })
	if err := x.Deny(netip.PrefixFrom(addrBlocked, 32)); err != nil {
		t.Fatal(err)
	}
	c0, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// One batch of 64: fewer frames than the veth's receive ring holds
	// (256), so none can be dropped for want of room.
	const n = 64
	tx := newLiveSender(t, p, benchFrame(p, addrBlocked))
	if got, _ := tx.send(t, n, n, n, time.Minute); got != n {
		t.Fatalf("sender generated %d frames, want %d", got, n)
	}
	// The receiving NAPI poll normally runs before the test run returns;
	// under load it may be deferred to ksoftirqd.
	var d Counters
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := x.Counters()
		if err != nil {
			t.Fatal(err)
		}
		d = c.sub(c0)
		if d.DroppedDeny >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.DroppedDeny != n {
		t.Fatalf("denied %d of %d live frames (%s)", d.DroppedDeny, n, d)
	}
}
