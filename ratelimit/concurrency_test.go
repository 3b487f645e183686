package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestConcurrencyAcquire(t *testing.T) {
	c := NewConcurrency(map[string]int{"a": 2, "open": 0})
	r1, ok1 := c.Acquire("a")
	r2, ok2 := c.Acquire("a")
	r3, ok3 := c.Acquire("a")
	if !ok1 || !ok2 || ok3 || r3 != nil {
		t.Fatalf("acquire: %v %v %v (r3 nil: %v), want true true false", ok1, ok2, ok3, r3 == nil)
	}
	if c.InUse("a") != 2 || c.Limit("a") != 2 {
		t.Fatalf("InUse %d Limit %d", c.InUse("a"), c.Limit("a"))
	}
	r1()
	r1() // idempotent: frees one slot, not two
	if c.InUse("a") != 1 {
		t.Fatalf("after double release InUse = %d, want 1", c.InUse("a"))
	}
	r4, ok4 := c.Acquire("a")
	if _, ok5 := c.Acquire("a"); !ok4 || ok5 {
		t.Fatal("slot not reusable exactly once")
	}
	r2()
	r4()
	if c.InUse("a") != 0 {
		t.Fatalf("InUse = %d after all releases", c.InUse("a"))
	}
	// cap <= 0: unlimited but counted
	var rel []func()
	for range 100 {
		r, ok := c.Acquire("open")
		if !ok {
			t.Fatal("unlimited trunk refused")
		}
		rel = append(rel, r)
	}
	if c.InUse("open") != 100 || c.Limit("open") != 0 {
		t.Fatalf("open: InUse %d Limit %d", c.InUse("open"), c.Limit("open"))
	}
	for _, r := range rel {
		r()
	}
	// unknown trunks: admitted, not counted
	r, ok := c.Acquire("nobody")
	if !ok || r == nil {
		t.Fatal("unknown trunk refused")
	}
	r()
	if c.InUse("nobody") != 0 || c.Limit("nobody") != 0 {
		t.Fatal("unknown trunk counted")
	}
}

func TestConcurrencySetLimits(t *testing.T) {
	c := NewConcurrency(map[string]int{"a": 3, "b": 1})
	ra1, _ := c.Acquire("a")
	ra2, _ := c.Acquire("a")
	rb, _ := c.Acquire("b")
	// Lower a's cap below its use; drop b; add c.
	c.SetLimits(map[string]int{"a": 1, "c": 1})
	if c.InUse("a") != 2 {
		t.Fatalf("reload lost a's count: %d", c.InUse("a"))
	}
	if _, ok := c.Acquire("a"); ok {
		t.Fatal("acquired over the lowered cap")
	}
	ra1()
	if _, ok := c.Acquire("a"); ok {
		t.Fatal("acquired at the lowered cap")
	}
	ra2()
	ra, ok := c.Acquire("a")
	if !ok {
		t.Fatal("refused under the lowered cap")
	}
	ra()
	rb() // dropped trunk: harmless
	if c.InUse("b") != 0 {
		t.Fatal("dropped trunk still counted")
	}
	if _, ok := c.Acquire("c"); !ok {
		t.Fatal("new trunk refused")
	}
	if _, ok := c.Acquire("c"); ok {
		t.Fatal("new trunk over cap")
	}
}

// TestConcurrencyRace: the count never exceeds the cap, and every slot
// comes back. Run with -race.
func TestConcurrencyRace(t *testing.T) {
	const limit, workers, rounds = 5, 8, 2000
	c := NewConcurrency(map[string]int{"t": limit})
	var inside, peak atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				r, ok := c.Acquire("t")
				if !ok {
					continue
				}
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				inside.Add(-1)
				r()
				if i%2 == 0 {
					r() // double release must not corrupt the count
				}
			}
		}()
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Fatalf("peak %d calls inside, cap %d", peak.Load(), limit)
	}
	if c.InUse("t") != 0 {
		t.Fatalf("InUse = %d after all releases", c.InUse("t"))
	}
}
