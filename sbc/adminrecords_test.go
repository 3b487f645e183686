package sbc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// tailRecords keeps the newest complete lines, oldest first, skips a
// line being written and a window that starts mid-line.
func TestTailRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.jsonl")
	var b strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "{\"seq\":%d,\"event\":\"e%d\"}\n", i, i%2)
	}
	b.WriteString(`{"seq":6,"ev`) // torn: being written
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	seqs := func(recs []json.RawMessage) string {
		var out []string
		for _, r := range recs {
			var v struct{ Seq int }
			if err := json.Unmarshal(r, &v); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(v.Seq))
		}
		return strings.Join(out, ",")
	}
	recs, err := tailRecords(path, 3, nil)
	if err != nil || seqs(recs) != "3,4,5" {
		t.Fatalf("last 3: %s %v", seqs(recs), err)
	}
	odd := func(r json.RawMessage) bool { return strings.Contains(string(r), `"e1"`) }
	if recs, _ = tailRecords(path, 10, odd); seqs(recs) != "1,3,5" {
		t.Fatalf("filtered: %s", seqs(recs))
	}
	if _, err := tailRecords(filepath.Join(t.TempDir(), "none"), 3, nil); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}

// GET /v1/audit serves the newest records of the audit file, filtered by
// event kind, to the audit role; without a file output it says so.
func TestAdminAuditRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	pb := reloadBase()
	pb.Admin = "127.0.0.1:0"
	pb.XDP, pb.Nftables = nil, nil
	pb.Audit = &testpolicy.Audit{File: path}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	for i := range 3 {
		s.emit(events.Event{Kind: events.Blocked, SourceIP: fmt.Sprintf("192.0.2.%d", i+1), Reason: "test"})
	}
	base := "http://" + s.AdminAddr().String()
	get := func(key, q string) (int, Records) {
		t.Helper()
		res, err := adminDoKey(key, http.MethodGet, base+"/v1/audit"+q, "")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var r Records
		_ = json.NewDecoder(res.Body).Decode(&r)
		return res.StatusCode, r
	}
	var recs Records
	waitUntil(t.Context(), t, "three blocked records written", func() bool {
		_, recs = get(testpolicy.AdminKey, "?event=blocked")
		return len(recs.Records) == 3
	})
	if code, r := get(testpolicy.AdminKey, "?event=blocked&limit=2"); code != 200 || len(r.Records) != 2 ||
		!strings.Contains(string(r.Records[1]), "192.0.2.3") || r.File != path {
		t.Fatalf("limit 2: %d %+v", code, r)
	}
	if code, r := get(testpolicy.AdminKey, "?event=config_changed"); code != 200 || len(r.Records) != 1 {
		t.Fatalf("config_changed at start: %d %+v", code, r)
	}
	if code, _ := get(testpolicy.AdminKey, "?limit=0"); code != http.StatusBadRequest {
		t.Fatalf("limit=0: %d, want 400", code)
	}
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d, want 401", code)
	}
}

// GET /v1/cdrs serves the newest CDRs of the CDR file, or the one of a
// Call-ID of either leg; without [cdr] it says so.
func TestAdminCDRRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	e := newEnv(t, envOpts{admin: true, edit: func(p *testpolicy.Policy) {
		p.CDR = &testpolicy.CDR{Enabled: true, File: path}
	}})
	var ids []string
	for range 2 {
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 200 {
			t.Fatalf("call: %d", res.StatusCode)
		}
		if err := call.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, call.CallID())
	}
	base := "http://" + e.sbc.AdminAddr().String() + "/v1/cdrs"
	get := func(q string) (int, Records) {
		t.Helper()
		res, err := adminDo(http.MethodGet, base+q, "")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var r Records
		_ = json.NewDecoder(res.Body).Decode(&r)
		return res.StatusCode, r
	}
	e.eventually("both CDRs written", func() bool { _, r := get(""); return len(r.Records) == 2 })
	code, r := get("?call_id=" + ids[0])
	if code != 200 || len(r.Records) != 1 || !strings.Contains(string(r.Records[0]), ids[0]) {
		t.Fatalf("call_id filter: %d %+v", code, r)
	}
	if code, r := get("?limit=1"); code != 200 || len(r.Records) != 1 || !strings.Contains(string(r.Records[0]), ids[1]) {
		t.Fatalf("limit 1 (the newest): %d %+v", code, r)
	}

	off := newEnv(t, envOpts{admin: true})
	res, err := adminDo(http.MethodGet, "http://"+off.sbc.AdminAddr().String()+"/v1/cdrs", "")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("without [cdr]: %d, want 404", res.StatusCode)
	}
}
