//go:build linux

package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sbc-project/sbc/internal/meminfo"
	"github.com/sbc-project/sbc/internal/netns"
)

// kamailioCfg is the Kamailio configuration of the comparison
// (bench/kamailio/kamailio.cfg).
//
//go:embed kamailio/kamailio.cfg
var kamailioCfg []byte

// Fixed addresses inside the comparison's own network namespace (nothing
// else binds there). kamailio.cfg names compareServerPort and
// compareUASPort too; TestKamailioCfgShipped checks that they agree.
const (
	compareServerPort   = 15060 // the server under test, caller side (sbc's external realm, Kamailio's listener)
	compareInternalPort = 15062 // sbc's internal realm
	compareUACPort      = 15070 // SIPp caller
	compareUASPort      = 15080 // SIPp callee
	compareAdminPort    = 19090 // sbc's admin listener (/metrics)
)

// The systems Compare measures. The two flood variants are sbc (the same
// binary and policy) while a flood from blocked sources hits its SIP port
// during every step (issue 11: calls/s kept under a flood): dropped by the
// user-space read filter, or by the XDP program (driver mode) on the link
// the flood comes in on (compare_flood.go).
const (
	SystemSBC         = "sbc"
	SystemKamailio    = "kamailio"
	SystemSBCFlood    = "sbc-flood"
	SystemSBCXDPFlood = "sbc-xdp-flood"
)

// isFlood: the system's steps run under the flood.
func isFlood(system string) bool {
	return system == SystemSBCFlood || system == SystemSBCXDPFlood
}

// isSBC: the system runs the sbc binary.
func isSBC(system string) bool {
	return system == SystemSBC || isFlood(system)
}

// floodPrefix is where the flood's spoofed sources come from; the harness
// blocks it through the admin API before the first step.
var floodPrefix = netip.MustParsePrefix("10.66.0.0/16")

// CompareConfig configures a side-by-side comparison. Zero values take
// the defaults shown.
type CompareConfig struct {
	// SBC is the sbc binary (run as "SBC run -config FILE"). Required
	// when Systems includes "sbc".
	SBC string
	// Kamailio is the kamailio binary. Default: kamailio from PATH, else
	// /usr/sbin/kamailio.
	Kamailio string
	// KamailioShmMB and KamailioPkgMB are Kamailio's shared (-m) and
	// per-process (-M) memory pools. Defaults 4096 (or a third of the
	// memory available, if that is less: defaultKamailioShmMB) and 16.
	// 1.5 GB (the default before) held the tm state of ~111,600 calls
	// (~14 kB each, not yet freed within a 10 s step): past that tm's
	// new_t fails with "out of mem" and Kamailio answers 500, which the
	// machine's fast state reached at 11,500 calls/s (BENCHMARKS.md).
	// 4 GB holds ~300,000 calls', ~29,000 calls/s over a 10 s step,
	// above what SIPp generates here (~15,400), so that Kamailio's limit
	// is its CPU and not its pool.
	KamailioShmMB, KamailioPkgMB int
	// SIPp and Tcpdump are the binaries. Default: from PATH.
	SIPp, Tcpdump string
	// Systems to measure, in the order of the first round (later rounds
	// alternate it). Default: sbc, kamailio.
	Systems []string
	// Rounds is the number of trials per system (one bisection each),
	// alternating systems. Default 5.
	Rounds int
	// Duration of each bisection step. Default 20s.
	Duration time.Duration
	// StartRate, MaxRate, Precision and MaxSteps bound each bisection as
	// in MaxCPSConfig. Defaults 500, 16000, 5% of the result (at least 5),
	// 10.
	StartRate, MaxRate, Precision, MaxSteps int
	// MinRateRatio: a step passes only if SIPp sustained this share of
	// the asked rate. Default 0.95.
	MinRateRatio float64
	// WarmupRate and WarmupDuration: the first step of every trial, not
	// judged, so that the measured steps run in a process whose memory is
	// already touched. Defaults 500 calls/s and Duration; a negative
	// WarmupDuration skips it.
	WarmupRate     int
	WarmupDuration time.Duration
	// LatencyRate and LatencyDuration: the second step of every trial, at
	// a fixed rate, captured with tcpdump on the namespace's loopback for
	// INVITE→100 and INVITE→200 times. Defaults 600 calls/s and Duration;
	// a negative LatencyRate skips it.
	LatencyRate     int
	LatencyDuration time.Duration
	// CaptureLegs captures the callee's leg too in the latency step, and
	// splits each call's INVITE→200 into the server's passage of the
	// INVITE, the callee's answer and the server's passage of the 200
	// (LegLatencies). Off by default: the capture then takes twice the
	// datagrams, and its load falls on both systems' figures.
	CaptureLegs bool
	// Drain bounds each of the waits after a step for the server to go
	// idle: for sbc until no call is active, then for both until its CPU
	// use stays below 5% of a core for 1 s. A server not idle by then is
	// restarted before the next step. Default 60s.
	Drain time.Duration
	// SBCLogLevel is sbc's log level. Default "warn" (Kamailio logs
	// warnings and worse too: nothing per call).
	SBCLogLevel string
	// SBCAnchor anchors the media of sbc's calls (the policy's [media]
	// anchor). Default false: Kamailio does not anchor media, so the
	// like-for-like comparison does not either.
	SBCAnchor bool
	// FloodPPS is the rate of the flood of the flood systems: raw UDP
	// datagrams (an OPTIONS each, ~300 B) with spoofed sources across
	// 10.66.0.0/16, blocked, sent to the SIP port by one goroutine
	// (bench/attack.SpoofedFlood) from the caller's start to its end,
	// bounded by the step's time limit. Default 20000.
	FloodPPS int
	// WorkDir receives everything of the run (configurations, SIPp
	// statistics and logs, captures, server logs). Default: a new
	// temporary directory, kept.
	WorkDir string
	// Progress gets one line per step. Default: none.
	Progress io.Writer
}

func (c *CompareConfig) setDefaults() error {
	look := func(dst *string, name, fallback, pkg string) error {
		if *dst != "" {
			return nil
		}
		p, err := exec.LookPath(name)
		if err != nil && fallback != "" {
			if _, serr := os.Stat(fallback); serr == nil {
				p, err = fallback, nil
			}
		}
		if err != nil {
			return fmt.Errorf("%s not found (Debian package %s): %w", name, pkg, err)
		}
		*dst = p
		return nil
	}
	if len(c.Systems) == 0 {
		c.Systems = []string{SystemSBC, SystemKamailio}
	}
	for _, s := range c.Systems {
		switch {
		case isSBC(s):
			if c.SBC == "" {
				return errors.New("compare: the sbc binary is required (CompareConfig.SBC)")
			}
			abs, err := filepath.Abs(c.SBC) // processes run in their own directories
			if err != nil {
				return err
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("compare: sbc binary: %w (make build)", err)
			}
			c.SBC = abs
		case s == SystemKamailio:
			if err := look(&c.Kamailio, "kamailio", "/usr/sbin/kamailio", "kamailio"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("compare: unknown system %q (have %s, %s, %s, %s)", s, SystemSBC, SystemKamailio, SystemSBCFlood, SystemSBCXDPFlood)
		}
	}
	if err := look(&c.SIPp, "sipp", "", "sip-tester"); err != nil {
		return err
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.LatencyRate == 0 {
		c.LatencyRate = 600
	}
	if c.LatencyRate > 0 {
		if err := look(&c.Tcpdump, "tcpdump", "/usr/bin/tcpdump", "tcpdump"); err != nil {
			return err
		}
	}
	if c.LatencyDuration <= 0 {
		c.LatencyDuration = c.Duration
	}
	if c.Rounds <= 0 {
		c.Rounds = 5
	}
	if c.KamailioShmMB <= 0 {
		c.KamailioShmMB = defaultKamailioShmMB(memAvailableMB())
	}
	if c.KamailioPkgMB <= 0 {
		c.KamailioPkgMB = 16
	}
	if c.StartRate <= 0 {
		c.StartRate = 500
	}
	if c.MaxRate <= 0 {
		c.MaxRate = 16000
	}
	c.StartRate = min(c.StartRate, c.MaxRate)
	if c.MaxSteps <= 0 {
		c.MaxSteps = 10
	}
	if c.MinRateRatio <= 0 {
		c.MinRateRatio = 0.95
	}
	if c.WarmupRate <= 0 {
		c.WarmupRate = 500
	}
	if c.WarmupDuration == 0 {
		c.WarmupDuration = c.Duration
	}
	if c.Drain <= 0 {
		c.Drain = 60 * time.Second
	}
	if c.FloodPPS <= 0 {
		c.FloodPPS = 20000
	}
	if c.SBCLogLevel == "" {
		c.SBCLogLevel = "warn"
	}
	if c.WorkDir == "" {
		d, err := os.MkdirTemp("", "sbc-compare-")
		if err != nil {
			return err
		}
		c.WorkDir = d
	}
	return os.MkdirAll(c.WorkDir, 0o755)
}

// CompareStep is one run of the SIPp caller at a fixed rate against a
// running server.
type CompareStep struct {
	System string
	Kind   string // "warm-up", "latency" or "search"
	Rate   int    // asked calls per second
	Calls  int    // Rate × duration

	UAC, UAS SIPpStats
	UACExit  int
	Wall     time.Duration // how long the caller ran
	// CPU is the server's CPU time (all its processes, user + system,
	// from /proc/PID/stat) from the caller's start until the server was
	// idle again.
	CPU time.Duration
	// Mem is the server's memory when the caller finished (all its
	// processes; see Mem).
	Mem Mem
	// SocketDrops are the kernel's drops on the server's UDP sockets
	// (/proc/net/udp of the namespace), RcvbufErrors the namespace's
	// receive-buffer drops over the step, both sides included.
	SocketDrops  uint64
	RcvbufErrors uint64
	// SBCAnswered is the delta of sbc_calls_total{result="answered"}
	// (sbc only).
	SBCAnswered float64
	// Flood (flood systems): datagrams the flood sent during the step and
	// its rate, and the deltas of the SBC's drops of blocked sources in
	// user space (sbc_dropped_total{stage="filter",reason="blocked"}) and
	// in the XDP program (sbc_xdp_packets_total{action="drop_deny"}).
	FloodSent                     uint64
	FloodRate                     float64
	FloodDropsUser, FloodDropsXDP float64
	Load                          [2]float64 // 1-minute load average before and after
	// Idle: the server went idle within CompareConfig.Drain after the
	// caller finished. A server that did not is restarted (and warmed up
	// again) before the trial's next step.
	Idle bool
	// Latency is set for a captured step; Legs too with CaptureLegs.
	Latency *SetupLatency
	Legs    *LegLatency

	Pass bool
	Why  string
}

// CPUPerCall is the server's CPU time per successful call.
func (s CompareStep) CPUPerCall() time.Duration {
	if s.UAC.Successful == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.UAC.Successful)
}

// judge applies the pass rule: every call successful, none failed, zero
// retransmissions on either SIPp side, and at least MinRateRatio of the
// asked rate achieved.
func (s *CompareStep) judge(minRatio float64) {
	var why []string
	if s.Why != "" {
		why = append(why, s.Why)
	}
	if s.UACExit != 0 {
		why = append(why, fmt.Sprintf("sipp caller exit %d", s.UACExit))
	}
	if s.UAC.Failed > 0 || s.UAS.Failed > 0 {
		why = append(why, fmt.Sprintf("failed calls: caller %d, callee %d", s.UAC.Failed, s.UAS.Failed))
	}
	if s.UAC.Successful != s.Calls {
		why = append(why, fmt.Sprintf("%d of %d calls successful", s.UAC.Successful, s.Calls))
	}
	if s.UAC.Retransmissions > 0 || s.UAS.Retransmissions > 0 {
		why = append(why, fmt.Sprintf("retransmissions: caller %d, callee %d", s.UAC.Retransmissions, s.UAS.Retransmissions))
	}
	if s.UAC.CallRate < minRatio*float64(s.Rate) {
		why = append(why, fmt.Sprintf("sipp sustained %.0f of %d calls/s", s.UAC.CallRate, s.Rate))
	}
	s.Pass = len(why) == 0
	s.Why = strings.Join(why, "; ")
}

func (s CompareStep) summary() string {
	r := "PASS"
	if !s.Pass {
		r = "FAIL: " + s.Why
	}
	lat := ""
	if l := s.Latency; l != nil {
		lat = fmt.Sprintf(", INVITE→100 p50/p99 %v/%v, INVITE→200 p50/p99 %v/%v",
			Percentile(l.To100, 50), Percentile(l.To100, 99), Percentile(l.To200, 50), Percentile(l.To200, 99))
	}
	if l := s.Legs; l != nil {
		lat += fmt.Sprintf(" (legs p50/p99: INVITE through %v/%v, callee %v/%v, 200 through %v/%v)",
			Percentile(l.Through, 50), Percentile(l.Through, 99), Percentile(l.Callee, 50), Percentile(l.Callee, 99),
			Percentile(l.Back, 50), Percentile(l.Back, 99))
	}
	if s.FloodSent > 0 {
		lat += fmt.Sprintf(", flood %d sent (%.0f/s), dropped in user space %.0f, by XDP %.0f", s.FloodSent, s.FloodRate, s.FloodDropsUser, s.FloodDropsXDP)
	}
	return fmt.Sprintf("%s %s %d calls/s: %d/%d ok, retrans %d+%d, sipp %.0f calls/s, cpu %.0f µs/call, PSS %.0f MB, sock drops %d, load %.1f→%.1f%s: %s",
		s.System, s.Kind, s.Rate, s.UAC.Successful, s.Calls, s.UAC.Retransmissions, s.UAS.Retransmissions,
		s.UAC.CallRate, float64(s.CPUPerCall().Nanoseconds())/1e3, float64(s.Mem.PSS)/1e6, s.SocketDrops,
		s.Load[0], s.Load[1], lat, r)
}

// CompareTrial is one server process: a warm-up step, a latency step and
// a bisection, in that order.
type CompareTrial struct {
	System    string
	Round     int
	Warmup    *CompareStep
	Latency   *CompareStep
	Steps     []CompareStep // the bisection's, in the order run
	Max       int           // highest passing rate (0: none)
	Bracketed bool          // a failing rate above Max was found
	// Restarts counts the fresh server processes started (each with its
	// warm-up step) after a step the server did not recover from.
	Restarts int
}

// AtMax returns the passing bisection step at Max, if any.
func (t CompareTrial) AtMax() (CompareStep, bool) {
	for _, s := range t.Steps {
		if s.Pass && s.Rate == t.Max {
			return s, true
		}
	}
	return CompareStep{}, false
}

// CompareResult is a whole comparison.
type CompareResult struct {
	Config    CompareConfig
	Namespace string
	Trials    []CompareTrial // in the order run
	Start     time.Time
	End       time.Time
}

// Compare runs cfg.Rounds trials of every system in cfg.Systems,
// alternating (round r runs the systems in order, round r+1 in reverse),
// inside a network namespace it creates and deletes. Each trial starts a
// fresh server, runs a warm-up step, a captured latency step at a fixed
// rate and a bisection for the highest passing rate, and stops it; every
// step runs fresh SIPp peers, and waits for the server to go idle after
// the caller is done. It needs root (ip netns, tcpdump). The error is for
// a harness failure; the result holds the trials finished so far.
func Compare(ctx context.Context, cfg CompareConfig) (*CompareResult, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("compare: needs root (it makes a network namespace)")
	}
	h := &harness{cfg: &cfg}
	res := &CompareResult{Config: cfg, Start: time.Now()}
	defer func() { res.End = time.Now() }()
	uac, uas, err := writeCompareScenarios(cfg.WorkDir)
	if err != nil {
		return res, err
	}
	h.uacXML, h.uasXML = uac, uas
	h.ns = netns.UniqueName("sbc-compare")
	if err := netns.Add(h.ns); err != nil {
		return res, err
	}
	res.Namespace = h.ns
	defer func() {
		h.http.CloseIdleConnections()
		_ = netns.Del(h.ns)
	}()
	if slices.ContainsFunc(cfg.Systems, isFlood) {
		done, err := h.addFloodLink()
		if err != nil {
			return res, err
		}
		defer done()
	}
	if slices.Contains(cfg.Systems, SystemSBCXDPFlood) {
		// The XDP pins go to a bpffs of the run's own (never the host's
		// /sys/fs/bpf); each server's directory is removed when it stops,
		// which detaches its program from the flood's link.
		h.bpffs = filepath.Join(cfg.WorkDir, "bpffs")
		if err := os.MkdirAll(h.bpffs, 0o700); err != nil {
			return res, err
		}
		if err := syscall.Mount("bpf", h.bpffs, "bpf", 0, "mode=0700"); err != nil {
			return res, fmt.Errorf("compare: mount bpffs on %s: %w", h.bpffs, err)
		}
		defer func() { _ = syscall.Unmount(h.bpffs, syscall.MNT_DETACH) }()
	}
	h.http = nsHTTPClient(h.ns)
	for round := 1; round <= cfg.Rounds; round++ {
		order := slices.Clone(cfg.Systems)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, sys := range order {
			tr, err := h.trial(ctx, sys, round)
			res.Trials = append(res.Trials, tr)
			if err != nil {
				return res, fmt.Errorf("%s trial %d: %w", sys, round, err)
			}
		}
	}
	return res, nil
}

// writeCompareScenarios copies the comparison's SIPp scenarios into dir.
func writeCompareScenarios(dir string) (uac, uas string, err error) {
	uac, uas = filepath.Join(dir, "compare_uac.xml"), filepath.Join(dir, "compare_uas.xml")
	for _, f := range []string{uac, uas} {
		b, err := scenarioFS.ReadFile("scenarios/" + filepath.Base(f))
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return "", "", err
		}
	}
	return uac, uas, nil
}

type harness struct {
	cfg            *CompareConfig
	ns             string
	http           *http.Client
	uacXML, uasXML string
	bpffs          string // a bpffs of the run's own, for the XDP pins (sbc-xdp-flood)
	servers        int    // sbc servers started (each pins into a directory of its own)
	// The flood systems' link (compare_flood.go): the namespace the
	// flood is sent from and the hardware address of the link's end in
	// ns (floodLinkIn).
	floodNS   string
	floodPeer net.HardwareAddr
}

// proc is a process started in the namespace, in a process group of its
// own (Kamailio's workers are in it too).
type proc struct {
	cmd   *exec.Cmd
	out   *os.File
	done  chan struct{}
	err   error
	after func() // run once by stop, after the process group is gone
}

// start runs argv in the namespace with `ip netns exec` (which execs it:
// the process keeps the pid), output to dir/outName.
func (h *harness) start(dir, outName string, argv ...string) (*proc, error) {
	out, err := os.Create(filepath.Join(dir, outName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns}, argv...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process group and waits up to within, then kills
// the group. It returns the process's exit error.
func (p *proc) stop(sig syscall.Signal, within time.Duration) error {
	if !p.exited() {
		_ = syscall.Kill(-p.pid(), sig)
		select {
		case <-p.done:
		case <-time.After(within):
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			<-p.done
		}
	}
	// Workers that outlived their parent (Kamailio) go with the group.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	if f := p.after; f != nil {
		p.after = nil
		f()
	}
	return p.err
}

// nsUDPPortBound reports whether a UDP socket of pid's network namespace
// is bound to port.
func nsUDPPortBound(pid, port int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
	if err != nil {
		return false
	}
	m, err := parseUDPDrops(b, port)
	_, ok := m[port]
	return err == nil && ok
}

// waitFor polls cond every 20 ms until it holds, p exits (p may be nil)
// or within passes.
func waitFor(ctx context.Context, within time.Duration, p *proc, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if p != nil && p.exited() {
			return fmt.Errorf("%s: process exited (%v)", what, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (h *harness) metricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", compareAdminPort)
}

// startServer starts one system's server in dir and waits until it is
// ready.
func (h *harness) startServer(ctx context.Context, system, dir string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var p *proc
	var err error
	switch {
	case isSBC(system):
		pol := policyTOMLMedia(benchPorts{External: compareServerPort, Internal: compareInternalPort,
			Admin: compareAdminPort, UAS: compareUASPort, UAC: compareUACPort}, h.cfg.SBCLogLevel, h.cfg.SBCAnchor)
		pinDir := ""
		if system == SystemSBCXDPFlood {
			h.servers++
			pinDir = filepath.Join(h.bpffs, fmt.Sprintf("sbc-%d", h.servers))
			pol += xdpTOML(pinDir)
		}
		path := filepath.Join(dir, "policy.toml")
		if err := os.WriteFile(path, []byte(pol), 0o644); err != nil {
			return nil, err
		}
		if p, err = h.start(dir, "sbc.log", h.cfg.SBC, "run", "-config", path); err != nil {
			return nil, err
		}
		if pinDir != "" {
			p.after = func() { h.unpin(pinDir) }
		}
		err = waitFor(ctx, 20*time.Second, p, "sbc /metrics", func() bool {
			_, err := ScrapeWith(ctx, h.http, h.metricsURL())
			return err == nil
		})
		if err == nil && system != SystemSBC {
			err = h.blockFlood(ctx, system)
		}
	case system == SystemKamailio:
		cfgPath, runDir := filepath.Join(dir, "kamailio.cfg"), filepath.Join(dir, "run")
		if err := os.WriteFile(cfgPath, kamailioCfg, 0o644); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(runDir, 0o755); err != nil {
			return nil, err
		}
		if p, err = h.start(dir, "kamailio.log", h.cfg.Kamailio, "-DD", "-E", "-f", cfgPath,
			"-x", "tlsf", "-X", "tlsf",
			"-m", strconv.Itoa(h.cfg.KamailioShmMB), "-M", strconv.Itoa(h.cfg.KamailioPkgMB),
			"-Y", runDir, "-P", filepath.Join(dir, "kamailio.pid"), "-w", dir); err != nil {
			return nil, err
		}
		// Its children are forked after the socket is bound: wait for the
		// group to stop growing as well.
		n, stable := 0, 0
		err = waitFor(ctx, 60*time.Second, p, "kamailio listening", func() bool {
			if !nsUDPPortBound(p.pid(), compareServerPort) {
				return false
			}
			ps, _ := GroupProcs(p.pid())
			if len(ps) == n {
				stable++
			} else {
				n, stable = len(ps), 0
			}
			return stable >= 10
		})
	}
	if err != nil {
		_ = p.stop(syscall.SIGTERM, 15*time.Second)
		return nil, fmt.Errorf("%w (log: %s)", err, dir)
	}
	return p, nil
}

// trial runs one server process through its steps.
func (h *harness) trial(ctx context.Context, system string, round int) (CompareTrial, error) {
	tr := CompareTrial{System: system, Round: round}
	dir := filepath.Join(h.cfg.WorkDir, fmt.Sprintf("%02d-%s", round, system))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return tr, err
	}
	srv, err := h.startServer(ctx, system, filepath.Join(dir, "server-0"))
	if err != nil {
		return tr, err
	}
	defer func() { _ = srv.stop(syscall.SIGTERM, 15*time.Second) }()
	n := 0
	var run func(kind string, rate int, d time.Duration, capture bool) (CompareStep, error)
	warmup := func() error {
		if h.cfg.WarmupDuration <= 0 {
			return nil
		}
		st, err := run("warm-up", h.cfg.WarmupRate, h.cfg.WarmupDuration, false)
		if err == nil && tr.Warmup == nil {
			tr.Warmup = &st
		}
		return err
	}
	run = func(kind string, rate int, d time.Duration, capture bool) (CompareStep, error) {
		n++
		st, err := h.step(ctx, srv, system, kind, filepath.Join(dir, fmt.Sprintf("%02d-%s-%d", n, kind, rate)), rate, d, capture)
		if err != nil {
			return st, err
		}
		if h.cfg.Progress != nil {
			fmt.Fprintf(h.cfg.Progress, "round %d: %s\n", round, st.summary())
		}
		if !st.Idle {
			// A server still busy with the last step would fail the next
			// one for the last one's sake: start afresh, warmed up.
			_ = srv.stop(syscall.SIGTERM, 15*time.Second)
			tr.Restarts++
			if h.cfg.Progress != nil {
				fmt.Fprintf(h.cfg.Progress, "round %d: %s not idle %s after the step: restarted\n", round, system, h.cfg.Drain)
			}
			if srv, err = h.startServer(ctx, system, filepath.Join(dir, fmt.Sprintf("server-%d", tr.Restarts))); err != nil {
				return st, err
			}
			if kind != "warm-up" {
				if err := warmup(); err != nil {
					return st, err
				}
			}
		}
		return st, nil
	}
	if err := warmup(); err != nil {
		return tr, err
	}
	if h.cfg.LatencyRate > 0 {
		st, err := run("latency", h.cfg.LatencyRate, h.cfg.LatencyDuration, true)
		if err != nil {
			return tr, err
		}
		tr.Latency = &st
	}
	tr.Max, tr.Bracketed, err = search(h.cfg.StartRate, h.cfg.MaxRate, h.cfg.Precision, h.cfg.MaxSteps, func(rate int) (bool, error) {
		st, err := run("search", rate, h.cfg.Duration, false)
		if err != nil {
			return false, err
		}
		tr.Steps = append(tr.Steps, st)
		return st.Pass, nil
	})
	return tr, err
}

// step runs a SIPp callee and a SIPp caller asked for rate × d calls
// against the running server srv, optionally capturing the caller's
// traffic on the namespace's loopback, and measures the server around it.
// The error is for a harness failure (including a server that exited).
func (h *harness) step(ctx context.Context, srv *proc, system, kind, dir string, rate int, d time.Duration, capture bool) (CompareStep, error) {
	st := CompareStep{System: system, Kind: kind, Rate: rate, Calls: max(1, int(float64(rate)*d.Seconds()))}
	if srv.exited() {
		return st, fmt.Errorf("%s exited (%v)", system, srv.err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, err
	}
	sippTimeout := d + 30*time.Second
	common := []string{"-i", "127.0.0.1", "-nostdin", "-buff_size", "4194304",
		"-timeout", strconv.Itoa(int(sippTimeout.Seconds())), "-timeout_error", "-trace_err", "-fd", "1"}

	uas, err := h.start(dir, "sipp-uas.out", append([]string{h.cfg.SIPp, "-sf", h.uasXML,
		"-p", strconv.Itoa(compareUASPort), "-trace_stat", "-stf", "uas.csv"}, common...)...)
	if err != nil {
		return st, err
	}
	defer uas.stop(syscall.SIGKILL, time.Second) // on an early return
	if err := waitFor(ctx, 10*time.Second, uas, "sipp callee bound", func() bool {
		return nsUDPPortBound(uas.pid(), compareUASPort)
	}); err != nil {
		return st, err
	}

	var dump *proc
	pcapPath := filepath.Join(dir, "caller.pcap")
	if capture {
		dump, err = h.start(dir, "tcpdump.out", h.cfg.Tcpdump, "-i", "lo", "-n", "-U", "-s", "2048", "-B", "16384",
			"--time-stamp-precision", "nano", "-w", pcapPath, captureFilter(h.cfg.CaptureLegs))
		if err != nil {
			return st, err
		}
		defer dump.stop(syscall.SIGKILL, time.Second)
		if err := waitFor(ctx, 10*time.Second, dump, "tcpdump listening", func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "tcpdump.out"))
			return strings.Contains(string(b), "listening on")
		}); err != nil {
			return st, err
		}
	}

	snmp := func() UDPStats {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", srv.pid()))
		if err != nil {
			return UDPStats{}
		}
		s, _ := parseSNMP(b)
		return s
	}
	answered := func() float64 {
		if !isSBC(system) {
			return 0
		}
		m, err := ScrapeWith(ctx, h.http, h.metricsURL())
		if err != nil {
			return 0
		}
		return m.ByLabel("sbc_calls_total", "result")["answered"]
	}
	st.Load[0], _ = LoadAvg()
	cpu0, err := GroupCPU(srv.pid())
	if err != nil {
		return st, err
	}
	serverDrops := func() uint64 {
		var n uint64
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", srv.pid()))
		if err != nil {
			return 0
		}
		m, _ := parseUDPDrops(b, compareServerPort, compareInternalPort)
		for _, v := range m {
			n += v
		}
		return n
	}
	udp0, ans0, drops0 := snmp(), answered(), serverDrops()
	var fu0, fx0 float64
	if system != SystemSBC && isSBC(system) {
		fu0, fx0 = h.floodDrops(ctx)
	}
	stopFlood := h.startFlood(ctx, system, sippTimeout+20*time.Second)

	// -l: room for every call of 10 s.
	limit := max(100, rate*10)
	uac, err := h.start(dir, "sipp-uac.out", append([]string{h.cfg.SIPp, "-sf", h.uacXML,
		fmt.Sprintf("127.0.0.1:%d", compareServerPort), "-p", strconv.Itoa(compareUACPort),
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(st.Calls), "-l", strconv.Itoa(limit),
		"-d", "0", "-recv_timeout", "10000", "-trace_stat", "-stf", "uac.csv"}, common...)...)
	if err != nil {
		stopFlood() // not into the teardown and the next step
		return st, err
	}
	t0 := time.Now()
	select {
	case <-uac.done:
	case <-ctx.Done():
		_ = uac.stop(syscall.SIGTERM, 3*time.Second)
		return st, ctx.Err()
	case <-time.After(sippTimeout + 20*time.Second):
		_ = uac.stop(syscall.SIGTERM, 3*time.Second)
	}
	st.Wall = time.Since(t0)
	fr, floodErr := stopFlood()
	st.FloodSent, st.FloodRate = uint64(fr.Sent), fr.Rate()
	st.UACExit = exitCode(uac.err)
	st.Mem, _ = GroupMem(srv.pid())

	// The caller has its answers (or gave up): stop the callee and the
	// capture. SIGTERM makes SIPp write its last statistics line.
	if dump != nil {
		// tcpdump hands packets over in blocks (up to its 1 s buffer
		// timeout) and writes each as it gets it (-U): stop it once the
		// file has not grown for 1.5 s.
		size, same := int64(-1), 0
		_ = waitFor(ctx, 10*time.Second, dump, "capture complete", func() bool {
			time.Sleep(250 * time.Millisecond)
			fi, err := os.Stat(pcapPath)
			if err != nil {
				return false
			}
			if fi.Size() == size {
				same++
			} else {
				size, same = fi.Size(), 0
			}
			return same >= 6
		})
		_ = dump.stop(syscall.SIGTERM, 5*time.Second)
	}
	_ = uas.stop(syscall.SIGTERM, 5*time.Second)

	// Wait for the server to finish what it holds: no call active (sbc),
	// then nothing on the namespace's wire (no UDP datagram delivered or
	// refused: a server still retransmitting towards the gone callee
	// would confuse the next step's callee) and its CPU use under 5% of a
	// core, over 4 samples of 250 ms; over 18 (4.5 s, more than T2, the
	// longest gap between a non-INVITE request's retransmissions) once
	// anything was on the wire during the wait, or when the caller did
	// not end with every call successful: an SBC's BYE to a peer that
	// already left (a call the step's SIPp aborted) is retransmitted for
	// 64×T1 after the call ended, and a copy sent after a 1 s lull reached
	// the next step's SIPp as an unexpected BYE, failing that step (148
	// BYEs and a CANCEL 1.4 s after a collapsed step, in a run where the
	// wire had been quiet for the first second of the wait).
	var idleErr error
	if isSBC(system) {
		idleErr = waitFor(ctx, h.cfg.Drain, srv, "sbc idle", func() bool {
			m, err := ScrapeWith(ctx, h.http, h.metricsURL())
			return err == nil && m["sbc_calls_active"] == 0
		})
	}
	wire := func() uint64 { u := snmp(); return u.InDatagrams + u.NoPorts + u.InErrors }
	last, lastWire, quiet, need := cpu0, wire(), 0, 4
	if st.UACExit != 0 {
		need = 18
	}
	idleErr = errors.Join(idleErr, waitFor(ctx, h.cfg.Drain, srv, "server idle", func() bool {
		time.Sleep(250 * time.Millisecond)
		c, err := GroupCPU(srv.pid())
		if err != nil {
			return false
		}
		w := wire()
		if w != lastWire {
			need = 18
		}
		if c-last <= 250*time.Millisecond/20 && w == lastWire {
			quiet++
		} else {
			quiet = 0
		}
		last, lastWire = c, w
		return quiet >= need
	}))
	st.Idle = idleErr == nil
	cpu1, err := GroupCPU(srv.pid())
	if err != nil {
		return st, err
	}
	st.CPU = cpu1 - cpu0
	st.RcvbufErrors = snmp().Sub(udp0).RcvbufErrors
	st.SBCAnswered = answered() - ans0
	if system != SystemSBC && isSBC(system) {
		fu, fx := h.floodDrops(ctx)
		st.FloodDropsUser, st.FloodDropsXDP = fu-fu0, fx-fx0
	}
	st.SocketDrops = serverDrops() - drops0
	st.Load[1], _ = LoadAvg()

	var notes []string
	for _, f := range []struct {
		name string
		dst  *SIPpStats
	}{{"uac.csv", &st.UAC}, {"uas.csv", &st.UAS}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			notes = append(notes, "no sipp statistics "+f.name)
			continue
		}
		s, err := ParseSIPpStats(b)
		if err != nil {
			notes = append(notes, f.name+": "+err.Error())
			continue
		}
		*f.dst = s
	}
	if capture {
		f, err := os.Open(pcapPath)
		if err != nil {
			return st, err
		}
		pkts, err := ReadPcap(f)
		f.Close()
		if err != nil {
			return st, err
		}
		l := SetupLatencies(pkts, compareUACPort)
		st.Latency = &l
		if h.cfg.CaptureLegs {
			legs := LegLatencies(pkts, compareUACPort, compareUASPort)
			st.Legs = &legs
		}
	}
	if srv.exited() {
		notes = append(notes, fmt.Sprintf("%s exited (%v)", system, srv.err))
	}
	st.Why = strings.Join(notes, "; ")
	st.judge(h.cfg.MinRateRatio)
	if srv.exited() {
		return st, fmt.Errorf("%s exited during the step (%v); see %s", system, srv.err, dir)
	}
	if floodErr != nil {
		// A flood system measured without its flood is not a result.
		return st, fmt.Errorf("%s: the flood did not start, the step ran without it: %w", system, floodErr)
	}
	return st, nil
}

// defaultKamailioShmMB is Kamailio's shared pool for a machine with
// availMB of memory available (0: unknown): 4096 MB, or a third of what
// is available if that is less (the pool is touched at start, and the
// SBC and two SIPp processes need room too), never under 256 MB.
func defaultKamailioShmMB(availMB int) int {
	mb := 4096
	if availMB > 0 && availMB/3 < mb {
		mb = max(availMB/3, 256)
	}
	return mb
}

// memAvailableMB is MemAvailable from /proc/meminfo in MB (0: unknown).
func memAvailableMB() int {
	kb, _ := meminfo.KB("MemAvailable")
	return int(kb / 1024)
}

// captureFilter is the latency step's tcpdump filter: the caller's
// datagrams, and the callee's too with legs.
func captureFilter(legs bool) string {
	if legs {
		return fmt.Sprintf("udp and (port %d or port %d)", compareUACPort, compareUASPort)
	}
	return fmt.Sprintf("udp port %d", compareUACPort)
}
