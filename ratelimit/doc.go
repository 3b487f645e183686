// Package ratelimit owns the SBC's per-source and per-trunk admission
// state: token buckets, per-trunk concurrent-call caps, failure windows
// with auto-block decisions, graduated trust, and scanner User-Agent
// fingerprints. It knows nothing about SIP messages or the rest of the
// project: it takes netip.Prefix source keys, trunk names, reason codes
// and explicit times, and returns decisions; the sbc package acts on them
// (drop, 503 + Retry-After, blocklist).
//
// # Pieces
//
//   - Limiter: one kind of rate (packets/s, INVITEs/s, REGISTERs/s). Source
//     buckets live in a bounded table (LimiterConfig.MaxSources); trunk
//     buckets, keyed by trunk name, live in a separate table that is never
//     evicted. Allow/AllowN/Check for sources, AllowTrunk/CheckTrunk for
//     trunks; Check returns the wait for a Retry-After. Update swaps the
//     limits on a policy reload without losing bucket state.
//   - Concurrency: a non-blocking counting semaphore per trunk for calls in
//     progress; Acquire returns an idempotent release.
//   - Tracker: Fail/Success per source. More than Threshold failures in
//     Window give a Decision to block for BlockFor, multiplied by Escalate
//     for each repeat up to MaxBlock; offence memory decays after Decay.
//     Convict blocks at once for an offence decided elsewhere (a Guard).
//     NeverBlock prefixes are never blocked. Observe mode reports
//     WouldBlock instead of Block and demotes nothing. Trust
//     (unknown/trusted/demoted) gives a Budget multiplier for Limiter.Check.
//     Which failures reach it is the caller's trust model: the tracker
//     counts what it is given.
//   - Guard: failed digest challenges per source and per identity (the
//     address-of-record being guessed). PerIdentity failures in Window lock
//     that identity for that source for LockFor (the other identities
//     behind the same address, a NAT's other phones, are untouched);
//     PerSource failures in Window over all identities report Block (hand
//     it to Tracker.Convict). It also remembers the last nonces challenged
//     to each source, so the caller can tell a guess that answered a real
//     challenge (a return path) from a forged one.
//   - ScannerMatcher: case-insensitive, allocation-free User-Agent
//     substring match against DefaultScannerPatterns or a configured list.
//
// Source keys come from SourceKey: the /32 of an IPv4 peer, the /64 of an
// IPv6 peer (one host owns a /64, so a /128 key would let it mint fresh
// buckets at will).
//
// # Bounded state under a spoofed flood
//
// A UDP flood can carry millions of forged source addresses. Both the
// Limiter's source buckets and the Tracker's records therefore live in a
// fixed number of slots, split over shards (one mutex each, chosen by a
// hash with a random seed) and organised as a segmented LRU:
//
//   - a new key enters the probation segment (at least 1/5 of a shard);
//     when the shard is full, the least recently used probation key is
//     evicted;
//   - a key is promoted to the protected segment (at most 4/5) only when it
//     is seen again at least PromoteAge (default 1s) after its creation, or
//     when the Tracker protects it explicitly (a block, earned trust).
//
// A flood of one-shot or two-shot keys cycles through probation in
// milliseconds, so none of its keys lives long enough to be promoted and
// the established sources in the protected segment stay. (Plain LRU loses
// them all; golang-lru's 2Q promotes on a second hit or a ghost hit, so a
// flood that sends each forged source twice flushes them too: see
// BENCHMARKS.md (ratelimit).) Trunk buckets are not in this table at all.
//
// Eviction costs an attacker nothing if the evicted key's replacement
// starts with a full burst: every eviction would mint a fresh burst. So a
// new source whose slot was taken from a source with live state (a bucket
// not yet full again) starts with only LimiterConfig.PressureBurst tokens
// (default 1); when the victim's bucket was already full again, nothing
// was lost and the newcomer gets its full burst. Stats().Pressured counts
// such evictions: a rising count means the table is too small for the
// traffic or a flood is on.
//
// # Token buckets
//
// Buckets are GCRA (generic cell rate algorithm): one int64 per key, the
// time at which the bucket would be full again. Measured against
// golang.org/x/time/rate it is smaller (8 bytes per key against 80 for a
// rate.Limiter with its mutex) and cheaper, scales by a per-call budget without touching state,
// and gives the Retry-After wait directly (BENCHMARKS.md (ratelimit)). Trunk
// buckets are updated with a compare-and-swap, without a lock.
//
// # Times
//
// Every call takes now explicitly (tests use fixed times; callers pass
// time.Now()). A clock that steps back never refunds tokens, and failures
// recorded "in the past" land in the newest window slot.
package ratelimit
