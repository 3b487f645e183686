// Package media measures the SBC's media relay (package srtp) against
// rtpengine, side by side, with the same phones and packet rate:
//
//	phone A ─► relay leg A ─► relay leg B ─► phone B   (and back, B ─► A)
//
// The relay is either the SBC's, run as a child process of the harness
// (RelayChild: srtp streams built as package sbc builds them, one per
// call), or Debian's rtpengine-daemon in userspace mode (no kernel
// module, --table=-1) on loopback, driven by its ng protocol (bencode over
// UDP: offer, answer, delete), or nothing at all (the phones send to each
// other: the load generator's own cost). Each relay is a process of its
// own, so its CPU time (the sum of its threads' schedstat run time,
// cross-checked with utime+stime) is its alone; the phones' CPU is this
// process's, measured over the same window and reported beside it.
//
// The phones send RTP (PCMU, 160-byte payload carrying the send time),
// paced evenly over all flows at PPS packets per second per call and
// direction; SDES phones encrypt and decrypt with the keys the relay
// child hands out, DTLS phones run pion/dtls (setup:active) against the
// relay's leg on the same socket. A warm-up packet per flow must come
// through before anything is measured. A run reports packets sent and
// received (a loss, or a packet a phone cannot decrypt, is counted, not
// hidden), the relay's CPU per packet, packets per second per core, the
// phones' CPU per packet, and latency percentiles.
//
// Compare runs the scenarios of CompareScenarios in rotating order over
// several rounds; Capacity runs the SBC relay alone at growing call
// counts (50 packets/s each way per call) on one core (GOMAXPROCS=1) until
// a step loses packets or saturates the core (latency is reported beside
// it, with the generator's own lag), and reports the relay's memory per
// call (live heap, goroutines, RSS). The command
// bench/cmd/mediabench runs both; the figures are in BENCHMARKS.md
// ("srtp: media relay"). The tests are a short smoke of the harness (the
// SBC relay, and rtpengine where installed: CI installs it); the
// measurement itself runs from the command, or with SBC_BENCH=1
// (TestCompareShort).
package media
