package sbc_test

// Transfers against SIPp on both sides: SIPp as the carrier (a trunk,
// 127.0.0.1) → sbc → SIPp as the PBX (pool "uas"), and SIPp as the
// transfer target (pool "target", user 2000). The SIPps run whole
// transfers: a REFER, the transferee's new INVITE (a second Call-ID in
// the same SIPp call: "x///<call-id>"), the NOTIFY with sipfrag, the
// BYEs.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

type xferFlow struct {
	carrier, pbx, target string // scenarios: the carrier's (UAC), the PBX's and the target's (UAS)
	// outbound: the target is a carrier (pool "carrier-a" on the external
	// realm, outbound route "+" from pool "uas"); else a backend (pool
	// "target", route "2000").
	outbound bool
	// targetCalls: how many calls the target takes per transfer (1 when 0).
	targetCalls int
	pbxRefer    string // pool "uas"'s refer
}

// runTransferFlow runs the target and the PBX, then the carrier, each
// for sippCallsPerFlow transfers, and fails unless every SIPp exits 0.
func runTransferFlow(t *testing.T, sipp string, f xferFlow) (*sbc.SBC, map[string][]sipMessage, map[string]int) {
	dir := t.TempDir()
	ports := map[string]int{"carrier": freeUDPPort(t), "pbx": freeUDPPort(t), "target": freeUDPPort(t)}
	logs := &syncBuffer{}
	pb := testpolicy.New("127.0.0.1", "127.0.0.1", fmt.Sprintf("127.0.0.1:%d", ports["pbx"])).UDPOnly()
	pb.Server.LogLevel = "debug"
	pb.Trunk("carrier").Name = "sipp"
	pb.Pool("pbx").Refer = f.pbxRefer
	pb.Pool("pbx").Name = "uas"
	pb.Routing.DefaultPool = "uas"
	off := &testpolicy.Health{Interval: policy.D(0)}
	if f.outbound {
		pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "carrier-a", Realm: "external", Health: off,
			Targets: testpolicy.Targets(fmt.Sprintf("127.0.0.1:%d", ports["target"]))})
		pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier-a"}}}
	} else {
		pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "target", Realm: "internal", Health: off,
			Targets: testpolicy.Targets(fmt.Sprintf("127.0.0.1:%d", ports["target"]))})
		pb.Routes = append(pb.Routes, testpolicy.Route{Prefix: "2000", Pool: "target"})
	}
	pb.Limits = &testpolicy.Limits{SourcePPS: new(1000000), SourceCPS: new(1000000), TrunkPPS: new(1000000)}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := sbc.New(pb.Parse(t), sbc.Options{Logger: log})
	if err != nil {
		t.Fatalf("sbc.New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("sbc.Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	ext, _ := s.ListenAddr("external", "udp")
	intl, _ := s.ListenAddr("internal", "udp")

	ctx, cancel := context.WithTimeout(context.Background(), sippTimeout)
	defer cancel()
	common := []string{"-i", "127.0.0.1", "-m", strconv.Itoa(sippCallsPerFlow), "-nostdin",
		"-timeout", strconv.Itoa(int(sippTimeout/time.Second) - 5), "-timeout_error", "-trace_msg", "-trace_err"}
	type proc struct {
		p    *sippProc
		done chan error
	}
	servers := map[string]*proc{}
	for _, side := range []string{"target", "pbx"} {
		sc := f.target
		n := sippCallsPerFlow * max(f.targetCalls, 1)
		if side == "pbx" {
			sc, n = f.pbx, sippCallsPerFlow
		}
		args := append([]string(nil), common...)
		args[3] = strconv.Itoa(n) // -m
		p := newSIPp(ctx, sipp, append([]string{
			"-sf", filepath.Join("testdata", "sipp", sc+".xml"), "-p", strconv.Itoa(ports[side]),
			"-message_file", filepath.Join(dir, side+"_messages.log"), "-error_file", filepath.Join(dir, side+"_errors.log"),
		}, args...))
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start sipp %s: %v", side, err)
		}
		pr := &proc{p: p, done: make(chan error, 1)}
		go func() { pr.done <- p.cmd.Wait() }()
		waitUDPBound(t, ports[side], pr.done)
		servers[side] = pr
	}
	uac := newSIPp(ctx, sipp, append([]string{
		"-sf", filepath.Join("testdata", "sipp", f.carrier+".xml"), ext.String(),
		"-p", strconv.Itoa(ports["carrier"]), "-s", "1000", "-r", "10", "-l", "1",
		"-message_file", filepath.Join(dir, "carrier_messages.log"), "-error_file", filepath.Join(dir, "carrier_errors.log"),
	}, common...))
	uacErr := uac.cmd.Run()
	if uacErr != nil {
		cancel()
	}
	errs := map[string]error{"carrier": uacErr}
	for side, pr := range servers {
		errs[side] = <-pr.done
	}
	dump := func() {
		t.Logf("sipp carrier output:\n%s", tail(uac.out.String(), 3000))
		for side, pr := range servers {
			t.Logf("sipp %s output:\n%s", side, tail(pr.p.out.String(), 3000))
		}
		for _, side := range []string{"carrier", "pbx", "target"} {
			for _, n := range []string{side + "_errors.log", side + "_messages.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
					t.Logf("%s:\n%s", n, tail(string(b), 6000))
				}
			}
		}
		t.Logf("sbc log:\n%s", tail(logs.String(), 8000))
	}
	for side, err := range errs {
		if err != nil {
			dump()
			t.Fatalf("sipp %s failed: %v (exit 0 means every call succeeded)", side, err)
		}
	}
	msgs := map[string][]sipMessage{}
	for _, side := range []string{"carrier", "pbx", "target"} {
		msgs[side] = readSIPpLog(t, filepath.Join(dir, side+"_messages.log"))
	}
	ports["ext"], ports["int"] = int(ext.Port()), int(intl.Port())
	t.Cleanup(func() {
		if t.Failed() {
			dump()
		}
	})
	return s, msgs, ports
}

func transfers(s *sbc.SBC, mode, result string) float64 {
	return testutil.ToFloat64(s.Metrics().Transfers.WithLabelValues(mode, result))
}

// TestSIPpBlindTransferByPBX: the PBX transfers the carrier's call to
// user 2000. The carrier gets the REFER with Refer-To on the SBC's
// external face (nothing of the PBX's address), calls it through the SBC,
// which routes it to the target; the sipfrag 200 reaches the PBX, which
// hangs up the first call.
func TestSIPpBlindTransferByPBX(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, ports := runTransferFlow(t, sipp, xferFlow{carrier: "uac_xfer_transferee", pbx: "uas_xfer_transferor", target: "uas_call"})
	if !waitCalls(s, "answered", 2*sippCallsPerFlow, 5*time.Second) {
		t.Fatalf("sbc_calls_total: %v, want %d answered (the first calls and the transferred ones)", callCounts(s), 2*sippCallsPerFlow)
	}
	if got := transfers(s, "relay", "accepted"); got != sippCallsPerFlow {
		t.Errorf("sbc_transfers_total{relay,accepted} = %v, want %d", got, sippCallsPerFlow)
	}
	refers := 0
	for _, m := range msgs["carrier"] {
		if !m.sent && strings.HasPrefix(m.text, "REFER ") {
			refers++
			rt, rb := sipHeader(m.text, "Refer-To"), sipHeader(m.text, "Referred-By")
			want := fmt.Sprintf("sip:2000@127.0.0.1:%d", ports["ext"])
			if !strings.Contains(rt, want) || strings.Contains(rt, strconv.Itoa(ports["pbx"])) {
				t.Errorf("carrier's Refer-To %q: want %s (the SBC's external face), nothing of the PBX", rt, want)
			}
			if !strings.Contains(rb, "1000@127.0.0.1:"+strconv.Itoa(ports["ext"])) {
				t.Errorf("carrier's Referred-By %q: want user 1000 on the SBC's external face", rb)
			}
		}
	}
	if refers != sippCallsPerFlow {
		t.Errorf("the carrier got %d REFERs, want %d", refers, sippCallsPerFlow)
	}
	invites := 0
	for _, m := range msgs["target"] {
		if !m.sent && strings.HasPrefix(m.text, "INVITE ") {
			invites++
		}
	}
	if invites != sippCallsPerFlow {
		t.Errorf("the target got %d INVITEs, want %d", invites, sippCallsPerFlow)
	}
	checkTopologyHiding(t, "carrier", msgs["carrier"], "pbx", msgs["pbx"], ports["carrier"], ports["ext"])
}

// sipHeader is the value of a SIPp-logged message's first header called
// name.
func sipHeader(msg, name string) string {
	for _, line := range strings.Split(strings.ReplaceAll(msg, "\r\n", "\n"), "\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestSIPpBlindTransferByCarrier: the carrier transfers the PBX to
// +15551234567. The PBX gets the REFER with Refer-To on the SBC's internal
// face, calls it through the SBC, whose outbound route sends it to the
// carrier pool; the sipfrag 200 reaches the carrier, which hangs up.
func TestSIPpBlindTransferByCarrier(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, ports := runTransferFlow(t, sipp, xferFlow{carrier: "uac_xfer_transferor", pbx: "uas_xfer_transferee", target: "uas_call", outbound: true})
	if !waitCalls(s, "answered", 2*sippCallsPerFlow, 5*time.Second) {
		t.Fatalf("sbc_calls_total: %v, want %d answered", callCounts(s), 2*sippCallsPerFlow)
	}
	if got := testutil.ToFloat64(s.Metrics().OutboundCalls.WithLabelValues("answered")); got != sippCallsPerFlow {
		t.Errorf("sbc_outbound_calls_total{answered} = %v, want %d (the transferred calls)", got, sippCallsPerFlow)
	}
	if got := transfers(s, "relay", "accepted"); got != sippCallsPerFlow {
		t.Errorf("sbc_transfers_total{relay,accepted} = %v, want %d", got, sippCallsPerFlow)
	}
	refers := 0
	for _, m := range msgs["pbx"] {
		if !m.sent && strings.HasPrefix(m.text, "REFER ") {
			refers++
			rt := sipHeader(m.text, "Refer-To")
			want := fmt.Sprintf("sip:+15551234567@127.0.0.1:%d", ports["int"])
			if !strings.Contains(rt, want) || strings.Contains(rt, strconv.Itoa(ports["carrier"])) {
				t.Errorf("PBX's Refer-To %q: want %s (the SBC's internal face), nothing of the carrier", rt, want)
			}
		}
	}
	if refers != sippCallsPerFlow {
		t.Errorf("the PBX got %d REFERs, want %d", refers, sippCallsPerFlow)
	}
	checkTopologyHiding(t, "pbx", msgs["pbx"], "carrier", msgs["carrier"], ports["pbx"], ports["int"])
}

// TestSIPpAttendedTransfer: the PBX has the carrier's call and a call
// out to +15551234567 (carrier pool "carrier-a"), and transfers the
// first to the second with a Refer-To whose Replaces names its dialog of
// the second call. The carrier gets Replaces mapped to the second call's
// dialog on the carrier side (nothing of the PBX's), its INVITE with it
// comes back through the SBC, which sends it to the holder of that
// dialog: the target gets an INVITE whose Replaces names exactly its own
// dialog of the second call.
func TestSIPpAttendedTransfer(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, ports := runTransferFlow(t, sipp, xferFlow{carrier: "uac_xfer_att_transferee", pbx: "uas_xfer_att_transferor",
		target: "uas_call", outbound: true, targetCalls: 2})
	if !waitCalls(s, "answered", 3*sippCallsPerFlow, 5*time.Second) {
		t.Fatalf("sbc_calls_total: %v, want %d answered", callCounts(s), 3*sippCallsPerFlow)
	}
	if got := transfers(s, "relay", "accepted"); got != sippCallsPerFlow {
		t.Errorf("sbc_transfers_total{relay,accepted} = %v, want %d", got, sippCallsPerFlow)
	}
	for _, m := range msgs["carrier"] {
		if !m.sent && strings.HasPrefix(m.text, "REFER ") {
			rt := sipHeader(m.text, "Refer-To")
			// The PBX's identifiers of its second dialog (Call-ID c2///…, from-tag p2tag-…) must not leak; the SBC's own random Call-ID may contain "c2" by chance (a CI failure).
			if !strings.Contains(rt, fmt.Sprintf("@127.0.0.1:%d?Replaces=", ports["ext"])) || strings.Contains(rt, "c2%2F%2F%2F") || strings.Contains(rt, "c2///") || strings.Contains(rt, "p2tag-") {
				t.Errorf("carrier's Refer-To %q: want the SBC's external face and a Replaces of the carrier side", rt)
			}
		}
	}
	// The target's dialogs of the second calls (INVITEs without
	// Replaces): Call-ID → the SBC's tag; the target's tag is uastag-*.
	second := map[string]string{}
	var replaced []string
	for _, m := range msgs["target"] {
		if m.sent || !strings.HasPrefix(m.text, "INVITE ") {
			continue
		}
		if r := sipHeader(m.text, "Replaces"); r != "" {
			replaced = append(replaced, r)
			continue
		}
		from := sipHeader(m.text, "From")
		_, tag, _ := strings.Cut(from, "tag=")
		tag, _, _ = strings.Cut(tag, ";")
		second[sipHeader(m.text, "Call-ID")] = tag
	}
	if len(second) != sippCallsPerFlow || len(replaced) != sippCallsPerFlow {
		t.Fatalf("target got %d second calls and %d INVITEs with Replaces, want %d each", len(second), len(replaced), sippCallsPerFlow)
	}
	for _, r := range replaced {
		cid, rest, _ := strings.Cut(r, ";")
		sbcTag, ok := second[cid]
		if !ok || !strings.Contains(rest, "from-tag="+sbcTag) || !strings.Contains(rest, "to-tag=uastag-") {
			t.Errorf("target got Replaces %q: want one of its second calls' dialogs %v (to-tag its own, from-tag the SBC's)", r, second)
		}
	}
	checkTopologyHiding(t, "carrier", msgs["carrier"], "pbx", msgs["pbx"], ports["carrier"], ports["ext"])
}

// TestSIPp3PCCTransfer: the PBX's pool has refer = "local": the PBX's
// REFER never reaches the carrier; the SBC answers 202, NOTIFYs 100,
// calls user 2000 (pool "target") itself, NOTIFYs 200 and hangs up the
// PBX's leg; the carrier's call goes on with the target, whose BYE
// reaches the carrier.
func TestSIPp3PCCTransfer(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, _ := runTransferFlow(t, sipp, xferFlow{carrier: "uac_callee_bye", pbx: "uas_xfer_local_transferor",
		target: "uas_answer_bye", pbxRefer: "local"})
	if !waitCalls(s, "answered", sippCallsPerFlow, 5*time.Second) {
		t.Fatalf("sbc_calls_total: %v, want %d answered (one call each, transferred)", callCounts(s), sippCallsPerFlow)
	}
	if got := transfers(s, "local", "completed"); got != sippCallsPerFlow {
		t.Errorf("sbc_transfers_total{local,completed} = %v, want %d", got, sippCallsPerFlow)
	}
	for _, m := range msgs["carrier"] {
		if strings.HasPrefix(m.text, "REFER ") || strings.HasPrefix(m.text, "INVITE ") && !m.sent {
			t.Errorf("the carrier saw a transfer: %s", strings.SplitN(m.text, "\n", 2)[0])
		}
	}
	invites := 0
	for _, m := range msgs["target"] {
		if !m.sent && strings.HasPrefix(m.text, "INVITE ") {
			invites++
			if !strings.Contains(m.text, "m=audio") {
				t.Errorf("the target's INVITE has no SDP offer")
			}
		}
	}
	if invites != sippCallsPerFlow {
		t.Errorf("the target got %d INVITEs, want %d", invites, sippCallsPerFlow)
	}
}
