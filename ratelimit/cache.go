package ratelimit

import (
	"crypto/rand"
	"encoding/binary"
	"runtime"
	"sync"
)

// This file holds the bounded per-source table shared by Limiter and
// Tracker: a sharded, segmented LRU (SLRU) over a fixed number of slots.
//
// Why not golang-lru/v2: its Cache is one mutex for the whole table and
// allocates a list element per new key; its 2Q cache promotes a key to the
// protected ("frequent") list on a second access (or a ghost hit), so a
// spoofed flood that sends each source twice flushes the established
// entries (see TestCacheFloodCompare and BENCHMARKS.md (ratelimit)). Here:
//
//   - Slots live in a per-shard slice that grows up to the shard's capacity
//     and is then reused in place, indexed by an open-addressing hash
//     table (linear probing, backward-shift deletion, sized 2× the slots
//     up front): no allocation at all once the table is full, however
//     many keys churn through it. (A Go map here allocated a few bytes
//     per insert under churn, rehashing away its tombstones.)
//   - New keys enter the probation segment (at least 1/5 of the shard).
//     Eviction takes the least recently used probation entry.
//   - A key moves to the protected segment (at most 4/5) only when it is
//     touched again at least promoteAge after it was created, or when the
//     owner protects it explicitly (a block, earned trust). A flood of
//     spoofed one-shot (or two-shot) sources churns probation within
//     milliseconds, so its keys never reach promoteAge and cannot displace
//     protected entries. Protected overflow demotes the protected LRU entry
//     to the head of probation (classic SLRU).
//   - Shards are chosen by a hash with a random per-table seed, so an
//     outsider cannot pick spoofed sources that all land in the shard of
//     one victim.

const (
	segFree uint8 = iota
	segProb
	segProt
)

const nilIdx = -1

type node[V any] struct {
	k          key
	prev, next int32
	seg        uint8
	born       int64 // unix ns when the key was inserted
	v          V
}

// list is an intrusive doubly linked list over shard.nodes; head is the
// most recently used end.
type list struct {
	head, tail int32
	n          int32
}

type shard[V any] struct {
	mu sync.Mutex
	// ix is the hash index: 0 = empty, else uint32(hash)<<32 | slot+1.
	// The low hash bits give the home position, the rest filter
	// mismatches without touching the node.
	ix    []uint64
	seed  uint64
	n     int32 // resident keys
	nodes []node[V]
	free  int32 // head of the free list (linked by next), nilIdx if none
	prob  list
	prot  list
	cap   int32 // total slots
	pcap  int32 // max protected
	// aux is the owner's per-shard tag (the Limiter's limit version).
	aux any
	// counters, guarded by mu
	evictions uint64
	pressured uint64
	_         [64]byte // keep hot shards on separate cache lines
}

type table[V any] struct {
	shards []shard[V]
	mask   uint64
	seed   uint64
}

// shardCount picks the number of shards: a power of two around
// 4×GOMAXPROCS, capped so that every shard keeps at least 64 slots.
func shardCount(requested, capacity int) int {
	n := requested
	if n <= 0 {
		n = 4 * runtime.GOMAXPROCS(0)
	}
	n = ceilPow2(n)
	if n > 1024 {
		n = 1024
	}
	for n > 1 && capacity/n < 64 {
		n /= 2
	}
	return n
}

func newTable[V any](capacity, shards int) *table[V] {
	if capacity < 1 {
		capacity = 1
	}
	n := shardCount(shards, capacity)
	t := &table[V]{shards: make([]shard[V], n), mask: uint64(n - 1)}
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux ≥ 3.17; a zero seed is still correct
	t.seed = binary.LittleEndian.Uint64(b[:])
	for i := range t.shards {
		t.shards[i].seed = t.seed
		t.shards[i].init(shardCap(capacity, n, i))
	}
	return t
}

// shardCap splits capacity over n shards exactly.
func shardCap(capacity, n, i int) int32 {
	c := capacity / n
	if i < capacity%n {
		c++
	}
	if c < 1 {
		c = 1
	}
	return int32(c)
}

func (s *shard[V]) init(c int32) {
	s.ix = make([]uint64, ceilPow2(2*int(max(c, 1))))
	s.n = 0
	s.nodes = s.nodes[:0]
	s.free = nilIdx
	s.prob = list{nilIdx, nilIdx, 0}
	s.prot = list{nilIdx, nilIdx, 0}
	s.setCap(c)
}

func (s *shard[V]) setCap(c int32) {
	s.cap = c
	s.pcap = c * 4 / 5
	if c-s.pcap < 1 {
		s.pcap = c - 1
	}
}

func (t *table[V]) shard(k key) *shard[V] {
	// bits 48.. of the hash pick the shard; the shard's index uses the
	// low 32 bits.
	return &t.shards[(k.hash(t.seed)>>48)&t.mask]
}

// find returns k's position in the index and its slot, or the empty
// position where k would go and nilIdx.
func (s *shard[V]) find(k key) (pos uint64, i int32) {
	h := k.hash(s.seed)
	m := uint64(len(s.ix) - 1)
	tag := h & 0xffffffff
	for p := h & m; ; p = (p + 1) & m {
		e := s.ix[p]
		if e == 0 {
			return p, nilIdx
		}
		if e>>32 == tag {
			if j := int32(uint32(e)) - 1; s.nodes[j].k == k {
				return p, j
			}
		}
	}
}

// ixSet stores slot i of key hash h at the empty position p.
func (s *shard[V]) ixSet(p uint64, k key, i int32) {
	s.ix[p] = (k.hash(s.seed)&0xffffffff)<<32 | uint64(uint32(i+1))
}

// ixDelete empties position p, shifting later entries of the probe run
// back so that lookups never need tombstones.
func (s *shard[V]) ixDelete(p uint64) {
	m := uint64(len(s.ix) - 1)
	for {
		s.ix[p] = 0
		q := p
		for {
			q = (q + 1) & m
			e := s.ix[q]
			if e == 0 {
				return
			}
			home := (e >> 32) & m
			// e may fill p unless its home lies cyclically in (p, q].
			if (p < q && (home <= p || home > q)) || (q < p && home <= p && home > q) {
				s.ix[p] = e
				p = q
				break
			}
		}
	}
}

func (t *table[V]) capacity() int {
	n := 0
	for i := range t.shards {
		n += int(t.shards[i].cap)
	}
	return n
}

func (s *shard[V]) listOf(seg uint8) *list {
	if seg == segProt {
		return &s.prot
	}
	return &s.prob
}

func (s *shard[V]) unlink(i int32) {
	nd := &s.nodes[i]
	l := s.listOf(nd.seg)
	if nd.prev != nilIdx {
		s.nodes[nd.prev].next = nd.next
	} else {
		l.head = nd.next
	}
	if nd.next != nilIdx {
		s.nodes[nd.next].prev = nd.prev
	} else {
		l.tail = nd.prev
	}
	nd.prev, nd.next = nilIdx, nilIdx
	l.n--
}

func (s *shard[V]) pushFront(i int32, seg uint8) {
	nd := &s.nodes[i]
	nd.seg = seg
	l := s.listOf(seg)
	nd.prev = nilIdx
	nd.next = l.head
	if l.head != nilIdx {
		s.nodes[l.head].prev = i
	} else {
		l.tail = i
	}
	l.head = i
	l.n++
}

// get finds k and marks it used at now; a probation entry touched at least
// promoteAge after its birth moves to protected. The returned pointer is
// valid until the shard lock is released.
func (s *shard[V]) get(k key, now, promoteAge int64) (int32, bool) {
	_, i := s.find(k)
	if i == nilIdx {
		return nilIdx, false
	}
	nd := &s.nodes[i]
	if nd.seg == segProb && now-nd.born >= promoteAge {
		s.protect(i)
		return i, true
	}
	if s.listOf(nd.seg).head != i {
		seg := nd.seg
		s.unlink(i)
		s.pushFront(i, seg)
	}
	return i, true
}

// peek finds k without touching recency.
func (s *shard[V]) peek(k key) (int32, bool) {
	_, i := s.find(k)
	return i, i != nilIdx
}

// len reports the resident keys.
func (s *shard[V]) len() int { return int(s.n) }

// protect moves entry i to the head of the protected segment, demoting the
// protected LRU entry to probation when the segment is full.
func (s *shard[V]) protect(i int32) {
	if s.pcap <= 0 {
		return
	}
	nd := &s.nodes[i]
	if nd.seg == segProt {
		if s.prot.head != i {
			s.unlink(i)
			s.pushFront(i, segProt)
		}
		return
	}
	s.unlink(i)
	s.pushFront(i, segProt)
	for s.prot.n > s.pcap {
		t := s.prot.tail
		s.unlink(t)
		s.pushFront(t, segProb)
	}
}

// insert adds k (absent) at now and returns its slot. When the shard is
// full the least recently used probation entry is evicted first; its value
// is returned in old (evicted reports whether that happened) so the owner
// can judge whether the eviction lost live state. The new slot's value is
// the zero V.
func (s *shard[V]) insert(k key, now int64) (i int32, old V, evicted bool) {
	switch {
	case s.free != nilIdx:
		i = s.free
		s.free = s.nodes[i].next
	case int32(len(s.nodes)) < s.cap:
		s.nodes = append(s.nodes, node[V]{})
		i = int32(len(s.nodes) - 1)
	default:
		i = s.prob.tail
		if i == nilIdx { // only when pcap == cap, which setCap prevents
			i = s.prot.tail
		}
		nd := &s.nodes[i]
		old, evicted = nd.v, true
		p, _ := s.find(nd.k)
		s.ixDelete(p)
		s.unlink(i)
		s.n--
		s.evictions++
	}
	var zero V
	nd := &s.nodes[i]
	nd.k, nd.born, nd.v = k, now, zero
	s.pushFront(i, segProb)
	p, _ := s.find(k)
	s.ixSet(p, k, i)
	s.n++
	return i, old, evicted
}

// remove deletes k if present.
func (s *shard[V]) remove(k key) bool {
	p, i := s.find(k)
	if i == nilIdx {
		return false
	}
	s.ixDelete(p)
	s.unlink(i)
	s.n--
	s.nodes[i] = node[V]{seg: segFree, prev: nilIdx, next: s.free}
	s.free = i
	return true
}

// resize changes the shard's capacity keeping the most valuable entries:
// protected from most to least recently used (up to the new protected
// cap), then what protected had to give up, then probation likewise.
func (s *shard[V]) resize(c int32) {
	if c < 1 {
		c = 1
	}
	if c == s.cap {
		return
	}
	old := s.nodes
	prot, prob := s.prot, s.prob
	s.init(c)
	s.nodes = make([]node[V], 0, min(int(c), len(old)))

	// appendTail adds a copy of old[j] at the LRU end of seg.
	appendTail := func(j int32, seg uint8) {
		i := int32(len(s.nodes))
		nd := old[j]
		nd.seg, nd.prev, nd.next = seg, nilIdx, nilIdx
		s.nodes = append(s.nodes, nd)
		l := s.listOf(seg)
		if l.tail == nilIdx {
			l.head = i
		} else {
			s.nodes[l.tail].next = i
			s.nodes[i].prev = l.tail
		}
		l.tail = i
		l.n++
		p, _ := s.find(nd.k)
		s.ixSet(p, nd.k, i)
		s.n++
	}
	var spill []int32
	for j := prot.head; j != nilIdx; j = old[j].next {
		if s.prot.n < s.pcap {
			appendTail(j, segProt)
		} else {
			spill = append(spill, j)
		}
	}
	for _, j := range spill {
		if int32(len(s.nodes)) >= s.cap {
			break
		}
		appendTail(j, segProb)
	}
	for j := prob.head; j != nilIdx && int32(len(s.nodes)) < s.cap; j = old[j].next {
		appendTail(j, segProb)
	}
}

func (t *table[V]) stats() TableStats {
	var st TableStats
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Capacity += int(s.cap)
		st.Len += s.len()
		st.Protected += int(s.prot.n)
		st.Evictions += s.evictions
		st.Pressured += s.pressured
		s.mu.Unlock()
	}
	return st
}

func (t *table[V]) resize(capacity int) {
	n := len(t.shards)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.resize(shardCap(capacity, n, i))
		s.mu.Unlock()
	}
}
