package cdr

import (
	"strconv"
	"strings"
	"time"
)

// Version is the record format's version (the "cdr_v" field).
const Version = 1

// Who hung up: the values of Record.HangupBy.
const (
	ByCaller = "caller"
	ByCallee = "callee"
	BySBC    = "sbc"
)

// Record is one call. Times are UTC; zero times (a call never answered)
// are left out.
type Record struct {
	V         int        `json:"cdr_v"`
	Node      string     `json:"node,omitempty"`
	Session   string     `json:"session_id"`          // the SBC's id of the call (both legs)
	CallIDA   string     `json:"call_id_a"`           // the caller's Call-ID
	CallIDB   string     `json:"call_id_b,omitempty"` // the backend leg's Call-ID (the answered one, else the last tried)
	TrunkIn   string     `json:"trunk_in"`            // the caller's trunk
	TrunkOut  string     `json:"trunk_out,omitempty"` // the pool the call was routed to
	Target    string     `json:"target,omitempty"`    // the pool target of call_id_b (ip:port)
	Src       string     `json:"src"`                 // the caller's source ip:port
	Transport string     `json:"transport"`           // the caller's transport
	From      string     `json:"from"`                // the caller's From URI
	To        string     `json:"to"`                  // the caller's To URI
	RURI      string     `json:"ruri"`                // the caller's request-URI
	Start     time.Time  `json:"start"`
	Answer    *time.Time `json:"answer,omitempty"`
	End       time.Time  `json:"end"`
	// DurationMS is End - Start; BillableMS is End - Answer (0 when not
	// answered).
	DurationMS int64 `json:"duration_ms"`
	BillableMS int64 `json:"billable_ms"`
	// SIPCode and SIPReason are the final response to the caller's INVITE
	// (200 for an answered call).
	SIPCode   int    `json:"sip_code"`
	SIPReason string `json:"sip_reason,omitempty"`
	// Q850 is the Q.850 cause; Q850Source where it came from: "reason"
	// (a Reason header), "sip" (mapped from SIPCode) or "end" (from how
	// the call ended).
	Q850       int    `json:"q850_cause"`
	Q850Source string `json:"q850_source"`
	HangupBy   string `json:"hangup_by"`  // caller, callee or sbc
	SBCReason  string `json:"sbc_reason"` // the call's result (sbc_calls_total's result label)
	// Media holds one entry per media stream (m= line) the SBC relayed;
	// empty without anchoring.
	Media []Stream `json:"media,omitempty"`
}

// Stream is one relayed media stream: per leg, what the relay received
// from that leg's peer, and the leg's encryption.
type Stream struct {
	A Leg `json:"a"`
	B Leg `json:"b"`
}

// Leg is one side of a media stream.
type Leg struct {
	Encryption string `json:"encryption"` // none, sdes or dtls
	Packets    uint64 `json:"packets"`    // valid packets received (RTP and RTCP)
	Bytes      uint64 `json:"bytes"`
	Forwarded  uint64 `json:"forwarded"` // sent on to the other leg
	Dropped    uint64 `json:"dropped"`   // refused (any reason)
}

// Finish sets the durations from the times.
func (r *Record) Finish() {
	r.V = Version
	r.DurationMS = r.End.Sub(r.Start).Milliseconds()
	if r.Answer != nil {
		r.BillableMS = r.End.Sub(*r.Answer).Milliseconds()
	}
	if r.DurationMS < 0 {
		r.DurationMS = 0
	}
	if r.BillableMS < 0 {
		r.BillableMS = 0
	}
}

// Q.850 causes used here (ITU-T Q.850 table 1).
const (
	CauseUnallocated       = 1   // unallocated (unassigned) number
	CauseNormalClearing    = 16  // normal call clearing
	CauseUserBusy          = 17  // user busy
	CauseNoUserResponding  = 18  // no user responding
	CauseNoAnswer          = 19  // no answer from user (user alerted)
	CauseCallRejected      = 21  // call rejected
	CauseNumberChanged     = 22  // number changed
	CauseRoutingError      = 25  // exchange routing error
	CauseInvalidNumber     = 28  // invalid number format
	CauseNetworkOutOfOrder = 38  // network out of order
	CauseTemporaryFailure  = 41  // temporary failure
	CauseServiceNotAvail   = 63  // service or option not available
	CauseNotImplemented    = 79  // service or option not implemented
	CauseIncompatibleDest  = 88  // incompatible destination
	CauseRecoveryOnTimer   = 102 // recovery on timer expiry
	CauseInterworking      = 127 // interworking, unspecified
)

// sipToQ850 is RFC 3398 section 8.2.6.1 (SIP status to ISUP cause). 488
// and 606 are mapped "by Warning header" there; they take 88
// (incompatible destination), as FreeSWITCH does.
var sipToQ850 = map[int]int{
	400: CauseTemporaryFailure, 401: CauseCallRejected, 402: CauseCallRejected,
	403: CauseCallRejected, 404: CauseUnallocated, 405: CauseServiceNotAvail,
	406: CauseNotImplemented, 407: CauseCallRejected, 408: CauseRecoveryOnTimer,
	410: CauseNumberChanged, 413: CauseInterworking, 414: CauseInterworking,
	415: CauseNotImplemented, 416: CauseInterworking, 420: CauseInterworking,
	421: CauseInterworking, 423: CauseInterworking, 480: CauseNoUserResponding,
	481: CauseTemporaryFailure, 482: CauseRoutingError, 483: CauseRoutingError,
	484: CauseInvalidNumber, 485: CauseUnallocated, 486: CauseUserBusy,
	488: CauseIncompatibleDest, 500: CauseTemporaryFailure, 501: CauseNotImplemented,
	502: CauseNetworkOutOfOrder, 503: CauseTemporaryFailure, 504: CauseRecoveryOnTimer,
	505: CauseInterworking, 513: CauseInterworking, 600: CauseUserBusy,
	603: CauseCallRejected, 604: CauseUnallocated, 606: CauseIncompatibleDest,
}

// CauseFromSIP maps a final SIP status to a Q.850 cause by RFC 3398; a
// 3xx-6xx it does not list is 127 (interworking, unspecified), as RFC
// 3398 does for the codes it marks (+). 487 (the caller cancelled) has no
// mapping there: it is 16, normal clearing (the caller hung up). 0 for
// anything else (a 2xx is no failure).
func CauseFromSIP(code int) int {
	if c, ok := sipToQ850[code]; ok {
		return c
	}
	switch {
	case code == 487:
		return CauseNormalClearing
	case code >= 300 && code < 700:
		return CauseInterworking
	}
	return 0
}

// ParseReason reads a Q.850 cause from the values of Reason headers (RFC
// 3326): the first `Q.850;cause=N` with 1 <= N <= 127. ok is false when
// none carries one (a SIP protocol reason, or none).
func ParseReason(values ...string) (cause int, ok bool) {
	for _, hv := range values {
		// One header may list several reasons, comma-separated.
		for _, r := range strings.Split(hv, ",") {
			proto, params, _ := strings.Cut(strings.TrimSpace(r), ";")
			if !strings.EqualFold(strings.TrimSpace(proto), "Q.850") {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if !strings.EqualFold(strings.TrimSpace(k), "cause") {
					continue
				}
				n, err := strconv.Atoi(strings.TrimSpace(val))
				if err == nil && n >= 1 && n <= 127 {
					return n, true
				}
			}
		}
	}
	return 0, false
}
