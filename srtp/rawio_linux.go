//go:build linux

package srtp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
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
			return e != syscall.EAGAIN
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

func (io *sockIO) from() netip.AddrPort {
	switch io.rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&io.rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port(sa.Port))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&io.rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(sa.Port))
	}
	return netip.AddrPort{}
}

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
	if k.raw.rc == nil || (!k.raw.v6 && !a.Unmap().Is4()) {
		_, err := k.conn.WriteToUDPAddrPort(pkt, dst)
		return err
	}
	io.wv6 = k.raw.v6
	if io.wv6 {
		io.wsa6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: htons(dst.Port()), Addr: a.As16()}
	} else {
		io.wsa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: htons(dst.Port()), Addr: a.Unmap().As4()}
	}
	io.wpkt = pkt
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
