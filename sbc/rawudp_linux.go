package sbc

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reads and writes of the SIP UDP sockets by raw system calls.
//
// Go makes a system call through entersyscall/exitsyscall so that a call
// that blocks can hand its P to another thread. The runtime's monitor
// thread (sysmon) sleeps while every P is idle, and the first system
// call after that wakes it; woken, it polls every 20 µs for at least a
// millisecond. A SIP socket whose traffic comes in bursts a few hundred
// microseconds apart (each call's messages) woke it on almost every
// datagram: sysmon's sleeps and wake-ups were 13–15 % of the SBC's CPU
// at 1,000 calls/s (BENCHMARKS.md, "raw UDP system calls"). The sockets
// are non-blocking (Go's poller owns them), so recvmmsg and sendto return
// at once: made raw (no entersyscall), inside RawConn.Read/Write, which
// wait on the poller on EAGAIN exactly as the net package does, they
// never wake sysmon. What a call costs inside the kernel is the same.

// rawUDP does one socket's reads and writes.
type rawUDP struct {
	send  syscall.RawConn // the companion socket that sends (sendsock_linux.go); nil: none
	rc    syscall.RawConn
	laddr net.Addr
	v6    bool // an AF_INET6 socket: IPv4 peers are sent to as ::ffff:a.b.c.d
	ops   sync.Pool
	q     sendQueue // writes held while a reader works through a batch (udpbatch_linux.go)
}

// rawOp holds what one write passes to the kernel: the callbacks handed
// to RawConn are bound once (no allocation per datagram), and the
// destination lives here rather than on a stack that the call would make
// escape. Reads go through recvBatch (udpbatch_linux.go).
type rawOp struct {
	sa      unix.RawSockaddrInet6 // the destination (or an Inet4 in its first bytes)
	salen   uint32
	buf     []byte
	n       int
	errno   syscall.Errno
	writeFn func(uintptr) bool
	sendFn  func(uintptr) bool // the companion's send (sendDontWait)
}

// newRawUDP returns the raw path of pc, or nil when pc is no UDP socket
// of a family it knows; it sends through send when that is not nil.
func newRawUDP(pc net.PacketConn, send *sendSock) *rawUDP {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil || serr != nil {
		return nil
	}
	r := &rawUDP{rc: rc, laddr: uc.LocalAddr(), send: send.conn()}
	switch sa.(type) {
	case *unix.SockaddrInet4:
	case *unix.SockaddrInet6:
		r.v6 = true
	default:
		return nil
	}
	r.ops.New = func() any {
		op := &rawOp{}
		op.writeFn, op.sendFn = op.write, op.sendDontWait
		return op
	}
	return r
}

func (op *rawOp) write(fd uintptr) bool {
	e := op.sendto(fd, 0)
	if e == unix.EAGAIN {
		return false // the send buffer is full: wait until writable
	}
	op.errno = e
	return true
}

// sendDontWait sends on the companion's blocking socket without blocking
// (MSG_DONTWAIT): EAGAIN is left in op.errno for the caller, which then
// sends through the listener.
func (op *rawOp) sendDontWait(fd uintptr) bool {
	op.errno = op.sendto(fd, unix.MSG_DONTWAIT)
	return true
}

// sendto sends op.buf to op.sa on fd, again on EINTR; it sets op.n and
// returns the errno (0: sent).
func (op *rawOp) sendto(fd uintptr, flags int) syscall.Errno {
	var p unsafe.Pointer
	if len(op.buf) > 0 {
		p = unsafe.Pointer(&op.buf[0])
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(op.buf)), uintptr(flags),
			uintptr(unsafe.Pointer(&op.sa)), uintptr(op.salen))
		if e != unix.EINTR {
			op.n = int(n)
			return e
		}
	}
}

// udpAddr is a *net.UDPAddr and its address bytes in one allocation.
type udpAddr struct {
	a  net.UDPAddr
	ip [16]byte
}

// writeTo sends b to addr; ok false when addr is of no kind it sends to
// (the caller sends through the net package instead). While a reader
// works through a batch, b is queued instead (udpbatch_linux.go).
func (r *rawUDP) writeTo(b []byte, addr net.Addr) (n int, ok bool, err error) {
	ua, isUDP := addr.(*net.UDPAddr)
	if !isUDP {
		return 0, false, nil
	}
	sa, salen, ok := r.sockaddr(ua.AddrPort())
	if !ok {
		return 0, false, nil
	}
	n, err = r.sendTo(b, &sa, salen, addr)
	return n, true, err
}

// writeToAddrPort sends b to ap as writeTo does.
func (r *rawUDP) writeToAddrPort(b []byte, ap netip.AddrPort) error {
	sa, salen, ok := r.sockaddr(ap)
	if !ok {
		return &net.OpError{Op: "write", Net: "udp", Source: r.laddr, Addr: net.UDPAddrFromAddrPort(ap), Err: errRawFamily}
	}
	_, err := r.sendTo(b, &sa, salen, nil)
	return err
}

// sockaddr is ap as the socket sends to it: IPv4 on an IPv4 socket,
// IPv6 (IPv4-mapped for an IPv4 address) on an IPv6 one; ok false for
// an address with a zone, an invalid one, or IPv6 on an IPv4 socket.
func (r *rawUDP) sockaddr(ap netip.AddrPort) (sa unix.RawSockaddrInet6, salen uint32, ok bool) {
	a := ap.Addr()
	switch {
	case !a.IsValid() || a.Zone() != "":
		return sa, 0, false
	case a.Unmap().Is4() && !r.v6:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(int(ap.Port())), Addr: a.Unmap().As4()}
		return sa, unix.SizeofSockaddrInet4, true
	case r.v6:
		sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(int(ap.Port())), Addr: a.As16()}
		return sa, unix.SizeofSockaddrInet6, true
	}
	return sa, 0, false
}

// sendTo queues b for sa while a batch is open, or sends it.
func (r *rawUDP) sendTo(b []byte, sa *unix.RawSockaddrInet6, salen uint32, addr net.Addr) (int, error) {
	if r.q.add(b, sa, salen) {
		return len(b), nil
	}
	n, err := r.sendOne(b, sa, salen)
	if err != nil {
		if addr == nil {
			addr = net.UDPAddrFromAddrPort(sockaddrPort(sa))
		}
		return 0, &net.OpError{Op: "write", Net: "udp", Source: r.laddr, Addr: addr, Err: err}
	}
	return n, nil
}

// sendOne sends b to sa through the companion, or through the listener
// when there is none or its buffer is full, waiting on the poller if the
// listener's is full too.
func (r *rawUDP) sendOne(b []byte, sa *unix.RawSockaddrInet6, salen uint32) (int, error) {
	op := r.ops.Get().(*rawOp)
	defer r.ops.Put(op)
	op.sa, op.salen = *sa, salen
	op.buf, op.n, op.errno = b, 0, 0
	var err error
	if r.send != nil {
		err = r.send.Write(op.sendFn)
	}
	if r.send == nil || err == nil && op.errno == unix.EAGAIN {
		// No companion, or its buffer is full: through the listener,
		// waiting on the poller if that one's is full too.
		op.n, op.errno = 0, 0
		err = r.rc.Write(op.writeFn)
	}
	op.buf = nil
	if err == nil && op.errno != 0 {
		err = os.NewSyscallError("sendto", op.errno)
	}
	return op.n, err
}

// htons and ntohs convert a port to and from network byte order as the
// raw sockaddr structures hold it.
func htons(p int) uint16 {
	var b [2]byte
	b[0], b[1] = byte(p>>8), byte(p)
	return *(*uint16)(unsafe.Pointer(&b))
}

func ntohs(p uint16) int {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return int(b[0])<<8 | int(b[1])
}
