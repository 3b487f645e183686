package sbc

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"strings"
	"time"
)

// tombStore keeps the tombs of ended calls' dialogs (tomb.go) for
// lingerFor in a form the garbage collector does not walk. At a few
// thousand calls a second, 64*T1 of ended calls is a hundred thousand and
// more: kept as objects (the tomb, its strings, the call table's map
// entries, a reaper queue), they were most of the live heap and every
// collection marked them again (BENCHMARKS.md, "Tombs without pointers").
//
// Here a tomb is a record of bytes appended to a chunk, in the order the
// tombs were buried, which is the order they go in (every tomb lingers as
// long). One map, from a hash of the Call-ID to the newest record of that
// hash, finds them; each record links to the record it replaced there, so
// the dialogs of one Call-ID (or of Call-IDs whose hashes collide) form a
// chain from the newest, walked for a dialog key (at most tombChainMax
// records). Neither the chunks ([]byte) nor the map (integers) hold
// pointers; each chunk keeps a short list of the endpoints and snapshots
// its records name, by index. A lookup checks the record's own key, so
// two keys with the same 64-bit hash never answer for each other. A link
// to a record already forgotten ends the chain: records are forgotten
// oldest first, and a chain runs from newer to older.
//
// A tomb found is decoded into a *tomb, which allocates: that happens on
// late messages only. Under the call table's lock.
type tombStore struct {
	seed maphash.Seed
	// mask is ANDed with every hash: all ones, except in a test that
	// makes every key collide.
	mask uint64
	// byCallID finds the newest record of each Call-ID hash; each record
	// links to the one it replaced there (prev), so a dialog is found by
	// walking from its Call-ID (tombChainMax records at most).
	byCallID map[uint64]tombLoc
	n        int          // records not yet forgotten
	chunks   []*tombChunk // oldest first; records are only appended to the last
	head     int          // offset in chunks[0] of the oldest record not forgotten
	seq      uint32       // the sequence number of the next chunk
}

// tombLoc is where a record is: its chunk's sequence number (high 32
// bits) and its offset in the chunk.
type tombLoc uint64

type tombChunk struct {
	seq   uint32
	buf   []byte
	eps   []*endpoint
	snaps []*snapshot
}

const (
	// tombChunkSize is the size of a chunk (a record larger than that
	// gets a chunk of its own size).
	tombChunkSize = 64 << 10
	// tombRefsMax bounds the endpoints and snapshots a chunk names (an
	// index is one byte).
	tombRefsMax = 255
	// A record: its length (4 bytes), when it is due (8, tombClock), its
	// flags (1), endpoint and snapshot indexes (1 each), a spare byte,
	// the B-leg INVITE's CSeq (4), the location + 1 of the record of the
	// same Call-ID hash it replaced in the index (8; 0: none), then the
	// fields below as length-prefixed bytes (uvarint lengths).
	tombHeader = 28
	tombPrevAt = 20 // offset of the replaced record's location + 1
	// tombChainMax bounds the records a lookup walks from a Call-ID: more
	// dialogs than that of one Call-ID hash (forks of one call, or a
	// sender reusing a Call-ID) and the oldest are not found (a late
	// message for them is counted as a stray).
	tombChainMax = 16
	tombFlagA    = 1
)

// The variable fields of a record, in order; then the A-leg INVITE's
// branches (a count, then each) and the B-leg's ACKs (a count, then tag
// and bytes of each).
const (
	tfKey       = iota // dialogKey(Call-ID, local tag)
	tfCorr             // the A-leg Call-ID of the call (correlation)
	tfTrunk            // tomb.trunk
	tfSrcPool          // tomb.srcPool
	tfTransport        // tomb.transport
	tfPeer             // tomb.peer, netip.Addr.MarshalBinary
	tfDest             // tomb.dest, netip.AddrPort.MarshalBinary
	tfCount
)

// tombEpoch is the origin of the store's clock: monotonic nanoseconds.
var tombEpoch = time.Now()

func tombClock() int64 { return int64(time.Since(tombEpoch)) }

func newTombStore() tombStore {
	return tombStore{
		seed:     maphash.MakeSeed(),
		mask:     ^uint64(0),
		byCallID: map[uint64]tombLoc{},
	}
}

// tombCallID is the Call-ID part of a dialog key.
func tombCallID(key string) string {
	callID, _, _ := strings.Cut(key, "\x00")
	return callID
}

func (s *tombStore) hash(v string) uint64 { return maphash.String(s.seed, v) & s.mask }

func (s *tombStore) hashBytes(v []byte) uint64 { return maphash.Bytes(s.seed, v) & s.mask }

// len is the number of records kept, one per buried dialog (some past
// tombChainMax of their Call-ID may no longer be found).
func (s *tombStore) len() int { return s.n }

// add appends a tomb due at `due` (tombClock), with the correlation id
// of its Call-ID and, for an A-leg, its INVITE's branches.
func (s *tombStore) add(tb *tomb, corr string, branches []string, due int64) {
	var pb, db [40]byte
	peer, dest := pb[:0], db[:0]
	if tb.peer.IsValid() {
		peer, _ = tb.peer.AppendBinary(peer)
	}
	if tb.dest.IsValid() {
		dest, _ = tb.dest.AppendBinary(dest)
	}
	// Each field is one of the two (an invalid address: an empty field).
	strs := [tfCount]string{tfKey: tb.key, tfCorr: corr, tfTrunk: tb.trunk, tfSrcPool: tb.srcPool, tfTransport: tb.transport}
	fields := [tfCount][]byte{tfPeer: peer, tfDest: dest}
	size := tombHeader
	for i := range tfCount {
		n := len(strs[i]) + len(fields[i])
		size += uvarintLen(n) + n
	}
	size += uvarintLen(len(branches))
	for _, b := range branches {
		size += uvarintLen(len(b)) + len(b)
	}
	size += uvarintLen(len(tb.acks))
	for _, a := range tb.acks {
		size += uvarintLen(len(a.tag)) + len(a.tag) + uvarintLen(len(a.raw)) + len(a.raw)
	}

	c, epi, sti := s.chunkFor(size, tb.ep, tb.st)
	off := len(c.buf)
	b := c.buf[:off+tombHeader]
	binary.LittleEndian.PutUint32(b[off:], uint32(size))
	binary.LittleEndian.PutUint64(b[off+4:], uint64(due))
	flags := byte(0)
	if tb.a {
		flags |= tombFlagA
	}
	b[off+12], b[off+13], b[off+14], b[off+15] = flags, epi, sti, 0
	binary.LittleEndian.PutUint32(b[off+16:], tb.inviteCSeq)
	h := s.hash(tombCallID(tb.key))
	var prev uint64
	if old, ok := s.byCallID[h]; ok {
		prev = uint64(old) + 1
	}
	binary.LittleEndian.PutUint64(b[off+tombPrevAt:], prev)
	for i := range tfCount {
		if i == tfPeer || i == tfDest {
			b = appendField(b, fields[i])
		} else {
			b = appendFieldString(b, strs[i])
		}
	}
	b = binary.AppendUvarint(b, uint64(len(branches)))
	for _, br := range branches {
		b = appendFieldString(b, br)
	}
	b = binary.AppendUvarint(b, uint64(len(tb.acks)))
	for _, a := range tb.acks {
		b = appendFieldString(b, a.tag)
		b = appendField(b, a.raw)
	}
	// The length as written (size is what was reserved).
	binary.LittleEndian.PutUint32(b[off:], uint32(len(b)-off))
	c.buf = b
	s.byCallID[h] = tombLoc(uint64(c.seq)<<32 | uint64(off))
	s.n++
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

func appendFieldString(b []byte, f string) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// chunkFor returns the chunk a record of size bytes naming ep and st goes
// to, and their indexes in it.
func (s *tombStore) chunkFor(size int, ep *endpoint, st *snapshot) (*tombChunk, byte, byte) {
	if n := len(s.chunks); n > 0 {
		c := s.chunks[n-1]
		if cap(c.buf)-len(c.buf) >= size {
			epi, ok1 := tombRef(&c.eps, ep)
			sti, ok2 := tombRef(&c.snaps, st)
			if ok1 && ok2 {
				return c, epi, sti
			}
		}
	}
	c := &tombChunk{seq: s.seq, buf: make([]byte, 0, max(size, tombChunkSize))}
	s.seq++
	s.chunks = append(s.chunks, c)
	epi, _ := tombRef(&c.eps, ep)
	sti, _ := tombRef(&c.snaps, st)
	return c, epi, sti
}

// tombRef returns the index of v in *list, appending it when it is not
// there and there is room (ok false: no room).
func tombRef[T comparable](list *[]T, v T) (byte, bool) {
	for i, x := range *list {
		if x == v {
			return byte(i), true
		}
	}
	if len(*list) >= tombRefsMax {
		return 0, false
	}
	*list = append(*list, v)
	return byte(len(*list) - 1), true
}

// record returns the chunk and the bytes of the record at loc (nil when
// its chunk is gone).
func (s *tombStore) record(loc tombLoc) (*tombChunk, []byte) {
	if len(s.chunks) == 0 {
		return nil, nil
	}
	i := int(uint32(loc>>32) - s.chunks[0].seq)
	if i < 0 || i >= len(s.chunks) {
		return nil, nil
	}
	c := s.chunks[i]
	off := int(uint32(loc))
	if off+tombHeader > len(c.buf) || (i == 0 && off < s.head) {
		return nil, nil // not written, or forgotten
	}
	n := int(binary.LittleEndian.Uint32(c.buf[off:]))
	return c, c.buf[off : off+n]
}

// tombFields walks a record's variable fields.
type tombFields struct{ b []byte }

func (f *tombFields) next() []byte {
	n, k := binary.Uvarint(f.b)
	if k <= 0 || uint64(len(f.b)-k) < n {
		f.b = nil
		return nil
	}
	v := f.b[k : k+int(n)]
	f.b = f.b[k+int(n):]
	return v
}

func (f *tombFields) count() int {
	n, k := binary.Uvarint(f.b)
	if k <= 0 {
		f.b = nil
		return 0
	}
	f.b = f.b[k:]
	return int(n)
}

// walk returns the newest record, from the Call-ID's hash on, whose key
// match accepts (nil: none within tombChainMax records).
func (s *tombStore) walk(callID string, match func(key []byte) bool) (*tombChunk, []byte) {
	loc, ok := s.byCallID[s.hash(callID)]
	for range tombChainMax {
		if !ok {
			return nil, nil
		}
		c, rec := s.record(loc)
		if rec == nil {
			return nil, nil // the rest of the chain is older still: forgotten
		}
		f := tombFields{rec[tombHeader:]}
		if match(f.next()) {
			return c, rec
		}
		prev := binary.LittleEndian.Uint64(rec[tombPrevAt:])
		loc, ok = tombLoc(prev-1), prev != 0
	}
	return nil, nil
}

// find returns the record of the dialog key (nil: none).
func (s *tombStore) find(key string) (*tombChunk, []byte) {
	return s.walk(tombCallID(key), func(k []byte) bool { return string(k) == key })
}

// findCallID returns the newest record of a dialog with this Call-ID
// (nil: none).
func (s *tombStore) findCallID(callID string) []byte {
	_, rec := s.walk(callID, func(k []byte) bool {
		id, _, _ := bytes.Cut(k, []byte{0})
		return string(id) == callID
	})
	return rec
}

// tomb decodes the tomb of the dialog key (nil: none).
func (s *tombStore) tomb(key string) *tomb {
	c, rec := s.find(key)
	if rec == nil {
		return nil
	}
	t := &tomb{
		a:          rec[12]&tombFlagA != 0,
		ep:         c.eps[rec[13]],
		st:         c.snaps[rec[14]],
		inviteCSeq: binary.LittleEndian.Uint32(rec[16:]),
	}
	f := tombFields{rec[tombHeader:]}
	t.key = string(f.next())
	f.next() // the correlation id
	t.trunk = string(f.next())
	t.srcPool = string(f.next())
	t.transport = string(f.next())
	if p := f.next(); len(p) > 0 {
		_ = t.peer.UnmarshalBinary(p)
	}
	if d := f.next(); len(d) > 0 {
		_ = t.dest.UnmarshalBinary(d)
	}
	for range f.count() {
		f.next()
	}
	for range f.count() {
		tag := string(f.next())
		raw := f.next()
		t.acks = append(t.acks, tombAck{tag: tag, raw: append([]byte(nil), raw...)})
	}
	return t
}

// corr returns the correlation id a buried dialog with this Call-ID
// keeps (ok false: none).
func (s *tombStore) corr(callID string) (string, bool) {
	rec := s.findCallID(callID)
	if rec == nil {
		return "", false
	}
	f := tombFields{rec[tombHeader:]}
	f.next()
	return string(f.next()), true
}

// branches returns the INVITE branches a buried A-leg with this Call-ID
// keeps (ok false: no such A-leg). Allocates only the returned strings.
func (s *tombStore) branches(callID string) (list []string, ok bool) {
	rec := s.findCallID(callID)
	if rec == nil || rec[12]&tombFlagA == 0 {
		return nil, false // none, or a B-leg's
	}
	f := tombFields{rec[tombHeader:]}
	f.next()
	if string(f.next()) != callID {
		return nil, false // an A-leg a transfer gave the call: not its caller's
	}
	for range tfCount - 2 {
		f.next()
	}
	for range f.count() {
		list = append(list, string(f.next()))
	}
	return list, true
}

// expire forgets the records due at `now` (tombClock), at most max of
// them. It returns how many it forgot, and when the oldest left is due
// (ok false: none left).
func (s *tombStore) expire(now int64, max int) (n int, next int64, ok bool) {
	for n < max {
		if len(s.chunks) == 0 {
			return n, 0, false
		}
		c := s.chunks[0]
		if s.head >= len(c.buf) {
			if len(s.chunks) == 1 && cap(c.buf)-len(c.buf) >= tombHeader {
				// The chunk records are appended to: kept.
				return n, 0, false
			}
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
			s.head = 0
			continue
		}
		rec := c.buf[s.head:]
		size := int(binary.LittleEndian.Uint32(rec))
		due := int64(binary.LittleEndian.Uint64(rec[4:]))
		if due > now {
			return n, due, true
		}
		loc := tombLoc(uint64(c.seq)<<32 | uint64(s.head))
		f := tombFields{rec[tombHeader:size]}
		callID, _, _ := bytes.Cut(f.next(), []byte{0})
		if h := s.hashBytes(callID); s.byCallID[h] == loc {
			delete(s.byCallID, h) // the newest of its chain: the chain is gone
		}
		s.head += size
		s.n--
		n++
	}
	if len(s.chunks) == 0 {
		return n, 0, false
	}
	return n, 0, true
}
