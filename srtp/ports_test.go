package srtp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// testRange picks a random even base so parallel test runs (other
// worktrees, other packages) rarely meet on the same ports.
func testRange(slots int) (int, int) {
	base := 20000 + 2*rand.IntN(15000)
	return base, base + 2*slots - 1
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestNewPortPoolValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  PortPoolConfig
		ok   bool
		n    int
	}{
		{"ok", PortPoolConfig{IP: loopback, Min: 30000, Max: 30009}, true, 5},
		{"odd min rounds up", PortPoolConfig{IP: loopback, Min: 30001, Max: 30009}, true, 4},
		{"odd max drops lone even", PortPoolConfig{IP: loopback, Min: 30000, Max: 30010}, true, 5},
		{"one pair", PortPoolConfig{IP: loopback, Min: 30000, Max: 30001}, true, 1},
		{"ipv6", PortPoolConfig{IP: netip.IPv6Loopback(), Min: 30000, Max: 30001}, true, 1},
		{"no pair", PortPoolConfig{IP: loopback, Min: 30000, Max: 30000}, false, 0},
		{"inverted", PortPoolConfig{IP: loopback, Min: 30010, Max: 30000}, false, 0},
		{"too high", PortPoolConfig{IP: loopback, Min: 65534, Max: 65536}, false, 0},
		{"zero min", PortPoolConfig{IP: loopback, Min: 0, Max: 100}, false, 0},
		{"no ip", PortPoolConfig{Min: 30000, Max: 30009}, false, 0},
		{"unspecified ip", PortPoolConfig{IP: netip.IPv4Unspecified(), Min: 30000, Max: 30009}, false, 0},
		{"negative quarantine", PortPoolConfig{IP: loopback, Min: 30000, Max: 30009, Quarantine: -1}, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPortPool(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if tc.ok && p.Stats().Total != tc.n {
				t.Fatalf("slots = %d, want %d", p.Stats().Total, tc.n)
			}
		})
	}
}

// bound is nil if addr is bound by someone (a bind to it fails), else
// an error that says so.
func bound(addr netip.AddrPort) error {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil
	}
	_ = c.Close()
	return fmt.Errorf("%v is free", addr)
}

func TestPortPoolAllocate(t *testing.T) {
	for _, mode := range testModes {
		for _, ip := range []netip.Addr{loopback, netip.IPv6Loopback()} {
			for _, mux := range []bool{false, true} {
				testPortPoolAllocate(t, mode, ip, mux)
			}
		}
	}
}

func testPortPoolAllocate(t *testing.T, mode sockMode, ip netip.Addr, mux bool) {
	t.Helper()
	lo, hi := testRange(8)
	pp, err := newPortPool(PortPoolConfig{IP: ip, Min: lo, Max: hi, Quarantine: time.Minute}, mode)
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	p, err := pp.Allocate(mux)
	if err != nil {
		if ip.Is6() {
			t.Logf("no IPv6 loopback here: %v", err)
			return
		}
		t.Fatal(err)
	}
	if p.Port()%2 != 0 || p.Port() < lo || p.Port() > hi {
		t.Fatalf("port %d not even in %d-%d", p.Port(), lo, hi)
	}
	// The sockets really are bound: the ports are taken.
	if bound(p.RTPAddr()) != nil {
		t.Fatalf("RTP port %v not bound", p.RTPAddr())
	}
	rtcp := netip.AddrPortFrom(ip, uint16(p.Port()+1))
	if mux {
		if !p.Mux() || p.RTCPAddr() != p.RTPAddr() {
			t.Fatal("mux has an RTCP address of its own")
		}
		if bound(rtcp) == nil {
			t.Fatal("mux bound the RTCP port")
		}
	} else if p.RTCPAddr() != rtcp || bound(rtcp) != nil {
		t.Fatalf("RTCP %v not bound", p.RTCPAddr())
	}
	if s := pp.Stats(); s.InUse != 1 || s.Free != 7 || s.Allocations != 1 {
		t.Fatalf("%+v", s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if s := pp.Stats(); s.InUse != 0 || s.Quarantined != 1 || s.Free != 7 {
		t.Fatalf("after close %+v", s)
	}
}

func TestPortPoolExhaustionAndQuarantine(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	lo, hi := testRange(4)
	pp, err := NewPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi, Quarantine: 30 * time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var held []*Ports
	seen := map[int]bool{}
	for {
		p, err := pp.Allocate(false)
		if err != nil {
			if !errors.Is(err, ErrPortsExhausted) {
				t.Fatal(err)
			}
			break
		}
		if seen[p.Port()] {
			t.Fatalf("port %d handed out twice", p.Port())
		}
		seen[p.Port()] = true
		held = append(held, p)
		if len(held) > 4 {
			t.Fatal("more slots than the range has")
		}
	}
	s := pp.Stats()
	if s.Exhausted != 1 || s.InUse != len(held) || s.InUse+int(s.BindFailures) < 4 {
		t.Fatalf("%+v with %d held", s, len(held))
	}
	// Release one: it rests in quarantine, and the pool is still full.
	released := held[0].Port()
	_ = held[0].Close()
	if _, err := pp.Allocate(true); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("allocated during quarantine: %v", err)
	}
	if s := pp.Stats(); s.Quarantined != 1 || s.Free != 0 {
		t.Fatalf("%+v", s)
	}
	clock.Advance(29 * time.Second)
	if _, err := pp.Allocate(true); !errors.Is(err, ErrPortsExhausted) {
		t.Fatal("quarantine ended early")
	}
	clock.Advance(time.Second)
	p, err := pp.Allocate(true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Port() != released {
		t.Fatalf("got %d, only %d was free", p.Port(), released)
	}
	_ = p.Close()
	for _, h := range held[1:] {
		_ = h.Close()
	}
	clock.Advance(time.Minute)
	if s := pp.Stats(); s.Free != 4 || s.InUse != 0 || s.Quarantined != 0 {
		t.Fatalf("%+v", s)
	}
}

func TestPortPoolSkipsPortsHeldElsewhere(t *testing.T) {
	lo, hi := testRange(2)
	// Another "process" holds the RTCP port of the first slot.
	other, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(lo+1))))
	if err != nil {
		t.Skipf("port %d busy: %v", lo+1, err)
	}
	defer other.Close()
	pp, _ := NewPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi})
	for range 5 { // whatever the random start, the held slot is skipped
		p, err := pp.Allocate(false)
		if err != nil {
			t.Skipf("slot 2 busy too: %v", err)
		}
		if p.Port() != lo+2 {
			t.Fatalf("got %d", p.Port())
		}
		_ = p.Close() // no quarantine: free again at once
	}
	// With both slots unusable, exhaustion names the bind error.
	p, _ := pp.Allocate(false)
	_, err = pp.Allocate(false)
	if !errors.Is(err, ErrPortsExhausted) {
		t.Fatal(err)
	}
	_ = p.Close()
	if s := pp.Stats(); s.BindFailures == 0 || s.Free != 2 {
		t.Fatalf("%+v", s)
	}
	// Muxed allocation needs only the even port, which is free.
	m, err := pp.Allocate(true)
	if err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
}

func TestPortPoolConcurrent(t *testing.T) {
	lo, hi := testRange(16)
	pp, _ := NewPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi})
	var mu sync.Mutex
	inUse := map[int]bool{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				p, err := pp.Allocate(g%2 == 0)
				if err != nil {
					if !errors.Is(err, ErrPortsExhausted) {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				if inUse[p.Port()] {
					t.Errorf("port %d twice", p.Port())
				}
				inUse[p.Port()] = true
				mu.Unlock()
				mu.Lock()
				delete(inUse, p.Port())
				mu.Unlock()
				_ = p.Close()
			}
		}()
	}
	wg.Wait()
	if s := pp.Stats(); s.InUse != 0 || s.Free != 16 {
		t.Fatalf("%+v", s)
	}
}

func TestPortPoolMemoryIsPerSlot(t *testing.T) {
	pp, _ := NewPortPool(PortPoolConfig{IP: loopback, Min: 1024, Max: 65535, Quarantine: time.Second})
	if len(pp.state) != 32256 || cap(pp.ring) != 32256 {
		t.Fatalf("state %d ring %d", len(pp.state), cap(pp.ring))
	}
}

func BenchmarkPortPoolAllocate(b *testing.B) {
	lo, hi := testRange(64)
	pp, _ := NewPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi})
	b.ReportAllocs()
	for b.Loop() {
		p, err := pp.Allocate(false)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Close()
	}
}
