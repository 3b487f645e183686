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
//     On Linux with relay loops a pool keeps its sockets: a slot's sockets
//     are made with raw system calls (socket, bind: no net.UDPConn, not in
//     the Go runtime's poller) the first time a call takes the slot, added
//     to one relay loop's epoll, and stay there, bound, until
//     PortPool.Close. A released slot's sockets rest: the loop reads what
//     reaches them and drops it (DropIdlePort, PortStats.IdleDrops) while
//     the slot is quarantined or free; a stream that takes them drains
//     what is queued first (one epoll_wait per relay loop tells which are
//     readable), so a call never sees a datagram sent before it had the
//     port. A call then costs no socket, bind, close or epoll_ctl: its
//     sockets and stream cost a tenth of the CPU they did with a
//     net.ListenUDP per socket, its whole media set-up and tear-down
//     (SDP included) a fifth (BENCHMARKS.md, "srtp: media relay").
//     Sockets made with raw system calls at each allocation only halved
//     it. The price is descriptors: a new call takes one of the free
//     slots whose sockets are kept, at random, when there are at least 32
//     of them (else it walks the range from a random start and binds what
//     it finds), so a pool keeps about two descriptors per slot that calls
//     hold at once (in use or quarantined) plus 64, opened as needed,
//     never more than two per slot of its range; the process's limit
//     (ulimit -n; Go raises the soft limit to the hard one) must allow the
//     peak beside the SIP connections. Elsewhere, and with
//     RelayOptions.PerSocket, a pool binds a net.UDPConn per socket at
//     each allocation and closes it at release.
//   - Streams (Stream): one per m= line, relaying between two legs, each
//     datagram forwarded straight out of the other leg's socket from a
//     preallocated buffer: no channel, no allocation per packet.
//   - Relay loops (engine_linux.go): on Linux a stream's sockets join one
//     of a few relay loops (GOMAXPROCS by default; RelayOptions), each a
//     goroutine with an epoll instance of its own over the sockets of many
//     streams. The epoll descriptor sits in the Go runtime's poller, so an
//     idle loop parks like a goroutine on a socket and is woken once for
//     every socket that became ready meanwhile; it then polls without
//     blocking (raw epoll_pwait), reads each ready socket with one
//     recvmmsg and sends with raw sendto (sockIO, rawio_linux.go), and
//     reads the clock once per batch. No goroutine per stream, no park
//     and wake-up per packet. RelayOptions.Coalesce can make a busy loop
//     wait a little before polling again (more packets per wake-up, a
//     little latency); RelayOptions.PerSocket, and other systems, keep
//     the older design: a reader goroutine per socket. Stream.Close takes
//     the sockets out of their loop (kept sockets: puts them at rest)
//     before it releases them.
//   - The kernel path (StreamConfig.Kernel, a KernelPath such as
//     srtp/kfwd's Forwarder): once both legs of a plain↔plain stream
//     (no normalisation, no DatagramHandler) are latched, each direction
//     of each socket pair is offloaded as an exact flow (latched source →
//     relay socket), so its packets never reach user space; the kernel's
//     counts and last-packet time are part of Stats, LastPacket and Idle.
//     Expect (a moved leg), SetTransform, SetHandler and Close take the
//     flows back; a moved leg relatches in user space first.
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
//   - Opaque streams (Stream.SetOpaque) for m= lines that are not RTP,
//     UDPTL for T.38 fax: datagrams go from a leg's RTP socket to the other
//     leg's RTP destination unchanged, latched and counted like RTP, with
//     no demultiplexing, transform or normalisation.
//   - ParseSDP accepts any RFC 4566 token as m= media and transport
//     (pion/sdp v3.0.20 refuses "image" and "udptl").
//   - Per-leg transforms (Transform): Plain, SRTP (pion/srtp v3 contexts,
//     replay protection on decrypt, ROC kept across a rekey, the replaced
//     decrypt keys tried for RekeyGrace on a failed tag) and NotReady
//     for a leg whose keys are still to come. pion/srtp is v3.1.3 forked
//     in third_party/srtp, whose AES-CM suites use Go's AES-NI counter-mode
//     and SHA-NI assembly (its README).
//   - SSRC, sequence and timestamp normalisation on a leg's egress
//     (LegConfig.Normalize), so an SRTP receiver sees one continuous
//     source across music on hold, transfers and early media.
//   - Idle tracking (Stream.Idle, StreamConfig.OnIdle): the stream reports;
//     the owner decides to end the call.
//   - SDES (RFC 4568): parsing and printing a=crypto, key generation,
//     Negotiate.
//   - SDP anchoring (ParseSDP, Rewrite, RewriteSDP, Remote): the SDP a
//     side receives carries the SBC's origin, addresses and ports, the
//     other side's codecs and directions, and none of its addresses,
//     candidates or keys. ParseSDP's tolerant pre-pass is skipped (no
//     copy) for an SDP it would not change; RewriteSDP marshals once.
//
// It does not know SIP: no dialogs, no offer/answer state machine, no
// policy. The owner (package sbc) allocates ports, tells each stream what
// each leg's SDP said (Remote, Expect), chooses the profiles (Negotiate,
// NewSDES), writes the SDP with Rewrite, reads the counters and closes the
// stream when the call ends.
//
//   - DTLS-SRTP (RFC 5763/5764): the SBC's certificate (GenerateCertificate,
//     LoadOrCreateCertificate, LoadCertificate) and its SHA-256
//     Fingerprint; a DTLS handler per leg (NewDTLS) that acts the role its
//     a=setup advertised, checks the peer's certificate against its SDP
//     fingerprint, answers from the leg's socket to the ClientHello's
//     source, and installs the leg's SRTP transform when the handshake
//     completes (the leg is NotReady until then); on a leg without
//     rtcp-mux one association per component, on its RTP and its RTCP
//     socket, each keying its own packets (RFC 5764 4.1). pion/dtls v3
//     sits behind an internal engine interface.
//   - ICE-lite (RFC 8445 §2.5, RFC 7675): an agent per leg (NewICELite) that
//     answers the peer's Binding requests, makes the nominated address the
//     leg's destination and stops media when consent expires; SecureLeg
//     puts ICE and DTLS on one leg, DTLS accepting only ICE-validated
//     sources.
//   - The SDP of both (RemoteSecurity, Anchor.AddICELite, Anchor.AddDTLS).
//
// They plug into a stream through its seams: a DatagramHandler receives a
// leg's STUN and DTLS datagrams with a writer on the same socket (bound to
// its stream first if it is a StreamBinder, closed with it if it is an
// io.Closer, replaced with Stream.SetHandler); KeysFromDTLS turns the
// handshake's exporter into SRTPKeys; Stream.SetTransform replaces the
// leg's NotReady transform with NewSRTP(local, remote); Stream.Expect
// moves the leg to the ICE-selected address. Packets that arrive before
// the keys are dropped as "not_ready", not counted as errors.
//
// A WebRTC leg, as the tests build it:
//
//	sec, _ := srtp.RemoteSecurity(offer, 0)           // the browser's ICE and DTLS
//	agent, _ := srtp.NewICELite(srtp.ICEConfig{RemoteUfrag: sec.ICE.Ufrag, OnConsentLost: ...})
//	setup, _ := srtp.AnswerSetup(sec.Setup, srtp.SetupPassive)
//	d, _ := srtp.NewDTLS(srtp.DTLSConfig{Certificate: cert, Setup: setup,
//		RemoteSetup: sec.Setup, RemoteFingerprints: sec.Fingerprints, OnDone: ...})
//	leg := srtp.LegConfig{Ports: ports /* rtcp-mux */, Handler: &srtp.SecureLeg{ICE: agent, DTLS: d}, Normalize: true}
//	// ... NewStream, then in the answer's anchor:
//	anchor.AddICELite(0, agent.Local(), ports.RTPAddr())
//	anchor.AddDTLS(0, setup, cert.Fingerprint)
package srtp
