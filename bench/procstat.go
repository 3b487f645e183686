package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture the project builds for).
const clockTick = 10 * time.Millisecond

// ProcStat is one process's line of /proc/PID/stat, the fields the
// harness uses.
type ProcStat struct {
	PID, PGID    int
	UTime, STime uint64 // clock ticks (USER_HZ) of all its threads
}

// CPU returns the process's user plus system time.
func (p ProcStat) CPU() time.Duration {
	return time.Duration(p.UTime+p.STime) * clockTick
}

// parseProcStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may contain spaces and parentheses: the fields after it
// are counted from the last ')'.
func parseProcStat(b []byte) (ProcStat, error) {
	s := strings.TrimSpace(string(b))
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 1 || close < open {
		return ProcStat{}, fmt.Errorf("proc stat: no command name in %.60q", s)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return ProcStat{}, fmt.Errorf("proc stat: pid: %w", err)
	}
	// After ')': state(3) ppid(4) pgrp(5) ... utime(14) stime(15).
	f := strings.Fields(s[close+1:])
	if len(f) < 13 {
		return ProcStat{}, fmt.Errorf("proc stat: %d fields after the command name", len(f))
	}
	st := ProcStat{PID: pid}
	if st.PGID, err = strconv.Atoi(f[2]); err != nil {
		return ProcStat{}, fmt.Errorf("proc stat: pgrp: %w", err)
	}
	if st.UTime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return ProcStat{}, fmt.Errorf("proc stat: utime: %w", err)
	}
	if st.STime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return ProcStat{}, fmt.Errorf("proc stat: stime: %w", err)
	}
	return st, nil
}

// GroupProcs returns the /proc/PID/stat of every live process in process
// group pgid (a server started with Setpgid: Kamailio's main process and
// the workers it forked; sbc's one process). Processes that exit while
// /proc is read are skipped.
func GroupProcs(pgid int) ([]ProcStat, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var out []ProcStat
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone
		}
		st, err := parseProcStat(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if st.PGID == pgid {
			out = append(out, st)
		}
	}
	return out, nil
}

// GroupCPU returns the CPU time (user + system, all threads) of the live
// processes of group pgid.
func GroupCPU(pgid int) (time.Duration, error) {
	ps, err := GroupProcs(pgid)
	if err != nil {
		return 0, err
	}
	var t time.Duration
	for _, p := range ps {
		t += p.CPU()
	}
	return t, nil
}

// Mem is the memory of a process or a group of processes, in bytes.
type Mem struct {
	// RSS is the resident set: for a group, the sum of every process's,
	// which counts shared memory (Kamailio's shm pool) once per process
	// that touched it.
	RSS uint64
	// PSS is the proportional set size: shared pages divided among the
	// processes that map them, so a group's sum counts them once. For a
	// single process it is its RSS less its share of shared libraries.
	PSS uint64
}

// parseSmapsRollup reads the Rss and Pss lines of /proc/PID/smaps_rollup.
func parseSmapsRollup(b []byte) (Mem, error) {
	var m Mem
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		var dst *uint64
		switch f[0] {
		case "Rss:":
			dst = &m.RSS
		case "Pss:":
			dst = &m.PSS
		default:
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("smaps_rollup: %s: %w", f[0], err)
		}
		*dst = v * 1024
		seen++
	}
	if seen < 2 {
		return Mem{}, fmt.Errorf("smaps_rollup: no Rss and Pss lines")
	}
	return m, sc.Err()
}

// GroupMem sums the memory of the live processes of group pgid.
func GroupMem(pgid int) (Mem, error) {
	ps, err := GroupProcs(pgid)
	if err != nil {
		return Mem{}, err
	}
	var t Mem
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.PID))
		if err != nil {
			continue // gone
		}
		m, err := parseSmapsRollup(b)
		if err != nil {
			return Mem{}, fmt.Errorf("pid %d: %w", p.PID, err)
		}
		t.RSS += m.RSS
		t.PSS += m.PSS
	}
	return t, nil
}

// LoadAvg returns the 1-minute load average of /proc/loadavg.
func LoadAvg() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}
