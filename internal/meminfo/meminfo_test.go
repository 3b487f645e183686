package meminfo

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	const text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n"
	for _, c := range []struct {
		field string
		kb    uint64
		ok    bool
	}{
		{"MemTotal", 24576000, true},
		{"MemAvailable", 20000000, true},
		{"HugePages_Total", 0, true},
		{"Mem", 0, false},       // a prefix of a field is not the field
		{"SwapTotal", 0, false}, // absent
	} {
		if kb, ok := parse(text, c.field); kb != c.kb || ok != c.ok {
			t.Errorf("parse(%q) = %d, %v; want %d, %v", c.field, kb, ok, c.kb, c.ok)
		}
	}
	if _, ok := parse("MemTotal: lots kB\n", "MemTotal"); ok {
		t.Error("a value that is not a number was read")
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		if kb, ok := KB("MemTotal"); !ok || kb == 0 {
			t.Errorf("KB(MemTotal) = %d, %v on this machine", kb, ok)
		}
	}
}
