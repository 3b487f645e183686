//go:build linux

package srtp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A relayWorker is one relay loop: a goroutine that owns an epoll
// instance over the sockets of many streams. The epoll descriptor is
// itself registered in the Go runtime's poller (an epoll descriptor is
// readable while it has ready events), so an idle loop parks like any
// goroutine blocked on a socket, and is woken once for all the sockets
// that became ready meanwhile; it then polls its epoll without blocking
// (epoll_pwait, timeout 0, a raw system call) and relays one datagram
// per ready socket per poll (level-triggered: a socket with more queued
// is reported again by the next poll), until a poll finds nothing.
//
// Compared with a reader goroutine per socket, that saves per packet the
// goroutine's park and wake-up, the runtime's epoll wait, and the
// recvfrom that returned EAGAIN before each park; when several sockets
// are ready at one wake-up (Coalesce makes that the rule under load),
// the wake-up itself is shared.
//
// Sockets are added and removed under mu, which the loop holds while it
// polls and handles one batch: when remove returns, the loop neither
// holds nor will receive an event for the removed sockets, so their
// descriptors can be closed.
type relayWorker struct {
	epfd int
	file *os.File // epfd, in the runtime's poller
	rc   syscall.RawConn

	mu     sync.Mutex
	ents   []*loopEntry // by slot (epoll data); nil: free
	free   []int32
	events []unix.EpollEvent
	batch  *batchReader
	sio    *sockIO
	pollFn func(fd uintptr) bool
	// handled is the packets relayed by the last poll (loop goroutine
	// only).
	handled int

	nsocks                  atomic.Int64
	wakeups, polls, packets atomic.Uint64
}

// A loopEntry is a descriptor in a loop's epoll: a stream's socket
// (added and removed with its stream), or a pool's kept socket, which
// stays for its life and is attached to one stream at a time.
type loopEntry struct {
	fd   int
	slot int32
	// k is the stream's socket whose packets these are; nil: a kept
	// socket at rest (what it receives is dropped and counted in idle).
	k        *sock
	idle     *atomic.Uint64
	readErrs int
	disabled bool // taken out after maxReadErrors consecutive errors
}

const (
	pollEvents = 128
	// batchSize is the datagrams read from one socket per poll.
	batchSize = 16
	// sockDisabled marks a sock that the loop took out of its epoll
	// after maxReadErrors consecutive read errors.
	sockDisabled = -2
)

func (e *engine) start() error {
	e.once.Do(func() {
		n := relayOpts.Load().Workers
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		for range n {
			w, err := newRelayWorker()
			if err != nil {
				e.err = err
				return
			}
			e.workers = append(e.workers, w)
		}
		for _, w := range e.workers {
			go w.run()
		}
	})
	return e.err
}

// pickWorker returns the relay loop for a new stream's net.UDPConn
// sockets (the one watching the fewest sockets), or nil if the stream
// must use reader goroutines.
func pickWorker() *relayWorker {
	if relayOpts.Load().PerSocket {
		return nil
	}
	return leastLoaded()
}

// relayLoopStats sums the loops' counters.
func relayLoopStats() RelayLoopStats {
	var st RelayLoopStats
	if theEngine.err != nil {
		return st
	}
	for _, w := range theEngine.workers {
		st.Loops++
		st.Sockets += int(w.nsocks.Load())
		st.Wakeups += w.wakeups.Load()
		st.Polls += w.polls.Load()
		st.Packets += w.packets.Load()
	}
	return st
}

func newRelayWorker() (*relayWorker, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("srtp: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("srtp: epoll nonblock: %w", err)
	}
	f := os.NewFile(uintptr(fd), "srtp-relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	// The loop parks through rc.Read: that needs the runtime's poller to
	// have taken the descriptor. Check it now (a deadline is refused on a
	// file it did not take) rather than spin later.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("srtp: epoll descriptor not pollable: %w", err)
	}
	w := &relayWorker{
		epfd:   fd,
		file:   f,
		rc:     rc,
		events: make([]unix.EpollEvent, pollEvents),
		batch:  newBatchReader(batchSize, readSize+trailer),
		sio:    newSockIO(),
	}
	w.sio.direct = true
	w.pollFn = w.poll
	return w, nil
}

// add registers a stream's sockets; on error none is registered.
func (w *relayWorker) add(socks []*sock) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, k := range socks {
		k.fd = -1
		if k.raw.rc == nil {
			w.removeLocked(socks[:i])
			return fmt.Errorf("srtp: socket without raw conn")
		}
		fd := -1
		_ = k.raw.rc.Control(func(d uintptr) { fd = int(d) })
		e := &loopEntry{fd: fd, k: k}
		if err := w.insertLocked(e); err != nil {
			w.removeLocked(socks[:i])
			return err
		}
		k.fd, k.ent = fd, e
	}
	return nil
}

// insertLocked gives e a slot and adds its descriptor to the epoll.
func (w *relayWorker) insertLocked(e *loopEntry) error {
	var slot int32
	if n := len(w.free); n > 0 {
		slot, w.free = w.free[n-1], w.free[:n-1]
	} else {
		slot = int32(len(w.ents))
		w.ents = append(w.ents, nil)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
		w.free = append(w.free, slot)
		return fmt.Errorf("srtp: epoll_ctl add: %w", err)
	}
	e.slot = slot
	w.ents[slot] = e
	w.nsocks.Add(1)
	return nil
}

// deleteLocked takes e out of the epoll (unless the loop did already).
func (w *relayWorker) deleteLocked(e *loopEntry) {
	if e.disabled || w.ents[e.slot] != e {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
	w.ents[e.slot] = nil
	w.free = append(w.free, e.slot)
	w.nsocks.Add(-1)
	e.disabled = true
}

// remove takes a stream's sockets out of the loop. When it returns, the
// loop is not handling any of them and will not again.
func (w *relayWorker) remove(socks []*sock) {
	w.mu.Lock()
	w.removeLocked(socks)
	w.mu.Unlock()
}

func (w *relayWorker) removeLocked(socks []*sock) {
	for _, k := range socks {
		if k.ent == nil {
			continue
		}
		w.deleteLocked(k.ent)
		k.ent = nil
		k.fd = -1
	}
}

// A poolSock is a pool's relay socket made with raw system calls: bound
// once, in one relay loop's epoll for its whole life, not in the Go
// runtime's poller, attached to one stream's socket at a time.
type poolSock struct {
	fd    int
	local netip.AddrPort
	w     *relayWorker
	ent   *loopEntry
}

// newPoolSock binds a non-blocking UDP socket to local and adds it to a
// relay loop (near's, else the one with the fewest sockets), at rest.
func newPoolSock(local netip.AddrPort, near *poolSock, idle *atomic.Uint64) (*poolSock, error) {
	var w *relayWorker
	if near != nil {
		w = near.w
	} else if w = leastLoaded(); w == nil {
		return nil, fmt.Errorf("srtp: no relay loop: %v", theEngine.err)
	}
	var family int
	var sa unix.Sockaddr
	if a := local.Addr(); a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(local.Port()), Addr: a.As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(local.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if family == unix.AF_INET6 {
		// As the net package does for a specific address: IPv6 only.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			_ = unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(local), Err: os.NewSyscallError("bind", err)}
	}
	ps := &poolSock{fd: fd, local: local, w: w, ent: &loopEntry{fd: fd, idle: idle}}
	w.mu.Lock()
	err = w.insertLocked(ps.ent)
	w.mu.Unlock()
	if err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return ps, nil
}

// attachKept hands pool sockets to their streams' socks (those of socks
// with a pool socket), one relay loop at a time. Under the loop's lock
// (the loop reads none of its sockets meanwhile), one non-blocking
// epoll_wait tells which of its sockets have datagrams queued: the epoll
// is level-triggered, so a socket with a queue is on its ready list. Those
// of ours are drained (counted as idle drops), so that nothing sent
// before the stream had the port reaches it; then the loop delivers to
// the socks. One system call per loop, not one per socket; a full event
// list (a loop with more ready sockets than it returns) drains them all.
func attachKept(socks []*sock) {
	var done []*relayWorker
	for i, k := range socks {
		if k.ps == nil || slices.Contains(done, k.ps.w) {
			continue
		}
		w := k.ps.w
		done = append(done, w)
		w.mu.Lock()
		if attachHook != nil {
			for _, o := range socks[i:] {
				if o.ps != nil && o.ps.w == w {
					attachHook(o.ps.fd)
				}
			}
		}
		ready, full := w.readyLocked()
		for _, o := range socks[i:] {
			if o.ps == nil || o.ps.w != w {
				continue
			}
			e := o.ps.ent
			if !e.disabled && (full || slices.ContainsFunc(ready, func(ev unix.EpollEvent) bool { return ev.Fd == e.slot })) {
				w.drainLocked(e)
			}
			e.k, e.readErrs = o, 0
		}
		w.mu.Unlock()
	}
}

// readyLocked is one non-blocking epoll_wait: the sockets with something
// to read now, and whether the list may have been cut short.
func (w *relayWorker) readyLocked() ([]unix.EpollEvent, bool) {
	for {
		r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return nil, true // unknown: drain
		}
		return w.events[:r], int(r) == len(w.events)
	}
}

// drainLocked reads and drops what is queued on a socket at rest.
func (w *relayWorker) drainLocked(e *loopEntry) {
	for range maxDrain {
		m, errno := w.batch.read(e.fd)
		if errno != 0 || m == 0 {
			return
		}
		e.idle.Add(uint64(m))
		if m < len(w.batch.msgs) {
			return
		}
	}
}

// attachHook, in tests, runs in attachKept before the drain, the loop
// held off: what it sends to the socket is queued when the drain begins.
var attachHook func(fd int)

// detach puts the socket at rest. When it returns, the loop is not
// handling a packet of the stream's on it and will not again.
func (ps *poolSock) detach() {
	ps.w.mu.Lock()
	ps.ent.k = nil
	ps.w.mu.Unlock()
}

// broken reports a socket the relay loop gave up on (read errors): it is
// closed at release rather than kept.
func (ps *poolSock) broken() bool {
	if ps == nil {
		return false
	}
	ps.w.mu.Lock()
	defer ps.w.mu.Unlock()
	return ps.ent.disabled
}

// close takes the socket out of its loop and closes it.
func (ps *poolSock) close() {
	ps.w.mu.Lock()
	ps.w.deleteLocked(ps.ent)
	ps.ent.k = nil
	ps.w.mu.Unlock()
	_ = unix.Close(ps.fd)
}

// maxDrain bounds the batches attach reads from a socket's queue (a
// default receive buffer holds a few hundred small datagrams).
const maxDrain = 64

// leastLoaded starts the relay loops if need be and returns the one
// watching the fewest sockets, nil if there are none.
func leastLoaded() *relayWorker {
	if theEngine.start() != nil || len(theEngine.workers) == 0 {
		return nil
	}
	best := theEngine.workers[0]
	for _, w := range theEngine.workers[1:] {
		if w.nsocks.Load() < best.nsocks.Load() {
			best = w
		}
	}
	return best
}

// defaultSockMode is how a new pool makes its sockets: kept raw sockets
// when relay loops run streams, else net.UDPConns (RelayOptions.PerSocket).
func defaultSockMode() sockMode {
	if relayOpts.Load().PerSocket || leastLoaded() == nil {
		return modeNet
	}
	return modeKeep
}

func (w *relayWorker) run() {
	for {
		w.handled = 0
		if err := w.rc.Read(w.pollFn); err != nil {
			return // the descriptor is never closed; nothing to recover
		}
		if o := relayOpts.Load(); o.Coalesce > 0 && w.handled >= o.CoalesceMin {
			time.Sleep(o.Coalesce)
			w.wakeups.Add(1)
		}
	}
}

// poll is one non-blocking epoll wait and the batch it returns, run in
// the epoll descriptor's RawConn.Read: false (nothing ready) parks the
// loop in the runtime's poller until the descriptor is readable.
func (w *relayWorker) poll(fd uintptr) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls.Add(1)
	var n int
	for {
		r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			n = 0
		} else {
			n = int(r)
		}
		break
	}
	if n == 0 {
		w.wakeups.Add(1) // counted when it parks; the wake-up follows
		return false
	}
	now := time.Now().UnixNano()
	handled := 0
	for i := range n {
		slot := w.events[i].Fd
		if slot < 0 || int(slot) >= len(w.ents) {
			continue
		}
		e := w.ents[slot]
		if e == nil {
			continue
		}
		m, errno := w.batch.read(e.fd)
		k := e.k
		if k == nil {
			// A kept socket at rest: drop what a call that ended (or a
			// scan) sent it.
			if errno == 0 {
				e.idle.Add(uint64(m))
				continue
			}
		} else if k.stream.closed.Load() {
			// Closing (its sockets leave the loop in a moment): drain and
			// drop, or the level-triggered epoll would spin on them.
			continue
		}
		switch errno {
		case 0:
			e.readErrs = 0
			handled += m
			for j := range m {
				size, src := w.batch.datagram(j)
				k.stream.handle(k, w.sio, w.batch.bufs[j], size, src, now)
			}
		case syscall.EAGAIN:
		default:
			if k != nil {
				k.leg.c.readErrors.Add(1)
			}
			if e.readErrs++; e.readErrs >= maxReadErrors {
				// A broken socket must not spin the loop: stop reading
				// it, as a reader goroutine would end.
				w.deleteLocked(e)
				if k != nil && k.ent == e {
					k.fd = sockDisabled
				}
			}
		}
	}
	w.packets.Add(uint64(handled))
	w.handled = handled
	return true
}
