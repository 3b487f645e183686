//go:build !linux

package srtp

import (
	"errors"
	"net"
	"net/netip"
)

// sockIO reads and writes through the net package (see the Linux
// version for why Linux does otherwise).
type sockIO struct{}

type rawConn struct{}

func newRawConn(*net.UDPConn) rawConn { return rawConn{} }

func newSockIO() *sockIO { return &sockIO{} }

func (*sockIO) read(k *sock, b []byte) (int, netip.AddrPort, error) {
	return k.conn.ReadFromUDPAddrPort(b)
}

func (*sockIO) write(k *sock, pkt []byte, dst netip.AddrPort) error {
	_, err := k.conn.WriteToUDPAddrPort(pkt, dst)
	return err
}

func rawFor(netip.AddrPort) rawConn { return rawConn{} }

// sendTo is never called: other systems have no raw sockets (modeNet).
func sendTo(int, bool, []byte, netip.AddrPort) error { return errors.ErrUnsupported }
