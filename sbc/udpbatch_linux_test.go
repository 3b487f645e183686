package sbc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestBatchReader: datagrams queued on the socket are read in one batch
// and handed out one by one, in order, with their source; while the
// batch (whose first datagram waited holdAfter or more) is open what the
// SBC sends on the socket is held, and it goes out when the read loop
// asks for the read after the batch's last datagram. A read that finds
// one datagram opens no batch: writes go out at once.
func TestBatchReader(t *testing.T) {
	e := newEnv(t, envOpts{})
	g, send := stampedGen(t, e.sbc.realms["external"].peers, make(chan struct{}))
	peer := mustUDP(t)
	r := newBatchReader(g)
	q := &g.raw.q
	buf := make([]byte, 2048)
	read := func() string {
		t.Helper()
		_ = g.PacketConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if from == nil || from.(*net.UDPAddr).Port == 0 {
			t.Fatalf("read without a source: %v", from)
		}
		return string(buf[:n])
	}
	var msgs []string
	for i := range 6 {
		msgs = append(msgs, fmt.Sprintf("SIP/2.0 180 Ringing\r\nX-N: %d\r\n\r\n", i))
	}
	send(msgs...) // on loopback each is in the receive queue when send returns
	// Older than holdAfter when read: the socket is behind, writes are
	// held. (Load can only make them older.)
	time.Sleep(2 * holdAfter)
	if got := read(); got != msgs[0] {
		t.Fatalf("first read %q, want %q", got, msgs[0])
	}
	if r.n != len(msgs) || !r.open {
		t.Fatalf("the first read took %d datagrams (open %v), want a batch of %d", r.n, r.open, len(msgs))
	}
	if n, ok, err := g.raw.writeTo([]byte("held"), peer.LocalAddr()); n != 4 || !ok || err != nil {
		t.Fatalf("write during the batch: %d %v %v", n, ok, err)
	}
	q.mu.Lock()
	held := len(q.ents)
	q.mu.Unlock()
	if held != 1 {
		t.Fatalf("%d writes held during the batch, want 1", held)
	}
	for _, m := range msgs[1:] {
		if got := read(); got != m {
			t.Fatalf("read %q, want %q", got, m)
		}
	}
	// The next read sends what was held, then waits for a datagram.
	next := make(chan string, 1)
	go func() {
		_ = g.PacketConn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := r.ReadFrom(buf)
		if err != nil {
			next <- err.Error()
			return
		}
		next <- string(buf[:n])
	}()
	pb := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, from, err := peer.ReadFrom(pb); err != nil || string(pb[:n]) != "held" || from.String() != g.PacketConn.LocalAddr().String() {
		t.Fatalf("held write: %q from %v, %v", pb[:n], from, err)
	}
	last := "SIP/2.0 200 OK\r\n\r\n"
	send(last)
	if got := <-next; got != last {
		t.Fatalf("read after the batch: %q", got)
	}
	if r.n != 1 || r.open {
		t.Fatalf("a read of one datagram: batch of %d, open %v", r.n, r.open)
	}
	if _, _, err := g.raw.writeTo([]byte("direct"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if n, _, err := peer.ReadFrom(pb); err != nil || string(pb[:n]) != "direct" {
		t.Fatalf("write outside a batch: %q, %v", pb[:n], err)
	}
}

// TestSendQueueOrder: writers on several goroutines while batches open
// and close on two others (a -race stress, bounded): every datagram
// arrives once, and each writer's in the order it wrote them, whether it
// went out at once, held in a batch, or held during a flush.
func TestSendQueueOrder(t *testing.T) {
	ln := mustUDP(t)
	r := newRawUDP(ln, nil)
	rx := mustUDP(t)
	const writers, per, window = 4, 300, 64
	credit := make(chan struct{}, window) // bounds what is in flight: the receiver's buffer never overflows
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				credit <- struct{}{}
				if _, _, err := r.writeTo([]byte(fmt.Sprintf("%d %d", w, i)), rx.LocalAddr()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var bwg sync.WaitGroup
	for range 2 {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				r.q.begin()
				time.Sleep(50 * time.Microsecond)
				r.q.end(r)
			}
		}()
	}
	next := make([]int, writers)
	buf := make([]byte, 64)
	for got := 0; got < writers*per; got++ {
		_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := rx.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, writers*per, err)
		}
		var w, i int
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d", &w, &i); err != nil || w >= writers {
			t.Fatalf("datagram %q", buf[:n])
		}
		if i != next[w] {
			t.Fatalf("writer %d: datagram %d arrived when %d was due", w, i, next[w])
		}
		next[w]++
		<-credit
	}
	close(done)
	wg.Wait()
	bwg.Wait()
	if r.q.open != 0 || r.q.flushing || len(r.q.ents) != 0 {
		t.Fatalf("queue left open %d, flushing %v, %d held", r.q.open, r.q.flushing, len(r.q.ents))
	}
}

// TestSendQueueFull: a batch's datagrams that the companion's full send
// buffer refuses go through the listener: all arrive, in order.
func TestSendQueueFull(t *testing.T) {
	ln, err := listenUDP(reuseLC, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ss, err := openSendSock(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	var sndbuf int
	if err := ss.conn().Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 1) // the kernel's least
		sndbuf, _ = syscall.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil {
		t.Fatal(err)
	}
	r := newRawUDP(ln, ss)
	rx := mustUDP(t) // reads only once all are sent: what it holds is charged to the sender
	const n = 40
	body := strings.Repeat("x", 1000)
	if n*len(body) <= 4*sndbuf {
		t.Fatalf("the companion's send buffer (%d) would take every datagram", sndbuf)
	}
	r.q.begin()
	for i := range n {
		if _, _, err := r.writeTo([]byte(fmt.Sprintf("%02d %s", i, body)), rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	r.q.end(r)
	buf := make([]byte, 2048)
	for i := range n {
		_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := rx.ReadFrom(buf)
		if err != nil {
			t.Fatalf("received %d of %d: %v", i, n, err)
		}
		if want := fmt.Sprintf("%02d ", i); string(buf[:3]) != want {
			t.Fatalf("datagram %d is %q", i, buf[:min(k, 8)])
		}
	}
}

// TestSendQueueRefused: a held datagram the kernel refuses (port 0:
// EINVAL) is reported and dropped; those around it go out, an empty one
// too.
func TestSendQueueRefused(t *testing.T) {
	ln := mustUDP(t)
	r := newRawUDP(ln, nil)
	var refused []netip.AddrPort
	var why []error
	r.onRefused(func(dst netip.AddrPort, err error) { refused, why = append(refused, dst), append(why, err) })
	rx := mustUDP(t)
	zero := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}
	r.q.begin()
	for _, m := range []struct {
		b  string
		to net.Addr
	}{{"one", rx.LocalAddr()}, {"", rx.LocalAddr()}, {"nowhere", zero}, {"two", rx.LocalAddr()}} {
		if _, _, err := r.writeTo([]byte(m.b), m.to); err != nil {
			t.Fatalf("held write %q: %v", m.b, err)
		}
	}
	r.q.end(r)
	if len(refused) != 1 || refused[0] != netip.MustParseAddrPort("127.0.0.1:0") || !errors.Is(why[0], syscall.EINVAL) {
		t.Fatalf("refused %v (%v), want 127.0.0.1:0 with EINVAL", refused, why)
	}
	buf := make([]byte, 64)
	for _, want := range []string{"one", "", "two"} {
		_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := rx.ReadFrom(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("received %q (%v), want %q", buf[:n], err, want)
		}
	}
}

// TestBatchReaderClose: a read loop that ends with a batch open (sipgo
// closes its reader) lets go of the writes the batch held.
func TestBatchReaderClose(t *testing.T) {
	e := newEnv(t, envOpts{})
	g, send := stampedGen(t, e.sbc.realms["external"].peers, make(chan struct{}))
	peer := mustUDP(t)
	r := newBatchReader(g)
	send("SIP/2.0 180 Ringing\r\n\r\n", "SIP/2.0 200 OK\r\n\r\n")
	time.Sleep(2 * holdAfter)
	buf := make([]byte, 2048)
	_ = g.PacketConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := r.ReadFrom(buf); err != nil || !r.open {
		t.Fatalf("read: %v, batch open %v", err, r.open)
	}
	if _, _, err := g.raw.writeTo([]byte("held"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if g.raw.q.open != 0 || len(g.raw.q.ents) != 0 {
		t.Fatalf("after Close: %d batches open, %d writes held", g.raw.q.open, len(g.raw.q.ents))
	}
	pb := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := peer.ReadFrom(pb); err != nil || string(pb[:n]) != "held" {
		t.Fatalf("held write: %q, %v", pb[:n], err)
	}
}

// TestAfterBatch: a call's set-up queued (deferring, afterBatch) while the reader
// has more of its batch to hand out runs when the read loop asks for the
// read after the batch's last datagram, before that read, in the order
// queued; the last datagram's set-up queues behind the others rather
// than jumping them; with nothing behind and nothing queued, nothing is
// queued; Close runs what is queued.
func TestAfterBatch(t *testing.T) {
	e := newEnv(t, envOpts{})
	u := e.sbc.realms["external"].peers
	g, send := stampedGen(t, u, make(chan struct{}))
	r := newBatchReader(g)
	buf := make([]byte, 2048)
	read := func(want string) {
		t.Helper()
		_ = g.PacketConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := r.ReadFrom(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
	var ran []int
	queue := func(i int) bool {
		if !u.deferring() {
			return false
		}
		u.afterBatch(func() { ran = append(ran, i) })
		return true
	}
	msg := func(i int) string { return fmt.Sprintf("SIP/2.0 180 Ringing\r\nX-N: %d\r\n\r\n", i) }

	send(msg(1), msg(2), msg(3)) // in the receive queue when send returns
	read(msg(1))
	if r.n != 3 {
		t.Fatalf("the first read took %d datagrams, want 3", r.n)
	}
	if !queue(1) {
		t.Fatal("a set-up with two datagrams of its batch behind it was not queued")
	}
	read(msg(2))
	if !queue(2) {
		t.Fatal("second set-up not queued")
	}
	read(msg(3))
	if u.more.Load() {
		t.Fatal("more set for the batch's last datagram")
	}
	if !queue(3) {
		t.Fatal("the last datagram's set-up ran ahead of those queued")
	}
	if len(ran) != 0 {
		t.Fatalf("set-ups ran before the batch was handled: %v", ran)
	}
	send(msg(4))
	read(msg(4))
	if fmt.Sprint(ran) != "[1 2 3]" {
		t.Fatalf("set-ups run %v, want [1 2 3] before the next read", ran)
	}
	if queue(4) {
		t.Fatal("a set-up with nothing behind it and nothing queued was queued")
	}

	send(msg(5), msg(6))
	read(msg(5))
	if !queue(5) {
		t.Fatal("set-up not queued")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ran) != "[1 2 3 5]" || u.more.Load() {
		t.Fatalf("after Close: set-ups run %v (more %v), want [1 2 3 5]", ran, u.more.Load())
	}

	// A read loop without batches (no raw path) runs what is queued
	// before it waits too: a handler of its own may have queued behind
	// another reader's batch.
	u.more.Store(true)
	if !queue(6) {
		t.Fatal("set-up not queued")
	}
	u.more.Store(false)
	send(msg(7))
	_ = g.PacketConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := g.ReadFrom(buf); err != nil || string(buf[:n]) != msg(7) {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if fmt.Sprint(ran) != "[1 2 3 5 6]" {
		t.Fatalf("set-ups run %v, want [1 2 3 5 6] once the loop read", ran)
	}
}

// A reader hands out one address per source it saw lately: the same
// pointer again for the same source (an IPv6 flow label apart), a new one
// for another port, family or address, and the oldest is forgotten past
// four; every address says what the kernel gave.
func TestSourceCache(t *testing.T) {
	v4 := func(ip string, port int) *unix.RawSockaddrAny {
		var name unix.RawSockaddrAny
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&name))
		sa.Family = unix.AF_INET
		sa.Addr = netip.MustParseAddr(ip).As4()
		sa.Port = htons(port)
		return &name
	}
	v6 := func(ip string, port int, flow, scope uint32) *unix.RawSockaddrAny {
		var name unix.RawSockaddrAny
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&name))
		sa.Family = unix.AF_INET6
		sa.Addr = netip.MustParseAddr(ip).As16()
		sa.Port = htons(port)
		sa.Flowinfo, sa.Scope_id = flow, scope
		return &name
	}
	var c srcCache
	get := func(name *unix.RawSockaddrAny, want string) net.Addr {
		t.Helper()
		a, err := c.lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if a.String() != want {
			t.Fatalf("address %s, want %s", a, want)
		}
		return a
	}
	a := get(v4("127.0.0.1", 5060), "127.0.0.1:5060")
	if b := get(v4("127.0.0.1", 5060), "127.0.0.1:5060"); b != a {
		t.Error("the same source got a new address")
	}
	if b := get(v4("127.0.0.1", 5061), "127.0.0.1:5061"); b == a {
		t.Error("another port got the first source's address")
	}
	m := get(v6("::ffff:127.0.0.1", 5060, 0, 0), "127.0.0.1:5060") // net.IP prints a mapped address as IPv4
	if m == a {
		t.Error("an IPv6 source got the IPv4 source's address")
	}
	f := get(v6("2001:db8::1", 5060, 1, 0), "[2001:db8::1]:5060")
	if g := get(v6("2001:db8::1", 5060, 7, 0), "[2001:db8::1]:5060"); g != f {
		t.Error("another flow label got a new address")
	}
	// Four other sources since a: it is forgotten, and made again.
	get(v4("10.0.0.1", 1), "10.0.0.1:1")
	if b := get(v4("127.0.0.1", 5060), "127.0.0.1:5060"); b == a {
		t.Error("a source four others back still cached")
	}
	var bad unix.RawSockaddrAny
	bad.Addr.Family = unix.AF_UNIX
	if _, err := c.lookup(&bad); err != errRawFamily {
		t.Errorf("unknown family: %v, want errRawFamily", err)
	}
}
