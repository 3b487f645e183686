package sbc_test

// The SBC's registration with a carrier, against SIPp as the carrier's
// registrar (testdata/sipp/uas_registrar.xml): digest challenge verified
// by SIPp, refresh at the short granted expiry, a 503 on a refresh and
// the registration again after the backoff, the unregistration at Close.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

func TestSIPpOutboundRegistration(t *testing.T) {
	sipp := requireSIPp(t)
	dir := t.TempDir()
	port := freeUDPPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), sippTimeout)
	defer cancel()
	reg := newSIPp(ctx, sipp, []string{
		"-sf", filepath.Join("testdata", "sipp", "uas_registrar.xml"), "-p", strconv.Itoa(port),
		"-i", "127.0.0.1", "-m", "1", "-nostdin",
		"-timeout", strconv.Itoa(int(sippTimeout/time.Second) - 5), "-timeout_error",
		"-trace_msg", "-trace_err",
		"-message_file", filepath.Join(dir, "messages.log"), "-error_file", filepath.Join(dir, "errors.log"),
	})
	if err := reg.cmd.Start(); err != nil {
		t.Fatalf("start sipp: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- reg.cmd.Wait() }()
	waitUDPBound(t, port, done)

	pb := testpolicy.New("127.0.0.1", "127.0.0.1", "127.0.0.1:1").UDPOnly()
	pb.Pools = append(pb.Pools, testpolicy.Pool{Name: "carrier-a", Realm: "external",
		Health:  &testpolicy.Health{Interval: policy.D(0)},
		Targets: testpolicy.Targets(fmt.Sprintf("127.0.0.1:%d", port)),
		Auth:    &testpolicy.PoolAuth{Username: "acct", Password: "s3cret"},
		Extra:   "[pool.register]\nuser = \"reguser\"\nexpires = \"60s\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n"})
	logs := &syncBuffer{}
	var mu sync.Mutex
	var states []string
	s, err := sbc.New(pb.Parse(t), sbc.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Events: events.Func(func(e events.Event) {
			if e.Kind == events.OutboundRegistration {
				mu.Lock()
				states = append(states, e.Reason+"/"+e.Detail["pool"])
				mu.Unlock()
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	dump := func() {
		t.Logf("sipp output:\n%s", tail(reg.out.String(), 3000))
		for _, n := range []string{"errors.log", "messages.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				t.Logf("%s:\n%s", n, tail(string(b), 8000))
			}
		}
		t.Logf("sbc log:\n%s", tail(logs.String(), 8000))
	}
	target := fmt.Sprintf("127.0.0.1:%d", port)
	up := func() float64 {
		return testutil.ToFloat64(s.Metrics().OutboundRegistered.WithLabelValues("carrier-a", target))
	}
	fails := func() float64 {
		return testutil.ToFloat64(s.Metrics().OutboundRegFailures.WithLabelValues("carrier-a", "unavailable"))
	}
	oks := func() float64 { return testutil.ToFloat64(s.Metrics().Responses.WithLabelValues("external", "2xx")) }
	// Registered, refused once on the refresh, registered again, and
	// refreshed: three 2xx.
	deadline := time.Now().Add(20 * time.Second)
	for !(oks() >= 3 && fails() == 1 && up() == 1) {
		select {
		case err := <-done:
			dump()
			t.Fatalf("sipp ended early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			dump()
			t.Fatalf("2xx %v, failures{unavailable} %v, up %v: want 3, 1, 1", oks(), fails(), up())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Close() // unregisters
	closed = true
	select {
	case err := <-done:
		if err != nil {
			dump()
			t.Fatalf("sipp failed: %v (exit 0: every REGISTER was as the scenario expects)", err)
		}
	case <-ctx.Done():
		dump()
		t.Fatal("sipp did not see the unregistration")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"registered/carrier-a", "failed/carrier-a", "registered/carrier-a", "unregistered/carrier-a"}; !slices.Equal(states, want) {
		t.Errorf("outbound_registration events %v, want %v", states, want)
	}
}
