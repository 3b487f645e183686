// Package timing is a hashed timing wheel for timers that are almost
// always stopped before they fire: SIP transaction timers (A, B, D, K, L,
// M, 1xx...) and the timers of a call. A busy SIP server arms a dozen of
// them per call and stops nearly all of them, at thousands of calls per
// second, with hundreds of thousands pending (the 32 s timers of calls
// that ended moments ago).
//
// time.AfterFunc allocates a runtime timer and puts it in the current P's
// heap under that heap's lock; stopping it takes the lock of whatever
// heap holds it. Here arming and stopping a timer is a list insert or
// unlink under the wheel's mutex, and only the wheel itself holds a
// runtime timer, armed for the next tick that has a timer in its slot (so
// an idle wheel does not wake the process).
//
// The price is resolution: a timer fires at the first tick (Tick, 4 ms)
// at or after its deadline, never before it, in a goroutine of its own as
// with time.AfterFunc. That suits timers of 100 ms and more, which all
// SIP timers are (T1 is 500 ms).
package timing

import (
	"math/bits"
	"sync"
	"time"
)

// Tick is the wheel's resolution: a timer fires up to Tick after its
// deadline.
const Tick = 4 * time.Millisecond

const (
	slotBits = 12
	nSlots   = 1 << slotBits // one turn of the wheel: 16.4 s
	slotMask = nSlots - 1
)

// Timer is a timer of a Wheel, made by AfterFunc. Its methods are safe
// for concurrent use.
type Timer struct {
	w          *Wheel
	f          func()
	fa         func(any) // AfterFuncArg's f, called with arg
	arg        any
	prev, next *Timer
	at         int64 // the tick it fires at
	armed      bool  // in a slot's list
}

// Wheel is a timing wheel. The zero value is not usable: use NewWheel, or
// the package's AfterFunc, which uses one shared wheel.
type Wheel struct {
	mu       sync.Mutex
	epoch    time.Time // tick 0
	slots    [nSlots]*Timer
	occupied [nSlots / 64]uint64 // a bit per non-empty slot
	n        int                 // timers armed
	cur      int64               // the next tick to run
	wake     *time.Timer         // runs the wheel; nil until the first timer
	wakeAt   int64               // the tick wake is armed for; -1: not armed
	fire     []fired             // run's scratch list, under mu
	skew     time.Duration       // added to the clock (tests)
}

// NewWheel returns an empty wheel.
func NewWheel() *Wheel {
	return &Wheel{epoch: time.Now(), wakeAt: -1}
}

var (
	defaultOnce  sync.Once
	defaultWheel *Wheel
)

// Default is the wheel AfterFunc uses.
func Default() *Wheel {
	defaultOnce.Do(func() { defaultWheel = NewWheel() })
	return defaultWheel
}

// AfterFunc waits at least d, then calls f in its own goroutine, like
// time.AfterFunc but on the shared wheel (at most Tick late).
func AfterFunc(d time.Duration, f func()) *Timer {
	return Default().AfterFunc(d, f)
}

// AfterFunc waits at least d, then calls f in its own goroutine. The
// Timer's Stop cancels the call.
func (w *Wheel) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{w: w, f: f}
	w.mu.Lock()
	w.armLocked(t, d)
	w.mu.Unlock()
	return t
}

// AfterFuncArg is AfterFunc calling f(arg) on the shared wheel. With f
// a function that closes over nothing and arg a pointer, arming it
// allocates the Timer only, where AfterFunc with a closure over arg
// allocates the closure too.
func AfterFuncArg(d time.Duration, f func(any), arg any) *Timer {
	return Default().AfterFuncArg(d, f, arg)
}

// AfterFuncArg is AfterFunc calling f(arg).
func (w *Wheel) AfterFuncArg(d time.Duration, f func(any), arg any) *Timer {
	t := &Timer{w: w, fa: f, arg: arg}
	w.mu.Lock()
	w.armLocked(t, d)
	w.mu.Unlock()
	return t
}

// fired is a call run owes: f(), or fa(arg).
type fired struct {
	f   func()
	fa  func(any)
	arg any
}

// Stop prevents the timer from firing. It returns true if that stopped
// it, false if it had fired or was stopped already. Like time.Timer's, it
// does not wait for a call already started.
func (t *Timer) Stop() bool {
	w := t.w
	w.mu.Lock()
	was := t.armed
	if was {
		w.unlinkLocked(t)
	}
	w.mu.Unlock()
	return was
}

// Reset makes the timer fire after d from now, whether it was armed,
// stopped or had fired. It returns whether it was armed.
func (t *Timer) Reset(d time.Duration) bool {
	w := t.w
	w.mu.Lock()
	was := t.armed
	if was {
		w.unlinkLocked(t)
	}
	w.armLocked(t, d)
	w.mu.Unlock()
	return was
}

// elapsed is the time since tick 0.
func (w *Wheel) elapsed() time.Duration {
	return time.Since(w.epoch) + w.skew
}

// now is the current tick (rounded down).
func (w *Wheel) now() int64 {
	return int64(w.elapsed() / Tick)
}

// maxDelay bounds a timer's delay so that its tick cannot overflow: a
// timer of math.MaxInt64 (never, for time.AfterFunc) fires in 146 years.
const maxDelay = time.Duration(1 << 62)

func (w *Wheel) armLocked(t *Timer, d time.Duration) {
	d = min(d, maxDelay)
	// The first tick at or after the deadline: never early.
	at := int64((w.elapsed() + d + Tick - 1) / Tick)
	if d <= 0 || at < w.cur {
		at = w.cur
	}
	t.at = at
	s := int(at & slotMask)
	t.prev, t.next = nil, w.slots[s]
	if t.next != nil {
		t.next.prev = t
	}
	w.slots[s] = t
	w.occupied[s>>6] |= 1 << (s & 63)
	t.armed = true
	w.n++
	if w.wakeAt < 0 || at < w.wakeAt {
		w.armWakeLocked(at)
	}
}

func (w *Wheel) unlinkLocked(t *Timer) {
	s := int(t.at & slotMask)
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		w.slots[s] = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	if w.slots[s] == nil {
		w.occupied[s>>6] &^= 1 << (s & 63)
	}
	t.prev, t.next, t.armed = nil, nil, false
	w.n--
}

// armWakeLocked arms the wheel's runtime timer for tick at.
func (w *Wheel) armWakeLocked(at int64) {
	d := time.Duration(at)*Tick - w.elapsed()
	w.wakeAt = at
	if w.wake == nil {
		w.wake = time.AfterFunc(d, w.run)
		return
	}
	w.wake.Reset(d)
}

// run fires the timers due, then arms the wheel for the next non-empty
// slot.
func (w *Wheel) run() {
	w.mu.Lock()
	now := w.now()
	w.wakeAt = -1
	if now >= w.cur {
		// The slots of ticks cur..now, each once (all of them after a
		// turn or more without running).
		first, last := w.cur, now
		if last-first >= nSlots {
			first = last - nSlots + 1
		}
		for tk := first; tk <= last; tk++ {
			s := int(tk & slotMask)
			if w.occupied[s>>6]&(1<<(s&63)) == 0 {
				continue
			}
			for t := w.slots[s]; t != nil; {
				next := t.next
				if t.at <= now {
					w.unlinkLocked(t)
					w.fire = append(w.fire, fired{f: t.f, fa: t.fa, arg: t.arg})
				}
				t = next
			}
		}
		w.cur = now + 1
	}
	if w.n > 0 {
		w.armWakeLocked(w.nextAt())
	}
	for i, c := range w.fire {
		if c.fa != nil {
			go c.fa(c.arg)
		} else {
			go c.f()
		}
		w.fire[i] = fired{}
	}
	w.fire = w.fire[:0]
	w.mu.Unlock()
}

// nextOccupied returns the first non-empty slot at or after s (wrapping),
// or -1.
func (w *Wheel) nextOccupied(s int) int {
	word, bit := s>>6, uint(s&63)
	if m := w.occupied[word] >> bit; m != 0 {
		return s + bits.TrailingZeros64(m)
	}
	for i := 1; i <= len(w.occupied); i++ {
		k := (word + i) % len(w.occupied)
		if m := w.occupied[k]; m != 0 {
			return k<<6 + bits.TrailingZeros64(m)
		}
	}
	return -1
}

// nextAt is the tick to run next: the first non-empty slot from cur on.
// A slot whose timers are a turn or more away is run early, for nothing,
// once per turn; that keeps arming O(1).
func (w *Wheel) nextAt() int64 {
	s := int(w.cur & slotMask)
	nx := w.nextOccupied(s)
	if nx < 0 {
		return w.cur
	}
	return w.cur + int64((nx-s)&slotMask)
}

// Len returns the number of timers armed.
func (w *Wheel) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
