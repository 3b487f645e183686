package bench

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/policy"
)

func TestParseSNMP(t *testing.T) {
	in := `Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 752313 48896 13643 815702 13640 3 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`
	got, err := parseSNMP([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := UDPStats{InDatagrams: 752313, NoPorts: 48896, InErrors: 13643, RcvbufErrors: 13640, SndbufErrors: 3}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if d := want.Sub(UDPStats{InDatagrams: 13, RcvbufErrors: 40}); d.RcvbufErrors != 13600 || d.InDatagrams != 752300 {
		t.Fatalf("Sub: %+v", d)
	}
	for _, bad := range []string{"", "Udp: A B\nUdp: 1\n", "Udp: RcvbufErrors\nUdp: x\n"} {
		if _, err := parseSNMP([]byte(bad)); err == nil {
			t.Errorf("parseSNMP(%q): no error", bad)
		}
	}
}

func TestReadUDPStatsLive(t *testing.T) {
	if _, err := os.Stat("/proc/net/snmp"); err != nil {
		t.Skip("no /proc/net/snmp")
	}
	if _, err := ReadUDPStats(); err != nil {
		t.Fatal(err)
	}
}

func TestParseUDPDrops(t *testing.T) {
	in := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1511: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 162491 2 000000005c73b173 17
 3131: 0100007F:13C6 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 162492 2 00000000f5e5bdaa 0
 3132: 0100007F:2710 0100007F:13C4 01 00000000:00000000 00:00000000 00000000     0        0 162493 2 00000000f5e5bdab 5
`
	got, err := parseUDPDrops([]byte(in), 5060, 5062, 9999)
	if err != nil {
		t.Fatal(err)
	}
	// 5060 (0x13C4) as a local port only: the third line's remote port
	// does not count.
	want := map[int]uint64{5060: 17, 5062: 0}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP sbc_calls_total Finished calls by result.
# TYPE sbc_calls_total counter
sbc_calls_total{result="answered"} 1000
sbc_calls_total{result="busy"} 2
sbc_dropped_total{reason="stray_ack",stage="dialog"} 21
sbc_dropped_total{reason="too_large",stage="filter"} 1e+00
process_cpu_seconds_total 2.5
sbc_calls_active 0
weird{label="a b"} 7 1700000000
`
	m, err := ParseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.ByLabel("sbc_calls_total", "result"); !reflect.DeepEqual(got, map[string]float64{"answered": 1000, "busy": 2}) {
		t.Errorf("ByLabel result: %v", got)
	}
	if got := m.ByLabel("sbc_dropped_total", "stage", "reason"); !reflect.DeepEqual(got, map[string]float64{"dialog/stray_ack": 21, "filter/too_large": 1}) {
		t.Errorf("ByLabel stage/reason: %v", got)
	}
	if got := m.Sum("sbc_dropped_total"); got != 22 {
		t.Errorf("Sum dropped: %v", got)
	}
	if got := m.Sum("process_cpu_seconds_total"); got != 2.5 {
		t.Errorf("Sum cpu: %v", got)
	}
	if got := m[`weird{label="a b"}`]; got != 7 {
		t.Errorf("label with space: %v", got)
	}
	before := Metrics{`sbc_calls_total{result="answered"}`: 400}
	if d := Delta(before, m); d[`sbc_calls_total{result="answered"}`] != 600 || d["process_cpu_seconds_total"] != 2.5 {
		t.Errorf("Delta: %v", d)
	}
	if _, err := ParseMetrics(strings.NewReader("x{a=\"b\"}\n")); err == nil {
		t.Error("no error for a sample without value")
	}
}

func TestParseSIPpStats(t *testing.T) {
	b, err := os.ReadFile("testdata/sipp-stats.csv")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSIPpStats(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Created != 1000 || s.Successful != 1000 || s.Failed != 0 || s.Retransmissions != 0 {
		t.Errorf("counters: %+v", s)
	}
	if s.CallRate < 196.6 || s.CallRate > 196.7 {
		t.Errorf("CallRate %v", s.CallRate)
	}
	if s.SetupAvg != 79*time.Millisecond || s.CallLengthAvg != 123*time.Millisecond || s.Elapsed != 5*time.Second {
		t.Errorf("durations: setup %v, length %v, elapsed %v", s.SetupAvg, s.CallLengthAvg, s.Elapsed)
	}
	if _, err := ParseSIPpStats([]byte("OutgoingCall(C)\n")); err == nil {
		t.Error("header only: no error")
	}
	if _, err := ParseSIPpStats([]byte("A;B\n1;2\n")); err == nil {
		t.Error("missing columns: no error")
	}
}

func TestParseSIPpDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"00:00:05":        5 * time.Second,
		"01:02:03:000400": time.Hour + 2*time.Minute + 3*time.Second + 400*time.Microsecond,
	} {
		if got, err := parseSIPpDuration(in); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "5", "00:00:x", "00:-1:00"} {
		if _, err := parseSIPpDuration(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestSearch drives the bisection with a fake SBC whose limit is known.
func TestSearch(t *testing.T) {
	for _, tc := range []struct {
		limit, start, max, prec, steps int
		want                           int
		bracketed                      bool
	}{
		{limit: 1234, start: 100, max: 10000, steps: 20, want: 1200, bracketed: true},
		{limit: 1234, start: 100, max: 10000, prec: 10, steps: 20, want: 1231, bracketed: true},
		{limit: 50, start: 100, max: 10000, steps: 20, want: 50, bracketed: true},
		{limit: 0, start: 100, max: 10000, steps: 20, want: 0, bracketed: true},
		{limit: 99999, start: 100, max: 1000, steps: 20, want: 1000, bracketed: false},
		{limit: 1234, start: 100, max: 10000, steps: 3, want: 400, bracketed: false},
	} {
		var tried []int
		got, br, err := search(tc.start, tc.max, tc.prec, tc.steps, func(r int) (bool, error) {
			tried = append(tried, r)
			return r <= tc.limit, nil
		})
		if err != nil || got != tc.want || br != tc.bracketed || len(tried) > tc.steps {
			t.Errorf("limit %d: got %d bracketed %v err %v after %v; want %d bracketed %v",
				tc.limit, got, br, err, tried, tc.want, tc.bracketed)
		}
		for _, r := range tried {
			if r < 1 || r > tc.max {
				t.Errorf("limit %d: tried rate %d out of [1,%d]", tc.limit, r, tc.max)
			}
		}
	}
	boom := errors.New("harness broke")
	if _, _, err := search(100, 1000, 0, 10, func(int) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("error not returned: %v", err)
	}
}

func TestJudge(t *testing.T) {
	cfg := MaxCPSConfig{MinRateRatio: 0.95}
	ok := Step{Rate: 100, Calls: 2000, SIPp: SIPpStats{Created: 2000, Successful: 2000, CallRate: 99.5},
		SBCCalls: map[string]float64{"answered": 2000}}
	ok.judge(cfg)
	if !ok.Pass || ok.Why != "" {
		t.Fatalf("clean step failed: %s", ok.Why)
	}
	for name, mut := range map[string]func(*Step){
		"failed calls": func(s *Step) { s.SIPp.Failed = 1; s.SIPp.Successful = 1999 },
		"sipp exit":    func(s *Step) { s.UACExit = 1 },
		"short":        func(s *Step) { s.SIPp.Successful = 1990 },
		"sbc lost":     func(s *Step) { s.SBCCalls["answered"] = 1999 },
		"slow sipp":    func(s *Step) { s.SIPp.CallRate = 80 },
		"harness note": func(s *Step) { s.Why = "no sipp statistics" },
	} {
		s := ok
		s.Why = ""
		s.SBCCalls = map[string]float64{"answered": 2000}
		mut(&s)
		s.judge(cfg)
		if s.Pass || s.Why == "" {
			t.Errorf("%s: passed", name)
		}
	}
}

// TestPolicyTOMLValid: the generated policy is accepted by the policy
// package and names the ports it was given.
func TestPolicyTOMLValid(t *testing.T) {
	pt := benchPorts{External: 40001, Internal: 40002, Admin: 40003, UAS: 40004, UAC: 40005}
	p, err := policy.Parse("bench.toml", []byte(policyTOML(pt, "warn")))
	if err != nil {
		t.Fatal(err)
	}
	if p.Admin.Listen != "127.0.0.1:40003" || p.Server.LogLevel != "warn" {
		t.Errorf("admin %q level %q", p.Admin.Listen, p.Server.LogLevel)
	}
	if len(p.Pools) != 1 || len(p.Pools[0].Targets) != 1 || p.Pools[0].Targets[0].Address != "127.0.0.1:40004" {
		t.Errorf("pools: %+v", p.Pools)
	}
}

// The side-by-side harness's policy anchors media only when asked
// (-sbc-anchor); the max-CPS policy keeps the default (anchored).
func TestPolicyTOMLMediaAnchor(t *testing.T) {
	pt := benchPorts{External: 40001, Internal: 40002, Admin: 40003, UAS: 40004, UAC: 40005}
	for _, c := range []struct {
		toml string
		want bool
	}{
		{policyTOML(pt, "warn"), true},
		{policyTOMLMedia(pt, "warn", true), true},
		{policyTOMLMedia(pt, "warn", false), false},
	} {
		p, err := policy.Parse("bench.toml", []byte(c.toml))
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Media.Anchored(); got != c.want {
			t.Errorf("media anchored %v, want %v", got, c.want)
		}
	}
}

func TestScenariosEmbedded(t *testing.T) {
	dir := t.TempDir()
	uac, uas, err := writeScenarios(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{uac, uas} {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "<scenario") {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestMaxCPSShort runs a real, short search (SIPp and the in-process SBC)
// when SBC_BENCH=1: a few steps of 2 s between 50 and 200 calls/s.
func TestMaxCPSShort(t *testing.T) {
	if os.Getenv("SBC_BENCH") != "1" {
		t.Skip("set SBC_BENCH=1 to run the SIPp max-CPS search")
	}
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatal("sipp not installed (Debian package sip-tester)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := MaxCPS(ctx, MaxCPSConfig{
		Duration: 2 * time.Second, StartRate: 50, MaxRate: 200, MaxSteps: 4,
		LogLevel: "warn", WorkDir: t.TempDir(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s\n%s", progress.String(), table.String())
	if len(res.Steps) == 0 || res.Steps[0].Rate != 50 {
		t.Fatalf("steps: %+v", res.Steps)
	}
	if !res.Steps[0].Pass {
		t.Errorf("50 calls/s failed: %s", res.Steps[0].Why)
	}
	if res.Steps[0].SBCCalls["answered"] != 100 {
		t.Errorf("sbc answered %v of 100", res.Steps[0].SBCCalls["answered"])
	}
}

// Kamailio's pool is 4 GB where the machine has room for it, a third of
// the memory available where not, and never below 256 MB.
func TestDefaultKamailioShmMB(t *testing.T) {
	for _, c := range []struct{ avail, want int }{
		{0, 4096},       // unknown
		{24000, 4096},   // this VM
		{12288, 4096},   // exactly three times
		{6000, 2000},    // a small machine
		{600, 256},      // a tiny one
		{1 << 20, 4096}, // a big one
	} {
		if got := defaultKamailioShmMB(c.avail); got != c.want {
			t.Errorf("defaultKamailioShmMB(%d) = %d, want %d", c.avail, got, c.want)
		}
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		if mb := memAvailableMB(); mb <= 0 {
			t.Errorf("MemAvailable not read from /proc/meminfo (%d)", mb)
		}
	}
}
