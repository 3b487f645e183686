// Package cdr owns the call detail record: one JSON object per call,
// written as one line at the call's end (JSON lines), its Q.850 cause
// mapping, and a file writer that rotates by size behind a bounded queue.
//
// The SBC (sbc/cdr.go) fills a Record from the call after the call's lock
// is released and hands it to Writer.Write, which never blocks: a record
// that finds the queue full is dropped and counted. The fields are
// versioned (Version, "cdr_v"): a field is only ever added; a change of
// meaning makes a new version.
//
// Q.850 causes come from the Reason header of the message that ended the
// call (RFC 3326: `Reason: Q.850;cause=16;text="..."`), else from the
// final SIP status as RFC 3398 section 8.2.6.1 maps it (and common
// practice for the codes it leaves out), else from how the call ended: a
// BYE after the answer is 16 (normal clearing), a caller's CANCEL 16 as
// well (RFC 3398 leaves it; FreeSWITCH's ORIGINATOR_CANCEL is 487, no
// Q.850 value), a ring timeout 19 (no answer).
package cdr
