// Package acl owns source-address access control for the SBC: which trunk a
// packet comes from, and which sources are blocked. It is pure Go, takes
// plain values (netip.Addr, netip.Prefix, time.Time) and imports no other
// project package. The nftables mirror of the blocklist lives in acl/nft.
//
// # Trunk table
//
// TrunkTable maps a source address to a trunk name by longest prefix match
// (github.com/gaissmai/bart). It is immutable: a policy reload builds a new
// table with NewTrunkTable and the owner swaps it in with an
// atomic.Pointer[TrunkTable]. Lookup does not allocate.
//
// # Blocklist
//
// Blocklist is the set of blocked prefixes (a /32, a /64, a whole /16 or
// ::/0), each with a reason, an origin (manual or auto), a creation time and
// an optional expiry. The read filter calls Blocked for every packet before
// the SIP parser: it reads an immutable snapshot through an atomic pointer,
// takes no lock and does not allocate. Writers build the next snapshot by
// path copying.
//
// Expired entries stop matching at once and are removed by Sweep (or Run).
// A never-block list (SetNeverBlock) protects the trunks, backends and admin
// network from being blocked by mistake or by spoofed traffic.
//
// Every change is published on a change feed (Subscribe) from which the XDP
// map (ebpf) and the nftables sets (acl/nft) are mirrored: a subscriber gets
// a full snapshot and every change after it, and a slow subscriber never
// blocks a writer; it gets an OpResync and fetches a fresh snapshot instead.
// Mirror does that for a Sink, with a stated overflow policy: entries a
// full sink cannot take stay in user space (the read filter drops their
// traffic), are reported once per episode and installed as removals free
// room; a full sink is never resynced in a loop.
//
// Capacity: Options.MaxEntries (DefaultMaxEntries) bounds the list; new
// prefixes beyond it are refused with ErrFull, counted (Stats) and logged
// once per episode. The SBC sizes the kernel copies to the same number.
//
// The blocklist persists itself as a JSON file when Options.StatePath is
// set (writes are atomic; Close writes the last change). Writes are
// coalesced: SaveDelay after a change, no sooner than SaveInterval (10 s)
// after the previous write, and SaveCostFactor (20) times as long apart
// as a write takes, so a large list under a churn of changes is not
// rewritten every second. Persist writes at once (a manual block).
// Save/Load read and write that format explicitly.
//
// # Addresses
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are treated as IPv4
// everywhere, in lookups and in prefixes (a mapped prefix of length >= 96 is
// stored as the IPv4 prefix). IPv6 prefixes shorter than /96 stay IPv6, so
// ::/0 covers all of IPv6 and no IPv4. SourceKey gives the per-source key
// used by rate limiting and auto-block (/32 for IPv4, /64 for IPv6), and
// ParsePrefix the canonical form of an operator-written prefix or address.
package acl
