//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sbc-project/sbc/internal/netns"
)

// The CPU cost per dropped packet of each drop path on its own.
//
// With the live-frames sender and a veth, the receiving veth's NAPI poll
// (the veth driver and the XDP program, and after XDP_PASS the IP/UDP
// receive path up to the socket) runs by default in the softirq that the
// sender's transmit raises, on the sender's CPU at the end of each batch,
// and is charged to the sender's thread: without IRQ time accounting
// (CONFIG_IRQ_TIME_ACCOUNTING unset, as on the development machine)
// softirq work is billed to whichever thread it interrupted, or to
// ksoftirqd when deferred there.
// BenchmarkDropPathCPU separates the two in two ways:
//
//   - inline (the default receive path): the sender is measured alone,
//     against a target that costs nothing (its program drops its own
//     frames instead of transmitting them), right before each phase, and
//     its CPU per frame times the frames generated in the phase is
//     subtracted from what the sender's thread and its CPU's ksoftirqd
//     spent there. This needs softirq time charged to the interrupted
//     thread: on a kernel with IRQ time accounting the mode is skipped;
//   - threaded: threaded NAPI on the receiving veth moves the poll into a
//     kernel thread of its own (napi/IFNAME-ID), pinned to the other CPU,
//     as a NIC queue is served by its own core; each party's CPU is read
//     from its own thread's clock.
//
// All CPU times are the threads' sum_exec_runtime in nanoseconds
// (/proc/PID/task/TID/schedstat); the Go reader's share is the test
// process's CPU time less the sender thread's.

// enableThreadedNAPI turns threaded NAPI on for ifname in namespace ns.
// /sys/class/net shows the devices of the namespace its sysfs was mounted
// in; `ip netns exec` mounts one for ns.
func enableThreadedNAPI(tb testing.TB, ns, ifname string) {
	tb.Helper()
	if _, err := netns.IP("netns", "exec", ns, "sh", "-c", "echo 1 > /sys/class/net/"+ifname+"/threaded"); err != nil {
		tb.Fatalf("threaded NAPI on %s: %v", ifname, err)
	}
}

// threadsNamed returns the ids of the processes (kernel threads are
// processes of their own) whose comm starts with prefix.
func threadsNamed(prefix string) map[int]bool {
	ids := map[int]bool{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		id, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(comm), prefix) {
			ids[id] = true
		}
	}
	return ids
}

// newNAPIThread runs enable, which turns threaded NAPI on for ifname, and
// returns the id of the NAPI kernel thread that made. Threads of the same
// name that existed before (other namespaces reuse the interface name)
// are not taken for it.
func newNAPIThread(tb testing.TB, ifname string, enable func()) int {
	tb.Helper()
	prefix := "napi/" + ifname + "-"
	before := threadsNamed(prefix)
	enable()
	for deadline := time.Now().Add(5 * time.Second); ; {
		var fresh []int
		for id := range threadsNamed(prefix) {
			if !before[id] {
				fresh = append(fresh, id)
			}
		}
		if len(fresh) == 1 {
			return fresh[0]
		}
		if len(fresh) > 1 || time.Now().After(deadline) {
			tb.Fatalf("want one new %s* kernel thread after turning threaded NAPI on, found %v", prefix, fresh)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// taskCPU is the CPU time thread tid of process pid has run so far
// (sum_exec_runtime, the first field of schedstat, in nanoseconds).
func taskCPU(tb testing.TB, pid, tid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		tb.Fatalf("thread %d's CPU time: %v", tid, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		tb.Fatalf("thread %d: empty schedstat", tid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		tb.Fatalf("thread %d's schedstat %q: %v", tid, b, err)
	}
	return time.Duration(ns)
}

// benchCPUs returns the CPUs for the sender and for the receiving side:
// the first two this process may run on (the same one twice on a
// single-CPU machine; the per-thread accounting holds there too).
func benchCPUs(tb testing.TB) (sender, receiver int) {
	tb.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		tb.Fatal(err)
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < 2; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	switch len(cpus) {
	case 0:
		tb.Fatal("no CPU in the affinity mask")
	case 1:
		return cpus[0], cpus[0]
	}
	return cpus[0], cpus[1]
}

// pinThread pins thread tid (0: the calling thread) to cpu.
func pinThread(tb testing.TB, tid, cpu int) {
	tb.Helper()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		tb.Fatalf("pinning thread %d to CPU %d: %v", tid, cpu, err)
	}
}

// sendPinned is send on a thread pinned to cpu; it also returns the CPU
// time of that thread during the sending. The thread's affinity is
// restored before it goes back to the runtime.
func (s *liveSender) sendPinned(tb testing.TB, cpu int, repeat, batch uint32, maxPackets int, maxDur time.Duration) (gen uint64, dur, cpuTime time.Duration) {
	tb.Helper()
	before := sumCounter(tb, s.count)
	var runErr error
	err := inNetns(s.ns, func() error {
		var orig unix.CPUSet
		if err := unix.SchedGetaffinity(0, &orig); err != nil {
			return err
		}
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return err
		}
		defer func() {
			if err := unix.SchedSetaffinity(0, &orig); err != nil {
				// A thread left pinned must not serve other goroutines.
				runtime.LockOSThread()
				runErr = err
			}
		}()
		opts := &ebpf.RunOptions{
			Data: s.frame, Context: xdpMd{DataEnd: uint32(len(s.frame)), IngressIfindex: uint32(s.ifindex)},
			Repeat: repeat, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES, BatchSize: batch,
		}
		tid := unix.Gettid()
		c0 := taskCPU(tb, os.Getpid(), tid)
		start := time.Now()
		for runs := 0; runs*int(repeat) < maxPackets && time.Since(start) < maxDur; runs++ {
			if _, err := s.prog.Run(opts); err != nil {
				return fmt.Errorf("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (Linux >= 5.18): %w", err)
			}
		}
		dur = time.Since(start)
		cpuTime = taskCPU(tb, os.Getpid(), tid) - c0
		return nil
	})
	if err == nil {
		err = runErr
	}
	if err != nil {
		tb.Fatal(err)
	}
	return sumCounter(tb, s.count) - before, dur, cpuTime
}

// cpuPhase is one phase of BenchmarkDropPathCPU.
type cpuPhase struct {
	generated uint64        // frames the sender's program transmitted
	arrived   uint64        // frames the receiving veth's XDP program saw
	dropped   uint64        // denied by XDP, or read and discarded by the reader
	rcvbufErr uint64        // datagrams the kernel dropped at the full socket buffer
	dur       time.Duration // wall time of the sending
	sender    time.Duration // the sender thread's CPU time
	softirqd  time.Duration // CPU time of the sender CPU's ksoftirqd
	napi      time.Duration // the NAPI thread's CPU time (threaded mode)
	process   time.Duration // the test process's CPU time (sender and reader included)
	receive   time.Duration // the receive path's CPU time, however measured
	// senderAlone is the sender's CPU per frame in the self phase before
	// this one (inline mode).
	senderAlone float64
}

func perPacket(d time.Duration, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / float64(n)
}

// senderNs is the sender thread's CPU per frame generated.
func (ph cpuPhase) senderNs() float64 { return perPacket(ph.sender, ph.generated) }

// receiveNs is the receive path's CPU per frame that arrived: the veth
// driver and XDP, and for XDP_PASS the stack up to the socket.
func (ph cpuPhase) receiveNs() float64 { return perPacket(ph.receive, ph.arrived) }

// goNs is the process's CPU other than the sender thread's, per datagram
// read: the reader, the Go runtime and the benchmark's own bookkeeping.
func (ph cpuPhase) goNs() float64 { return perPacket(ph.process-ph.sender, ph.dropped) }

func (ph cpuPhase) pps(n uint64) float64 { return float64(n) / ph.dur.Seconds() }

// BenchmarkDropPathCPU measures the CPU cost per dropped packet of the
// user-space drop path and of XDP, each on its own with the sender's cost
// left out (see the comment at the top of this file), and the wall-clock
// rates with the sender named. Same veth pair, 128-byte frame and
// live-frames sender as BenchmarkDropPathLiveFrames; the sender's thread is
// pinned to one CPU. Phases, one after the other:
//
//  0. refused: no program on the receiving veth, so the veth has no NAPI
//     and refuses every frame in the transmit call: the sender with the
//     transmit call but no receive;
//  1. user: a counting XDP_PASS program on the receiving veth, and the Go
//     reader of userDropPath reading, looking up and discarding every
//     datagram;
//  2. xdp: the sbc program in native mode, the source denied;
//  3. ceiling: a counting XDP_DROP program: the veth driver's share.
//
// In inline mode each of phases 1-3 is preceded by a one-second "self"
// phase in which the sender's program drops its own frames (XDP_DROP
// instead of XDP_TX): the sender's cost per frame at that moment, which is
// what is subtracted (a shared machine drifts between phases). The
// receive path's figures therefore include the veth transmit; the refused
// phase bounds that share from above (refused minus self).
//
// Phases 1-3 share one XDP link whose program is replaced between them, so
// that the NAPI instance (and in threaded mode its thread) stays the same.
// Sub-benchmarks: napi=inline (the default) and napi=threaded (the NAPI
// thread pinned to the other CPU). Run with -benchtime=1x; each phase is
// bounded by liveMaxPackets and liveMaxDuration.
func BenchmarkDropPathCPU(b *testing.B) {
	for _, threaded := range []bool{false, true} {
		name := "napi=inline"
		if threaded {
			name = "napi=threaded"
		}
		b.Run(name, func(b *testing.B) { benchDropPathCPU(b, threaded) })
	}
}

func benchDropPathCPU(b *testing.B, threaded bool) {
	requirePriv(b)
	if !threaded && irqTimeAccounting() {
		b.Skip("CONFIG_IRQ_TIME_ACCOUNTING=y: softirq time is not charged to the sender's thread, so the inline split does not hold; see napi=threaded")
	}
	p := newVethPair(b)
	tx := newLiveSender(b, p, benchFrame(p, addrBlocked))
	cpuTx, cpuRx := benchCPUs(b)
	softirqd := ksoftirqd(b, cpuTx)

	passCount, dropCount := perCPUCounter(b), perCPUCounter(b)
	passProg := countingXDP(b, passCount, xdpPass)
	dropProg := countingXDP(b, dropCount, xdpDrop)
	x := loadTest(b, Options{UDPPorts: []uint16{5060}})
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
	discarded := userDropPath(b, p)
	napiTid := 0

	self := *tx
	self.prog = countingXDP(b, self.count, xdpDrop)
	measure := func(sender *liveSender, maxDur time.Duration, arrived func() uint64) (ph cpuPhase) {
		a0, d0, e0 := arrived(), discarded.Load(), udpRcvbufErrors(p.nsB)
		var n0 time.Duration
		if napiTid != 0 {
			n0 = taskCPU(b, napiTid, napiTid)
		}
		p0, s0 := processCPU(), taskCPU(b, softirqd, softirqd)
		ph.generated, ph.dur, ph.sender = sender.sendPinned(b, cpuTx, liveChunk, liveBatch, liveMaxPackets, maxDur)
		// Let the receive path and the reader finish what the sender left
		// in the ring and the socket: bounded, until the counts settle.
		settle(func() uint64 { return arrived() + discarded.Load() })
		ph.process, ph.softirqd = processCPU()-p0, taskCPU(b, softirqd, softirqd)-s0
		if napiTid != 0 {
			ph.napi = taskCPU(b, napiTid, napiTid) - n0
		}
		ph.arrived = arrived() - a0
		ph.dropped = discarded.Load() - d0
		ph.rcvbufErr = udpRcvbufErrors(p.nsB) - e0
		return ph
	}
	var l link.Link
	withProg := func(prog *ebpf.Program) {
		if l != nil {
			if err := l.Update(prog); err != nil {
				b.Fatalf("replacing the XDP program with %v: %v", prog, err)
			}
			return
		}
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
		b.Cleanup(func() { _ = l.Close() })
		if threaded {
			// Threaded NAPI needs a NAPI instance, made by the first
			// native program.
			napiTid = newNAPIThread(b, p.ifB, func() { enableThreadedNAPI(b, p.nsB, p.ifB) })
			pinThread(b, napiTid, cpuRx)
		}
	}

	b.ReportAllocs()
	b.ResetTimer()
	none := func() uint64 { return 0 }
	// phase measures one phase, in inline mode after a self phase whose
	// sender cost per frame it keeps.
	phase := func(arrived func() uint64) (ph cpuPhase) {
		if !threaded {
			ph.senderAlone = measure(&self, time.Second, none).senderNs()
		}
		ph2 := measure(tx, liveMaxDuration, arrived)
		ph2.senderAlone = ph.senderAlone
		return ph2
	}
	var refused, user, xdp, ceiling cpuPhase
	for range b.N {
		rx0 := rxPackets(b, p.nsB, p.ifB)
		refused = measure(tx, liveMaxDuration, none)
		refused.arrived = rxPackets(b, p.nsB, p.ifB) - rx0
		withProg(passProg)
		user = phase(func() uint64 { return sumCounter(b, passCount) })
		withProg(x.objs.SbcXdp)
		c0 := counters()
		xdp = phase(func() uint64 {
			c := counters().sub(c0)
			return c.Passed + c.DroppedDeny + c.DroppedRateLimit + c.Malformed + c.NonIP + c.Fragments + c.Allowed + c.Spared
		})
		xdp.dropped = counters().sub(c0).DroppedDeny
		withProg(dropProg)
		ceiling = phase(func() uint64 { return sumCounter(b, dropCount) })
		ceiling.dropped = ceiling.arrived
	}
	b.StopTimer()

	// The receive path's CPU: the NAPI thread's, or what the sender's
	// thread and its ksoftirqd spent beyond the sender's own cost.
	for _, ph := range []*cpuPhase{&user, &xdp, &ceiling} {
		if threaded {
			ph.receive = ph.napi + ph.softirqd
		} else {
			ph.receive = ph.sender + ph.softirqd - time.Duration(ph.senderAlone*float64(ph.generated))
		}
	}
	for _, n := range []struct {
		name string
		ph   cpuPhase
	}{{"refused", refused}, {"user", user}, {"xdp", xdp}, {"ceiling", ceiling}} {
		b.Logf("%-7s generated %d arrived %d dropped %d rcvbuf-errors %d in %v; cpu: sender thread %v (alone %.1f ns/frame) ksoftirqd/%d %v napi thread %v process %v; receive path %v",
			n.name, n.ph.generated, n.ph.arrived, n.ph.dropped, n.ph.rcvbufErr, n.ph.dur.Round(time.Millisecond),
			n.ph.sender.Round(time.Millisecond), n.ph.senderAlone, cpuTx, n.ph.softirqd.Round(time.Millisecond), n.ph.napi.Round(time.Millisecond),
			n.ph.process.Round(time.Millisecond), n.ph.receive.Round(time.Millisecond))
		if n.ph.generated == 0 || (n.name != "refused" && (n.ph.arrived == 0 || n.ph.dropped == 0)) {
			b.Fatalf("%s phase: nothing generated, arrived or dropped", n.name)
		}
	}
	if refused.arrived*100 > refused.generated {
		b.Fatalf("refused phase: %d packets received with no program on the receiving veth (%d frames sent)", refused.arrived, refused.generated)
	}
	userNs := user.receiveNs() + user.goNs()
	b.ReportMetric(refused.senderNs(), "sender-refused-ns/frame")
	if !threaded {
		b.ReportMetric(xdp.senderAlone, "sender-self-ns/frame")
	}
	b.ReportMetric(xdp.senderNs(), "sender-in-xdp-ns/frame")
	b.ReportMetric(user.receiveNs(), "user-stack-ns/pkt")
	b.ReportMetric(user.goNs(), "user-go-ns/pkt")
	b.ReportMetric(userNs, "user-ns/pkt")
	b.ReportMetric(xdp.receiveNs(), "xdp-ns/pkt")
	b.ReportMetric(ceiling.receiveNs(), "ceiling-ns/pkt")
	b.ReportMetric(userNs/xdp.receiveNs(), "cpu-user/xdp-x")
	b.ReportMetric(user.pps(user.dropped), "user-drop-pps")
	b.ReportMetric(xdp.pps(xdp.dropped), "xdp-drop-pps")
	b.ReportMetric(xdp.pps(xdp.dropped)/user.pps(user.dropped), "wall-xdp/user-x")
}

// irqTimeAccounting reports whether the running kernel's configuration,
// where /proc/config.gz shows it, has IRQ time accounting.
func irqTimeAccounting() bool {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return false
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(z)
	for sc.Scan() {
		if sc.Text() == "CONFIG_IRQ_TIME_ACCOUNTING=y" {
			return true
		}
	}
	return false
}

// ksoftirqd returns the id of CPU cpu's ksoftirqd thread.
func ksoftirqd(tb testing.TB, cpu int) int {
	tb.Helper()
	name := fmt.Sprintf("ksoftirqd/%d\n", cpu)
	for id := range threadsNamed(name) {
		return id
	}
	tb.Fatalf("no %s thread", strings.TrimSpace(name))
	return 0
}

// settle waits, at most a second, until count stops changing for 50 ms.
func settle(count func() uint64) {
	last := count()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		n := count()
		if n == last {
			return
		}
		last = n
	}
}

// rxPackets is the receive count of ifname in namespace ns (/proc/net/dev).
func rxPackets(tb testing.TB, ns, ifname string) uint64 {
	tb.Helper()
	var n uint64
	found := false
	if err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(name) != ifname {
				continue
			}
			f := strings.Fields(rest) // receive: bytes packets ...
			if len(f) < 2 {
				return fmt.Errorf("short /proc/net/dev line %q", line)
			}
			found = true
			n, err = strconv.ParseUint(f[1], 10, 64)
			return err
		}
		return nil
	}); err != nil || !found {
		tb.Fatalf("receive count of %s: %v (found %v)", ifname, err, found)
	}
	return n
}

// perCPUValues returns slot 0 of the per-CPU array m, indexed by CPU.
func perCPUValues(tb testing.TB, m *ebpf.Map) []uint64 {
	tb.Helper()
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		tb.Fatal(err)
	}
	return per
}

// TestDropPathCPUAttribution checks, with a few frames, the premises of
// BenchmarkDropPathCPU's accounting: with no program on the receiving veth
// the sender's frames are refused in the transmit call and never arrive,
// so the refused phase costs the sender only; with a native
// program on it they arrive, and the receiving program runs on the
// sender's CPU (inline: its cost lands on the sender's thread or that
// CPU's ksoftirqd), and on the other CPU once threaded NAPI is on and its
// thread is pinned there.
func TestDropPathCPUAttribution(t *testing.T) {
	requirePriv(t)
	cpuTx, cpuRx := benchCPUs(t)
	if cpuTx == cpuRx {
		t.Skip("needs two CPUs")
	}
	p := newVethPair(t)
	tx := newLiveSender(t, p, benchFrame(p, addrBlocked))
	// One batch of 64: fewer frames than the veth's receive ring holds.
	const n = 64
	send := func() {
		t.Helper()
		if got, _, _ := tx.sendPinned(t, cpuTx, n, n, n, time.Minute); got != n {
			t.Fatalf("sender generated %d frames, want %d", got, n)
		}
	}

	// The veth counts the refused frames nowhere that /proc shows (only
	// in ethtool's per-queue statistics); what is checked is that they do
	// not arrive. A new link's own link-local traffic (DAD, MLD) may add a
	// few received packets, never half a batch.
	rx0 := rxPackets(t, p.nsB, p.ifB)
	send()
	if rx := rxPackets(t, p.nsB, p.ifB) - rx0; rx >= n/2 {
		t.Fatalf("no program on %s, yet %d packets were received after sending %d frames", p.ifB, rx, n)
	}

	count := perCPUCounter(t)
	var l link.Link
	if err := inNetns(p.nsB, func() error {
		ifc, err := net.InterfaceByName(p.ifB)
		if err != nil {
			return err
		}
		prog := countingXDPLen(t, count, xdpDrop, len(tx.frame))
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	// received waits, bounded, until n more frames were counted, and
	// returns how many each CPU counted.
	received := func(before []uint64) []uint64 {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			per := perCPUValues(t, count)
			var total uint64
			for i := range per {
				total += per[i] - before[i]
			}
			if total >= n || time.Now().After(deadline) {
				if total != n {
					t.Fatalf("receiving program counted %d of %d frames", total, n)
				}
				for i := range per {
					per[i] -= before[i]
				}
				return per
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	before := perCPUValues(t, count)
	send()
	if per := received(before); per[cpuTx] != n {
		t.Fatalf("inline: want all %d frames received on the sender's CPU %d, got per CPU %v", n, cpuTx, per)
	}

	tid := newNAPIThread(t, p.ifB, func() { enableThreadedNAPI(t, p.nsB, p.ifB) })
	pinThread(t, tid, cpuRx)
	before = perCPUValues(t, count)
	send()
	if per := received(before); per[cpuRx] != n {
		t.Fatalf("threaded: want all %d frames received on the NAPI thread's CPU %d, got per CPU %v", n, cpuRx, per)
	}
}

// countingXDPLen is countingXDP counting only frames of length n (the
// sender's), and passing others: the link-local traffic a new link sends
// on its own (IPv6 DAD, MLD) is no frame of the test's.
func countingXDPLen(tb testing.TB, m *ebpf.Map, action int32, n int) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.XDP,
		License:    "MIT",
		AttachType: ebpf.AttachXDP,
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
			asm.Sub.Reg(asm.R3, asm.R2),
			asm.JNE.Imm(asm.R3, int32(n), "other"),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "other"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, action),
			asm.Return(),
			asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("other"),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("loading the length-counting XDP program: %v", err)
	}
	tb.Cleanup(func() { _ = prog.Close() })
	return prog
}
