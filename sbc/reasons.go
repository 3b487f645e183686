package sbc

import (
	"github.com/sbc-project/sbc/ratelimit"
	"github.com/sbc-project/sbc/sbc/validate"
)

// The catalogue of drop and reject reasons. Every message the SBC drops or
// answers with an error of its own is counted once under a (stage,
// reason) pair of sbc_dropped_total, logged (rate limited) with the same
// two words, and, where the verdict says so, charged to its source as a
// failure. The words are the constants below, never literals at the call
// sites; docs/METRICS.md lists them and metrics_doc_test.go keeps the two
// in step.

// stage is where in the pipeline a message was dropped: the stage label
// of sbc_dropped_total.
type stage string

const (
	stageFilter   stage = "filter"   // read filter on a UDP datagram, before the SIP parser (filter.go)
	stageAccept   stage = "accept"   // accept filter on a TCP connection, before sipgo reads from it (endpoint.go)
	stageParse    stage = "parse"    // sipgo's parser refused the message
	stageValidate stage = "validate" // RFC 3261 checks of sbc/validate, raw (read filter) or parsed (validate.go)
	stageClassify stage = "classify" // who sent it: trunk, backend or nobody we know (classify.go)
	stageAdmit    stage = "admit"    // rate limits and call caps (admit.go)
	stageRoute    stage = "route"    // routing to a pool and target, REGISTER and method policy (route.go, register.go, call.go)
	stageDialog   stage = "dialog"   // in-dialog requests and ACKs without their dialog or transaction (dialog.go)
	stageBridge   stage = "bridge"   // the B2BUA could not send what it had to send (call core)
	stageTLS      stage = "tls"      // a TLS handshake or WebSocket upgrade refused on a tls or wss listener (tls.go)
	stageMedia    stage = "media"    // the media relay of a call could not be set up, or an SDP not relayed (media.go)
	stageStream   stage = "stream"   // a message on an open TCP, TLS or WSS connection, before sipgo parses it (stream.go, filter.go)
	stageAdmin    stage = "admin"    // a connection to the admin listener (adminauth.go)
	stageTransfer stage = "transfer" // a REFER inside a call refused by the SBC's policing or refer mode (transfer.go)
)

// reason is why a message was dropped or rejected: the reason label of
// sbc_dropped_total. Stage validate's reasons are not here: they are
// sbc/validate's Result.Why codes (validate.Whys), used as they are.
type reason string

const (
	reasonBlocked               reason = "blocked"                   // the source is on the blocklist
	reasonSourcePPS             reason = "source_pps"                // the source is over its packet budget (limits.source_pps)
	reasonTrunkPPS              reason = "trunk_pps"                 // a trunk's source on its realm, or a pool target on its pool's, is over limits.trunk_pps
	reasonSourceConnections     reason = "source_connections"        // the source (an IPv4 address or IPv6 /64) holds limits.tcp_connections_per_source connections already
	reasonConnections           reason = "connections"               // peers hold limits.tcp_connections connections already
	reasonMessageTimeout        reason = "message_timeout"           // a message on a connection not complete server.tcp_message_timeout after its first byte
	reasonUDPPeersFull          reason = "udp_peers_full"            // a datagram from an address:port sipgo does not hold, while the realm holds 4 × limits.udp_peers
	reasonMalformed             reason = "malformed"                 // sipgo could not parse the message
	reasonBadSource             reason = "bad_source"                // the request's source address is unreadable
	reasonScannerUA             reason = "scanner_ua"                // the User-Agent is a known scanner's (autoblock.scanner_user_agents); never answered
	reasonUnknownSource         reason = "unknown_source"            // the source is no trunk and no backend of this realm
	reasonTrunkTransport        reason = "trunk_transport"           // a trunk's source over a transport the trunk does not use (its transports); never charged
	reasonSourceCPS             reason = "source_cps"                // a source that is not a trunk is over limits.source_cps (scaled by its trust)
	reasonTrunkCPS              reason = "trunk_cps"                 // the trunk is over its cps
	reasonTrunkCalls            reason = "trunk_calls"               // the trunk has max_calls calls in progress
	reasonRegisterRate          reason = "register_rate"             // the source is over limits.register_rate
	reasonAoRLocked             reason = "aor_locked"                // a REGISTER for an AoR locked for this source after failed guesses (autoblock.register_guesses)
	reasonNoOutboundRoute       reason = "no_outbound_route"         // an INVITE from a backend that no outbound route takes (or from a carrier pool's target)
	reasonDeniedDestination     reason = "denied_destination"        // an outbound call to a number of outbound.deny_prefixes (403 with a Reason header)
	reasonPremiumDestination    reason = "premium_destination"       // an outbound call to outbound.premium_prefixes with deny_premium (403)
	reasonInternational         reason = "international_destination" // an outbound call outside outbound.home_prefix with deny_international (403)
	reasonOutboundPoolCalls     reason = "outbound_pool_calls"       // the source pool has outbound.pool_max_calls outbound calls in progress
	reasonOutboundSourceCalls   reason = "outbound_source_calls"     // the source address has outbound.source_max_calls outbound calls in progress
	reasonOutboundPoolMinutes   reason = "outbound_pool_minutes"     // the source pool used outbound.pool_max_minutes in the window
	reasonOutboundSourceMinutes reason = "outbound_source_minutes"   // the source address used outbound.source_max_minutes in the window
	reasonOverload              reason = "overload"                  // a UDP request (not ACK, BYE or CANCEL) that waited longer than limits.queue_delay in the socket's receive queue: dropped unparsed, never charged (overload.go)
	reasonNoRoute               reason = "no_route"                  // no route for the trunk and request-URI user (INVITE or REGISTER)
	reasonNoTarget              reason = "no_target"                 // the pool has no target up and not yet tried
	reasonRegisterDenied        reason = "register_not_allowed"      // REGISTER from a source that may not register, or for a domain not its own
	reasonMethodNotAllowed      reason = "method_not_allowed"        // an out-of-dialog request of a method the SBC does not take
	reasonNoTransaction         reason = "no_transaction"            // a CANCEL that matches no INVITE transaction
	reasonNoDialog              reason = "no_dialog"                 // an in-dialog request for no dialog the SBC knows (or on the wrong realm)
	reasonCSeqOutOfOrder        reason = "cseq_out_of_order"         // an in-dialog request whose CSeq is not above the last one
	reasonBadACK                reason = "bad_ack"                   // an ACK without a CSeq
	reasonStrayACK              reason = "stray_ack"                 // an ACK for no dialog the SBC knows
	reasonStrayResponse         reason = "stray_response"            // a response from a trunk or backend that matches no transaction of the SBC
	reasonInviteRetransmission  reason = "invite_retransmission"     // an INVITE retransmitted after its call's server transaction ended (the call has it)
	reasonNotDialogPeer         reason = "not_dialog_peer"           // an in-dialog request or ACK for a known dialog from a source that is not that leg's peer
	reasonReplacesNoDialog      reason = "replaces_no_dialog"        // an INVITE whose Replaces names no call through the SBC
	reasonSendFailed            reason = "send_failed"               // a response or request could not be sent
	reasonDialRefused           reason = "dial_refused"              // sipgo was to connect to an address that is no trunk source and no pool target of the realm
	reasonDraining              reason = "draining"                  // the node is draining (admin API): no new calls
	reasonTrunkDisabled         reason = "trunk_disabled"            // the trunk is disabled (admin API): no new calls from it
	reasonRegisterMalformed     reason = "register_malformed"        // a REGISTER whose Contacts or expiry RFC 3261 10.3 refuses (Contact: * with others or a non-zero Expires, an expiry that is no number): 400
	reasonRegisterContacts      reason = "register_contacts"         // a REGISTER with more Contacts than registrations.max_bindings_per_aor: 400
	reasonRegistrationsFull     reason = "registrations_full"        // a REGISTER that would take the cache past registrations.max_bindings or the AoR past max_bindings_per_aor: 503
	reasonRegisterBusy          reason = "register_busy"             // registrations.max_pending REGISTERs wait for the registrar already: 503
	reasonUserUnknown           reason = "user_unknown"              // an INVITE from a backend to a binding token the cache does not hold (never registered, expired and swept, unregistered): 404
	reasonUserUnreachable       reason = "user_unreachable"          // an INVITE to a binding that expired or whose connection (TCP, TLS, WSS) is closed: 480
	reasonReferRefused          reason = "refer_refused"             // a REFER from a trunk or pool whose refer is "refuse" (403)
	reasonReferToInvalid        reason = "refer_to_invalid"          // a REFER without exactly one Refer-To, one over 1024 bytes, unparsable, without a user part, or with a bad Replaces (400)
	reasonReferToScheme         reason = "refer_to_scheme"           // a Refer-To that is no sip: or sips: URI (tel:, http:, ...) (416)
	reasonReferToHeader         reason = "refer_to_header"           // a header embedded in a Refer-To URI other than Replaces: removed, the REFER goes on
	reasonReferReplaces         reason = "refer_replaces_no_dialog"  // a Refer-To whose Replaces names no dialog through the SBC (403)
	reasonReferLocalUnsupported reason = "refer_local_unsupported"   // a REFER refer = "local" cannot carry out: Replaces, media not anchored, the target on another realm, no SDP (501/488)
)

// dropReasons is the closed set of (stage, reason) pairs sbc_dropped_total
// can carry, stage by stage in pipeline order. Stage validate's are
// validate.Whys().
var dropReasons = []struct {
	stage   stage
	reasons []reason
}{
	{stageFilter, []reason{reasonBlocked, reasonSourcePPS, reasonTrunkPPS, reasonUnknownSource, reasonTLSNeedIdentity, reasonTrunkTransport, reasonUDPPeersFull, reasonOverload}},
	{stageAccept, []reason{reasonBlocked, reasonSourcePPS, reasonTrunkPPS, reasonUnknownSource, reasonTLSNeedIdentity, reasonTrunkTransport, reasonSourceConnections, reasonConnections}},
	{stageTLS, tlsReasons},
	{stageStream, []reason{reasonBlocked, reasonSourcePPS, reasonTrunkPPS, reasonMessageTimeout}},
	{stageParse, []reason{reasonMalformed}},
	{stageValidate, validateReasons()},
	{stageClassify, []reason{reasonBadSource, reasonScannerUA, reasonUnknownSource, reasonTLSIdentity, reasonTLSNeedIdentity, reasonTrunkTransport}},
	{stageAdmit, []reason{reasonSourceCPS, reasonTrunkCPS, reasonTrunkCalls, reasonRegisterRate, reasonAoRLocked, reasonDraining, reasonTrunkDisabled,
		reasonRegistrationsFull, reasonRegisterBusy, reasonOutboundPoolCalls, reasonOutboundSourceCalls, reasonOutboundPoolMinutes, reasonOutboundSourceMinutes}},
	{stageRoute, []reason{reasonNoOutboundRoute, reasonDeniedDestination, reasonPremiumDestination, reasonInternational, reasonNoRoute, reasonNoTarget, reasonRegisterDenied, reasonMethodNotAllowed,
		reasonRegisterMalformed, reasonRegisterContacts, reasonUserUnknown, reasonUserUnreachable}},
	{stageDialog, []reason{reasonNoTransaction, reasonNoDialog, reasonCSeqOutOfOrder, reasonBadACK, reasonStrayACK, reasonNotDialogPeer, reasonReplacesNoDialog, reasonStrayResponse, reasonInviteRetransmission}},
	{stageMedia, mediaReasons},
	{stageBridge, []reason{reasonSendFailed, reasonDialRefused}},
	{stageAdmin, []reason{reasonBlocked}},
	{stageTransfer, []reason{reasonReferRefused, reasonReferToInvalid, reasonReferToScheme, reasonReferToHeader, reasonReferReplaces,
		reasonReferLocalUnsupported, reasonNoRoute, reasonNoOutboundRoute, reasonDeniedDestination, reasonPremiumDestination,
		reasonInternational, reasonNoTarget}},
}

func validateReasons() []reason {
	var out []reason
	for _, w := range validate.Whys() {
		out = append(out, reason(w))
	}
	return out
}

// failure is a failure of a source: charged to it in the failure tracker
// (ratelimit.Tracker.Fail), which may block it, unless the trust model
// (trust.go) says it is a trunk's or a pool target's; then it is counted
// for the trunk (sbc_trunk_failures_total) and charged to nobody. It is
// the reason label of sbc_blocks_total for origins auto, observe and
// aggregate. The values are the ratelimit package's reason codes.
type failure string

const (
	failNone           failure = ""
	failUnknownSource  failure = ratelimit.ReasonUnknownSource      // a request from a source no trunk claims
	failMalformed      failure = ratelimit.ReasonMalformed          // a message that failed validation
	failScannerUA      failure = ratelimit.ReasonScannerUA          // a request with a scanner's User-Agent
	failAuth           failure = ratelimit.ReasonAuthFailure        // a call's INVITE with credentials, challenged again (401/407): counted for its trunk only
	failRegisterBrute  failure = ratelimit.ReasonRegisterBruteforce // register_source_guesses failed REGISTER guesses from one source (Guard; blocks at once)
	failBackend403     failure = ratelimit.ReasonBackend403         // the backend answered 403
	failBackend404     failure = ratelimit.ReasonBackend404         // the backend answered 404 (number or user scan)
	failRegisterDenied failure = ratelimit.ReasonRegisterNotAllowed // a REGISTER the policy does not allow
)

// blockFailures are the failures that can block a source (the reason of
// sbc_blocks_total): those charged to sources that are no trunk's and no
// pool target's (charge, trust.go), and the REGISTER guesses of one source
// (register_guard.go).
var blockFailures = []failure{failUnknownSource, failMalformed, failScannerUA, failRegisterBrute, failAdminAuth}

// trunkFailures are the failures counted for a trunk instead of charged
// (the failure label of sbc_trunk_failures_total): those seen from its
// addresses (unknown_source: on a realm that is not the trunk's) and
// those of its calls.
var trunkFailures = []failure{failUnknownSource, failMalformed, failScannerUA, failAuth,
	failBackend403, failBackend404, failRegisterDenied, failAdminAuth}

// The labels of sbc_blocks_total: origin, and the reason of a manual
// block. An operator's block carries a free-text reason on its blocklist
// entry; the metric says only "manual".
const (
	blockOriginAuto      = "auto"      // blocked by the failure tracker; reason: its failure
	blockOriginObserve   = "observe"   // would have been blocked (autoblock.observe); reason: its failure
	blockOriginAggregate = "aggregate" // IPv6 blocks widened to a /56 or /48 (autoblock.aggregate_v6); reason: the failure of the block that completed it
	blockOriginManual    = "manual"    // added through the admin API (sbc block add); reason: blockReasonManual
	blockReasonManual    = "manual"
)

// Results of calls: the result label of sbc_calls_total. An answered call
// counts as answered whatever ended it; the other results are of calls
// that were never answered.
const (
	resultAnswered       = "answered"        // the caller got a 2xx (and the call was not cancelled in the same instant)
	resultBusy           = "busy"            // the backend answered 486 or 600
	resultCancelled      = "cancelled"       // the caller cancelled (CANCEL, or BYE in an early dialog)
	resultRedirected     = "redirected"      // a 3xx relayed to the caller
	resultNotFound       = "not_found"       // the backend answered 404 or 604
	resultNoAnswer       = "no_answer"       // the backend answered 480, or sent BYE in an early dialog
	resultRejected       = "rejected"        // any other 4xx from the backend, or a Replaces for no call (481 from the SBC)
	resultFailed         = "failed"          // a 5xx from the backend that does not fail over (500, 503 and 408 do)
	resultDeclined       = "declined"        // any other final response (6xx but 600 and 604)
	resultNoRoute        = "no_route"        // no route for the trunk and request-URI user (404 from the SBC)
	resultNoTarget       = "no_target"       // no target of the pool left to try (503 from the SBC)
	resultTimeout        = "timeout"         // calls.ring_timeout passed without an answer (408 from the SBC)
	resultAckTimeout     = "ack_timeout"     // the caller never acknowledged the 2xx
	resultUndeliverable  = "undeliverable"   // the 2xx could not be sent to the caller
	resultShutdown       = "shutdown"        // the SBC shut down during call setup
	resultMaxDuration    = "max_duration"    // calls.max_duration (only ever reached by answered calls)
	resultInactivity     = "inactivity"      // calls.inactivity_timeout (only ever reached by answered calls)
	resultMediaTimeout   = "media_timeout"   // media.timeout: no media either way (only ever reached by answered calls)
	resultConsentLost    = "consent_lost"    // an ICE peer (WebRTC) stopped its consent checks for 30 s (RFC 7675)
	resultNoMedia        = "no_media"        // the media relay could not be set up for the INVITE (503 ports exhausted, 488 SDP or encryption refused), or the backend's 2xx SDP could not be relayed (488)
	resultSessionExpired = "session_expired" // the session timer ran out (only ever reached by answered calls)
	resultDialogGone     = "dialog_gone"     // an in-dialog request got 481/408 or no answer: the other side's dialog is gone
	resultAdminHangup    = "admin_hangup"    // hung up through the admin API, or at the deadline of a node drain, before it was answered
)

// hangupBy are the values of who ended a call (the by label of
// sbc_calls_ended_total, the CDR's hangup_by).
var hangupBy = []string{"caller", "callee", "sbc"}

// callResults is every value of sbc_calls_total's result label.
var callResults = []string{resultAnswered, resultBusy, resultCancelled, resultRedirected,
	resultNotFound, resultNoAnswer, resultRejected, resultFailed, resultDeclined, resultNoRoute,
	resultNoTarget, resultTimeout, resultAckTimeout, resultUndeliverable, resultShutdown,
	resultMaxDuration, resultInactivity, resultMediaTimeout, resultConsentLost, resultNoMedia, resultSessionExpired, resultDialogGone, resultAdminHangup}

// Reasons of operator events (package events) that are no drop: the
// reason member of their audit records. Blocks carry the blocklist
// entry's reason (a failure above, or the operator's text); calls their
// result (callResults); reloads their result (reload.go).
const (
	// reasonRegisterGuess: auth_failure for a REGISTER whose credentials
	// the registrar refused, from a source that proved its return path
	// (register_guard.go).
	reasonRegisterGuess = "register_guess"
	// reasonStart: config_changed for the policy an SBC starts with.
	reasonStart = "start"
)
