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
// The package's own tests are fast unit tests of the parsers and of the
// search; the real search runs only from the command or with SBC_BENCH=1
// (TestMaxCPSShort). Results and the commands that made them are in
// BENCHMARKS.md (max CPS).
package bench
