package sbc

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sbc-project/sbc/acl"
)

// Metrics are the SBC's Prometheus instruments. Labels never carry a source
// address, a call identifier or free text: every label has a closed set of
// values (the catalogue in reasons.go, the lists below, or names from the
// policy), so cardinality stays bounded whatever the traffic.
// docs/METRICS.md lists every family and value; metrics_doc_test.go checks
// it against this code.
type Metrics struct {
	Registry *prometheus.Registry

	CallsActive  prometheus.Gauge
	Calls        *prometheus.CounterVec // result (callResults)
	CallsEnded   *prometheus.CounterVec // reason (callResults), by (hangupBy): what ended each call, answered or not
	Requests     *prometheus.CounterVec // realm, method (known methods only)
	Responses    *prometheus.CounterVec // realm, class (1xx..6xx)
	Dropped      *prometheus.CounterVec // stage, reason (dropReasons)
	TargetUp     *prometheus.GaugeVec   // pool, target
	Failovers    *prometheus.CounterVec // pool
	ReloadsTotal *prometheus.CounterVec // result: ok, rejected, partial (sbc_reload_total)
	Blocks       *prometheus.CounterVec // origin (auto, observe: reason is a failure; manual: reason "manual")
	FastPath     *prometheus.GaugeVec   // path (fastPaths)

	TLSHandshakes *prometheus.CounterVec // realm, transport, side (server, client), result (ok or a stage tls reason)
	TLSExpiry     *prometheus.GaugeVec   // file (cert_file of the policy)
	TLSLoads      *prometheus.CounterVec // result: ok, failed (certificate files re-read after a change)
	ConnsOpen     *prometheus.GaugeVec   // realm, transport (tcp, tls, wss): accepted connections open

	UDPPeers        *prometheus.GaugeVec   // realm: entries of sipgo's UDP connection pool (udppeers.go)
	UDPResets       *prometheus.CounterVec // realm: generations of the UDP read loops retired to forget peers
	TrunkCalls      *prometheus.CounterVec // trunk, result (callResults)
	TrunkFailures   *prometheus.CounterVec // trunk, failure (failures): seen from a trunk's address, charged to nobody
	RegisterGuesses *prometheus.CounterVec // proof (guessProofs): failed REGISTER guesses
	RegisterLocks   prometheus.Counter     // AoRs locked for a source (autoblock.register_guesses)
	OutboundCalls   *prometheus.CounterVec // result (callResults): calls from the backends to carriers
	Registrations   *prometheus.GaugeVec   // realm: bindings in the registration cache
	Registers       *prometheus.CounterVec // result (regResults): REGISTERs of remote users
	UserCalls       *prometheus.CounterVec // result (userCallResults): calls from the backends to registered users
	CarrierAuth     *prometheus.CounterVec // pool, result (authResults): carriers' digest challenges
	Transfers       *prometheus.CounterVec // mode, result (xferResults): REFERs inside calls (transfer.go)
	// OutboundRegistered, OutboundRegFailures: registrations with
	// carriers (outreg.go); DNSResolutions: host-name targets (resolve.go).
	OutboundRegistered  *prometheus.GaugeVec   // pool, target
	OutboundRegFailures *prometheus.CounterVec // pool, reason (regFailReasons)
	DNSResolutions      *prometheus.CounterVec // result (dnsResults)

	AdminRequests     *prometheus.CounterVec // result (adminResults)
	AdminAuthFailures *prometheus.CounterVec // reason (adminAuthReasons)

	flood [floodCounters]atomic.Pointer[prometheus.Counter] // see floodCounter

	audit auditMetrics // sbc_audit_records_total, sbc_audit_dropped_total (audit.go)

	HeaderRuleMatches *prometheus.CounterVec // rule (policy): messages a header rule ran on (headerrules.go)
	HeaderRuleSkips   *prometheus.CounterVec // rule (policy), reason (hdrSkipReasons)
}

func newMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		CallsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbc_calls_active", Help: "Calls in progress (set up or answered).",
		}),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_calls_total", Help: "Finished calls by result: answered, or why the call was not (busy, cancelled, no_route, no_target, timeout, ...).",
		}, []string{"result"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_requests_total", Help: "SIP requests received, by realm and method.",
		}, []string{"realm", "method"}),
		Responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_responses_total", Help: "SIP responses received, by realm and status class.",
		}, []string{"realm", "class"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_dropped_total", Help: "Messages dropped or rejected, by pipeline stage and reason code.",
		}, []string{"stage", "reason"}),
		TargetUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sbc_backend_target_up", Help: "1 if the backend target passes its health check, else 0.",
		}, []string{"pool", "target"}),
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_backend_failovers_total", Help: "INVITEs retried on another target after a timeout or a 500, 503 or 408.",
		}, []string{"pool"}),
		ReloadsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_reload_total",
			Help: "Policy reloads by result: ok (in force), rejected (nothing changed, the previous policy stays), partial (in force, but the kernel fast path keeps the previous trunk allow-list or XDP rate limit).",
		}, []string{"result"}),
	}
	for _, r := range reloadResults {
		m.ReloadsTotal.WithLabelValues(r) // every result present from the start, at 0
	}
	m.Blocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_blocks_total", Help: "Sources put on the blocklist, by origin (auto, manual; observe: would have been, in observe mode) and reason (the failure that crossed the threshold; manual for an operator's block).",
	}, []string{"origin", "reason"})
	m.FastPath = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_fastpath_info", Help: "1 for the path that drops blocked sources first: xdp, nftables or userspace.",
	}, []string{"path"})
	m.TLSHandshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_tls_handshakes_total", Help: "TLS handshakes (and WebSocket upgrades on wss) by realm, transport, side (server: a peer connected to a listener; client: the SBC connected to a peer) and result: ok, or why it was refused (the reasons of stage tls).",
	}, []string{"realm", "transport", "side", "result"})
	m.TLSExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_tls_certificate_expiry_days", Help: "Days until the certificate in service from each cert_file of the policy expires (negative once expired).",
	}, []string{"file"})
	m.TLSLoads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_tls_file_reloads_total", Help: "Certificate, key and CA files re-read after they changed on disk: ok (in service), failed (the previous one stays).",
	}, []string{"result"})
	m.ConnsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_connections_open", Help: "Connections accepted on the SIP listeners and still open, by realm and transport (tcp, tls, wss).",
	}, []string{"realm", "transport"})
	m.UDPPeers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_udp_peers", Help: "Source address:port entries sipgo holds for a realm's UDP listeners (its connection pool), bounded by limits.udp_peers.",
	}, []string{"realm"})
	m.UDPResets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_udp_peer_resets_total", Help: "Times a realm's UDP read loops were renewed to forget their source entries (over limits.udp_peers).",
	}, []string{"realm"})
	m.CallsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_calls_ended_total", Help: "Calls that ended, by the reason that ended them (the results of sbc_calls_total, an answered call's too: max_duration, media_timeout, ...) and who ended them (caller, callee, sbc).",
	}, []string{"reason", "by"})
	m.TrunkCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_trunk_calls_total", Help: "Finished calls of each trunk by result (the results of sbc_calls_total): the answer ratio of a carrier.",
	}, []string{"trunk", "result"})
	m.TrunkFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_trunk_failures_total", Help: "Failures seen from a trunk's addresses (malformed, scanner User-Agents, REGISTER not allowed) or in its calls (the backends' 403/404, failed authentication), by failure. Charged to nobody: a forged source or a carrier's callers cause them.",
	}, []string{"trunk", "failure"})
	m.RegisterGuesses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_register_guesses_total", Help: "REGISTERs with credentials the registrar refused (401/407 not stale, 403), by proof of a return path: nonce (it answered a challenge sent to its source), connection (TCP, TLS, WSS), none (not counted against the source: it may be forged).",
	}, []string{"proof"})
	m.RegisterLocks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sbc_register_locks_total", Help: "Addresses-of-record locked for one source after autoblock.register_guesses failed guesses.",
	})
	r.MustRegister(m.CallsEnded)
	m.OutboundCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_outbound_calls_total", Help: "Finished outbound calls (from the backends to carriers) by result (the results of sbc_calls_total).",
	}, []string{"result"})
	m.CarrierAuth = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_carrier_auth_total", Help: "Digest challenges of carriers to the SBC's INVITEs by pool and result: answered (with the pool's credentials), rejected (challenged again: the target failed), unusable (a realm or algorithm the SBC cannot answer: the target failed).",
	}, []string{"pool", "result"})
	r.MustRegister(m.TrunkCalls, m.TrunkFailures, m.RegisterGuesses, m.RegisterLocks, m.OutboundCalls, m.CarrierAuth)
	m.Registrations = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_registrations", Help: "Bindings (device Contacts) in the registration cache, by the realm the devices registered on.",
	}, []string{"realm"})
	m.Registers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_registers_total", Help: "REGISTERs of remote users by result: ok (bound, refreshed or listed), unregistered, challenged (401/407 relayed), rejected (another answer of the registrar), no_answer (408 or 502 to the device), refused (by the SBC: malformed, too many contacts, cache full, busy), local (a refresh answered by the SBC, client_expires_max).",
	}, []string{"result"})
	m.UserCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_user_calls_total", Help: "Calls from the backends to registered users by result: the results of sbc_calls_total for calls that started, not_found (404, no such binding) or unreachable (480, binding expired or its connection closed).",
	}, []string{"result"})
	r.MustRegister(m.Registrations, m.Registers, m.UserCalls)
	for _, v := range regResults {
		m.Registers.WithLabelValues(v)
	}
	for _, v := range userCallResults() {
		m.UserCalls.WithLabelValues(v)
	}
	m.Transfers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_transfers_total", Help: "REFERs inside calls by refer mode (relay, local, refuse) and result.",
	}, []string{"mode", "result"})
	r.MustRegister(m.Transfers)
	m.OutboundRegistered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sbc_outbound_registration_up", Help: "1 while the SBC's registration with a carrier target is in force, else 0.",
	}, []string{"pool", "target"})
	m.OutboundRegFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_outbound_registration_failures_total", Help: "Failed registrations with carriers by pool and reason: timeout, transport, auth, rejected, unavailable.",
	}, []string{"pool", "reason"})
	m.DNSResolutions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_dns_resolutions_total", Help: "Resolutions of host-name pool targets by result: ok, failed.",
	}, []string{"result"})
	r.MustRegister(m.OutboundRegistered, m.OutboundRegFailures, m.DNSResolutions)
	m.AdminRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_admin_requests_total", Help: "Admin API requests by result: ok (the route's handler answered), or why they were refused before it.",
	}, []string{"result"})
	m.AdminAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbc_admin_auth_failures_total", Help: "Failed authentications on the admin API, by reason.",
	}, []string{"reason"})
	for _, v := range adminResults {
		m.AdminRequests.WithLabelValues(v)
	}
	for _, v := range adminAuthReasons {
		m.AdminAuthFailures.WithLabelValues(v)
	}
	r.MustRegister(m.AdminRequests, m.AdminAuthFailures)
	r.MustRegister(m.Blocks, m.FastPath, m.TLSHandshakes, m.TLSExpiry, m.TLSLoads, m.ConnsOpen)
	r.MustRegister(m.UDPPeers, m.UDPResets)
	m.audit = newAuditMetrics(r)
	newHdrRuleMetrics(m)
	r.MustRegister(m.CallsActive, m.Calls, m.Requests, m.Responses, m.Dropped,
		m.TargetUp, m.Failovers, m.ReloadsTotal,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// reloadResults is every value of sbc_reload_total's result label.
var reloadResults = []string{ReloadOK, ReloadRejected, ReloadPartial}

// stateWriteResults are the values of sbc_blocklist_state_writes_total's
// result label.
var stateWriteResults = []string{"ok", "failed"}

// blocklistCollectors are the blocklist's metrics (registered at Start).
func blocklistCollectors(bl *acl.Blocklist) []prometheus.Collector {
	stat := func(get func(acl.Stats) uint64) func() float64 {
		return func() float64 { return float64(get(bl.Stats())) }
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sbc_blocklist_entries", Help: "Entries on the blocklist.",
		}, func() float64 { return float64(bl.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sbc_blocklist_capacity", Help: "Most entries the blocklist holds; the kernel copies (XDP maps, nftables sets) are sized to it.",
		}, func() float64 { return float64(bl.Cap()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_blocklist_refused_total", Help: "New blocks refused because the blocklist was full.",
		}, stat(func(s acl.Stats) uint64 { return s.Refused })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_blocklist_state_writes_total", Help: "Writes of the blocklist state file in state_dir, by result.",
			ConstLabels: prometheus.Labels{"result": stateWriteResults[0]},
		}, stat(func(s acl.Stats) uint64 { return s.StateWrites })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_blocklist_state_writes_total", Help: "Writes of the blocklist state file in state_dir, by result.",
			ConstLabels: prometheus.Labels{"result": stateWriteResults[1]},
		}, stat(func(s acl.Stats) uint64 { return s.StateWriteErrors })),
	}
}

// methodLabels bounds the method label: the known methods, then "other"
// for anything else.
var methodLabels = [...]string{
	"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS",
	"REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
	"PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
	"other",
}

// methodIndex is m's index in methodLabels (the last: "other").
func methodIndex(m string) int {
	for i, l := range methodLabels[:len(methodLabels)-1] {
		if l == m {
			return i
		}
	}
	return len(methodLabels) - 1
}

// classLabels are the response class label's values, by code/100 - 1.
var classLabels = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "6xx"}

// classIndex is code's index in classLabels.
func classIndex(code int) int {
	return min(max(code/100-1, 0), len(classLabels)-1)
}

// msgCounters are one realm's children of sbc_requests_total and
// sbc_responses_total, resolved once: WithLabelValues hashes and looks up
// its labels on every call (0.8 % of the SBC's samples at 3,000 calls/s,
// 1.7 % at 600). A realm's label values are never deleted.
type msgCounters struct {
	requests  [len(methodLabels)]prometheus.Counter
	responses [len(classLabels)]prometheus.Counter
}

func newMsgCounters(m *Metrics, realm string) *msgCounters {
	c := &msgCounters{}
	for i, l := range methodLabels {
		c.requests[i] = m.Requests.WithLabelValues(realm, l)
	}
	for i, l := range classLabels {
		c.responses[i] = m.Responses.WithLabelValues(realm, l)
	}
	return c
}

// countResponse counts a response received on ep's realm.
func (ep *endpoint) countResponse(code int) {
	ep.msgs.responses[classIndex(code)].Inc()
}

// countRequest counts a request received on ep's realm.
func (ep *endpoint) countRequest(method string) {
	ep.msgs.requests[methodIndex(method)].Inc()
}
