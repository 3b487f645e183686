// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
// Copyright (c) the sbc authors. Dual licensed under the MIT license and the
// GNU General Public License version 2 (the kernel sees "Dual MIT/GPL").
//
// sbc in-kernel plain RTP relay: a TC (clsact/tcx) ingress program that
// forwards the UDP datagrams of latched plain-RTP flows without waking user
// space. A flow is an exact 4-tuple (the peer's latched source, the relay
// socket's address): a packet that matches gets its addresses and ports
// rewritten to (the other leg's relay socket → the other leg's peer), its
// IPv4 and UDP checksums fixed incrementally, its flow counters bumped,
// and is sent on: redirected to the flow's interface (bpf_redirect_neigh),
// or, with ifindex 0, passed on up this interface's stack (loopback, where
// the new destination is a local socket). Everything else (no entry:
// latching, STUN, DTLS, SRTP, IPv6, fragments, IP options) passes untouched
// to the sockets, where user space handles it.

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

#define BPF_MAP_TYPE_HASH 1
#define BPF_F_PSEUDO_HDR (1ULL << 4)
#define BPF_F_MARK_MANGLED_0 (1ULL << 5)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17

struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
} __attribute__((packed));

struct iphdr {
	__u8 ihl_version;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

// flow_key: an inbound packet's 4-tuple, network byte order.
struct flow_key {
	__be32 saddr; // the latched peer
	__be32 daddr; // the relay socket
	__be16 sport;
	__be16 dport;
};

// flow: where it goes and what it counted. ifindex 0 passes the rewritten
// packet on up the ingress interface's stack (loopback).
struct flow {
	__be32 saddr; // the other leg's relay socket
	__be32 daddr; // the other leg's peer
	__be16 sport;
	__be16 dport;
	__u32 ifindex;
	__u64 packets;
	__u64 bytes;
	__u64 last_ns; // bpf_ktime_get_ns of the last packet
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

#define IP_CSUM_OFF (sizeof(struct ethhdr) + 10)
#define IP_SRC_OFF (sizeof(struct ethhdr) + 12)
#define IP_DST_OFF (sizeof(struct ethhdr) + 16)
#define UDP_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))
#define UDP_SPORT_OFF (UDP_OFF + 0)
#define UDP_DPORT_OFF (UDP_OFF + 2)
#define UDP_CSUM_OFF (UDP_OFF + 6)

SEC("tc")
int kfwd(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl_version != 0x45 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	if (ip->frag_off & bpf_htons(0x3fff)) // MF or an offset: a fragment
		return TC_ACT_OK;
	struct flow_key k = {.saddr = ip->saddr, .daddr = ip->daddr, .sport = udp->source, .dport = udp->dest};
	struct flow *f = bpf_map_lookup_elem(&flows, &k);
	if (!f)
		return TC_ACT_OK;

	__be32 nsaddr = f->saddr, ndaddr = f->daddr;
	__be16 nsport = f->sport, ndport = f->dport;
	__u32 ifindex = f->ifindex;
	__u64 l4flags = BPF_F_MARK_MANGLED_0;
	__u8 has_csum = udp->check != 0;

	// Addresses: IP header checksum, and the UDP checksum's pseudo header.
	if (has_csum) {
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, k.saddr, nsaddr, l4flags | BPF_F_PSEUDO_HDR | 4);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, k.daddr, ndaddr, l4flags | BPF_F_PSEUDO_HDR | 4);
	}
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, k.saddr, nsaddr, 4);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, k.daddr, ndaddr, 4);
	bpf_skb_store_bytes(skb, IP_SRC_OFF, &nsaddr, 4, 0);
	bpf_skb_store_bytes(skb, IP_DST_OFF, &ndaddr, 4, 0);
	// Ports.
	if (has_csum) {
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, k.sport, nsport, l4flags | 2);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, k.dport, ndport, l4flags | 2);
	}
	bpf_skb_store_bytes(skb, UDP_SPORT_OFF, &nsport, 2, 0);
	bpf_skb_store_bytes(skb, UDP_DPORT_OFF, &ndport, 2, 0);

	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, skb->len);
	f->last_ns = bpf_ktime_get_ns();

	if (ifindex == 0)
		return TC_ACT_OK;
	return bpf_redirect_neigh(ifindex, 0, 0, 0);
}

char __license[] SEC("license") = "Dual MIT/GPL";
