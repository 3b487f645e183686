//go:build !linux

package srtp

import (
	"errors"
	"net/netip"
	"sync/atomic"
)

// Relay loops need epoll: elsewhere every stream has reader goroutines.
type relayWorker struct{}

func pickWorker() *relayWorker { return nil }

func (*relayWorker) add([]*sock) error { return nil }

func (*relayWorker) remove([]*sock) {}

func relayLoopStats() RelayLoopStats { return RelayLoopStats{} }

// No raw sockets either: pools make net.UDPConns (modeNet).
type loopEntry struct{}

type poolSock struct{ fd int }

func defaultSockMode() sockMode { return modeNet }

func newPoolSock(netip.AddrPort, *poolSock, *atomic.Uint64) (*poolSock, error) {
	return nil, errors.ErrUnsupported
}

func (*poolSock) attach(*sock) {}
func (*poolSock) detach()      {}
func (*poolSock) broken() bool { return false }
func (*poolSock) close()       {}

func attachKept([]*sock) {}
