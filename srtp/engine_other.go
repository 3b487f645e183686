//go:build !linux

package srtp

// Relay loops need epoll: elsewhere every stream has reader goroutines.
type relayWorker struct{}

func pickWorker() *relayWorker { return nil }

func (*relayWorker) add([]*sock) error { return nil }

func (*relayWorker) remove([]*sock) {}

func relayLoopStats() RelayLoopStats { return RelayLoopStats{} }
