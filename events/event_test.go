package events

import (
	"testing"
)

func TestMuxFansOutAndReplaces(t *testing.T) {
	var m Mux
	m.Emit(Event{Kind: Blocked}) // zero Mux: no sinks, no panic
	var a, b []Event
	m.Set(Func(func(e Event) { a = append(a, e) }), Func(func(e Event) { b = append(b, e) }))
	m.Emit(Event{Kind: Blocked})
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("fan-out: a=%d b=%d, want 1 and 1", len(a), len(b))
	}
	if a[0].Time.IsZero() {
		t.Fatal("Emit did not stamp the time")
	}
	m.Set(Func(func(e Event) { b = append(b, e) }))
	m.Emit(Event{Kind: Unblocked})
	if len(a) != 1 || len(b) != 2 {
		t.Fatalf("after Set: a=%d b=%d, want 1 and 2", len(a), len(b))
	}
}

func TestKindValid(t *testing.T) {
	for _, k := range Kinds {
		if !k.Valid() {
			t.Errorf("%q not valid", k)
		}
	}
	if Kind("call_startd").Valid() {
		t.Error("a misspelt kind is valid")
	}
}
