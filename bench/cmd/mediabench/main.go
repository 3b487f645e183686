// Command mediabench measures the SBC's media relay against rtpengine, side
// by side in one run with the same phones and packet rate (package
// bench/media): CPU per packet of each relay process, the phones' own
// cost, loss and latency; and, with -capacity, how many calls at 50
// packets/s each way one core of the SBC relay carries.
//
//	go run ./bench/cmd/mediabench -calls 100 -pps 50 -duration 10s -rounds 3
//	go run ./bench/cmd/mediabench -capacity 500,1000,2000 -duration 10s
//
// The SBC relay runs as a child of this command (the same binary, started
// again with bench/media.ChildEnv set); rtpengine (Debian's
// rtpengine-daemon, userspace only) is started on loopback for each run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbc-project/sbc/bench/media"
)

func main() {
	media.RunChildIfAsked()
	var cfg media.CompareConfig
	flag.IntVar(&cfg.Calls, "calls", 100, "concurrent calls (streams), each with a phone on both legs")
	flag.IntVar(&cfg.PPS, "pps", 50, "packets per second per call and direction (both directions are sent)")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each measured run")
	flag.IntVar(&cfg.Rounds, "rounds", 3, "rounds of the comparison (scenario order rotates)")
	flag.IntVar(&cfg.Procs, "procs", 0, "GOMAXPROCS of the SBC relay (0: Go's default)")
	flag.IntVar(&cfg.RTPEngineThreads, "rtpengine-threads", 0, "rtpengine --num-threads (0: its default)")
	flag.BoolVar(&cfg.PerCallSockets, "per-call-sockets", false, "give every phone a socket of its own (default: plain and SDES phones of a side share one; DTLS phones always have their own)")
	flag.IntVar(&cfg.Relay.Workers, "relay-loops", 0, "relay loops of the SBC relay (0: its GOMAXPROCS)")
	flag.DurationVar(&cfg.Relay.Coalesce, "relay-coalesce", 0, "SBC relay: wait this long after a busy wake-up before polling again (0: event-driven)")
	flag.IntVar(&cfg.Relay.CoalesceMin, "relay-coalesce-min", 2, "SBC relay: packets a wake-up must relay to coalesce")
	flag.BoolVar(&cfg.Relay.PerSocket, "relay-per-socket", false, "SBC relay: a reader goroutine per socket (the design before relay loops)")
	flag.BoolVar(&cfg.Kernel, "kernel", false, "add the scenario \"sbc plain (kernel)\": the SBC relay with its in-kernel path for plain RTP (srtp/kfwd attached to lo: needs root; run it in a network namespace of its own, see BENCHMARKS.md)")
	only := flag.String("only", "", "run only the comparison scenarios whose name contains this")
	capacity := flag.String("capacity", "", "comma-separated call counts: run the SBC relay alone (plain, both directions, -pps each) at each, with -procs (default 1) instead of the comparison")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg.Log = os.Stderr
	if *capacity != "" {
		if cfg.Procs == 0 {
			cfg.Procs = 1
		}
		var steps []int
		for _, f := range strings.Split(*capacity, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				fmt.Fprintln(os.Stderr, "mediabench: bad -capacity", f)
				os.Exit(2)
			}
			steps = append(steps, n)
		}
		rs, err := media.Capacity(ctx, cfg, steps)
		media.CapacityTable(os.Stdout, rs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mediabench:", err)
			os.Exit(1)
		}
		return
	}
	scenarios := media.CompareScenarios(cfg)
	if *only != "" {
		scenarios = slices.DeleteFunc(scenarios, func(s media.Scenario) bool { return !strings.Contains(s.Name, *only) })
	}
	rs, err := media.Compare(ctx, cfg, scenarios)
	media.CompareTable(os.Stdout, rs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mediabench:", err)
		os.Exit(1)
	}
	if *only == "" && len(rs) >= 4 && len(rs[1]) > 0 && len(rs[2]) > 0 && len(rs[3]) > 0 {
		fmt.Printf("\nsbc plain / rtpengine plain: %.2f (goal ≤ 0.5); sbc SDES↔DTLS / rtpengine plain: %.2f (goal ≤ 1)\n",
			media.Ratio(rs[2], rs[1]), media.Ratio(rs[3], rs[1]))
	}
	if *only == "" && len(rs) == 5 && len(rs[0]) > 0 && len(rs[4]) > 0 {
		p, m := media.MarginalRatios(rs[0], rs[1], rs[4])
		fmt.Printf("sbc plain (kernel) / rtpengine plain, each as relay+generator+ksoftirqd less the phones alone: %.2f; as machine CPU less the phones alone: %.2f (goal ≤ 0.5)\n", p, m)
	}
}
