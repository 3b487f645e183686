//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// uas404 answers every INVITE 404 and waits for the ACK.
const uas404 = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas answering 404">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 404 Not Found
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
`

// uac404 places a call that must end in a 404, and acknowledges it (same
// branch as the INVITE: the ACK of a non-2xx final response).
const uac404 = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac expecting 404">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="404"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
`

func writeScenario(t testing.TB, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCarrierNotChargedForCallers is finding 2 with the real binary: the
// genuine trunk places calls that the backend answers 404 (wrong numbers:
// its callers' failures, 12 where the auto-block threshold is 10; five in
// a minute used to demote a carrier to a quarter of its calls). They are
// counted for the trunk (sbc_trunk_failures_total{failure="backend_404"},
// sbc_trunk_calls_total{result="not_found"}, exact) and charged to nobody:
// no block, no demotion; with the backend answering again, every one of
// the trunk's next calls completes.
func TestCarrierNotChargedForCallers(t *testing.T) {
	tn := newTestNet(t)
	cfg := writePolicy(t, policyOpts{
		pinDir:    filepath.Join(t.TempDir(), "no-pins"),
		autoblock: true, threshold: 10,
	})
	stop404 := startSIPpUAS(t, tn.sbcNS, "127.0.0.1", "-sf", writeScenario(t, "uas404.xml", uas404))
	s := startSBC(t, tn, cfg)

	const wrong = 12
	fail404 := []string{trunkFailure, "trunk", "carrier", "failure", "backend_404"}
	notFound := []string{"sbc_trunk_calls_total", "trunk", "carrier", "result", "not_found"}
	before := tn.metrics(t)
	if err := runSIPpUAC(tn, wrong, t.TempDir(), "-sf", writeScenario(t, "uac404.xml", uac404)); err != nil {
		t.Error(err) // what follows says why
	} else {
		tn.waitMetric(t, "the 404s counted for the trunk", notFound, func(v float64) bool { return v >= before.get(notFound)+wrong })
	}
	after := tn.metrics(t)
	if d := after.get(fail404) - before.get(fail404); d != wrong {
		t.Errorf("%s%v rose by %v, want exactly %d", fail404[0], fail404[1:], d, wrong)
	}
	if d := after.get(notFound) - before.get(notFound); d != wrong {
		t.Errorf("%s%v rose by %v, want exactly %d", notFound[0], notFound[1:], d, wrong)
	}
	// The scenarios are right: no ACK or response was stray.
	if d := after.sum("sbc_dropped_total", "stage", "dialog") - before.sum("sbc_dropped_total", "stage", "dialog"); d != 0 {
		t.Errorf("%v messages of the 404 calls dropped at stage dialog", d)
	}
	trunkUncharged(t, s, tn, after, "the trunk's callers dialled wrong numbers")

	// The backend answers again: all of the trunk's next calls complete
	// (demoted, it got 4 of 6 refused).
	stop404()
	startUAS(t, tn)
	tn.callsComplete(t, 6)
	t.Logf("%d calls answered 404 by the backend: counted for trunk carrier (backend_404, not_found), no block; then 6 of 6 calls answered", wrong)
}
