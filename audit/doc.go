// Package audit is the SBC's audit log: an events.Sink that writes each
// operator event (calls started and ended, configuration changes, failed
// authentications, blocks, admin actions) as one JSON line, redacted as
// the policy says, and chained by SHA-256 so that an edited, removed or
// reordered record is detected (Verify, `sbc audit verify`).
//
// # Records
//
// A record is a JSON object with these members (empty ones are left out):
//
//	seq            1, 2, 3, … within one chain (one file with its rotations,
//	               or one stdout or syslog stream since start)
//	ts             RFC 3339 UTC time with nanoseconds
//	event          the events.Kind
//	session_id     the SBC's id of a call
//	call_id        the A leg's SIP Call-ID
//	caller_id      the A leg's From user (a number, maskable)
//	called_number  the request-URI user (maskable)
//	source_ip      the peer's address
//	user_agent     its User-Agent
//	realm, trunk   where it came from
//	actor          the admin principal of an admin action
//	reason         why (a reason code of sbc/reasons.go, a reload result…)
//	duration_ms    answered time of a call (call_terminated)
//	detail         further kind-specific fields
//	prev           the hash of the previous record (64 zeros before the first)
//	hash           SHA-256(prev's 32 bytes || canonical bytes), hex
//
// The canonical bytes of a record are its JSON encoding without the hash
// member, with object members in byte order of their names (what Go's
// encoding/json gives for a map) and numbers as written. A line is its
// canonical bytes with `,"hash":"…"` inserted before the final brace, so
// a reader can recompute every hash from the lines alone.
//
// # Outputs
//
// Each output (file, stdout, syslog) has its own bounded queue and
// goroutine, and its own chain: Emit never blocks; a record that finds the
// queue full is dropped and counted (Hooks.Dropped, reason queue_full),
// never written with a gap in its chain. A write that fails is counted
// (write_error) and the record is lost; the chain continues from the last
// record written.
//
// The file output appends (O_APPEND, mode 0600). It is fsync'd each time
// its queue has been drained (a burst costs one fsync, a lone record one
// fsync of its own), before a rotation and at Close. When a record would
// take the file over MaxSize, the file is renamed FILE.1 (FILE.1 to
// FILE.2 …, FILE.Keep dropped) and a new FILE started; the chain goes on
// (its first record's prev is the last hash of FILE.1). At open, the
// chain continues from the last complete record of FILE (or of FILE.1
// when FILE is empty or missing): a restart does not start a new chain. A
// last line left incomplete by a crash is ended with a newline and
// skipped; Verify reports it.
//
// Syslog is RFC 5424 (Go's log/syslog writes RFC 3164): one message per
// UDP datagram, or octet-counted framing over TCP (RFC 6587 §3.4.1),
// reconnecting at the next record after an error.
package audit
