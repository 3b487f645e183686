package sbc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// rawOptions is an OPTIONS request from the given address.
func rawOptions(from, to, ua string, n int) []byte {
	return []byte(fmt.Sprintf("OPTIONS sip:%[5]d@%[2]s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-scan%[5]d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:scan@%[1]s>;tag=s%[5]d\r\n"+
		"To: <sip:%[5]d@%[2]s>\r\n"+
		"Call-ID: scan-%[5]d@%[1]s\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"User-Agent: %[3]s\r\n"+
		"Contact: <sip:scan@%[1]s>\r\n"+
		"Content-Length: 0\r\n\r\n", from, to, ua, 0, n))
}

func (e *env) blocked(a string) (acl.Entry, bool) {
	return e.sbc.def.blocklist.Match(netip.MustParseAddr(a))
}

// rejectUnknown answers unknown sources 403 instead of dropping them at
// the gate (gate.go): their requests reach the pipeline, where scanners
// are told apart, connections are counted per source.
const rejectUnknown = "[headers]\nunknown_source_action = \"reject\""

func TestScannerAutoBlockedTrunkCallsContinue(t *testing.T) {
	e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 3, Window: policy.D(60 * time.Second), BlockFor: policy.D(10 * time.Minute)},
		headers: rejectUnknown})
	scanner := e.newCaller(strangerIP + ":0")
	for i := 0; i < 10; i++ {
		if err := scanner.Send(e.ctx, rawOptions(scanner.Addr(), e.ext, "friendly-scanner", 100+i), e.ext); err != nil {
			t.Fatal(err)
		}
		// A trunk call in the middle of the scan still completes.
		if i == 5 {
			call, res := e.dial(sipua.DialOptions{})
			if res.StatusCode != 200 {
				t.Fatalf("trunk call during scan: %d", res.StatusCode)
			}
			call.Bye(e.ctx)
		}
	}
	e.eventually("scanner blocked", func() bool { _, ok := e.blocked(strangerIP); return ok })
	ent, _ := e.blocked(strangerIP)
	if ent.Reason != "scanner_ua" || ent.Origin != acl.OriginAuto || ent.Expires.IsZero() {
		t.Fatalf("entry %+v: want an auto block for scanner_ua with an expiry", ent)
	}
	// Once blocked, the scanner's packets die before the parser. (Those
	// already read when the block landed were handled as usual: the read
	// loop runs ahead of the handlers.)
	if err := scanner.Send(e.ctx, rawOptions(scanner.Addr(), e.ext, "friendly-scanner", 999), e.ext); err != nil {
		t.Fatal(err)
	}
	e.eventually("packets after the block dropped before the parser", func() bool { return e.dropped("filter", "blocked") > 0 })
	for _, m := range scanner.Received() {
		t.Errorf("scanner got an answer: %s", m.StartLine)
	}
	for _, m := range e.backends[0].Received() {
		if strings.Contains(m.Head(), strangerIP) || m.Method == "OPTIONS" {
			t.Errorf("backend saw the scanner: %s", m.StartLine)
		}
	}
}

func TestUnknownSourceAutoBlocked(t *testing.T) {
	e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 2}})
	stranger := e.newCaller(strangerIP + ":0")
	for i := 0; i < 4; i++ {
		stranger.Send(e.ctx, rawOptions(stranger.Addr(), e.ext, "Softphone/1.0", i), e.ext)
	}
	e.eventually("unknown source blocked", func() bool { ent, ok := e.blocked(strangerIP); return ok && ent.Reason == "unknown_source" })
}

func TestObserveModeOnlyCounts(t *testing.T) {
	e := newEnv(t, envOpts{autoBlock: &testpolicy.AutoBlock{Threshold: 2, Observe: true}, headers: rejectUnknown})
	stranger := e.newCaller(strangerIP + ":0")
	for i := 0; i < 6; i++ {
		stranger.Send(e.ctx, rawOptions(stranger.Addr(), e.ext, "friendly-scanner", i), e.ext)
	}
	e.eventually("would-block counted", func() bool {
		return testutilValue(e.sbc.metrics.Blocks.WithLabelValues("observe", "scanner_ua")) >= 1
	})
	if _, ok := e.blocked(strangerIP); ok {
		t.Fatal("observe mode blocked the source")
	}
}

func TestManualBlockViaAdminAPIAndPersistence(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOpts{admin: true, stateDir: dir})
	base := "http://" + e.sbc.AdminAddr().String() + "/v1/blocklist"
	body, _ := json.Marshal(BlockRequest{Prefix: strangerIP, Reason: "abuse desk", TTL: "1h"})
	res, err := adminDo(http.MethodPost, base, string(body))
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %v %v", res, err)
	}
	res.Body.Close()
	// Dropped before the parser: no answer, counted.
	stranger := e.newCaller(strangerIP + ":0")
	stranger.Send(e.ctx, rawOptions(stranger.Addr(), e.ext, "x", 1), e.ext)
	e.eventually("drop counted", func() bool { return e.dropped("filter", "blocked") >= 1 })
	// Bad input gets a clear error.
	for _, bad := range []string{`{"prefix":"300.1.1.1"}`, `{"prefix":"10.0.0.0/8","ttl":"-1m"}`, `{"prefx":"1.2.3.4"}`} {
		res, err := adminDo(http.MethodPost, base, bad)
		if err != nil || res.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: %v %v, want 400", bad, res.StatusCode, err)
		}
		res.Body.Close()
	}
	// Persisted: a new SBC on the same state dir starts with the block.
	e.sbc.Close()
	if _, err := os.Stat(filepath.Join(dir, "blocklist.json")); err != nil {
		t.Fatalf("state not written: %v", err)
	}
	s2, err := New(e.pb.Parse(t), Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.def.blocklist.Close()
	ent, ok := s2.def.blocklist.Match(netip.MustParseAddr(strangerIP))
	if !ok || ent.Reason != "abuse desk" || ent.Origin != acl.OriginManual {
		t.Fatalf("after restart: %+v %v", ent, ok)
	}
}

func TestInviteRateAndCallCap(t *testing.T) {
	e := newEnv(t, envOpts{
		edit:   func(p *testpolicy.Policy) { p.Trunk("carrier").MaxCalls = 1 },
		limits: &testpolicy.Limits{SourceCPS: new(1000)},
	})
	first, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("first call %d", res.StatusCode)
	}
	_, res = e.dial(sipua.DialOptions{})
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("second concurrent call: %d, want 503 with Retry-After", res.StatusCode)
	}
	first.Bye(e.ctx)
	// The call's slot, not its dialogs (the table may forget those
	// before the call has finished ending).
	e.eventually("slot released", func() bool { return e.sbc.def.calls.InUse("carrier") == 0 })
	again, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("after the first ended: %d", res.StatusCode)
	}
	again.Bye(e.ctx)
}

func TestRegisterOnlyWhereAllowed(t *testing.T) {
	reg := func(e *env, domain string) *sip.Response {
		t.Helper()
		c := e.caller
		raw := fmt.Sprintf("REGISTER sip:%[2]s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-reg%[3]d\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:1001@%[2]s>;tag=r1\r\n"+
			"To: <sip:1001@%[2]s>\r\n"+
			"Call-ID: reg-%[3]d@x\r\n"+
			"CSeq: 1 REGISTER\r\n"+
			"Contact: <sip:1001@%[1]s>;expires=60\r\n"+
			"Content-Length: 0\r\n\r\n", c.Addr(), domain, time.Now().UnixNano())
		if err := c.Send(e.ctx, []byte(raw), e.ext); err != nil {
			t.Fatal(err)
		}
		m, err := c.WaitFor(e.ctx, func(m sipua.Msg) bool {
			return m.CSeqMethod() == "REGISTER" && m.Status >= 200 && strings.Contains(m.Header("To"), domain)
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := sip.NewParser().ParseSIP(m.Raw)
		if err != nil {
			t.Fatal(err)
		}
		return msg.(*sip.Response)
	}
	closed := newEnv(t, envOpts{})
	if res := reg(closed, "pbx.example.com"); res.StatusCode != 403 {
		t.Fatalf("REGISTER from a trunk without allow_register: %d, want 403", res.StatusCode)
	}
	open := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Trunk("carrier").AllowRegister = true
		p.Trunk("carrier").RegisterDomains = []string{"pbx.example.com"}
	}})
	if res := reg(open, "other.example.com"); res.StatusCode != 403 {
		t.Fatalf("REGISTER for a domain not configured: %d, want 403", res.StatusCode)
	}
	// The test backend is no registrar: whatever it answers is relayed.
	if res := reg(open, "pbx.example.com"); res.StatusCode == 403 {
		t.Fatalf("allowed REGISTER refused")
	}
	m, err := open.backends[0].WaitFor(open.ctx, isReq("REGISTER"))
	if err != nil {
		t.Fatal(err)
	}
	if ct := m.Header("Contact"); !strings.Contains(ct, sbcIntIP) || strings.Contains(m.Head(), callerIP+":") {
		t.Fatalf("registrar saw the caller: Contact %q\n%s", ct, m.Head())
	}
}

func TestTortureCorpusNeverReachesBackend(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "corpora", "rfc4475")
	index, err := os.ReadFile(filepath.Join(dir, "INDEX.tsv"))
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("corpus missing: %v", err)
		}
		t.Skipf("corpus missing: %v", err)
	}
	e := newEnv(t, envOpts{})
	sent := 0
	for _, line := range strings.Split(string(index), "\n")[1:] {
		// Every message the index says must be rejected or dropped
		// (baddate.dat may be tolerated and forwarded: not sent here).
		f := strings.Split(line, "\t")
		if len(f) < 5 || f[2] != "invalid" || !(strings.HasPrefix(f[4], "Reject") || strings.HasPrefix(f[4], "Drop")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, f[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.caller.Send(e.ctx, data, e.ext); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if sent < 17 {
		t.Fatalf("only %d invalid messages in the corpus index", sent)
	}
	// The SBC is alive and still routes calls; by then every datagram
	// sent before the call has been handled.
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("call after the torture run: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
	e.eventually("call ended", func() bool { return e.sbc.calls.len() == 0 })
	for _, m := range e.backends[0].Received() {
		if m.CallID() != "" && m.Method != "" && m.Method != "INVITE" && m.Method != "ACK" && m.Method != "BYE" {
			t.Errorf("backend received %s", m.StartLine)
		}
	}
	if n := len(e.backends[0].Calls()); n != 1 {
		for _, m := range e.backends[0].Received() {
			if m.Method == "INVITE" {
				t.Logf("backend INVITE:\n%s", m.Raw)
			}
		}
		t.Fatalf("backend saw %d calls, want only the test call", n)
	}
}

var _ = context.Background

// Backends are exempt from the per-source packet budget: a PBX answering
// many calls sends far more datagrams than any single caller.
func TestBackendNotPacketLimited(t *testing.T) {
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}, {Code: 183, SDP: true}}})}},
		limits:   &testpolicy.Limits{SourcePPS: new(1), SourcePPSBurst: 1, SourceCPS: new(1000)},
	})
	for i := 0; i < 3; i++ {
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 200 {
			t.Fatalf("call %d: %d", i, res.StatusCode)
		}
		if err := call.Bye(e.ctx); err != nil {
			t.Fatalf("call %d BYE: %v", i, err)
		}
	}
	if n := e.dropped("filter", "source_pps"); n != 0 {
		t.Fatalf("%v datagrams of the backend or trunk dropped by the packet budget", n)
	}
}

func TestTCPBlockedSourceClosedAtAccept(t *testing.T) {
	e := newEnv(t, envOpts{})
	tcpAddr, ok := e.sbc.ListenAddr("external", "tcp")
	if !ok {
		t.Fatal("no tcp listener")
	}
	if err := e.sbc.def.blocklist.Add(acl.Entry{Prefix: netip.MustParsePrefix(strangerIP + "/32"), Reason: "test", Origin: acl.OriginManual}); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strangerIP)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", tcpAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(rawOptions(c.LocalAddr().String(), tcpAddr.String(), "x", 1))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err == nil {
		t.Fatalf("blocked TCP source got %q", buf[:n])
	}
	e.eventually("accept drop counted", func() bool { return e.dropped("accept", "blocked") >= 1 })

	// Garbage over TCP from the trunk: no crash, no answer that echoes it,
	// and calls still work.
	d2 := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(callerIP)}, Timeout: 5 * time.Second}
	g, err := d2.Dial("tcp", tcpAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("INVITE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n" + strings.Repeat("\x00garbage", 1000)))
	g.Close()
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("call after TCP garbage: %d", res.StatusCode)
	}
	call.Bye(e.ctx)
}

// A source that is not a trunk cannot hold more TCP connections than its
// cap: a slow connection flood would otherwise exhaust file descriptors.
func TestTCPConnectionsPerSourceCapped(t *testing.T) {
	e := newEnv(t, envOpts{limits: &testpolicy.Limits{TCPConnectionsPerSource: new(3)}, headers: rejectUnknown})
	tcpAddr, _ := e.sbc.ListenAddr("external", "tcp")
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strangerIP)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", tcpAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedByServer reports whether the server closed c (read gets EOF)
	// rather than keeping it open (the read times out after wait).
	closedByServer := func(c net.Conn, wait time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	var kept []net.Conn
	for i := 0; i < 3; i++ {
		kept = append(kept, dial())
	}
	extra := dial()
	if !closedByServer(extra, 10*time.Second) {
		t.Fatal("4th connection from one source kept open with a cap of 3")
	}
	for i, c := range kept {
		if closedByServer(c, 100*time.Millisecond) {
			t.Fatalf("connection %d within the cap was closed", i)
		}
	}
	if e.dropped("accept", "source_connections") < 1 {
		t.Fatal("refused connection not counted")
	}
	// Closing one frees a slot.
	kept[0].Close()
	e.eventually("slot freed", func() bool { return e.sbc.conns.bySource(netip.MustParseAddr(strangerIP)) == 2 })
	if closedByServer(dial(), 100*time.Millisecond) {
		t.Fatal("a new connection after one closed was refused")
	}
}
