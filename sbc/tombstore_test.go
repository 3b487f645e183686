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

// Keys whose hashes collide never answer for each other: the newer record
// is found under its own key, the older is not found (forgotten early),
// and forgetting the older one leaves the newer in place.
func TestTombStoreCollisions(t *testing.T) {
	s := newTombStore()
	s.mask = 0 // every key hashes to 0
	s.add(&tomb{key: dialogKey("one", "t"), a: true, trunk: "first"}, "one", []string{"br-1"}, 10)
	s.add(&tomb{key: dialogKey("two", "t"), a: true, trunk: "second"}, "two", nil, 20)
	if s.tomb(dialogKey("one", "t")) != nil {
		t.Error("the older key answered for the newer record")
	}
	if tb := s.tomb(dialogKey("two", "t")); tb == nil || tb.trunk != "second" {
		t.Errorf("the newer key: %+v", tb)
	}
	if _, ok := s.branches("one"); ok {
		t.Error("branches of the older Call-ID from the newer record")
	}
	if c, ok := s.corr("two"); !ok || c != "two" {
		t.Errorf("correlation of the newer: %q %v", c, ok)
	}
	// The older record is due first: forgetting it keeps the newer.
	if n, next, ok := s.expire(15, 100); n != 1 || !ok || next != 20 {
		t.Fatalf("expire(15) = %d, %d, %v; want 1, 20, true", n, next, ok)
	}
	if s.tomb(dialogKey("two", "t")) == nil {
		t.Fatal("forgetting the older record dropped the newer")
	}
	if n, _, ok := s.expire(20, 100); n != 1 || ok || s.len() != 0 || s.pending() {
		t.Fatalf("expire(20) = %d, %v; len %d, pending %v; want all gone", n, ok, s.len(), s.pending())
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
		reflect.TypeOf(s.byKey).Key(), reflect.TypeOf(s.byKey).Elem(),
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
