package media

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/sbc-project/sbc/srtp"
)

// requireRoot skips without root, or fails with SBC_REQUIRE_PRIV=1 (CI).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("SBC_REQUIRE_PRIV") == "1" {
		t.Fatal("test needs root and SBC_REQUIRE_PRIV=1")
	}
	t.Skip("test needs root (set SBC_REQUIRE_PRIV=1 to make this a failure)")
}

func TestMain(m *testing.M) {
	RunChildIfAsked()
	os.Exit(m.Run())
}

func TestBencodeRoundTrip(t *testing.T) {
	in := map[string]any{"command": "offer", "call-id": "c1", "flags": []string{"trust-address"}, "n": 42,
		"nested": map[string]any{"b": []any{"x", int64(-3)}, "a": ""}}
	var buf bytes.Buffer
	if err := encodeBencode(&buf, in); err != nil {
		t.Fatal(err)
	}
	// Keys sorted, as BEP 3 requires.
	const want = "d7:call-id2:c17:command5:offer5:flagsl13:trust-addresse1:ni42e6:nestedd1:a0:1:bl1:xi-3eeee"
	if buf.String() != want {
		t.Fatalf("encoded %q, want %q", buf.String(), want)
	}
	v, rest, err := decodeBencode(buf.Bytes())
	if err != nil || len(rest) != 0 {
		t.Fatal(err, rest)
	}
	got := v.(map[string]any)
	if got["command"] != "offer" || got["n"] != int64(42) ||
		!reflect.DeepEqual(got["flags"], []any{"trust-address"}) ||
		!reflect.DeepEqual(got["nested"], map[string]any{"a": "", "b": []any{"x", int64(-3)}}) {
		t.Fatalf("%#v", got)
	}
}

func TestBencodeMalformed(t *testing.T) {
	deep := bytes.Repeat([]byte("l"), 100)
	for _, in := range []string{"", "i12", "ixe", "5:abc", "-1:a", "l", "d1:a", "di1ei2ee", "x", "3", string(deep)} {
		if _, _, err := decodeBencode([]byte(in)); !errors.Is(err, errBencode) {
			t.Errorf("%q: %v, want errBencode", in, err)
		}
	}
	if err := encodeBencode(&bytes.Buffer{}, 1.5); err == nil {
		t.Error("a float encoded")
	}
}

func TestSDPPort(t *testing.T) {
	p, err := sdpPort("v=0\r\nm=audio 40002 RTP/AVP 0\r\n")
	if err != nil || p != 40002 {
		t.Fatal(p, err)
	}
	if _, err := sdpPort("v=0\r\n"); err == nil {
		t.Fatal("no m= line accepted")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) of a stat line whose name has a
	// space and a parenthesis.
	line := "1234 (rtp engine) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 5 0 100 0 0"
	d, err := parseStatCPU(line)
	if err != nil || d != 320*clockTick {
		t.Fatal(d, err)
	}
	if _, err := parseStatCPU("1234 (x) S 1"); err == nil {
		t.Fatal("short line accepted")
	}
	self, err := ProcCPU(os.Getpid())
	if err != nil || self <= 0 {
		t.Fatal(self, err)
	}
}

func smoke(t *testing.T, sc Scenario) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Run(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: sent %d, received %d, phone errors %d, relay CPU %v (%.1f µs/packet), generator %.1f µs/packet, p99 %v",
		sc.Name, r.Sent, r.Received, r.PhoneErrors, r.RelayCPU, r.RelayUSPerPacket(), r.GenUSPerPacket(), r.P99)
	dirs := uint64(1)
	if sc.Both {
		dirs = 2
	}
	if want := uint64(sc.Calls*sc.PPS) * dirs * uint64(sc.Duration/time.Second); r.Sent != want {
		t.Errorf("sent %d packets, want %d", r.Sent, want)
	}
	if r.Received != r.Sent || r.PhoneErrors != 0 {
		t.Errorf("sent %d, received %d, %d phone errors", r.Sent, r.Received, r.PhoneErrors)
	}
	if sc.Relay != RelayNone && !sc.Kernel && r.RelayCPU <= 0 { // the kernel path may cost its process nothing
		t.Errorf("no relay CPU measured")
	}
	return r
}

// TestRelaySmoke runs the harness with the SBC's relay as a child
// process, briefly: every packet must cross the relay (in both
// directions), decrypt at the far phone, and the relay must count
// exactly what was sent, with no drop. It runs in CI; the measurements
// are for BENCHMARKS.md (TestCompare).
func TestRelaySmoke(t *testing.T) {
	for _, sc := range []Scenario{
		{Name: "plain", A: Plain, B: Plain},
		{Name: "sdes-dtls", A: SDES, B: DTLS},
		{Name: "dtls-plain", A: DTLS, B: Plain},
		{Name: "sdes-plain-per-call-sockets", A: SDES, B: Plain, PerCallSockets: true},
		{Name: "plain-per-socket-readers", A: Plain, B: Plain, RelayOpts: srtp.RelayOptions{PerSocket: true}},
		{Name: "plain-coalesced", A: Plain, B: Plain, RelayOpts: srtp.RelayOptions{Coalesce: time.Millisecond, CoalesceMin: 1}},
		{Name: "plain-kernel", A: Plain, B: Plain, Kernel: true},
	} {
		t.Run(sc.Name, func(t *testing.T) {
			if sc.Kernel {
				// The child attaches srtp/kfwd to this namespace's lo
				// (only exact flows of its own are touched; detached when
				// it exits).
				requireRoot(t)
			}
			sc.Relay, sc.Calls, sc.PPS, sc.Both, sc.Duration = RelaySBC, 4, 50, true, time.Second
			r := smoke(t, sc)
			st := r.Stats
			// The relay saw the warm-up packets (one per flow) and the run.
			if want := r.Sent + uint64(2*sc.Calls); st.Packets != want || st.Forwarded != want || len(st.Dropped) != 0 {
				t.Errorf("relay counted %d packets, %d forwarded, drops %v; want %d", st.Packets, st.Forwarded, st.Dropped, want)
			}
			if sc.Kernel && st.Offloaded == 0 {
				t.Errorf("kernel path relayed nothing: %+v", st)
			}
			if !sc.Kernel && st.Offloaded != 0 {
				t.Errorf("offloaded %d without a kernel path", st.Offloaded)
			}
			if sc.A == DTLS || sc.B == DTLS {
				if st.DTLSDone != sc.Calls || len(st.DTLSFailed) != 0 {
					t.Errorf("DTLS: %d done, failed %v", st.DTLSDone, st.DTLSFailed)
				}
			}
			if st.Mem.Goroutines <= r.Before.Goroutines || st.Mem.HeapAlloc == 0 {
				t.Errorf("memory before %+v, after %+v", r.Before, st.Mem)
			}
		})
	}
}

// needRTPEngine skips without rtpengine outside CI; in CI (which installs
// it) its absence fails.
func needRTPEngine(t *testing.T) {
	t.Helper()
	if _, err := LookRTPEngine(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("rtpengine not installed in CI (.ci/run installs rtpengine-daemon): %v", err)
		}
		t.Skipf("rtpengine not installed (apt-get install rtpengine-daemon): %v", err)
	}
}

// TestRTPEngineSmoke drives Debian's rtpengine the way TestCompare does,
// briefly: started on loopback in userspace, two calls anchored with ng
// offer/answer, every packet relayed both ways.
func TestRTPEngineSmoke(t *testing.T) {
	needRTPEngine(t)
	smoke(t, Scenario{Name: "rtpengine", Relay: RelayRTPEngine, A: Plain, B: Plain, Calls: 4, PPS: 50, Both: true, Duration: time.Second})
}

// TestRTPEngineNG checks the ng client against the daemon: ping, an
// offer/answer that rewrites both SDPs to its own ports, an error reply,
// delete.
func TestRTPEngineNG(t *testing.T) {
	needRTPEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartRTPEngine(ctx, RTPEngineConfig{PortMin: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a, b := mustAddr(t, "127.0.0.1:30000"), mustAddr(t, "127.0.0.1:30002")
	la, lb, err := e.Call(ctx, "ng-test", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if la == lb || la.Port() == a.Port() || lb.Port() == b.Port() || la.Port()%2 != 0 {
		t.Fatalf("rtpengine ports %v %v", la, lb)
	}
	if _, err := e.Command(ctx, map[string]any{"command": "answer", "call-id": "no-such-call", "from-tag": "x", "to-tag": "y", "sdp": plainSDP(a)}); err == nil {
		t.Fatal("an answer without an offer succeeded")
	}
	if err := e.Delete(ctx, "ng-test"); err != nil {
		t.Fatal(err)
	}
}

func mustAddr(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCompareShort is the side-by-side comparison and a two-step
// capacity run, short, when SBC_BENCH=1; the figures in BENCHMARKS.md
// come from bench/cmd/mediabench with longer runs.
func TestCompareShort(t *testing.T) {
	if os.Getenv("SBC_BENCH") != "1" {
		t.Skip("set SBC_BENCH=1 to run the media relay comparison")
	}
	needRTPEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := CompareConfig{Calls: 50, PPS: 50, Duration: 2 * time.Second, Rounds: 1, Log: testWriter{t}}
	rs, err := Compare(ctx, cfg, CompareScenarios(cfg))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	CompareTable(&b, rs)
	cfg.Procs = 1
	caps, err := Capacity(ctx, cfg, []int{50, 100})
	if err != nil {
		t.Fatal(err)
	}
	CapacityTable(&b, caps)
	t.Log("\n" + b.String())
	for _, group := range rs {
		for _, r := range group {
			if r.Lost() > r.Sent/100 || r.PhoneErrors != 0 {
				t.Errorf("%s: %s", r.Scenario.Name, r.Line())
			}
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
