//go:build linux

package srtp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockIO is a reader goroutine's way to read its socket and write to the
// other leg's sockets with raw recvfrom/sendto system calls, run inside
// the sockets' syscall.RawConn: the net package still owns the file
// descriptors (a concurrent Close is safe, and a socket with nothing to
// read parks the goroutine in the runtime's poller as before), but the
// calls themselves skip the runtime's entersyscall/exitsyscall. Those
// wake the runtime's monitor thread (sysmon) whenever every P was idle,
// which at 50 packets/s per socket is nearly every packet: profiled, that
// monitor and its wake-ups were a fifth of the relay's CPU. The sockets
// are non-blocking, so a raw call never blocks the thread.
//
// Each reader goroutine has its own sockIO; the closures are made once
// (no allocation per packet).
type sockIO struct {
	// read side: the goroutine's own socket.
	rbuf   []byte
	rn     int
	rsa    syscall.RawSockaddrAny
	rerrno syscall.Errno
	readFn func(fd uintptr) bool
	// write side: whichever socket the packet leaves from.
	wpkt    []byte
	wsa4    syscall.RawSockaddrInet4
	wsa6    syscall.RawSockaddrInet6
	wv6     bool
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
	// direct: a relay loop's sockIO, whose sockets' descriptors stay open
	// while it uses them (Stream.Close takes them out of the loop first),
	// so it calls recvfrom/sendto on them without the RawConn.
	direct bool
}

// rawConn is what a sock keeps for sockIO: its RawConn and family.
type rawConn struct {
	rc syscall.RawConn
	v6 bool
}

func newRawConn(c *net.UDPConn) rawConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return rawConn{}
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	return rawConn{rc: rc, v6: la != nil && la.IP.To4() == nil}
}

// rawFor is what sockIO needs of a raw socket bound to local.
func rawFor(local netip.AddrPort) rawConn { return rawConn{v6: local.Addr().Is6()} }

// sendTo sends b from a raw socket (not on the hot path: the handlers'
// writes).
func sendTo(fd int, v6 bool, b []byte, dst netip.AddrPort) error {
	var sa unix.Sockaddr
	switch a := dst.Addr(); {
	case v6:
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: a.As16()}
	case a.Unmap().Is4():
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: a.Unmap().As4()}
	default:
		return &net.OpError{Op: "write", Net: "udp", Err: syscall.EAFNOSUPPORT}
	}
	if err := unix.Sendto(fd, b, 0, sa); err != nil {
		return &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendto", err)}
	}
	return nil
}

func newSockIO() *sockIO {
	io := &sockIO{}
	io.readFn = func(fd uintptr) bool {
		for {
			l := uint32(unsafe.Sizeof(io.rsa))
			n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.rbuf))), uintptr(len(io.rbuf)),
				0, uintptr(unsafe.Pointer(&io.rsa)), uintptr(unsafe.Pointer(&l)))
			if e == syscall.EINTR {
				continue
			}
			io.rn, io.rerrno = int(n), e
			return e != syscall.EAGAIN
		}
	}
	io.writeFn = func(fd uintptr) bool {
		sa, l := unsafe.Pointer(&io.wsa4), unsafe.Sizeof(io.wsa4)
		if io.wv6 {
			sa, l = unsafe.Pointer(&io.wsa6), unsafe.Sizeof(io.wsa6)
		}
		for {
			_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.wpkt))), uintptr(len(io.wpkt)),
				0, uintptr(sa), l)
			if e == syscall.EINTR {
				continue
			}
			io.werrno = e
			return e != syscall.EAGAIN || io.direct
		}
	}
	return io
}

// read reads one datagram from k into b.
func (io *sockIO) read(k *sock, b []byte) (int, netip.AddrPort, error) {
	if k.raw.rc == nil {
		return k.conn.ReadFromUDPAddrPort(b)
	}
	io.rbuf = b
	err := k.raw.rc.Read(io.readFn)
	io.rbuf = nil
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if io.rerrno != 0 {
		return 0, netip.AddrPort{}, io.rerrno
	}
	return io.rn, io.from(), nil
}

func (io *sockIO) from() netip.AddrPort { return sockaddrAddrPort(&io.rsa) }

// port converts a sockaddr's port (network byte order in memory) to a
// number, and back with htons.
func port(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// write sends pkt from k to dst.
func (io *sockIO) write(k *sock, pkt []byte, dst netip.AddrPort) error {
	a := dst.Addr()
	if k.conn != nil && (k.raw.rc == nil || (!k.raw.v6 && !a.Unmap().Is4())) {
		_, err := k.conn.WriteToUDPAddrPort(pkt, dst)
		return err
	}
	if !k.raw.v6 && !a.Unmap().Is4() {
		return syscall.EAFNOSUPPORT // an IPv6 peer for an IPv4 relay socket
	}
	io.wv6 = k.raw.v6
	if io.wv6 {
		io.wsa6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: htons(dst.Port()), Addr: a.As16()}
	} else {
		io.wsa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: htons(dst.Port()), Addr: a.Unmap().As4()}
	}
	io.wpkt = pkt
	if k.conn == nil || (io.direct && k.fd >= 0) {
		// Non-blocking socket: a full send buffer is a drop (EAGAIN), not
		// a wait that would stall the loop's other streams.
		io.writeFn(uintptr(k.fd))
		io.wpkt = nil
		if io.werrno != 0 {
			return io.werrno
		}
		return nil
	}
	err := k.raw.rc.Write(io.writeFn)
	io.wpkt = nil
	if err != nil {
		return err
	}
	if io.werrno != 0 {
		return io.werrno
	}
	return nil
}

// mmsghdr is struct mmsghdr (x/sys/unix has the msghdr, not this).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// batchReader reads up to len(bufs) datagrams queued on a socket with one
// recvmmsg: a relay loop drains a busy socket (a BUNDLE socket, a burst)
// in one system call per poll instead of one per datagram, and a socket
// with one datagram costs what a recvfrom would. Its buffers, headers and
// addresses are allocated once.
type batchReader struct {
	bufs [][]byte
	iov  []unix.Iovec
	msgs []mmsghdr
	sa   []syscall.RawSockaddrAny
}

func newBatchReader(n, size int) *batchReader {
	r := &batchReader{bufs: make([][]byte, n), iov: make([]unix.Iovec, n), msgs: make([]mmsghdr, n), sa: make([]syscall.RawSockaddrAny, n)}
	for i := range n {
		r.bufs[i] = make([]byte, size)
		r.iov[i].Base = &r.bufs[i][0]
		r.iov[i].SetLen(readSize)
		r.msgs[i].hdr.Iov = &r.iov[i]
		r.msgs[i].hdr.SetIovlen(1)
		r.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.sa[i]))
	}
	return r
}

// read fills the batch from a non-blocking descriptor: the number of
// datagrams, or an errno (EAGAIN: none queued).
func (r *batchReader) read(fd int) (int, syscall.Errno) {
	for i := range r.msgs {
		r.msgs[i].hdr.Namelen = uint32(unsafe.Sizeof(r.sa[i]))
		r.msgs[i].hdr.Flags = 0
		r.msgs[i].n = 0
	}
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), 0
	}
}

// datagram returns the i-th datagram's length and source.
func (r *batchReader) datagram(i int) (int, netip.AddrPort) {
	return int(r.msgs[i].n), sockaddrAddrPort(&r.sa[i])
}

func sockaddrAddrPort(rsa *syscall.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port(sa.Port))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(sa.Port))
	}
	return netip.AddrPort{}
}
