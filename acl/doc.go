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
//
// The blocklist persists itself as a JSON file when Options.StatePath is
// set (writes are coalesced and atomic; Close writes the last change), and
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
