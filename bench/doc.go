// Package bench owns the SBC's load harnesses: reproducible measurements
// of the whole B2BUA with a real SIP peer (SIPp) on both sides. (The
// attack generators are in bench/attack.)
//
// The max-CPS harness (MaxCPS, RunStep; command bench/cmd/maxcps) finds the
// highest call rate the SBC carries with zero failed calls:
//
//	SIPp caller (scenarios/uac.xml) ─► sbc external realm ─► sbc internal realm ─► SIPp callee (scenarios/uas.xml)
//
// all over loopback UDP on kernel-chosen free ports. Each step runs a fresh
// SBC (in-process, or as a process: a built binary or the command's own
// child) and fresh SIPp peers, asks the caller for Rate × Duration calls
// (INVITE, 200, ACK, hold, BYE), and is bounded in calls and in time. A
// step passes when SIPp reports every call successful and none failed, the
// SBC counted every call as answered, and SIPp sustained the asked rate.
// The search doubles the rate from StartRate until a step fails, then
// bisects. Around each step it reads the SBC's /metrics (sbc_calls_total,
// sbc_dropped_total, process_cpu_seconds_total), the system-wide UDP
// counters of /proc/net/snmp (RcvbufErrors: receive-buffer drops) and the
// drops of the SBC's own sockets in /proc/net/udp.
//
// Run it with
//
//	go run ./bench/cmd/maxcps -duration 20s
//
// The side-by-side harness (Compare; command bench/cmd/compare, `make
// bench-compare`) measures sbc and Kamailio in the same run (issue 11):
//
//	SIPp caller (scenarios/compare_uac.xml) ─► X ─► SIPp callee (scenarios/compare_uas.xml)
//
// with X the sbc binary (the max-CPS policy: defence on, per-source limits
// raised, 4 MiB socket buffers, log level warn; media not anchored unless
// -sbc-anchor: Kamailio does not anchor media, so the like-for-like
// comparison does not either) or Kamailio from Debian
// (kamailio/kamailio.cfg: a stateful, record-routing proxy with pike and
// topoh, tlsf allocator, pre-faulted shm, 4 MiB buffers, one UDP worker),
// all inside a network namespace the harness makes, on fixed loopback
// ports. Trials alternate between the systems (round r in order, r+1
// reversed) so that the machine's noise hits both. A trial is one server
// process: a warm-up step (not judged: its memory is touched before the
// measured steps), a step at a fixed rate captured by tcpdump on the
// namespace's loopback (INVITE→100 and INVITE→200 per call, from the
// caller's side of the capture), then a bisection for the highest rate
// that passes the strict rule: every call successful, none failed on
// either side, zero retransmissions on either SIPp side, and ≥ 95 % of the
// asked rate achieved. After each step the harness waits for the server to
// go idle (and restarts it, warmed up again, if it does not). CPU per call
// is the server's processes' utime+stime from /proc/PID/stat over the
// step and its drain; memory is the sum of their RSS and PSS
// (smaps_rollup; PSS counts Kamailio's shared pool once). The scenarios
// follow the route set (the caller sends ACK and BYE with [routes] to
// [next_url]), absorb a 100 or 180 that arrives after the 200 and let the
// callee take a BYE before its ACK. TestCompareSmoke runs the whole
// harness at 50 calls/s for 3 s per system (root, SIPp, Kamailio and
// tcpdump; it skips without them, and fails instead in CI).
//
// Two more systems measure sbc under a flood (issue 11): sbc-flood and
// sbc-xdp-flood are sbc with the same policy, 10.66.0.0/16 blocked through
// the admin API, and a flood of spoofed OPTIONS from that prefix at the
// SIP port during every step (bench/attack.SpoofedFlood,
// CompareConfig.FloodPPS, default 20,000 datagrams/s), sent from a
// namespace of its own over a veth pair whose other end stands for the
// NIC the Internet comes in on, dropped by the read filter (sbc-flood) or
// by the XDP program in driver mode on that end (sbc-xdp-flood; pins on a
// bpffs the run mounts, removed when the server stops, which detaches the
// program). The calls' own traffic stays on lo. The table
// gives each one's median max calls/s over sbc's. TestCompareFloodSmoke
// checks where the flood is dropped; TestOverloadRecovery stalls sbc
// (SIGSTOP) inside a step and checks that it sheds the stale backlog and
// answers the next step's calls.
//
// The package's own tests are fast unit tests of the parsers and of the
// search; the real search runs only from the command or with SBC_BENCH=1
// (TestMaxCPSShort). Results and the commands that made them are in
// BENCHMARKS.md (max CPS; sbc vs Kamailio, side by side).
package bench
