//go:build linux

package srtp

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// withRelayOptions sets the relay options for one test and restores them.
func withRelayOptions(t testing.TB, o RelayOptions) {
	t.Helper()
	old := CurrentRelayOptions()
	SetRelayOptions(o)
	t.Cleanup(func() { SetRelayOptions(old) })
}

func newPoolSlots(t testing.TB, slots int) *PortPool {
	t.Helper()
	return newPoolMode(t, slots, defaultSockMode())
}

func newPoolMode(t testing.TB, slots int, mode sockMode) *PortPool {
	t.Helper()
	lo, hi := testRange(slots)
	pp, err := newPortPool(PortPoolConfig{IP: loopback, Min: lo, Max: hi, Quarantine: time.Minute}, mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pp.Close() })
	return pp
}

// inLoop reports a stream whose sockets a relay loop reads: its
// net.UDPConns joined one, or they are a pool's raw sockets.
func inLoop(s *Stream) bool {
	if s.worker != nil {
		return true
	}
	for _, k := range s.socks() {
		if k.ps == nil {
			return false
		}
	}
	return true
}

// TestRelayLoopsCarryManyStreams: on Linux, streams join the relay loops
// instead of starting goroutines: 40 streams (160 sockets, RTCP on its
// own socket) add no goroutine, every stream relays both ways through the
// loops, a stream closed while the others carry traffic leaves the loops
// (its sockets are no longer watched, its ports are released) and the
// others go on; closing them all returns the loops to the sockets they
// had (net.UDPConns), or leaves them watching the pool's kept sockets at
// rest until the pool closes.
func TestRelayLoopsCarryManyStreams(t *testing.T) {
	for _, mode := range []sockMode{modeNet, modeKeep} {
		t.Run(mode.String(), func(t *testing.T) { testRelayLoopsCarryManyStreams(t, mode) })
	}
}

func testRelayLoopsCarryManyStreams(t *testing.T, mode sockMode) {
	withRelayOptions(t, RelayOptions{})
	if pickWorker() == nil {
		t.Fatal("no relay loop on Linux")
	}
	const n = 40
	base := LoopStats()
	pp := newPoolMode(t, 2*n+8, mode)
	goroutines := runtime.NumGoroutine()
	type call struct {
		s      *Stream
		pa, pb *phone
		a, b   netip.AddrPort
	}
	calls := make([]call, n)
	for i := range calls {
		pa, pb := newPhone(t), newPhone(t)
		s, err := NewStream(StreamConfig{
			A: LegConfig{Ports: allocate(t, pp, false), Remote: pa.addr()},
			B: LegConfig{Ports: allocate(t, pp, false), Remote: pb.addr()},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !inLoop(s) {
			t.Fatal("stream did not join a relay loop")
		}
		a, _ := s.LocalAddr(LegA)
		b, _ := s.LocalAddr(LegB)
		calls[i] = call{s, pa, pb, a, b}
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines before %d streams, %d after", goroutines, n, g)
	}
	// A kept socket whose slot's other port was taken elsewhere (a bind
	// failure) rests in its loop too: count the pool's.
	extra := 0
	if mode == modeKeep {
		extra = pp.Stats().Sockets - 4*n
	}
	if st := LoopStats(); st.Sockets-base.Sockets != 4*n+extra {
		t.Fatalf("loops watch %d more sockets, want %d", st.Sockets-base.Sockets, 4*n+extra)
	}
	// Every phone sends before anyone reads: the loops find many sockets
	// ready at once.
	for i, c := range calls {
		c.pa.send(rtpPacket(uint32(100+i), 1, 0, 20), c.a)
		c.pb.send(rtpPacket(uint32(200+i), 1, 0, 20), c.b)
	}
	for i, c := range calls {
		got, _ := c.pb.recv()
		if binary.BigEndian.Uint32(got[8:]) != uint32(100+i) {
			t.Fatalf("call %d: B got SSRC %d", i, binary.BigEndian.Uint32(got[8:]))
		}
		got, _ = c.pa.recv()
		if binary.BigEndian.Uint32(got[8:]) != uint32(200+i) {
			t.Fatalf("call %d: A got SSRC %d", i, binary.BigEndian.Uint32(got[8:]))
		}
	}
	// Close every other stream while the rest carry traffic.
	const more = 20
	var wg sync.WaitGroup
	var relayed atomic.Int64
	for i, c := range calls {
		if i%2 == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range uint16(more) {
				c.pa.send(rtpPacket(uint32(100+i), 2+seq, 0, 20), c.a)
				c.pb.recv()
				relayed.Add(1)
			}
		}()
	}
	waitFor(t, "traffic", func() bool { return relayed.Load() > 0 })
	for i, c := range calls {
		if i%2 == 0 {
			if err := c.s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	atRest := 0 // sockets the loops keep watching after their streams closed
	if mode == modeKeep {
		atRest = 4 * n / 2
	}
	if st := LoopStats(); st.Sockets-base.Sockets != 4*n/2+atRest+extra {
		t.Fatalf("after closing half: loops watch %d more sockets, want %d", st.Sockets-base.Sockets, 4*n/2+atRest+extra)
	}
	wg.Wait()
	for i, c := range calls {
		if i%2 == 1 {
			// The relay counts a packet after sending it: the phone
			// can have it before the count moves.
			waitFor(t, "forwarded count", func() bool { return c.s.Stats().A.Forwarded >= 1+more })
			st := c.s.Stats()
			if st.A.Forwarded != 1+more || st.A.Dropped != ([NumDropReasons]uint64{}) {
				t.Fatalf("call %d: %+v", i, st.A)
			}
			if err := c.s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if mode == modeKeep {
		if st := LoopStats(); st.Sockets-base.Sockets != 4*n+extra {
			t.Fatalf("loops watch %d more sockets after close, want the %d kept", st.Sockets-base.Sockets, 4*n+extra)
		}
		_ = pp.Close()
	}
	if st := LoopStats(); st.Sockets != base.Sockets {
		t.Fatalf("loops watch %d sockets after close, %d before", st.Sockets, base.Sockets)
	}
	if st := pp.Stats(); st.InUse != 0 || st.Sockets != 0 {
		t.Fatalf("%+v", st)
	}
}

// TestRelayPerSocketOption: RelayOptions.PerSocket gives a new stream
// its reader goroutines (the design before relay loops), and the relay
// behaves the same there: the plain, latching and IPv6 tests run again
// in that mode.
func TestRelayPerSocketOption(t *testing.T) {
	withRelayOptions(t, RelayOptions{PerSocket: true})
	pp := newTestPool(t)
	pa, pb := newPhone(t), newPhone(t)
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr()},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	if s.worker != nil {
		t.Fatal("PerSocket stream joined a relay loop")
	}
	a, _ := s.LocalAddr(LegA)
	pa.send(rtpPacket(7, 1, 0, 20), a)
	if got, _ := pb.recv(); binary.BigEndian.Uint32(got[8:]) != 7 {
		t.Fatal("not relayed")
	}
	t.Run("plain", TestRelayPlainBothWays)
	t.Run("latch", TestRelayLatchLockInAndExpect)
	t.Run("demux", TestRelayDemux)
	t.Run("ipv6", TestRelayIPv6)
}

// TestRelayLoopCoalesce: with Coalesce, a loop that relayed a burst
// waits before polling again, so packets that arrive meanwhile on many
// sockets are relayed in one wake-up (more packets than wake-ups), and
// every packet still arrives. A lone packet afterwards (below
// CoalesceMin) is relayed too, the loop back to waiting on epoll.
func TestRelayLoopCoalesce(t *testing.T) {
	withRelayOptions(t, RelayOptions{Coalesce: 20 * time.Millisecond, CoalesceMin: 1})
	const n = 16
	pp := newPoolSlots(t, 2*n+8)
	type call struct {
		pa, pb *phone
		a      netip.AddrPort
	}
	calls := make([]call, n)
	for i := range calls {
		pa, pb := newPhone(t), newPhone(t)
		s := newTestStream(t, StreamConfig{
			A: LegConfig{Ports: allocate(t, pp, true), Remote: pa.addr()},
			B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
		})
		a, _ := s.LocalAddr(LegA)
		calls[i] = call{pa, pb, a}
	}
	before := LoopStats()
	const rounds = 5
	for r := range rounds {
		for i, c := range calls {
			c.pa.send(rtpPacket(uint32(i), uint16(r), 0, 20), c.a)
		}
	}
	for _, c := range calls {
		for range rounds {
			c.pb.recv()
		}
	}
	// A loop counts a batch's packets after relaying the whole batch:
	// the phones can have them first.
	waitFor(t, "loop packet count", func() bool { return LoopStats().Packets-before.Packets >= n*rounds })
	after := LoopStats()
	packets, wakeups := after.Packets-before.Packets, after.Wakeups-before.Wakeups
	if packets < n*rounds {
		t.Fatalf("loops relayed %d packets, want ≥ %d", packets, n*rounds)
	}
	if wakeups >= packets {
		t.Fatalf("%d wake-ups for %d packets: no coalescing", wakeups, packets)
	}
	SetRelayOptions(RelayOptions{})
	calls[0].pa.send(rtpPacket(0, 99, 0, 20), calls[0].a)
	if got, _ := calls[0].pb.recv(); binary.BigEndian.Uint16(got[2:]) != 99 {
		t.Fatal("lone packet not relayed")
	}
}
