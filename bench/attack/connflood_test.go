package attack

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// acceptor accepts connections on ln, records their sources and what
// they send, and closes them at once when closeAll is set.
type acceptor struct {
	mu      sync.Mutex
	sources map[netip.Addr]int
	bytes   int
}

func serveAcceptor(t *testing.T, ln net.Listener, closeAll bool) *acceptor {
	a := &acceptor{sources: map[netip.Addr]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			a.mu.Lock()
			a.sources[ap.Addr().Unmap()]++
			a.mu.Unlock()
			if closeAll {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					a.mu.Lock()
					a.bytes += n
					a.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return a
}

func TestConnFloodLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := serveAcceptor(t, ln, false)
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	rep, err := ConnFlood(testCtx(t), ConnFloodConfig{
		Target: target, Sources: netip.MustParsePrefix("127.77.0.0/16"), MaxSources: 10,
		Count: 50, Payload: []byte("OPTIONS"), Hold: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Opened != 50 || rep.Held != 50 || rep.ClosedByPeer != 0 || rep.Errors != 0 || rep.Sent != 50*7 || rep.Sources != 10 {
		t.Fatalf("report %+v", rep)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sources) != 10 {
		t.Fatalf("%d distinct sources, want 10", len(a.sources))
	}
	for s, n := range a.sources {
		if !netip.MustParsePrefix("127.77.0.0/16").Contains(s) || n != 5 {
			t.Fatalf("source %s: %d connections", s, n)
		}
	}
}

// A target that closes every connection: each is seen closed by the
// peer, also while it drips its payload.
func TestConnFloodClosedByPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveAcceptor(t, ln, true)
	rep, err := ConnFlood(testCtx(t), ConnFloodConfig{
		Target: ln.Addr().(*net.TCPAddr).AddrPort(), Count: 20,
		Payload: []byte("OPTIONS sip:x SIP/2.0\r\n"), Drip: 10 * time.Millisecond, Hold: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Opened != 20 || rep.ClosedByPeer != 20 || rep.Held != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// From 200 /64s of a /48, in a namespace where the /48 is local.
func TestConnFloodIPv6Prefix(t *testing.T) {
	ns := netnstest.New(t, "sbcatk")
	if _, err := netns.IP("-n", ns, "route", "add", "local", "2001:db8:77::/48", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", "[::1]:0"); return err }); err != nil {
		t.Fatal(err)
	}
	a := serveAcceptor(t, ln, false)
	pfx := netip.MustParsePrefix("2001:db8:77::/48")
	rep, err := ConnFlood(testCtx(t), ConnFloodConfig{
		Target: ln.Addr().(*net.TCPAddr).AddrPort(), Sources: pfx, Count: 200,
		Hold: 100 * time.Millisecond, NetNS: ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Opened != 200 || rep.Held != 200 {
		t.Fatalf("report %+v (%v)", rep, rep.FirstError)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	subnets := map[netip.Prefix]bool{}
	for s := range a.sources {
		if !pfx.Contains(s) {
			t.Fatalf("source %s outside %s", s, pfx)
		}
		p, _ := s.Prefix(64)
		subnets[p] = true
	}
	if len(subnets) != 200 {
		t.Fatalf("%d /64s, want 200", len(subnets))
	}
}
