package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbc-project/sbc/events"
)

var secret = []byte("0123456789abcdef-test-secret")

// receiver is a webhook endpoint on loopback that verifies what it gets.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	accepted []map[string]any
	rejected []error
	ids      map[string]int // delivery id → attempts seen
	fail     atomic.Int32   // answer 500 to this many more requests
	status   atomic.Int32   // if set, answer this status (after fail)
	gate     chan struct{}  // if set, each request waits for it
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ids: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.srv.Listener.Close()
	r.srv.Listener = ln
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.gate != nil {
		<-r.gate
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.ids[req.Header.Get(DeliveryHeader)]++
	r.mu.Unlock()
	if r.fail.Load() > 0 {
		r.fail.Add(-1)
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	if s := r.status.Load(); s != 0 {
		http.Error(w, "no", int(s))
		return
	}
	if err := Verify(secret, req.Header.Get(SignatureHeader), body, time.Now(), 0); err != nil {
		r.mu.Lock()
		r.rejected = append(r.rejected, err)
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.accepted = append(r.accepted, m)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) count() (acc, rej int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.accepted), len(r.rejected)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestDeliveredAndVerified: a selected event arrives signed, the
// receiver's Verify accepts it, its envelope carries the event; kinds not
// selected are not sent.
func TestDeliveredAndVerified(t *testing.T) {
	r := newReceiver(t)
	h := New(Config{Name: "ops", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked", "cdr"}})
	defer h.Close(5 * time.Second)
	h.Emit(events.Event{Kind: events.Blocked, SourceIP: "192.0.2.1", Reason: "unknown_source", Time: time.Now()})
	h.Emit(events.Event{Kind: events.ConfigChanged, Time: time.Now()}) // not selected
	if !h.Send("cdr", json.RawMessage(`{"cdr_v":1,"call_id_a":"x"}`)) {
		t.Fatal("cdr not queued")
	}
	waitFor(t, "two deliveries", func() bool { return h.Stats().Delivered == 2 })
	acc, rej := r.count()
	if acc != 2 || rej != 0 {
		t.Fatalf("accepted %d rejected %d", acc, rej)
	}
	r.mu.Lock()
	ev, cdr := r.accepted[0], r.accepted[1]
	r.mu.Unlock()
	if ev["kind"] != "blocked" || ev["data"].(map[string]any)["source_ip"] != "192.0.2.1" || ev["id"] == "" {
		t.Fatalf("event envelope %v", ev)
	}
	if cdr["kind"] != "cdr" || cdr["data"].(map[string]any)["call_id_a"] != "x" {
		t.Fatalf("cdr envelope %v", cdr)
	}
}

// TestVerifyRejectsTamperingAndReplay: a changed body, a wrong secret, a
// timestamp outside the window and a missing header are refused with
// their errors; the untouched request passes.
func TestVerifyRejectsTamperingAndReplay(t *testing.T) {
	body := []byte(`{"id":"1","kind":"blocked","data":{}}`)
	now := time.Now()
	sig := Sign(secret, now, body)
	if err := Verify(secret, sig, body, now, 0); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	tampered := []byte(`{"id":"1","kind":"unblocked","data":{}}`)
	for _, tc := range []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"tampered body", secret, sig, tampered, now, ErrSignature},
		{"wrong secret", []byte("another-secret-of-16+"), sig, body, now, ErrSignature},
		{"replayed after 6 minutes", secret, sig, body, now.Add(6 * time.Minute), ErrTimestamp},
		{"timestamp from the future", secret, sig, body, now.Add(-6 * time.Minute), ErrTimestamp},
		{"no header", secret, "", body, now, ErrNoSignature},
		{"no v1", secret, "t=123", body, now, ErrNoSignature},
	} {
		if err := Verify(tc.secret, tc.header, tc.body, tc.now, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A rotated secret: two v1 values, one matches.
	both := sig + ",v1=" + Sign([]byte("another-secret-of-16+"), now, body)[len("t=1234567890,v1="):]
	if err := Verify(secret, both, body, now, 0); err != nil {
		t.Fatalf("two signatures: %v", err)
	}
}

// TestTamperedRequestRejectedByReceiver: a man in the middle changes the
// body of a genuine signed request: the receiver refuses it.
func TestTamperedRequestRejectedByReceiver(t *testing.T) {
	r := newReceiver(t)
	var tamper atomic.Bool
	tamper.Store(true)
	client := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if tamper.Load() {
			b, _ := io.ReadAll(req.Body)
			b = append(b[:len(b)-1], []byte(`,"x":1}`)...)
			req.Body = io.NopCloser(bytes.NewReader(b))
			req.ContentLength = int64(len(b))
		}
		return http.DefaultTransport.RoundTrip(req)
	})}
	h := New(Config{Name: "ops", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked"}, Client: client, MaxAttempts: 1})
	defer h.Close(5 * time.Second)
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	waitFor(t, "the tampered request given up", func() bool { return h.Stats().Failed == 1 })
	if acc, rej := r.count(); acc != 0 || rej != 1 {
		t.Fatalf("accepted %d rejected %d, want 0 1", acc, rej)
	}
	r.mu.Lock()
	err := r.rejected[0]
	r.mu.Unlock()
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("rejected with %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRetriesAfter500: the receiver fails twice with 500; the third
// attempt, with the same delivery id, succeeds; retries are counted.
// A 400 is final: no retry.
func TestRetriesAfter500(t *testing.T) {
	r := newReceiver(t)
	r.fail.Store(2)
	h := New(Config{Name: "ops", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked"},
		Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	defer h.Close(5 * time.Second)
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	waitFor(t, "delivery", func() bool { return h.Stats().Delivered == 1 })
	st := h.Stats()
	if st.Retries != 2 || st.Failed != 0 {
		t.Fatalf("stats %+v, want 2 retries", st)
	}
	r.mu.Lock()
	for id, n := range r.ids {
		if n != 3 {
			t.Errorf("delivery %s seen %d times, want 3 (one id for all attempts)", id, n)
		}
	}
	r.mu.Unlock()

	r.status.Store(http.StatusBadRequest)
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	waitFor(t, "a final status given up", func() bool { return h.Stats().Failed == 1 })
	if st := h.Stats(); st.Retries != 2 {
		t.Fatalf("a 400 was retried: %+v", st)
	}

	// Attempts exhausted against a receiver that always fails.
	r.status.Store(0)
	r.fail.Store(1000)
	h2 := New(Config{Name: "ops2", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked"},
		MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	defer h2.Close(5 * time.Second)
	h2.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	waitFor(t, "attempts exhausted", func() bool { return h2.Stats().Failed == 1 })
	if st := h2.Stats(); st.Retries != 2 || st.Delivered != 0 {
		t.Fatalf("stats %+v, want 2 retries, given up", st)
	}
}

// TestQueueOverflowCounted: with the receiver stalled, a queue of 2 takes
// one event in flight and two waiting; the rest are dropped and counted,
// and Emit never blocks.
func TestQueueOverflowCounted(t *testing.T) {
	r := newReceiver(t)
	r.gate = make(chan struct{})
	h := New(Config{Name: "ops", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked"}, Queue: 2})
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	// The first event leaves the queue for the stalled receiver.
	waitFor(t, "first event in flight", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.ids) == 1 || len(h.q) == 0
	})
	const n = 50
	for i := 0; i < n; i++ {
		h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	}
	if st := h.Stats(); st.Dropped != n-2 {
		t.Fatalf("dropped %d, want %d", st.Dropped, n-2)
	}
	close(r.gate)
	waitFor(t, "the queued events", func() bool { return h.Stats().Delivered == 3 })
	h.Close(5 * time.Second)
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	if st := h.Stats(); st.Dropped != n-1 {
		t.Fatalf("after Close: dropped %d, want %d", st.Dropped, n-1)
	}
}

// TestCloseGivesUpStuckDeliveries: Close waits at most its timeout for a
// receiver that never answers.
func TestCloseGivesUpStuckDeliveries(t *testing.T) {
	r := newReceiver(t)
	r.gate = make(chan struct{})
	defer close(r.gate)
	h := New(Config{Name: "ops", URL: r.srv.URL, Secret: secret, Kinds: []string{"blocked"}, Timeout: time.Minute})
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	h.Emit(events.Event{Kind: events.Blocked, Time: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { h.Close(50 * time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	if st := h.Stats(); st.Failed != 2 || st.Delivered != 0 {
		t.Fatalf("stats %+v, want both given up", st)
	}
}
