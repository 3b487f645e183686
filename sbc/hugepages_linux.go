package sbc

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// adviseHugePages asks the kernel to map b by transparent huge pages
// (madvise MADV_HUGEPAGE), before its pages are first touched.
func adviseHugePages(b []byte) error {
	return unix.Madvise(b, unix.MADV_HUGEPAGE)
}

// thpMode is the kernel's transparent huge page mode (always, madvise or
// never: the bracketed word of /sys/kernel/mm/transparent_hugepage/enabled),
// "" where it cannot be read.
func thpMode() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.IndexByte(s, '[')
	j := strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}
