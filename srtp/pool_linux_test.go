//go:build linux

package srtp

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testModes are the pools' socket modes of this system.
var testModes = []sockMode{modeNet, modeRaw, modeKeep}

// keptPool is a one-slot pool that keeps its sockets, on a fake clock.
func keptPool(t *testing.T, quarantine time.Duration) (*PortPool, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	lo, hi := testRange(1)
	pp, err := newPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi, Quarantine: quarantine, Now: clock.Now}, modeKeep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pp.Close() })
	return pp, clock
}

// relayedCall is a plain stream between two phones on pool slots; the
// caller's leg learns (as sbc sets it up).
func relayedCall(t *testing.T, pa, pb *PortPool) (*Stream, *phone, *phone) {
	t.Helper()
	a, b := newPhone(t), newPhone(t)
	s, err := NewStream(StreamConfig{
		A: LegConfig{Ports: allocate(t, pa, false), Remote: a.addr(), Learn: true},
		B: LegConfig{Ports: allocate(t, pb, false), Remote: b.addr()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, a, b
}

// TestKeptSocketAtRestDropsAndQuarantines: a released slot keeps its
// sockets (same descriptors, no new bind) but is not handed out before its
// quarantine is over; what the old call's peer sends meanwhile is read
// and counted as an idle drop, and reaches neither the old nor the next
// call. The next call on the same slot relays and latches its own
// peer.
func TestKeptSocketAtRestDropsAndQuarantines(t *testing.T) {
	pa, clockA := keptPool(t, 30*time.Second)
	pb, clockB := keptPool(t, 30*time.Second)
	s, a, b := relayedCall(t, pa, pb)
	aRelay, _ := s.LocalAddr(LegA)
	a.send(rtpPacket(1, 1, 160, 20), aRelay)
	b.recv()
	fdA := s.legs[0].rtp.fd
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := pa.Stats(); st.Sockets != 2 || st.Quarantined != 1 {
		t.Fatalf("after release: %+v (the slot's two sockets are kept, quarantined)", st)
	}
	// Late packets of the old call, during the quarantine.
	for i := range 5 {
		a.send(rtpPacket(1, uint16(2+i), 160, 20), aRelay)
	}
	waitFor(t, "5 idle drops", func() bool { return pa.Stats().IdleDrops >= 5 })
	if _, err := pa.Allocate(false); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("allocated during the quarantine: %v", err)
	}
	clockA.Advance(31 * time.Second)
	clockB.Advance(31 * time.Second)
	s2, a2, b2 := relayedCall(t, pa, pb)
	if got, _ := s2.LocalAddr(LegA); got != aRelay {
		t.Fatalf("the one slot gave %v, had %v", got, aRelay)
	}
	if s2.legs[0].rtp.fd != fdA || pa.Stats().Sockets != 2 {
		t.Fatalf("slot rebound: fd %d, was %d; %+v", s2.legs[0].rtp.fd, fdA, pa.Stats())
	}
	a2.send(rtpPacket(7, 1, 160, 20), aRelay)
	if got, _ := b2.recv(); len(got) != 32 {
		t.Fatalf("new call relayed %d bytes", len(got))
	}
	if src, ok := s2.Latched(LegA); !ok || src != a2.addr() {
		t.Fatalf("new call latched %v %v, want %v", src, ok, a2.addr())
	}
	if st := s2.Stats(); st.A.Packets != 1 {
		t.Fatalf("new call counted %d packets from A, want its own 1", st.A.Packets)
	}
	_ = b
}

// TestKeptSocketDrainedOnReuse: datagrams queued on a kept socket when a
// new stream takes it (sent while the relay loop could not read them)
// are drained and counted, never relayed to the new call nor latched by
// it, although its caller's leg learns from any source.
func TestKeptSocketDrainedOnReuse(t *testing.T) {
	pa, _ := keptPool(t, 0)
	pb, _ := keptPool(t, 0)
	old := newPhone(t)
	// The slot's sockets exist (a first call), then rest.
	s, _, _ := relayedCall(t, pa, pb)
	aRelay, _ := s.LocalAddr(LegA)
	_ = s.Close()
	idle := pa.Stats().IdleDrops
	const late = 3
	attachHook = func(fd int) {
		if fd != s.legs[0].rtp.fd {
			return
		}
		for i := range late {
			old.send(rtpPacket(9, uint16(i), 160, 20), aRelay)
		}
		// The loop is held off: wait until the kernel has queued them.
		deadline := time.Now().Add(waitLimit)
		for {
			n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
			if err != nil {
				t.Errorf("SIOCINQ: %v", err)
				return
			}
			if n > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Error("old packets never queued")
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() { attachHook = nil })
	s2, a2, b2 := relayedCall(t, pa, pb)
	attachHook = nil
	if got, _ := s2.LocalAddr(LegA); got != aRelay {
		t.Fatalf("slot %v, want %v", got, aRelay)
	}
	waitFor(t, "the queued packets drained", func() bool { return pa.Stats().IdleDrops >= idle+late })
	// The new call's own first packet is the first thing B gets, and
	// latches A's leg to the new caller, not to the old one.
	marker := rtpPacket(7, 100, 160, 20)
	a2.send(marker, aRelay)
	b2.expectOnly(t, marker)
	if src, ok := s2.Latched(LegA); !ok || src != a2.addr() {
		t.Fatalf("latched %v (%v), want the new caller %v; old caller %v", src, ok, a2.addr(), old.addr())
	}
	if st := s2.Stats(); st.A.Packets != 1 || st.A.Dropped != ([NumDropReasons]uint64{}) {
		t.Fatalf("new call saw the old packets: %+v", st.A)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestPoolDescriptorsBounded: a bounded number of calls through each
// kind of pool leaves no descriptor behind: per call (net, raw) none
// once the calls ended; kept sockets at most two per slot of the range
// while the pool lives, and none after Close, whose in-use slots close
// at their release.
func TestPoolDescriptorsBounded(t *testing.T) {
	for _, mode := range testModes {
		t.Run(mode.String(), func(t *testing.T) {
			const slots, calls = 8, 200
			// The relay loops' and the runtime poller's descriptors are
			// made once per process: not the pool's.
			leastLoaded()
			newPhone(t)
			before := openFDs(t)
			lo, hi := testRange(slots)
			pp, err := newPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi}, mode)
			if err != nil {
				t.Fatal(err)
			}
			for i := range calls {
				a, err := pp.Allocate(i%3 == 0)
				if err != nil {
					t.Fatal(err)
				}
				b, err := pp.Allocate(i%2 == 0)
				if err != nil {
					t.Fatal(err)
				}
				s, err := NewStream(StreamConfig{A: LegConfig{Ports: a, Learn: true}, B: LegConfig{Ports: b,
					Remote: netip.AddrPortFrom(loopback, 9)}})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if n := openFDs(t) - before; n > 2*slots {
					t.Fatalf("call %d: %d descriptors more than before", i, n)
				}
			}
			held, err := pp.Allocate(false)
			if err != nil {
				t.Fatal(err)
			}
			st := pp.Stats()
			if mode != modeKeep && st.Sockets != 2 {
				t.Fatalf("%v: %d sockets open with one slot in use", mode, st.Sockets)
			}
			if mode == modeKeep && (st.Sockets < 2 || st.Sockets > 2*slots) {
				t.Fatalf("keep: %d sockets open", st.Sockets)
			}
			if err := pp.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := pp.Allocate(false); !errors.Is(err, ErrPoolClosed) {
				t.Fatalf("Allocate after Close: %v", err)
			}
			if n := openFDs(t) - before; n != 2 {
				t.Fatalf("after Close, one slot held: %d descriptors more than before, want its 2", n)
			}
			_ = held.Close()
			if n := openFDs(t) - before; n != 0 || pp.Stats().Sockets != 0 {
				t.Fatalf("after the last release: %d descriptors more than before, %d sockets", n, pp.Stats().Sockets)
			}
		})
	}
}

// TestKeptPoolBindsWhatCallsNeed: in a wide range, a pool that keeps its
// sockets binds about what the calls hold at once plus readyChoice slots,
// not the range (a random walk would bind a new slot at most calls), and
// still spreads the calls over at least readyChoice ports.
func TestKeptPoolBindsWhatCallsNeed(t *testing.T) {
	const slots, calls = 1024, 300
	lo, hi := testRange(slots)
	pp, err := newPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi}, modeKeep)
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	ports := map[int]bool{}
	for range calls {
		a, err := pp.Allocate(false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := pp.Allocate(true)
		if err != nil {
			t.Fatal(err)
		}
		ports[a.Port()], ports[b.Port()] = true, true
		_ = a.Close()
		_ = b.Close()
	}
	// Bind failures (ports other processes hold) may add a few.
	st := pp.Stats()
	if max := 2 * (readyChoice + 2 + int(st.BindFailures)); st.Sockets > max {
		t.Fatalf("%d sockets kept for calls of 2 slots (at most %d): %+v", st.Sockets, max, st)
	}
	if len(ports) < readyChoice {
		t.Fatalf("calls used %d ports, want ≥ %d", len(ports), readyChoice)
	}
}
