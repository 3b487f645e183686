// Package ebpf owns the kernel fast path of the SBC: an XDP program that
// drops packets from blocked sources to the SBC's ports in the driver,
// before they cost a socket read, a SIP parse or a goroutine, its maps, and
// the Go loader that attaches it, keeps it across restarts and feeds it
// deny/allow lists.
//
// It imports no other project package: callers pass netip.Prefix values.
//
// # The program (xdp.c)
//
// For every received frame:
//
//  1. Ethernet, then up to two VLAN tags (TPID 0x8100, 0x88a8 or 0x9100:
//     802.1Q and QinQ). A frame with a third tag, or any ethertype other than
//     IPv4/IPv6 (ARP, LLDP…), is passed and counted NonIP. With hardware VLAN
//     stripping (the default on most NICs) XDP sees untagged frames anyway.
//  2. IPv4 (any IHL; version and IHL >= 5 checked) or the fixed IPv6 header.
//  3. Source: the source is looked up in the deny LPM trie of its family
//     (IPv6 packets in the IPv6 trie only: IPv4-mapped entries are stored as
//     IPv4, see below), and on a hit in the allow trie: allow beats deny
//     (trunks and backends are never dropped).
//  4. Scope. With ScopeHost a denied source is judged here, by its IP
//     header alone: every frame, every protocol, every fragment is dropped
//     (XDP_DROP, counted DroppedDeny) unless allowed (counted Allowed).
//     With ScopeSIP (the default) only frames to the SBC's own ports are:
//     UDP to Options.UDPPorts and TCP to Options.TCPPorts (SIP listeners,
//     TLS and WSS included), and UDP to Options.MediaPorts (the media
//     relay's ranges). The
//     host's other traffic from a denied source is passed and counted
//     Spared: a DNS answer from the resolver, NTP, an SSH session, ICMP,
//     answers to the SBC's own outgoing connections. The deny list is fed
//     from auto-blocks that a spoofed source address can trigger; with the
//     default scope such a block cannot cut the host off from its
//     infrastructure. Non-first fragments carry no port and are passed
//     (counted Fragments): a fragmented DNS answer must reach the host, and
//     a fragment whose first fragment was dropped is never reassembled.
//  5. Upper layer: IPv4 non-first fragments are passed (counted Fragments).
//     IPv6 extension headers are walked, at most six of Hop-by-Hop,
//     Routing, Destination Options, AH and Fragment; a Fragment header with
//     a non-zero offset ends the walk (passed, counted Fragments), a first
//     fragment is walked through. More than six extension headers: passed,
//     counted Malformed. Then UDP (8-byte header needed) or TCP (the ports
//     needed); a shorter header is passed and counted Malformed, and any
//     other protocol is not the SBC's (ESP, ICMP…).
//  6. Verdict on the SBC's ports (ScopeSIP): a denied source is dropped
//     unless allowed, as in 4.
//  7. Rate limit, for UDP to Options.UDPPorts only (TCP is limited in user
//     space; media streams are not limited). An allow-listed source is
//     exempt (counted Allowed): trunks
//     and backends. Otherwise a per-source GCRA token bucket (one
//     timestamp per source in an LRU hash; IPv4 sources by /32, IPv6 by
//     /64, bpf_ktime_get_ns clock) admits RatePPS packets/s with a depth of
//     Burst packets; over the rate: XDP_DROP, counted DroppedRateLimit.
//  8. Everything else: XDP_PASS, counted Passed.
//
// Truncated frames (shorter than the headers the program needs to read) are
// passed and counted Malformed, deliberately not dropped: the kernel stack
// discards malformed IP itself at no extra cost to the SBC, while dropping
// unparseable frames in XDP would risk discarding protocols or encapsulations
// the program does not know. With ScopeHost a frame whose fixed IP header
// is complete is judged by its source even if later headers are truncated
// (a denied source is dropped, a clean one is passed as Malformed); with
// ScopeSIP a frame too short for its ports is passed as Malformed whatever
// its source (the user-space filter still drops it if it is SIP). All
// bounds checks are verifier-proven; every length from 14 bytes to a full
// frame is exercised by TestTruncated in both scopes (the kernel refuses
// shorter frames, and so do drivers).
//
// Every frame lands in exactly one of Passed, DroppedDeny or
// DroppedRateLimit; Malformed, NonIP, Fragments, Allowed and Spared are
// sub-counts of Passed (a passed frame is in at most one of them). Counters
// live in a per-CPU array summed by Counters().
//
// Scope and ports are configuration, not code: SetScope and SetPorts
// rewrite them in the running program (a policy reload of xdp.scope).
//
// # Maps and pinning layout
//
// Everything is pinned under Options.PinDir (default /sys/fs/bpf/sbc):
//
//	sbc_deny_v4    LPM trie {u32 prefixlen; u8 addr[4]}  -> u8, MaxEntries (default 262144), BPF_F_NO_PREALLOC
//	sbc_deny_v6    LPM trie {u32 prefixlen; u8 addr[16]} -> u8, MaxEntries (default 262144), BPF_F_NO_PREALLOC
//	sbc_allow_v4   LPM trie, as sbc_deny_v4, 16384 entries
//	sbc_allow_v6   LPM trie, as sbc_deny_v6, 16384 entries
//	sbc_rl_state   LRU hash {u8 addr[16]} -> {u64 tat}, 65536 sources
//	               (IPv4 as ::ffff:a.b.c.d, IPv6 /64 with the low 8 bytes zero)
//	sbc_config     array[1] {u64 interval_ns; u64 tolerance_ns; u32 scope; u32 pad;
//	               u64 udp_ports[1024]; u64 tcp_ports[1024]; u64 media_ports[1024]}
//	               (interval_ns = 1e9/RatePPS, 0 = off; tolerance_ns =
//	               (Burst-1)*interval_ns; scope 0 sip, 1 host; ports =
//	               65536-bit bitmaps of destination ports: SIP over UDP,
//	               SIP over TCP, media over UDP)
//	sbc_counters   per-CPU array[8] of u64: 0 passed, 1 dropped_deny,
//	               2 dropped_ratelimit, 3 malformed, 4 non_ip, 5 fragment,
//	               6 allowed, 7 spared
//	link_<mode>_<ifname>   the XDP bpf_link of each interface, mode native|generic
//
// LPM keys hold the prefix length in host order and the address in network
// order. Deny/Undeny/SyncDeny/SetAllow store IPv4-mapped IPv6 prefixes
// (::ffff:0:0/96 and longer) as IPv4 and clear host bits.
//
// # Capacity
//
// Each deny map holds Options.MaxEntries prefixes (one map per family);
// the caller sizes it to its blocklist, so that the whole list always
// fits. Should it not, Deny fails with an error wrapping ErrFull and
// SyncDeny installs what fits, in the order given (prefixes already held
// are kept), and returns a *FullError naming the others; nothing is
// retried. The allow maps hold 16384 prefixes each. A pinned map whose
// layout or capacity differs from the program's (an earlier version,
// another MaxEntries) is recreated at Load and only that one: the caller
// resyncs the lists, the counters survive. Pins of maps earlier versions
// had and this one has not (sbc_rl_config) are removed.
//
// # Lifecycle
//
// Load checks capabilities (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN),
// makes sure PinDir is on a bpf filesystem (mounting one on /sys/fs/bpf when
// PinDir is below it and nothing is mounted there), loads the collection
// reusing pinned maps (maps from an incompatible older layout are replaced:
// the caller resyncs its lists anyway), writes the rate-limit configuration,
// and attaches to every interface:
//
//   - If link_<mode>_<ifname> is pinned, still bound to that interface, and
//     the mode matches (or Mode is auto), the link is updated in place with
//     the new program (link.Update): no gap, no EBUSY, Attachment.Reused.
//     A pin for a vanished or re-created interface, or of the other mode
//     when a mode is forced, is detached and replaced.
//   - Otherwise a new link is created (auto: native, then generic) and pinned.
//   - Pinned links of interfaces no longer configured are detached.
//
// Close releases the handle but keeps pins: the program keeps dropping the
// denied sources while the SBC is down or restarting, and the next Load finds
// maps and link again. Remove detaches and deletes everything.
//
// A Load that fails detaches whatever it attached and leaves nothing half
// done; pinned maps are kept. The returned *LoadError says why, testable with
// errors.Is: ErrPermission (capabilities), ErrNoBPFFS, ErrKernelRefused
// (with the end of the verifier log), ErrNoInterface, ErrAttach (for example
// another XDP program already attached) or ErrUnsupported (not Linux,
// big-endian, kernel older than 5.9 without XDP links). The caller then falls
// back to nftables (acl/nft) or the user-space read filter.
//
// # Building
//
// xdp.c is compiled by bpf2go; its output xdp_bpfel.go and xdp_bpfel.o is
// committed, so `go build` needs no clang. To regenerate (`make generate`):
//
//	go generate ./ebpf
//
// which runs the //go:generate line of gen.go:
//
//	go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type lpm_v4_key \
//	    -type lpm_v6_key -type rl_key -type rl_state -type config \
//	    xdp xdp.c -- -mcpu=v3 -Wall -Werror
//
// It needs clang and llvm-strip (Debian: clang, llvm) and libbpf headers
// (Debian: libbpf-dev); the C file declares the kernel ABI it uses itself, so
// no kernel headers are needed. TestGeneratedUpToDate regenerates into a
// temporary directory and compares: the Go file and map specs always, the
// object byte for byte when the local clang has the major version the
// object was built with (the build is reproducible).
//
// # Inspecting with bpftool (Debian: bpftool)
//
//	bpftool net show                        # which interfaces run sbc_xdp, driver or generic
//	ip link show dev eth0                   # "prog/xdp" (native) or "prog/xdpgeneric"
//	bpftool prog show name sbc_xdp
//	bpftool link show
//	bpftool map dump pinned /sys/fs/bpf/sbc/sbc_deny_v4
//	bpftool map dump pinned /sys/fs/bpf/sbc/sbc_counters     # per CPU
//	bpftool map dump pinned /sys/fs/bpf/sbc/sbc_config
//	# block 198.51.100.0/24 by hand (prefixlen 24 little-endian, then the address):
//	bpftool map update pinned /sys/fs/bpf/sbc/sbc_deny_v4 key hex 18 00 00 00 c6 33 64 00 value hex 01
//	# detach everything by hand:
//	rm -r /sys/fs/bpf/sbc
//
// # Limits
//
//   - Concurrent packets of one source on several CPUs race on its bucket
//     (plain load/store): a lost update can admit an extra packet, never drop
//     a conforming one.
//   - Sources with spoofed, ever-changing addresses evict each other from the
//     65536-entry LRU and each get a fresh bucket; the deny list, the
//     user-space limiter and auto-blocking cover that case.
//   - Only the linear part of a frame is parsed (headers always are).
//   - The rate limit applies to UDP only; TCP/TLS peers are limited in
//     user space.
//   - With ScopeSIP, a denied source can still reach the host's other
//     services (that is the point); the SBC is not a host firewall. Frames
//     whose ports cannot be read (more than six IPv6 extension headers,
//     truncated headers) are passed and left to the kernel and the
//     user-space filter.
package ebpf
