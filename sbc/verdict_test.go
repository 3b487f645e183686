package sbc

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
)

func TestLogGate(t *testing.T) {
	var g logGate
	n := 0
	for range 100 {
		if g.allow(7, 10) {
			n++
		}
	}
	if n != 10 {
		t.Fatalf("second 7: %d lines let through, want 10", n)
	}
	if !g.allow(8, 10) {
		t.Fatal("a new second starts a new budget")
	}
	var zero logGate
	if zero.allow(1, 0) {
		t.Fatal("limit 0 lets nothing through")
	}
}

// jsonLines decodes the JSON log lines written so far.
func jsonLines(t *testing.T, b *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(b.String()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// A flood of datagrams from a blocked source: each one counted, a few
// logged with stage, reason and source, within the filter's own budget.
func TestFilterDropCountedAndLogged(t *testing.T) {
	var buf syncBuffer
	s, err := New(policy.Default(), Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.def.blocklist.Close() })
	if err := s.def.blocklist.Add(acl.Entry{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reason: "test", Origin: acl.OriginManual}); err != nil {
		t.Fatal(err)
	}
	f := s.readFilter(s.realms["external"])
	props := sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 5060}}
	const n = 200
	for range n {
		if out, _ := f(props, benchPacket); out != nil {
			t.Fatal("blocked source passed")
		}
	}
	if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("filter", "blocked")); got != n {
		t.Fatalf("sbc_dropped_total{filter,blocked} = %v, want %d", got, n)
	}
	var logged int
	for _, l := range jsonLines(t, &buf) {
		if l["msg"] != "dropped" {
			continue
		}
		logged++
		if l["stage"] != "filter" || l["reason"] != "blocked" || l["source"] != "203.0.113.9:5060" {
			t.Errorf("log line %v: want stage filter, reason blocked, source 203.0.113.9:5060", l)
		}
	}
	// The budget is per second: the loop may straddle two.
	if logged < 1 || logged > 2*floodLogPerSecond {
		t.Errorf("%d drop lines for %d drops, want 1..%d", logged, n, 2*floodLogPerSecond)
	}
}

// fakeTx records what act does with a server transaction.
type fakeTx struct {
	sip.ServerTransaction
	res        []*sip.Response
	terminated bool
}

func (f *fakeTx) Respond(res *sip.Response) error { f.res = append(f.res, res); return nil }
func (f *fakeTx) Terminate()                      { f.terminated = true }

func testRequest(method sip.RequestMethod) *sip.Request {
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: "1000", Host: "192.0.2.1"})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "198.51.100.9", Port: 5060, Params: params("branch", "z9hG4bKv1")})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "a", Host: "198.51.100.9"}, Params: params("tag", "ftag")})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1000", Host: "192.0.2.1"}, Params: sip.NewParams()})
	cid := sip.CallIDHeader("verdict-test")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	req.SetBody(nil)
	return req
}

// act answers (code, phrase, extra headers) or ends the transaction
// silently, counts and logs either way.
func TestActAnswersOrTerminates(t *testing.T) {
	var buf syncBuffer
	s, err := New(policy.Default(), Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.def.blocklist.Close() })
	ep := &endpoint{name: "external"}
	p := peer{src: netip.MustParseAddrPort("198.51.100.9:5060")}

	tx := &fakeTx{}
	s.act(ep, p, testRequest(sip.INVITE), tx, answer(stageAdmit, reasonTrunkCalls, 503, "Service Unavailable",
		sip.NewHeader("Retry-After", "1")).with("trunk", "carrier"))
	if len(tx.res) != 1 || tx.res[0].StatusCode != 503 || tx.res[0].Reason != "Service Unavailable" ||
		tx.res[0].GetHeader("Retry-After") == nil || tx.terminated {
		t.Fatalf("answer: responses %v, terminated %v; want one 503 with Retry-After", tx.res, tx.terminated)
	}

	tx = &fakeTx{}
	s.act(ep, p, testRequest(sip.OPTIONS), tx, silent(stageClassify, reasonScannerUA))
	if len(tx.res) != 0 || !tx.terminated {
		t.Fatalf("silent: responses %v, terminated %v; want none and terminated", tx.res, tx.terminated)
	}

	for _, c := range []struct{ stage, reason string }{{"admit", "trunk_calls"}, {"classify", "scanner_ua"}} {
		if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(c.stage, c.reason)); got != 1 {
			t.Errorf("sbc_dropped_total{%s,%s} = %v, want 1", c.stage, c.reason, got)
		}
	}
	var lines []map[string]any
	for _, l := range jsonLines(t, &buf) {
		if l["msg"] == "dropped" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d drop lines, want 2: %v", len(lines), lines)
	}
	want := []map[string]any{
		{"stage": "admit", "reason": "trunk_calls", "source": "198.51.100.9:5060", "realm": "external", "method": "INVITE", "code": float64(503), "trunk": "carrier"},
		{"stage": "classify", "reason": "scanner_ua", "source": "198.51.100.9:5060", "realm": "external", "method": "OPTIONS", "code": nil},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, lines[i][k], v, lines[i])
			}
		}
	}
}
