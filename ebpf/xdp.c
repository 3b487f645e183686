// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
// Copyright (c) the sbc authors. Dual licensed under the MIT license and the
// GNU General Public License version 2 (the kernel sees "Dual MIT/GPL").
//
// sbc XDP fast path: drop packets from blocked sources in the driver, before
// they cost a socket read, a SIP parse or a goroutine. See doc.go for the
// map layout, the decisions on malformed frames, fragments and IPv6
// extension headers, and how to inspect the maps with bpftool.
//
// The file is self-contained on purpose: it includes only libbpf's
// bpf_helpers.h/bpf_endian.h and declares the few kernel ABI constants and
// wire headers it needs, so the object builds the same on every host (no
// arch-specific <asm/types.h>, no dependency on the installed kernel headers).

//go:build ignore

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// ---- kernel ABI (include/uapi/linux/bpf.h) --------------------------------

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LPM_TRIE 11

#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_ANY 0
#define BPF_NOEXIST 1

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

// ---- wire headers ----------------------------------------------------------

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_QINQ1 0x9100 // pre-802.1ad QinQ, still seen on some switches

#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60

#define IP_OFFSET_MASK 0x1FFF     // IPv4 fragment offset (host order)
#define IP6_OFFSET_MASK 0xFFF8    // IPv6 fragment offset (host order)
#define MAX_VLAN_TAGS 2           // 802.1Q, 802.1ad QinQ
#define MAX_IPV6_EXT_HEADERS 6    // walked before giving up on the L4 header

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct ipv4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6_hdr {
	__u8 ver_tc;
	__u8 tc_flow;
	__be16 flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

// The first four bytes of a UDP or TCP header.
struct l4_ports {
	__be16 source;
	__be16 dest;
};

// ---- maps -------------------------------------------------------------------

// LPM trie keys: prefix length in host order, address in network order.
struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// Rate-limit state key: IPv4 sources as ::ffff:a.b.c.d (/32), IPv6 sources
// by their /64 (the low 8 bytes are zero). The two never collide: a /64 key
// has zero bytes 10 and 11, a mapped IPv4 key has 0xff there.
struct rl_key {
	__u8 addr[16];
};

// GCRA ("virtual scheduling") token bucket: one timestamp per source.
struct rl_state {
	__u64 tat; // theoretical arrival time, bpf_ktime_get_ns clock
};

// Where deny entries apply (struct config.scope).
enum scope {
	SCOPE_SIP = 0,  // only to the SBC's ports: UDP to udp_ports, TCP to tcp_ports
	SCOPE_HOST = 1, // to everything the host receives
};

// Program configuration, written by the Go loader (one entry). The port
// sets are 65536-bit bitmaps of destination ports: the SBC's SIP ports over
// UDP and over TCP, and its media relay ports (UDP). Deny entries apply to
// them only (scope SCOPE_SIP) or to every frame (SCOPE_HOST); the rate
// limit applies to UDP to udp_ports (not to media), and interval_ns == 0
// turns it off.
struct config {
	__u64 interval_ns;  // 1e9 / packets per second
	__u64 tolerance_ns; // (burst - 1) * interval_ns
	__u32 scope;        // enum scope
	__u32 pad;
	__u64 udp_ports[1024];
	__u64 tcp_ports[1024];
	__u64 media_ports[1024];
};

// Counter indexes into the per-CPU counters array. Every frame ends in
// exactly one of CNT_PASSED or a CNT_DROP_*; CNT_MALFORMED, CNT_NON_IP,
// CNT_FRAGMENT, CNT_ALLOWED and CNT_SPARED are sub-counts of CNT_PASSED
// (a passed frame counts in at most one of them).
enum counter {
	CNT_PASSED = 0,
	CNT_DROP_DENY = 1,
	CNT_DROP_RATELIMIT = 2,
	CNT_MALFORMED = 3,
	CNT_NON_IP = 4,
	CNT_FRAGMENT = 5,
	CNT_ALLOWED = 6,
	CNT_SPARED = 7, // from a denied source, not to an SBC port (SCOPE_SIP)
	CNT_MAX = 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_deny_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_allow_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rl_key);
	__type(value, struct rl_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_rl_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sbc_counters SEC(".maps");

// ---- program ------------------------------------------------------------------

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&sbc_counters, &idx);
	if (c)
		*c += 1; // per-CPU slot: no atomic needed
}

static __always_inline int pass(void)
{
	count(CNT_PASSED);
	return XDP_PASS;
}

static __always_inline int pass_as(__u32 why)
{
	count(why);
	return pass();
}

static __always_inline int drop_as(__u32 why)
{
	count(why);
	return XDP_DROP;
}

// rl_admit applies the per-source GCRA bucket. It returns 1 when the packet
// conforms (and charges it), 0 when it is over the rate.
//
// Concurrent updates of one source from several CPUs race (plain load/store);
// a lost update can only admit an extra packet, never drop a conforming one
// more than once, which is acceptable for a flood guard.
static __always_inline int rl_admit(struct config *cfg, struct rl_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 interval = cfg->interval_ns;
	struct rl_state *st = bpf_map_lookup_elem(&sbc_rl_state, key);
	if (!st) {
		struct rl_state fresh = { .tat = now + interval };
		bpf_map_update_elem(&sbc_rl_state, key, &fresh, BPF_ANY);
		return 1;
	}
	__u64 tat = st->tat;
	if (tat < now)
		tat = now;
	if (tat - now > cfg->tolerance_ns)
		return 0;
	st->tat = tat + interval;
	return 1;
}

static __always_inline int port_in(__u64 *bitmap, __be16 port_be)
{
	__u16 port = bpf_ntohs(port_be);
	return (bitmap[port >> 6] >> (port & 63)) & 1;
}

// not_ours passes a frame that is not to one of the SBC's ports; one from
// a denied source is counted as spared (SCOPE_SIP only: with SCOPE_HOST,
// denied sources never get here).
static __always_inline int not_ours(int denied)
{
	if (denied)
		return pass_as(CNT_SPARED);
	return pass();
}

// deny_verdict drops a frame of a denied source unless the allow list
// covers it.
static __always_inline int deny_verdict(void *allow_map, void *allow_key)
{
	if (bpf_map_lookup_elem(allow_map, allow_key))
		return pass_as(CNT_ALLOWED);
	return drop_as(CNT_DROP_DENY);
}

// l4_verdict judges an unfragmented packet or a first fragment by its
// upper layer proto at l4. denied says the source is in the deny list (and
// was not judged yet: always 0 with SCOPE_HOST).
static __always_inline int l4_verdict(struct config *cfg, __u8 proto, void *l4, void *end,
				      int denied, struct rl_key *rk,
				      void *allow_map, void *allow_key)
{
	int sip;
	if (proto == IPPROTO_UDP) {
		if ((void *)((struct udp_hdr *)l4 + 1) > end)
			return pass_as(CNT_MALFORMED);
		__be16 dest = ((struct udp_hdr *)l4)->dest;
		sip = port_in(cfg->udp_ports, dest);
		if (!sip && !port_in(cfg->media_ports, dest))
			return not_ours(denied);
	} else if (proto == IPPROTO_TCP) {
		if ((void *)((struct l4_ports *)l4 + 1) > end)
			return pass_as(CNT_MALFORMED);
		sip = port_in(cfg->tcp_ports, ((struct l4_ports *)l4)->dest);
		if (!sip)
			return not_ours(denied);
	} else {
		return not_ours(denied);
	}
	if (denied)
		return deny_verdict(allow_map, allow_key);
	// The rate limit is for SIP over UDP: media streams and TCP are not
	// limited here.
	if (proto != IPPROTO_UDP || !sip || cfg->interval_ns == 0)
		return pass();
	if (bpf_map_lookup_elem(allow_map, allow_key))
		return pass_as(CNT_ALLOWED);
	if (!rl_admit(cfg, rk))
		return drop_as(CNT_DROP_RATELIMIT);
	return pass();
}

static __always_inline int handle_ipv4(struct config *cfg, void *cur, void *end)
{
	struct ipv4_hdr *ip = cur;
	if ((void *)(ip + 1) > end)
		return pass_as(CNT_MALFORMED);
	if ((ip->ver_ihl >> 4) != 4)
		return pass_as(CNT_MALFORMED);
	__u32 ihl = (ip->ver_ihl & 0x0F) * 4;
	if (ihl < sizeof(*ip))
		return pass_as(CNT_MALFORMED);

	// Source verdict: the source address is in every fragment.
	struct lpm_v4_key key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &ip->saddr, 4);
	int denied = bpf_map_lookup_elem(&sbc_deny_v4, &key) != 0;
	if (denied && cfg->scope == SCOPE_HOST)
		return deny_verdict(&sbc_allow_v4, &key);
	if (cfg->scope == SCOPE_HOST)
		denied = 0;

	// Ports exist only in the first fragment.
	if (bpf_ntohs(ip->frag_off) & IP_OFFSET_MASK)
		return pass_as(CNT_FRAGMENT);

	struct rl_key rk = {};
	rk.addr[10] = 0xff;
	rk.addr[11] = 0xff;
	__builtin_memcpy(&rk.addr[12], &ip->saddr, 4);
	return l4_verdict(cfg, ip->protocol, cur + ihl, end, denied, &rk, &sbc_allow_v4, &key);
}

static __always_inline int handle_ipv6(struct config *cfg, void *cur, void *end)
{
	struct ipv6_hdr *ip6 = cur;
	if ((void *)(ip6 + 1) > end)
		return pass_as(CNT_MALFORMED);
	if ((ip6->ver_tc >> 4) != 6)
		return pass_as(CNT_MALFORMED);

	struct lpm_v6_key key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, ip6->saddr, 16);
	int denied = bpf_map_lookup_elem(&sbc_deny_v6, &key) != 0;
	if (denied && cfg->scope == SCOPE_HOST)
		return deny_verdict(&sbc_allow_v6, &key);
	if (cfg->scope == SCOPE_HOST)
		denied = 0;

	// Walk extension headers to the upper-layer header.
	__u8 nh = ip6->nexthdr;
	cur = ip6 + 1;
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
		    nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH) {
			struct ipv6_opt_hdr *opt = cur;
			if ((void *)(opt + 1) > end)
				return pass_as(CNT_MALFORMED);
			__u32 len = nh == IPPROTO_AH ? ((__u32)opt->hdrlen + 2) * 4
						     : ((__u32)opt->hdrlen + 1) * 8;
			nh = opt->nexthdr;
			cur += len;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr *frag = cur;
			if ((void *)(frag + 1) > end)
				return pass_as(CNT_MALFORMED);
			if (bpf_ntohs(frag->frag_off) & IP6_OFFSET_MASK)
				return pass_as(CNT_FRAGMENT);
			nh = frag->nexthdr;
			cur = frag + 1;
		} else {
			break;
		}
	}
	// More extension headers than we walk: the upper layer is unknown.
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	    nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH || nh == IPPROTO_FRAGMENT)
		return pass_as(CNT_MALFORMED);

	struct rl_key rk = {};
	__builtin_memcpy(rk.addr, ip6->saddr, 8);
	return l4_verdict(cfg, nh, cur, end, denied, &rk, &sbc_allow_v6, &key);
}

SEC("xdp")
int sbc_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&sbc_config, &zero);
	if (!cfg)
		return pass(); // cannot happen: an array map always has its entry

	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass_as(CNT_MALFORMED);
	__be16 proto = eth->proto;
	void *cur = eth + 1;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) &&
		    proto != bpf_htons(ETH_P_8021AD) &&
		    proto != bpf_htons(ETH_P_QINQ1))
			break;
		struct vlan_hdr *vh = cur;
		if ((void *)(vh + 1) > end)
			return pass_as(CNT_MALFORMED);
		proto = vh->proto;
		cur = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(cfg, cur, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(cfg, cur, end);
	return pass_as(CNT_NON_IP);
}

char _license[] SEC("license") = "Dual MIT/GPL";
