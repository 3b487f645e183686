package media

import (
	"context"
	"fmt"
	"github.com/sbc-project/sbc/srtp"
	"io"
	"slices"
	"time"
)

// CompareConfig is the side-by-side run: the same phones and packet rate
// through each relay, in Rounds rounds whose scenario order rotates (so
// load from elsewhere on the machine spreads over all of them).
type CompareConfig struct {
	Calls    int
	PPS      int
	Duration time.Duration
	Rounds   int
	// Procs is GOMAXPROCS of the SBC relay child; RTPEngineThreads
	// rtpengine's --num-threads.
	Procs, RTPEngineThreads int
	// PerCallSockets: see Scenario.
	PerCallSockets bool
	// Relay: see Scenario.
	Relay srtp.RelayOptions
	// Kernel adds the scenario "sbc plain (kernel)": the SBC relay with
	// its in-kernel path (Scenario.Kernel; root).
	Kernel bool
	// Log, if set, gets one line per run.
	Log io.Writer
}

// CompareScenarios are the runs of Compare: the phones alone, then plain
// RTP through rtpengine and through the SBC, and the SBC bridging SDES to
// DTLS-SRTP (rtpengine's side of that comparison is its plain relay).
func CompareScenarios(cfg CompareConfig) []Scenario {
	base := Scenario{Calls: cfg.Calls, PPS: cfg.PPS, Both: true, Duration: cfg.Duration, Procs: cfg.Procs,
		RTPEngineThreads: cfg.RTPEngineThreads, PerCallSockets: cfg.PerCallSockets, RelayOpts: cfg.Relay, IdleWindow: 500 * time.Millisecond}
	var out []Scenario
	for _, s := range []struct {
		name  string
		relay RelayKind
		a, b  Profile
	}{
		{"direct (phones alone)", RelayNone, Plain, Plain},
		{"rtpengine plain", RelayRTPEngine, Plain, Plain},
		{"sbc plain", RelaySBC, Plain, Plain},
		{"sbc SDES↔DTLS-SRTP", RelaySBC, SDES, DTLS},
	} {
		sc := base
		sc.Name, sc.Relay, sc.A, sc.B = s.name, s.relay, s.a, s.b
		out = append(out, sc)
	}
	if cfg.Kernel {
		sc := base
		sc.Name, sc.Relay, sc.A, sc.B, sc.Kernel = "sbc plain (kernel)", RelaySBC, Plain, Plain, true
		out = append(out, sc)
	}
	return out
}

// Compare runs CompareScenarios Rounds times and returns every result,
// grouped by scenario in CompareScenarios order.
func Compare(ctx context.Context, cfg CompareConfig, scenarios []Scenario) ([][]Result, error) {
	out := make([][]Result, len(scenarios))
	for round := range max(cfg.Rounds, 1) {
		for k := range scenarios {
			i := (k + round) % len(scenarios)
			r, err := Run(ctx, scenarios[i])
			if err != nil {
				return out, fmt.Errorf("%s (round %d): %w", scenarios[i].Name, round+1, err)
			}
			out[i] = append(out[i], r)
			if cfg.Log != nil {
				fmt.Fprintf(cfg.Log, "round %d %-24s %s\n", round+1, scenarios[i].Name, r.Line())
			}
		}
	}
	return out, nil
}

// Line is a one-line summary of a result.
func (r Result) Line() string {
	idle := 0.0
	if r.Scenario.IdleWindow > 0 {
		idle = float64(r.RelayIdle) / float64(r.Scenario.IdleWindow) * 1e3
	}
	relay := ""
	if r.Stats != nil {
		relay = fmt.Sprintf(" (relay: in %d, forwarded %d, offloaded %d, drops %v%s)", r.Stats.Packets, r.Stats.Forwarded, r.Stats.Offloaded, r.Stats.Dropped, r.Stats.Loops)
	}
	return fmt.Sprintf("sent %d lost %d%s errs %d rcvbuf drops %d wall %.2fs relay %.2f µs/pkt (%.0f%% core, waited %.0f ms for a CPU; ticks %.2f µs/pkt, idle %.1f ms/s) gen %.2f µs/pkt behind %v p50 %v p99 %v max %v",
		r.Sent, r.Lost(), relay, r.PhoneErrors, r.RcvbufErrors, r.Wall.Seconds(), r.RelayUSPerPacket(), 100*r.RelayLoad(), float64(r.RelayWait)/1e6,
		us(r.RelayCPUTicks)/float64(max(r.Sent, 1)), idle, r.GenUSPerPacket(),
		r.Behind.Round(time.Microsecond), r.P50, r.P99, r.Max.Round(time.Microsecond))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// CompareTable writes the Markdown table of Compare's results: per
// scenario, the relay's µs/packet (median, and min–max over rounds), its
// packets/s per core, the generator's cost, loss and latency.
func CompareTable(w io.Writer, results [][]Result) {
	fmt.Fprintln(w, "| scenario | relay µs/packet, median (min–max) | packets/s per core | generator µs/packet | relay+generator µs/packet | ksoftirqd µs/packet | machine µs/packet | lost | p99 latency |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, rs := range results {
		if len(rs) == 0 {
			continue
		}
		var rel, gen, path, ksi, mach []float64
		var lost, sent uint64
		var p99 time.Duration
		for _, r := range rs {
			rel = append(rel, r.RelayUSPerPacket())
			gen = append(gen, r.GenUSPerPacket())
			path = append(path, r.PathUSPerPacket())
			mach = append(mach, r.MachineUSPerPacket())
			ksi = append(ksi, r.KsoftirqdUSPerPacket())
			lost += r.Lost()
			sent += r.Sent
			p99 = max(p99, r.P99)
		}
		sc := rs[0].Scenario
		relay, perCore := "—", "—"
		if sc.Relay != RelayNone {
			relay = fmt.Sprintf("%.2f (%.2f–%.2f)", median(rel), slices.Min(rel), slices.Max(rel))
			perCore = fmt.Sprintf("%.0f", 1e6/median(rel))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %d of %d | %v |\n", sc.Name, relay, perCore, median(gen), median(path), median(ksi), median(mach), lost, sent, p99)
	}
}

// Ratio is the median relay cost of a over b.
func Ratio(a, b []Result) float64 {
	med := func(rs []Result) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.RelayUSPerPacket())
		}
		return median(v)
	}
	return med(a) / med(b)
}

// MarginalRatios compares relays whose cost may sit outside their own
// process (an in-kernel relay's work runs in the sender's system calls
// and in softirq): each relay's cost is taken as relay+generator CPU, or
// as the machine's busy CPU, per packet, less the same for the phones
// talking directly (direct), medians over rounds; the ratios are a's
// over b's. The first also adds the ksoftirqd threads' CPU (deferred
// softirq work) to both.
func MarginalRatios(direct, b, a []Result) (path, machine float64) {
	med := func(rs []Result, f func(Result) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	p := func(r Result) float64 { return r.PathUSPerPacket() + r.KsoftirqdUSPerPacket() }
	m := func(r Result) float64 { return r.MachineUSPerPacket() }
	pd, md := med(direct, p), med(direct, m)
	return (med(a, p) - pd) / (med(b, p) - pd), (med(a, m) - md) / (med(b, m) - md)
}
