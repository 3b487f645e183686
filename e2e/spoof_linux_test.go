//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// The spoofer's namespace: a third one, linked to ns "sbc" by a veth of
// its own. It holds none of the peers' addresses: what it sends "from" the
// trunk is forged (hand-made IPv4 headers on a raw socket), and what the
// SBC answers to the trunk's address goes to the real trunk in ns "peer".
const (
	spoofIP      = "10.78.0.2" // the spoofer's own address
	sbcSpoofIP   = "10.78.0.1" // ns "sbc"'s end of the spoofer's link
	sbcSpoofIf   = "sbc1"      // that end's name in ns "sbc"
	spooferIf    = "spoof0"    // the spoofer's end
	trunkFailure = "sbc_trunk_failures_total"
)

// addSpoofer makes the spoofer's namespace and link and returns the
// namespace. Datagrams forged from the peers' addresses reach ns "sbc" on
// sbc1 although those addresses are routed through sbc0: reverse-path
// filtering is turned off there, as on an SBC whose uplink carries both
// the carriers and everybody else.
func (tn *testNet) addSpoofer(t testing.TB) string {
	t.Helper()
	requireTools(t, "sysctl")
	ns := netnstest.New(t, "sbc-e2e")
	netnstest.Veth(t, netns.Veth{
		A:                netns.End{NS: ns, Name: spooferIf, Addrs: []netip.Prefix{netip.MustParsePrefix(spoofIP + "/24")}},
		B:                netns.End{NS: tn.sbcNS, Name: sbcSpoofIf, Addrs: []netip.Prefix{netip.MustParsePrefix(sbcSpoofIP + "/24")}},
		StaticNeighbours: true,
		Probes:           []netns.Probe{{Src: netip.MustParseAddr(spoofIP), Dst: netip.MustParseAddr(sbcSpoofIP)}},
		ProbeTimeout:     waitTimeout,
	})
	if out, err := netns.IP("-n", ns, "route", "add", sbcIP+"/32", "via", sbcSpoofIP, "dev", spooferIf); err != nil {
		t.Fatalf("route to the SBC in the spoofer's namespace: %v\n%s", err, out)
	}
	if out, err := nsOutput(t, tn.sbcNS, "sysctl", "-w", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf."+sbcSpoofIf+".rp_filter=0"); err != nil {
		t.Fatalf("rp_filter off in ns sbc: %v\n%s", err, out)
	}
	return ns
}

// forge sends each payload once to the SBC's SIP port from the spoofer's
// namespace, as a UDP datagram whose IPv4 source is src, port 5060
// (attack.SpoofedFlood, raw socket).
func forge(t testing.TB, ns, src string, payloads ...[]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, p := range payloads {
		rep, err := attack.SpoofedFlood(ctx, attack.SpoofedFloodConfig{
			Target:  netip.AddrPortFrom(netip.MustParseAddr(sbcIP), sipPort),
			Sources: netip.PrefixFrom(netip.MustParseAddr(src), 32), Mode: attack.SpoofRaw,
			Payload: p, Count: 1, NetNS: ns,
		})
		if err != nil {
			t.Fatalf("forge from %s: %v", src, err)
		}
		if rep.Sent != 1 || rep.Errors != 0 {
			t.Fatalf("forge from %s: %s", src, rep.Report)
		}
	}
}

// Junk of finding 1, by kind, as sent "from" src (a Via naming src:5060,
// as a forger writes it).
const (
	junkDatagrams = 15 // five-byte datagrams: the read filter's raw checks
	junkMalformed = 5  // SIP-looking requests the parser or the raw checks refuse
	junkMaxFwd    = 5  // OPTIONS with Max-Forwards: 0 (483: fails validation)
	junkScanner   = 5  // OPTIONS with a scanner's User-Agent
	junkRegister  = 3  // REGISTERs from a trunk that may not register
)

var junkSeq int

func junk(src string) [][]byte {
	var out [][]byte
	for range junkDatagrams {
		out = append(out, []byte("hello"))
	}
	req := func(method, ua, extra string) []byte {
		junkSeq++
		return fmt.Appendf(nil, "%[1]s sip:100@%[2]s:%[3]d SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[4]s:5060;branch=z9hG4bK-forged%[5]d\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:forged@%[4]s>;tag=f%[5]d\r\n"+
			"To: <sip:100@%[2]s>\r\n"+
			"Call-ID: forged-%[5]d@%[4]s\r\n"+
			"CSeq: 1 %[1]s\r\n"+
			"User-Agent: %[6]s\r\n"+
			"Contact: <sip:forged@%[4]s:5060>\r\n"+
			"%[7]s"+
			"Content-Length: 0\r\n\r\n", method, sbcIP, sipPort, src, junkSeq, ua, extra)
	}
	for i := range junkMalformed {
		junkSeq++
		// A request line, a Via and then no header the parser can read.
		out = append(out, fmt.Appendf(nil, "OPTIONS sip:100@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK-bad%d\r\nCSeq one\r\n%s\r\n\r\n",
			sbcIP, src, junkSeq, []string{"\x00\x01", "::::", "From", "To <", "Call-ID"}[i]))
	}
	for range junkMaxFwd {
		out = append(out, bytes.Replace(req("OPTIONS", "Phone/1.0", ""), []byte("Max-Forwards: 70"), []byte("Max-Forwards: 0"), 1))
	}
	for range junkScanner {
		out = append(out, req("OPTIONS", "friendly-scanner", ""))
	}
	for range junkRegister {
		out = append(out, req("REGISTER", "Phone/1.0", "Expires: 3600\r\n"))
	}
	return out
}

// addressTest is the answer of GET /v1/blocklist/test.
type addressTest struct {
	Blocked    bool   `json:"blocked"`
	Trunk      string `json:"trunk"`
	Chargeable bool   `json:"chargeable"`
}

func (tn *testNet) addressTest(t testing.TB, a string) addressTest {
	t.Helper()
	code, b := tn.do(t, http.MethodGet, "/v1/blocklist/test?addr="+a, nil)
	var at addressTest
	if code != http.StatusOK || json.Unmarshal(b, &at) != nil {
		t.Fatalf("GET /v1/blocklist/test?addr=%s: %d %s", a, code, b)
	}
	return at
}

// trunkUncharged checks, after what, that nothing blocked or charged the
// trunk's address: no block at all, an empty blocklist, no auto-block
// the never-block list had to refuse (the failure tracker never decided
// to block it), and the admin API's view of the address.
func trunkUncharged(t *testing.T, s *sbcProc, tn *testNet, after metrics, what string) {
	t.Helper()
	if n := after.sum("sbc_blocks_total"); n != 0 {
		t.Errorf("sbc_blocks_total = %v after %s", n, what)
	}
	if bl := tn.blocklist(t); len(bl) != 0 {
		t.Errorf("blocklist after %s: %+v", what, bl)
	}
	if l, ok := s.logLine("auto-block refused", trunkIP); ok {
		t.Errorf("the trunk's address was charged up to a block after %s: %s", what, l)
	}
	if at := tn.addressTest(t, trunkIP); at.Blocked || at.Chargeable || at.Trunk != "carrier" {
		t.Errorf("the trunk's address after %s: %+v", what, at)
	}
}

// TestForgedTrunkJunk is finding 1 with real forged packets: from a
// namespace of its own that does not hold the trunk's address, a raw
// socket sends datagrams whose IPv4 source is the trunk's: five-byte junk,
// malformed SIP and invalid requests (Max-Forwards 0, a scanner's
// User-Agent, REGISTERs the trunk may not send), 33 failures where the
// auto-block threshold is 10. They are counted for the trunk
// (sbc_trunk_failures_total, exact counts by failure) and charged to
// nobody: no block, nothing in XDP's deny map, the trunk stays enabled and
// its address not chargeable; calls from the genuine trunk then complete.
// The same packets forged from another address (the attacker's, no
// trunk's) get that address blocked (auto, reason malformed) and denied in
// XDP, which then drops what else comes from it. Trunk calls complete
// after that too. With the trust model undone (a trunk's failures charged
// to its address, trunks off the never-block list) the test fails: the
// trunk is blocked at the 11th datagram, denied in XDP, and its calls
// fail.
//
// unknown_source_action is "reject" so that a stranger's datagrams are
// classified like the trunk's (in drop mode the gate drops them first
// and charges them unknown_source).
func TestForgedTrunkJunk(t *testing.T) {
	tn := newTestNet(t)
	spoofNS := tn.addSpoofer(t)
	pinDir := filepath.Join(mountBPFFS(t), "sbc")
	cfg := writePolicy(t, policyOpts{
		xdp: true, xdpIfaces: []string{tn.sbcIf, sbcSpoofIf}, xdpMode: "generic", pinDir: pinDir,
		autoblock: true, threshold: 10, unknownSourceAction: "reject",
	})
	startUAS(t, tn)
	s := startSBC(t, tn, cfg)
	trunkPrefix := netip.MustParsePrefix(trunkIP + "/32")

	// (a) Forged "from" the trunk: counted for it, charged to nobody.
	before := tn.metrics(t)
	forge(t, spoofNS, trunkIP, junk(trunkIP)...)
	want := map[string]float64{
		"malformed":            junkDatagrams + junkMalformed + junkMaxFwd,
		"scanner_ua":           junkScanner,
		"register_not_allowed": junkRegister,
	}
	waitCond(t, "the forged junk counted for trunk carrier", func() (bool, string) {
		if e, ok := findEntry(tn.blocklist(t), trunkPrefix); ok {
			return true, fmt.Sprintf("the trunk blocked: %+v", e) // what follows says what went wrong
		}
		m := tn.metrics(t)
		ok, got := true, map[string]float64{}
		for f, n := range want {
			got[f] = m.sum(trunkFailure, "trunk", "carrier", "failure", f) - before.sum(trunkFailure, "trunk", "carrier", "failure", f)
			ok = ok && got[f] >= n
		}
		return ok, fmt.Sprintf("%s rose by %v, want %v", trunkFailure, got, want)
	})
	after := tn.metrics(t)
	for f, n := range want {
		if d := after.sum(trunkFailure, "trunk", "carrier", "failure", f) - before.sum(trunkFailure, "trunk", "carrier", "failure", f); d != n {
			t.Errorf("%s{failure=%q} rose by %v, want exactly %v", trunkFailure, f, d, n)
		}
	}
	trunkUncharged(t, s, tn, after, "junk forged from the trunk")
	m := openDenyV4(t, pinDir)
	defer m.Close()
	if d, err := denied(m, trunkPrefix); err != nil || d {
		t.Errorf("XDP deny map holds the trunk's address: %v %v", d, err)
	}
	var trunks []struct {
		Name    string `json:"name"`
		Enabled bool   `json:"enabled"`
	}
	if code, b := tn.do(t, http.MethodGet, "/v1/trunks", nil); code != http.StatusOK || json.Unmarshal(b, &trunks) != nil ||
		len(trunks) != 1 || trunks[0].Name != "carrier" || !trunks[0].Enabled {
		t.Errorf("GET /v1/trunks: %d %s", code, b)
	}

	// (b) The genuine trunk's calls complete.
	tn.callsComplete(t, 3)
	if n := tn.metrics(t).sum("sbc_trunk_calls_total", "trunk", "carrier", "result", "answered"); n < 3 {
		t.Errorf("sbc_trunk_calls_total{trunk=carrier,result=answered} = %v, want at least 3", n)
	}

	// (c) The same junk forged from an address no trunk claims blocks it.
	forge(t, spoofNS, attackIP, junk(attackIP)...)
	waitCond(t, "the attacker's address blocked", func() (bool, string) {
		e, ok := findEntry(tn.blocklist(t), attackPrefix)
		return ok && e.Origin == "auto" && e.Reason == "malformed", fmt.Sprintf("entry %+v, found %v", e, ok)
	})
	waitDenied(t, pinDir, attackPrefix, true)
	if at := tn.addressTest(t, attackIP); !at.Blocked || !at.Chargeable {
		t.Errorf("the attacker's address: %+v", at)
	}
	before = tn.metrics(t)
	if n := before.sum("sbc_blocks_total", "origin", "auto", "reason", "malformed"); n != 1 {
		t.Errorf("sbc_blocks_total{origin=auto,reason=malformed} = %v, want 1", n)
	}
	// Blocked in the kernel: XDP on the spoofer's link drops the rest.
	const more = 20
	var rest [][]byte
	for range more {
		rest = append(rest, []byte("hello"))
	}
	forge(t, spoofNS, attackIP, rest...)
	tn.waitMetric(t, "XDP drops the blocked address's datagrams", xdpDeny, func(v float64) bool { return v >= before.get(xdpDeny)+more })
	if d, err := denied(m, trunkPrefix); err != nil || d {
		t.Errorf("XDP deny map holds the trunk's address: %v %v", d, err)
	}
	if e, ok := findEntry(tn.blocklist(t), trunkPrefix); ok {
		t.Errorf("the trunk blocked: %+v", e)
	}
	tn.callsComplete(t, 2)
	t.Logf("forged from trunk %s: %v malformed, %v scanner_ua, %v register_not_allowed counted for the trunk, no block, then 3 trunk calls answered; "+
		"the same from %s: blocked (auto, malformed), %d more dropped by XDP, 2 trunk calls answered",
		trunkIP, want["malformed"], want["scanner_ua"], want["register_not_allowed"], attackIP, more)
}
