package sbc

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// Issue 12, finding 3: traffic that bypassed classification. Messages
// sipgo's transaction layer handled before the pipeline were answered
// (a stateless 400) or only logged, never counted against their source.

// keyless is a message sipgo cannot make a transaction of: which is
// "cseq" (no CSeq), "via" (no Via), "tag" (an RFC 2543 request: no branch
// cookie and no From tag), or "res" (a response without CSeq).
func keyless(which, from, to string, n int) []byte {
	via := fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-kl%s%d;rport\r\n", from, which, n)
	fromTag := fmt.Sprintf("From: <sip:kl@%s>;tag=kl%d\r\n", from, n)
	cseq := "CSeq: 1 OPTIONS\r\n"
	start := "OPTIONS sip:100@" + to + " SIP/2.0\r\n"
	switch which {
	case "cseq":
		cseq = ""
	case "via":
		via = ""
	case "tag":
		via = fmt.Sprintf("Via: SIP/2.0/UDP %s\r\n", from)
		fromTag = fmt.Sprintf("From: <sip:kl@%s>\r\n", from)
	case "res":
		start, cseq = "SIP/2.0 200 OK\r\n", ""
	}
	return []byte(start + via + fromTag + fmt.Sprintf("To: <sip:100@%s>\r\nCall-ID: keyless-%s-%d\r\n", to, which, n) +
		cseq + "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
}

// Requests without CSeq or Via, RFC 2543 requests without a From tag and
// responses without CSeq used to get sipgo's stateless 400 (or an INFO
// line) whoever sent them: an unknown source learnt that a SIP stack
// listens, and nothing was counted or charged. Now they are dropped
// before the parser, counted under stage validate and charged like any
// malformed datagram: a stranger sending them ends up blocked. The trunk
// gets no answer to its own such messages either, and its calls work.
func TestKeylessMessagesDroppedCountedCharged(t *testing.T) {
	// reject mode: the stranger reaches the pipeline, so it is the raw
	// checks that stop these (drop mode stops strangers even earlier).
	e := newEnv(t, envOpts{
		autoBlock: &testpolicy.AutoBlock{Threshold: 6},
		headers:   "[headers]\nunknown_source_action = \"reject\"",
	})
	stranger := e.newCaller(strangerIP + ":0")
	kinds := []string{"cseq", "via", "tag", "res"}
	for i := 0; i < 2; i++ {
		for _, k := range kinds {
			for _, c := range []*sipua.Caller{e.caller, stranger} {
				if err := c.Send(e.ctx, keyless(k, c.Addr(), e.ext, i), e.ext); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Every one of the 16 is accounted for: dropped by the raw checks,
	// or (the stranger's last ones) as blocked.
	sent := float64(2 * len(kinds) * 2)
	e.eventually("every message counted", func() bool {
		return e.dropped("validate", "missing_header_cseq")+e.dropped("validate", "missing_header_via")+
			e.dropped("validate", "missing_from_tag")+e.dropped("filter", "blocked") == sent
	})
	for _, why := range []string{"missing_header_cseq", "missing_header_via", "missing_from_tag"} {
		if e.dropped("validate", why) < 2 {
			t.Errorf("%s: %v", why, e.dropped("validate", why))
		}
	}
	e.eventually("stranger blocked", func() bool { ent, ok := e.blocked(strangerIP); return ok && ent.Reason == "malformed" })
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	for _, c := range []*sipua.Caller{e.caller, stranger} {
		for _, m := range c.Received() {
			if strings.Contains(string(m.Raw), "keyless-") {
				t.Errorf("%s got an answer: %s", c.Addr(), m.StartLine)
			}
		}
	}
}

// strayOK is a 200 OK for an OPTIONS the SBC never sent.
func strayOK(from, to string, n int) []byte {
	return []byte(fmt.Sprintf("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP %[2]s;branch=z9hG4bK-stray%[3]d\r\n"+
		"From: <sip:sbc@%[2]s>;tag=s%[3]d\r\nTo: <sip:x@%[1]s>;tag=t%[3]d\r\nCall-ID: stray-%[3]d\r\n"+
		"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", from, to, n))
}

// Responses that match no transaction went to sipgo's default handler:
// one INFO line each, nothing counted, nothing charged. Now they are
// classified: from the trunk (a late retransmission) counted as
// dialog/stray_response and not charged; from a stranger counted as an
// unknown source and charged, until it is blocked.
func TestStrayResponsesClassifiedAndCounted(t *testing.T) {
	var buf syncBuffer
	lg := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e := newEnv(t, envOpts{
		log:       lg,
		autoBlock: &testpolicy.AutoBlock{Threshold: 5},
		headers:   "[headers]\nunknown_source_action = \"reject\"",
	})
	stranger := e.newCaller(strangerIP + ":0")
	const n = 100
	for i := 0; i < n; i++ {
		if err := e.caller.Send(e.ctx, strayOK(e.caller.Addr(), e.ext, i), e.ext); err != nil {
			t.Fatal(err)
		}
		if i < 20 {
			if err := stranger.Send(e.ctx, strayOK(stranger.Addr(), e.ext, 1000+i), e.ext); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.eventually("the trunk's stray responses counted", func() bool { return e.dropped("dialog", "stray_response") == n })
	e.eventually("the stranger's counted and charged until blocked", func() bool {
		_, blocked := e.blocked(strangerIP)
		return blocked && e.dropped("classify", "unknown_source")+e.dropped("filter", "blocked") == 20
	})
	if _, blocked := e.blocked(callerIP); blocked {
		t.Fatal("the trunk was blocked for stray responses")
	}
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	if strings.Contains(buf.String(), "Unhandled sip response") {
		t.Error("sipgo's per-response line is still written")
	}
	if !strings.Contains(buf.String(), `"reason":"stray_response"`) {
		t.Error("no drop line for the stray responses")
	}
}

// udpPeers is the number of entries of sipgo's UDP connection pool of a
// realm (its listeners, and one per source address:port it read from).
func (e *env) udpPeers(realm string) int {
	return e.sbc.realms[realm].ua.TransportLayer().Pool("udp").Size()
}

// The gate (drop mode, the default): datagrams and connections of
// sources that are no trunk and no backend die before the parser, counted
// and charged, and none of them adds to sipgo's per-source state. 300
// spoofed loopback sources leave the UDP pool as it was (before, each
// added an entry until the listener closed); the trunk's calls work.
func TestGateDropsUnknownSourcesBeforeParser(t *testing.T) {
	e := newEnv(t, envOpts{limits: &testpolicy.Limits{SourceCPS: new(1000)}, autoBlock: &testpolicy.AutoBlock{Threshold: 1000}})
	call, res := e.dial(sipua.DialOptions{}) // the trunk's own entry
	if res.StatusCode != 200 {
		t.Fatalf("trunk call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	before := e.udpPeers("external")
	rep, err := attack.SpoofedFlood(e.ctx, attack.SpoofedFloodConfig{
		Target: e.extAddr(), Sources: netip.MustParsePrefix("127.66.0.0/16"), MaxSources: 300,
		Mode: attack.SpoofLoopback, Count: 900, Rate: 3000, Duration: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("every datagram dropped at the gate", func() bool { return e.dropped("filter", "unknown_source") == float64(rep.Sent) })
	if after := e.udpPeers("external"); after != before {
		t.Errorf("UDP pool %d entries before the flood of %d sources, %d after", before, rep.Sources, after)
	}
	if e.dropped("classify", "unknown_source")+e.dropped("parse", "malformed") != 0 {
		t.Error("unknown sources reached the parser")
	}
	// TCP: closed at accept, before a byte is read.
	tcpAddr, _ := e.sbc.ListenAddr("external", "tcp")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strangerIP)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", tcpAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(rawOptions(c.LocalAddr().String(), tcpAddr.String(), "x", 1))
	if n, err := c.Read(make([]byte, 512)); err == nil {
		t.Fatalf("unknown TCP source got %d bytes", n)
	}
	e.eventually("accept drop counted", func() bool { return e.dropped("accept", "unknown_source") == 1 })
	// The trunk, over UDP and TCP.
	call, res = e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call after the flood: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	e.trunkOptionsTCP(tcpAddr, "afterwards")
}

// sipgo remembered every UDP source address:port the read filter let
// through until the listener closed: one pool entry (and one entry of a
// map inside its read loop) per source. Where the gate lets sources
// through (here: unknown sources answered 403, reject mode), a flood
// from 2,000 source ports used to leave 2,000 entries. Now the realm
// renews its read loops past limits.udp_peers and drops new addresses
// past 4 × that: the table stays bounded during the flood, falls back
// under the limit after it, and the trunk's calls go on.
func TestUDPPeerEntriesBounded(t *testing.T) {
	const limit = 64
	e := newEnv(t, envOpts{headers: rejectUnknown,
		limits:    &testpolicy.Limits{UDPPeers: limit, SourceCPS: new(1000)},
		autoBlock: &testpolicy.AutoBlock{Threshold: 1000}})
	stop := make(chan struct{})
	var peak int
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak = max(peak, e.udpPeers("external"))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	ok, failed, done := e.trunkCallsDuring(stop)
	rep, err := attack.SpoofedFlood(e.ctx, attack.SpoofedFloodConfig{
		Target: e.extAddr(), Sources: netip.MustParsePrefix("127.66.0.0/16"), MaxSources: 2000,
		Mode: attack.SpoofLoopback, Count: 6000, Rate: 3000, Duration: 5 * time.Second,
	})
	close(stop)
	<-done
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("the table back under its limit", func() bool { return e.udpPeers("external") <= limit })
	resets := testutil.ToFloat64(e.sbc.metrics.UDPResets.WithLabelValues("external"))
	t.Logf("%d datagrams from %d sources: peak %d entries (limit %d), %v resets, %v dropped as udp_peers_full; trunk calls ok=%d",
		rep.Sent, rep.Sources, peak, limit, resets, e.dropped("filter", "udp_peers_full"), ok.Load())
	if bound := udpPeersHard*limit + 2*udpCheckEvery; peak > bound {
		t.Errorf("peak of %d entries, bound %d", peak, bound)
	}
	if resets == 0 {
		t.Error("no reset")
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("trunk calls during the flood: ok=%d failed=%d", ok.Load(), failed.Load())
	}
	// The listener still works for the trunk and for new peers.
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call after the flood: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}

// A request over TCP whose connection closes before sipgo made its
// transaction made sipgo connect to the address its Via names, to answer
// there (RFC 3261 18.2.2): any address and port the sender liked, the
// connection (and a pool entry) kept until it idled out. The SBC connects
// to trunk sources and pool targets only: the connection is refused
// before it is made, and counted.
func TestNoConnectionToAnAddressAViaNames(t *testing.T) {
	e := newEnv(t, envOpts{headers: rejectUnknown})
	victim, err := net.Listen("tcp", "127.0.0.99:0")
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := victim.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	tcpAddr, _ := e.sbc.ListenAddr("external", "tcp")
	// The connection must be gone after sipgo read the request and before
	// the SBC answers it: a race each attempt may lose (the reset first:
	// nothing read; the answer first: written to the dying connection,
	// the more often the faster the SBC answers). So attempts until one
	// is counted, bounded, each from a source of its own (each stranger's
	// 403 counts towards autoblock, which would end the attempts).
	counted := func() bool { return e.dropped("bridge", "dial_refused") >= 1 }
	for i := 0; i < 200 && !counted(); i++ {
		src := fmt.Sprintf("127.0.%d.%d", 9+i/250, 1+i%250)
		c := dialFrom(t, src, tcpAddr.String())
		msg := fmt.Sprintf("OPTIONS sip:100@%[2]s SIP/2.0\r\nVia: SIP/2.0/TCP %[1]s;branch=z9hG4bK-via%[3]d\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:a@%[1]s>;tag=v%[3]d\r\nTo: <sip:100@%[2]s>\r\nCall-ID: via-%[3]d\r\n"+
			"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", victim.Addr(), tcpAddr, i)
		c.Write([]byte(msg))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		// This attempt's outcome, if it has one, before the next.
		for k := 0; k < 20 && !counted(); k++ {
			time.Sleep(time.Millisecond)
		}
	}
	e.eventually("refused connections counted", counted)
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("the SBC connected to the address a stranger's Via named")
	default:
	}
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("trunk call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}
