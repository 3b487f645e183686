package sbc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// sipgo's UDP read loop remembers every source address:port it reads a
// datagram from (after the read filter): an entry of the transport's
// connection pool (so that a response finds the listener socket) and an
// entry of a map local to the loop, both kept until the loop ends, that
// is, until the listener closes. A flood from many source ports (or
// spoofed addresses the read filter lets through: a trunk's prefix, or
// any source with unknown_source_action = "reject") grows both without
// bound. The gate (gate.go) keeps unknown sources out in drop mode; for
// the rest the SBC bounds them itself:
//
//   - Each UDP socket is served by generations of sipgo's read loop: the
//     loop reads through a udpGen, a view of the socket whose ReadFrom
//     ends the loop (net.ErrClosed, which sipgo takes as the listener's
//     close without closing the socket) once the generation is retired.
//     When the realm's pool holds more than limits.udp_peers entries, a
//     new generation is started on the same socket (it registers itself as
//     the listener in the pool), the old one is retired: it stops reading
//     at once, waits udpGrace (requests it already read are still
//     creating their transactions, which look their source up in the
//     pool), then ends, and sipgo deletes every entry it added. Requests
//     and responses in flight keep the socket they hold.
//   - Past 4 × limits.udp_peers entries (a retired generation still in
//     its grace, and a new one filling fast), datagrams from addresses
//     not in the pool are dropped (stage filter, reason udp_peers_full)
//     until the pool is below that again; pool targets excepted. So the
//     pool never holds much more than 4 × limits.udp_peers entries,
//     however fast the flood (udpCheckEvery datagrams more at most, and
//     the pool targets).

// udpGrace is how long a retired read loop waits before it ends.
const udpGrace = 2 * time.Second

// udpPeersHard is the multiple of limits.udp_peers past which datagrams
// of new addresses are dropped.
const udpPeersHard = 4

// udpCheckEvery: the pool is measured once per this many datagrams let
// through (a power of two).
const udpCheckEvery = 64

// udpPeers bounds the UDP peer entries of one realm.
type udpPeers struct {
	ep     *endpoint
	socks  []*udpSock
	kick   chan struct{}
	passed atomic.Uint64 // datagrams let through by the read filter
	full   atomic.Bool   // over udpPeersHard × limit: new addresses are dropped
	quit   <-chan struct{}
	pool   *sip.ConnectionPool
	mu     sync.Mutex // serialises resets

	// The rest of a batch before a call's set-up (deferring): more is
	// set while the reader handing out a datagram has more of its batch
	// behind it; what waits for them is in later.
	more  atomic.Bool
	tried tried // INVITEs answered 100 by a reader (trying.go)
	lmu   sync.Mutex
	later []func()
	spare []func()
}

// deferring reports whether a new call's set-up handled now waits for
// the rest of a batch (afterBatch): the reader that handed out the
// datagram has more of its batch behind it, or set-ups are queued
// already (the batch's last one keeps its place behind them). A new
// call's 100 Trying goes out at once and its set-up (media, the INVITE
// to B) waits for the datagrams read with its INVITE: in a burst of
// INVITEs each is answered 100 after its predecessors' checks rather
// than after their whole set-up, and the set-ups keep their order.
func (u *udpPeers) deferring() bool {
	if u == nil {
		return false
	}
	if u.more.Load() {
		return true
	}
	u.lmu.Lock()
	n := len(u.later)
	u.lmu.Unlock()
	return n > 0
}

// afterBatch queues f, which runLater runs. Called by a read loop's
// handler where deferring said so: should the queue have been run in
// between, the loop runs it before its next read.
func (u *udpPeers) afterBatch(f func()) {
	u.lmu.Lock()
	u.later = append(u.later, f)
	u.lmu.Unlock()
}

// runLater runs what afterBatch queued, in order (and what is queued
// while it runs). Any reader may run it; each does at the end of its
// batch, and every read loop before it waits for a datagram, so that a
// set-up waits for no more than a batch, and never for the next one.
func (u *udpPeers) runLater() {
	for {
		u.lmu.Lock()
		fs := u.later
		if len(fs) == 0 {
			u.lmu.Unlock()
			return
		}
		u.later, u.spare = u.spare[:0], nil
		u.lmu.Unlock()
		for i, f := range fs {
			fs[i] = nil
			f()
		}
		u.lmu.Lock()
		if u.spare == nil {
			u.spare = fs[:0]
		}
		u.lmu.Unlock()
	}
}

// udpSock is one UDP listener socket and its current generation.
type udpSock struct {
	pc    net.PacketConn
	laddr string  // the socket's address, its key in the pool
	raw   *rawUDP // the raw path of its reads and writes, or nil
	cur   atomic.Pointer[udpGen]
}

// udpGen is one generation of sipgo's read loop on a socket.
type udpGen struct {
	net.PacketConn
	retired atomic.Bool
	quit    <-chan struct{}
	done    chan struct{} // closed when sipgo's loop on it returned
	u       *udpPeers
	// raw reads and writes the socket by raw system calls, with the
	// kernel's receive stamps when it gives them (rawudp_linux.go); nil:
	// the net package does, unstamped.
	raw *rawUDP
	// The readers' turns (takeTurn): reading counts the readers inside a
	// read of the socket, waiting those parked for their turn, lagging is
	// set while datagrams wait in its receive queue (pace), turn wakes a
	// parked reader, gone is closed when the generation is retired.
	reading atomic.Int32
	waiting atomic.Int32
	lagging atomic.Bool
	turn    chan struct{}
	gone    chan struct{}
}

// newUDPGen returns a generation of the read loop on pc (raw: its raw
// path, or nil), ended when quit closes.
func newUDPGen(u *udpPeers, pc net.PacketConn, raw *rawUDP, quit <-chan struct{}) *udpGen {
	return &udpGen{PacketConn: pc, quit: quit, done: make(chan struct{}), u: u, raw: raw,
		turn: make(chan struct{}, 1), gone: make(chan struct{})}
}

// Readers of a socket take turns. sipgo runs several read loops on each
// UDP socket (Options.UDPReaders), each handling in place what it read.
// While the socket keeps up, one reads and the others stay parked: a
// second reader waiting on the same socket costs a wake-up per datagram,
// for nothing when the queue is empty (two readers always reading cost
// 14 % more CPU per call at 11,000 calls/s, BENCHMARKS.md). Once a
// datagram has waited in the receive queue longer than lagOn (from the
// kernel's receive stamp), the socket lags: a parked reader is woken per
// late datagram, and they read alongside, each on its own core, until one
// reads a datagram within lagOff; should the reader with the turn block
// in its handler (none should), a parked one reads once it sees that none
// does (turnRecheck). One reader alone is the limit at the edge of
// capacity: on a trunk's socket it handles the INVITEs, ACKs and BYEs of
// every call; with one reader per socket the SBC was measured stuck at
// one core's worth of CPU, a fifth of the machine idle, while that
// socket's queue overflowed (BENCHMARKS.md, issue 11).
// lagOn is above the few milliseconds a reader waits when the kernel
// runs another process on its core. On a socket without receive stamps
// only one reads at a time.
const (
	lagOn  = 5 * time.Millisecond
	lagOff = time.Millisecond
)

// turnRecheck is how often a parked reader looks again whether another
// still reads the socket: a reader whose handler blocks (none should)
// leaves the socket unread for this long at most.
const turnRecheck = 10 * time.Millisecond

// takeTurn parks the calling reader while another reads the socket and
// the socket is not lagging. It returns false when the generation was
// retired or the SBC stops meanwhile.
func (g *udpGen) takeTurn() bool {
	if g.reading.Load() == 0 || g.lagging.Load() {
		return true
	}
	t := time.NewTimer(turnRecheck)
	defer t.Stop()
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	for g.reading.Load() > 0 && !g.lagging.Load() {
		select {
		case <-g.turn:
		case <-t.C:
			t.Reset(turnRecheck)
		case <-g.gone:
			return false
		case <-g.quit:
			return false
		}
	}
	return true
}

// pace notes how long the datagram just read waited in the receive
// queue: past lagOn the socket lags and a parked reader is woken; within
// lagOff it keeps up again.
func (g *udpGen) pace(waited time.Duration) {
	switch {
	case waited > lagOn:
		if !g.lagging.Load() {
			g.lagging.Store(true)
		}
		select {
		case g.turn <- struct{}{}:
		default:
		}
	case waited < lagOff && g.lagging.Load():
		g.lagging.Store(false)
	}
}

// retire ends the generation: its readers stop reading (ReadFrom).
func (g *udpGen) retire() {
	g.retired.Store(true)
	close(g.gone)
}

// WriteTo sends b to addr by a raw system call where it can.
func (g *udpGen) WriteTo(b []byte, addr net.Addr) (int, error) {
	if g.raw != nil {
		if n, ok, err := g.raw.writeTo(b, addr); ok {
			return n, err
		}
	}
	return g.PacketConn.WriteTo(b, addr)
}

// errRawFamily: a datagram whose source is neither IPv4 nor IPv6 (the
// kernel gives none on these sockets); the reader skips it rather than
// end the socket's read loop.
var errRawFamily = errors.New("sbc: datagram from an unknown address family")

// ReadFrom reads the socket until the generation is retired; then, after
// the grace, it ends sipgo's loop. It is the reader of a socket without a
// raw path (PacketReader); on a raw one, each of sipgo's read loops reads
// through a batch reader of its own instead, and a caller of ReadFrom
// gets the net package's read, unstamped, so nothing it reads is shed.
func (g *udpGen) ReadFrom(b []byte) (int, net.Addr, error) {
	// Set-ups a handler of this loop queued behind another reader's
	// batch (afterBatch) run before this loop waits for a datagram.
	g.u.runLater()
	if err := g.mayRead(); err != nil {
		return 0, nil, err
	}
	g.reading.Add(1)
	defer g.reading.Add(-1)
	return g.PacketConn.ReadFrom(b)
}

// PacketReader gives each of sipgo's read loops on the socket a reader of
// its own (sip.PacketReaders): on a raw socket, one that reads datagrams
// in batches where they queue (udpbatch_linux.go).
func (g *udpGen) PacketReader() sip.PacketReader {
	if g.raw == nil {
		return g
	}
	return newBatchReader(g)
}

// mayRead waits for the reader's turn (takeTurn). It returns
// net.ErrClosed, after the grace, once the generation is retired, or at
// once when the SBC stops.
func (g *udpGen) mayRead() error {
	for {
		if g.retired.Load() {
			t := time.NewTimer(udpGrace)
			defer t.Stop()
			select {
			case <-t.C:
			case <-g.quit:
			}
			return net.ErrClosed
		}
		if g.takeTurn() {
			return nil
		}
		if !g.retired.Load() {
			return net.ErrClosed
		}
	}
}

// admit takes a datagram just read (b, from addr, stamped at, or the
// read's error): it paces the turns by its wait in the receive queue and
// reports whether the read loop gets it: not when its source is of no
// known family, nor when it is a request shed for its wait.
func (g *udpGen) admit(b []byte, addr net.Addr, at time.Time, err error) bool {
	var waited time.Duration
	if !at.IsZero() {
		waited = time.Since(at)
		g.pace(waited)
	}
	if err == errRawFamily {
		return false
	}
	return err != nil || at.IsZero() || !g.u.shed(b, addr, waited)
}

func newUDPPeers(ep *endpoint, quit <-chan struct{}) *udpPeers {
	return &udpPeers{ep: ep, kick: make(chan struct{}, 1), quit: quit, pool: ep.ua.TransportLayer().Pool("udp")}
}

// serve starts the first generation on each socket, and the loop that
// resets the table when it grows past the limit.
func (u *udpPeers) serve(ctx context.Context) {
	for i, pc := range u.ep.udp {
		enableRxStamps(pc)
		sk := &udpSock{pc: pc, laddr: pc.LocalAddr().String(), raw: newRawUDP(pc, u.ep.udpSend[i])}
		if sk.raw != nil {
			sk.raw.onRefused(u.refused)
		}
		u.socks = append(u.socks, sk)
		u.start(sk)
	}
	u.ep.wg.Add(1)
	go func() {
		defer u.ep.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-u.kick:
				u.reset()
			case <-t.C:
				u.check()
			}
		}
	}()
}

// start runs a new generation of sipgo's read loop on sk, and waits
// (bounded) until it is the socket's listener in the pool: before that, a
// request sent from the socket's address would make sipgo bind a second
// socket on it (EADDRINUSE).
func (u *udpPeers) start(sk *udpSock) {
	g := newUDPGen(u, sk.pc, sk.raw, u.quit)
	sk.cur.Store(g)
	ep := u.ep
	ep.wg.Add(1)
	go func() {
		defer ep.wg.Done()
		defer close(g.done)
		if err := ep.srv.ServeUDP(g); err != nil && !g.retired.Load() {
			select {
			case <-u.quit:
			default:
				ep.sbc.log.Error("udp listener stopped", "realm", ep.name, "error", err)
			}
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if u.listenerIs(sk, g) {
			break
		}
	}
}

// listenerIs reports whether g is sk's listener in the pool.
func (u *udpPeers) listenerIs(sk *udpSock, g *udpGen) bool {
	c := u.pool.Get(sk.laddr)
	if c == nil {
		return false
	}
	defer c.TryClose() // drop the reference Get took
	uc, ok := c.(*sip.UDPConnection)
	return ok && uc.PacketConn == g
}

// refused counts and logs (rate limited) a datagram the kernel refused
// to send after a batch had held it (udpbatch_linux.go).
func (u *udpPeers) refused(dst netip.AddrPort, err error) {
	s := u.ep.sbc
	s.drop(stageBridge, reasonSendFailed)
	if s.logAllowed(stageBridge) {
		s.log.Warn("datagram not sent", "realm", u.ep.name, "destination", dst.String(), "error", err.Error())
	}
}

// passedOne is called by the read filter for each datagram it lets
// through: once in udpCheckEvery, the pool is measured.
func (u *udpPeers) passedOne() {
	if u.passed.Add(1)%udpCheckEvery == 0 {
		u.check()
	}
}

// check measures the pool: over the limit it asks for a reset, over the
// hard limit it drops new addresses until it is below again.
func (u *udpPeers) check() {
	limit := u.ep.sbc.state.Load().pol.Limits.UDPPeers
	n := u.pool.Size()
	u.ep.sbc.metrics.UDPPeers.WithLabelValues(u.ep.name).Set(float64(n))
	u.full.Store(n > udpPeersHard*limit)
	if n > limit {
		select {
		case u.kick <- struct{}{}:
		default:
		}
	}
}

// reset retires every socket's generation for a new one, and waits until
// the retired ones have ended (their entries are gone then).
func (u *udpPeers) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pool.Size() <= u.ep.sbc.state.Load().pol.Limits.UDPPeers {
		return
	}
	var old []*udpGen
	for _, sk := range u.socks {
		prev := sk.cur.Load()
		u.start(sk)
		prev.retire()
		old = append(old, prev)
	}
	u.ep.sbc.metrics.UDPResets.WithLabelValues(u.ep.name).Inc()
	for i, g := range old {
		u.wake(u.socks[i], g)
	}
	u.check()
}

// wake makes a retired generation blocked in a read return (a one-byte
// NUL datagram to the socket from itself: sipgo skips it before the read
// filter), until its loop has ended.
func (u *udpPeers) wake(sk *udpSock, g *udpGen) {
	to := selfAddr(sk.pc.LocalAddr())
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(udpGrace + 10*time.Second)
	defer deadline.Stop()
	for {
		if to != nil {
			_, _ = sk.pc.WriteTo([]byte{0}, to)
		}
		select {
		case <-g.done:
			return
		case <-u.quit:
			return
		case <-deadline.C:
			u.ep.sbc.log.Warn("udp: a retired read loop did not end", "realm", u.ep.name, "listener", sk.laddr)
			return
		case <-tick.C:
		}
	}
}

// selfAddr is where a socket bound to a reaches itself.
func selfAddr(a net.Addr) net.Addr {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ap := ua.AddrPort()
	ip := ap.Addr()
	switch {
	case ip.IsUnspecified() && ip.Is4():
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case ip.IsUnspecified():
		ip = netip.IPv6Loopback()
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, ap.Port()))
}

// known reports whether the pool holds an entry for ua (allocates: it is
// only asked when the table is full).
func (u *udpPeers) known(ua *net.UDPAddr) bool {
	c := u.pool.Get(ua.String())
	if c == nil {
		return false
	}
	c.TryClose()
	return true
}
