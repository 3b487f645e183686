package ratelimit

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// t0 is the base time of all tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// v4 returns the /32 source key of the n-th address of 10.0.0.0/8 (n < 2^24)
// or, beyond, of 11.0.0.0/8 and so on.
func v4(n int) netip.Prefix {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(n))
	return netip.PrefixFrom(netip.AddrFrom4(b), 32)
}

func v4key(n int) key {
	k, _ := keyOf(v4(n))
	return k
}

// checkShard verifies the shard's structural invariants.
func checkShard[V any](t *testing.T, s *shard[V]) {
	t.Helper()
	walk := func(l list, seg uint8) int {
		n := 0
		prev := int32(nilIdx)
		for i := l.head; i != nilIdx; i = s.nodes[i].next {
			nd := &s.nodes[i]
			if nd.seg != seg {
				t.Fatalf("node %d in list %d has seg %d", i, seg, nd.seg)
			}
			if nd.prev != prev {
				t.Fatalf("node %d prev %d, want %d", i, nd.prev, prev)
			}
			if _, j := s.find(nd.k); j != i {
				t.Fatalf("node %d key indexed at %d", i, j)
			}
			prev = i
			n++
			if n > len(s.nodes) {
				t.Fatal("list cycle")
			}
		}
		if l.tail != prev {
			t.Fatalf("list %d tail %d, want %d", seg, l.tail, prev)
		}
		if int32(n) != l.n {
			t.Fatalf("list %d has %d nodes, count says %d", seg, n, l.n)
		}
		return n
	}
	np := walk(s.prob, segProb)
	nq := walk(s.prot, segProt)
	if np+nq != s.len() {
		t.Fatalf("lists hold %d, index %d", np+nq, s.len())
	}
	if s.len() > int(s.cap) || len(s.nodes) > int(s.cap) {
		t.Fatalf("shard holds %d keys in %d nodes, cap %d", s.len(), len(s.nodes), s.cap)
	}
	if s.prot.n > s.pcap {
		t.Fatalf("protected %d over its cap %d", s.prot.n, s.pcap)
	}
	used := 0
	for _, e := range s.ix {
		if e != 0 {
			used++
			j := int32(uint32(e)) - 1
			if j < 0 || int(j) >= len(s.nodes) || s.nodes[j].seg == segFree {
				t.Fatalf("index entry %x points to a free slot", e)
			}
		}
	}
	if used != s.len() {
		t.Fatalf("index holds %d entries, shard %d keys", used, s.len())
	}
}

// TestShardIndexRandom drives a small shard through random inserts,
// lookups, removals and resizes against a reference set.
func TestShardIndexRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newShard(50)
	ref := map[key]bool{}
	now := t0.UnixNano()
	for op := range 200_000 {
		k := v4key(rng.IntN(300))
		switch r := rng.IntN(100); {
		case r < 50:
			if _, ok := s.get(k, now+int64(op), int64(time.Millisecond)*int64(rng.IntN(3))); ok != ref[k] {
				t.Fatalf("op %d: get %v = %v, reference %v", op, k.prefix(), ok, ref[k])
			}
			if !ref[k] {
				_, _, _ = s.insert(k, now+int64(op))
				ref[k] = true
			}
		case r < 80:
			if s.remove(k) != ref[k] {
				t.Fatalf("op %d: remove disagrees", op)
			}
			delete(ref, k)
		case r < 81:
			s.resize(int32(10 + rng.IntN(80)))
		default:
			if i, ok := s.peek(k); ok && s.nodes[i].k != k {
				t.Fatalf("op %d: peek found the wrong key", op)
			}
		}
		// Evictions and shrinking drop keys: sync the reference.
		if s.len() != len(ref) {
			for rk := range ref {
				if _, ok := s.peek(rk); !ok {
					delete(ref, rk)
				}
			}
		}
		if s.len() != len(ref) {
			t.Fatalf("op %d: shard holds %d, reference %d", op, s.len(), len(ref))
		}
		if op%97 == 0 {
			checkShard(t, s)
		}
	}
	checkShard(t, s)
}

func newShard(c int32) *shard[int64] {
	s := &shard[int64]{seed: 42}
	s.init(c)
	return s
}

func TestShardLRUAndPromotion(t *testing.T) {
	const age = int64(time.Second)
	s := newShard(10) // pcap 8, probation ≥ 2
	now := t0.UnixNano()
	for i := range 10 {
		s.insert(v4key(i), now)
	}
	checkShard(t, s)
	// Touch key 0 early: it stays in probation, moves to its head.
	if _, ok := s.get(v4key(0), now+1, age); !ok {
		t.Fatal("key 0 missing")
	}
	if s.prot.n != 0 {
		t.Fatal("promoted before PromoteAge")
	}
	// Inserting one more evicts the probation LRU, which is key 1 now.
	_, _, evicted := s.insert(v4key(10), now+2)
	if !evicted {
		t.Fatal("full shard did not evict")
	}
	if _, ok := s.peek(v4key(1)); ok {
		t.Fatal("key 1 should have been evicted")
	}
	if _, ok := s.peek(v4key(0)); !ok {
		t.Fatal("recently used key 0 evicted")
	}
	// After PromoteAge a touch promotes.
	for _, n := range []int{0, 2, 3} {
		if _, ok := s.get(v4key(n), now+age, age); !ok {
			t.Fatalf("key %d missing", n)
		}
	}
	if s.prot.n != 3 {
		t.Fatalf("protected = %d, want 3", s.prot.n)
	}
	checkShard(t, s)
	// A flood of new keys never evicts protected ones.
	for i := 100; i < 1100; i++ {
		s.insert(v4key(i), now+age+int64(i))
		checkShard(t, s)
	}
	for _, n := range []int{0, 2, 3} {
		if _, ok := s.peek(v4key(n)); !ok {
			t.Fatalf("protected key %d evicted by flood", n)
		}
	}
	if s.evictions != 1+1000 {
		t.Fatalf("evictions = %d, want 1001", s.evictions)
	}
}

func TestShardProtectedOverflowDemotes(t *testing.T) {
	s := newShard(5) // pcap 4
	now := t0.UnixNano()
	for i := range 5 {
		j, _, _ := s.insert(v4key(i), now)
		s.protect(j)
		checkShard(t, s)
	}
	if s.prot.n != 4 || s.prob.n != 1 {
		t.Fatalf("prot %d prob %d, want 4 and 1", s.prot.n, s.prob.n)
	}
	// Key 0 was the protected LRU: it was demoted to probation.
	i, _ := s.peek(v4key(0))
	if s.nodes[i].seg != segProb {
		t.Fatal("protected LRU not demoted")
	}
}

func TestShardRemoveReusesSlot(t *testing.T) {
	s := newShard(4)
	now := t0.UnixNano()
	for i := range 4 {
		s.insert(v4key(i), now)
	}
	if !s.remove(v4key(2)) || s.remove(v4key(2)) {
		t.Fatal("remove should succeed once")
	}
	checkShard(t, s)
	_, _, evicted := s.insert(v4key(9), now)
	if evicted {
		t.Fatal("insert evicted although a slot was free")
	}
	if len(s.nodes) != 4 {
		t.Fatalf("nodes grew to %d", len(s.nodes))
	}
	checkShard(t, s)
}

func TestShardResize(t *testing.T) {
	s := newShard(100) // pcap 80
	now := t0.UnixNano()
	for i := range 100 {
		j, _, _ := s.insert(v4key(i), now)
		s.nodes[j].v = int64(i)
		if i < 50 {
			s.protect(j) // 0..49 protected, 49 most recent
		}
	}
	checkShard(t, s)
	s.resize(20) // pcap 16: keeps protected 49..34, then 33..30 spilled
	checkShard(t, s)
	if s.len() != 20 || s.prot.n != 16 {
		t.Fatalf("after shrink: %d keys, %d protected", s.len(), s.prot.n)
	}
	for i := 30; i < 50; i++ {
		j, ok := s.peek(v4key(i))
		if !ok {
			t.Fatalf("key %d lost in shrink", i)
		}
		if s.nodes[j].v != int64(i) {
			t.Fatalf("key %d value %d after shrink", i, s.nodes[j].v)
		}
	}
	s.resize(200)
	checkShard(t, s)
	for i := 1000; i < 1180; i++ {
		if _, _, ev := s.insert(v4key(i), now); ev {
			t.Fatalf("evicted at %d keys after growing", s.len())
		}
	}
	checkShard(t, s)
}

// TestShardSpread: sequential IPv4 sources and IPv6 /64s spread evenly
// over the shards (a skew would shrink the effective table).
func TestShardSpread(t *testing.T) {
	tab := newTable[int64](1<<20, 16)
	for _, gen := range []func(i int) netip.Prefix{
		v4,
		func(i int) netip.Prefix {
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], 0x20010db8_00000000+uint64(i))
			return netip.PrefixFrom(netip.AddrFrom16(b), 64)
		},
	} {
		var count [16]int
		const n = 160_000
		for i := range n {
			k, _ := keyOf(gen(i))
			s := tab.shard(k)
			for j := range tab.shards {
				if &tab.shards[j] == s {
					count[j]++
				}
			}
		}
		for j, c := range count {
			if c < n/16*9/10 || c > n/16*11/10 {
				t.Fatalf("shard %d got %d of %d keys: %v", j, c, n, count)
			}
		}
	}
}

// TestCacheFlood sends 1e6 distinct one-shot keys through a table of
// 10 000 slots that holds 1 000 established keys.
func TestCacheFlood(t *testing.T) {
	const capacity, established, flood = 10_000, 1_000, 1_000_000
	tab := newTable[int64](capacity, 8)
	now := t0.UnixNano()
	touch := func(k key, at int64) {
		s := tab.shard(k)
		s.mu.Lock()
		if _, ok := s.get(k, at, int64(time.Second)); !ok {
			s.insert(k, at)
		}
		s.mu.Unlock()
	}
	for i := range established {
		touch(v4key(i), now)
	}
	for i := range established { // seen again 2s later: established
		touch(v4key(i), now+2e9)
	}
	for i := range flood {
		k := v4key(1_000_000 + i)
		at := now + 3e9 + int64(i)*1000 // 1M keys/s
		touch(k, at)
		touch(k, at) // even a second hit does not promote
	}
	st := tab.stats()
	if st.Len > capacity || st.Capacity != capacity {
		t.Fatalf("table holds %d keys, cap %d (capacity %d)", st.Len, capacity, st.Capacity)
	}
	for i := range established {
		s := tab.shard(v4key(i))
		if _, ok := s.peek(v4key(i)); !ok {
			t.Fatalf("established key %d evicted by the flood", i)
		}
	}
	for i := range tab.shards {
		checkShard(t, &tab.shards[i])
	}
}

// TestCacheFloodCompare measures how many established keys survive the
// same flood in golang-lru's LRU and 2Q caches and in ours; the numbers go
// to BENCHMARKS.md (ratelimit). Only our result is asserted.
func TestCacheFloodCompare(t *testing.T) {
	const capacity, established, flood = 10_000, 1_000, 100_000
	for _, hits := range []int{1, 2} {
		plain, _ := lru.New[key, int64](capacity)
		twoQ, _ := lru.New2Q[key, int64](capacity)
		ours := newTable[int64](capacity, 8)
		now := t0.UnixNano()
		oursTouch := func(k key, at int64) {
			s := ours.shard(k)
			if _, ok := s.get(k, at, int64(time.Second)); !ok {
				s.insert(k, at)
			}
		}
		touch := func(k key, at int64) {
			if _, ok := plain.Get(k); !ok {
				plain.Add(k, 0)
			}
			if _, ok := twoQ.Get(k); !ok {
				twoQ.Add(k, 0)
			}
			oursTouch(k, at)
		}
		for r := range 3 { // established keys seen 3 times, 2s apart
			for i := range established {
				touch(v4key(i), now+int64(r)*2e9)
			}
		}
		for i := range flood {
			k := v4key(1_000_000 + i)
			at := now + 10e9 + int64(i)*1000
			for range hits {
				touch(k, at)
			}
		}
		var sp, sq, so int
		for i := range established {
			k := v4key(i)
			if plain.Contains(k) {
				sp++
			}
			if twoQ.Contains(k) {
				sq++
			}
			if _, ok := ours.shard(k).peek(k); ok {
				so++
			}
		}
		t.Logf("flood of %d keys × %d hits, cap %d: established survivors: lru %d, 2q %d, slru %d of %d",
			flood, hits, capacity, sp, sq, so, established)
		if so != established {
			t.Errorf("slru kept %d of %d established keys", so, established)
		}
	}
}
