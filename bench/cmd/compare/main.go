//go:build linux

// Command compare measures sbc and Kamailio side by side (issue 11):
// SIPp caller → X → SIPp callee over UDP inside a network namespace it
// makes, alternating trials of the two systems. Each trial starts a fresh
// server, warms it up, measures INVITE→100/200 latency at a fixed rate from
// a capture, and bisects for the highest rate that passes the strict rule.
// One line per step goes to stderr, the tables to stdout. Needs root.
//
//	make bench-compare                       # builds bin/sbc, then runs this
//	go run ./bench/cmd/compare -sbc bin/sbc -rounds 5 -duration 20s
//	go run ./bench/cmd/compare -sbc bin/sbc -systems kamailio -rounds 1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sbc-project/sbc/bench"
)

func main() {
	var cfg bench.CompareConfig
	flag.StringVar(&cfg.SBC, "sbc", "bin/sbc", "sbc binary (run as 'sbc run -config FILE')")
	flag.StringVar(&cfg.Kamailio, "kamailio", "", "kamailio binary (default: from PATH or /usr/sbin/kamailio)")
	flag.IntVar(&cfg.KamailioShmMB, "kamailio-shm", 0, "Kamailio shared memory, MB (-m; pre-faulted: shm_force_alloc); 0: 4096, or a third of the memory available if less")
	systems := flag.String("systems", "sbc,kamailio", "systems to measure, comma-separated, in the first round's order: sbc, kamailio, sbc-flood (sbc under a flood from blocked sources, dropped in user space), sbc-xdp-flood (the same dropped by XDP in driver mode on the link the flood comes in on)")
	flag.IntVar(&cfg.Rounds, "rounds", 5, "trials per system (alternating)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "length of each bisection step (default 20s)")
	flag.IntVar(&cfg.StartRate, "start", 500, "first rate of each bisection (calls/s)")
	flag.IntVar(&cfg.MaxRate, "max-rate", 16000, "highest rate tried (calls/s)")
	flag.IntVar(&cfg.Precision, "precision", 0, "stop a bisection when the bracket is this narrow (calls/s); 0: 5% of the result")
	flag.IntVar(&cfg.MaxSteps, "max-steps", 10, "bound on the steps of one bisection")
	flag.IntVar(&cfg.WarmupRate, "warmup-rate", 500, "rate of each trial's warm-up step (calls/s)")
	flag.DurationVar(&cfg.WarmupDuration, "warmup", 0, "length of the warm-up step (default: -duration; negative: none)")
	flag.IntVar(&cfg.LatencyRate, "latency-rate", 600, "rate of each trial's captured latency step (calls/s; negative: none)")
	flag.DurationVar(&cfg.LatencyDuration, "latency-duration", 0, "length of the latency step (default: -duration)")
	flag.BoolVar(&cfg.CaptureLegs, "capture-legs", false, "capture the callee's leg too in the latency step and split INVITE→200 into the server's INVITE passage, the callee's answer and the server's 200 passage (twice the capture load, on both systems)")
	flag.IntVar(&cfg.FloodPPS, "flood-pps", 20000, "rate of the flood from blocked sources in the steps of systems sbc-flood and sbc-xdp-flood (datagrams/s)")
	flag.StringVar(&cfg.SBCLogLevel, "sbc-log-level", "warn", "sbc's log level")
	flag.BoolVar(&cfg.SBCAnchor, "sbc-anchor", false, "anchor sbc's media (Kamailio does not: off for a like-for-like comparison)")
	flag.StringVar(&cfg.WorkDir, "workdir", "", "directory for configurations, SIPp output, captures and logs (default: a new temp dir)")
	verbose := flag.Bool("steps", true, "print the table of every step too")
	flag.Parse()
	cfg.Systems = strings.Split(*systems, ",")
	cfg.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Compare(ctx, cfg)
	if res != nil && len(res.Trials) > 0 {
		if *verbose {
			res.WriteSteps(os.Stdout)
			fmt.Println()
		}
		res.WriteTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}
