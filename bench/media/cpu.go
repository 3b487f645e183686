package media

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcCPU returns the CPU time a process has used so far: the sum of its
// threads' run time from /proc/PID/task/*/schedstat (nanoseconds, what the
// scheduler accounted), which is finer than utime+stime (clock ticks). A
// thread that exited between two readings takes its time with it, so
// ProcCPUTicks is the cross-check for a process whose threads come and go.
func ProcCPU(pid int) (time.Duration, error) {
	run, _, err := procSched(pid)
	return run, err
}

// ProcWait returns how long a process's threads have waited for a CPU
// while runnable (schedstat's second field, summed): the machine's
// contention as that process felt it.
func ProcWait(pid int) (time.Duration, error) {
	_, wait, err := procSched(pid)
	return wait, err
}

func procSched(pid int) (run, wait time.Duration, err error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, 0, fmt.Errorf("process %d: no schedstat (%v)", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, err1 := strconv.ParseInt(f[0], 10, 64)
		w, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("%s: %q", t, b)
		}
		run += time.Duration(r)
		wait += time.Duration(w)
	}
	return run, wait, nil
}

// clockTick is USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// ProcCPUTicks returns utime+stime of /proc/PID/stat (all threads, exited
// ones included), at clock-tick resolution.
func ProcCPUTicks(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

func parseStatCPU(s string) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// After the name: state(3) ... utime(14) stime(15); f[0] is field 3.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(u+st) * clockTick, nil
}

// MachineCPU is the machine's CPU time from /proc/stat's "cpu" line:
// Busy is user, nice, system, irq and softirq summed (not idle, iowait or
// steal), Softirq the softirq share. Clock ticks, converted to time with
// the usual USER_HZ of 100. It counts every process, the kernel's
// softirq work included (an in-kernel relay's cost), and whatever else
// runs on the machine.
type MachineCPU struct{ Busy, Softirq time.Duration }

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	var v [7]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return MachineCPU{}, err
		}
	}
	const tick = 10 * time.Millisecond // USER_HZ 100
	// user nice system idle iowait irq softirq
	busy := v[0] + v[1] + v[2] + v[5] + v[6]
	return MachineCPU{Busy: time.Duration(busy) * tick, Softirq: time.Duration(v[6]) * tick}, nil
}

// KsoftirqdCPU is the run time of the kernel's ksoftirqd threads (one per
// CPU), summed from their schedstat: softirq work (packet delivery, an
// in-kernel relay's included) that the kernel deferred to them instead of
// running it in the sending process's system call. Other traffic on the
// machine counts too, so it is an upper bound for one workload.
func KsoftirqdCPU() time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var sum time.Duration
	for _, c := range dirs {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(b), "ksoftirqd/") {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(c)))
		if err != nil {
			continue
		}
		if run, _, err := procSched(pid); err == nil {
			sum += run
		}
	}
	return sum
}
