package sbc

import (
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Receive timestamps of UDP datagrams (SO_TIMESTAMPNS): the kernel stamps
// each datagram when it is queued on the socket, and the read gets the
// stamp as a control message. Against the clock at the read it gives the
// time the datagram waited in the socket's receive queue: the SBC's own
// backlog, which grows only when it reads slower than it is sent to.

// stampOOB is the control buffer a stamped read needs (one timespec).
const stampOOB = 64

// enableRxStamps asks the kernel to stamp pc's datagrams; false when pc
// is no UDP socket or the option is refused.
func enableRxStamps(pc net.PacketConn) bool {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return false
	}
	return true
}

// parseRxStamp finds SCM_TIMESTAMPNS in control messages, without
// allocating.
func parseRxStamp(oob []byte) time.Time {
	const hdr = unix.SizeofCmsghdr
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return time.Time{}
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l-hdr >= int(unsafe.Sizeof(unix.Timespec{})) {
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), oob[hdr:])
			return time.Unix(int64(ts.Sec), int64(ts.Nsec))
		}
		al := (l + unix.SizeofPtr - 1) &^ (unix.SizeofPtr - 1)
		if al >= len(oob) {
			return time.Time{}
		}
		oob = oob[al:]
	}
	return time.Time{}
}
