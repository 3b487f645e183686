package srtp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrPortsExhausted is returned by PortPool.Allocate when no slot of the
// range is free and bindable: the SBC answers 503 at once rather than wait.
var ErrPortsExhausted = errors.New("srtp: relay ports exhausted")

// PortPoolConfig describes one relay port range on one local address.
type PortPoolConfig struct {
	// IP is the local address the sockets bind to (not the unspecified
	// address: the relay answers from the address the peer sent to).
	IP netip.Addr
	// Min and Max bound the range, inclusive. Min is rounded up to an
	// even port; a slot is the even port p (RTP) and p+1 (RTCP).
	Min, Max int
	// Quarantine is how long a released slot rests before reuse, so that
	// late packets of the old call do not reach the next one.
	Quarantine time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// PortStats is a snapshot of a pool, for metrics.
type PortStats struct {
	Total, InUse, Quarantined, Free int
	// Allocations counts successful allocations; Exhausted the ones that
	// returned ErrPortsExhausted; BindFailures the slots skipped because
	// the kernel refused the bind (another process holds the port).
	Allocations, Exhausted, BindFailures uint64
	// Sockets is the relay sockets the pool holds open: those of the
	// calls, and (kept sockets, see PortPool) those of slots at rest.
	Sockets int
	// IdleDrops counts the datagrams that reached a kept socket while no
	// call held it (quarantined or free): read and dropped by the relay
	// loop (DropIdlePort), like the late packets of an ended call.
	IdleDrops uint64
}

const (
	slotFree uint8 = iota
	slotInUse
	slotQuarantined
)

type quarantined struct {
	slot  int32
	until int64 // Now().UnixNano()
}

// sockMode is how a pool makes its sockets.
type sockMode uint8

const (
	// modeNet: net.ListenUDP at every allocation, closed at release (a
	// relay loop, if any, adds the descriptor to its epoll per stream).
	// Other systems, and RelayOptions.PerSocket.
	modeNet sockMode = iota
	// modeRaw: a raw socket (socket, bind, epoll_ctl into a relay loop;
	// no net.UDPConn, not in the Go runtime's poller) at every
	// allocation, closed at release. Measured (BenchmarkCallMedia), not
	// used.
	modeRaw
	// modeKeep: raw sockets bound at a slot's first use and kept, in
	// their relay loop's epoll, until the pool closes. The default on
	// Linux with relay loops.
	modeKeep
)

func (m sockMode) String() string { return [...]string{"net", "raw", "keep"}[m] }

// PortPool hands out even/odd UDP port pairs from a range. Its memory is
// one byte per slot plus a FIFO ring of released slots (all releases have
// the same quarantine, so the ring is ordered by expiry), and on Linux
// with relay loops two pointers per slot for its kept sockets. It is safe
// for concurrent use. Binding happens outside the lock.
//
// On Linux with relay loops (the default) a slot's sockets are kept: the
// first allocation of a slot binds its RTP socket (and its RTCP socket,
// the first time one is asked) with raw system calls and adds it to one
// relay loop's epoll for good; a release only detaches the socket from
// its stream. What reaches a socket at rest (quarantined or free) is read
// and dropped by the loop (PortStats.IdleDrops), and a socket's queue is
// drained when a new stream takes it, so a call never sees a packet sent
// before it had the port. A call then costs no socket, bind, close or
// epoll_ctl. A new call takes one of the free slots with kept sockets,
// at random, when there are at least readyChoice of them, so the pool
// binds about two descriptors per slot that calls hold at once (in use or
// quarantined) plus readyChoice slots' worth, opened as they are first
// needed, and never more than two per slot of its range; the process's
// descriptor limit (ulimit -n; Go raises the soft limit to the hard one)
// must allow the peak. Close closes them all.
type PortPool struct {
	cfg   PortPoolConfig
	first int // first even port
	n     int // number of slots
	mode  sockMode

	mu     sync.Mutex
	state  []uint8
	ring   []quarantined // capacity n, used as a circular FIFO
	head   int
	count  int
	inUse  int
	closed bool
	// socks are a slot's raw sockets, RTP and RTCP (modeRaw, modeKeep;
	// nil otherwise). Only the allocation that holds the slot touches
	// them, or Close under mu when the slot is not in use.
	socks [][2]*poolSock
	// ready is the free slots whose sockets are kept bound, in no order,
	// and at a slot's index there (-1: not in it); modeKeep only.
	ready []int32
	at    []int32

	allocs, exhausted, bindFails, idle atomic.Uint64
	open                               atomic.Int64 // descriptors held
}

// ErrPoolClosed is returned by Allocate after Close.
var ErrPoolClosed = errors.New("srtp: port pool closed")

// NewPortPool validates the range and builds the pool. It opens nothing.
func NewPortPool(cfg PortPoolConfig) (*PortPool, error) {
	return newPortPool(cfg, defaultSockMode())
}

func newPortPool(cfg PortPoolConfig, mode sockMode) (*PortPool, error) {
	if !cfg.IP.IsValid() || cfg.IP.IsUnspecified() {
		return nil, fmt.Errorf("srtp: port pool needs a concrete IP, got %v", cfg.IP)
	}
	cfg.IP = cfg.IP.Unmap()
	first := cfg.Min + cfg.Min%2
	if cfg.Min < 1 || cfg.Max > 65535 || first+1 > cfg.Max {
		return nil, fmt.Errorf("srtp: port range %d-%d holds no even/odd pair", cfg.Min, cfg.Max)
	}
	if cfg.Quarantine < 0 {
		return nil, fmt.Errorf("srtp: negative quarantine %v", cfg.Quarantine)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := (cfg.Max - first + 1) / 2
	pp := &PortPool{
		cfg: cfg, first: first, n: n, mode: mode,
		state: make([]uint8, n),
		ring:  make([]quarantined, n),
	}
	if mode != modeNet {
		pp.socks = make([][2]*poolSock, n)
	}
	if mode == modeKeep {
		pp.at = make([]int32, n)
		for i := range pp.at {
			pp.at[i] = -1
		}
	}
	return pp, nil
}

// Ports is an allocated slot: the RTP socket and, unless rtcp-mux was
// asked, the RTCP socket on the next port. A stream given them owns them
// and releases them when it closes; Close releases them otherwise.
type Ports struct {
	pool *PortPool
	slot int
	mux  bool
	// net.UDPConns (modeNet), or the slot's raw sockets.
	rtpConn, rtcpConn *net.UDPConn
	rtp, rtcp         *poolSock
	detached          bool
	once              sync.Once
}

// Port is the RTP port.
func (p *Ports) Port() int { return p.pool.first + 2*p.slot }

// Mux reports whether the slot was allocated for rtcp-mux (one socket).
func (p *Ports) Mux() bool { return p.mux }

// RTPAddr is the local RTP address.
func (p *Ports) RTPAddr() netip.AddrPort {
	return netip.AddrPortFrom(p.pool.cfg.IP, uint16(p.Port()))
}

// RTCPAddr is the local RTCP address: the RTP address with rtcp-mux.
func (p *Ports) RTCPAddr() netip.AddrPort {
	if p.mux {
		return p.RTPAddr()
	}
	return netip.AddrPortFrom(p.pool.cfg.IP, uint16(p.Port()+1))
}

// detach takes kept sockets away from their stream (the relay loop drops
// what they receive from now on). When it returns, no relay loop is
// handling a packet of theirs. Idempotent; the owner's goroutine only.
func (p *Ports) detach() {
	if p.detached {
		return
	}
	p.detached = true
	for _, ps := range [2]*poolSock{p.rtp, p.rtcp} {
		if ps != nil {
			ps.detach()
		}
	}
}

// Close closes the sockets (kept sockets: detaches them) and puts the
// slot in quarantine. Idempotent.
func (p *Ports) Close() error {
	var err error
	p.once.Do(func() {
		if p.rtpConn != nil {
			err = p.rtpConn.Close()
			if p.rtcpConn != nil {
				if e := p.rtcpConn.Close(); err == nil || errors.Is(err, net.ErrClosed) {
					err = e
				}
			}
			if errors.Is(err, net.ErrClosed) {
				err = nil // closed already by a stream
			}
			p.pool.open.Add(-1)
			if p.rtcpConn != nil {
				p.pool.open.Add(-1)
			}
		}
		p.detach()
		p.pool.release(p.slot)
	})
	return err
}

// Allocate finds a free slot, starting at a random one and walking the
// range once, and binds it. With mux only the even port is bound (the odd
// one stays reserved, so RTP ports are always even). A slot whose bind
// fails (held by another process) is skipped (with kept sockets, it
// rests for a quarantine before it is tried again). When no slot works it
// returns ErrPortsExhausted without waiting.
func (pp *PortPool) Allocate(mux bool) (*Ports, error) {
	start := rand.IntN(pp.n)
	tried := 0
	var lastErr error
	for tried < pp.n {
		slot, scanned, err := pp.reserve(start)
		if err != nil {
			return nil, err
		}
		if slot < 0 {
			break
		}
		tried += scanned
		start = (slot + 1) % pp.n
		p, err := pp.bind(slot, mux)
		if err == nil {
			pp.allocs.Add(1)
			return p, nil
		}
		lastErr = err
		pp.bindFails.Add(1)
		if pp.mode == modeNet {
			pp.mu.Lock()
			pp.state[slot] = slotFree
			pp.inUse--
			pp.mu.Unlock()
		} else {
			// A kept socket of another pool (or another process's) holds
			// it: do not try it at every allocation.
			pp.release(slot)
		}
	}
	pp.exhausted.Add(1)
	if lastErr != nil {
		return nil, fmt.Errorf("%w (last bind error: %v)", ErrPortsExhausted, lastErr)
	}
	return nil, ErrPortsExhausted
}

// readyChoice is how many free slots with kept sockets a pool must have
// to take one of them (at random) rather than walk the range from a
// random start (and bind the free slot it finds, if it has no sockets
// yet): the sockets a pool keeps follow the calls' high-water mark (in
// use and quarantined) plus this margin, not the size of the range, and
// a port is still one of at least this many.
const readyChoice = 32

// reserve marks a free slot as in use and returns it with the number of
// slots scanned, or -1: one of the ready slots at random if there are
// enough, else the first free slot at or after start (circularly).
func (pp *PortPool) reserve(start int) (int, int, error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return -1, 0, ErrPoolClosed
	}
	pp.expireLocked()
	if pp.inUse+pp.count >= pp.n {
		return -1, 0, nil
	}
	if len(pp.ready) >= readyChoice {
		s := int(pp.ready[rand.IntN(len(pp.ready))])
		pp.unreadyLocked(s)
		pp.state[s] = slotInUse
		pp.inUse++
		return s, 1, nil
	}
	for i := range pp.n {
		s := (start + i) % pp.n
		if pp.state[s] == slotFree {
			pp.unreadyLocked(s)
			pp.state[s] = slotInUse
			pp.inUse++
			return s, i + 1, nil
		}
	}
	return -1, pp.n, nil
}

// freeLocked makes a slot free, and ready if its sockets are kept.
func (pp *PortPool) freeLocked(slot int) {
	pp.state[slot] = slotFree
	if pp.at != nil && pp.at[slot] < 0 && pp.socks[slot][0] != nil && !pp.closed {
		pp.at[slot] = int32(len(pp.ready))
		pp.ready = append(pp.ready, int32(slot))
	}
}

func (pp *PortPool) unreadyLocked(slot int) {
	if pp.at == nil || pp.at[slot] < 0 {
		return
	}
	i, last := pp.at[slot], pp.ready[len(pp.ready)-1]
	pp.ready[i], pp.at[last] = last, i
	pp.ready = pp.ready[:len(pp.ready)-1]
	pp.at[slot] = -1
}

func (pp *PortPool) bind(slot int, mux bool) (*Ports, error) {
	port := pp.first + 2*slot
	p := &Ports{pool: pp, slot: slot, mux: mux}
	if pp.mode != modeNet {
		ss := &pp.socks[slot]
		var err error
		if ss[0] == nil {
			if ss[0], err = pp.openSock(port, nil); err != nil {
				return nil, err
			}
		}
		if !mux && ss[1] == nil {
			if ss[1], err = pp.openSock(port+1, ss[0]); err != nil {
				if pp.mode == modeRaw {
					pp.closeSock(&ss[0])
				}
				return nil, err
			}
		}
		p.rtp = ss[0]
		if !mux {
			p.rtcp = ss[1]
		}
		return p, nil
	}
	rtpConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pp.cfg.IP, uint16(port))))
	if err != nil {
		return nil, err
	}
	p.rtpConn = rtpConn
	if !mux {
		p.rtcpConn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pp.cfg.IP, uint16(port+1))))
		if err != nil {
			_ = rtpConn.Close()
			return nil, err
		}
		pp.open.Add(1)
	}
	pp.open.Add(1)
	return p, nil
}

// openSock binds a raw socket on port and adds it to a relay loop (the
// loop of near, if given: a slot's two sockets share one).
func (pp *PortPool) openSock(port int, near *poolSock) (*poolSock, error) {
	ps, err := newPoolSock(netip.AddrPortFrom(pp.cfg.IP, uint16(port)), near, &pp.idle)
	if err != nil {
		return nil, err
	}
	pp.open.Add(1)
	return ps, nil
}

// closeSock takes a raw socket out of its loop and closes it.
func (pp *PortPool) closeSock(ps **poolSock) {
	if *ps != nil {
		(*ps).close()
		*ps = nil
		pp.open.Add(-1)
	}
}

func (pp *PortPool) release(slot int) {
	pp.mu.Lock()
	if pp.socks != nil && (pp.mode == modeRaw || pp.closed || pp.socks[slot][0].broken() || pp.socks[slot][1].broken()) {
		// Not kept: a raw socket per call, a closed pool, or a socket the
		// relay loop gave up on.
		pp.mu.Unlock()
		pp.closeSock(&pp.socks[slot][0])
		pp.closeSock(&pp.socks[slot][1])
		pp.mu.Lock()
	}
	defer pp.mu.Unlock()
	pp.inUse--
	if pp.cfg.Quarantine == 0 {
		pp.freeLocked(slot)
		return
	}
	pp.state[slot] = slotQuarantined
	pp.ring[(pp.head+pp.count)%pp.n] = quarantined{slot: int32(slot), until: pp.cfg.Now().Add(pp.cfg.Quarantine).UnixNano()}
	pp.count++
}

// Close closes the sockets the pool keeps; those of slots in use close
// when their stream releases them. Allocate fails from then on. Calls
// relaying still work until they end. Idempotent.
func (pp *PortPool) Close() error {
	pp.mu.Lock()
	if pp.closed {
		pp.mu.Unlock()
		return nil
	}
	pp.closed = true
	for _, s := range pp.ready {
		pp.at[s] = -1
	}
	pp.ready = nil
	var rest []*poolSock
	for i := range pp.socks {
		if pp.state[i] == slotInUse {
			continue
		}
		for j := range pp.socks[i] {
			if ps := pp.socks[i][j]; ps != nil {
				rest = append(rest, ps)
				pp.socks[i][j] = nil
			}
		}
	}
	pp.mu.Unlock()
	for _, ps := range rest {
		ps.close()
		pp.open.Add(-1)
	}
	return nil
}

// expireLocked frees the quarantined slots whose time is over.
func (pp *PortPool) expireLocked() {
	if pp.count == 0 {
		return
	}
	now := pp.cfg.Now().UnixNano()
	for pp.count > 0 && pp.ring[pp.head].until <= now {
		pp.freeLocked(int(pp.ring[pp.head].slot))
		pp.head = (pp.head + 1) % pp.n
		pp.count--
	}
}

// Stats returns the counters; quarantines that are over count as free.
func (pp *PortPool) Stats() PortStats {
	pp.mu.Lock()
	pp.expireLocked()
	s := PortStats{Total: pp.n, InUse: pp.inUse, Quarantined: pp.count, Free: pp.n - pp.inUse - pp.count}
	pp.mu.Unlock()
	s.Allocations, s.Exhausted, s.BindFailures = pp.allocs.Load(), pp.exhausted.Load(), pp.bindFails.Load()
	s.Sockets, s.IdleDrops = int(pp.open.Load()), pp.idle.Load()
	return s
}

// IP is the pool's local address.
func (pp *PortPool) IP() netip.Addr { return pp.cfg.IP }
