// Command maxcps measures the highest call rate the SBC carries with zero
// failed calls: SIPp caller → sbc → SIPp callee over loopback UDP,
// bisecting on the rate, every step bounded in calls and time. It prints
// one line per step on stderr and a table on stdout at the end.
//
//	go run ./bench/cmd/maxcps -duration 20s
//	go run ./bench/cmd/maxcps -sbc bin/sbc              # test the built binary
//	go run ./bench/cmd/maxcps -rate 600 -cpuprofile cpu.pprof   # one profiled step
//
// By default each step runs the SBC in a child process of this command
// (the hidden verb "sbc-child"), so a step that fails cannot leave an SBC
// running into the next one.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/sbc-project/sbc/bench"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sbc-child" {
		os.Exit(sbcChild(os.Args[2:]))
	}
	var cfg bench.MaxCPSConfig
	flag.DurationVar(&cfg.Duration, "duration", 20*time.Second, "length of each step (calls are generated for this long)")
	flag.DurationVar(&cfg.Hold, "hold", 0, "call hold time between ACK and BYE")
	flag.IntVar(&cfg.StartRate, "start", 100, "first rate tried (calls/s)")
	flag.IntVar(&cfg.MaxRate, "max-rate", 10000, "highest rate tried (calls/s)")
	flag.IntVar(&cfg.Precision, "precision", 0, "stop when the bracket is this narrow (calls/s); 0: 5% of the result, at least 5")
	flag.IntVar(&cfg.MaxSteps, "max-steps", 12, "bound on the number of steps")
	sbcBin := flag.String("sbc", "", "built sbc binary to test (run as 'sbc run -config FILE'); default: this command's own copy of the sbc package, in a child process")
	inProcess := flag.Bool("in-process", false, "run the SBC inside this process (a failed step may leave it running)")
	flag.StringVar(&cfg.SIPp, "sipp", "", "sipp binary (default: sipp from PATH)")
	flag.StringVar(&cfg.LogLevel, "log-level", "info", "SBC log level (debug, info, warn, error)")
	flag.StringVar(&cfg.WorkDir, "workdir", "", "directory for scenarios, policies, SIPp output and SBC logs (default: a new temp dir)")
	rate := flag.Int("rate", 0, "run one step at this rate instead of searching")
	cpuprofile := flag.String("cpuprofile", "", "with -rate: write a CPU profile of the SBC (child process or in-process) to this file")
	flag.Parse()

	if *cpuprofile != "" && (*rate == 0 || *sbcBin != "") {
		fmt.Fprintln(os.Stderr, "maxcps: -cpuprofile needs -rate and no -sbc")
		os.Exit(2)
	}
	switch {
	case *sbcBin != "":
		cfg.SBCCommand = []string{*sbcBin, "run", "-config"}
	case !*inProcess:
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "maxcps:", err)
			os.Exit(1)
		}
		cfg.SBCCommand = []string{self, "sbc-child"}
		if *cpuprofile != "" {
			cfg.SBCCommand = append(cfg.SBCCommand, "-cpuprofile", *cpuprofile)
		}
		cfg.SBCCommand = append(cfg.SBCCommand, "-config")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Progress = os.Stderr
	if cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "sbc-maxcps-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "maxcps:", err)
			os.Exit(1)
		}
		cfg.WorkDir = d
	}
	fmt.Printf("workdir: %s\n", cfg.WorkDir)

	if *rate > 0 {
		os.Exit(single(ctx, cfg, *rate, *cpuprofile, *inProcess))
	}
	res, err := bench.MaxCPS(ctx, cfg)
	if res != nil {
		res.WriteTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "maxcps:", err)
		os.Exit(1)
	}
}

// single runs one step at a fixed rate.
func single(ctx context.Context, cfg bench.MaxCPSConfig, rate int, profile string, inProcess bool) int {
	var st bench.Step
	var err error
	if profile != "" && inProcess {
		f, ferr := os.Create(profile)
		if ferr != nil {
			fmt.Fprintln(os.Stderr, "maxcps:", ferr)
			return 1
		}
		defer f.Close()
		st, err = bench.RunStep(ctx, cfg, rate, f)
	} else {
		st, err = bench.RunStep(ctx, cfg, rate, nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "maxcps:", err)
		return 1
	}
	bench.WriteSteps(os.Stdout, []bench.Step{st})
	if !st.Pass {
		return 1
	}
	return 0
}

// sbcChild is the hidden verb the harness runs as the SBC process: the
// sbc package with a policy file, JSON logs on stderr, an optional CPU
// profile of its whole life; SIGTERM or SIGINT ends it (Close bounded to
// 10 s).
func sbcChild(args []string) int {
	fs := flag.NewFlagSet("sbc-child", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "policy file")
	profile := fs.String("cpuprofile", "", "CPU profile output")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p, err := policy.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(p.Server.LogLevel))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	s, err := sbc.New(p, sbc.Options{Logger: log})
	if err != nil {
		log.Error("cannot build sbc", "error", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(ctx); err != nil {
		log.Error("cannot start sbc", "error", err.Error())
		return 1
	}
	<-ctx.Done()
	pprof.StopCPUProfile()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Warn("Close did not return within 10s; exiting anyway")
	}
	return 0
}
