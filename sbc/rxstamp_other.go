//go:build !linux

package sbc

import (
	"net"
	"net/netip"
)

const stampOOB = 0

// enableRxStamps: receive timestamps are Linux's here; elsewhere the
// queue delay is not measured (limits.queue_delay has no effect).
func enableRxStamps(net.PacketConn) bool { return false }

// rawUDP: raw system calls for the SIP UDP sockets are Linux's here
// (rawudp_linux.go); elsewhere the net package reads and writes.
type rawUDP struct{}

func newRawUDP(net.PacketConn, *sendSock) *rawUDP { return nil }

// sendSock: the companion send socket is Linux's (sendsock_linux.go).
type sendSock struct{}

func reusePort(uintptr) error { return nil }

func openSendSock(net.PacketConn) (*sendSock, error) { return nil, nil }

func (*sendSock) close() {}

func (*rawUDP) writeTo([]byte, net.Addr) (int, bool, error) { return 0, false, nil }

// batchReader: reads in batches are Linux's (udpbatch_linux.go);
// PacketReader never asks for one elsewhere, having no raw socket.
type batchReader = udpGen

func newBatchReader(g *udpGen) *batchReader { return g }

func (*rawUDP) onRefused(func(netip.AddrPort, error)) {}
