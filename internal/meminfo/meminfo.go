// Package meminfo reads fields of the kernel's /proc/meminfo.
package meminfo

import (
	"os"
	"strconv"
	"strings"
)

// KB is the value of field ("MemTotal", "MemAvailable", ...) in
// /proc/meminfo, in kB; ok is false when it cannot be read.
func KB(field string) (kb uint64, ok bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	return parse(string(b), field)
}

func parse(text, field string) (uint64, bool) {
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == field+":" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}
