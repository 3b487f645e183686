package sbc_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbc-project/sbc/bench"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

// TestSIPpExamplePolicy50CPS runs the shipped example policy, unchanged
// (policy.Default() is sbc.example.toml), on its own ports: SIPp's
// built-in uac on 127.0.0.1 (the example's trunk "local") calls
// 127.0.0.1:5060 at 50 calls/s for 30 s, SIPp's built-in uas on
// 127.0.0.1:5080 (the example's pool "pbx") answers. Every call must
// succeed: SIPp counts 1500 successful and no failed call, and the SBC
// counts 1500 answered calls on its admin listener (127.0.0.1:9090).
//
// Two defaults of the example used to lose calls here: source_cps = 10
// limited the trunk's single source (5-14 % of the calls got 503), and
// SIPp's uas never answers OPTIONS (it aborts them as unexpected
// messages), so the 5 s health check took the target down after three
// pings and every later call got 503. Trunks are now limited by their own
// cps and max_calls only, and answered calls keep the target up.
func TestSIPpExamplePolicy50CPS(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s SIPp load run")
	}
	sippBin := requireSIPp(t)
	const (
		rate  = 50
		calls = 1500 // 30 s at 50 calls/s
	)
	p := policy.Default()
	ext, uasAddr := "127.0.0.1:5060", "127.0.0.1:5080"
	if len(p.Pools) != 1 || len(p.Pools[0].Targets) != 1 || p.Pools[0].Targets[0].Addr.String() != uasAddr || p.Admin.Listen != "127.0.0.1:9090" {
		t.Fatalf("the example policy changed: pools %+v, admin %q", p.Pools, p.Admin.Listen)
	}
	dir := t.TempDir()
	// Hard bound of the whole run; SIPp's own -timeout is shorter so that
	// it reports a stuck run itself.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// The callee first, so that the first health ping finds it.
	uasCtx, stopUAS := context.WithCancel(ctx)
	defer stopUAS()
	uas := newSIPp(uasCtx, sippBin, []string{
		"-sn", "uas", "-i", "127.0.0.1", "-p", "5080", "-nostdin",
		"-timeout", "120", "-trace_err", "-error_file", filepath.Join(dir, "uas_errors.log"),
	})
	if err := uas.cmd.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	uasDone := make(chan error, 1)
	go func() { uasDone <- uas.cmd.Wait() }()
	defer func() { stopUAS(); <-uasDone }()
	waitUDPBound(t, 5080, uasDone)

	logs := &syncBuffer{}
	// The example's ports are fixed: a test of another package running at
	// the same moment may hold one for a while. Retry a bounded time.
	var s *sbc.SBC
	for deadline := time.Now().Add(20 * time.Second); ; {
		var err error
		s, err = sbc.New(p, sbc.Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			t.Fatalf("sbc.New: %v", err)
		}
		err = s.Start(ctx)
		if err == nil {
			break
		}
		s.Close()
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("start the SBC on the example's ports (5060, 5062, 9090 on 127.0.0.1 taken by another SBC?): %v", err)
		}
		t.Logf("an example port is in use, retrying: %v", err)
		time.Sleep(500 * time.Millisecond)
	}
	defer s.Close()
	metricsURL := "http://" + p.Admin.Listen + "/metrics"

	statFile := filepath.Join(dir, "uac_stats.csv")
	uac := newSIPp(ctx, sippBin, []string{
		"-sn", "uac", ext, "-i", "127.0.0.1", "-p", strconv.Itoa(freeUDPPort(t)), "-nostdin",
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls), "-l", "500",
		"-recv_timeout", "10000", "-timeout", "100", "-timeout_error",
		"-trace_stat", "-stf", statFile, "-fd", "1",
		"-trace_err", "-error_file", filepath.Join(dir, "uac_errors.log"),
	})
	uacErr := uac.cmd.Run()

	dump := func() {
		t.Logf("sipp uac output:\n%s", tail(uac.out.String(), 3000))
		for _, n := range []string{"uac_errors.log", "uas_errors.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				t.Logf("%s:\n%s", n, tail(string(b), 3000))
			}
		}
		t.Logf("sbc log:\n%s", tail(logs.String(), 6000))
	}
	b, err := os.ReadFile(statFile)
	if err != nil {
		dump()
		t.Fatalf("sipp uac statistics: %v (exit: %v)", err, uacErr)
	}
	st, err := bench.ParseSIPpStats(b)
	if err != nil {
		dump()
		t.Fatalf("sipp uac statistics: %v", err)
	}
	t.Logf("sipp uac: %d created, %d successful, %d failed, %d retransmissions, %.1f calls/s, setup %s",
		st.Created, st.Successful, st.Failed, st.Retransmissions, st.CallRate, st.SetupAvg)
	if uacErr != nil || st.Created != calls || st.Successful != calls || st.Failed != 0 {
		dump()
		t.Fatalf("sipp uac: exit %v, %d of %d calls created, %d successful, %d failed; want all %d successful",
			uacErr, st.Created, calls, st.Successful, st.Failed, calls)
	}

	// The SBC counts a call when it ends, a moment after SIPp's last 200.
	var m bench.Metrics
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m, err = bench.Scrape(ctx, metricsURL); err != nil {
			t.Fatalf("scrape %s: %v", metricsURL, err)
		}
		if m.ByLabel("sbc_calls_total", "result")["answered"] >= calls || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	results := m.ByLabel("sbc_calls_total", "result")
	drops := m.ByLabel("sbc_dropped_total", "stage", "reason")
	t.Logf("sbc: calls %v, drops %v, target up %v", results, nonZero(drops), m.ByLabel("sbc_backend_target_up", "target"))
	if results["answered"] != calls || len(nonZero(results)) != 1 {
		dump()
		t.Fatalf("sbc_calls_total: %v, want %d answered and nothing else", results, calls)
	}
	for k, v := range drops {
		if v != 0 && (strings.HasPrefix(k, "admit/") || k == "route/no_target") {
			t.Errorf("sbc_dropped_total{%s} = %v", k, v)
		}
	}
}

func nonZero(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
