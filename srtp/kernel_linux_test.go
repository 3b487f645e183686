//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package srtp

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"github.com/sbc-project/sbc/srtp/kfwd"
)

// kernelLab is a network namespace of the test's own with the kernel
// path on its loopback, a port pool and phones there.
type kernelLab struct {
	t  *testing.T
	ns string
	f  *kfwd.Forwarder
	pp *PortPool
}

func newKernelLab(t *testing.T) *kernelLab {
	ns := netnstest.New(t, "sbc-kpath")
	lab := &kernelLab{t: t, ns: ns}
	if err := netns.Do(ns, func() (err error) { lab.f, err = kfwd.Open(kfwd.Config{Interfaces: []string{"lo"}}); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.f.Close() })
	lab.pp = newTestPool(t)
	return lab
}

func (lab *kernelLab) phone() *phone {
	var p *phone
	if err := netns.Do(lab.ns, func() error { p = newPhone(lab.t); return nil }); err != nil {
		lab.t.Fatal(err)
	}
	return p
}

func (lab *kernelLab) ports(mux bool) *Ports {
	var p *Ports
	if err := netns.Do(lab.ns, func() error { p = allocate(lab.t, lab.pp, mux); return nil }); err != nil {
		lab.t.Fatal(err)
	}
	return p
}

// TestRelayKernelPath: a plain↔plain stream with a kernel path relays
// its first packets in user space (latching both legs), then offloads:
// the next packets reach the far phone from the relay's address without
// user space seeing them, and the stream's counters (packets,
// payload bytes, forwarded, RTCP, last packet) include what the kernel
// relayed. A packet from another source still reaches user space and is
// dropped as not_latched_source (strict source in the kernel too). Expect
// with a new address takes the flows back to user space, with the
// kernel's counts kept; the stream relatches and offloads again; Close
// removes the flows.
func TestRelayKernelPath(t *testing.T) {
	lab := newKernelLab(t)
	pa, pb, stranger := lab.phone(), lab.phone(), lab.phone()
	s := newTestStream(t, StreamConfig{
		A:      LegConfig{Ports: lab.ports(false), Remote: pa.addr(), RemoteRTCP: pa.addr()},
		B:      LegConfig{Ports: lab.ports(false), Remote: pb.addr(), RemoteRTCP: pb.addr()},
		Kernel: lab.f,
	})
	a, aRTCP := s.LocalAddr(LegA)
	b, _ := s.LocalAddr(LegB)
	// Latch both legs (user space).
	pa.send(rtpPacket(1, 1, 0, 160), a)
	pb.recv()
	pb.send(rtpPacket(2, 1, 0, 160), b)
	pa.recv()
	if st := s.Stats(); st.A.Offloaded != 0 || st.A.Packets != 1 {
		t.Fatalf("before offload: %+v", st.A)
	}
	if _, _, _, ok := lab.f.Counters(pa.addr(), a); !ok {
		t.Fatal("RTP flow A not offloaded once both legs latched")
	}
	const n = 20
	for i := range n {
		pa.send(rtpPacket(1, uint16(2+i), 0, 160), a)
		got, from := pb.recv()
		if binary.BigEndian.Uint16(got[2:]) != uint16(2+i) || from != b || len(got) != 172 {
			t.Fatalf("B got seq %d from %v (%d bytes)", binary.BigEndian.Uint16(got[2:]), from, len(got))
		}
	}
	// Offloaded comes from the kernel's flow counters; Packets is user
	// space's count plus the kernel's: n+1 means user space saw only the
	// latching packet. User space counts that one forwarded after its
	// send returned, which B may have seen first.
	waitFor(t, "the latching packet counted forwarded", func() bool { return s.Stats().A.Forwarded >= n+1 })
	st := s.Stats()
	if st.A.Offloaded != n || st.A.Packets != n+1 || st.A.Forwarded != n+1 || st.A.Bytes != (n+1)*172 {
		t.Fatalf("after offload: %+v", st.A)
	}
	if time.Since(s.LastPacket(LegA)) > time.Hour || s.Idle(time.Now()) > time.Hour {
		t.Fatal("kernel packets do not count as activity")
	}
	// RTCP pair: latched by one packet each way, then offloaded too.
	pa.send([]byte{0x80, 200, 0, 1, 0, 0, 0, 1}, aRTCP)
	pb.recv()
	_, bRTCP := s.LocalAddr(LegB)
	pb.send([]byte{0x80, 200, 0, 1, 0, 0, 0, 2}, bRTCP)
	pa.recv()
	pa.send([]byte{0x80, 201, 0, 1, 0, 0, 0, 1}, aRTCP)
	if got, _ := pb.recv(); got[1] != 201 {
		t.Fatal("RTCP not relayed")
	}
	if st := s.Stats(); st.A.RTCPPackets != 2 || st.A.Offloaded != n+1 {
		t.Fatalf("RTCP: %+v", st.A)
	}
	// Strict source in the kernel: a stranger's packet reaches user space
	// and is dropped.
	stranger.send(rtpPacket(9, 1, 0, 160), a)
	waitFor(t, "stranger dropped", func() bool { return s.Stats().A.Dropped[DropNotLatchedSource] == 1 })
	// A re-INVITE moves leg A: back to user space, counts kept.
	pa2 := lab.phone()
	s.Expect(LegA, pa2.addr(), pa2.addr())
	if _, _, _, ok := lab.f.Counters(pa.addr(), a); ok {
		t.Fatal("flow kept after Expect moved the leg")
	}
	if st := s.Stats(); st.A.Offloaded != n+1 || st.A.Packets != n+3 {
		t.Fatalf("after Expect: %+v", st.A)
	}
	pa2.send(rtpPacket(3, 1, 0, 160), a) // relatches A (user space), offloads again
	pb.recv()
	if _, _, _, ok := lab.f.Counters(pa2.addr(), a); !ok {
		t.Fatal("not offloaded again after relatching")
	}
	pa2.send(rtpPacket(3, 2, 0, 160), a)
	pb.recv()
	if st := s.Stats(); st.A.Offloaded != n+2 {
		t.Fatalf("second offload: %+v", st.A)
	}
	_ = s.Close()
	if _, _, _, ok := lab.f.Counters(pa2.addr(), a); ok {
		t.Fatal("flow kept after Close")
	}
}

// TestRelayKernelPathNotForSRTP: a stream with an SRTP leg never
// offloads (the kernel cannot decrypt); every packet stays in user space.
func TestRelayKernelPathNotForSRTP(t *testing.T) {
	lab := newKernelLab(t)
	pa, pb := lab.phone(), lab.phone()
	trA, encA, _, _, _ := pair(t, AES_CM_128_HMAC_SHA1_80)
	s := newTestStream(t, StreamConfig{
		A:      LegConfig{Ports: lab.ports(true), Remote: pa.addr(), Transform: trA},
		B:      LegConfig{Ports: lab.ports(true), Remote: pb.addr()},
		Kernel: lab.f,
	})
	a, _ := s.LocalAddr(LegA)
	b, _ := s.LocalAddr(LegB)
	for i := range 3 {
		wire, err := encA.EncryptRTP(nil, rtpPacket(1, uint16(1+i), 0, 160), nil)
		if err != nil {
			t.Fatal(err)
		}
		pa.send(wire, a)
		pb.recv()
		pb.send(rtpPacket(2, uint16(1+i), 0, 160), b)
		pa.recv()
	}
	// The relay counts a packet forwarded after its send returned: B may
	// have the third one before the count does.
	waitFor(t, "A's three packets counted forwarded", func() bool { return s.Stats().A.Forwarded == 3 })
	if st := s.Stats(); st.A.Offloaded != 0 || st.A.Forwarded != 3 {
		t.Fatalf("%+v", st.A)
	}
	if _, _, _, ok := lab.f.Counters(pa.addr(), a); ok {
		t.Fatal("SRTP leg offloaded")
	}
}
