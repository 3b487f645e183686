//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package kfwd

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"golang.org/x/sys/unix"
)

const waitLimit = 10 * time.Second

func listen(t *testing.T, ns string, ip netip.Addr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := netns.Do(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func recv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("%v: nothing received: %v", addr(c), err)
	}
	return buf[:n], from
}

func send(t *testing.T, c *net.UDPConn, b []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// TestForwardLoopback, in a network namespace of its own (its loopback):
// once a flow is offloaded, a datagram from the latched source to the
// relay socket reaches the other leg's peer from the other leg's relay
// socket, with its payload intact and its UDP checksum valid (the kernel
// delivers it), and never reaches the relay socket; a datagram from any
// other source still reaches the socket (strict source); the flow counts
// the packet; after Unload the latched source's datagrams reach the
// socket again.
func TestForwardLoopback(t *testing.T) {
	ns := netnstest.New(t, "sbc-kfwd")
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	var f *Forwarder
	if err := netns.Do(ns, func() (err error) { f, err = Open(Config{Interfaces: []string{"lo"}}); return err }); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	phoneA, relayA, relayB, phoneB, other := listen(t, ns, lo), listen(t, ns, lo), listen(t, ns, lo), listen(t, ns, lo), listen(t, ns, lo)
	if err := f.Offload(addr(phoneA), addr(relayA), addr(relayB), addr(phoneB)); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 16)
	send(t, phoneA, payload, addr(relayA))
	got, from := recv(t, phoneB)
	if !bytes.Equal(got, payload) || from != addr(relayB) {
		t.Fatalf("phone B got %d bytes from %v, want %d from %v", len(got), from, len(payload), addr(relayB))
	}
	if p, b, last, ok := f.Counters(addr(phoneA), addr(relayA)); !ok || p != 1 || b < uint64(len(payload)) || time.Since(last) > time.Hour {
		t.Fatalf("counters %d packets %d bytes last %v ok %v", p, b, last, ok)
	}
	// Another source reaches the socket: the first thing relay A reads is
	// that marker, not phone A's datagram.
	send(t, other, []byte("marker"), addr(relayA))
	if got, from := recv(t, relayA); string(got) != "marker" || from != addr(other) {
		t.Fatalf("relay A read %q from %v", got, from)
	}
	f.Unload(addr(phoneA), addr(relayA))
	send(t, phoneA, []byte("back"), addr(relayA))
	if got, from := recv(t, relayA); string(got) != "back" || from != addr(phoneA) {
		t.Fatalf("after unload relay A read %q from %v", got, from)
	}
	if _, _, _, ok := f.Counters(addr(phoneA), addr(relayA)); ok {
		t.Fatal("flow still there after Unload")
	}
	if err := f.Offload(netip.MustParseAddrPort("[::1]:5000"), addr(relayA), addr(relayB), addr(phoneB)); err == nil {
		t.Fatal("IPv6 flow accepted")
	}
}

// rawUDP builds an IPv4/UDP datagram with both checksums computed in
// full (csum false: UDP checksum 0, "none"), as a raw socket sends it: no
// offload, so the receiver's kernel verifies what the program rewrote.
func rawUDP(src, dst netip.AddrPort, payload []byte, csum bool) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^sum16(b[:20], 0))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	if csum {
		pseudo := make([]byte, 0, 12)
		pseudo = append(append(append(pseudo, s4[:]...), d4[:]...), 0, 17, byte(len(u)>>8), byte(len(u)))
		c := ^sum16(u, sum16(pseudo, 0))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	}
	return b
}

// sum16 is the ones' complement sum of b (RFC 1071), folded, plus acc.
func sum16(b []byte, acc uint16) uint16 {
	s := uint32(acc)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestForwardRedirectVeth: the relay in a namespace between two others,
// joined by veth pairs (A | relay | B), the program on both relay-side
// ends: an offloaded flow's datagrams from phone A leave through the
// other veth (bpf_redirect_neigh) to phone B, from the relay's B-side
// address. Phone A sends from a raw socket with its checksums computed
// in full (no offload), so phone B's kernel checks the rewritten IPv4
// and UDP checksums: a wrong one is dropped, never received. A datagram
// without a UDP checksum (0) stays without one and is received too.
func TestForwardRedirectVeth(t *testing.T) {
	nsA, nsR, nsB := netnstest.New(t, "sbc-kfa"), netnstest.New(t, "sbc-kfr"), netnstest.New(t, "sbc-kfb")
	pfx := netip.MustParsePrefix
	aIP, r1, r2, bIP := pfx("10.77.1.2/24"), pfx("10.77.1.1/24"), pfx("10.77.2.1/24"), pfx("10.77.2.2/24")
	netnstest.Veth(t, netns.Veth{A: netns.End{NS: nsA, Name: "kfa", Addrs: []netip.Prefix{aIP}}, B: netns.End{NS: nsR, Name: "kfr1", Addrs: []netip.Prefix{r1}},
		StaticNeighbours: true, Probes: []netns.Probe{{Src: aIP.Addr(), Dst: r1.Addr()}}})
	netnstest.Veth(t, netns.Veth{A: netns.End{NS: nsR, Name: "kfr2", Addrs: []netip.Prefix{r2}}, B: netns.End{NS: nsB, Name: "kfb", Addrs: []netip.Prefix{bIP}},
		StaticNeighbours: true, Probes: []netns.Probe{{Src: r2.Addr(), Dst: bIP.Addr()}}})
	var f *Forwarder
	if err := netns.Do(nsR, func() (err error) { f, err = Open(Config{Interfaces: []string{"kfr1", "kfr2"}}); return err }); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	relayA, relayB := listen(t, nsR, r1.Addr()), listen(t, nsR, r2.Addr())
	phoneB := listen(t, nsB, bIP.Addr())
	var raw int
	if err := netns.Do(nsA, func() (err error) { raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); return err }); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw)
	phoneA := netip.AddrPortFrom(aIP.Addr(), 40000)
	if err := f.Offload(phoneA, addr(relayA), addr(relayB), addr(phoneB)); err != nil {
		t.Fatal(err)
	}
	for _, csum := range []bool{true, false} {
		payload := bytes.Repeat([]byte{0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}, 24)
		payload[1] = map[bool]byte{true: 1, false: 0}[csum]
		pkt := rawUDP(phoneA, addr(relayA), payload, csum)
		if err := unix.Sendto(raw, pkt, 0, &unix.SockaddrInet4{Addr: addr(relayA).Addr().As4()}); err != nil {
			t.Fatal(err)
		}
		got, from := recv(t, phoneB)
		if !bytes.Equal(got, payload) || from != addr(relayB) {
			t.Fatalf("checksum %v: phone B got %d bytes from %v, want %d from %v", csum, len(got), from, len(payload), addr(relayB))
		}
	}
	if p, _, _, ok := f.Counters(phoneA, addr(relayA)); !ok || p != 2 {
		t.Fatalf("flow counted %d packets", p)
	}
}
