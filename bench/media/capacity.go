package media

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Capacity limits: a step is clean while the relay loses at most
// CapacityMaxLoss of the packets, delivers 99 % of them within
// CapacityMaxP99 (one packet time: later than that a jitter buffer
// starts to conceal), and uses at most CapacityMaxLoad of its core.
const (
	CapacityMaxLoss = 0.001
	CapacityMaxP99  = 20 * time.Millisecond
	CapacityMaxLoad = 0.9
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
		if !r.Clean() {
			break
		}
	}
	return out, nil
}

// Clean reports whether a capacity step met the limits.
func (r Result) Clean() bool {
	return r.Sent > 0 && float64(r.Lost()) <= CapacityMaxLoss*float64(r.Sent) &&
		r.P99 <= CapacityMaxP99 && r.RelayLoad() <= CapacityMaxLoad
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
	fmt.Fprintln(w, "| calls | packets/s | relay CPU (share of its core) | µs/packet | calls/core at this cost | lost | p99 latency | max latency | heap/call | goroutines/call | RSS/call | clean |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		heap, gor, rss := r.PerCall()
		fmt.Fprintf(w, "| %d | %.0f | %.0f %% | %.2f | %.0f | %d of %d | %v | %v | %.1f kB | %.1f | %.1f kB | %v |\n",
			r.Scenario.Calls, float64(r.Sent)/r.Wall.Seconds(), 100*r.RelayLoad(), r.RelayUSPerPacket(), r.CallsPerCore(),
			r.Lost(), r.Sent, r.P99, r.Max.Round(time.Microsecond), heap/1e3, gor, rss/1e3, r.Clean())
	}
}
