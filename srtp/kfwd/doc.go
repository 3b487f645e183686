// Package kfwd is the SBC's in-kernel relay for plain RTP: a TC ingress
// program (tcx, kfwd.c compiled by bpf2go; the output is committed) that
// forwards the datagrams of latched plain↔plain flows by rewriting their
// addresses and ports, so that user space is not woken per packet.
//
// A flow is an exact 4-tuple (the leg's latched source → the relay
// socket), so strict-source lock-in holds in the kernel as in user space:
// a packet from any other source finds no entry and reaches the socket,
// where package srtp drops and counts it. User space keeps everything
// that is not a latched plain flow: the first packets (latching), STUN,
// DTLS, SRTP, IPv6, fragments. Each flow counts packets, bytes and the
// time of its last packet, which package srtp adds to the stream's
// counters and media-timeout clock.
//
// Forwarder satisfies srtp.KernelPath; package srtp offloads a stream's
// flows once both legs are latched and plain (StreamConfig.Kernel), and
// takes them back on any change (Expect, SetTransform, SetHandler, Close).
// The SBC turns it on with the policy key media.kernel_relay.
//
// Running it needs root (CAP_BPF and CAP_NET_ADMIN) and a kernel with tcx
// (6.6 or later). IPv4 only.
package kfwd
