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

// PortPool hands out even/odd UDP port pairs from a range. Its memory is
// one byte per slot plus a FIFO ring of released slots (all releases have
// the same quarantine, so the ring is ordered by expiry). It is safe for
// concurrent use. Binding happens outside the lock.
type PortPool struct {
	cfg   PortPoolConfig
	first int // first even port
	n     int // number of slots

	mu    sync.Mutex
	state []uint8
	ring  []quarantined // capacity n, used as a circular FIFO
	head  int
	count int
	inUse int

	allocs, exhausted, bindFails atomic.Uint64
}

// NewPortPool validates the range and builds the pool. It opens nothing.
func NewPortPool(cfg PortPoolConfig) (*PortPool, error) {
	if !cfg.IP.IsValid() || cfg.IP.IsUnspecified() {
		return nil, fmt.Errorf("srtp: port pool needs a concrete IP, got %v", cfg.IP)
	}
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
	return &PortPool{
		cfg: cfg, first: first, n: n,
		state: make([]uint8, n),
		ring:  make([]quarantined, n),
	}, nil
}

// Ports is an allocated slot: the RTP socket and, unless rtcp-mux was
// asked, the RTCP socket on the next port. Close releases both.
type Ports struct {
	RTP  *net.UDPConn
	RTCP *net.UDPConn // nil with rtcp-mux
	pool *PortPool
	slot int
	once sync.Once
}

// Port is the RTP port.
func (p *Ports) Port() int { return p.pool.first + 2*p.slot }

// RTPAddr is the local RTP address.
func (p *Ports) RTPAddr() netip.AddrPort {
	return netip.AddrPortFrom(p.pool.cfg.IP, uint16(p.Port()))
}

// RTCPAddr is the local RTCP address: the RTP address with rtcp-mux.
func (p *Ports) RTCPAddr() netip.AddrPort {
	if p.RTCP == nil {
		return p.RTPAddr()
	}
	return netip.AddrPortFrom(p.pool.cfg.IP, uint16(p.Port()+1))
}

// Close closes the sockets and puts the slot in quarantine. Idempotent.
func (p *Ports) Close() error {
	var err error
	p.once.Do(func() {
		err = p.RTP.Close()
		if p.RTCP != nil {
			if e := p.RTCP.Close(); err == nil || errors.Is(err, net.ErrClosed) {
				err = e
			}
		}
		if errors.Is(err, net.ErrClosed) {
			err = nil // closed already by a stream
		}
		p.pool.release(p.slot)
	})
	return err
}

// Allocate finds a free slot, starting at a random one and walking the
// range once, and binds it. With mux only the even port is bound (the odd
// one stays reserved, so RTP ports are always even). A slot whose bind
// fails (held by another process) is skipped. When no slot works it
// returns ErrPortsExhausted without waiting.
func (pp *PortPool) Allocate(mux bool) (*Ports, error) {
	start := rand.IntN(pp.n)
	tried := 0
	var lastErr error
	for tried < pp.n {
		slot, scanned := pp.reserve(start)
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
		pp.mu.Lock()
		pp.state[slot] = slotFree
		pp.inUse--
		pp.mu.Unlock()
	}
	pp.exhausted.Add(1)
	if lastErr != nil {
		return nil, fmt.Errorf("%w (last bind error: %v)", ErrPortsExhausted, lastErr)
	}
	return nil, ErrPortsExhausted
}

// reserve marks the first free slot at or after start (circularly) as in
// use and returns it with the number of slots scanned, or -1.
func (pp *PortPool) reserve(start int) (int, int) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.expireLocked()
	if pp.inUse+pp.count >= pp.n {
		return -1, 0
	}
	for i := range pp.n {
		s := (start + i) % pp.n
		if pp.state[s] == slotFree {
			pp.state[s] = slotInUse
			pp.inUse++
			return s, i + 1
		}
	}
	return -1, pp.n
}

func (pp *PortPool) bind(slot int, mux bool) (*Ports, error) {
	port := pp.first + 2*slot
	rtpConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pp.cfg.IP, uint16(port))))
	if err != nil {
		return nil, err
	}
	p := &Ports{RTP: rtpConn, pool: pp, slot: slot}
	if !mux {
		p.RTCP, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pp.cfg.IP, uint16(port+1))))
		if err != nil {
			_ = rtpConn.Close()
			return nil, err
		}
	}
	return p, nil
}

func (pp *PortPool) release(slot int) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.inUse--
	if pp.cfg.Quarantine == 0 {
		pp.state[slot] = slotFree
		return
	}
	pp.state[slot] = slotQuarantined
	pp.ring[(pp.head+pp.count)%pp.n] = quarantined{slot: int32(slot), until: pp.cfg.Now().Add(pp.cfg.Quarantine).UnixNano()}
	pp.count++
}

// expireLocked frees the quarantined slots whose time is over.
func (pp *PortPool) expireLocked() {
	if pp.count == 0 {
		return
	}
	now := pp.cfg.Now().UnixNano()
	for pp.count > 0 && pp.ring[pp.head].until <= now {
		pp.state[pp.ring[pp.head].slot] = slotFree
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
	return s
}

// IP is the pool's local address.
func (pp *PortPool) IP() netip.Addr { return pp.cfg.IP }
