//go:build linux

package srtp

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

// TestSockIORaw: on Linux the relay's sockets read and write through raw
// system calls in their RawConn (sockIO), for IPv4 and IPv6 sockets; the
// source address and port come back as the net package would give them,
// the destination port goes out in network order, a v6 destination from
// a v4 socket is refused as the net package refuses it, and a closed
// socket reads as net.ErrClosed (what ends a reader).
func TestSockIORaw(t *testing.T) {
	if port(htons(5004)) != 5004 || port(htons(0x1234)) != 0x1234 {
		t.Fatal("port byte order")
	}
	for _, ip := range []netip.Addr{loopback, netip.IPv6Loopback()} {
		t.Run(ip.String(), func(t *testing.T) {
			listen := func() *net.UDPConn {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
				if err != nil {
					t.Skipf("no %v here: %v", ip, err)
				}
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
			a, b := listen(), listen()
			ka := &sock{conn: a, raw: newRawConn(a)}
			kb := &sock{conn: b, raw: newRawConn(b)}
			if ka.raw.rc == nil || ka.raw.v6 != ip.Is6() {
				t.Fatalf("raw conn %+v", ka.raw)
			}
			sio := newSockIO()
			bAddr := b.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := sio.write(ka, []byte("hello"), bAddr); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, from, err := sio.read(kb, buf)
			if err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			if want := a.LocalAddr().(*net.UDPAddr).AddrPort(); from != want {
				t.Fatalf("from %v, want %v", from, want)
			}
			if !ip.Is6() {
				if err := sio.write(ka, []byte("x"), netip.MustParseAddrPort("[2001:db8::1]:5004")); err == nil {
					t.Fatal("a v4 socket sent to a v6 address")
				}
			}
			_ = b.Close()
			if _, _, err := sio.read(kb, buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after close: %v", err)
			}
		})
	}
}
