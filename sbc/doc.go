// Package sbc is the B2BUA: one sipgo user agent per realm, the pipeline
// every request goes through, the calls, the admin API and metrics.
//
// # Vocabulary
//
//   - realm / endpoint: a network the SBC faces (policy [[realm]]) and its
//     runtime form (endpoint.go): one sipgo UA with its listeners, so that
//     a request towards a backend always leaves from the internal face.
//   - face: what the SBC advertises on a realm for a transport (Via,
//     Contact host and port; topology.Face).
//   - trunk: a known carrier or peer, recognised by source prefix.
//   - pool / target: a group of backends and one backend (route.go).
//   - A-leg / B-leg: the dialog with the caller (the SBC is its UAS) and the
//     dialog with the backend (the SBC is its UAC). leg.go.
//   - branch: one INVITE sent to one target while the call is set up
//     (failover and followed redirects make several; a forking backend may
//     answer one branch from several dialogs).
//   - snapshot: everything built from one policy (sbc.go). A reload builds
//     a new one and swaps it atomically; a call keeps the snapshot it
//     started with, and its in-dialog requests are classified with it.
//
// # The pipeline, in order
//
//	stage        file                   entry
//	0 filter     filter.go, gate.go     readFilter (UDP datagrams and WebSocket messages,
//	                                    before sipgo parses), acceptFilter.Accept in
//	                                    endpoint.go (connections); the gate drops
//	             stream.go, conns.go    unknown sources there (drop mode); streamConn
//	                                    frames and checks each message of a TCP or TLS
//	                                    connection; connTable caps connections and
//	             udppeers.go, dial.go   closes those of a blocked source; udpPeers
//	                                    bounds sipgo's UDP peer entries; sipgo dials
//	                                    trunk sources and pool targets only
//	             udpbatch_linux.go,     a batch reader filters its batch at once and
//	             trying.go              answers a trunk's or backend's new INVITEs
//	                                    100 Trying from their bytes (earlyTrying)
//	1 classify   classify.go            SBC.classify: trunk by source prefix, backend, or unknown
//	2 validate   validate.go, validate/ SBC.validateRequest: RFC 3261 checks the parser lacks
//	3 admit      admit.go               SBC.admitInvite, SBC.admitRegister: rates and call caps;
//	             outbound.go            SBC.admitOutbound: a backend's calls out (outbound caps);
//	             register_guard.go      SBC.registerLocked: AoRs locked for a source
//	4 route      route.go, health.go    policy RouteFor → pool.pick (health: healthLoop, passive);
//	             outbound.go            routeOutbound: OutboundRouteAt (time-of-day windows) → carrier pools, deny lists
//	5 bridge     call*.go, dialog.go    SBC.newCall (new INVITE), SBC.inDialog / SBC.onAck
//	             headerrules.go         call.headerRules: [[header_rule]]s, last, on what the call sends
//	6 watch      watch.go, trust.go,    SBC.charge (the trust model), SBC.fail, SBC.watchResponse,
//	             register_guard.go      SBC.watchRegister: failures, trunk health, guesses, auto-block
//
// Beside the pipeline, the operator outputs (outputs.go), opened by Start
// and closed by Close: the CDR of each call (cdr.go, built in the call's
// end action), the HEP export of every message read (at the read filter)
// and written (sipgo's write hook) (hep.go), and the webhooks, which are
// Sinks of the events the SBC emits and take CDRs too.
//
// Beside the pipeline too: the SBC's own registrations with carriers
// (outreg.go: one goroutine per [pool.register] and target, started by
// Start and reloads, unregistered by Close and reloads), and the resolver
// of host-name pool targets (resolve.go: A/AAAA with a TTL cache; the
// policy in force is the file's with the names replaced by their
// addresses, and a change of addresses is applied as a reload).
//
// pipeline.go wires them: SBC.handle is the entry of every request but ACK.
// An in-dialog request is matched to its call before stage 1, so that it
// is classified with the call's snapshot.
//
// # The trust model
//
// A UDP source address can be forged (trust.go says it in full, README and
// docs/TRUST.md for the operator). Failures that need no return path
// (malformed or junk datagrams, scanner User-Agents, unknown sources,
// REGISTERs not allowed) are charged (verdict.fail → act → charge) only to
// sources that are no trunk's, no pool target and no learnt peer; for a
// trunk's address they count in sbc_trunk_failures_total and the trunk
// health line. The outcomes of a trunk's calls (the backends' 403/404,
// failed authentication) are its callers' and only counted for the trunk.
// Trunks are never demoted or blocked automatically. Failures that prove
// a return path (a REGISTER guess answering a nonce challenged to that
// source, or on a connection) are counted per source and AoR by the guess
// guard (register_guard.go) and may lock an AoR or block a source that may
// register. The never-block list holds the sources of trunks that may not
// register, the pool targets, the admin listener's address and the clients
// that authenticated to it (adminauth.go),
// the TLS peers that proved a trunk, and never_block; manual blocks of it
// need force, IPv6 aggregation never widens over it. Packet budgets are
// per realm: a trunk (pool target) has limits.trunk_pps on its own realm
// only.
//
// # Operator events
//
// The SBC emits events.Event values (s.emit) into a Mux whose outputs are
// Options.Events and the audit log (audit.go): config_changed at New and
// at each reload (reload.go), call_started in newCall once the call is
// admitted and call_terminated in call.finish (an action, after the call
// lock: emitting never blocks), auth_failure in watchRegister for a
// proven REGISTER guess, blocked/unblocked from the blocklist's change
// feed (auditBlocks). The keyring of secrets at rest lives beside the
// audit log (SBC.Keyring); at start and after each reload the DTLS key
// of state_dir is re-sealed under the current master key if a previous
// one sealed it (resealDTLSKey).
//
// What survives a reload: the blocklist, rate-limit buckets, failure and
// guess counts, AoR locks, learnt peers (defence.go), target health (kept per pool and address), the
// calls in progress with their snapshots. What a reload applies and what
// needs a restart is the table in reload.go.
//
// # The call state machine
//
// A call (call.go) is changed only by its transition function, step
// (call_fsm.go), which runs under the call's lock, touches no socket and
// queues actions; the actions run after the lock is released, one at a
// time and in order (call_exec.go). Nothing calls into sipgo while holding
// a call's lock; sipgo's OnCancel hook (which runs under sipgo's own
// transaction lock) only posts an event and returns. Nothing waits for an
// answer: an INVITE's responses, a relayed request's, a BYE's or a
// CANCEL's come by callback (endpoint.start, doAsync) and are posted as
// events. Over UDP these callbacks and the request handlers run in the
// socket's read loops (third_party/sipgo: no goroutine per message), so
// a handler that answers later detaches its transaction
// (endpoint.detach), and an action that may block (a send over a
// connection) moves the rest of the queue to a goroutine (call.blocks).
//
// Phases of the call:
//
//	          evStart: INVITE to the first target
//	setup ───────────────────────────────────────────────┐
//	  │ 1xx: relayed to A (never after A's final)        │ non-2xx final, no target left,
//	  │ 503/500/408, no answer in target_timeout,        │ CANCEL, ring timeout, early BYE,
//	  │   transport error: next target (failover)        │ terminate
//	  │   (outbound: 408 or any 5xx; then the next       │
//	  │   carrier pool of the route)                     │
//	  │ 401/407 of a pool with [pool.auth]: the same     │
//	  │   target again with credentials (once)           │
//	  │ 3xx: relayed, or followed (follow_redirects)     ▼
//	  │ 2xx of the branch being tried              ended (result recorded once;
//	  ▼                                              stray dialogs still ACKed/BYEd,
//	accepted ── CANCEL won inside sipgo, 2xx           branches still CANCELled)
//	  │         undeliverable, no ACK in 64*T1 ──────────▲
//	  │ A's ACK: B's 2xx ACKed (with A's body)           │
//	  ▼                                                  │
//	confirmed ── BYE from either leg, terminate (admin, shutdown, max_duration,
//	             inactivity, session timer), 481/408 to a relayed request ──┘
//
// Events (evKind): start, cancel, b_response (any response to a branch's
// INVITE; 2xx retransmissions and other forks' 2xx, through sipgo's
// OnRetransmission hook or, once the transaction is over, as a stray
// response, are matched to the call by the call table (retransmitted2xx)
// and come as the same event), b_done (the INVITE transaction
// ended without a final), timer, ack, bye, request (other in-dialog
// requests), relay_response, relay_done, a_delivery_failed, terminate.
//
// Actions (actKind): respond_a, respond, invite, cancel, write (ACK), bye,
// relay, terminate_tx, log, target_failed, end, bury, end_tx, send,
// close_media.
//
// Media in transitions (media.go): an offer or answer is applied under
// the call's lock, and what needs a socket is done around it. Relay ports
// for the m= lines an in-dialog offer adds are bound before the request's
// event is posted (preallocLines, outside the lock) and travel in the
// event; the transition takes them by line index, and close_media closes
// what it did not take, the lines a refused offer added, and a DTLS
// association an answer replaced (retired at once, so it keys nothing
// more; its close_notify is a send).
//
// Memory (tomb.go): an established call holds its legs and dialogs, not
// the messages that made them: once A's ACK confirms it, A's INVITE and
// the 2xx resent to A go, and A's and the kept branch's INVITE
// transactions are ended (end_tx); its ACK to B is kept as bytes. An
// ended call is buried by its end action: each dialog key in the call
// table then finds a tomb, a record of a few hundred bytes (who may speak
// for the dialog, the ACK bytes) kept where the collector does not walk
// it (tombstore.go), that answers what comes late for lingerFor
// (64*T1): ACK absorbed, BYE 200, other requests 481, a retransmitted 2xx
// the same ACK, an unknown fork's 2xx ACK and BYE. An INVITE retransmitted
// after its server transaction ended is recognised by its Call-ID
// (callTable.isALeg) and dropped (dialog/invite_retransmission). sipgo's
// accepted INVITE transactions last a round trip (Timer L and M = T1,
// endpoint.go): the SBC resends its 2xx to A by the transport layer and
// takes late 2xx itself. Nothing of sipgo's (hooks, transactions) holds
// a call: the OnCancel hook goes through callRef, cleared at the end.
//
// Timers (timerKind), each numbered so that a stale firing is ignored:
// ring, target (per branch), cancel (give up 64*T1 after a CANCEL),
// retransmit (a 2xx to A or a relayed re-INVITE's 2xx, T1 doubling to T2,
// UDP only), ack_wait (64*T1), max_duration, inactivity, session.
//
// Invariants, checked by the table tests in call_fsm_test.go over every
// order of a set of events: A's INVITE gets exactly one final response; no
// provisional after it; the call ends exactly once and nothing is sent to
// A, and no INVITE or relay starts, after the end; every 2xx dialog of
// every branch is ACKed, and every dialog the call does not keep is BYEd
// exactly once; the kept B dialog and the A dialog each end exactly once;
// a branch that rang and never answered is CANCELled exactly once, and
// never before a provisional.
//
// Transfers (transfer.go): a REFER is relayed (Refer-To re-homed,
// Replaces mapped before the transition, outside every call's lock),
// refused, or carried out by the SBC (refer = "local"): the new leg is a
// branch marked xfer whose responses go to onXferResponse; on its 2xx it
// becomes the call's leg in the referrer's place (c.kept, or c.a), the
// referrer's leg is detached (its late BYE ends nothing) and BYEd.
// Actions: send (a NOTIFY, answer only logged). Timer: transfer (the new
// leg's ring timeout).
//
// Directions: an inbound call (A: a trunk) has one pool; an outbound
// call (A: a backend, route: its outbound route) has the route's carrier
// pools in order, tried by tryNext one after the other. Each branch keeps
// its pool (branch.pool): the actions read it, never call.pool. A
// carrier's challenge makes a branch of its own (authBranch: same dialog,
// CSeq + 1, not counted as an attempt).
//
// Branch rules: a branch abandoned (target timeout, CANCEL, ring timeout,
// terminate) keeps its transaction: a later provisional is answered with
// CANCEL, a later 2xx with ACK and BYE. Only the first 2xx of the branch
// being tried becomes the call.
//
// In-dialog rules: one INVITE at a time per dialog (a re-INVITE that
// overtook the ACK of the previous INVITE waits for it; one that crosses a
// pending INVITE the other way gets 491); a relayed re-INVITE's 2xx is
// resent until its ACK and the ACK is resent when the 2xx is; a 481 or
// 408 (or no answer) to a relayed request ends both legs (RFC 5057).
// Requests towards a leg go to its route set or remote target, or over
// the TCP connection the peer opened while it is up (leg.dest).
//
// The admin API (admin.go, adminauth.go, adminkeys.go, adminstate.go):
// one route table, adminRoutes, gives every endpoint with the role it
// needs; docs/openapi.yaml describes the same routes (a test compares
// them). In front: blocked sources closed at accept, the Host check, the
// per-client rate limit, cross-origin and JSON-only checks, then the
// principal (a verified client certificate that admin.client_roles maps
// to roles, or an API key compared by SHA-256 in constant time), its
// role, and the body, read whole and bounded before the handler (64 KiB,
// more for a policy candidate; 413 beyond). Failed authentications are auth_failure events, counted, and
// charged like SIP failures (charge). What the API changes at run time
// outside the policy (node drain, disabled trunks, drained targets) is
// runtimeState and target.drained; admit refuses new calls for the first
// two (admit/draining, admit/trunk_disabled), pool.pick skips the third.
// A hang-up or a drain's deadline posts evTerminate to the call: the
// state machine does the rest, as for any other terminate.
package sbc
