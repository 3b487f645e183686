//go:build linux

package srtp

import (
	"fmt"
	"os"
	"runtime"
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
	socks  []*sock // by slot (epoll data); nil: free
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

// pickWorker returns the relay loop for a new stream (the one watching
// the fewest sockets), or nil if the stream must use reader goroutines.
func pickWorker() *relayWorker {
	if relayOpts.Load().PerSocket {
		return nil
	}
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
		_ = k.raw.rc.Control(func(fd uintptr) { k.fd = int(fd) })
		var slot int32
		if n := len(w.free); n > 0 {
			slot, w.free = w.free[n-1], w.free[:n-1]
		} else {
			slot = int32(len(w.socks))
			w.socks = append(w.socks, nil)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, k.fd, &ev); err != nil {
			w.free = append(w.free, slot)
			w.removeLocked(socks[:i])
			k.fd = -1
			return fmt.Errorf("srtp: epoll_ctl add: %w", err)
		}
		k.slot = slot
		w.socks[slot] = k
		w.nsocks.Add(1)
	}
	return nil
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
		if k.fd < 0 { // never added, or disabled by the loop
			continue
		}
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, k.fd, nil)
		w.socks[k.slot] = nil
		w.free = append(w.free, k.slot)
		w.nsocks.Add(-1)
		k.fd = -1
	}
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
		if slot < 0 || int(slot) >= len(w.socks) {
			continue
		}
		k := w.socks[slot]
		if k == nil || k.fd < 0 {
			continue
		}
		m, errno := w.batch.read(k.fd)
		if k.stream.closed.Load() {
			// Closing (its sockets leave the loop in a moment): drain and
			// drop, or the level-triggered epoll would spin on them.
			continue
		}
		switch errno {
		case 0:
			k.readErrs = 0
			handled += m
			for j := range m {
				size, src := w.batch.datagram(j)
				k.stream.handle(k, w.sio, w.batch.bufs[j], size, src, now)
			}
		case syscall.EAGAIN:
		default:
			k.leg.c.readErrors.Add(1)
			if k.readErrs++; k.readErrs >= maxReadErrors {
				// A broken socket must not spin the loop: stop reading
				// it, as a reader goroutine would end.
				_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, k.fd, nil)
				w.socks[slot] = nil
				w.free = append(w.free, slot)
				w.nsocks.Add(-1)
				k.fd = sockDisabled
			}
		}
	}
	w.packets.Add(uint64(handled))
	w.handled = handled
	return true
}
