package timing

import (
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wait fails the test if ch is not closed within a generous bound (a
// guard against a hang, not a timing assertion).
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: never fired", what)
	}
}

func TestFiresNotEarly(t *testing.T) {
	w := NewWheel()
	ds := []time.Duration{0, time.Millisecond, Tick, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond}
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(1)
		start := time.Now()
		w.AfterFunc(d, func() {
			defer wg.Done()
			if got := time.Since(start); got < d {
				t.Errorf("timer of %v fired after %v", d, got)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	wait(t, done, "timers")
	if n := w.Len(); n != 0 {
		t.Fatalf("%d timers still armed after all fired", n)
	}
}

func TestStopAndReset(t *testing.T) {
	w := NewWheel()
	var fired atomic.Int32
	tm := w.AfterFunc(time.Hour, func() { fired.Add(1) })
	if w.Len() != 1 {
		t.Fatalf("Len %d, want 1", w.Len())
	}
	if !tm.Stop() {
		t.Fatal("Stop of an armed timer returned false")
	}
	if tm.Stop() {
		t.Fatal("second Stop returned true")
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d after Stop, want 0", w.Len())
	}

	done := make(chan struct{}, 2)
	tm = w.AfterFunc(time.Hour, func() { done <- struct{}{} })
	if !tm.Reset(time.Millisecond) {
		t.Fatal("Reset of an armed timer returned false")
	}
	wait(t, done, "reset timer")
	if tm.Stop() {
		t.Fatal("Stop after firing returned true")
	}
	if tm.Reset(time.Millisecond) {
		t.Fatal("Reset after firing returned true")
	}
	wait(t, done, "timer reset after firing")
	if fired.Load() != 0 {
		t.Fatal("a stopped timer fired")
	}
}

// TestNever: a timer of the largest duration (time.AfterFunc's "never")
// is armed, does not fire on the wheel's runs, and stops.
func TestNever(t *testing.T) {
	w := NewWheel()
	var fired atomic.Int32
	tm := w.AfterFunc(time.Duration(math.MaxInt64), func() { fired.Add(1) })
	advance(w, 3*time.Duration(nSlots)*Tick)
	if w.Len() != 1 {
		t.Fatalf("Len %d, want 1", w.Len())
	}
	if !tm.Stop() {
		t.Fatal("Stop of a never-firing timer returned false")
	}
	if fired.Load() != 0 {
		t.Fatal("a timer of math.MaxInt64 fired")
	}
}

// advance moves the wheel's clock on by d and runs it, as its runtime
// timer would.
func advance(w *Wheel, d time.Duration) {
	w.mu.Lock()
	w.skew += d
	w.mu.Unlock()
	w.run()
}

// TestTurns: a timer more than a turn of the wheel away shares its slot
// with nearer ones and fires only on its own turn, also after the wheel
// has not run for longer than a turn.
func TestTurns(t *testing.T) {
	w := NewWheel()
	turn := time.Duration(nSlots) * Tick
	var near, far, farther atomic.Int32
	nearDone, farDone, fartherDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	w.AfterFunc(turn+100*Tick, func() { far.Add(1); close(farDone) })
	w.AfterFunc(100*Tick, func() { near.Add(1); close(nearDone) })
	w.AfterFunc(3*turn+100*Tick, func() { farther.Add(1); close(fartherDone) })

	advance(w, 101*Tick)
	wait(t, nearDone, "near timer")
	if far.Load() != 0 || farther.Load() != 0 {
		t.Fatal("a timer a turn away fired on the first pass of its slot")
	}
	advance(w, turn)
	wait(t, farDone, "far timer")
	if farther.Load() != 0 {
		t.Fatal("a timer three turns away fired after one")
	}
	// Not run for two turns: the catch-up runs every slot once.
	advance(w, 2*turn)
	wait(t, fartherDone, "farther timer")
	if n := w.Len(); n != 0 {
		t.Fatalf("%d timers armed, want 0", n)
	}
}

// TestStress arms, stops and resets timers from several goroutines at
// once (bounded), and checks that every timer whose last Stop did not
// succeed fires exactly once and no stopped timer fires.
func TestStress(t *testing.T) {
	w := NewWheel()
	const workers, per = 4, 2000
	type rec struct {
		fired   atomic.Int32
		stopped bool
	}
	recs := make([][]rec, workers)
	var wg, fires sync.WaitGroup
	for g := 0; g < workers; g++ {
		recs[g] = make([]rec, per)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for i := range recs[g] {
				r := &recs[g][i]
				d := time.Duration(rng.Intn(20)) * time.Millisecond
				tm := w.AfterFunc(d, func() { r.fired.Add(1); fires.Done() })
				fires.Add(1)
				switch rng.Intn(3) {
				case 0:
					if tm.Stop() {
						r.stopped = true
						fires.Done()
					}
				case 1:
					if !tm.Reset(time.Duration(rng.Intn(5)) * time.Millisecond) {
						fires.Add(1) // it had fired already: it fires again
					}
				}
			}
		}(g)
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { fires.Wait(); close(done) }()
	wait(t, done, "stress timers")
	for g := range recs {
		for i := range recs[g] {
			r := &recs[g][i]
			if r.stopped && r.fired.Load() != 0 {
				t.Fatalf("timer %d/%d fired after a successful Stop", g, i)
			}
		}
	}
	if n := w.Len(); n != 0 {
		t.Fatalf("%d timers armed, want 0", n)
	}
}

func BenchmarkArmStop(b *testing.B) {
	w := NewWheel()
	f := func() {}
	// Pending timers, as a loaded server has (calls that ended in the
	// last 32 s).
	for i := 0; i < 100000; i++ {
		w.AfterFunc(32*time.Second+time.Duration(i)*time.Microsecond, f)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.AfterFunc(500*time.Millisecond, f).Stop()
	}
}

func BenchmarkArmStopRuntime(b *testing.B) {
	f := func() {}
	var pending []*time.Timer
	for i := 0; i < 100000; i++ {
		pending = append(pending, time.AfterFunc(32*time.Second+time.Duration(i)*time.Microsecond, f))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.AfterFunc(500*time.Millisecond, f).Stop()
	}
	b.StopTimer()
	for _, t := range pending {
		t.Stop()
	}
}

type argBox struct{ got chan *argBox }

func fireArg(a any) { b := a.(*argBox); b.got <- b }

// TestAfterFuncArg: the timer calls f with its arg, on firing and after a
// Reset; Stop disarms it; arming one with a function that closes
// over nothing and a pointer allocates only the Timer.
func TestAfterFuncArg(t *testing.T) {
	w := NewWheel()
	b := &argBox{got: make(chan *argBox, 2)}
	tm := w.AfterFuncArg(time.Hour, fireArg, b)
	advance(w, time.Hour+Tick)
	select {
	case got := <-b.got:
		if got != b {
			t.Fatal("called with another arg")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFuncArg never fired")
	}
	if tm.Reset(time.Minute) {
		t.Fatal("Reset after firing returned true")
	}
	advance(w, time.Minute+Tick)
	select {
	case <-b.got:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFuncArg never fired after its Reset")
	}
	if !w.AfterFuncArg(time.Minute, fireArg, b).Stop() {
		t.Fatal("Stop of an armed timer returned false")
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d after Stop, want 0", w.Len())
	}
	if n := testing.AllocsPerRun(100, func() { w.AfterFuncArg(time.Hour, fireArg, b).Stop() }); n != 1 {
		t.Fatalf("AfterFuncArg: %v allocations, want 1 (the Timer)", n)
	}
}
