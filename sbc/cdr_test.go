package sbc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/cdr"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// cdrEnv is newEnv with the CDR file on; o.edit still applies.
func cdrEnv(t *testing.T, o envOpts) (*env, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cdr.jsonl")
	edit := o.edit
	o.edit = func(p *testpolicy.Policy) {
		p.CDR = &testpolicy.CDR{Enabled: true, File: file}
		if edit != nil {
			edit(p)
		}
	}
	return newEnv(t, o), file
}

// readCDRs returns the records of the file.
func readCDRs(t *testing.T, file string) []cdr.Record {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []cdr.Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r cdr.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("CDR line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// waitCDR waits for the record of the call whose A-leg Call-ID is callID.
func (e *env) waitCDR(file, callID string) cdr.Record {
	e.t.Helper()
	var rec cdr.Record
	e.eventually("the CDR of "+callID, func() bool {
		for _, r := range readCDRs(e.t, file) {
			if r.CallIDA == callID {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

// checkTimes checks the invariants of a record's times and durations.
func checkTimes(t *testing.T, r cdr.Record, answered bool) {
	t.Helper()
	if r.V != cdr.Version || r.Start.IsZero() || r.End.Before(r.Start) {
		t.Errorf("version %d, start %v, end %v", r.V, r.Start, r.End)
	}
	if r.DurationMS != r.End.Sub(r.Start).Milliseconds() {
		t.Errorf("duration_ms %d for %v", r.DurationMS, r.End.Sub(r.Start))
	}
	switch {
	case answered && r.Answer == nil:
		t.Errorf("answered call without answer time")
	case answered && (r.Answer.Before(r.Start) || r.End.Before(*r.Answer) || r.BillableMS != r.End.Sub(*r.Answer).Milliseconds()):
		t.Errorf("answer %v billable %d in %v..%v", r.Answer, r.BillableMS, r.Start, r.End)
	case !answered && (r.Answer != nil || r.BillableMS != 0):
		t.Errorf("unanswered call with answer %v billable %d", r.Answer, r.BillableMS)
	}
}

// TestCDRAnswered: an answered call hung up by the caller, then one hung
// up by the callee: the record has both Call-IDs (the backend's is the
// one it saw), trunk and pool, the caller's URIs, 200, Q.850 16 from the
// BYE, who hung up, and the relayed media stream of each leg, unencrypted.
func TestCDRAnswered(t *testing.T) {
	e, file := cdrEnv(t, envOpts{})
	call, res := e.dial(sipua.DialOptions{User: "4930123", From: "4940999"})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	b := e.backends[0]
	ci, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	r := e.waitCDR(file, call.CallID())
	if r.CallIDB != ci.CallID || r.CallIDB == r.CallIDA || r.Session == "" {
		t.Errorf("call ids a %q b %q (backend saw %q), session %q", r.CallIDA, r.CallIDB, ci.CallID, r.Session)
	}
	if r.TrunkIn != "carrier" || r.TrunkOut != "pbx" || r.Target != b.Addr() || r.Transport != "udp" {
		t.Errorf("trunk %q pool %q target %q (backend %s) transport %q", r.TrunkIn, r.TrunkOut, r.Target, b.Addr(), r.Transport)
	}
	if r.Src != e.caller.Addr() {
		t.Errorf("src %q, caller %s", r.Src, e.caller.Addr())
	}
	if r.RURI != "sip:4930123@"+e.ext || r.To != "sip:4930123@"+e.ext || r.From == "" || !bytes.Contains([]byte(r.From), []byte("4940999")) {
		t.Errorf("ruri %q to %q from %q", r.RURI, r.To, r.From)
	}
	if r.SIPCode != 200 || r.SIPReason != "OK" || r.Q850 != 16 || r.Q850Source != "end" ||
		r.HangupBy != cdr.ByCaller || r.SBCReason != resultAnswered {
		t.Errorf("outcome %d %q q850 %d (%s) by %s reason %s", r.SIPCode, r.SIPReason, r.Q850, r.Q850Source, r.HangupBy, r.SBCReason)
	}
	checkTimes(t, r, true)
	if len(r.Media) != 1 || r.Media[0].A.Encryption != "none" || r.Media[0].B.Encryption != "none" {
		t.Errorf("media %+v", r.Media)
	}
	if r.Node == "" {
		t.Error("no node")
	}

	// The callee hangs up with a Reason header (RFC 3326): its cause wins.
	call2, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci2, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked && c.CallID != ci.CallID })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Request(e.ctx, ci2.CallID, sip.BYE, nil, sip.NewHeader("Reason", `Q.850;cause=31;text="Normal, unspecified"`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-call2.Ended():
	case <-e.ctx.Done():
		t.Fatal("caller never got the BYE")
	}
	r = e.waitCDR(file, call2.CallID())
	if r.Q850 != 31 || r.Q850Source != "reason" || r.HangupBy != cdr.ByCallee || r.SIPCode != 200 {
		t.Errorf("callee's BYE: q850 %d (%s) by %s code %d", r.Q850, r.Q850Source, r.HangupBy, r.SIPCode)
	}
	checkTimes(t, r, true)
	ended := func(reason, by string) float64 {
		return testutil.ToFloat64(e.sbc.metrics.CallsEnded.WithLabelValues(reason, by))
	}
	e.eventually("sbc_calls_ended_total says who ended each call", func() bool {
		return ended(resultAnswered, "caller") == 1 && ended(resultAnswered, "callee") == 1
	})
	if st := e.sbc.ops.Load().stats().cdr; st.Written != 2 || st.Dropped != 0 {
		t.Errorf("cdr stats %+v", st)
	}
}

// TestCDRRejected: the backend's final responses become the caller's,
// with the Q.850 causes of RFC 3398 (busy 17, declined 21, not found 1,
// unavailable 18) or the one its Reason header names; the callee ended
// the call; none was answered.
func TestCDRRejected(t *testing.T) {
	plans := map[string]sipua.Plan{
		"busy":    {Final: 486},
		"decline": {Final: 603},
		"nobody":  {Final: 404},
		"away":    {Final: 480},
		"reason":  {Final: 480, Headers: []sip.Header{sip.NewHeader("Reason", `Q.850;cause=19;text="No answer"`)}},
	}
	e, file := cdrEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: func(req *sip.Request) sipua.Plan {
		return plans[req.Recipient.User]
	}}}})
	for _, tc := range []struct {
		user, result string
		code, q850   int
		source       string
	}{
		{"busy", resultBusy, 486, 17, "sip"},
		{"decline", resultDeclined, 603, 21, "sip"},
		{"nobody", resultNotFound, 404, 1, "sip"},
		{"away", resultNoAnswer, 480, 18, "sip"},
		{"reason", resultNoAnswer, 480, 19, "reason"},
	} {
		call, res := e.dial(sipua.DialOptions{User: tc.user})
		if res.StatusCode != tc.code {
			t.Fatalf("%s: final %d, want %d", tc.user, res.StatusCode, tc.code)
		}
		r := e.waitCDR(file, call.CallID())
		if r.SIPCode != tc.code || r.SIPReason == "" || r.Q850 != tc.q850 || r.Q850Source != tc.source ||
			r.HangupBy != cdr.ByCallee || r.SBCReason != tc.result || r.CallIDB == "" {
			t.Errorf("%s: code %d %q q850 %d (%s) by %s reason %s b %q, want %d q850 %d (%s) by callee reason %s",
				tc.user, r.SIPCode, r.SIPReason, r.Q850, r.Q850Source, r.HangupBy, r.SBCReason, r.CallIDB, tc.code, tc.q850, tc.source, tc.result)
		}
		checkTimes(t, r, false)
	}
}

// TestCDRCancelled: the caller cancels while it rings: 487, Q.850 16,
// hung up by the caller.
func TestCDRCancelled(t *testing.T) {
	e, file := cdrEnv(t, envOpts{backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{
		Provisional: []sipua.Provisional{{Code: 180}}, Delay: 30 * time.Second,
	})}}})
	call, err := e.caller.Dial(e.ctx, e.ext, sipua.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.WaitStatus(e.ctx, 180); err != nil {
		t.Fatalf("no 180: %v", err)
	}
	if err := call.Cancel(e.ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := call.WaitFinal(e.ctx); err != nil || res.StatusCode != 487 {
		t.Fatalf("final %v %v", res, err)
	}
	r := e.waitCDR(file, call.CallID())
	if r.SIPCode != 487 || r.Q850 != 16 || r.HangupBy != cdr.ByCaller || r.SBCReason != resultCancelled || r.CallIDB == "" {
		t.Errorf("code %d q850 %d (%s) by %s reason %s b %q", r.SIPCode, r.Q850, r.Q850Source, r.HangupBy, r.SBCReason, r.CallIDB)
	}
	checkTimes(t, r, false)
}

// TestCDRFailed: calls the SBC gives up. Every target refuses (503, no
// answer): 503 to the caller, Q.850 41, the SBC's no_target. A callee
// that rings past calls.ring_timeout: 408, Q.850 19 (alerted, no
// answer), timeout. One that never even rings: 18. All ended by the SBC.
func TestCDRFailed(t *testing.T) {
	t.Run("no_target", func(t *testing.T) {
		e, file := cdrEnv(t, envOpts{backends: []sipua.BackendOptions{
			{Answer: sipua.Always(sipua.Plan{Final: 503})},
			{Answer: sipua.Always(sipua.Plan{NoResponse: true})},
		}})
		call, res := e.dial(sipua.DialOptions{})
		if res.StatusCode != 503 {
			t.Fatalf("final %d", res.StatusCode)
		}
		r := e.waitCDR(file, call.CallID())
		if r.SIPCode != 503 || r.Q850 != 41 || r.Q850Source != "sip" || r.HangupBy != cdr.BySBC || r.SBCReason != resultNoTarget {
			t.Errorf("code %d q850 %d (%s) by %s reason %s", r.SIPCode, r.Q850, r.Q850Source, r.HangupBy, r.SBCReason)
		}
		checkTimes(t, r, false)
	})
	for _, tc := range []struct {
		name string
		prov []sipua.Provisional
		q850 int
	}{
		{"ring_timeout_alerted", []sipua.Provisional{{Code: 180}}, 19},
		{"ring_timeout_silent", []sipua.Provisional{{Code: 100}}, 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, file := cdrEnv(t, envOpts{
				backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Provisional: tc.prov, Delay: 30 * time.Second})}},
				edit:     func(p *testpolicy.Policy) { p.Calls.RingTimeout = policy.D(300 * time.Millisecond) },
			})
			call, res := e.dial(sipua.DialOptions{})
			if res.StatusCode != 408 {
				t.Fatalf("final %d", res.StatusCode)
			}
			r := e.waitCDR(file, call.CallID())
			if r.SIPCode != 408 || r.Q850 != tc.q850 || r.Q850Source != "end" || r.HangupBy != cdr.BySBC || r.SBCReason != resultTimeout {
				t.Errorf("code %d q850 %d (%s) by %s reason %s", r.SIPCode, r.Q850, r.Q850Source, r.HangupBy, r.SBCReason)
			}
			checkTimes(t, r, false)
		})
	}
}
