// Package e2e holds end-to-end tests of the real sbc binary and its kernel
// fast paths. It has no code of its own: everything is in its tests.
//
// Each test builds the binary (go build ./cmd/sbc, once per run; set
// SBC_BIN to use a prebuilt one), makes two network namespaces joined by a
// veth pair, and runs the binary in one of them:
//
//	namespace "peer"                         namespace "sbc"
//	  10.77.0.2 attacker (raw UDP)             10.77.0.1:5060 realm external (XDP on the veth)
//	  10.77.0.3 trunk "carrier" (SIPp UAC) ─── 127.0.0.1:5062 realm internal
//	  10.77.0.4 SIPp UAS, backendOnVeth only   127.0.0.1:5080 SIPp UAS (pool "uas")
//	                                           127.0.0.1:9090 admin API and /metrics
//
// TestForgedTrunkJunk adds a third namespace, "spoofer" (10.78.0.2, its own
// veth to sbc1 in ns "sbc", reverse-path filtering off there), which holds
// none of the peers' addresses and forges them on a raw socket.
//
// With policyOpts.backendOnVeth the internal realm listens on
// 10.77.0.1:5062 and the pool target is 10.77.0.4:5080 in "peer", so that
// the backend's packets cross the veth and XDP.
//
// Neighbours are static, so no ARP depends on a blocked address, and the
// counters the tests compare are exact: a blocked source sends N datagrams,
// the kernel counts N drops, the SBC counts none (not even its gate for
// unknown sources, which drops the attacker's traffic once it is unblocked).
//
//   - TestXDPBlock: block through the admin API; the XDP program drops what
//     the attacker sends (sbc_xdp_packets_total{action="drop_deny"}), the SBC
//     sees none of it, trunk calls complete; the block holds while the SBC is
//     stopped (pinned maps and link) and after it starts again (state_dir);
//     an unblock lets the traffic through.
//   - TestNftablesBlock: XDP off, nftables on; the SBC auto-blocks a scanner
//     (User-Agent friendly-scanner), the element appears in
//     `nft list table inet NAME`, drops are counted by
//     sbc_nft_dropped_packets_total, the block survives a restart, and the
//     CLI (sbc block list|del) manages it.
//   - TestFallback: XDP asked for but impossible (missing interface, pin_dir
//     not on bpffs): the SBC says why, runs on the next path
//     (sbc_fastpath_info), calls complete and blocks still hold.
//   - TestBlockToXDPLatency: time from the admin POST returning to the
//     pinned deny map holding the prefix (logged; see BENCHMARKS.md (e2e)).
//   - TestXDPScope: with the default xdp.scope a blocked source's SIP and
//     media datagrams are dropped (exact count) while its other traffic
//     to the host passes (a
//     UDP datagram to another port, TCP to a non-SIP port, ICMP echo;
//     counted "spared"); after a reload to scope "host" it is dropped too.
//   - TestXDPRateLimitSparesBackends: XDP limits every source to one
//     packet a second, the backend sits across the veth (backendIP): trunk
//     calls complete and none of their packets is limited (trunks and
//     pool targets are allowed), a stranger's burst is.
//   - TestForgedTrunkJunk: datagrams forged with the trunk's source
//     address from the spoofer's namespace (raw socket: five-byte junk,
//     malformed SIP, Max-Forwards 0, a scanner's User-Agent, REGISTERs
//     the trunk may not send; 33 where the auto-block threshold is 10)
//     are counted for the trunk (exact sbc_trunk_failures_total) and
//     charged to nobody: no block, no XDP deny entry, the trunk's calls
//     complete; the same packets forged from the attacker's address get it
//     blocked (auto, malformed) and denied in XDP.
//   - TestCarrierNotChargedForCallers: the backend answers 404 to 12 of the
//     trunk's calls (SIPp scenarios): counted for the trunk (backend_404,
//     not_found, exact), no block; the trunk's next 6 calls all complete.
//   - TestNftablesTrunksOnly: nftables with trunks_only lets the backend's
//     answers in (calls complete) and drops a stranger's SIP (exact count
//     of not_trunk); the media relay range is in the table.
//
// The binary is started with nsenter --net, not ip netns exec: ip netns
// exec gives the process a private mount namespace with a fresh /sys, so a
// bpffs the SBC mounts on /sys/fs/bpf there dies with the process, and the
// pins with it. The tests pin into a private bpffs mounted on a temporary
// directory instead of the host's /sys/fs/bpf; they never touch the host's
// interfaces, bpffs or ruleset.
//
// The tests need root, iproute2, nsenter (util-linux), nft, sipp and
// sysctl (procps). Without them they skip, unless SBC_REQUIRE_PRIV=1,
// which turns the skip into a failure. SBC_E2E_LOGS=1 prints the SBC's log even when a test
// passes (it is always printed when one fails).
//
//	go test ./e2e/                                  # about 10 s plus the build
//	go test -run '^$' -bench BlockToXDP ./e2e/
package e2e
