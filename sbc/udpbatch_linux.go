package sbc

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/sys/unix"
)

// Batched reads and writes of the SIP UDP sockets, where a socket has
// datagrams queued.
//
// A reader reads with recvmmsg up to udpBatch datagrams at once: one
// when the socket keeps up (each read returns the one datagram there
// is), several once datagrams queue. While a reader works through a
// batch of more than one whose first datagram waited holdAfter or more
// (the socket is behind), what the SBC sends on that socket (from any
// goroutine) is queued and goes out in one sendmmsg when the batch is
// done: two system calls for what were many, and the receiving peer is
// woken once for several datagrams rather than for each. A datagram
// sent meanwhile waits at most for the rest of its batch to be handled
// (a few datagrams' work, tens of microseconds). A socket that keeps up
// holds nothing: the bursts it reads (a few datagrams a load generator
// or a trunk sent together) would only add the rest of the burst's
// handling to the first one's answer (INVITE→100 at 600 calls/s: p50
// 72–95 µs without holding, 138–159 µs holding every batch).

// udpBatch is the most datagrams one recvmmsg reads.
const udpBatch = 8

// holdAfter is how long the first datagram of a batch must have waited
// in the receive queue for the socket's writes to be held until the
// batch's end: a socket that keeps up (its datagrams read within tens
// of microseconds, the reader's wake-up) reads bursts of a few datagrams
// at once too (a load generator's, a trunk's), and holding the answer to
// the first of them until the rest are handled would only add to its
// latency.
const holdAfter = 500 * time.Microsecond

// recvBatch is one reader's buffers for recvmmsg.
type recvBatch struct {
	hdrs  [udpBatch]mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrAny
	oobs  [udpBatch][stampOOB]byte
	bufs  [udpBatch][]byte
	n     int           // datagrams in the batch
	errno syscall.Errno // of the last recvmmsg
	fn    func(uintptr) bool
	srcs  srcCache
}

// srcCache keeps the last few sources a reader saw as the *net.UDPAddr
// it handed out for them: a socket hears from few peers (a trunk, a
// backend), and a datagram from one of them reuses its address instead
// of allocating one. The addresses are never changed once handed out
// (whoever keeps one keeps a valid value).
type srcCache struct {
	keys  [4]srcKey
	addrs [4]net.Addr
	next  int
}

// srcKey is a source as the kernel gave it: family, port, address (and
// scope for IPv6), as in struct sockaddr_in6.
type srcKey [unix.SizeofSockaddrInet6]byte

// lookup returns the address for name, from the cache or made (and
// cached).
func (c *srcCache) lookup(name *unix.RawSockaddrAny) (net.Addr, error) {
	var k srcKey
	switch name.Addr.Family {
	case unix.AF_INET:
		copy(k[:], (*[unix.SizeofSockaddrInet4]byte)(unsafe.Pointer(name))[:])
	case unix.AF_INET6:
		k = *(*srcKey)(unsafe.Pointer(name))
		// The flow label is not part of the source.
		k[4], k[5], k[6], k[7] = 0, 0, 0, 0
	default:
		return nil, errRawFamily
	}
	for i := range c.keys {
		if c.addrs[i] != nil && c.keys[i] == k {
			return c.addrs[i], nil
		}
	}
	a, err := sourceOf(name)
	if err != nil {
		return nil, err
	}
	c.keys[c.next], c.addrs[c.next] = k, a
	c.next = (c.next + 1) % len(c.keys)
	return a, nil
}

// mmsghdr is struct mmsghdr (the compiler pads it as C does).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func newRecvBatch(size int) *recvBatch {
	rb := &recvBatch{}
	mem := make([]byte, size*udpBatch) // virtual: a slot's pages are touched by what it receives
	for i := range rb.bufs {
		rb.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	rb.fn = rb.recv
	return rb
}

func (rb *recvBatch) recv(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rb.hdrs[0])), udpBatch, 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait on the poller, then again
		}
		rb.n, rb.errno = int(n), e
		return true
	}
}

// read reads up to udpBatch datagrams, waiting on the poller for the
// first; it returns how many.
func (rb *recvBatch) read(r *rawUDP) (int, error) {
	for i := range rb.hdrs {
		rb.iovs[i].Base = &rb.bufs[i][0]
		rb.iovs[i].SetLen(len(rb.bufs[i]))
		h := &rb.hdrs[i]
		h.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&rb.names[i])), Namelen: unix.SizeofSockaddrAny, Iov: &rb.iovs[i], Iovlen: 1}
		if stampOOB > 0 {
			h.hdr.Control = &rb.oobs[i][0]
			h.hdr.SetControllen(stampOOB)
		}
		h.len = 0
	}
	rb.n, rb.errno = 0, 0
	err := r.rc.Read(rb.fn)
	if err == nil && rb.errno != 0 {
		err = os.NewSyscallError("recvmmsg", rb.errno)
	}
	if err != nil {
		return 0, &net.OpError{Op: "read", Net: "udp", Source: r.laddr, Err: err}
	}
	return rb.n, nil
}

// datagram returns the i-th datagram of the batch: its bytes, source and
// receive stamp (errRawFamily for a source of no known family).
func (rb *recvBatch) datagram(i int) ([]byte, net.Addr, time.Time, error) {
	h := &rb.hdrs[i]
	at := parseRxStamp(rb.oobs[i][:h.hdr.Controllen])
	addr, err := rb.srcs.lookup(&rb.names[i])
	return rb.bufs[i][:h.len], addr, at, err
}

// sourceOf is the datagram source in name as a *net.UDPAddr (one
// allocation).
func sourceOf(name *unix.RawSockaddrAny) (net.Addr, error) {
	ua := new(udpAddr)
	switch name.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
		copy(ua.ip[:4], sa.Addr[:])
		ua.a.IP, ua.a.Port = ua.ip[:4], ntohs(sa.Port)
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(name))
		copy(ua.ip[:], sa.Addr[:])
		ua.a.IP, ua.a.Port = ua.ip[:], ntohs(sa.Port)
		if sa.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				ua.a.Zone = ifi.Name
			}
		}
	default:
		return nil, errRawFamily
	}
	return &ua.a, nil
}

// sendQueue holds what the SBC sends on a socket while one of its
// readers works through a batch (open > 0), and while a batch's end
// sends what is held (flushing): the datagrams' bytes one after another
// in buf, each entry its end and destination.
type sendQueue struct {
	mu       sync.Mutex
	open     int
	flushing bool
	buf      []byte
	ents     []queued
	// spare buffers swapped in at a flush, so that queueing goes on
	// while the flush sends without either allocating.
	sbuf  []byte
	sents []queued
	all   []mmsghdr // a flush's headers
	hdrs  []mmsghdr // those still to send
	iovs  []unix.Iovec
	fn    func(uintptr) bool
	sent  int // of the flush in progress
	errno syscall.Errno
	// refused is told of each held datagram the kernel refused (set
	// once, before the socket is read): a direct write's caller gets the
	// error, a held one's is gone by then.
	refused func(dst netip.AddrPort, err error)
}

type queued struct {
	end   int
	sa    unix.RawSockaddrInet6
	salen uint32
}

// add queues b for sa when a batch is open or a flush under way (b is
// copied); it reports whether it did.
func (q *sendQueue) add(b []byte, sa *unix.RawSockaddrInet6, salen uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.open == 0 && !q.flushing {
		return false
	}
	q.buf = append(q.buf, b...)
	q.ents = append(q.ents, queued{end: len(q.buf), sa: *sa, salen: salen})
	return true
}

// begin opens a batch.
func (q *sendQueue) begin() {
	q.mu.Lock()
	q.open++
	q.mu.Unlock()
}

// end closes a batch and sends what is queued, and what is queued while
// it sends, in order; a flush already under way sends it instead. Writes
// go out directly again only once no batch is open and nothing is
// queued, so that nothing queued is overtaken by a later direct write.
// Each end sends all that is held, whether other batches are still open
// or not: readers whose batches overlap one another without end (two
// busy readers) do not hold writes for ever.
func (q *sendQueue) end(r *rawUDP) {
	q.mu.Lock()
	q.open--
	if q.flushing {
		q.mu.Unlock()
		return
	}
	q.flushing = true
	for len(q.ents) > 0 {
		buf, ents := q.buf, q.ents
		q.buf, q.ents = q.sbuf[:0], q.sents[:0]
		q.mu.Unlock()
		r.sendAll(q, buf, ents)
		q.mu.Lock()
		q.sbuf, q.sents = buf[:0], ents[:0]
	}
	q.flushing = false
	q.mu.Unlock()
}

// sendAll sends the queued datagrams with sendmmsg on the companion
// socket (or the listener without one); what the companion's full
// buffer refuses goes through the listener one by one, waiting on the
// poller as a direct write does. A datagram the kernel refuses for
// another reason is dropped and reported (q.refused): the SIP
// transaction's retransmissions cover it as they cover a datagram lost
// on the way.
func (r *rawUDP) sendAll(q *sendQueue, buf []byte, ents []queued) {
	q.all = q.all[:0]
	q.iovs = q.iovs[:0]
	start := 0
	for i := range ents {
		q.iovs = append(q.iovs, unix.Iovec{})
		if n := ents[i].end - start; n > 0 {
			q.iovs[i].Base = &buf[start]
			q.iovs[i].SetLen(n)
		}
		start = ents[i].end
	}
	for i := range ents {
		q.all = append(q.all, mmsghdr{hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&ents[i].sa)), Namelen: ents[i].salen, Iov: &q.iovs[i], Iovlen: 1}})
	}
	if q.fn == nil {
		q.fn = q.sendmmsg
	}
	conn := r.send
	if conn == nil {
		conn = r.rc
	}
	for done := 0; done < len(ents); {
		q.hdrs = q.all[done:]
		q.sent, q.errno = 0, 0
		err := conn.Write(q.fn)
		switch {
		case err != nil:
			return // the socket is closed
		case q.errno == 0 && q.sent > 0:
			done += q.sent
		case q.errno == unix.EAGAIN:
			// The buffer is full: the rest through the listener, one by
			// one, waiting until it can take them.
			for i := done; i < len(ents); i++ {
				from := 0
				if i > 0 {
					from = ents[i-1].end
				}
				if _, err := r.sendOne(buf[from:ents[i].end], &ents[i].sa, ents[i].salen); err != nil {
					q.refuse(&ents[i], err)
				}
			}
			return
		default:
			// The first datagram is refused (sendmmsg reports an error
			// only for the first): drop it, send the rest.
			q.refuse(&ents[done], os.NewSyscallError("sendmmsg", q.errno))
			done++
		}
	}
}

func (q *sendQueue) refuse(e *queued, err error) {
	if q.refused != nil {
		q.refused(sockaddrPort(&e.sa), err)
	}
}

// sockaddrPort is the address in a raw sockaddr (IPv4 or IPv6).
func sockaddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	if sa.Family == unix.AF_INET {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(ntohs(s4.Port)))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(ntohs(sa.Port)))
}

func (q *sendQueue) sendmmsg(fd uintptr) bool {
	flags := uintptr(unix.MSG_DONTWAIT)
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[0])), uintptr(len(q.hdrs)), flags, 0, 0)
		if e != unix.EINTR {
			q.sent, q.errno = int(n), e
			return true
		}
	}
}

// batchReader is one read loop's reader of a raw socket: it reads with
// recvmmsg and hands the datagrams out one by one, with the checks of
// udpGen.ReadFrom; while it holds more than one and the socket is behind
// (behind), the socket's writes are queued (sendQueue) until the loop
// asks for the next read after the last.
//
// Given the transport's read filter (sipgo asks it to take it:
// sip.FilteringPacketReader), it filters the whole batch as soon as it
// is read and sends the 100 Trying of each new INVITE that may have one
// at once (trying.go), in one sendmmsg, before it hands out the first
// datagram.
type batchReader struct {
	g       *udpGen
	rb      *recvBatch
	n, next int
	open    bool // a batch of more than one is open in g.raw.q

	filter sip.TransportReadFilter // nil: sipgo's loop filters
	props  sip.TransportReadProps
	laddr  netip.AddrPort       // the socket's, for the HEP copy of a 100
	pass   [udpBatch][]byte     // each datagram as the filter let it through (nil: dropped)
	addrs  [udpBatch]net.Addr   // each datagram's source
	errs   [udpBatch]error      // each datagram's error (its source's family, the filter's)
	tries  []triedKey           // the INVITEs of this batch answered 100 (tried)
	tbuf   []byte               // their 100s
	tsent  [udpBatch]tryingSend // where each 100 in tbuf goes
}

// tryingSend is one 100 Trying of a batch: its end in tbuf, its
// destination, and the INVITE's source and top Via branch.
type tryingSend struct {
	end    int
	to     netip.AddrPort
	src    netip.AddrPort
	branch []byte // in the datagram
}

func newBatchReader(g *udpGen) *batchReader {
	r := &batchReader{g: g, rb: newRecvBatch(int(sip.TransportBufferReadSize))}
	if ap, ok := addrPortOf(g.LocalAddr()); ok {
		r.laddr = ap
	}
	return r
}

// UseReadFilter is sip.FilteringPacketReader: the reader filters each
// batch itself.
func (r *batchReader) UseReadFilter(f sip.TransportReadFilter, props sip.TransportReadProps) {
	r.filter, r.props = f, props
}

// behind reports whether the batch just read shows the socket behind:
// its first datagram waited holdAfter or more in the receive queue.
// Unstamped, it is taken as behind.
func (r *batchReader) behind() bool {
	h := &r.rb.hdrs[0]
	at := parseRxStamp(r.rb.oobs[0][:h.hdr.Controllen])
	return at.IsZero() || time.Since(at) >= holdAfter
}

// Close ends the reader's batch, if one is open (sipgo's loop closes its
// reader when it ends, whichever way): what the socket held for it goes
// out.
func (r *batchReader) Close() error {
	r.forgetTries()
	r.g.u.more.Store(false)
	r.g.u.runLater()
	if r.open {
		r.open = false
		r.g.raw.q.end(r.g.raw)
	}
	r.n, r.next = 0, 0
	return nil
}

func (r *batchReader) ReadFrom(b []byte) (int, net.Addr, error) {
	g := r.g
	for {
		if r.next < r.n {
			i := r.next
			r.next++
			var data []byte
			var addr net.Addr
			var err error
			if r.filter != nil {
				// prepare admitted and filtered it.
				if data, addr, err = r.pass[i], r.addrs[i], r.errs[i]; data == nil && err == nil {
					continue
				}
			} else {
				var at time.Time
				data, addr, at, err = r.rb.datagram(i)
				if !g.admit(data, addr, at, err) {
					continue
				}
			}
			// Only a reader alone on its socket: readers that read
			// alongside (lagging) take the set-ups of one another's
			// batches.
			g.u.more.Store(r.next < r.n && !g.lagging.Load())
			return copy(b, data), addr, err
		}
		r.forgetTries()
		g.u.more.Store(false)
		g.u.runLater()
		if r.open {
			r.open = false
			g.raw.q.end(g.raw)
		}
		if err := g.mayRead(); err != nil {
			return 0, nil, err
		}
		g.reading.Add(1)
		n, err := r.rb.read(g.raw)
		g.reading.Add(-1)
		if err != nil {
			return 0, nil, err
		}
		r.n, r.next = n, 0
		if r.filter != nil {
			r.prepare()
		}
		if n > 1 && r.behind() {
			r.open = true
			g.raw.q.begin()
		}
	}
}

// onRefused sets what is told of held datagrams the kernel refused.
func (r *rawUDP) onRefused(f func(netip.AddrPort, error)) { r.q.refused = f }

// prepare admits and filters each datagram of the batch just read, as
// sipgo's loop and udpGen.ReadFrom would one by one (a datagram of zeros
// is skipped before the filter, as sipgo skips it), and sends the 100
// Trying of each INVITE that has one at once (trying.go).
func (r *batchReader) prepare() {
	g := r.g
	s := g.u.ep.sbc
	r.tbuf = r.tbuf[:0]
	nt := 0
	for i := 0; i < r.n; i++ {
		r.pass[i], r.errs[i] = nil, nil
		data, addr, at, err := r.rb.datagram(i)
		r.addrs[i] = addr
		if !g.admit(data, addr, at, err) {
			continue
		}
		if err != nil {
			r.errs[i] = err
			continue
		}
		if len(bytes.Trim(data, "\x00")) == 0 {
			continue
		}
		props := r.props
		props.RemoteAddr = addr
		out, ferr := r.filter(props, data)
		if ferr != nil {
			r.errs[i] = ferr
			continue
		}
		if len(out) == 0 {
			continue
		}
		r.pass[i] = out
		src := sockaddrPort((*unix.RawSockaddrInet6)(unsafe.Pointer(&r.rb.names[i])))
		tb, t, ok := s.earlyTrying(g.u.ep, r.tbuf, out, src)
		if !ok {
			continue
		}
		r.tbuf = tb
		r.tsent[nt] = tryingSend{end: len(tb), to: t.to, src: src, branch: t.branch}
		nt++
	}
	if nt == 0 {
		return
	}
	hep := s.hepOut()
	g.raw.q.begin()
	start := 0
	for _, ts := range r.tsent[:nt] {
		b := r.tbuf[start:ts.end]
		start = ts.end
		if err := g.raw.writeToAddrPort(b, ts.to); err != nil {
			s.drop(stageBridge, reasonSendFailed)
			continue // startCall sends it
		}
		r.tries = append(r.tries, g.u.tried.add(ts.src, ts.branch))
		if hep != nil {
			hep.capture(hepProto("udp"), r.laddr, ts.to, b)
		}
	}
	g.raw.q.end(g.raw)
}

// forgetTries removes what is left in the realm's tried set of this
// reader's last batch: INVITEs the pipeline refused before startCall.
func (r *batchReader) forgetTries() {
	if len(r.tries) > 0 {
		r.g.u.tried.forget(r.tries)
		clear(r.tries)
		r.tries = r.tries[:0]
	}
}
