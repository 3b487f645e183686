package cdr

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseReason(t *testing.T) {
	for _, tc := range []struct {
		in    []string
		cause int
		ok    bool
	}{
		{[]string{`Q.850;cause=16;text="Normal call clearing"`}, 16, true},
		{[]string{`SIP;cause=200;text="x"`, `q.850 ; CAUSE = 17`}, 17, true},
		{[]string{`SIP;cause=487, Q.850;cause=19`}, 19, true},
		{[]string{`Q.850;cause=0`}, 0, false},
		{[]string{`Q.850;cause=128`}, 0, false},
		{[]string{`Q.850;cause=abc`}, 0, false},
		{[]string{`SIP;cause=200`}, 0, false},
		{nil, 0, false},
	} {
		c, ok := ParseReason(tc.in...)
		if c != tc.cause || ok != tc.ok {
			t.Errorf("ParseReason(%q) = %d %v, want %d %v", tc.in, c, ok, tc.cause, tc.ok)
		}
	}
}

func TestCauseFromSIP(t *testing.T) {
	for code, want := range map[int]int{
		200: 0, 404: 1, 486: 17, 480: 18, 603: 21, 487: 16, 408: 102, 503: 41,
		500: 41, 600: 17, 604: 1, 488: 88, 302: 127, 499: 127, 599: 127,
	} {
		if got := CauseFromSIP(code); got != want {
			t.Errorf("CauseFromSIP(%d) = %d, want %d", code, got, want)
		}
	}
}

func readLines(t *testing.T, name string) []Record {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: line %q: %v", name, sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestWriterRotates writes records past the size limit: the file rotates
// into FILE.1 and FILE.2, the oldest beyond max_files is gone, and no
// record is split or lost among the files kept.
func TestWriterRotates(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "cdr.jsonl")
	r := &Record{Session: "s", CallIDA: "a", Start: time.Unix(0, 0).UTC(), End: time.Unix(1, 0).UTC()}
	line, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	// Three lines per file.
	w, err := Open(Config{File: name, MaxSize: int64(3*len(line) + 1), MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := 0; i < n; i++ {
		r.CallIDA = string(rune('a' + i))
		l, _ := Marshal(r)
		if !w.Write(l) {
			t.Fatalf("record %d refused", i)
		}
	}
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Written != n || st.Dropped != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	// 10 lines, 3 per file: j | g h i | d e f (a b c rotated out).
	cur, one, two := readLines(t, name), readLines(t, name+".1"), readLines(t, name+".2")
	if len(cur) != 1 || len(one) != 3 || len(two) != 3 {
		t.Fatalf("lines per file %d %d %d, want 1 3 3", len(cur), len(one), len(two))
	}
	if cur[0].CallIDA != "j" || one[0].CallIDA != "g" || two[0].CallIDA != "d" {
		t.Fatalf("order: %s %s %s", cur[0].CallIDA, one[0].CallIDA, two[0].CallIDA)
	}
	if _, err := os.Stat(name + ".3"); !os.IsNotExist(err) {
		t.Fatalf("FILE.3 kept beyond max_files: %v", err)
	}
	if st.Rotated != 3 {
		t.Fatalf("rotated %d, want 3", st.Rotated)
	}
}

// TestWriterDropsWhenFull: Write never blocks; a full queue drops and
// counts, and a closed Writer refuses.
func TestWriterDropsWhenFull(t *testing.T) {
	name := filepath.Join(t.TempDir(), "cdr.jsonl")
	w, err := Open(Config{File: name, Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	line := []byte("{}\n")
	accepted := 0
	for i := 0; i < 10000; i++ {
		if w.Write(line) {
			accepted++
		}
	}
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Dropped == 0 || int(st.Written) != accepted || st.Written+st.Dropped != 10000 {
		t.Fatalf("stats %+v, accepted %d", st, accepted)
	}
	if w.Write(line) {
		t.Fatal("closed writer accepted a record")
	}
}

func TestRecordFinish(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ans := start.Add(2 * time.Second)
	r := Record{Start: start, Answer: &ans, End: start.Add(5500 * time.Millisecond)}
	r.Finish()
	if r.V != Version || r.DurationMS != 5500 || r.BillableMS != 3500 {
		t.Fatalf("%+v", r)
	}
	b, _ := Marshal(&r)
	if !strings.Contains(string(b), `"start":"2026-01-02T03:04:05Z"`) || !strings.HasSuffix(string(b), "}\n") {
		t.Fatalf("line %s", b)
	}
}
