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
