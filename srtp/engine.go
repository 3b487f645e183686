package srtp

import (
	"sync"
	"sync/atomic"
	"time"
)

// RelayOptions tunes how streams read their sockets. The zero value is
// the default: on Linux, relay loops (GOMAXPROCS of them) that each wait
// on an epoll instance of their own over the sockets of many streams, no
// coalescing; elsewhere, a reader goroutine per socket.
type RelayOptions struct {
	// Workers is the number of relay loops; 0 means GOMAXPROCS when the
	// first stream starts. It takes effect only before the first stream
	// uses the loops (they live for the process).
	Workers int
	// Coalesce, when positive, lets a loop that relayed at least
	// CoalesceMin packets in one wake-up wait that long before it polls
	// its sockets again, so that the next wake-up finds several sockets
	// ready: CPU per packet falls (one wake-up for many packets), and
	// every packet may wait up to Coalesce more. A poll that finds
	// nothing returns the loop to waiting for the first packet. Keep it
	// well under a packetisation interval (≤ 1 ms for 20-ms audio).
	Coalesce time.Duration
	// CoalesceMin is the packets a wake-up must relay for the loop to
	// coalesce (default 2): at low rates the loop stays event-driven and
	// adds no latency.
	CoalesceMin int
	// PerSocket selects the reader goroutine per socket even where relay
	// loops are available (for comparisons).
	PerSocket bool
}

var relayOpts atomic.Pointer[RelayOptions]

func init() { relayOpts.Store(&RelayOptions{}) }

// SetRelayOptions sets the options for streams created from now on
// (Coalesce and CoalesceMin apply at once to running loops as well).
func SetRelayOptions(o RelayOptions) {
	if o.CoalesceMin <= 0 {
		o.CoalesceMin = 2
	}
	relayOpts.Store(&o)
}

// CurrentRelayOptions returns what SetRelayOptions last set.
func CurrentRelayOptions() RelayOptions { return *relayOpts.Load() }

// RelayLoopStats are the relay loops' counters, summed.
type RelayLoopStats struct {
	// Loops is the number of relay loops running (0: per-socket readers
	// only, or no stream yet).
	Loops int
	// Sockets is the number of sockets the loops watch.
	Sockets int
	// Wakeups counts the times a loop was woken (by a packet, or after
	// coalescing); Polls the epoll waits it made; Packets the datagrams
	// it read. Packets/Wakeups is the batching achieved.
	Wakeups, Polls, Packets uint64
}

// engine is the set of relay loops.
type engine struct {
	once    sync.Once
	workers []*relayWorker
	err     error
}

var theEngine engine

// LoopStats returns the relay loops' counters (for metrics and the
// benchmark harness).
func LoopStats() RelayLoopStats { return relayLoopStats() }
