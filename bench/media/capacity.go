package media

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Capacity limits: a step is clean while the relay loses at most
// CapacityMaxLoss of the packets and uses at most CapacityMaxLoad of its
// core. Latency is reported, not judged: it is measured at the phones,
// and on a shared machine the load generator's own lag (Result.Behind,
// its receivers waiting for a CPU) dominates it; a step whose p99 is
// over CapacityLateP99 (one packet time, where a jitter buffer starts to
// conceal) is marked late in the table.
const (
	CapacityMaxLoss = 0.001
	CapacityMaxLoad = 0.9
	CapacityLateP99 = 20 * time.Millisecond
)

// Capacity runs the SBC relay alone (plain RTP, both directions at
// cfg.PPS, GOMAXPROCS cfg.Procs) at each call count of steps, stopping
// after the first step that is not clean (see the limits above).
func Capacity(ctx context.Context, cfg CompareConfig, steps []int) ([]Result, error) {
	var out []Result
	for _, n := range steps {
		sc := Scenario{Name: fmt.Sprintf("sbc plain, %d calls", n), Relay: RelaySBC, A: Plain, B: Plain,
			Calls: n, PPS: cfg.PPS, Both: true, Duration: cfg.Duration, Procs: cfg.Procs}
		r, err := Run(ctx, sc)
		if err != nil {
			return out, err
		}
		out = append(out, r)
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "%-24s %s\n", sc.Name, r.Line())
		}
		if !r.Clean() || r.GeneratorBound() {
			break
		}
	}
	return out, nil
}

// Clean reports whether a capacity step met the limits.
func (r Result) Clean() bool {
	return r.Sent > 0 && float64(r.Lost()) <= CapacityMaxLoss*float64(r.Sent) && r.RelayLoad() <= CapacityMaxLoad
}

// GeneratorBound reports whether the phones, not the relay, set the
// pace: the run took a fifth longer than asked, or a packet left more
// than a second behind its slot. Such a step says nothing of the relay's
// limit, and the search stops there.
func (r Result) GeneratorBound() bool {
	return r.Wall > r.Scenario.Duration*6/5 || r.Behind > time.Second
}

// PerCall is the relay's memory per call from the step's memory before
// any stream and after the run: live heap bytes, goroutines, RSS bytes.
func (r Result) PerCall() (heap, goroutines, rss float64) {
	if r.Stats == nil || r.Scenario.Calls == 0 {
		return 0, 0, 0
	}
	n := float64(r.Scenario.Calls)
	a, b := r.Stats.Mem, r.Before
	return (float64(a.HeapAlloc) - float64(b.HeapAlloc)) / n, float64(a.Goroutines-b.Goroutines) / n, (float64(a.RSS) - float64(b.RSS)) / n
}

// CallsPerCore is the number of calls (both directions at the step's
// rate) one fully busy core would carry at the step's CPU per packet.
func (r Result) CallsPerCore() float64 {
	perCall := r.RelayUSPerPacket() * float64(2*r.Scenario.PPS) // µs of CPU per second per call
	return 1e6 / perCall
}

// CapacityTable writes the Markdown table of a capacity search.
func CapacityTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| calls | packets/s | relay CPU (share of its core; waited for a CPU) | µs/packet | calls/core at this cost | lost | p99 latency (generator lag) | heap/call | goroutines/call | RSS/call | relay clean | generator-bound |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		heap, gor, rss := r.PerCall()
		late := ""
		if r.P99 > CapacityLateP99 {
			late = " late"
		}
		fmt.Fprintf(w, "| %d | %.0f | %.0f %% (%.1f s) | %.2f | %.0f | %d of %d (rcvbuf drops %d) | %v%s (%v) | %.1f kB | %.1f | %.1f kB | %v | %v |\n",
			r.Scenario.Calls, float64(r.Sent)/r.Wall.Seconds(), 100*r.RelayLoad(), r.RelayWait.Seconds(), r.RelayUSPerPacket(), r.CallsPerCore(),
			r.Lost(), r.Sent, r.RcvbufErrors, r.P99, late, r.Behind.Round(time.Millisecond), heap/1e3, gor, rss/1e3, r.Clean(), r.GeneratorBound())
	}
}
