package sbc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/policy"
)

// A manual block's reason is the operator's free text: it stays on the
// blocklist entry, but sbc_blocks_total counts it as reason="manual",
// never as a label value of its own.
func TestManualBlockReasonIsNotALabel(t *testing.T) {
	s, err := New(policy.Default(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.def.blocklist.Close() })
	texts := []string{`ticket #4711: "fraud" from this range`, "", "scanner_ua"}
	for i, text := range texts {
		body, _ := json.Marshal(BlockRequest{Prefix: fmt.Sprintf("198.51.100.%d", i+1), Reason: text})
		r := httptest.NewRequest(http.MethodPost, "/v1/blocklist", bytes.NewReader(body))
		r.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		s.handleBlocklistAdd(w, r)
		if w.Code != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", body, w.Code, w.Body)
		}
	}
	if e, ok := s.def.blocklist.Get(mustPrefix(t, "198.51.100.1/32")); !ok || e.Reason != texts[0] || e.Origin != acl.OriginManual {
		t.Errorf("entry = %+v, want the operator's reason %q kept", e, texts[0])
	}
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sbc_blocks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			k := ""
			for _, l := range m.GetLabel() {
				k += l.GetName() + "=" + l.GetValue() + ","
			}
			series[k] = m.GetCounter().GetValue()
		}
	}
	if len(series) != 1 || series["origin=manual,reason=manual,"] != float64(len(texts)) {
		t.Errorf("sbc_blocks_total = %v, want only {origin=manual,reason=manual} = %d", series, len(texts))
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := acl.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The realm's message counters are resolved once per realm
// (msgCounters) and count what the per-message lookups did: by realm and
// method, by realm and class; every method and class of a realm is
// exposed from the start, at 0.
func TestMessageCounters(t *testing.T) {
	for _, c := range []struct {
		m    string
		want string
	}{{"INVITE", "INVITE"}, {"UPDATE", "UPDATE"}, {"FOO", "other"}, {"invite", "other"}, {"", "other"}} {
		if got := methodLabel(c.m); got != c.want {
			t.Errorf("methodLabel(%q) = %q, want %q", c.m, got, c.want)
		}
	}
	for _, c := range []struct {
		code int
		want string
	}{{0, "1xx"}, {99, "1xx"}, {100, "1xx"}, {199, "1xx"}, {200, "2xx"}, {487, "4xx"}, {599, "5xx"}, {699, "6xx"}, {700, "6xx"}, {999, "6xx"}} {
		if got := classLabel(c.code); got != c.want {
			t.Errorf("classLabel(%d) = %q, want %q", c.code, got, c.want)
		}
	}

	e := newEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		Provisional: []sipua.Provisional{{Code: 180}},
	})}}})
	if n := gathered(t, e.sbc, "sbc_requests_total", "UPDATE", "external"); n != 0 {
		t.Errorf("sbc_requests_total{UPDATE,external} = %v before any, want 0 (exposed from the start)", n)
	}
	call, res := e.dial(sipua.DialOptions{User: "1001"})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	e.backendMsg(e.backends[0], isReq("ACK"))
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.eventually("no call left", func() bool { return e.sbc.calls.len() == 0 })
	for _, m := range []string{"INVITE", "ACK", "BYE"} {
		if n := gathered(t, e.sbc, "sbc_requests_total", m, "external"); n != 1 {
			t.Errorf("sbc_requests_total{%s,external} = %v, want 1", m, n)
		}
	}
	if n := gathered(t, e.sbc, "sbc_requests_total", "INVITE", "internal"); n != 0 {
		t.Errorf("sbc_requests_total{INVITE,internal} = %v, want 0", n)
	}
	// From the backend: the 180, the INVITE's 200 and the BYE's 200.
	if n := gathered(t, e.sbc, "sbc_responses_total", "1xx", "internal"); n < 1 {
		t.Errorf("sbc_responses_total{1xx,internal} = %v, want the 180", n)
	}
	// The SBC answers the caller's BYE without waiting for the backend's
	// 200 (the call is gone before it comes): wait for it to be read.
	e.eventually("the backend's 200 to the BYE counted", func() bool {
		return gathered(t, e.sbc, "sbc_responses_total", "2xx", "internal") >= 2
	})
	if n := gathered(t, e.sbc, "sbc_responses_total", "6xx", "internal"); n != 0 {
		t.Errorf("sbc_responses_total{6xx,internal} = %v, want 0", n)
	}
}

// methodLabel and classLabel are the label values the counters use for
// a method and a status code.
func methodLabel(m string) string { return methodLabels[methodIndex(m)] }

func classLabel(code int) string { return classLabels[classIndex(code)] }
