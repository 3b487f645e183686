package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/rtp"
	pion "github.com/pion/srtp/v3"
	"golang.org/x/net/ipv4"

	"github.com/sbc-project/sbc/bench"
	"github.com/sbc-project/sbc/srtp"
)

// RelayKind is what relays the media in a scenario.
type RelayKind string

// The relays the harness drives.
const (
	RelaySBC       RelayKind = "sbc"       // package srtp in a child process (RelayChild)
	RelayRTPEngine RelayKind = "rtpengine" // Debian's rtpengine-daemon, userspace
	RelayNone      RelayKind = "direct"    // phone to phone: the load generator's own cost
)

// Scenario is one measured run: Calls calls, each with a phone on leg A
// (the caller's side) and one on leg B, sending PPS packets per second
// per direction (A→B, and B→A if Both) for Duration, paced evenly.
// Each packet is RTP with 160 bytes of payload (PCMU, 20 ms).
type Scenario struct {
	Name     string
	Relay    RelayKind
	A, B     Profile
	Calls    int
	PPS      int
	Both     bool
	Duration time.Duration
	// Procs is GOMAXPROCS of the SBC relay child (0: the default).
	Procs int
	// RTPEngineThreads is rtpengine's --num-threads (0: its default).
	RTPEngineThreads int
	// PerCallSockets gives every phone a socket of its own (as real
	// phones have); otherwise plain and SDES phones of a side share one
	// socket and only DTLS phones have their own.
	PerCallSockets bool
	// RelayOpts is how the SBC relay child reads its sockets (relay
	// loops, coalescing, or reader goroutines per socket).
	RelayOpts srtp.RelayOptions
	// Kernel gives the SBC relay child the in-kernel path for plain RTP
	// (srtp/kfwd on lo; needs root).
	Kernel bool
	// IdleWindow, if set, samples the relay's CPU for that long with no
	// traffic before the run (Result.RelayIdle).
	IdleWindow time.Duration
}

// Result is what a run measured.
type Result struct {
	Scenario Scenario
	// Sent and Received count media packets at the phones during the
	// measured run (after the warm-up round); PhoneErrors counts packets
	// a phone could not decrypt or did not expect.
	Sent, Received, PhoneErrors uint64
	Wall                        time.Duration
	// RelayCPU is the relay process's CPU time over the run (schedstat),
	// RelayCPUTicks the same from utime+stime; RelayIdle its CPU time
	// over the scenario's IdleWindow before the run (timers,
	// housekeeping).
	RelayCPU, RelayCPUTicks, RelayIdle time.Duration
	// RelayWait is how long the relay's threads waited for a CPU while
	// runnable during the run (schedstat): the contention from the rest
	// of the machine.
	RelayWait time.Duration
	// RcvbufErrors is the machine's UDP receive-buffer drops during the
	// run (/proc/net/snmp): where lost packets went.
	RcvbufErrors uint64
	// GenCPU is this process's CPU over the run: the phones (pacing,
	// encryption, receiving, decryption). Not included in RelayCPU.
	GenCPU time.Duration
	// Machine is the whole machine's CPU over the run (/proc/stat): the
	// only place where an in-kernel relay's softirq work shows, and also
	// everything else that ran meanwhile.
	Machine MachineCPU
	// Ksoftirqd is the ksoftirqd threads' CPU over the run: softirq work
	// the kernel did not run in the senders' system calls (the relay's
	// and the phones'), with whatever else the machine did.
	Ksoftirqd time.Duration
	// Behind is how far the pacer fell behind its schedule at worst.
	Behind time.Duration
	// Latency percentiles from send to receipt (relay and kernel both
	// ways, receiver wake-up).
	P50, P99, Max time.Duration
	// Stats and Before: the SBC relay's counters and memory after the
	// run, and its memory before any stream (RelaySBC only).
	Stats  *RelayStats
	Before MemStats
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// RelayUSPerPacket is the relay's CPU per packet sent through it, in µs.
func (r Result) RelayUSPerPacket() float64 {
	if r.Sent == 0 {
		return math.NaN()
	}
	return us(r.RelayCPU) / float64(r.Sent)
}

// PathUSPerPacket is the relay's and the generator's CPU per packet
// together, in µs: on loopback the kernel's delivery work, an in-kernel
// relay's included, runs in the sending process's system calls, so this
// sum holds all of a relay's cost (less what ksoftirqd picked up, which
// MachineUSPerPacket shows).
func (r Result) PathUSPerPacket() float64 { return r.RelayUSPerPacket() + r.GenUSPerPacket() }

// KsoftirqdUSPerPacket is the ksoftirqd threads' CPU per packet, in µs.
func (r Result) KsoftirqdUSPerPacket() float64 {
	if r.Sent == 0 {
		return math.NaN()
	}
	return us(r.Ksoftirqd) / float64(r.Sent)
}

// MachineUSPerPacket is the machine's busy CPU per packet, in µs.
func (r Result) MachineUSPerPacket() float64 {
	if r.Sent == 0 {
		return math.NaN()
	}
	return us(r.Machine.Busy) / float64(r.Sent)
}

// GenUSPerPacket is the load generator's CPU per packet, in µs.
func (r Result) GenUSPerPacket() float64 {
	if r.Sent == 0 {
		return math.NaN()
	}
	return us(r.GenCPU) / float64(r.Sent)
}

// PacketsPerCore is how many packets per second one fully busy core
// relays at this cost.
func (r Result) PacketsPerCore() float64 { return 1e6 / r.RelayUSPerPacket() }

// RelayLoad is the relay's CPU over the run as a fraction of one core.
func (r Result) RelayLoad() float64 { return float64(r.RelayCPU) / float64(r.Wall) }

// Lost is Sent - Received.
func (r Result) Lost() uint64 {
	if r.Received > r.Sent {
		return 0
	}
	return r.Sent - r.Received
}

// flow is one direction of one call: a phone's socket, where it sends,
// its encryption and RTP state. Only the pacer touches it.
type flow struct {
	conn *net.UDPConn
	to   netip.AddrPort
	addr *net.UDPAddr // to, for sendmmsg
	tx   *txBatch     // the batch of conn
	enc  *pion.Context
	hdr  rtp.Header
	ssrc uint32
	seq  uint16
	ts   uint32
}

// rxEnd is what a receiving phone does with packets from one source.
type rxEnd struct{ dec *pion.Context }

// socket is a phone socket and its receiver's view: packets by source.
type socket struct {
	conn   *net.UDPConn
	from   map[netip.AddrPort]*rxEnd // filled before traffic, then published in routes
	routes atomic.Pointer[map[netip.AddrPort]*rxEnd]
	fc     *feedConn // DTLS phone: where its DTLS datagrams go
}

// gen is the load generator of one run.
type gen struct {
	sc       Scenario
	sockets  []*socket
	flows    []*flow
	t0       time.Time
	received atomic.Uint64
	errors   atomic.Uint64
	lat      latency
	wg       sync.WaitGroup
	closers  []func()
}

func (g *gen) close() {
	for _, s := range g.sockets {
		_ = s.conn.Close()
		if s.fc != nil {
			_ = s.fc.Close()
		}
	}
	g.wg.Wait()
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
}

func listen() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err == nil {
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
	}
	return c, err
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// Run runs one scenario: sets up the relay and the phones, sends one
// warm-up packet per flow and waits for all of them (the relay latches,
// and the path is proven), samples the relay's idle CPU, then sends
// Calls × PPS × Duration packets per direction, paced, and measures.
func Run(ctx context.Context, sc Scenario) (Result, error) {
	res := Result{Scenario: sc}
	if sc.Calls <= 0 || sc.PPS <= 0 || sc.Duration <= 0 {
		return res, fmt.Errorf("scenario %q: calls, pps and duration must be positive", sc.Name)
	}
	if sc.Relay != RelaySBC && (sc.A != Plain || sc.B != Plain) {
		return res, fmt.Errorf("scenario %q: %s relays plain RTP only here", sc.Name, sc.Relay)
	}
	g := &gen{sc: sc, t0: time.Now()}
	defer g.close()
	// Phones: plain and SDES phones of a side share one socket (the relay
	// tells calls apart by its own ports); a DTLS phone has its own (one
	// DTLS association per leg and address).
	side := func(p Profile) ([]*socket, error) {
		if p != DTLS && !sc.PerCallSockets {
			c, err := listen()
			if err != nil {
				return nil, err
			}
			s := &socket{conn: c, from: map[netip.AddrPort]*rxEnd{}}
			g.sockets = append(g.sockets, s)
			return []*socket{s}, nil
		}
		out := make([]*socket, sc.Calls)
		for i := range out {
			c, err := listen()
			if err != nil {
				return nil, err
			}
			out[i] = &socket{conn: c, from: map[netip.AddrPort]*rxEnd{}}
			g.sockets = append(g.sockets, out[i])
		}
		return out, nil
	}
	sa, err := side(sc.A)
	if err != nil {
		return res, err
	}
	sb, err := side(sc.B)
	if err != nil {
		return res, err
	}
	pick := func(s []*socket, i int) *socket { return s[i%len(s)] }
	addrs := func(s []*socket) []netip.AddrPort {
		out := make([]netip.AddrPort, len(s))
		for i, k := range s {
			out[i] = addrOf(k.conn)
		}
		return out
	}

	// The relay: for each call, where phone A and phone B send.
	legA := make([]netip.AddrPort, sc.Calls)
	legB := make([]netip.AddrPort, sc.Calls)
	var encA, decA, encB, decB = make([]*pion.Context, sc.Calls), make([]*pion.Context, sc.Calls), make([]*pion.Context, sc.Calls), make([]*pion.Context, sc.Calls)
	relayPid := 0
	var relay *Relay
	switch sc.Relay {
	case RelayNone:
		for i := range sc.Calls {
			legA[i], legB[i] = addrOf(pick(sb, i).conn), addrOf(pick(sa, i).conn)
		}
	case RelayRTPEngine:
		e, err := StartRTPEngine(ctx, RTPEngineConfig{PortMin: 0, Threads: sc.RTPEngineThreads})
		if err != nil {
			return res, err
		}
		g.closers = append(g.closers, func() { _ = e.Close() })
		relayPid = e.Pid()
		for i := range sc.Calls {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			legA[i], legB[i], err = e.Call(cctx, "call-"+strconv.Itoa(i), addrOf(pick(sa, i).conn), addrOf(pick(sb, i).conn))
			cancel()
			if err != nil {
				return res, fmt.Errorf("rtpengine call %d: %w; %s", i, err, e.Log())
			}
		}
	case RelaySBC:
		cert, err := srtp.GenerateCertificate()
		if err != nil {
			return res, err
		}
		relay, err = StartRelay(RelaySetup{Streams: sc.Calls, A: sc.A, B: sc.B, RemoteA: addrs(sa), RemoteB: addrs(sb),
			PeerFingerprint: cert.Fingerprint.String(), Relay: sc.RelayOpts, Kernel: sc.Kernel}, sc.Procs)
		if err != nil {
			return res, err
		}
		g.closers = append(g.closers, relay.Close)
		relayPid = relay.Pid()
		res.Before = relay.Reply.Before
		for i, st := range relay.Reply.Streams {
			legA[i], legB[i] = st.A, st.B
			if sc.A == SDES {
				if encA[i], decA[i], err = sdesPhone(st.PhoneSendA, st.PhoneRecvA); err != nil {
					return res, err
				}
			}
			if sc.B == SDES {
				if encB[i], decB[i], err = sdesPhone(st.PhoneSendB, st.PhoneRecvB); err != nil {
					return res, err
				}
			}
		}
		relayFP, err := srtp.ParseFingerprint(relay.Reply.Fingerprint)
		if err != nil {
			return res, err
		}
		// DTLS phones: a feed per socket, receivers started, handshakes
		// a few at a time.
		for _, p := range []struct {
			prof     Profile
			socks    []*socket
			legs     []netip.AddrPort
			enc, dec []*pion.Context
		}{{sc.A, sa, legA, encA, decA}, {sc.B, sb, legB, encB, decB}} {
			if p.prof != DTLS {
				continue
			}
			for i, s := range p.socks {
				s.fc = newFeedConn(s.conn, p.legs[i])
				g.startReceiver(s)
			}
			sem := make(chan struct{}, 8)
			errs := make([]error, len(p.socks))
			conns := make([]*dtls.Conn, len(p.socks))
			var wg sync.WaitGroup
			for i, s := range p.socks {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					defer cancel()
					p.enc[i], p.dec[i], conns[i], errs[i] = dtlsHandshake(hctx, s.fc, cert, relayFP)
				}()
			}
			wg.Wait()
			for _, c := range conns {
				if c != nil {
					g.closers = append(g.closers, func() { _ = c.Close() })
				}
			}
			if err := errors.Join(errs...); err != nil {
				return res, fmt.Errorf("DTLS phones: %w", err)
			}
		}
		if err := relay.Ready(); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("unknown relay %q", sc.Relay)
	}

	// Receivers know each call's relay port and the keys to open what
	// comes from it; flows know where to send.
	for i := range sc.Calls {
		pa, pb := pick(sa, i), pick(sb, i)
		srcA, srcB := legA[i], legB[i] // what A receives comes from the relay's A port
		if sc.Relay == RelayNone {
			srcA, srcB = addrOf(pb.conn), addrOf(pa.conn)
		}
		pa.from[srcA] = &rxEnd{dec: decA[i]}
		pb.from[srcB] = &rxEnd{dec: decB[i]}
		g.flows = append(g.flows, &flow{conn: pa.conn, to: legA[i], enc: encA[i], ssrc: uint32(2*i + 1)})
		if sc.Both {
			g.flows = append(g.flows, &flow{conn: pb.conn, to: legB[i], enc: encB[i], ssrc: uint32(2*i + 2)})
		}
	}
	txs := map[*net.UDPConn]*txBatch{}
	for _, f := range g.flows {
		if txs[f.conn] == nil {
			txs[f.conn] = newTxBatch(f.conn)
		}
		f.tx, f.addr = txs[f.conn], net.UDPAddrFromAddrPort(f.to)
	}
	for _, s := range g.sockets {
		s.routes.Store(&s.from)
		if s.fc == nil {
			g.startReceiver(s)
		}
	}
	if err := g.warmup(ctx); err != nil {
		if relay != nil {
			if st, e := relay.Stats(); e == nil {
				err = fmt.Errorf("%w (relay: %+v)", err, st)
			}
		}
		return res, err
	}
	if relayPid != 0 && sc.IdleWindow > 0 {
		c0, err := ProcCPU(relayPid)
		if err != nil {
			return res, err
		}
		time.Sleep(sc.IdleWindow)
		c1, _ := ProcCPU(relayPid)
		res.RelayIdle = c1 - c0
	}
	g.received.Store(0)
	g.errors.Store(0)
	g.lat.reset()
	var c0, t0, w0 time.Duration
	if relayPid != 0 {
		c0, w0, _ = procSched(relayPid)
		t0, _ = ProcCPUTicks(relayPid)
	}
	u0, _ := bench.ReadUDPStats()
	m0, _ := ReadMachineCPU()
	k0 := KsoftirqdCPU()
	s0, _ := ProcCPU(os.Getpid())
	start := time.Now()
	sent, behind, err := g.pace(ctx)
	if err != nil {
		return res, err
	}
	g.drain(sent)
	res.Wall = time.Since(start)
	if relayPid != 0 {
		c1, w1, _ := procSched(relayPid)
		t1, _ := ProcCPUTicks(relayPid)
		res.RelayCPU, res.RelayCPUTicks, res.RelayWait = c1-c0, t1-t0, w1-w0
	}
	if u1, err := bench.ReadUDPStats(); err == nil {
		res.RcvbufErrors = u1.Sub(u0).RcvbufErrors
	}
	if m1, err := ReadMachineCPU(); err == nil {
		res.Machine = MachineCPU{Busy: m1.Busy - m0.Busy, Softirq: m1.Softirq - m0.Softirq}
	}
	res.Ksoftirqd = KsoftirqdCPU() - k0
	s1, _ := ProcCPU(os.Getpid())
	res.GenCPU = s1 - s0
	res.Sent, res.Received, res.PhoneErrors, res.Behind = sent, g.received.Load(), g.errors.Load(), behind
	res.P50, res.P99, res.Max = g.lat.quantile(0.5), g.lat.quantile(0.99), g.lat.max()
	if relay != nil {
		st, err := relay.Stats()
		if err != nil {
			return res, err
		}
		res.Stats = &st
	}
	return res, nil
}

// sdesPhone builds a phone's contexts from the relay's a=crypto lines.
func sdesPhone(send, recv string) (enc, dec *pion.Context, err error) {
	mk := func(line string) (*pion.Context, error) {
		c, err := srtp.ParseCrypto(line)
		if err != nil {
			return nil, err
		}
		k, err := srtp.KeysFromCrypto(c)
		if err != nil {
			return nil, err
		}
		return pion.CreateContext(k.Key, k.Salt, k.Profile)
	}
	if enc, err = mk(send); err == nil {
		dec, err = mk(recv)
	}
	return enc, dec, err
}

// rxBatch is how many datagrams a phone's receiver takes per recvmmsg.
const rxBatch = 64

func (g *gen) startReceiver(s *socket) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		pc := ipv4.NewPacketConn(s.conn)
		msgs := make([]ipv4.Message, rxBatch)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		out := make([]byte, 2048)
		var hdr rtp.Header
		for {
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				g.errors.Add(1)
				continue
			}
			for _, m := range msgs[:n] {
				ua, _ := m.Addr.(*net.UDPAddr)
				if ua == nil {
					g.errors.Add(1)
					continue
				}
				g.receive(s, m.Buffers[0][:m.N], ua.AddrPort(), out, &hdr)
			}
		}
	}()
}

// receive is a phone's handling of one datagram: DTLS to its handshake,
// media decrypted (if its leg is SRTP), counted and timed.
func (g *gen) receive(s *socket, pkt []byte, from netip.AddrPort, out []byte, hdr *rtp.Header) {
	if len(pkt) > 0 && pkt[0] >= 20 && pkt[0] <= 63 {
		if s.fc != nil {
			s.fc.feed(pkt)
		}
		return
	}
	routes := s.routes.Load()
	if routes == nil {
		g.errors.Add(1)
		return
	}
	e, ok := (*routes)[netip.AddrPortFrom(from.Addr().Unmap(), from.Port())]
	if !ok {
		g.errors.Add(1)
		return
	}
	if e.dec != nil {
		var err error
		if pkt, err = e.dec.DecryptRTP(out[:0], pkt, hdr); err != nil {
			g.errors.Add(1)
			return
		}
	}
	if len(pkt) < 20 {
		g.errors.Add(1)
		return
	}
	g.lat.add(time.Since(g.t0) - time.Duration(binary.BigEndian.Uint64(pkt[12:20])))
	g.received.Add(1)
}

// packet writes flow f's next RTP packet (PCMU, 160 bytes of payload
// whose first 8 are the send time) into p.
func (g *gen) packet(f *flow, p []byte) {
	f.seq++
	f.ts += 160
	p[0], p[1] = 0x80, 0
	binary.BigEndian.PutUint16(p[2:], f.seq)
	binary.BigEndian.PutUint32(p[4:], f.ts)
	binary.BigEndian.PutUint32(p[8:], f.ssrc)
	binary.BigEndian.PutUint64(p[12:], uint64(time.Since(g.t0)))
}

func (g *gen) send(f *flow, plain, wire []byte) error {
	g.packet(f, plain)
	pkt := plain
	if f.enc != nil {
		var err error
		if pkt, err = f.enc.EncryptRTP(wire[:0], plain, &f.hdr); err != nil {
			return err
		}
	}
	_, err := f.conn.WriteToUDPAddrPort(pkt, f.to)
	return err
}

// warmup sends one packet per flow and waits for all (bounded): the
// relay latches every leg, and a broken path fails here, not as a
// measured loss.
func (g *gen) warmup(ctx context.Context) error {
	plain, wire := make([]byte, 12+160), make([]byte, 0, 256)
	for _, f := range g.flows {
		if err := g.send(f, plain, wire); err != nil {
			return err
		}
	}
	want := uint64(len(g.flows))
	deadline := time.Now().Add(10 * time.Second)
	for g.received.Load() < want || g.errors.Load() > 0 {
		if g.errors.Load() > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("warm-up: %d of %d packets came through, %d phone errors", g.received.Load(), want, g.errors.Load())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// txBatch collects a phone socket's packets of one pacing tick for one
// sendmmsg.
type txBatch struct {
	pc    *ipv4.PacketConn
	msgs  []ipv4.Message
	bufs  [][]byte
	n     int
	dirty bool
}

const txBatchSize = 64

func newTxBatch(c *net.UDPConn) *txBatch {
	b := &txBatch{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, txBatchSize), bufs: make([][]byte, txBatchSize)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, 0, 256)
		b.msgs[i].Buffers = [][]byte{nil}
	}
	return b
}

func (b *txBatch) flush() error {
	for sent := 0; sent < b.n; {
		k, err := b.pc.WriteBatch(b.msgs[sent:b.n], 0)
		if err != nil {
			return err
		}
		sent += k
	}
	b.n = 0
	return nil
}

// add puts flow f's next packet into its socket's batch, flushing a full
// batch.
func (g *gen) add(f *flow, plain []byte) error {
	b := f.tx
	g.packet(f, plain)
	pkt := append(b.bufs[b.n][:0], plain...)
	if f.enc != nil {
		var err error
		if pkt, err = f.enc.EncryptRTP(b.bufs[b.n][:0], plain, &f.hdr); err != nil {
			return err
		}
	}
	b.msgs[b.n].Buffers[0], b.msgs[b.n].Addr = pkt, f.addr
	b.n++
	b.dirty = true
	if b.n == txBatchSize {
		return b.flush()
	}
	return nil
}

// pace sends PPS packets per second per flow for the scenario's
// duration, flows interleaved evenly, checking the schedule every half
// millisecond and sending what is due with one sendmmsg per phone socket
// (the relay still sees each of its sockets receive one packet at a
// time: consecutive packets of a batch go to different calls). behind is
// the worst lag of a packet behind its slot.
func (g *gen) pace(ctx context.Context) (sent uint64, behind time.Duration, err error) {
	per := len(g.flows)
	rate := float64(per * g.sc.PPS)
	total := uint64(rate * g.sc.Duration.Seconds())
	plain := make([]byte, 12+160)
	var batches []*txBatch
	seen := map[*txBatch]bool{}
	for _, f := range g.flows {
		if !seen[f.tx] {
			seen[f.tx] = true
			batches = append(batches, f.tx)
		}
	}
	start := time.Now()
	for sent < total {
		el := time.Since(start)
		due := min(total, uint64(el.Seconds()*rate)+1)
		if lag := el - time.Duration(float64(sent)/rate*float64(time.Second)); due > sent && lag > behind {
			behind = lag
		}
		for ; sent < due; sent++ {
			if err := g.add(g.flows[sent%uint64(per)], plain); err != nil {
				return sent, behind, err
			}
		}
		for _, b := range batches {
			if b.dirty {
				if err := b.flush(); err != nil {
					return sent, behind, err
				}
				b.dirty = false
			}
		}
		if ctx.Err() != nil {
			return sent, behind, ctx.Err()
		}
		time.Sleep(500 * time.Microsecond)
	}
	return sent, behind, nil
}

// drain waits for the packets in flight: until all sent arrived, or
// nothing arrived for a second (bounded at 10 s).
func (g *gen) drain(sent uint64) {
	deadline := time.Now().Add(10 * time.Second)
	last, lastAt := g.received.Load(), time.Now()
	for time.Now().Before(deadline) {
		n := g.received.Load()
		if n >= sent {
			return
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > time.Second {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// latency is a histogram of 50 µs buckets up to 200 ms.
type latency struct {
	b   [4001]atomic.Uint64
	top atomic.Int64
}

const latBucket = 50 * time.Microsecond

func (l *latency) add(d time.Duration) {
	d = max(d, 0)
	i := min(int(d/latBucket), len(l.b)-1)
	l.b[i].Add(1)
	for {
		m := l.top.Load()
		if int64(d) <= m || l.top.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (l *latency) reset() {
	for i := range l.b {
		l.b[i].Store(0)
	}
	l.top.Store(0)
}

func (l *latency) max() time.Duration { return time.Duration(l.top.Load()) }

// quantile returns the upper edge of the bucket holding quantile q.
func (l *latency) quantile(q float64) time.Duration {
	var n uint64
	for i := range l.b {
		n += l.b[i].Load()
	}
	if n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(n)))
	var c uint64
	for i := range l.b {
		c += l.b[i].Load()
		if c >= want {
			return time.Duration(i+1) * latBucket
		}
	}
	return l.max()
}
