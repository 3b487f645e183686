//go:build linux

package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// median returns the median of vs (the mean of the two middle values for
// an even count), 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SystemSummary condenses one system's trials.
type SystemSummary struct {
	System string
	Maxes  []int   // each trial's max calls/s, in the order run
	Median float64 // of Maxes
	// CPUPerCallAtMax and MemAtMax: medians over the trials of the
	// values of each trial's step at its max.
	CPUPerCallAtMax time.Duration
	PSSAtMax        float64 // bytes
	RSSAtMax        float64 // bytes
	// Latency step (fixed rate): medians over the trials of each trial's
	// percentiles, and of its CPU per call; LatencyPass counts passing
	// latency steps.
	LatencyRuns, LatencyPass      int
	To100P50, To100P99            time.Duration
	To200P50, To200P99            time.Duration
	CPUPerCallAtLatencyRate       time.Duration
	LatencyCalls, LatencyNoAnswer int // summed over the trials
	// With CaptureLegs: medians over the trials of each trial's p50 of
	// the server's INVITE passage, the callee's answer and the server's
	// 200 passage (LegLatency); LegRuns counts the trials that had them.
	LegRuns                        int
	ThroughP50, CalleeP50, BackP50 time.Duration
	// Restarts: server processes restarted because one did not go idle
	// after a step, summed over the trials.
	Restarts int
}

// Summaries returns one summary per system, in cfg.Systems order.
func (r *CompareResult) Summaries() []SystemSummary {
	var out []SystemSummary
	for _, sys := range r.Config.Systems {
		s := SystemSummary{System: sys}
		var maxes, cpu, pss, rss, p50a, p99a, p50b, p99b, latCPU, thr, cal, back []float64
		for _, t := range r.Trials {
			if t.System != sys {
				continue
			}
			s.Maxes = append(s.Maxes, t.Max)
			s.Restarts += t.Restarts
			maxes = append(maxes, float64(t.Max))
			if st, ok := t.AtMax(); ok {
				cpu = append(cpu, float64(st.CPUPerCall()))
				pss = append(pss, float64(st.Mem.PSS))
				rss = append(rss, float64(st.Mem.RSS))
			}
			if l := t.Latency; l != nil && l.Latency != nil {
				s.LatencyRuns++
				if l.Pass {
					s.LatencyPass++
				}
				p50a = append(p50a, float64(Percentile(l.Latency.To100, 50)))
				p99a = append(p99a, float64(Percentile(l.Latency.To100, 99)))
				p50b = append(p50b, float64(Percentile(l.Latency.To200, 50)))
				p99b = append(p99b, float64(Percentile(l.Latency.To200, 99)))
				latCPU = append(latCPU, float64(l.CPUPerCall()))
				s.LatencyCalls += l.Latency.Invites
				s.LatencyNoAnswer += l.Latency.NoFinal
				if g := l.Legs; g != nil && len(g.Through) > 0 {
					s.LegRuns++
					thr = append(thr, float64(Percentile(g.Through, 50)))
					cal = append(cal, float64(Percentile(g.Callee, 50)))
					back = append(back, float64(Percentile(g.Back, 50)))
				}
			}
		}
		s.Median = median(maxes)
		s.CPUPerCallAtMax = time.Duration(median(cpu))
		s.PSSAtMax, s.RSSAtMax = median(pss), median(rss)
		s.To100P50, s.To100P99 = time.Duration(median(p50a)), time.Duration(median(p99a))
		s.To200P50, s.To200P99 = time.Duration(median(p50b)), time.Duration(median(p99b))
		s.CPUPerCallAtLatencyRate = time.Duration(median(latCPU))
		s.ThroughP50, s.CalleeP50, s.BackP50 = time.Duration(median(thr)), time.Duration(median(cal)), time.Duration(median(back))
		out = append(out, s)
	}
	return out
}

// Ratio returns median(sbc) / median(kamailio), 0 if either is missing
// or zero.
func (r *CompareResult) Ratio() float64 {
	var sbc, kam float64
	for _, s := range r.Summaries() {
		switch s.System {
		case SystemSBC:
			sbc = s.Median
		case SystemKamailio:
			kam = s.Median
		}
	}
	if sbc == 0 || kam == 0 {
		return 0
	}
	return sbc / kam
}

// FloodRatio is a flood system's median max calls/s over sbc's.
type FloodRatio struct {
	System string
	Ratio  float64
}

// FloodRatios returns, for each flood system measured along with sbc,
// its median over sbc's (the share of the unloaded calls/s kept under the
// flood).
func (r *CompareResult) FloodRatios() []FloodRatio {
	sums := r.Summaries()
	var base float64
	for _, s := range sums {
		if s.System == SystemSBC {
			base = s.Median
		}
	}
	var out []FloodRatio
	for _, s := range sums {
		if isSBC(s.System) && s.System != SystemSBC && base > 0 {
			out = append(out, FloodRatio{s.System, s.Median / base})
		}
	}
	return out
}

// LoadRange returns the lowest and highest 1-minute load average seen
// before or after any step.
func (r *CompareResult) LoadRange() (lo, hi float64) {
	first := true
	for _, t := range r.Trials {
		steps := slices.Clone(t.Steps)
		for _, p := range []*CompareStep{t.Warmup, t.Latency} {
			if p != nil {
				steps = append(steps, *p)
			}
		}
		for _, s := range steps {
			for _, l := range s.Load {
				if first {
					lo, hi, first = l, l, false
				}
				lo, hi = min(lo, l), max(hi, l)
			}
		}
	}
	return lo, hi
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1e3) }

// WriteSteps prints every step of every trial, in the order run.
func (r *CompareResult) WriteSteps(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tsystem\tstep\trate\tcalls\tok\tfailed\tretrans uac+uas\tsipp cps\tcpu µs/call\tPSS MB\tsock drops\tRcvbufErrors\tload\tresult\t")
	for _, t := range r.Trials {
		steps := []CompareStep{}
		for _, p := range []*CompareStep{t.Warmup, t.Latency} {
			if p != nil {
				steps = append(steps, *p)
			}
		}
		steps = append(steps, t.Steps...)
		for _, s := range steps {
			res := "pass"
			if !s.Pass {
				res = "FAIL"
			}
			if s.Kind == "warm-up" {
				res = "(" + res + ")"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d+%d\t%.0f\t%s\t%.0f\t%d\t%d\t%.1f–%.1f\t%s\t\n",
				t.Round, s.System, s.Kind, s.Rate, s.Calls, s.UAC.Successful, s.UAC.Failed+s.UAS.Failed,
				s.UAC.Retransmissions, s.UAS.Retransmissions, s.UAC.CallRate, us(s.CPUPerCall()),
				float64(s.Mem.PSS)/1e6, s.SocketDrops, s.RcvbufErrors, s.Load[0], s.Load[1], res)
		}
	}
	return tw.Flush()
}

// WriteTable prints the comparison: per system each trial's max calls/s,
// the median, CPU per call and memory at the max, the ratio, and the
// latency at the fixed rate.
func (r *CompareResult) WriteTable(w io.Writer) error {
	c := r.Config
	sums := r.Summaries()
	fmt.Fprintf(w, "SIPp caller → X → SIPp callee, UDP on loopback in network namespace %s; %d round(s), systems alternating\n", r.Namespace, c.Rounds)
	fmt.Fprintf(w, "bisection steps of %s from %d calls/s; a step passes with every call successful, no retransmission on either SIPp side and ≥ %.0f%% of the rate\n",
		c.Duration, c.StartRate, c.MinRateRatio*100)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var hdr strings.Builder
	hdr.WriteString("system\t")
	for i := 1; i <= c.Rounds; i++ {
		fmt.Fprintf(&hdr, "trial %d\t", i)
	}
	hdr.WriteString("median\tCPU µs/call at max\tPSS MB at max\tRSS MB at max\trestarts\t")
	fmt.Fprintln(tw, hdr.String())
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t", s.System)
		for i := 0; i < c.Rounds; i++ {
			if i < len(s.Maxes) {
				fmt.Fprintf(tw, "%d\t", s.Maxes[i])
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintf(tw, "%.0f\t%s\t%.0f\t%.0f\t%d\t\n", s.Median, us(s.CPUPerCallAtMax), s.PSSAtMax/1e6, s.RSSAtMax/1e6, s.Restarts)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ratio := r.Ratio(); ratio > 0 {
		fmt.Fprintf(w, "ratio sbc/kamailio (medians): %.2f×\n", ratio)
	}
	for _, f := range r.FloodRatios() {
		fmt.Fprintf(w, "ratio %s/sbc (medians; flood of %d datagrams/s from blocked sources): %.2f×\n", f.System, c.FloodPPS, f.Ratio)
	}
	if c.LatencyRate > 0 {
		fmt.Fprintf(w, "\nat a fixed %d calls/s for %s (tcpdump on the namespace's lo, caller's side; median over the trials of each trial's percentile):\n", c.LatencyRate, c.LatencyDuration)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "system\truns (pass)\tcalls\tno 200\tINVITE→100 p50 µs\tp99 µs\tINVITE→200 p50 µs\tp99 µs\tCPU µs/call\t")
		for _, s := range sums {
			fmt.Fprintf(tw, "%s\t%d (%d)\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.System, s.LatencyRuns, s.LatencyPass,
				s.LatencyCalls, s.LatencyNoAnswer, us(s.To100P50), us(s.To100P99), us(s.To200P50), us(s.To200P99),
				us(s.CPUPerCallAtLatencyRate))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if c.CaptureLegs {
			fmt.Fprintf(w, "\nINVITE→200 by leg (both legs captured; median over the trials of each trial's p50):\n")
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "system\truns\tINVITE through µs\tcallee µs\t200 through µs\t")
			for _, s := range sums {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", s.System, s.LegRuns, us(s.ThroughP50), us(s.CalleeP50), us(s.BackP50))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	lo, hi := r.LoadRange()
	_, err := fmt.Fprintf(w, "\nload average (1 min) around the steps: %.1f–%.1f; run time %s; work directory %s\n",
		lo, hi, r.End.Sub(r.Start).Round(time.Second), c.WorkDir)
	return err
}
