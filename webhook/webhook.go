// Package webhook POSTs operator events (package events) and call detail
// records to an HTTP endpoint as signed JSON, from a bounded queue with
// retries, and gives receivers Verify to check what they get.
//
// # The request
//
//	POST <url>
//	Content-Type: application/json
//	User-Agent: sbc-webhook/1
//	X-SBC-Delivery: <id>              the same on every attempt of one event
//	X-SBC-Event: <kind>               call_terminated, blocked, …, or cdr
//	X-SBC-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
//	{"id":"<id>","kind":"<kind>","ts":"<RFC 3339>","data":{…the event or CDR…}}
//
// The signature covers the timestamp and the exact body bytes; each
// attempt is signed anew with the time it is sent. A receiver checks it
// with Verify, which refuses a timestamp more than DefaultTolerance (5
// minutes) from its clock, so a captured request cannot be replayed later;
// within the window, a receiver that must not act twice remembers the
// delivery ids it has seen for 5 minutes (retries reuse the id).
//
// # Delivery
//
// One goroutine per webhook sends the events in order. A 2xx is success;
// a 408, 429, 5xx or a transport error is retried after a backoff that
// starts at 500ms and doubles up to MaxBackoff, until MaxAttempts; any
// other status is final (a receiver that refuses the request will not
// accept it later). Emit and Send never block: an event that finds the
// queue full is dropped. Every outcome is counted (Stats).
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/events"
)

// Header names.
const (
	SignatureHeader = "X-SBC-Signature"
	DeliveryHeader  = "X-SBC-Delivery"
	EventHeader     = "X-SBC-Event"
)

// DefaultTolerance is how far from the receiver's clock a signature's
// timestamp may be (the replay window).
const DefaultTolerance = 5 * time.Minute

// Config configures a Hook.
type Config struct {
	Name   string
	URL    string
	Secret []byte
	// Kinds are the event kinds (and "cdr") the hook sends.
	Kinds []string
	// Timeout of one attempt; default 5s.
	Timeout time.Duration
	// MaxAttempts per event, the first included; default 6.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt (default 500ms),
	// doubled after each further one up to MaxBackoff (default 30s).
	Backoff, MaxBackoff time.Duration
	// Queue bounds the events waiting; default 1024.
	Queue int
	// Client sends the requests; default a client with Timeout and no
	// redirects followed.
	Client *http.Client
	// OnError, if set, is told why an event was given up (from the
	// hook's goroutine).
	OnError func(error)
}

// Stats are a Hook's counters.
type Stats struct {
	Delivered uint64 // events the receiver took (2xx)
	Retries   uint64 // attempts after a failed one
	Failed    uint64 // events given up (attempts exhausted, a final status, or Close)
	Dropped   uint64 // events refused because the queue was full, or after Close
}

// Hook is one webhook.
type Hook struct {
	cfg   Config
	kinds map[string]bool
	q     chan delivery

	mu     sync.RWMutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	delivered, retries, failed, dropped atomic.Uint64
}

type delivery struct {
	id, kind string
	body     []byte
}

// New starts a Hook.
func New(cfg Config) *Hook {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	h := &Hook{cfg: cfg, kinds: map[string]bool{}, q: make(chan delivery, cfg.Queue), done: make(chan struct{})}
	for _, k := range cfg.Kinds {
		h.kinds[k] = true
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.run()
	return h
}

// Name is the hook's name.
func (h *Hook) Name() string { return h.cfg.Name }

// Wants reports whether the hook sends kind.
func (h *Hook) Wants(kind string) bool { return h.kinds[kind] }

// Emit queues an event of a kind the hook sends (events.Sink).
func (h *Hook) Emit(e events.Event) {
	if !h.kinds[string(e.Kind)] {
		return
	}
	data, err := json.Marshal(eventJSON{Event: e, DurationMS: e.DurationMS()})
	if err != nil {
		h.dropped.Add(1)
		return
	}
	h.send(string(e.Kind), e.Time, data)
}

// eventJSON adds duration_ms to an Event's JSON.
type eventJSON struct {
	events.Event
	DurationMS int64 `json:"duration_ms,omitempty"`
}

// Send queues a payload (JSON) of kind, if the hook sends that kind. It
// reports whether it was queued.
func (h *Hook) Send(kind string, data json.RawMessage) bool {
	if !h.kinds[kind] {
		return false
	}
	return h.send(kind, time.Now(), data)
}

func (h *Hook) send(kind string, ts time.Time, data []byte) bool {
	var idb [12]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	body, err := json.Marshal(struct {
		ID   string          `json:"id"`
		Kind string          `json:"kind"`
		TS   time.Time       `json:"ts"`
		Data json.RawMessage `json:"data"`
	}{id, kind, ts.UTC(), data})
	if err != nil {
		h.dropped.Add(1)
		return false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		h.dropped.Add(1)
		return false
	}
	select {
	case h.q <- delivery{id: id, kind: kind, body: body}:
		return true
	default:
		h.dropped.Add(1)
		return false
	}
}

// Stats returns the counters.
func (h *Hook) Stats() Stats {
	return Stats{Delivered: h.delivered.Load(), Retries: h.retries.Load(), Failed: h.failed.Load(), Dropped: h.dropped.Load()}
}

// Close stops taking events and gives those queued until timeout to be
// delivered; what is left then is given up (counted as failed).
func (h *Hook) Close(timeout time.Duration) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.q)
	h.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-h.done:
	case <-t.C:
		h.cancel()
		<-h.done
	}
	h.cancel()
}

func (h *Hook) run() {
	defer close(h.done)
	for d := range h.q {
		if h.ctx.Err() != nil {
			h.failed.Add(1)
			continue
		}
		h.deliver(d)
	}
}

// errFinal is a status the receiver will not change its mind about.
type errFinal struct{ status int }

func (e errFinal) Error() string { return "status " + strconv.Itoa(e.status) }

func (h *Hook) deliver(d delivery) {
	wait := h.cfg.Backoff
	var err error
	for attempt := 1; attempt <= h.cfg.MaxAttempts; attempt++ {
		if attempt > 1 {
			h.retries.Add(1)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-h.ctx.Done():
				t.Stop()
				h.giveUp(d, h.ctx.Err())
				return
			}
			wait = min(2*wait, h.cfg.MaxBackoff)
		}
		if err = h.attempt(d); err == nil {
			h.delivered.Add(1)
			return
		}
		var fe errFinal
		if errors.As(err, &fe) || h.ctx.Err() != nil {
			break
		}
	}
	h.giveUp(d, err)
}

func (h *Hook) giveUp(d delivery, err error) {
	h.failed.Add(1)
	if h.cfg.OnError != nil {
		h.cfg.OnError(fmt.Errorf("webhook %s: %s %s given up: %w", h.cfg.Name, d.kind, d.id, err))
	}
}

func (h *Hook) attempt(d delivery) error {
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(d.body))
	if err != nil {
		return errFinal{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sbc-webhook/1")
	req.Header.Set(DeliveryHeader, d.id)
	req.Header.Set(EventHeader, d.kind)
	req.Header.Set(SignatureHeader, Sign(h.cfg.Secret, time.Now(), d.body))
	res, err := h.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	switch s := res.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		return fmt.Errorf("status %d", s)
	default:
		return errFinal{status: s}
	}
}

// Sign returns the X-SBC-Signature value of body sent at ts:
// "t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
func Sign(secret []byte, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac(secret, t, body))
}

func mac(secret []byte, t string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(t))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrNoSignature = errors.New("webhook: no valid signature header")
	ErrTimestamp   = errors.New("webhook: signature timestamp outside the tolerance")
	ErrSignature   = errors.New("webhook: signature does not match")
)

// Verify checks a request's X-SBC-Signature header value against body
// (the exact bytes received) and secret, at time now: the timestamp must
// be within tolerance of now (DefaultTolerance if 0), and one v1 value
// must match (compared in constant time). Several v1 values are allowed,
// for a secret being rotated.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil && len(b) == sha256.Size {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignature
}
