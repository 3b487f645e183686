package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// MaxCPSConfig configures a max-CPS measurement. Zero values take the
// defaults shown.
type MaxCPSConfig struct {
	// SIPp is the sipp binary. Default: "sipp" from PATH.
	SIPp string
	// SBCCommand runs the SBC as a process: the argv, to which the path of
	// the generated policy file is appended, e.g. {"bin/sbc", "run",
	// "-config"}. Default (nil): the SBC runs inside this process. A
	// process is the better choice for a search: it is killed after a
	// failed step, whereas an in-process SBC whose Close does not return
	// keeps running (and using CPU) in the background.
	SBCCommand []string
	// Duration is how long each step generates calls. Default 20s.
	Duration time.Duration
	// Hold is the time between ACK and BYE of every call. Default 0.
	Hold time.Duration
	// StartRate is the first rate tried, in calls per second. Default 100.
	StartRate int
	// MaxRate is never exceeded. Default 10000.
	MaxRate int
	// Precision ends the bisection when the highest passing and the lowest
	// failing rate are this close (calls per second). Default: 5% of the
	// passing rate, at least 5.
	Precision int
	// MaxSteps bounds the number of steps. Default 12.
	MaxSteps int
	// MinRateRatio: a step passes only if SIPp sustained at least this
	// share of the target rate (a SIPp starved of CPU generates less than
	// asked). Default 0.95.
	MinRateRatio float64
	// LogLevel of the SBC. Default "info" (the policy default: three log
	// lines per call).
	LogLevel string
	// WorkDir receives the scenarios, policies, SIPp outputs and SBC logs
	// of every step. Default: a new temporary directory, kept.
	WorkDir string
	// Progress gets one line per finished step. Default: none.
	Progress io.Writer
}

func (c *MaxCPSConfig) setDefaults() error {
	if c.SIPp == "" {
		p, err := exec.LookPath("sipp")
		if err != nil {
			return fmt.Errorf("sipp not found (Debian package sip-tester): %w", err)
		}
		c.SIPp = p
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.StartRate <= 0 {
		c.StartRate = 100
	}
	if c.MaxRate <= 0 {
		c.MaxRate = 10000
	}
	if c.StartRate > c.MaxRate {
		c.StartRate = c.MaxRate
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = 12
	}
	if c.MinRateRatio <= 0 {
		c.MinRateRatio = 0.95
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.WorkDir == "" {
		d, err := os.MkdirTemp("", "sbc-maxcps-")
		if err != nil {
			return err
		}
		c.WorkDir = d
	}
	return os.MkdirAll(c.WorkDir, 0o755)
}

// Step is the outcome of one run at a fixed rate.
type Step struct {
	Rate  int // target calls per second
	Calls int // calls the caller was asked to make (Rate × Duration)

	SIPp     SIPpStats          // caller side
	UACExit  int                // SIPp caller exit code: 0 = every call succeeded
	Wall     time.Duration      // how long the SIPp caller ran
	SBCCalls map[string]float64 // delta of sbc_calls_total by result
	// SBCDropped is the delta of sbc_dropped_total, all stages and reasons;
	// SBCDrops the same by "stage/reason".
	SBCDropped float64
	SBCDrops   map[string]float64
	// SBCCPU is the delta of process_cpu_seconds_total of the SBC's
	// process (in-process runs: the harness process, mostly the SBC).
	SBCCPU float64
	UDP    UDPStats // system-wide /proc/net/snmp delta
	// SBCSocketDrops: drops counted by the kernel on the SBC's two UDP
	// sockets (/proc/net/udp), over the step.
	SBCSocketDrops uint64

	Pass bool
	Why  string // why the step failed
}

// MaxCPSResult is a whole measurement.
type MaxCPSResult struct {
	Config MaxCPSConfig
	Steps  []Step
	// Max is the highest rate with a passing step (0 if none passed).
	Max int
	// Bracketed is true when a failing rate above Max was found (the
	// search converged rather than stopping at MaxRate or MaxSteps).
	Bracketed bool
}

// MaxCPS bisects to the highest call rate the SBC carries with zero failed
// calls over cfg.Duration: doubling from StartRate until a step fails, then
// halving the bracket. Every step runs a fresh SBC and fresh SIPp peers,
// bounded in calls (Rate × Duration) and in time.
func MaxCPS(ctx context.Context, cfg MaxCPSConfig) (*MaxCPSResult, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &MaxCPSResult{Config: cfg}
	maxRate, bracketed, err := search(cfg.StartRate, cfg.MaxRate, cfg.Precision, cfg.MaxSteps, func(rate int) (bool, error) {
		st, err := RunStep(ctx, cfg, rate, nil)
		if err != nil {
			return false, err
		}
		res.Steps = append(res.Steps, st)
		if cfg.Progress != nil {
			fmt.Fprintln(cfg.Progress, st.summary())
		}
		return st.Pass, nil
	})
	res.Max, res.Bracketed = maxRate, bracketed
	return res, err
}

// search finds the highest passing rate: exponential growth from start
// until a failure (or max), then bisection until the bracket is within the
// precision. It calls try at most maxSteps times.
func search(start, max, precision, maxSteps int, try func(rate int) (bool, error)) (best int, bracketed bool, err error) {
	lo, hi := 0, 0 // highest pass, lowest fail (0: none yet)
	rate := start
	for step := 0; step < maxSteps; step++ {
		ok, err := try(rate)
		if err != nil {
			return lo, hi > 0, err
		}
		if ok {
			lo = rate
		} else {
			hi = rate
		}
		if hi == 0 {
			if rate >= max {
				return lo, false, nil
			}
			rate = min(rate*2, max)
			continue
		}
		prec := precision
		if prec <= 0 {
			prec = int(math.Max(5, float64(lo)*0.05))
		}
		if hi-lo <= prec {
			return lo, true, nil
		}
		rate = lo + (hi-lo)/2
	}
	return lo, hi > 0, nil
}

// RunStep runs one step at a fixed rate: a fresh SBC (in-process or the
// binary), a SIPp callee, and a SIPp caller asked for rate×Duration calls;
// it reads the SBC's /metrics and the kernel's UDP counters before and
// after. With cpuProfile non-nil (in-process SBC only), the step is CPU
// profiled into it. The error is for a harness failure; an SBC that loses
// calls gives a Step with Pass false.
func RunStep(ctx context.Context, cfg MaxCPSConfig, rate int, cpuProfile io.Writer) (Step, error) {
	if err := cfg.setDefaults(); err != nil {
		return Step{}, err
	}
	if cpuProfile != nil && len(cfg.SBCCommand) > 0 {
		return Step{}, errors.New("CPU profile needs the in-process SBC")
	}
	st := Step{Rate: rate, Calls: int(math.Round(float64(rate) * cfg.Duration.Seconds()))}
	if st.Calls < 1 {
		st.Calls = 1
	}
	dir := filepath.Join(cfg.WorkDir, fmt.Sprintf("rate-%d-%s", rate, time.Now().Format("150405.000")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, err
	}
	uacXML, uasXML, err := writeScenarios(dir)
	if err != nil {
		return st, err
	}
	pt, err := pickPorts()
	if err != nil {
		return st, err
	}
	pol := policyTOML(pt, cfg.LogLevel)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", pt.Admin)

	// The SBC.
	var sut sbcUnderTest
	var exited <-chan error
	sbcLog := filepath.Join(dir, "sbc.log")
	if len(cfg.SBCCommand) > 0 {
		b, err := startProcess(cfg.SBCCommand, pol, dir, sbcLog)
		if err != nil {
			return st, err
		}
		sut, exited = b, b.done
	} else {
		if err := os.WriteFile(filepath.Join(dir, "policy.toml"), []byte(pol), 0o644); err != nil {
			return st, err
		}
		p, err := startInProcess(ctx, pol, cfg.LogLevel, sbcLog)
		if err != nil {
			return st, err
		}
		sut = p
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		return sut.Stop()
	}
	defer stop()
	if err := waitReady(ctx, metricsURL, exited); err != nil {
		return st, err
	}

	// Bounds: SIPp stops itself after Duration+20s; the context kills it
	// 20s after that.
	sippTimeout := cfg.Duration + 20*time.Second
	runCtx, cancel := context.WithTimeout(ctx, sippTimeout+20*time.Second)
	defer cancel()
	common := []string{"-i", "127.0.0.1", "-nostdin", "-buff_size", "4194304",
		"-timeout", strconv.Itoa(int(sippTimeout.Seconds())), "-timeout_error"}

	uasCtx, stopUAS := context.WithCancel(runCtx)
	defer stopUAS()
	uas, uasOut, err := sippCmd(uasCtx, cfg.SIPp, dir, "sipp-uas.out", append([]string{
		"-sf", uasXML, "-p", strconv.Itoa(pt.UAS), "-trace_err"}, common...)...)
	if err != nil {
		return st, err
	}
	defer uasOut.Close()
	if err := uas.Start(); err != nil {
		return st, err
	}
	uasDone := make(chan error, 1)
	go func() { uasDone <- uas.Wait() }()
	defer func() { stopUAS(); <-uasDone }()
	if err := waitBound(runCtx, pt.UAS, uasDone); err != nil {
		return st, err
	}

	before, err := Scrape(ctx, metricsURL)
	if err != nil {
		return st, err
	}
	udpBefore, err := ReadUDPStats()
	if err != nil {
		return st, err
	}

	if cpuProfile != nil {
		if err := pprof.StartCPUProfile(cpuProfile); err != nil {
			return st, err
		}
		defer pprof.StopCPUProfile() // on an early return; a second stop is a no-op
	}
	statFile := filepath.Join(dir, "sipp-uac-stats.csv")
	// -l: enough room for every call of 10 s plus the hold time.
	limit := max(100, int(float64(rate)*(10+cfg.Hold.Seconds())))
	uac, uacOut, err := sippCmd(runCtx, cfg.SIPp, dir, "sipp-uac.out", append([]string{
		"-sf", uacXML, fmt.Sprintf("127.0.0.1:%d", pt.External),
		"-p", strconv.Itoa(pt.UAC),
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(st.Calls), "-l", strconv.Itoa(limit),
		"-d", strconv.FormatInt(cfg.Hold.Milliseconds(), 10),
		"-recv_timeout", "10000",
		"-trace_stat", "-stf", statFile, "-fd", "1",
		"-trace_err"}, common...)...)
	if err != nil {
		return st, err
	}
	defer uacOut.Close()
	t0 := time.Now()
	uacErr := uac.Run()
	st.Wall = time.Since(t0)
	st.UACExit = exitCode(uacErr)

	// Let the SBC finish the calls it still holds (the BYE towards the
	// callee follows the caller's 200) before reading its counters.
	waitIdle(ctx, metricsURL, 10*time.Second)
	if cpuProfile != nil {
		pprof.StopCPUProfile()
	}
	after, err := Scrape(ctx, metricsURL)
	if err != nil {
		return st, err
	}
	udpAfter, err := ReadUDPStats()
	if err != nil {
		return st, err
	}
	drops, err := UDPSocketDrops(pt.External, pt.Internal)
	if err != nil {
		return st, err
	}
	d := Delta(before, after)
	st.SBCCalls = d.ByLabel("sbc_calls_total", "result")
	st.SBCDropped = d.Sum("sbc_dropped_total")
	st.SBCDrops = d.ByLabel("sbc_dropped_total", "stage", "reason")
	for k, v := range st.SBCDrops {
		if v == 0 {
			delete(st.SBCDrops, k)
		}
	}
	st.SBCCPU = d.Sum("process_cpu_seconds_total")
	st.UDP = udpAfter.Sub(udpBefore)
	for _, v := range drops {
		st.SBCSocketDrops += v
	}

	if b, err := os.ReadFile(statFile); err == nil {
		if s, err := ParseSIPpStats(b); err == nil {
			st.SIPp = s
		} else {
			st.Why = err.Error()
		}
	} else {
		st.Why = "no sipp statistics: " + err.Error()
	}
	if err := stop(); err != nil {
		st.Why = strings.TrimPrefix(st.Why+"; ", "; ") + err.Error()
	}
	st.judge(cfg)
	return st, nil
}

// judge decides whether a step passed: every call made and successful,
// none failed, the SBC answered them all, and SIPp sustained the rate.
func (st *Step) judge(cfg MaxCPSConfig) {
	var why []string
	if st.Why != "" {
		why = append(why, st.Why)
	}
	s := st.SIPp
	if st.UACExit != 0 {
		why = append(why, fmt.Sprintf("sipp exit %d", st.UACExit))
	}
	if s.Failed > 0 {
		why = append(why, fmt.Sprintf("%d failed calls", s.Failed))
	}
	if s.Successful != st.Calls {
		why = append(why, fmt.Sprintf("%d of %d calls successful", s.Successful, st.Calls))
	}
	if ans := st.SBCCalls["answered"]; int(ans) != st.Calls {
		why = append(why, fmt.Sprintf("sbc answered %d", int(ans)))
	}
	if s.CallRate < cfg.MinRateRatio*float64(st.Rate) {
		why = append(why, fmt.Sprintf("sipp sustained %.0f cps", s.CallRate))
	}
	st.Pass = len(why) == 0
	st.Why = strings.Join(why, "; ")
}

func (st Step) summary() string {
	r := "PASS"
	if !st.Pass {
		r = "FAIL: " + st.Why
	}
	return fmt.Sprintf("rate %d cps: %d/%d ok, %d failed, %d retrans, sipp %.0f cps, setup %s, sbc cpu %.1fs, sbc drops %v, RcvbufErrors %d, sbc socket drops %d: %s",
		st.Rate, st.SIPp.Successful, st.Calls, st.SIPp.Failed, st.SIPp.Retransmissions, st.SIPp.CallRate,
		st.SIPp.SetupAvg, st.SBCCPU, st.SBCDrops, st.UDP.RcvbufErrors, st.SBCSocketDrops, r)
}

// WriteTable prints the steps (in rate order) and the result.
func (r *MaxCPSResult) WriteTable(w io.Writer) error {
	if err := WriteSteps(w, r.Steps); err != nil {
		return err
	}
	note := ""
	if !r.Bracketed {
		note = " (not bracketed: raise -max-rate or -max-steps)"
	}
	_, err := fmt.Fprintf(w, "max CPS with zero failed calls over %s (hold %s): %d%s\n", r.Config.Duration, r.Config.Hold, r.Max, note)
	return err
}

// WriteSteps prints steps as a table, in rate order, followed by the
// reasons of the failed ones.
func WriteSteps(w io.Writer, steps []Step) error {
	steps = append([]Step(nil), steps...)
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Rate < steps[j].Rate })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tcalls\tok\tfailed\tretrans\tsipp cps\tsetup ms\tsbc answered\tsbc dropped\tsbc cpu s\tcpu µs/call\tRcvbufErrors\tsbc sock drops\tresult\t")
	for _, s := range steps {
		res := "pass"
		if !s.Pass {
			res = "FAIL"
		}
		perCall := 0.0
		if s.SIPp.Successful > 0 {
			perCall = s.SBCCPU / float64(s.SIPp.Successful) * 1e6
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.0f\t%.0f\t%.1f\t%.0f\t%d\t%d\t%s\t\n",
			s.Rate, s.Calls, s.SIPp.Successful, s.SIPp.Failed, s.SIPp.Retransmissions, s.SIPp.CallRate,
			float64(s.SIPp.SetupAvg.Microseconds())/1000, s.SBCCalls["answered"], s.SBCDropped, s.SBCCPU, perCall,
			s.UDP.RcvbufErrors, s.SBCSocketDrops, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range steps {
		if !s.Pass {
			fmt.Fprintf(w, "  %d cps failed: %s\n", s.Rate, s.Why)
		}
	}
	return nil
}

// waitBound waits until the UDP port is bound (the SIPp callee is ready)
// or the process exits.
func waitBound(ctx context.Context, port int, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !udpPortBound(port) {
		select {
		case err := <-exited:
			return fmt.Errorf("sipp callee exited before binding port %d: %v", port, err)
		case <-ctx.Done():
			return fmt.Errorf("sipp callee did not bind port %d: %w", port, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// waitIdle polls the SBC until sbc_calls_active is 0 or the time is up.
func waitIdle(ctx context.Context, url string, within time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		if m, err := Scrape(ctx, url); err == nil && m["sbc_calls_active"] == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
