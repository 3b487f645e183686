package sbc

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// reuseLC is the listener configuration of endpoint.listen, less the
// buffer sizes.
var reuseLC = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = reusePort(fd) }); err != nil {
		return err
	}
	return serr
}}

// TestSendSockSteersToListener: with the companion in the listener's
// SO_REUSEPORT group, every datagram sent to the address reaches the
// listener (none is hashed to the companion, which reads nothing), and
// what the companion sends leaves from the listener's address.
func TestSendSockSteersToListener(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ln, err := listenUDP(reuseLC, netip.AddrPortFrom(netip.MustParseAddr(host), 0))
			if err != nil {
				if host == "::1" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			ss, err := openSendSock(ln)
			if err != nil {
				t.Fatalf("openSendSock: %v", err)
			}
			defer ss.close()
			// Several client sockets: the group hashes by the source's
			// address and port, so one source could always land on the
			// listener by chance. Each client's datagrams are read
			// before the next one sends (the receive buffer's room).
			const clients, per = 16, 32
			buf := make([]byte, 64)
			for i := 0; i < clients; i++ {
				cl, err := net.DialUDP("udp", nil, ln.LocalAddr().(*net.UDPAddr))
				if err != nil {
					t.Fatal(err)
				}
				for j := 0; j < per; j++ {
					if _, err := cl.Write([]byte("OPTIONS")); err != nil {
						t.Fatal(err)
					}
				}
				cl.Close()
				for got := 0; got < per; got++ {
					_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, _, err := ln.ReadFrom(buf); err != nil {
						t.Fatalf("client %d: the listener read %d of its %d datagrams: %v", i, got, per, err)
					}
				}
			}

			// A send through the companion (rawUDP.writeTo) comes from
			// the listener's address.
			peer, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			r := newRawUDP(ln, ss)
			if r == nil || r.send != ss.conn() {
				t.Fatal("the raw path does not send through the companion")
			}
			if _, ok, err := r.writeTo([]byte("200"), peer.LocalAddr()); !ok || err != nil {
				t.Fatalf("writeTo: ok %v, %v", ok, err)
			}
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "200" || from.String() != ln.LocalAddr().String() {
				t.Fatalf("peer got %q from %v, want \"200\" from %v", buf[:n], from, ln.LocalAddr())
			}
			// Closed (the endpoint's closeSockets), the companion sends
			// nothing: its descriptor number may be another file's now.
			ss.close()
			if _, _, err := r.writeTo([]byte("late"), peer.LocalAddr()); err == nil {
				t.Fatal("a send through a closed companion succeeded")
			}
		})
	}
}

// TestListenUDPAddressInUse: the SO_REUSEPORT group does not let a second
// listener (of this SBC or another) bind an address in use; it fails as
// a plain bind does.
func TestListenUDPAddressInUse(t *testing.T) {
	first, err := listenUDP(reuseLC, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ss, err := openSendSock(first)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	addr := netip.MustParseAddrPort(first.LocalAddr().String())
	if second, err := listenUDP(reuseLC, addr); err == nil {
		second.Close()
		t.Fatalf("a second listener bound %v", addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listener: %v, want EADDRINUSE", err)
	}

	plain, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	addr = netip.MustParseAddrPort(plain.LocalAddr().String())
	if ln, err := listenUDP(reuseLC, addr); err == nil {
		ln.Close()
		t.Fatalf("listened on %v, held by another socket", addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen: %v, want EADDRINUSE", err)
	}
}
