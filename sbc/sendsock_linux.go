package sbc

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The SIP UDP sockets send through a companion socket.
//
// Go's poller registers every socket it owns for EPOLLIN and EPOLLOUT,
// edge-triggered. Each UDP send frees its buffer (at once on loopback, at
// transmit completion on a NIC), and each free makes the socket writable
// again: the poller readies it and, when a thread is parked in
// epoll_wait (the SBC between two messages), wakes that thread, which
// finds nothing to run and parks again. Nothing ever waits for a SIP UDP
// socket to be writable (a send that finds the buffer full is retried
// through the poller, below), so those wake-ups are pure cost: at 500
// calls/s (under strace) a third of the epoll_pwait calls, 1,198 of
// 3,423 in 2 s, returned only EPOLLOUT.
//
// The companion is bound to the listener's address in the same
// SO_REUSEPORT group and is not in Go's poller: its frees wake nobody,
// and what it sends leaves from the listener's address. A one-instruction
// classic BPF program on the group hands every datagram to the group's
// first socket, the listener; the companion reads nothing. A send
// that finds the companion's buffer full goes through the listener as
// before (rawUDP.writeTo).

// sendSock is a listener's companion send socket. It is an *os.File on
// a blocking descriptor, so that Go does not put it in the poller, and
// sends are made with MSG_DONTWAIT through its RawConn, which keeps the
// descriptor from being closed (and its number reused) under a send.
type sendSock struct {
	f  *os.File
	rc syscall.RawConn
}

// reusePort puts a UDP listener's socket (before its bind) in an
// SO_REUSEPORT group, so that its companion can join it. listenUDP makes
// sure first that nothing else holds the address.
func reusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// toFirstSocket is the group's program: BPF_RET|BPF_K 0, every datagram
// to the socket at index 0 (the first that joined: the listener).
var toFirstSocket = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// openSendSock opens the companion of a UDP listener put in an
// SO_REUSEPORT group by reusePort. On an error nothing is left open and
// the listener sends itself.
func openSendSock(pc net.PacketConn) (*sendSock, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("not a UDP socket")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		sa             unix.Sockaddr
		sndbuf, v6only int
		oerr           error
	)
	if err := rc.Control(func(fd uintptr) {
		if sa, oerr = unix.Getsockname(int(fd)); oerr != nil {
			return
		}
		if sndbuf, oerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF); oerr != nil {
			return
		}
		if _, ok := sa.(*unix.SockaddrInet6); ok {
			if v6only, oerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); oerr != nil {
				return
			}
		}
		// The group's program, set through the listener: in force
		// before the companion joins, so no datagram is handed to it.
		prog := unix.SockFprog{Len: uint16(len(toFirstSocket)), Filter: &toFirstSocket[0]}
		if err := unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
			oerr = fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", err)
		}
	}); err != nil {
		return nil, err
	}
	if oerr != nil {
		return nil, oerr
	}
	dom := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		dom = unix.AF_INET6
	}
	fd, err := unix.Socket(dom, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (*sendSock, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	// The kernel reports twice what was set: half of it gives the same.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf/2); err != nil {
		return fail("SO_SNDBUF", err)
	}
	if dom == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	// It reads nothing (the program hands every datagram to the
	// listener): the smallest receive buffer.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
		return fail("SO_RCVBUF", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), "udp-send")
	src, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sendSock{f: f, rc: src}, nil
}

// conn is the companion's RawConn, nil for none.
func (s *sendSock) conn() syscall.RawConn {
	if s == nil {
		return nil
	}
	return s.rc
}

func (s *sendSock) close() {
	if s != nil {
		s.f.Close()
	}
}
