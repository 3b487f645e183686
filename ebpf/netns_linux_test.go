//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// vethPair is a veth link between two network namespaces made by the test:
// A (the senders, 10.213.0.2-3, fd00:213::2-3) and B (the SBC side with
// XDP, 10.213.0.1, fd00:213::1). Neighbours are static so that no ARP or
// NDP traffic depends on the addresses the tests block.
type vethPair struct {
	nsA, nsB   string
	ifA, ifB   string
	macA, macB string
}

var (
	addrB       = netip.MustParseAddr("10.213.0.1")
	addrClean   = netip.MustParseAddr("10.213.0.2")
	addrBlocked = netip.MustParseAddr("10.213.0.3")
	addrB6      = netip.MustParseAddr("fd00:213::1")
	addrClean6  = netip.MustParseAddr("fd00:213::2")
	addrBlock6  = netip.MustParseAddr("fd00:213::3")
)

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	ipOut(t, args...)
}

func ipOut(t testing.TB, args ...string) string {
	t.Helper()
	out, err := netns.IP(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newVethPair makes the two namespaces and the veth between them, and
// returns once a datagram from A reaches B over IPv4 and IPv6 (link
// activation is asynchronous and drops what is sent before it is done).
func newVethPair(t testing.TB) *vethPair {
	t.Helper()
	// Names and MACs need only be unique inside the pair's own namespaces.
	p := &vethPair{
		nsA:  netnstest.New(t, "sbc-ebpf"),
		nsB:  netnstest.New(t, "sbc-ebpf"),
		ifA:  "xsnd0",
		ifB:  "xdp0",
		macA: "02:5b:c0:00:00:0a",
		macB: "02:5b:c0:00:00:0b",
	}
	netnstest.Veth(t, netns.Veth{
		A: netns.End{NS: p.nsA, Name: p.ifA, MAC: p.macA, Addrs: []netip.Prefix{
			netip.PrefixFrom(addrClean, 24), netip.PrefixFrom(addrBlocked, 24),
			netip.PrefixFrom(addrClean6, 64), netip.PrefixFrom(addrBlock6, 64),
		}},
		B: netns.End{NS: p.nsB, Name: p.ifB, MAC: p.macB, Addrs: []netip.Prefix{
			netip.PrefixFrom(addrB, 24), netip.PrefixFrom(addrB6, 64),
		}},
		StaticNeighbours: true,
		Probes:           []netns.Probe{{Src: addrClean, Dst: addrB}, {Src: addrClean6, Dst: addrB6}},
	})
	return p
}

// inNetns runs fn on an OS thread switched into the named network
// namespace (see netns.Do).
var inNetns = netns.Do

func loadIn(t testing.TB, ns string, opts Options) (*XDP, error) {
	t.Helper()
	var x *XDP
	err := inNetns(ns, func() error {
		var err error
		x, err = Load(opts)
		return err
	})
	return x, err
}

// receiver counts UDP datagrams per source address.
type receiver struct {
	conn   *net.UDPConn
	mu     sync.Mutex
	got    map[netip.Addr]int
	notify chan struct{}
}

func newReceiver(t testing.TB, ns string, port int) *receiver {
	t.Helper()
	r := &receiver{got: map[netip.Addr]int{}, notify: make(chan struct{}, 1)}
	err := inNetns(ns, func() error {
		var err error
		r.conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}) // dual stack
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := r.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got[from.Addr().Unmap()]++
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

func (r *receiver) count(a netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[a]
}

// waitUntil polls cond, woken by received datagrams or every 20ms, for at
// most d. It reports whether cond became true.
func (r *receiver) waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.notify:
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// sender is a UDP socket in namespace A bound to one source address.
func sender(t testing.TB, ns string, src, dst netip.Addr, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNetns(ns, func() error {
		var err error
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(port))))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dump logs interface statistics and counters to explain a failure.
func (p *vethPair) dump(t testing.TB, x *XDP) {
	t.Helper()
	t.Log(netns.Dump(p.nsA, p.nsB))
	if x != nil {
		c, err := x.Counters()
		t.Logf("counters: %v %v", c, err)
	}
}

func sendN(t testing.TB, c *net.UDPConn, n int) {
	t.Helper()
	msg := []byte("OPTIONS sip:probe@sbc SIP/2.0\r\n\r\n")
	for i := range n {
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}

// TestEndToEnd attaches the program to a veth in a namespace, in generic and
// native mode, and checks that blocked senders are dropped (and counted)
// while clean ones arrive; then restarts (Close with pins kept, Load again)
// and checks the block holds throughout.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []Mode{ModeGeneric, ModeNative} {
		t.Run(string(mode), func(t *testing.T) { testEndToEnd(t, mode) })
	}
}

func testEndToEnd(t *testing.T, mode Mode) {
	const port, n = 5060, 50
	pinDir := bpffsDir(t)
	p := newVethPair(t)
	opts := Options{Interfaces: []string{p.ifB}, Mode: mode, PinDir: pinDir, UDPPorts: []uint16{port}}
	x, err := loadIn(t, p.nsB, opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = x.Remove()
		}
	})
	if att := x.Attachments(); len(att) != 1 || att[0].Mode != mode || att[0].Reused || att[0].Interface != p.ifB {
		t.Fatalf("attachments %+v", att)
	}
	if err := x.SyncDeny([]netip.Prefix{netip.PrefixFrom(addrBlocked, 32), netip.PrefixFrom(addrBlock6, 128)}); err != nil {
		t.Fatal(err)
	}

	recv := newReceiver(t, p.nsB, port)
	blocked4 := sender(t, p.nsA, addrBlocked, addrB, port)
	blocked6 := sender(t, p.nsA, addrBlock6, addrB6, port)
	clean4 := sender(t, p.nsA, addrClean, addrB, port)
	clean6 := sender(t, p.nsA, addrClean6, addrB6, port)

	round := func(t *testing.T, x *XDP, wantDeny uint64) {
		t.Helper()
		cleanBefore4, cleanBefore6 := recv.count(addrClean), recv.count(addrClean6)
		sendN(t, blocked4, n)
		sendN(t, blocked6, n)
		sendN(t, clean4, n)
		sendN(t, clean6, n)
		ok := recv.waitUntil(10*time.Second, func() bool {
			return recv.count(addrClean) == cleanBefore4+n && recv.count(addrClean6) == cleanBefore6+n
		})
		if !ok {
			p.dump(t, x)
			t.Fatalf("clean senders: got %d and %d more datagrams, want %d each",
				recv.count(addrClean)-cleanBefore4, recv.count(addrClean6)-cleanBefore6, n)
		}
		if x != nil {
			var c Counters
			// A timeout shows in the checks below (err or the count).
			recv.waitUntil(10*time.Second, func() bool {
				c, err = x.Counters()
				return err == nil && c.DroppedDeny >= wantDeny
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.DroppedDeny != wantDeny {
				t.Fatalf("deny counter %d, want %d (%v)", c.DroppedDeny, wantDeny, c)
			}
		}
		if b4, b6 := recv.count(addrBlocked), recv.count(addrBlock6); b4 != 0 || b6 != 0 {
			t.Fatalf("receiver got %d + %d datagrams from blocked sources", b4, b6)
		}
	}

	round(t, x, 2*n)
	c, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Passed < 2*n {
		t.Fatalf("passed counter %d < %d clean datagrams", c.Passed, 2*n)
	}

	// Restart: the SBC stops (pins kept) — the block holds while it is down…
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	round(t, nil, 0)

	// …and after it comes back, over the same pinned link.
	x, err = loadIn(t, p.nsB, opts)
	if err != nil {
		t.Fatalf("Load after restart: %v", err)
	}
	closed = false
	if att := x.Attachments(); len(att) != 1 || att[0].Mode != mode || !att[0].Reused {
		t.Fatalf("attachments after restart %+v, want the pinned link reused", att)
	}
	denied, err := x.Denied()
	if err != nil || len(denied) != 2 {
		t.Fatalf("deny list after restart: %v %v", denied, err)
	}
	round(t, x, 6*n) // counters are pinned too: 2 rounds before, 1 while down, this one

	// Unblock: the formerly blocked source now arrives.
	if err := x.Undeny(netip.PrefixFrom(addrBlocked, 32)); err != nil {
		t.Fatal(err)
	}
	sendN(t, blocked4, n)
	if !recv.waitUntil(10*time.Second, func() bool { return recv.count(addrBlocked) == n }) {
		t.Fatalf("after Undeny: got %d of %d", recv.count(addrBlocked), n)
	}

	// Remove detaches: nothing is dropped any more and the pins are gone.
	if err := x.Remove(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin dir after Remove: %v", err)
	}
	sendN(t, blocked6, n)
	if !recv.waitUntil(10*time.Second, func() bool { return recv.count(addrBlock6) == n }) {
		t.Fatalf("after Remove: got %d of %d", recv.count(addrBlock6), n)
	}
}

// TestAttachLifecycle covers mode changes across restarts, stale links of
// interfaces no longer configured, a second loader on a busy interface and a
// missing interface.
func TestAttachLifecycle(t *testing.T) {
	pinDir := bpffsDir(t)
	p := newVethPair(t)
	// A second interface in B (a veth pair local to B; no dummy module needed).
	ipCmd(t, "-n", p.nsB, "link", "add", "sbcextra0", "type", "veth", "peer", "name", "sbcextra1")
	ipCmd(t, "-n", p.nsB, "link", "set", "sbcextra0", "up")

	x, err := loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB, "sbcextra0"}, Mode: ModeGeneric, PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Remove() })
	for _, name := range []string{"link_generic_" + p.ifB, "link_generic_sbcextra0"} {
		if _, err := os.Stat(filepath.Join(pinDir, name)); err != nil {
			t.Fatalf("pin %s: %v", name, err)
		}
	}
	_ = x.Close()

	// Auto mode on restart: keeps the pinned generic link of the veth and
	// detaches the dummy, which is no longer configured.
	x, err = loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB}, PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	if att := x.Attachments(); len(att) != 1 || att[0].Mode != ModeGeneric || !att[0].Reused {
		t.Fatalf("auto restart: %+v", att)
	}
	if _, err := os.Stat(filepath.Join(pinDir, "link_generic_sbcextra0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale link pin still there: %v", err)
	}
	_ = x.Close()

	// Explicit native mode: the generic link is replaced.
	x, err = loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB}, Mode: ModeNative, PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	if att := x.Attachments(); len(att) != 1 || att[0].Mode != ModeNative || att[0].Reused {
		t.Fatalf("native restart: %+v", att)
	}
	if _, err := os.Stat(filepath.Join(pinDir, "link_generic_"+p.ifB)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old generic pin still there: %v", err)
	}

	// A second SBC with its own pin directory finds the interface busy.
	other := bpffsDir(t)
	if y, err := loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB}, PinDir: other}); !errors.Is(err, ErrAttach) {
		if y != nil {
			_ = y.Remove()
		}
		t.Fatalf("second loader: %v, want ErrAttach", err)
	} else {
		t.Log(err)
	}
	// The failed load left the first attachment alone.
	if att := x.Attachments(); len(att) != 1 {
		t.Fatalf("attachments %+v", att)
	}
	if _, err := os.Stat(filepath.Join(pinDir, "link_native_"+p.ifB)); err != nil {
		t.Fatalf("native pin: %v", err)
	}

	// XDP turned off: RemovePinned detaches what the closed handle left.
	_ = x.Close()
	if !strings.Contains(ipOut(t, "-n", p.nsB, "link", "show", "dev", p.ifB), "prog/xdp") {
		t.Fatal("program not attached after Close")
	}
	if err := RemovePinned(pinDir); err != nil {
		t.Fatal(err)
	}
	if out := ipOut(t, "-n", p.nsB, "link", "show", "dev", p.ifB); strings.Contains(out, "prog/xdp") {
		t.Fatalf("program still attached after RemovePinned:\n%s", out)
	}
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin dir after RemovePinned: %v", err)
	}
	if err := RemovePinned(pinDir); err != nil {
		t.Fatalf("second RemovePinned: %v", err)
	}

	// Missing interface.
	if _, err := loadIn(t, p.nsB, Options{Interfaces: []string{"sbc-nope0"}, PinDir: other}); !errors.Is(err, ErrNoInterface) {
		t.Fatalf("missing interface: %v", err)
	}
}

// TestScopeOnTheWire attaches the program to a veth and denies a source:
// with the default scope the source's SIP traffic (UDP to the SIP port,
// TCP to the TLS port) is dropped while its other traffic to the same host
// (a UDP datagram to another port, TCP to a non-SIP port, an ICMP echo)
// gets through, counted Spared; with scope "host" all of it is dropped.
func TestScopeOnTheWire(t *testing.T) {
	const sipPort, tlsPort, otherUDP, otherTCP = 5060, 5061, 7000, 2222
	p := newVethPair(t)
	x, err := loadIn(t, p.nsB, Options{Interfaces: []string{p.ifB}, Mode: ModeGeneric, PinDir: bpffsDir(t),
		UDPPorts: []uint16{sipPort}, TCPPorts: []uint16{sipPort, tlsPort}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = x.Remove() })
	if err := x.SyncDeny([]netip.Prefix{netip.PrefixFrom(addrBlocked, 32), netip.PrefixFrom(addrBlock6, 128)}); err != nil {
		t.Fatal(err)
	}
	sipRecv := newReceiver(t, p.nsB, sipPort)
	otherRecv := newReceiver(t, p.nsB, otherUDP)
	for _, port := range []int{tlsPort, otherTCP} {
		tcpListen(t, p.nsB, port)
	}
	sip4 := sender(t, p.nsA, addrBlocked, addrB, sipPort)
	other4 := sender(t, p.nsA, addrBlocked, addrB, otherUDP)
	other6 := sender(t, p.nsA, addrBlock6, addrB6, otherUDP)
	clean := sender(t, p.nsA, addrClean, addrB, sipPort)

	// Traffic that must arrive: datagrams to another port, TCP to a
	// non-SIP port, ICMP echo.
	const n = 20
	c0, _ := x.Counters()
	sendN(t, other4, n)
	sendN(t, other6, n)
	if !otherRecv.waitUntil(10*time.Second, func() bool {
		return otherRecv.count(addrBlocked) == n && otherRecv.count(addrBlock6) == n
	}) {
		p.dump(t, x)
		t.Fatalf("scope sip: UDP to port %d from the denied sources: got %d and %d of %d",
			otherUDP, otherRecv.count(addrBlocked), otherRecv.count(addrBlock6), n)
	}
	if err := tcpDial(p.nsA, addrBlocked, addrB, otherTCP, 5*time.Second); err != nil {
		t.Fatalf("scope sip: TCP to port %d from the denied source: %v", otherTCP, err)
	}
	if err := ping(p.nsA, addrBlocked, addrB, 5*time.Second); err != nil {
		t.Fatalf("scope sip: ICMP echo from the denied source: %v", err)
	}
	// …and SIP that must not: UDP to the SIP port, TCP to the TLS port.
	sendN(t, sip4, n)
	sendN(t, clean, n)
	if !sipRecv.waitUntil(10*time.Second, func() bool { return sipRecv.count(addrClean) == n }) {
		t.Fatalf("clean sender: got %d of %d", sipRecv.count(addrClean), n)
	}
	if err := tcpDial(p.nsA, addrBlocked, addrB, tlsPort, 300*time.Millisecond); err == nil {
		t.Fatal("scope sip: TCP to the TLS port from the denied source connected")
	}
	if got := sipRecv.count(addrBlocked); got != 0 {
		t.Fatalf("scope sip: %d datagrams from the denied source reached the SIP port", got)
	}
	c1, _ := x.Counters()
	d := c1.sub(c0)
	// Spared: 2n datagrams, and at least the TCP handshake and the echo
	// request (the kernel may add retransmissions or ACKs).
	if d.Spared < 2*n+2 || d.DroppedDeny < n+1 {
		t.Fatalf("scope sip counters: %v, want spared >= %d and deny >= %d", d, 2*n+2, n+1)
	}
	t.Logf("scope sip: %v", d)

	// Scope host: the same traffic is dropped.
	if err := x.SetScope(ScopeHost); err != nil {
		t.Fatal(err)
	}
	before := otherRecv.count(addrBlocked)
	sendN(t, other4, n)
	if err := ping(p.nsA, addrBlocked, addrB, 300*time.Millisecond); err == nil {
		t.Fatal("scope host: ICMP echo from the denied source answered")
	}
	if err := tcpDial(p.nsA, addrBlocked, addrB, otherTCP, 300*time.Millisecond); err == nil {
		t.Fatal("scope host: TCP to a non-SIP port from the denied source connected")
	}
	// A clean datagram sent after the others arrives after them.
	sendN(t, sender(t, p.nsA, addrClean, addrB, otherUDP), 1)
	if !otherRecv.waitUntil(10*time.Second, func() bool { return otherRecv.count(addrClean) == 1 }) {
		t.Fatal("scope host: clean datagram lost")
	}
	if got := otherRecv.count(addrBlocked) - before; got != 0 {
		t.Fatalf("scope host: %d datagrams to port %d from the denied source arrived", got, otherUDP)
	}
}

// tcpListen accepts (and closes) TCP connections on port in namespace ns.
func tcpListen(t testing.TB, ns string, port int) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

// tcpDial connects from src in namespace ns to dst:port within timeout.
func tcpDial(ns string, src, dst netip.Addr, port int, timeout time.Duration) error {
	return inNetns(ns, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		c, err := d.Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
		if err == nil {
			_ = c.Close()
		}
		return err
	})
}

// ping sends one ICMP echo request from src (IPv4) in namespace ns to dst
// and waits for the reply within timeout.
func ping(ns string, src, dst netip.Addr, timeout time.Duration) error {
	var c net.PacketConn
	if err := inNetns(ns, func() error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", src.String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	echo := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 's', 'b', 'c', '!'}
	var sum uint32
	for i := 0; i < len(echo); i += 2 {
		sum += uint32(echo[i])<<8 | uint32(echo[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	echo[2], echo[3] = byte(^sum>>8), byte(^sum)
	if _, err := c.WriteTo(echo, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		// A raw ICMP socket sees every ICMP message of the namespace.
		if ip, ok := from.(*net.IPAddr); ok && ip.IP.Equal(dst.AsSlice()) && n >= 8 &&
			buf[0] == 0 && buf[4] == byte(id>>8) && buf[5] == byte(id) {
			return nil
		}
	}
}
