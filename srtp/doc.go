// Package srtp is the SBC's media plane: it anchors each media stream of a
// call on relay sockets of its own, so the two sides only ever see the SBC's
// addresses, and it converts between the legs' media profiles.
//
// It owns:
//
//   - Relay ports (PortPool, Ports): even RTP ports with RTCP on the next
//     odd one, or one port with rtcp-mux; a random start then a walk of the
//     range; a quarantine before a released port is reused; an immediate
//     ErrPortsExhausted when the range is full (the SBC answers 503).
//   - Streams (Stream): one per m= line, relaying between two legs. One
//     reader goroutine per socket (two per leg without rtcp-mux, one with
//     it) forwards each datagram straight out of the other leg's socket,
//     with a buffer owned by the goroutine: no channel, no allocation per
//     packet. That is simple and enough for SIP trunks (about 50 packets/s
//     per socket); batching (recvmmsg) or an in-kernel path for plain RTP
//     can replace the readers later without changing the API.
//   - Latching: before the first packet a leg's destination is the address
//     its SDP announced. The first valid packet from that address (from any
//     address if the leg learns, for symmetric RTP behind NAT) latches the
//     leg; from then on only that source is accepted ("strict source"),
//     and only Stream.Expect (a re-INVITE or UPDATE that changed the
//     address, or an ICE-selected pair) moves it. For an SRTP leg, "valid"
//     means authenticated, so a forged packet cannot steer the relay.
//     Refused packets are counted by reason (DropReason).
//   - Demultiplexing per RFC 7983 (STUN 0–3, DTLS 20–63, RTP/RTCP 128–191)
//     and RTP/RTCP per RFC 5761 on a muxed socket.
//   - Per-leg transforms (Transform): Plain, SRTP (pion/srtp v3 contexts,
//     replay protection on decrypt, ROC kept across a rekey) and NotReady
//     for a leg whose keys are still to come.
//   - SSRC, sequence and timestamp normalisation on a leg's egress
//     (LegConfig.Normalize), so an SRTP receiver sees one continuous
//     source across music on hold, transfers and early media.
//   - Idle tracking (Stream.Idle, StreamConfig.OnIdle): the stream reports;
//     the owner decides to end the call.
//   - SDES (RFC 4568): parsing and printing a=crypto, key generation,
//     Negotiate.
//   - SDP anchoring (ParseSDP, Rewrite, Remote): the SDP a side receives
//     carries the SBC's origin, addresses and ports, the other side's codecs
//     and directions, and none of its addresses, candidates or keys.
//
// It does not know SIP: no dialogs, no offer/answer state machine, no
// policy. The owner (package sbc) allocates ports, tells each stream what
// each leg's SDP said (Remote, Expect), chooses the profiles (Negotiate,
// NewSDES), writes the SDP with Rewrite, reads the counters and closes the
// stream when the call ends.
//
// DTLS-SRTP and ICE-lite come later, through three seams that exist now: a
// DatagramHandler receives a leg's STUN and DTLS datagrams with a writer on
// the same socket; KeysFromDTLS turns the handshake's exporter into
// SRTPKeys; and Stream.SetTransform replaces the leg's NotReady transform
// with NewSRTP(local, remote) once keys exist. Packets that arrive before
// then are dropped as "not_ready", not counted as errors.
package srtp
