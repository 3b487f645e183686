// Package nft mirrors the SBC's blocklist into nftables, for hosts where the
// XDP program (package ebpf) cannot run. It owns one table, `inet sbc` by
// default, and nothing else: it never reads or changes other tables, and
// it uses github.com/google/nftables (netlink), never the nft command.
//
// # What the SBC owns
//
// The whole table is the SBC's. New creates it, or after a restart adopts
// it: the elements of the blocked and trunk sets (with the time they have
// left) and the counter values are read, and the table is deleted and
// re-created as this version defines it, with those elements, in one
// kernel transaction, so filtering never pauses and an older or hand-edited
// layout is repaired. Rules or sets an operator adds inside the table are
// lost at the next start; put local rules in a table of your own. Close
// leaves the table in place (blocking continues while the SBC restarts);
// Remove deletes it.
//
// # Table layout
//
//	table inet sbc {
//		counter blocked { ... }              packets dropped from blocked sources
//		counter not_trunk { ... }            SIP packets dropped by TrunksOnly
//		set blocked4 { type ipv4_addr; size N; flags timeout; }
//		set blocked6 { type ipv6_addr; size N; flags timeout; }
//		set blocked4_net { type ipv4_addr; flags interval,timeout; }
//		set blocked6_net { type ipv6_addr; flags interval,timeout; }
//		set trunks4 { type ipv4_addr; flags interval; }    SetTrunks: trunks and backends
//		set trunks6 { type ipv6_addr; flags interval; }
//		set ports { type inet_service; flags interval; }   SIP ports + media range
//		set sip_ports { type inet_service; }
//		set media_udp { type inet_service; flags interval; }  the SBC's media relay ranges
//		chain guard {
//			ip saddr @blocked4 counter name "blocked" drop
//			ip saddr @blocked4_net counter name "blocked" drop
//			ip6 saddr @blocked6 counter name "blocked" drop
//			ip6 saddr @blocked6_net counter name "blocked" drop
//			# with TrunksOnly only:
//			th dport @sip_ports ip saddr != @trunks4 counter name "not_trunk" drop
//			th dport @sip_ports ip6 saddr != @trunks6 counter name "not_trunk" drop
//		}
//		chain prerouting {
//			type filter hook prerouting priority raw; policy accept;
//			udp dport @ports jump guard
//			tcp dport @ports jump guard
//			udp dport @media_udp jump guard
//		}
//	}
//
// Single addresses (/32, /128) go to blocked4/blocked6, one element each
// with its own timeout; the set size (Options.MaxEntries) bounds the
// kernel memory an attack can make the SBC spend. Wider prefixes go to the
// interval sets blocked4_net/blocked6_net, which refuse overlapping
// elements and give one timeout per element: the package keeps the list of
// blocked prefixes and installs their envelope, where every address is
// blocked until the latest deadline of the prefixes containing it. A /16
// for one hour holding a /24 for two hours becomes three ranges (the part
// before the /24 for 1h, the /24 for 2h, the part after for 1h); touching
// or nested prefixes with the same deadline become one range. Kernels whose
// interval sets cannot time out elements get those sets without the
// timeout flag; prefixes then stay until Unblock or Sync removes them.
//
// # Priority
//
// The base chain hooks prerouting at priority raw (-300): after
// defragmentation (-400), before connection tracking (-200) and routing.
// A blocked packet is dropped before it creates a conntrack entry, so a
// flood from blocked sources cannot fill the conntrack table, and before
// any filter-priority chain of other tables sees it. Only the SBC's ports
// are matched (UDP and TCP to the SIP ports and the media range); other
// traffic from a blocked source, including to other services of the host,
// passes through (the SBC is not a host firewall). Prerouting also sees
// forwarded packets to those ports. Non-first fragments carry no port and
// are not matched; without their first fragment they are never reassembled.
// Locally generated packets do not traverse prerouting except over lo.
//
// # Capacity
//
// Options.MaxEntries bounds each address set and the number of wider
// prefixes held; the SBC sizes it to its blocklist, so that the whole list
// fits. Beyond it, Block fails with ErrFull and Sync installs the first
// MaxEntries of each kind in the order given and returns a *FullError
// naming the rest (the caller keeps those in user space; nothing is
// retried).
//
// # Timeouts
//
// Re-adding an element does not refresh its timeout on older kernels
// (recent ones, such as 6.18, do), and deleting an element that is missing
// (already timed out) fails the whole batch with ENOENT. Every change
// therefore adds the element (a no-op when present), deletes it and adds it
// again with its new timeout, in one batch: a refresh on every kernel, and
// no failure on an element the kernel has just expired. Errors appear only
// when a batch is flushed; they are wrapped with the operation (and ErrFull
// when a set is full).
//
// # Inspecting it
//
//	nft list table inet sbc               the whole table, with time left per element
//	nft list set inet sbc blocked4        one set
//	nft list counters table inet sbc      drop counters (also Firewall.Counters)
//	nft -j list table inet sbc            the same as JSON
//	nft monitor                           changes as they happen
//
// An operator can delete an element by hand (`nft delete element inet sbc
// blocked4 { 192.0.2.1 }`), but the SBC's own blocklist is the authority:
// its next Sync puts back what it holds and removes what it does not.
//
// # Use
//
//	fw, err := nft.New(nft.Options{SIPPorts: []uint16{5060, 5061}, MediaPorts: [2]uint16{20000, 29999}})
//	...
//	err = fw.Sync(entries)                   at start: the authoritative list
//	err = fw.Block(prefix, time.Hour)        on each change of the blocklist
//	err = fw.Unblock(prefix)
//	c, err := fw.Counters()
//	err = fw.Close()                         keeps the table; Remove deletes it
//
// After New, call Sync with the blocklist: adoption keeps what the last run
// left so that blocking continues, but only Sync knows which prefixes the
// caller holds (a split range is adopted as the prefixes that cover it).
// All methods are safe for concurrent use. Tests run in network namespaces
// of their own (Options.NetNS); they need root.
package nft
