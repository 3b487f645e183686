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
