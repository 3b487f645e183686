package sbc

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// A tomb comes back from its record as it went in: every field, IPv4 and
// IPv6 (with a zone) addresses, ACKs, and its Call-ID's correlation id
// and branches.
func TestTombStoreRoundTrip(t *testing.T) {
	s := newTombStore()
	ep1, ep2 := &endpoint{}, &endpoint{}
	st1, st2 := &snapshot{}, &snapshot{}
	bigACK := bytes.Repeat([]byte("x"), 3*tombChunkSize) // a record larger than a chunk
	tombs := []*tomb{
		{key: dialogKey("a-call", "t1"), ep: ep1, st: st1, a: true, trunk: "carrier", transport: "udp"},
		{key: dialogKey("b-call", "t2"), ep: ep2, st: st2, transport: "tcp", peer: netip.MustParseAddr("192.0.2.7"),
			dest: netip.MustParseAddrPort("192.0.2.7:5080"), inviteCSeq: 4711,
			acks: []tombAck{{tag: "x1", raw: []byte("ACK sip:b SIP/2.0\r\n\r\n")}, {tag: "x2", raw: bigACK}}},
		{key: dialogKey("c-call", "t3"), ep: ep1, st: st2, a: true, srcPool: "pbx", transport: "tls"},
		{key: dialogKey("d-call", "t4"), ep: ep2, st: st1, peer: netip.MustParseAddr("fe80::1%eth0"),
			dest: netip.MustParseAddrPort("[fe80::1%eth0]:5060"), transport: "udp"},
	}
	corrs := []string{"a-call", "a-call", "c-call", "d-call"}
	branches := [][]string{{"z9hG4bK-1", "z9hG4bK-2"}, nil, nil, nil}
	for i, tb := range tombs {
		s.add(tb, corrs[i], branches[i], 1000)
	}
	for i, want := range tombs {
		got := s.tomb(want.key)
		if got == nil {
			t.Fatalf("tomb %d not found", i)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("tomb %d:\n got %+v\nwant %+v", i, got, want)
		}
		callID := tombCallID(want.key)
		if c, ok := s.corr(callID); !ok || c != corrs[i] {
			t.Errorf("tomb %d: correlation %q %v, want %q", i, c, ok, corrs[i])
		}
		bs, ok := s.branches(callID)
		if want.a != ok || !reflect.DeepEqual(bs, branches[i]) {
			t.Errorf("tomb %d: branches %q %v, want %q %v", i, bs, ok, branches[i], want.a)
		}
	}
	if s.tomb(dialogKey("a-call", "t2")) != nil || s.tomb("") != nil {
		t.Error("found a tomb that was never buried")
	}
	if _, ok := s.corr("e-call"); ok {
		t.Error("correlation of an unknown Call-ID")
	}
	if s.len() != 4 {
		t.Errorf("len %d, want 4", s.len())
	}
}

// Keys whose hashes collide never answer for each other: both are found
// under their own keys (the chain from the newest), each Call-ID gives
// its own correlation and branches, and forgetting the older record
// leaves the newer in place.
func TestTombStoreCollisions(t *testing.T) {
	s := newTombStore()
	s.mask = 0 // every key hashes to 0
	s.add(&tomb{key: dialogKey("one", "t"), a: true, trunk: "first"}, "one", []string{"br-1"}, 10)
	s.add(&tomb{key: dialogKey("two", "t"), a: true, trunk: "second"}, "two", nil, 20)
	if tb := s.tomb(dialogKey("one", "t")); tb == nil || tb.trunk != "first" {
		t.Errorf("the older key: %+v", tb)
	}
	if tb := s.tomb(dialogKey("two", "t")); tb == nil || tb.trunk != "second" {
		t.Errorf("the newer key: %+v", tb)
	}
	if s.tomb(dialogKey("one", "u")) != nil || s.tomb(dialogKey("three", "t")) != nil {
		t.Error("a key never buried answered")
	}
	if bs, ok := s.branches("one"); !ok || !reflect.DeepEqual(bs, []string{"br-1"}) {
		t.Errorf("branches of the older Call-ID: %q %v", bs, ok)
	}
	if c, ok := s.corr("two"); !ok || c != "two" {
		t.Errorf("correlation of the newer: %q %v", c, ok)
	}
	// The older record is due first: forgetting it keeps the newer.
	if n, next, ok := s.expire(15, 100); n != 1 || !ok || next != 20 {
		t.Fatalf("expire(15) = %d, %d, %v; want 1, 20, true", n, next, ok)
	}
	if s.tomb(dialogKey("one", "t")) != nil || s.tomb(dialogKey("two", "t")) == nil {
		t.Fatal("after the older record went: it is still found, or the newer is not")
	}
	if _, ok := s.corr("one"); ok {
		t.Error("the forgotten Call-ID still has a correlation")
	}
	if n, _, ok := s.expire(20, 100); n != 1 || ok || s.len() != 0 || s.pending() || len(s.byCallID) != 0 {
		t.Fatalf("expire(20) = %d, %v; len %d, pending %v, %d index entries; want all gone", n, ok, s.len(), s.pending(), len(s.byCallID))
	}
}

// The dialogs of one Call-ID form a chain: the newest tombChainMax are
// found, older ones are not (a bounded walk), and the newest record of the
// Call-ID is what its correlation comes from. A chain that crosses chunks
// and loses its oldest records to expiry still finds the rest.
func TestTombStoreChain(t *testing.T) {
	s := newTombStore()
	n := tombChainMax + 4
	big := strings.Repeat("x", tombChunkSize/8) // eight records a chunk
	for i := range n {
		s.add(&tomb{key: dialogKey("same", fmt.Sprint("t", i)), trunk: big}, fmt.Sprint("corr-", i), nil, int64(i))
	}
	if len(s.chunks) < 2 || s.len() != n || len(s.byCallID) != 1 {
		t.Fatalf("%d chunks, len %d, %d index entries; want several, %d, 1", len(s.chunks), s.len(), len(s.byCallID), n)
	}
	for i := range n {
		found := s.tomb(dialogKey("same", fmt.Sprint("t", i))) != nil
		if want := i >= n-tombChainMax; found != want {
			t.Errorf("dialog %d of %d: found %v, want %v", i, n, found, want)
		}
	}
	if c, ok := s.corr("same"); !ok || c != fmt.Sprint("corr-", n-1) {
		t.Errorf("correlation %q %v, want the newest's", c, ok)
	}
	if got, _, _ := s.expire(int64(n-3), 1000); got != n-2 {
		t.Fatalf("expired %d, want %d", got, n-2)
	}
	for i := range n {
		if found, want := s.tomb(dialogKey("same", fmt.Sprint("t", i))) != nil, i >= n-2; found != want {
			t.Errorf("after expiry, dialog %d: found %v, want %v", i, found, want)
		}
	}
}

// A chunk names at most tombRefsMax endpoints: the next record naming
// another goes to a new chunk, and every record still finds its own.
// Records go strictly in the order added, chunk by chunk.
func TestTombStoreChunks(t *testing.T) {
	s := newTombStore()
	n := tombRefsMax + 10
	eps := make([]*endpoint, n)
	for i := range eps {
		eps[i] = &endpoint{}
		s.add(&tomb{key: dialogKey(fmt.Sprint("call-", i), "t"), ep: eps[i], transport: strings.Repeat("u", i%7)}, "", nil, int64(i))
	}
	if len(s.chunks) != 2 {
		t.Fatalf("%d chunks for %d endpoints, want 2", len(s.chunks), n)
	}
	for i, ep := range eps {
		tb := s.tomb(dialogKey(fmt.Sprint("call-", i), "t"))
		if tb == nil || tb.ep != ep || tb.transport != strings.Repeat("u", i%7) {
			t.Fatalf("record %d: %+v", i, tb)
		}
	}
	for i := range n {
		if got, next, ok := s.expire(int64(i), 100); got != 1 || (i < n-1 && (!ok || next != int64(i+1))) {
			t.Fatalf("expire(%d) = %d, %d, %v", i, got, next, ok)
		}
		if s.tomb(dialogKey(fmt.Sprint("call-", i), "t")) != nil || (i < n-1 && s.tomb(dialogKey(fmt.Sprint("call-", i+1), "t")) == nil) {
			t.Fatalf("after expire(%d): wrong records kept", i)
		}
	}
	if len(s.chunks) > 1 || s.pending() || s.len() != 0 || len(s.byCallID) != 0 {
		t.Fatalf("after all went: %d chunks, pending %v, %d and %d index entries", len(s.chunks), s.pending(), s.len(), len(s.byCallID))
	}
}

// The store's indexes and records hold no pointer: the collector does not
// walk them, however many tombs linger.
func TestTombStoreHoldsNoPointers(t *testing.T) {
	s := newTombStore()
	for _, typ := range []reflect.Type{
		reflect.TypeOf(s.byCallID).Key(), reflect.TypeOf(s.byCallID).Elem(),
		reflect.TypeOf(tombChunk{}.buf).Elem(),
	} {
		if hasPointers(typ) {
			t.Errorf("%v holds pointers", typ)
		}
	}
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return true
	case reflect.Array:
		return hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// pending reports whether the store still keeps any record.
func (s *tombStore) pending() bool {
	return len(s.chunks) > 1 || (len(s.chunks) == 1 && s.head < len(s.chunks[0].buf))
}

// BenchmarkTombStore: one ended call per op at steady state, as at
// 3,000 calls/s with 32 s of linger (~100,000 calls, two tombs each):
// its two dialogs buried, a lookup of a new Call-ID (a new call's check),
// and the sweep of the calls due.
func BenchmarkTombStore(b *testing.B) {
	s := newTombStore()
	const live = 100_000
	ack := []tombAck{{tag: "b-tag", raw: bytes.Repeat([]byte("a"), 400)}}
	keys := make([]string, 2*live)
	for i := range keys {
		keys[i] = dialogKey(fmt.Sprintf("%016x@192.0.2.1", i), "tag")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := 2 * (i % live)
		s.add(&tomb{key: keys[k], a: true, trunk: "carrier", transport: "udp"}, keys[k], []string{"z9hG4bK-1"}, int64(i))
		s.add(&tomb{key: keys[k+1], transport: "udp", acks: ack}, keys[k], nil, int64(i))
		_ = s.findCallID(keys[(k+2)%len(keys)])
		s.expire(int64(i-live), 64)
	}
}
