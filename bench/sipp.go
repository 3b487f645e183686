package bench

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed scenarios/*.xml
var scenarioFS embed.FS

// writeScenarios copies the embedded SIPp scenarios into dir and returns
// the paths of the caller and callee scenarios.
func writeScenarios(dir string) (uac, uas string, err error) {
	for _, n := range []string{"uac.xml", "uas.xml"} {
		b, err := scenarioFS.ReadFile("scenarios/" + n)
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "bench_"+n), b, 0o644); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(dir, "bench_uac.xml"), filepath.Join(dir, "bench_uas.xml"), nil
}

// SIPpStats is the last line of a SIPp -trace_stat file (cumulative
// counters of the whole run).
type SIPpStats struct {
	Created         int // outgoing calls created
	Successful      int
	Failed          int
	Retransmissions int
	// Failure causes (a failed call has one).
	FailedMaxUDPRetrans int
	FailedTimeoutOnRecv int
	FailedUnexpectedMsg int
	DeadCallMsgs        int // messages for calls SIPp already finished
	OutOfCallMsgs       int
	CallRate            float64       // cumulative calls per second
	SetupAvg            time.Duration // response time 1: INVITE sent → 200 received, mean
	CallLengthAvg       time.Duration
	Elapsed             time.Duration
}

// ParseSIPpStats parses a SIPp statistics CSV (-trace_stat, ';'
// separated, header line first) and returns its last line.
func ParseSIPpStats(b []byte) (SIPpStats, error) {
	var header, last []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r; ")
		if line == "" {
			continue
		}
		f := strings.Split(line, ";")
		if header == nil {
			header = f
			continue
		}
		last = f
	}
	if header == nil || last == nil {
		return SIPpStats{}, fmt.Errorf("sipp stats: no data line")
	}
	val := map[string]string{}
	for i, h := range header {
		if i < len(last) {
			val[h] = last[i]
		}
	}
	var s SIPpStats
	var err error
	ints := []struct {
		key string
		dst *int
	}{
		{"OutgoingCall(C)", &s.Created},
		{"SuccessfulCall(C)", &s.Successful},
		{"FailedCall(C)", &s.Failed},
		{"Retransmissions(C)", &s.Retransmissions},
		{"FailedMaxUDPRetrans(C)", &s.FailedMaxUDPRetrans},
		{"FailedTimeoutOnRecv(C)", &s.FailedTimeoutOnRecv},
		{"FailedUnexpectedMessage(C)", &s.FailedUnexpectedMsg},
		{"DeadCallMsgs(C)", &s.DeadCallMsgs},
		{"OutOfCallMsgs(C)", &s.OutOfCallMsgs},
	}
	for _, f := range ints {
		v, ok := val[f.key]
		if !ok {
			return SIPpStats{}, fmt.Errorf("sipp stats: no column %s", f.key)
		}
		if *f.dst, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
			return SIPpStats{}, fmt.Errorf("sipp stats: %s: %w", f.key, err)
		}
	}
	if s.CallRate, err = strconv.ParseFloat(strings.TrimSpace(val["CallRate(C)"]), 64); err != nil {
		return SIPpStats{}, fmt.Errorf("sipp stats: CallRate(C): %w", err)
	}
	durs := []struct {
		key string
		dst *time.Duration
	}{
		{"ResponseTime1(C)", &s.SetupAvg},
		{"CallLength(C)", &s.CallLengthAvg},
		{"ElapsedTime(C)", &s.Elapsed},
	}
	for _, f := range durs {
		if strings.TrimSpace(val[f.key]) == "" {
			continue // a scenario without rtd (a callee) has no response time
		}
		if *f.dst, err = parseSIPpDuration(val[f.key]); err != nil {
			return SIPpStats{}, fmt.Errorf("sipp stats: %s: %w", f.key, err)
		}
	}
	return s, nil
}

// parseSIPpDuration reads SIPp's "HH:MM:SS" or "HH:MM:SS:micro".
func parseSIPpDuration(v string) (time.Duration, error) {
	f := strings.Split(strings.TrimSpace(v), ":")
	if len(f) != 3 && len(f) != 4 {
		return 0, fmt.Errorf("bad duration %q", v)
	}
	units := []time.Duration{time.Hour, time.Minute, time.Second, time.Microsecond}
	var d time.Duration
	for i, s := range f {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad duration %q", v)
		}
		d += time.Duration(n) * units[i]
	}
	return d, nil
}

// sippCmd builds a SIPp command bounded by ctx; cancelling ctx asks SIPp to
// stop (SIGTERM) and kills it 3 s later.
func sippCmd(ctx context.Context, bin, dir, outName string, args ...string) (*exec.Cmd, *os.File, error) {
	out, err := os.Create(filepath.Join(dir, outName))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	return cmd, out, nil
}

// exitCode returns a finished command's exit status (-1 if it did not
// exit normally).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
