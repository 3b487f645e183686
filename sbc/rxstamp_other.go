//go:build !linux

package sbc

import (
	"net"
	"time"
)

const stampOOB = 0

// enableRxStamps: receive timestamps are Linux's here; elsewhere the
// queue delay is not measured (limits.queue_delay has no effect).
func enableRxStamps(net.PacketConn) bool { return false }

func readStamped(uc *net.UDPConn, b, _ []byte) (int, net.Addr, time.Time, error) {
	n, addr, err := uc.ReadFrom(b)
	return n, addr, time.Time{}, err
}
