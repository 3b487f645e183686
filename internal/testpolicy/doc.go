// Package testpolicy builds policy files for tests: the TOML text (reload
// tests write it to a file, the e2e tests run the binary with it) and, from
// it, a parsed *policy.Policy.
//
// A [Policy] is a plain struct that mirrors the policy file's tables;
// [Policy.TOML] writes it out and [Policy.Parse] parses that text with
// [policy.Parse] (failing the test, with the numbered text, when the policy
// package refuses it). [New] returns the usual test shape: realms "external"
// and "internal" with a UDP and a TCP listener each on port 0 of the given
// loopback addresses, trunk "carrier" (source 127.0.0.1/32) on "external",
// pool "pbx" on "internal" with the given targets and no health checks, and
// default_pool "pbx". Tests change fields of the struct, or write a
// Policy literal of their own.
//
// Only what a test sets is written, so an unset field keeps the policy
// package's default. "Unset" is the zero value, except where the zero value
// is itself a setting that differs from the key's absence:
//
//   - such integers and booleans are pointers (Limits.SourceCPS,
//     AutoBlock.Enabled, Target.Weight, ...), written when non-nil: with Go
//     1.26, new(0) or new(false);
//   - durations are [policy.Duration], written when IsSet: policy.D(0)
//     writes "0s" (e.g. health checks off), the zero Duration writes nothing;
//   - lists are written when non-nil: []string{} writes "key = []" (for
//     headers.allow and autoblock.scanner_user_agents an empty list differs
//     from the default list).
//
// Every key written is one the policy file accepts (the package's tests
// parse every field). For what has no field, Extra holds raw TOML:
// Policy.Extra is appended at the end of the file, Trunk.Extra and
// Pool.Extra inside their table.
package testpolicy
