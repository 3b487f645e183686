package sbc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages reports how many of the whole pages inside b are
// resident (mincore(2)), out of how many; known is false where that
// cannot be told.
func residentPages(b []byte) (resident, pages int, known bool) {
	ps := os.Getpagesize()
	if off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % uintptr(ps)); off != 0 {
		if len(b) < ps-off {
			return 0, 0, false
		}
		b = b[ps-off:]
	}
	pages = len(b) / ps
	if pages == 0 {
		return 0, 0, false
	}
	vec := make([]byte, pages)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(pages*ps),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return 0, pages, false
	}
	for _, v := range vec {
		if v&1 != 0 {
			resident++
		}
	}
	return resident, pages, true
}

// The block prefaultHeap touches is advised as huge pages when
// server.heap_huge_pages is on, and not when it is off: the kernel marks
// the block's mapping "hg" (VmFlags in /proc/self/smaps) only for the
// former. The off case is judged only on memory this test has not
// advised before (the heap reuses it: -count, other tests).
func TestPrefaultHugePages(t *testing.T) {
	const floor = 16 << 20
	for _, huge := range []bool{false, true} {
		prefaultFloor(t, floor)
		gcPace.mu.Lock()
		gcPace.huge = huge
		gcPace.mu.Unlock()
		var flags string
		var err error
		var reused bool
		prefaultTouchedHook = func(b []byte) {
			flags, err = vmFlags(b)
			lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
			hi := lo + uintptr(len(b))
			for _, r := range advisedRanges {
				reused = reused || (lo < r[1] && r[0] < hi)
			}
			if huge {
				advisedRanges = append(advisedRanges, [2]uintptr{lo, hi})
			}
		}
		n := prefaultDue(floor)
		ok, paged := prefaultHeap(n)
		prefaultTouchedHook = nil
		gcPace.mu.Lock()
		gcPace.huge, gcPace.faulting = false, false
		gcPace.mu.Unlock()
		if !ok {
			t.Fatalf("huge %v: prefaultHeap touched nothing", huge)
		}
		if err != nil {
			t.Skipf("smaps: %v", err)
		}
		if !huge && paged != "off" {
			t.Errorf("huge pages off, reported %q", paged)
		}
		advised := strings.Contains(" "+flags+" ", " hg ")
		switch {
		case huge && strings.HasPrefix(paged, "not advised"):
			t.Skipf("madvise: %s", paged)
		case !huge && reused:
			// the flag is judged on fresh memory only
		case huge != advised:
			t.Errorf("huge pages %v (%s): the block's mapping has VmFlags %q", huge, paged, flags)
		}
	}
}

// advisedRanges are the blocks TestPrefaultHugePages advised.
var advisedRanges [][2]uintptr

// vmFlags is the VmFlags line of the mapping in /proc/self/smaps that
// holds b's first page.
func vmFlags(b []byte) (string, error) {
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if lo, hi, ok := smapsRange(line); ok {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:")), nil
		}
	}
	return "", fmt.Errorf("no mapping holds %#x", addr)
}

// smapsRange parses the address range that starts a mapping's entry in
// smaps ("7f12a000-7f12c000 rw-p ...").
func smapsRange(line string) (lo, hi uint64, ok bool) {
	f, _, _ := strings.Cut(line, " ")
	l, h, found := strings.Cut(f, "-")
	if !found {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(l, 16, 64)
	hi, err2 := strconv.ParseUint(h, 16, 64)
	return lo, hi, err1 == nil && err2 == nil
}

// After the prefault, a heap that fills up to the floor in small objects
// finds its spans' records made already: filling it takes under half
// the page faults it takes without prepareSpans (a third to a quarter
// here; what is left is mostly the runtime's own bookkeeping). Each
// count is taken in a process of its own (the runtime reuses span
// records for good, so in this process other tests may have made them
// already): this test binary again, running only this test with
// prepareSpansEnv set to the mode (verbose, so that a skip there shows).
func TestPrepareSpansFaults(t *testing.T) {
	if mode := os.Getenv(prepareSpansEnv); mode != "" {
		prepareSpansChild(t, mode == "off")
		return
	}
	if testing.Short() {
		t.Skip("runs the test binary twice, 128 MiB each")
	}
	faults := map[string]int64{}
	for _, mode := range []string{"off", "on"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrepareSpansFaults$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), prepareSpansEnv+"="+mode)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		if strings.Contains(string(out), "--- SKIP") {
			t.Skipf("%s: the child skipped:\n%s", mode, out)
		}
		i := strings.Index(string(out), "faults=")
		if i < 0 {
			t.Fatalf("%s: no fault count in\n%s", mode, out)
		}
		var n int64
		if _, err := fmt.Sscanf(string(out[i:]), "faults=%d", &n); err != nil {
			t.Fatalf("%s: %v in\n%s", mode, err, out)
		}
		faults[mode] = n
	}
	t.Logf("page faults filling 64 MiB after the prefault: %d without the span records made, %d with", faults["off"], faults["on"])
	if faults["off"] < 200 {
		t.Skipf("only %d faults without the span records made: nothing to tell them apart by here", faults["off"])
	}
	if faults["on"]*2 > faults["off"] {
		t.Errorf("%d page faults with the span records made, %d without: want under half", faults["on"], faults["off"])
	}
}

const prepareSpansEnv = "SBC_TEST_PREPARE_SPANS"

// prepareSpansChild prefaults a 128 MiB floor, with or without
// prepareSpans, then fills 64 MiB of it in small objects of other sizes
// than prepareSpans' (some with pointers) with collection off, and
// prints the page faults that took.
func prepareSpansChild(t *testing.T, off bool) {
	const floor = 128 << 20
	prepareSpansOff = off
	defer func() { prepareSpansOff = false }()
	prefaultFloor(t, floor)
	if ok, _ := prefaultHeap(prefaultDue(floor)); !ok {
		t.Fatal("prefaultHeap touched nothing")
	}
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	const fill = 64 << 20
	keep := make([]any, 0, fill/48) // made before the count
	before := minorFaults(t)
	for filled := 0; filled < fill; {
		switch len(keep) % 3 {
		case 0:
			keep = append(keep, new([5]*int)) // 48 bytes
			filled += 48
		case 1:
			keep = append(keep, make([]byte, 200)) // 208
			filled += 208
		default:
			keep = append(keep, new([12]*int)) // 96
			filled += 96
		}
	}
	fmt.Printf("faults=%d\n", minorFaults(t)-before)
	runtime.KeepAlive(keep)
}

func minorFaults(t *testing.T) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
}
