package sbc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/ratelimit"
)

// The trust model (trust.go), attack by attack: each test tries what
// issue 12 found a spoofer or a carrier's callers could do, checks that it
// no longer works, and that the trunk or backend keeps working.

// udpFrom is a UDP socket on ip (any free port): on loopback, a datagram
// from it is what a datagram forged with that source address looks like
// when it arrives.
func udpFrom(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sendTo(t *testing.T, c *net.UDPConn, to string, msgs ...[]byte) {
	t.Helper()
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to))
	for _, m := range msgs {
		if _, err := c.WriteToUDP(m, dst); err != nil {
			t.Fatal(err)
		}
	}
}

// rawRequest is an out-of-dialog request of method from the address of c.
func rawRequest(method, from, to, ruriHost, ua string, n int, extra string) []byte {
	return fmt.Appendf(nil, "%[6]s sip:%[5]d@%[4]s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-t%[5]d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:%[5]d@%[4]s>;tag=t%[5]d\r\n"+
		"To: <sip:%[5]d@%[4]s>\r\n"+
		"Call-ID: trust-%[5]d@%[1]s\r\n"+
		"CSeq: 1 %[6]s\r\n"+
		"User-Agent: %[3]s\r\n"+
		"Contact: <sip:%[5]d@%[1]s>\r\n"+
		"%[7]s"+
		"Content-Length: 0\r\n\r\n", from, to, ua, ruriHost, n, method, extra)
}

func (e *env) trunkFailures(trunk string, f failure) float64 {
	return testutil.ToFloat64(e.sbc.metrics.TrunkFailures.WithLabelValues(trunk, string(f)))
}

func (e *env) trunkCalls(trunk, result string) float64 {
	return testutil.ToFloat64(e.sbc.metrics.TrunkCalls.WithLabelValues(trunk, result))
}

// notCharged checks that the tracker holds no failure of ip.
func (e *env) notCharged(ip string) {
	e.t.Helper()
	key := acl.SourceKey(netip.MustParseAddr(ip))
	if st, ok := e.sbc.def.tracker.State(key, time.Now()); ok && (st.Failures > 0 || st.Level > 0) {
		e.t.Errorf("%s charged: %+v", ip, st)
	}
	if tr := e.sbc.def.tracker.Trust(key, time.Now()); tr == ratelimit.TrustDemoted {
		e.t.Errorf("%s demoted", ip)
	}
	if _, blocked := e.blocked(ip); blocked {
		e.t.Errorf("%s blocked", ip)
	}
}

// Finding 1: junk "from" a trunk's address (five-byte datagrams,
// malformed requests, scanner User-Agents, REGISTERs it may not send)
// costs the trunk nothing: it is counted for the trunk, the trunk is not
// demoted or blocked, its calls and REGISTERs go on (they got 503
// Retry-After: 3600 once demoted). Any other source is blocked for the
// same junk.
func TestTrustJunkFromATrunkAddressCostsItNothing(t *testing.T) {
	e := newEnv(t, envOpts{
		autoBlock: &testpolicy.AutoBlock{Threshold: 2}, // the 3rd failure blocks anyone else; the 1st demoted a trunk
		edit: func(p *testpolicy.Policy) {
			p.Trunk("carrier").AllowRegister = true
			p.Trunk("carrier").RegisterDomains = []string{"pbx.example.com"}
		},
	})
	spoof := udpFrom(t, callerIP)
	from := spoof.LocalAddr().String()
	for range 11 { // five-byte datagrams: dropped by the read filter's raw checks
		sendTo(t, spoof, e.ext, []byte("hello"))
	}
	for i := range 6 { // parsed requests that fail validation (483)
		sendTo(t, spoof, e.ext, bytes.Replace(rawOptions(from, e.ext, "Phone", 600+i), []byte("Max-Forwards: 70"), []byte("Max-Forwards: 0"), 1))
	}
	for i := range 3 {
		sendTo(t, spoof, e.ext, rawOptions(from, e.ext, "friendly-scanner", 700+i))
		sendTo(t, spoof, e.ext, rawRequest("REGISTER", from, e.ext, "other.example.com", "Phone", 710+i, ""))
	}
	e.eventually("the junk counted for the trunk", func() bool {
		return e.trunkFailures("carrier", failMalformed) >= 17 && e.trunkFailures("carrier", failScannerUA) >= 3 &&
			e.trunkFailures("carrier", failRegisterDenied) >= 3
	})
	e.notCharged(callerIP)

	// The same junk from a stranger blocks it at once.
	stranger := udpFrom(t, strangerIP)
	for range 3 {
		sendTo(t, stranger, e.ext, []byte("hello"))
	}
	e.eventually("a stranger blocked for the same junk", func() bool { _, ok := e.blocked(strangerIP); return ok })

	// The carrier's calls and registrations go on.
	for i := range 6 {
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 200 {
			t.Fatalf("carrier call %d after the junk: %d", i, res.StatusCode)
		}
		call.Bye(e.ctx)
	}
	c := e.caller
	if err := c.Send(e.ctx, rawRequest("REGISTER", c.Addr(), e.ext, "pbx.example.com", "Phone", 720, ""), e.ext); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.CSeqMethod() == "REGISTER" && m.Status >= 200 })
	if err != nil {
		t.Fatal(err)
	}
	if m.Status == 503 || m.Header("Retry-After") != "" {
		t.Fatalf("the carrier's REGISTER after the junk: %s", m.StartLine)
	}
	if n := e.dropped("admit", "register_rate"); n != 0 {
		t.Fatalf("%v REGISTERs of the carrier over its rate", n)
	}
}

// Finding 1: trunks and pool targets have a packet budget of their own
// (trunk_pps) on their own realm only; on another realm their addresses
// are ordinary sources.
func TestTrustPacketBudgetPerRealm(t *testing.T) {
	// reject mode: on another realm the addresses reach the budget (in
	// drop mode the gate drops them first, as unknown sources there).
	e := newEnv(t, envOpts{limits: &testpolicy.Limits{SourcePPS: new(1), SourcePPSBurst: 1, TrunkPPS: new(1), TrunkPPSBurst: 3},
		headers: rejectUnknown})
	internal, _ := e.sbc.ListenAddr("internal", "udp")
	flood := func(c *net.UDPConn, to string) {
		for i := range 30 {
			sendTo(t, c, to, rawOptions(c.LocalAddr().String(), to, "Probe", 800+i))
		}
	}
	trunk, backend := udpFrom(t, callerIP), udpFrom(t, backendIP)

	flood(trunk, e.ext) // the trunk on its realm: trunk_pps, not exempt
	e.eventually("trunk over trunk_pps on its realm", func() bool { return e.dropped("filter", "trunk_pps") > 0 })
	if n := e.dropped("filter", "source_pps"); n != 0 {
		t.Fatalf("the trunk on its realm counted against source_pps (%v)", n)
	}
	before := e.dropped("filter", "trunk_pps")
	flood(trunk, internal.String()) // the trunk's address on the internal realm: an ordinary source
	e.eventually("trunk address over source_pps on another realm", func() bool { return e.dropped("filter", "source_pps") > 0 })
	sp := e.dropped("filter", "source_pps")
	flood(backend, e.ext) // the pool target on the carriers' realm: an ordinary source
	e.eventually("pool target over source_pps on another realm", func() bool { return e.dropped("filter", "source_pps") > sp })
	flood(backend, internal.String()) // the pool target on its pool's realm: trunk_pps
	e.eventually("pool target over trunk_pps on its realm", func() bool { return e.dropped("filter", "trunk_pps") > before })
	// None of it was charged to the trunk or the target.
	e.notCharged(callerIP)
	e.notCharged(backendIP)
}

// Finding 1: forged UDP INVITEs in the name of a trunk that sends over
// TCP only (transports) are not the trunk's: dropped, charged to nobody,
// and they take none of its max_calls; its TCP calls go on.
func TestTrustTransportsStopForgedInvites(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		tr := p.Trunk("carrier")
		tr.Transports = []string{"tcp"}
		tr.MaxCalls = 1
	}})
	spoof := udpFrom(t, callerIP)
	for i := range 5 {
		sendTo(t, spoof, e.ext, rawRequest("INVITE", spoof.LocalAddr().String(), e.ext, sbcExtIP, "CarrierSwitch", 900+i, ""))
	}
	// Dropped before the parser, by the gate (gate.go).
	e.eventually("forged INVITEs dropped", func() bool { return e.dropped("filter", "trunk_transport") >= 5 })
	if n := e.sbc.def.calls.InUse("carrier"); n != 0 {
		t.Fatalf("forged INVITEs hold %d of the trunk's calls", n)
	}
	if n := len(e.backends[0].Calls()); n != 0 {
		t.Fatalf("the backend saw %d forged calls", n)
	}
	e.notCharged(callerIP)

	tcpAddr, _ := e.sbc.ListenAddr("external", "tcp")
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Transport: "tcp", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call, err := c.Dial(e.ctx, tcpAddr.String(), sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the trunk's TCP call: %v %v", res, err)
	}
	if n := e.sbc.def.calls.InUse("carrier"); n != 1 {
		t.Fatalf("calls in use %d, want the TCP call", n)
	}
	call.Bye(e.ctx)
}

// Finding 2: a carrier is not its callers. Wrong numbers (404), refused
// calls (403), failed authentication in its calls and a caller's scanner
// User-Agent are counted for the trunk, never charged: no demotion, no
// block, every later call goes through. The trunk health line and
// metrics give the operator the ratios.
func TestTrustCarrierNotPunishedForItsCallers(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, envOpts{
		log:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		autoBlock: &testpolicy.AutoBlock{Threshold: 2},
		backends: []sipua.BackendOptions{{Answer: func(req *sip.Request) sipua.Plan {
			switch req.Recipient.User {
			case "404":
				return sipua.Plan{Final: 404}
			case "403":
				return sipua.Plan{Final: 403}
			case "401":
				return sipua.Plan{Final: 401, Headers: []sip.Header{sip.NewHeader("WWW-Authenticate", `Digest realm="pbx", nonce="n1"`)}}
			}
			return sipua.Plan{}
		}}},
	})
	for _, tc := range []struct {
		user string
		n    int
		code int
		hdrs []sip.Header
	}{
		{"404", 5, 404, nil},
		{"403", 5, 403, nil},
		{"401", 2, 401, []sip.Header{sip.NewHeader("Authorization", `Digest username="x", realm="pbx", nonce="n1", uri="sip:401@pbx", response="00"`)}},
	} {
		for i := range tc.n {
			_, res := e.dial(sipua.DialOptions{User: tc.user, Headers: tc.hdrs})
			if res.StatusCode != tc.code {
				t.Fatalf("call %d to %s: %d", i, tc.user, res.StatusCode)
			}
		}
	}
	scanner, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Logger: testLogger(), UserAgent: "friendly-scanner"})
	if err != nil {
		t.Fatal(err)
	}
	defer scanner.Close()
	if _, err := scanner.Dial(e.ctx, e.ext, sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the scanner UA counted for the trunk", func() bool { return e.trunkFailures("carrier", failScannerUA) >= 1 })
	for i := range 6 {
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 200 {
			t.Fatalf("call %d after its callers' failures: %d", i, res.StatusCode)
		}
		call.Bye(e.ctx)
	}
	e.eventually("every call ended and counted", func() bool {
		return e.trunkCalls("carrier", resultAnswered) == 6 && e.trunkCalls("carrier", resultNotFound) == 5 &&
			e.trunkCalls("carrier", resultRejected) == 7
	})
	e.notCharged(callerIP)
	for f, want := range map[failure]float64{failBackend404: 5, failBackend403: 5, failAuth: 2} {
		if got := e.trunkFailures("carrier", f); got != want {
			t.Errorf("sbc_trunk_failures_total{carrier,%s} = %v, want %v", f, got, want)
		}
	}
	for r, want := range map[string]float64{resultAnswered: 6, resultNotFound: 5, resultRejected: 7} {
		if got := e.trunkCalls("carrier", r); got != want {
			t.Errorf("sbc_trunk_calls_total{carrier,%s} = %v, want %v", r, got, want)
		}
	}
	e.sbc.logTrunkHealth()
	var line map[string]any
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"msg":"trunk health"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil || line["trunk"] != "carrier" || line["calls"] != 18.0 || line["answered"] != 6.0 || line["answer_ratio"] != 0.333 {
		t.Fatalf("trunk health line: %v\n%s", line, logs.String())
	}
	if nf := line["not_answered"].(map[string]any); nf["not_found"] != 5.0 || nf["rejected"] != 7.0 {
		t.Fatalf("not_answered: %v", nf)
	}
	if fs := line["failures"].(map[string]any); fs["backend_404"] != 5.0 || fs["scanner_ua"] == nil {
		t.Fatalf("failures: %v", fs)
	}
}

// Finding 2: observe mode changes nothing but the log: a source over the
// threshold is reported (would block) but neither blocked nor demoted.
func TestTrustObserveModeDemotesNothing(t *testing.T) {
	e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 2, Observe: true}})
	stranger := udpFrom(t, strangerIP)
	for range 6 {
		sendTo(t, stranger, e.ext, []byte("hello"))
	}
	e.eventually("would-block counted", func() bool {
		// The stranger is an unknown source: the gate drops (and charges)
		// it before its junk is looked at.
		return testutil.ToFloat64(e.sbc.metrics.Blocks.WithLabelValues("observe", "unknown_source")) >= 1
	})
	if _, blocked := e.blocked(strangerIP); blocked {
		t.Fatal("observe mode blocked")
	}
	if tr := e.sbc.def.tracker.Trust(acl.SourceKey(netip.MustParseAddr(strangerIP)), time.Now()); tr == ratelimit.TrustDemoted {
		t.Fatal("observe mode demoted")
	}
}

// adminPost posts a block request to the admin API from local (nil: any
// loopback address) and returns the status and body.
func adminPost(t *testing.T, e *env, local net.IP, req BlockRequest) (int, string) {
	t.Helper()
	cl := http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}).DialContext}}
	body, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPost, "http://"+e.sbc.AdminAddr().String()+"/v1/blocklist", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+testpolicy.AdminKey)
	res, err := cl.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var ae APIError
	if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
		return res.StatusCode, ae.Error
	}
	return res.StatusCode, string(b)
}

// Finding 6: trunks (that may not register), pool targets and admin
// clients are never blocked, by hand unless forced, nor by a neighbour's
// failures; IPv6 aggregation never widens over them.
func TestTrustNeverBlock(t *testing.T) {
	e := newEnv(t, envOpts{admin: true, autoBlock: &testpolicy.AutoBlock{Threshold: 1, AggregateV6: new(2)},
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{Name: "v6carrier", Realm: "external", Sources: []string{"2001:db8:0:1::1/128"}})
		}})

	t.Run("manual block of a trunk's prefix refused unless forced", func(t *testing.T) {
		code, body := adminPost(t, e, nil, BlockRequest{Prefix: "127.0.0.0/24", Reason: "oops"})
		if code != http.StatusConflict || !strings.Contains(body, `trunk "carrier" (127.0.0.1/32)`) ||
			!strings.Contains(body, `pool "pbx" target`) || !strings.Contains(body, "-force") {
			t.Fatalf("%d %s", code, body)
		}
		code, body = adminPost(t, e, nil, BlockRequest{Prefix: backendIP, Reason: "oops"})
		if code != http.StatusConflict || !strings.Contains(body, `pool "pbx" target`) {
			t.Fatalf("pool target: %d %s", code, body)
		}
		code, body = adminPost(t, e, nil, BlockRequest{Prefix: callerIP, Reason: "carrier gone rogue", TTL: "1h", Force: true})
		if code != http.StatusCreated {
			t.Fatalf("forced: %d %s", code, body)
		}
		if ent, ok := e.blocked(callerIP); !ok || !ent.Forced {
			t.Fatalf("forced entry %+v %v", ent, ok)
		}
		e.sbc.def.blocklist.Remove(netip.MustParsePrefix(callerIP + "/32"))
	})

	t.Run("admin clients", func(t *testing.T) {
		admin := net.ParseIP("127.0.0.77")
		if code, _ := adminPost(t, e, admin, BlockRequest{Prefix: "127.0.0.99"}); code != http.StatusCreated {
			t.Fatalf("a block from 127.0.0.77: %d", code)
		}
		code, body := adminPost(t, e, nil, BlockRequest{Prefix: "127.0.0.77"})
		if code != http.StatusConflict || !strings.Contains(body, "an admin listener client") {
			t.Fatalf("blocking an admin client: %d %s", code, body)
		}
		junk := udpFrom(t, "127.0.0.77")
		for range 5 {
			sendTo(t, junk, e.ext, []byte("hello"))
		}
		e.eventually("junk handled", func() bool { return e.dropped("filter", "unknown_source") >= 5 }) // at the gate
		e.notCharged("127.0.0.77")
	})

	t.Run("a neighbour in a trunk's /64", func(t *testing.T) {
		// The tracker keys IPv6 sources by /64: a neighbour's failures
		// decide a block of the trunk's /64, which is refused.
		neighbour := netip.MustParseAddrPort("[2001:db8:0:1::2]:5060")
		for range 3 {
			e.sbc.charge(peer{src: neighbour}, failMalformed)
		}
		if e.sbc.def.blocklist.Blocked(netip.MustParseAddr("2001:db8:0:1::1")) {
			t.Fatal("the trunk blocked for its neighbour")
		}
		other := netip.MustParseAddrPort("[2001:db8:0:9::2]:5060")
		for range 2 {
			e.sbc.charge(peer{src: other}, failMalformed)
		}
		if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix("2001:db8:0:9::/64")); !ok {
			t.Fatal("an unprotected /64 not blocked")
		}
	})

	t.Run("aggregation", func(t *testing.T) {
		fail := func(a string) {
			for range 2 {
				e.sbc.charge(peer{src: netip.AddrPortFrom(netip.MustParseAddr(a), 5060)}, failScannerUA)
			}
		}
		// Two /64s in 2001:db8:7:100::/56 widen to it; two /56s in
		// 2001:db8:7::/48 to the /48.
		fail("2001:db8:7:101::1")
		fail("2001:db8:7:102::1")
		if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix("2001:db8:7:100::/56")); !ok {
			t.Fatalf("not aggregated to the /56: %v", e.sbc.def.blocklist.List())
		}
		if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix("2001:db8:7:101::/64")); ok {
			t.Fatal("the /64 stayed next to its /56")
		}
		fail("2001:db8:7:201::1")
		fail("2001:db8:7:202::1")
		if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix("2001:db8:7::/48")); !ok {
			t.Fatalf("not aggregated to the /48: %v", e.sbc.def.blocklist.List())
		}
		// Around the trunk 2001:db8:0:1::1: /64s stay /64s.
		fail("2001:db8:0:2::1")
		fail("2001:db8:0:3::1")
		if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix("2001:db8::/56")); ok {
			t.Fatal("aggregated over the trunk's address")
		}
		for _, p := range []string{"2001:db8:0:2::/64", "2001:db8:0:3::/64"} {
			if _, ok := e.sbc.def.blocklist.Get(netip.MustParsePrefix(p)); !ok {
				t.Fatalf("%s not blocked", p)
			}
		}
		if e.sbc.def.blocklist.Blocked(netip.MustParseAddr("2001:db8:0:1::1")) {
			t.Fatal("the trunk is blocked")
		}
		if n := testutil.ToFloat64(e.sbc.metrics.Blocks.WithLabelValues("aggregate", "scanner_ua")); n != 3 {
			t.Fatalf("aggregate blocks counted %v, want 3 (two /56s, one /48)", n)
		}
	})

	// The carrier still calls.
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("carrier call: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}

// Learnt peers (admin clients) and a reload's never-block list keep each
// other: a reload keeps the peers, a peer learnt later keeps the reload's
// list; a peer's address cannot be blocked afterwards.
func TestTrustLearntPeersAndReload(t *testing.T) {
	e := newEnv(t, envOpts{admin: true, autoBlock: &testpolicy.AutoBlock{}})
	has := func(p string) bool {
		for _, nb := range e.sbc.def.blocklist.NeverBlock() {
			if nb == netip.MustParsePrefix(p) {
				return true
			}
		}
		return false
	}
	if code, _ := adminPost(t, e, net.ParseIP("127.0.0.77"), BlockRequest{Prefix: "192.0.2.99"}); code != http.StatusCreated {
		t.Fatalf("block from an admin client: %d", code)
	}
	pb := e.pb.Clone()
	pb.AutoBlock = &testpolicy.AutoBlock{NeverBlock: []string{"198.51.100.0/24"}}
	if err := e.sbc.Reload(pb.Parse(t)); err != nil {
		t.Fatal(err)
	}
	if !has("127.0.0.77/32") || !has("198.51.100.0/24") {
		t.Fatalf("after the reload: %v", e.sbc.def.blocklist.NeverBlock())
	}
	if code, _ := adminPost(t, e, net.ParseIP("127.0.0.78"), BlockRequest{Prefix: "192.0.2.98"}); code != http.StatusCreated {
		t.Fatalf("block from a second admin client: %d", code)
	}
	if !has("127.0.0.78/32") || !has("198.51.100.0/24") || !has("127.0.0.77/32") {
		t.Fatalf("after a peer learnt: %v", e.sbc.def.blocklist.NeverBlock())
	}
	// A client that authenticated cannot be blocked afterwards. (A
	// source blocked before cannot reach the admin listener at all: its
	// connections are closed at accept, TestAdminAuthFailuresBlockSource.)
	if err := e.sbc.def.blocklist.Add(acl.Entry{Prefix: netip.MustParsePrefix("127.0.0.78/32"), Origin: acl.OriginAuto, Reason: "malformed"}); !errors.Is(err, acl.ErrNeverBlock) {
		t.Fatalf("blocking an admin client: %v, want ErrNeverBlock", err)
	}
}

// A carrier known by its TLS certificate alone (no sources): once a
// handshake proved its address, junk forged from that address over UDP
// is counted for the carrier, never charged, and its TLS calls go on.
func TestTrustTLSTrunkPeerNeverBlocked(t *testing.T) {
	e := newTLSEnv(t, func(pb *testpolicy.Policy) { pb.AutoBlock = &testpolicy.AutoBlock{Threshold: 2} })
	c := e.caller(t, "carrier")
	dial := func() {
		t.Helper()
		call, err := c.Dial(e.ctx, e.tlsAddr, sipua.DialOptions{User: "100"})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 200 {
			t.Fatalf("TLS call: %v, %v", res, err)
		}
		call.Bye(e.ctx)
	}
	dial()
	udp, _ := e.sbc.ListenAddr("external", "udp")
	junk := udpFrom(t, callerIP)
	for range 5 {
		sendTo(t, junk, udp.String(), []byte("hello"))
	}
	// Over UDP the carrier is no trunk (it is known by its certificate):
	// the gate drops the junk as from an unknown source, counted for the
	// carrier whose address it is.
	malformed := func() float64 {
		return testutil.ToFloat64(e.sbc.metrics.TrunkFailures.WithLabelValues("carrier", string(failUnknownSource)))
	}
	waitCount(e.ctx, t, "junk counted for the TLS carrier", malformed, 5)
	if e.sbc.def.blocklist.Blocked(netip.MustParseAddr(callerIP)) {
		t.Fatal("the TLS carrier's address blocked for forged junk")
	}
	if st, ok := e.sbc.def.tracker.State(acl.SourceKey(netip.MustParseAddr(callerIP)), time.Now()); ok && st.Failures > 0 {
		t.Fatalf("charged: %+v", st)
	}
	dial()
}
