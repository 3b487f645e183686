package sbc_test

// Outbound calls against SIPp: SIPp as the PBX (a target of pool "pbx" on
// the internal realm) → sbc → SIPp as carriers A and B (pools of the
// external realm, tried in that order). Carrier A demands digest
// authentication and verifies it (SIPp's verifyauth) or is out of service
// (503); deny prefixes are refused with a Reason.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

// startOutboundInteropSBC runs an SBC whose pool "pbx" is the SIPp PBX
// and whose outbound route sends "+" numbers to carrier-a (credentials
// acct/s3cret) then carrier-b; "+882" is denied.
func startOutboundInteropSBC(t *testing.T, pbxPort, aPort, bPort int, logs *syncBuffer) *sbc.SBC {
	t.Helper()
	pb := testpolicy.New("127.0.0.1", "127.0.0.1", fmt.Sprintf("127.0.0.1:%d", pbxPort)).UDPOnly()
	pb.Server.LogLevel = "debug"
	off := &testpolicy.Health{Interval: policy.D(0)}
	pb.Pools = append(pb.Pools,
		testpolicy.Pool{Name: "carrier-a", Realm: "external", Health: off,
			Targets: testpolicy.Targets(fmt.Sprintf("127.0.0.1:%d", aPort)),
			Auth:    &testpolicy.PoolAuth{Username: "acct", Password: "s3cret"}},
		testpolicy.Pool{Name: "carrier-b", Realm: "external", Health: off,
			Targets: testpolicy.Targets(fmt.Sprintf("127.0.0.1:%d", bPort))})
	pb.OutboundRoutes = []testpolicy.OutboundRoute{{Prefix: "+", Pools: []string{"carrier-a", "carrier-b"}}}
	pb.Outbound = &testpolicy.Outbound{DenyPrefixes: []string{"+882"}}
	pb.Routing.TargetTimeout = policy.D(time.Second)
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
	return s
}

type outboundFlow struct {
	uac, number string
	uasA, uasB  string // carrier scenarios ("": that carrier is not run)
}

// runOutboundFlow runs the carriers' SIPps, then the PBX's, each for
// sippCallsPerFlow calls, and fails unless every SIPp exits 0. It returns
// the SBC and the message logs by side ("uac", "a", "b").
func runOutboundFlow(t *testing.T, sipp string, f outboundFlow) (*sbc.SBC, map[string][]sipMessage, map[string]int) {
	dir := t.TempDir()
	ports := map[string]int{"uac": freeUDPPort(t), "a": freeUDPPort(t), "b": freeUDPPort(t)}
	logs := &syncBuffer{}
	s := startOutboundInteropSBC(t, ports["uac"], ports["a"], ports["b"], logs)
	intl, ok := s.ListenAddr("internal", "udp")
	if !ok {
		t.Fatal("no internal udp listener")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sippTimeout)
	defer cancel()
	common := []string{
		"-i", "127.0.0.1", "-m", strconv.Itoa(sippCallsPerFlow), "-nostdin",
		"-timeout", strconv.Itoa(int(sippTimeout/time.Second) - 5), "-timeout_error",
		"-trace_msg", "-trace_err",
	}
	type proc struct {
		p    *sippProc
		done chan error
	}
	carriers := map[string]*proc{}
	for _, side := range []string{"a", "b"} {
		sc := f.uasA
		if side == "b" {
			sc = f.uasB
		}
		if sc == "" {
			continue
		}
		p := newSIPp(ctx, sipp, append([]string{
			"-sf", filepath.Join("testdata", "sipp", sc+".xml"), "-p", strconv.Itoa(ports[side]),
			"-message_file", filepath.Join(dir, side+"_messages.log"), "-error_file", filepath.Join(dir, side+"_errors.log"),
		}, common...))
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start sipp carrier %s: %v", side, err)
		}
		pr := &proc{p: p, done: make(chan error, 1)}
		go func() { pr.done <- p.cmd.Wait() }()
		waitUDPBound(t, ports[side], pr.done)
		carriers[side] = pr
	}
	uac := newSIPp(ctx, sipp, append([]string{
		"-sf", filepath.Join("testdata", "sipp", f.uac+".xml"), intl.String(),
		"-p", strconv.Itoa(ports["uac"]), "-s", f.number, "-r", "10", "-l", "1",
		"-cid_str", "uaccid-%u-%p@%s",
		"-message_file", filepath.Join(dir, "uac_messages.log"), "-error_file", filepath.Join(dir, "uac_errors.log"),
	}, common...))
	uacErr := uac.cmd.Run()
	if uacErr != nil {
		cancel()
	}
	errs := map[string]error{"uac": uacErr}
	for side, pr := range carriers {
		errs[side] = <-pr.done
	}
	dump := func() {
		t.Logf("sipp pbx output:\n%s", tail(uac.out.String(), 3000))
		for side, pr := range carriers {
			t.Logf("sipp carrier %s output:\n%s", side, tail(pr.p.out.String(), 3000))
		}
		for _, n := range []string{"uac_errors.log", "a_errors.log", "b_errors.log", "uac_messages.log", "a_messages.log", "b_messages.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				t.Logf("%s:\n%s", n, tail(string(b), 6000))
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
	msgs := map[string][]sipMessage{"uac": readSIPpLog(t, filepath.Join(dir, "uac_messages.log"))}
	for side := range carriers {
		msgs[side] = readSIPpLog(t, filepath.Join(dir, side+"_messages.log"))
	}
	ports["int"] = int(intl.Port())
	return s, msgs, ports
}

func outboundCalls(s *sbc.SBC, result string) float64 {
	return testutil.ToFloat64(s.Metrics().OutboundCalls.WithLabelValues(result))
}

func waitOutbound(t *testing.T, s *sbc.SBC, result string, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for outboundCalls(s, result) != n {
		if time.Now().After(deadline) {
			t.Fatalf("sbc_outbound_calls_total{result=%q} = %v, want %v", result, outboundCalls(s, result), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSIPpOutboundDigestAuth: the carrier challenges every call and
// verifies the SBC's digest answer; every call is answered through it.
func TestSIPpOutboundDigestAuth(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, ports := runOutboundFlow(t, sipp, outboundFlow{uac: "uac_call", number: "+442079460000", uasA: "uas_out_auth"})
	waitOutbound(t, s, "answered", sippCallsPerFlow)
	if got := testutil.ToFloat64(s.Metrics().CarrierAuth.WithLabelValues("carrier-a", "answered")); got != sippCallsPerFlow {
		t.Errorf("sbc_carrier_auth_total{carrier-a,answered} = %v, want %d", got, sippCallsPerFlow)
	}
	checkTopologyHiding(t, "uac", msgs["uac"], "carrier a", msgs["a"], ports["uac"], ports["int"])
}

// TestSIPpOutboundFailover: carrier A answers 503, carrier B takes every
// call.
func TestSIPpOutboundFailover(t *testing.T) {
	sipp := requireSIPp(t)
	s, msgs, ports := runOutboundFlow(t, sipp, outboundFlow{uac: "uac_call", number: "+15551234567", uasA: "uas_out_503", uasB: "uas_call"})
	waitOutbound(t, s, "answered", sippCallsPerFlow)
	if got := testutil.ToFloat64(s.Metrics().Failovers.WithLabelValues("carrier-b")); got != sippCallsPerFlow {
		t.Errorf("sbc_backend_failovers_total{carrier-b} = %v, want %d", got, sippCallsPerFlow)
	}
	checkTopologyHiding(t, "uac", msgs["uac"], "carrier b", msgs["b"], ports["uac"], ports["int"])
}

// TestSIPpOutboundDenied: a denied destination is refused 403 with a
// Reason (the scenario checks it) and never reaches a carrier.
func TestSIPpOutboundDenied(t *testing.T) {
	sipp := requireSIPp(t)
	s, _, _ := runOutboundFlow(t, sipp, outboundFlow{uac: "uac_out_denied", number: "+88212345"})
	if got := dropCounts(s)["route/denied_destination"]; got != sippCallsPerFlow {
		t.Errorf("sbc_dropped_total{route,denied_destination} = %v, want %d (all: %v)", got, sippCallsPerFlow, dropCounts(s))
	}
	waitOutbound(t, s, "no_route", sippCallsPerFlow)
}
