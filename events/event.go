// Package events is the contract between the SBC and what reports to its
// operator: the audit log, webhooks and other outputs consume Events
// through a Sink. The SBC emits; it never waits for a Sink.
package events

import (
	"sync/atomic"
	"time"
)

// Kind names an event. The set is closed: outputs may filter on it.
type Kind string

// The kinds the SBC emits.
const (
	CallStarted    Kind = "call_started"    // a call was admitted and its B leg is being placed
	CallTerminated Kind = "call_terminated" // a call ended, answered or not
	ConfigChanged  Kind = "config_changed"  // a policy was applied (start or reload)
	ReloadFailed   Kind = "reload_failed"   // a candidate policy was refused
	AuthFailure    Kind = "auth_failure"    // a failed authentication (admin API; SIP digest guesses)
	Blocked        Kind = "blocked"         // a prefix entered the blocklist (automatic or manual)
	Unblocked      Kind = "unblocked"       // a prefix left the blocklist (expiry or manual)
	AdminAction    Kind = "admin_action"    // an admin API call that changed something
	LimitTripped   Kind = "limit_tripped"   // a toll-fraud cap refused calls (Reason: the cap; at most once a minute per cap and source)
	// OutboundRegistration: the SBC's registration with a carrier changed
	// state (Reason: registered, failed, unregistered; Detail: pool,
	// target, code, reason).
	OutboundRegistration Kind = "outbound_registration"
)

// Kinds lists every Kind, for validation of policy filters and docs.
var Kinds = []Kind{CallStarted, CallTerminated, ConfigChanged, ReloadFailed, AuthFailure, Blocked, Unblocked, AdminAction, LimitTripped, OutboundRegistration}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Event is one thing that happened. Fields that do not apply are empty.
// Outputs decide what to redact; the SBC fills in what it knows.
type Event struct {
	Time      time.Time         `json:"ts"`
	Kind      Kind              `json:"event"`
	SessionID string            `json:"session_id,omitempty"` // the SBC's call id (both legs share it)
	CallID    string            `json:"call_id,omitempty"`    // the A leg's SIP Call-ID
	Caller    string            `json:"caller_id,omitempty"`  // From user (number) of the A leg
	Called    string            `json:"called_number,omitempty"`
	SourceIP  string            `json:"source_ip,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
	Realm     string            `json:"realm,omitempty"`
	Trunk     string            `json:"trunk,omitempty"`
	Actor     string            `json:"actor,omitempty"` // admin principal (certificate or key id)
	Reason    string            `json:"reason,omitempty"`
	Duration  time.Duration     `json:"-"`                // answered time of a call; see DurationMS
	Detail    map[string]string `json:"detail,omitempty"` // further fields, kind-specific
}

// DurationMS is Duration in milliseconds, for JSON outputs.
func (e Event) DurationMS() int64 { return e.Duration.Milliseconds() }

// Sink receives events. Emit must not block the caller for long: an
// output that does I/O queues (bounded) and counts what it drops.
type Sink interface {
	Emit(Event)
}

// Discard is a Sink that drops everything.
var Discard Sink = discard{}

type discard struct{}

func (discard) Emit(Event) {}

// Mux fans events out to a set of Sinks that can be replaced at run time
// (a reload adds or removes outputs). The zero Mux discards.
type Mux struct {
	sinks atomic.Pointer[[]Sink]
}

// Set replaces the Sinks.
func (m *Mux) Set(sinks ...Sink) {
	s := append([]Sink(nil), sinks...)
	m.sinks.Store(&s)
}

// Emit passes e to every Sink, filling in Time if it is zero.
func (m *Mux) Emit(e Event) {
	p := m.sinks.Load()
	if p == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, s := range *p {
		s.Emit(e)
	}
}

// Func adapts a function to a Sink.
type Func func(Event)

// Emit calls f.
func (f Func) Emit(e Event) { f(e) }
