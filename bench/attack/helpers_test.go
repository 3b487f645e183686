package attack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"golang.org/x/sys/unix"
)

// testCtx is the bound of one test: every wait in the tests ends by it.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// received is one datagram a responder got.
type received struct {
	from netip.AddrPort
	raw  []byte
	req  *sip.Request // nil when it did not parse as a request
}

// responder is a tiny UDP SIP peer on loopback: handle turns each
// datagram into the datagrams to send back (none for silence).
type responder struct {
	conn   *net.UDPConn
	handle func(r received) [][]byte
	done   chan struct{}

	mu  sync.Mutex
	got []received
}

func newResponder(t testing.TB, handle func(r received) [][]byte) *responder {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// An unpaced flood outruns the default receive buffer.
	_ = c.SetReadBuffer(socketBuffer)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
		})
	}
	r := &responder{conn: c, handle: handle, done: make(chan struct{})}
	go r.run()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

func (r *responder) run() {
	defer close(r.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		rec := received{from: from, raw: append([]byte(nil), buf[:n]...)}
		if m, err := sip.ParseMessage(rec.raw); err == nil {
			rec.req, _ = m.(*sip.Request)
		}
		r.mu.Lock()
		r.got = append(r.got, rec)
		r.mu.Unlock()
		for _, out := range r.handle(rec) {
			_, _ = r.conn.WriteToUDPAddrPort(out, from)
		}
	}
}

func (r *responder) addr() netip.AddrPort {
	return r.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (r *responder) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// reply builds a response to req.
func reply(req *sip.Request, code int, reason string, headers ...string) []byte {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		res.AppendHeader(sip.NewHeader(name, value))
	}
	return []byte(res.String())
}

// toUser is the user part of the To URI.
func toUser(req *sip.Request) string {
	if to := req.To(); to != nil {
		return to.Address.User
	}
	return ""
}

var local66 = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.66"), 0)

// vethPair makes two network namespaces joined by a veth pair,
// 10.99.0.1/24 (va, in the first) and 10.99.0.2/24 (vb, in the second),
// with reverse-path filtering off in the second so that it accepts
// spoofed sources; both are deleted at cleanup. Nothing touches the host
// namespace.
func vethPair(t testing.TB) (nsA, nsB string) {
	t.Helper()
	nsA, nsB = netnstest.New(t, "sbcatk"), netnstest.New(t, "sbcatk")
	netnstest.Veth(t, netns.Veth{
		A: netns.End{NS: nsA, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}},
		B: netns.End{NS: nsB, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/24")}},
	})
	if _, err := netns.IP("netns", "exec", nsB, "sysctl", "-qw",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.vb.rp_filter=0"); err != nil {
		t.Fatal(err)
	}
	return nsA, nsB
}

func netipAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
