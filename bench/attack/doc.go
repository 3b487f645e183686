// Package attack owns the attack generators of the SBC's edge-defence
// tests and benchmarks: an extension scan, a digest brute force (one
// extension, or a campaign over several), an INVITE flood, a
// malformed-message storm, a flood from many (spoofed) source addresses
// and a flood of TCP connections from many addresses, plus a Sink that
// counts what arrives.
//
// The generators are plain sockets and raw SIP text; sipgo's parser only
// reads the responses. Each one is a function taking a context and a
// config struct and returning a Report (sent, responses by status code,
// errors, elapsed, why it stopped). They share these rules:
//
//   - They send only to cfg.Target (one unicast address; multicast,
//     broadcast and unspecified targets are refused), from cfg.Local when
//     set (e.g. 127.0.0.66: Linux lets any 127/8 address be bound without
//     setup, so a test can tell the attacker's source from others).
//     SpoofedFlood sends from the addresses of cfg.Sources instead.
//   - Each run is bounded in count (Count, the extension range, the
//     password list) and in time (Duration, with defaults), and ends
//     early when its context ends (Report.Stop == StopCanceled). The
//     returned error is non-nil only when a run could not start.
//   - Floods are paced on a schedule fixed at the start (send n at
//     n/Rate), so scheduling delays are caught up, not accumulated.
//
// Extension scan (SIPVicious svwar style: "friendly-scanner", one
// transaction per extension and method, no retransmissions by default):
//
//	rep, err := attack.ExtensionScan(ctx, attack.ExtensionScanConfig{
//		Target:  sbcAddr,                                  // netip.AddrPort
//		Local:   netip.MustParseAddrPort("127.0.0.66:0"),
//		First:   100, Last: 199,
//		Methods: []string{"OPTIONS", "REGISTER"},
//		Timeout: 200 * time.Millisecond,
//	})
//	// rep.Results: one ScanResult{Extension, Method, Status} per request;
//	// rep.Existing(): those answered with something other than 404.
//
// Digest brute force (REGISTER, then one password per 401/407 challenge;
// MD5, MD5-sess, SHA-256, qop auth/auth-int/none):
//
//	rep, err := attack.DigestBruteForce(ctx, attack.DigestBruteForceConfig{
//		Target: sbcAddr, Local: attacker,
//		Extension: "100",
//		Passwords: []string{"100", "1234", "password", "secret"},
//	})
//	// rep.Found, rep.Password, rep.Attempts, rep.Challenges, rep.Stop
//	// (StopFound, StopCount when the list ran out, StopUnanswered when the
//	// target went silent: blocked).
//
// REGISTER brute force over several extensions from one source (a
// cracker spraying a PBX's extension range: DigestBruteForce per
// extension, moving on when the target goes silent for one), the
// generator of the SBC's registration guard tests (sbc
// TestRegisterBruteForceKamailio, against Kamailio):
//
//	rep, err := attack.RegisterBruteForce(ctx, attack.RegisterBruteForceConfig{
//		Target: sbcAddr, Local: attacker, Domain: "pbx.example.com",
//		Extensions: []string{"1001", "1002", "1003"},
//		Passwords:  []string{"1234", "password", "secret"},
//	})
//	// rep.Refused (failed challenges the target saw), rep.Found,
//	// rep.Silenced (extensions gone silent: locked), rep.Blocked and
//	// rep.BlockedAfter (the source cut off after that many refusals)
//
// INVITE flood (new Call-ID per INVITE, never ACK/BYE/CANCEL):
//
//	rep, err := attack.InviteFlood(ctx, attack.InviteFloodConfig{
//		Target: sbcAddr, Local: attacker,
//		Rate: 500, Count: 5000, Duration: 10 * time.Second,
//		SDP: true, Linger: time.Second,
//	})
//	// rep.Responses[503], rep.Rate() ...
//
// Malformed storm (the RFC 4475 messages of the chosen INDEX.tsv classes,
// alternating with generated garbage: random bytes, truncated headers,
// huge headers, NULs, bad Content-Length, broken start lines, bare LF,
// binary headers, missing colons, deep folding, empty datagrams),
// deterministic from Seed:
//
//	rep, err := attack.MalformedStorm(ctx, attack.MalformedStormConfig{
//		Target: sbcAddr, Local: attacker,
//		CorpusDir: "/work/shared/corpora/rfc4475", // Classes default {"invalid"}
//		Seed: 1, Count: 2000, Rate: 1000,
//	})
//	// Without a network: g, _ := attack.NewMalformedGenerator(cfg); m := g.Next()
//
// Spoofed flood (many source addresses). SpoofRaw builds IPv4+UDP headers
// on a raw socket (root / CAP_NET_RAW) and may use any prefix; run it in
// a network namespace (NetNS) so that spoofed packets never reach a real
// network. SpoofLoopback binds one socket per address of a 127/8 prefix
// and needs no privilege; SpoofAuto picks raw when it can:
//
//	rep, err := attack.SpoofedFlood(ctx, attack.SpoofedFloodConfig{
//		Target:  netip.MustParseAddrPort("10.99.0.2:5060"),
//		Sources: netip.MustParsePrefix("10.66.0.0/16"),
//		Mode:    attack.SpoofRaw, NetNS: "attackerns",
//		Count:   10000, Rate: 5000,
//	})
//	// or, unprivileged: Sources 127.66.0.0/16, Mode attack.SpoofLoopback,
//	// MaxSources 256, Target the SBC's loopback listener.
//	// rep.Sources distinct addresses were used; responses are not read.
//
// SpoofLink writes the same packets as frames on an AF_PACKET socket
// bound to one end of a link (Link, to the other end's hardware address
// LinkPeer), so that the flood enters the target's namespace through that
// link as one from another machine does (the comparison's flood systems
// drop it there with XDP in driver mode).
//
// SpoofPktinfo sends from one UDP socket and names each datagram's source
// in an IP_PKTINFO / IPV6_PKTINFO control message: IPv4 or IPv6, any
// prefix the namespace holds as local (an AnyIP route), e.g. a /48 spread
// over its /64s (SpreadAddr), so that answers to the spoofed sources stay
// in the namespace:
//
//	// ip -n sbcns route add local 2001:db8:66::/48 dev lo
//	rep, err := attack.SpoofedFlood(ctx, attack.SpoofedFloodConfig{
//		Target:  netip.MustParseAddrPort("[::1]:5060"),
//		Sources: netip.MustParsePrefix("2001:db8:66::/48"),
//		Mode:    attack.SpoofPktinfo, NetNS: "sbcns",
//		Count:   200000, Rate: 50000,
//	})
//
// Connection flood (TCP connections from many source addresses, held
// open, with an optional payload sent at once or a byte at a time: a
// slow sender); 127/8 sources need no setup, others a local route in the
// namespace (the sockets have IP_FREEBIND):
//
//	rep, err := attack.ConnFlood(ctx, attack.ConnFloodConfig{
//		Target:  sbcTCP, Sources: netip.MustParsePrefix("2001:db8:77::/48"),
//		Count:   5000, Rate: 2000, Hold: 5 * time.Second, NetNS: "sbcns",
//		Payload: []byte("OPTIONS sip:x SIP/2.0\r\n"), Drip: time.Second,
//	})
//	// rep.Opened, rep.ClosedByPeer (the target closed it first), rep.Held
//
// Sink counts datagrams by source address (and keeps the first Keep
// payloads), in the current namespace or in NetNS:
//
//	sink, _ := attack.NewSink(attack.SinkConfig{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Keep: 10})
//	defer sink.Close()
//	// … run a generator against sink.Addr() …
//	_ = sink.Wait(ctx, rep.Sent) // condition wait, no sleeping
//	n := sink.DistinctSources()
//
// Sink and SpoofedFlood open their sockets inside the network namespace
// their NetNS field names (internal/netns.Do).
//
// Benchmarks of the emission rates are in BENCHMARKS.md (bench/attack).
package attack
