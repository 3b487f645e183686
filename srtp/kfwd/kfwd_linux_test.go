//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package kfwd

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
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
