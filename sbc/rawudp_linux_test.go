package sbc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// readOne reads with rb as a read loop does (recvmmsg, waiting on the
// poller) and returns the batch's first datagram: the tests send one at a
// time.
func readOne(rb *recvBatch, r *rawUDP) ([]byte, net.Addr, time.Time, error) {
	n, err := rb.read(r)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	if n != 1 {
		return nil, nil, time.Time{}, fmt.Errorf("read %d datagrams, want 1", n)
	}
	return rb.datagram(0)
}

// TestRawUDP: the raw path reads what a peer sent with its source and
// the kernel's receive stamp, and sends to IPv4 peers from an IPv4
// socket and to IPv4 and IPv6 peers from a dual-stack one; a read
// deadline and a closed socket end a read with the errors the net
// package gives (sipgo's read loop ends on net.ErrClosed).
func TestRawUDP(t *testing.T) {
	cases := []struct {
		name, network, bind string
		peers               []string
	}{
		{"ipv4 socket", "udp4", "127.0.0.1:0", []string{"127.0.0.1:0"}},
		{"dual-stack socket", "udp", "[::]:0", []string{"127.0.0.1:0", "[::1]:0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pc, err := net.ListenPacket(c.network, c.bind)
			if err != nil {
				t.Skipf("no %s socket here: %v", c.network, err)
			}
			defer pc.Close()
			stamped := enableRxStamps(pc)
			r, rb := newRawUDP(pc, nil), newRecvBatch(2048)
			if r == nil {
				t.Fatal("no raw path for a UDP socket")
			}
			port := pc.LocalAddr().(*net.UDPAddr).Port
			buf := make([]byte, 2048)
			for _, pa := range c.peers {
				peer, err := net.ListenPacket("udp", pa)
				if err != nil {
					t.Skipf("no peer socket on %s: %v", pa, err)
				}
				defer peer.Close()
				pAddr := peer.LocalAddr().(*net.UDPAddr)
				to := &net.UDPAddr{IP: pAddr.IP, Port: port}
				sent := time.Now()
				if _, err := peer.WriteTo([]byte("OPTIONS from "+pa), to); err != nil {
					t.Fatal(err)
				}
				data, from, at, err := readOne(rb, r)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if got := string(data); got != "OPTIONS from "+pa {
					t.Fatalf("read %q", got)
				}
				fa := from.(*net.UDPAddr)
				if !fa.IP.Equal(pAddr.IP) || fa.Port != pAddr.Port {
					t.Fatalf("source %v, want %v", from, pAddr)
				}
				if stamped && (at.IsZero() || at.Before(sent.Add(-time.Second)) || at.After(time.Now().Add(time.Second))) {
					t.Fatalf("receive stamp %v, sent at %v", at, sent)
				}
				// Back to the peer by the raw path.
				n, ok, err := r.writeTo([]byte("200 OK"), from)
				if !ok || err != nil || n != 6 {
					t.Fatalf("writeTo %v: %d %v %v", from, n, ok, err)
				}
				_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, src, err := peer.ReadFrom(buf)
				if err != nil || string(buf[:n]) != "200 OK" || src.(*net.UDPAddr).Port != port {
					t.Fatalf("peer read %q from %v: %v", buf[:n], src, err)
				}
			}
			// Not an address the raw path sends to: the caller falls back.
			if _, ok, _ := r.writeTo([]byte("x"), &net.IPAddr{IP: net.IPv4(127, 0, 0, 1)}); ok {
				t.Fatal("raw path took a non-UDP address")
			}
			if c.network == "udp4" {
				if _, ok, _ := r.writeTo([]byte("x"), &net.UDPAddr{IP: net.IPv6loopback, Port: 9}); ok {
					t.Fatal("raw path took an IPv6 peer on an IPv4 socket")
				}
			}

			_ = pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, _, _, err := readOne(rb, r); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past the deadline: %v", err)
			}
			_ = pc.SetReadDeadline(time.Time{})
			done := make(chan error, 1)
			go func() {
				_, _, _, err := readOne(rb, r)
				done <- err
			}()
			time.Sleep(10 * time.Millisecond) // not a timing assertion: the read may start after the close too
			pc.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read on a closed socket: %v, want net.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("read not ended by the socket's close")
			}
		})
	}
}

// TestRawUDPAllocs: a raw write allocates nothing; a raw read allocates
// only the source address it returns (one object).
func TestRawUDPAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items at random")
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	enableRxStamps(pc)
	r, rb := newRawUDP(pc, nil), newRecvBatch(2048)
	to := pc.LocalAddr()
	msg := []byte("SIP/2.0 200 OK\r\n\r\n")
	// Warm the pool.
	if _, _, err := r.writeTo(msg, to); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := readOne(rb, r); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(200, func() {
		if _, _, err := r.writeTo(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := readOne(rb, r); err != nil {
			t.Fatal(err)
		}
	}); a > 1 {
		t.Fatalf("%v allocations per write and read, want ≤ 1", a)
	}
}

// BenchmarkUDPRead compares a plain read of a datagram (the net package)
// with the SBC's: a raw recvmmsg with the SO_TIMESTAMPNS control message
// the overload check needs (udpbatch_linux.go); each op writes one
// datagram to the socket and reads it back.
func BenchmarkUDPRead(b *testing.B) {
	for _, stamped := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "raw-stamped"}[stamped], func(b *testing.B) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			uc := pc.(*net.UDPConn)
			if stamped && !enableRxStamps(pc) {
				b.Skip("no SO_TIMESTAMPNS")
			}
			r, rb := newRawUDP(pc, nil), newRecvBatch(2048)
			msg := []byte("INVITE sip:a@b SIP/2.0\r\n\r\n")
			dst := pc.LocalAddr().(*net.UDPAddr)
			buf := make([]byte, 2048)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := uc.WriteToUDP(msg, dst); err != nil {
					b.Fatal(err)
				}
				if stamped {
					_, _, _, err = readOne(rb, r)
				} else {
					_, _, err = uc.ReadFrom(buf)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
