// Package policy owns the sbc policy file: its schema (the types in
// types.go), strict TOML decoding, validation with FILE:LINE:COL errors,
// defaults, and the immutable snapshot the rest of the SBC is built from.
//
// Parse and Load return a *Policy only when the whole file is valid;
// otherwise they return Errors, every problem of the file at once, each
// printed as "FILE:LINE:COL: message" (line and byte column are 1-based).
// Unknown keys, values of the wrong type, bad addresses and CIDRs, unknown
// or duplicate names, conflicting listeners and inconsistent settings are
// all reported.
//
// A returned *Policy has its defaults applied and its derived fields (those
// tagged toml:"-": parsed addresses, masked prefixes, effective weights) set.
// It must not be modified: the SBC reads it from many goroutines, and a
// reload builds a new *Policy and swaps it in atomically, while calls in
// flight keep the one they started with. The query methods (Realm, Trunk,
// Pool, RouteFor, AllowedHeader) are pure and safe for concurrent use.
//
// Default returns the embedded example policy (sbc.example.toml, also
// available through DefaultTOML), which documents every key and runs on one
// machine without root.
//
// The package does no I/O besides reading the file in Load, and no DNS:
// target addresses are IP literals.
package policy
