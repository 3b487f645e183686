package attack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/sbc-project/sbc/internal/netns"
	"golang.org/x/sys/unix"
)

// SinkConfig configures a Sink.
type SinkConfig struct {
	// Addr is the UDP address to listen on (required; port 0 picks one).
	Addr netip.AddrPort
	// NetNS names a network namespace (`ip netns add` name or path) to
	// listen in; empty: the current one.
	NetNS string
	// Keep is how many payloads to keep (the first ones); default 0.
	Keep int
	// MaxSources bounds the distinct source addresses counted one by one;
	// datagrams from further sources only count in Overflow. Default
	// 1<<20.
	MaxSources int
	// ReadBuffer is the socket receive buffer in bytes; default 4 MiB
	// (forced past rmem_max when the process may).
	ReadBuffer int
}

// Sink is a UDP listener that counts the datagrams it receives by source
// address, for tests of the generators. It is safe for concurrent use.
type Sink struct {
	conn *net.UDPConn
	cfg  SinkConfig
	done chan struct{}

	mu       sync.Mutex
	total    int
	overflow int
	sources  map[netip.Addr]int
	payloads []Datagram
	waiters  int           // Wait calls in progress
	changed  chan struct{} // closed and replaced on each datagram while waiters > 0
}

// Datagram is a payload a Sink kept.
type Datagram struct {
	From netip.AddrPort
	Data []byte
}

// NewSink listens on cfg.Addr and counts until Close.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if !cfg.Addr.Addr().IsValid() {
		return nil, errors.New("attack: Sink needs an address")
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = 1 << 20
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = socketBuffer
	}
	var conn *net.UDPConn
	err := netns.Do(cfg.NetNS, func() error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attack: sink: %w", err)
	}
	_ = conn.SetReadBuffer(cfg.ReadBuffer)
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.ReadBuffer)
		})
	}
	s := &Sink{
		conn:    conn,
		cfg:     cfg,
		done:    make(chan struct{}),
		sources: map[netip.Addr]int{},
		changed: make(chan struct{}),
	}
	go s.run()
	return s, nil
}

func (s *Sink) run() {
	defer close(s.done)
	buf := make([]byte, 65536)
	failures := 0
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient errors are skipped; a socket failing for good
			// would spin, so give up after a long run of them.
			if failures++; failures > 10000 {
				return
			}
			continue
		}
		failures = 0
		src := from.Addr().Unmap()
		s.mu.Lock()
		s.total++
		if _, ok := s.sources[src]; ok || len(s.sources) < s.cfg.MaxSources {
			s.sources[src]++
		} else {
			s.overflow++
		}
		if len(s.payloads) < s.cfg.Keep {
			s.payloads = append(s.payloads, Datagram{From: from, Data: bytes.Clone(buf[:n])})
		}
		if s.waiters > 0 {
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// Addr is the address the Sink listens on.
func (s *Sink) Addr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Count is the number of datagrams received.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Sources returns a copy of the counts by source address.
func (s *Sink) Sources() map[netip.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Addr]int, len(s.sources))
	for a, n := range s.sources {
		out[a] = n
	}
	return out
}

// DistinctSources is the number of distinct source addresses counted.
func (s *Sink) DistinctSources() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sources)
}

// Overflow counts datagrams from sources beyond MaxSources.
func (s *Sink) Overflow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overflow
}

// Payloads returns the kept datagrams (the first Keep).
func (s *Sink) Payloads() []Datagram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Datagram(nil), s.payloads...)
}

// Wait blocks until at least n datagrams arrived or ctx ends; it returns
// ctx's error in the latter case.
func (s *Sink) Wait(ctx context.Context, n int) error {
	s.mu.Lock()
	s.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		total, ch := s.total, s.changed
		s.mu.Unlock()
		if total >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("attack: sink got %d of %d datagrams: %w", total, n, ctx.Err())
		case <-ch:
		}
	}
}

// Close stops listening; the counts stay readable.
func (s *Sink) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}
