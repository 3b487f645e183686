package acl

// Subscription is a change feed of a Blocklist, made by Subscribe. It has a
// single consumer: one goroutine reads C and calls Resync.
//
// Changes are sent without ever blocking the writer: the channel has a
// bounded buffer, and when it is full the blocklist sends one OpResync (a slot
// is reserved for it) and stops sending. The consumer must then call Resync,
// which returns the full current list and re-arms the feed; no change is lost
// silently.
type Subscription struct {
	b        *Blocklist
	ch       chan Change
	overflow bool // guarded by b.mu
	closed   bool // guarded by b.mu
}

// Subscribe returns a new subscription and, atomically with it, the current
// live entries: every change after that snapshot is delivered on sub.C() (or
// announced by an OpResync). buffer is the number of changes that can be
// queued (DefaultSubscriberBuffer when <= 0, at most MaxSubscriberBuffer).
// On a closed blocklist the subscription's channel is already closed.
func (b *Blocklist) Subscribe(buffer int) (sub *Subscription, snapshot []Entry) {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	buffer = min(buffer, MaxSubscriberBuffer)
	s := &Subscription{b: b, ch: make(chan Change, buffer+1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		s.closed = true
		close(s.ch)
		return s, nil
	}
	b.subs[s] = struct{}{}
	return s, listOf(b.tbl.Load(), b.now())
}

// C returns the channel of changes. It is closed by Close and by
// Blocklist.Close.
func (s *Subscription) C() <-chan Change { return s.ch }

// Resync discards the changes still queued, and returns the full list of live
// entries; the changes after that list are delivered on C again. Call it
// after receiving OpResync (calling it at any other time is harmless). It
// returns nil once the subscription is closed.
func (s *Subscription) Resync() []Entry {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return nil
	}
	// Only emit (under b.mu) sends on ch, so this empties it.
	for drained := false; !drained; {
		select {
		case <-s.ch:
		default:
			drained = true
		}
	}
	s.overflow = false
	return listOf(b.tbl.Load(), b.now())
}

// Close ends the subscription and closes its channel. It is idempotent.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	delete(s.b.subs, s)
	close(s.ch)
}

// emit sends c to every subscriber without blocking. Caller holds b.mu, which
// makes it the only sender: a send is attempted only when there is room.
func (b *Blocklist) emit(c Change) {
	for s := range b.subs {
		if s.overflow {
			continue
		}
		if len(s.ch) < cap(s.ch)-1 {
			s.ch <- c
		} else {
			s.ch <- Change{Op: OpResync}
			s.overflow = true
		}
	}
}
