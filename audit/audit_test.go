package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbc-project/sbc/events"
)

// counts collects Hooks calls.
type counts struct {
	mu      sync.Mutex
	written map[string]int
	dropped map[string]int // "output/reason"
}

func newCounts() *counts { return &counts{written: map[string]int{}, dropped: map[string]int{}} }

func (c *counts) hooks() Hooks {
	return Hooks{
		Written: func(o string) { c.mu.Lock(); c.written[o]++; c.mu.Unlock() },
		Dropped: func(o, r string) { c.mu.Lock(); c.dropped[o+"/"+r]++; c.mu.Unlock() },
	}
}

func (c *counts) get(m map[string]int, k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[k]
}

func callEvent(i int) events.Event {
	return events.Event{
		Time: time.Date(2026, 12, 3, 7, 0, i, 0, time.UTC), Kind: events.CallStarted,
		SessionID: fmt.Sprintf("s%d", i), CallID: fmt.Sprintf("c%d@example", i),
		Caller: "+4930123456", Called: "+14155550100", SourceIP: "192.0.2.7",
		UserAgent: "carrier-gw/1.0", Trunk: "carrier",
	}
}

// writeFile writes n call events to a file log at path and closes it.
func writeFile(t *testing.T, cfg Config, n int) {
	t.Helper()
	l, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Emit(callEvent(i))
	}
	l.Close()
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFileChainVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	c := newCounts()
	writeFile(t, Config{File: path, Hooks: c.hooks()}, 20)
	res, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 20 || !res.Anchored || res.FirstSeq != 1 || res.LastSeq != 20 {
		t.Fatalf("result %+v, want 20 anchored records seq 1-20", res)
	}
	if got := c.get(c.written, OutputFile); got != 20 {
		t.Fatalf("written hook %d, want 20", got)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(readLines(t, path)[0]), &rec); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ts", "event", "session_id", "caller_id", "called_number", "source_ip", "user_agent", "seq", "prev", "hash"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("record has no %s: %v", k, rec)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v), want 0600", st.Mode(), err)
	}
}

// verifyFails checks that Verify stops at wantLine of path with a problem
// containing want.
func verifyFails(t *testing.T, path string, wantLine int, want string) {
	t.Helper()
	_, err := Verify(path)
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify: %v, want a VerifyError", err)
	}
	if ve.Line != wantLine || !strings.Contains(ve.Problem, want) {
		t.Fatalf("Verify: %v; want line %d with %q", ve, wantLine, want)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.log")
	writeFile(t, Config{File: orig}, 6)
	lines := readLines(t, orig)

	t.Run("edited", func(t *testing.T) {
		l := append([]string(nil), lines...)
		l[2] = strings.Replace(l[2], "192.0.2.7", "192.0.2.8", 1)
		p := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, p, l)
		verifyFails(t, p, 3, "edited")
	})
	t.Run("deleted", func(t *testing.T) {
		l := append(append([]string(nil), lines[:2]...), lines[3:]...)
		p := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, p, l)
		verifyFails(t, p, 3, "removed")
	})
	t.Run("reordered", func(t *testing.T) {
		l := append([]string(nil), lines...)
		l[2], l[3] = l[3], l[2]
		p := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, p, l)
		verifyFails(t, p, 3, "prev does not match")
	})
	t.Run("edited with its hash recomputed", func(t *testing.T) {
		// An editor who recomputes the edited record's hash breaks the
		// next record's prev.
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(lines[2]))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		m["caller_id"] = "+0000000000"
		delete(m, "hash")
		canon, _ := json.Marshal(m)
		p, err := parseLine([]byte(lines[2]))
		if err != nil {
			t.Fatal(err)
		}
		sum := chainHash(p.prev, canon)
		forged := string(canon[:len(canon)-1]) + fmt.Sprintf(`,"hash":"%x"}`, sum)
		l := append([]string(nil), lines...)
		l[2] = forged
		path := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, path, l)
		verifyFails(t, path, 4, "prev does not match")
	})
	t.Run("the first record removed from the start of the chain", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, p, lines[1:])
		res, err := Verify(p)
		if err != nil {
			t.Fatal(err)
		}
		if res.Anchored || res.FirstSeq != 2 {
			t.Fatalf("%+v: a chain starting at seq 2 is reported anchored", res)
		}
	})
	t.Run("garbage line", func(t *testing.T) {
		l := append([]string(nil), lines...)
		l[4] = "not json"
		p := filepath.Join(t.TempDir(), "a.log")
		writeLines(t, p, l)
		verifyFails(t, p, 5, "unreadable")
	})
	if _, err := Verify(orig); err != nil {
		t.Fatalf("the untouched file: %v", err)
	}
}

func TestRotationKeepsChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	// Each record is ~500 bytes: about 4 per file.
	writeFile(t, Config{File: path, MaxSize: 2000, Keep: 20}, 30)
	var files []string
	for i := 20; i >= 1; i-- {
		p := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	if len(files) < 5 {
		t.Fatalf("%d rotated files, want several", len(files))
	}
	for _, f := range append(files, path) {
		if st, _ := os.Stat(f); st.Size() > 2000 {
			t.Fatalf("%s is %d bytes, over max_size", f, st.Size())
		}
	}
	res, err := Verify(append(files, path)...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 30 || !res.Anchored {
		t.Fatalf("%+v, want 30 anchored records across the files", res)
	}
	// The first record of each file names the previous file's last hash.
	prevLast := readLines(t, files[0])
	p0, _ := parseLine([]byte(prevLast[len(prevLast)-1]))
	first, _ := parseLine([]byte(readLines(t, files[1])[0]))
	if first.prev != p0.hash {
		t.Fatal("a new file's first record does not name the previous file's last hash")
	}
	// Given out of order, the files do not verify.
	if _, err := Verify(append([]string{files[1], files[0]}, files[2:]...)...); err == nil {
		t.Fatal("files in the wrong order verified")
	}
	// keep bounds the rotated files.
	path2 := filepath.Join(dir, "b.log")
	writeFile(t, Config{File: path2, MaxSize: 2000, Keep: 2}, 30)
	if _, err := os.Stat(path2 + ".3"); err == nil {
		t.Fatal("keep=2 left a third rotated file")
	}
	if _, err := Verify(path2+".2", path2+".1", path2); err != nil {
		t.Fatalf("the kept files: %v", err)
	}
}

func TestRestartContinuesChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	writeFile(t, Config{File: path}, 3)
	writeFile(t, Config{File: path}, 4)
	res, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 7 || res.LastSeq != 7 {
		t.Fatalf("%+v, want one chain of 7", res)
	}

	// After a rotation left the current file missing, the chain goes on
	// from FILE.1.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, Config{File: path}, 2)
	if res, err = Verify(path+".1", path); err != nil || res.LastSeq != 9 {
		t.Fatalf("%+v %v, want seq 9 across the files", res, err)
	}

	// A line cut by a crash: the next start ends it and carries on from
	// the last whole record; Verify shows the cut line.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.WriteString(`{"event":"call_started","seq":10,"pr`)
	f.Close()
	writeFile(t, Config{File: path}, 1)
	lines := readLines(t, path)
	last, err := parseLine([]byte(lines[len(lines)-1]))
	if err != nil || last.seq != 10 {
		t.Fatalf("after the cut line: seq %v (%v), want 10", last, err)
	}
	verifyFails(t, path, 3, "unreadable")

	// A file that is not an audit log is refused, not overwritten.
	other := filepath.Join(dir, "other.log")
	_ = os.WriteFile(other, []byte("hello\n"), 0o600)
	if _, err := Open(Config{File: other}, nil); err == nil || !strings.Contains(err.Error(), "not an audit log") {
		t.Fatalf("Open on a foreign file: %v", err)
	}
}

func TestRedactionAndMasking(t *testing.T) {
	var buf syncBuffer
	l, err := Open(Config{Stdout: &buf, MaskDigits: 4, RedactFields: []string{"user_agent", "detail.secret"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := callEvent(1)
	e.Kind = events.CallTerminated
	e.Duration = 1500 * time.Millisecond
	e.Detail = map[string]string{"secret": "s3cr3t", "policy": "a.toml"}
	l.Emit(e)
	l.Close()
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{"caller_id": "+******3456", "called_number": "+*******0100", "user_agent": Redacted,
		"source_ip": "192.0.2.7", "duration_ms": 1500.0, "event": "call_terminated"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	d, _ := rec["detail"].(map[string]any)
	if d["secret"] != Redacted || d["policy"] != "a.toml" {
		t.Errorf("detail %v: want secret redacted, policy kept", d)
	}
	if bytes.Contains(buf.Bytes(), []byte("s3cr3t")) || bytes.Contains(buf.Bytes(), []byte("carrier-gw")) || bytes.Contains(buf.Bytes(), []byte("0123456")) {
		t.Fatalf("a redacted value is in the output: %s", buf.Bytes())
	}
	if _, err := VerifyReader("stdout", bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("a redacted record must verify: %v", err)
	}
	for _, tc := range []struct {
		in   string
		keep int
		out  string
	}{{"+4930123456", 4, "+******3456"}, {"alice", 4, "alice"}, {"123", 4, "123"}, {"sip:0049-30-12", 2, "sip:****-**-12"}} {
		if got := MaskNumber(tc.in, tc.keep); got != tc.out {
			t.Errorf("MaskNumber(%q, %d) = %q, want %q", tc.in, tc.keep, got, tc.out)
		}
	}
	for _, bad := range []string{"ts", "hash", "seq", "detail.", "nope"} {
		if _, err := Open(Config{RedactFields: []string{bad}}, nil); err == nil {
			t.Errorf("redact_fields %q accepted", bad)
		}
	}
}

func TestEventFilter(t *testing.T) {
	var buf syncBuffer
	l, err := Open(Config{Stdout: &buf, Events: []events.Kind{events.Blocked, events.AuthFailure}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range events.Kinds {
		l.Emit(events.Event{Kind: k})
	}
	l.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"event":"auth_failure"`) || !strings.Contains(lines[1], `"event":"blocked"`) {
		t.Fatalf("filtered output:\n%s", buf.String())
	}
	if _, err := Open(Config{Events: []events.Kind{"call_startd"}}, nil); err == nil {
		t.Fatal("an unknown event kind was accepted")
	}
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	n       atomic.Int64
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	b.n.Add(1)
	return len(p), nil
}

func TestEmitNeverBlocks(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	c := newCounts()
	l, err := Open(Config{Stdout: bw, QueueSize: 4, Hooks: c.hooks()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			l.Emit(callEvent(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked behind a stuck output")
	}
	// At most the queue and the record being written got through.
	if d := c.get(c.dropped, "stdout/queue_full"); d < 100-5 {
		t.Fatalf("queue_full drops %d, want at least 95", d)
	}
	close(bw.release)
	l.Close()
	if w := c.get(c.written, OutputStdout); w+c.get(c.dropped, "stdout/queue_full") != 100 {
		t.Fatalf("written %d + dropped do not add up to 100", w)
	}
	l.Emit(callEvent(0))
	if c.get(c.dropped, "stdout/closed") != 1 {
		t.Fatal("an event after Close was not counted as closed")
	}
}

func TestReopenKeepsOutputs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := Open(Config{File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	for i := range 5 {
		a.Emit(callEvent(i))
	}
	// A reload: the file output is taken over (one chain, no second
	// writer), stdout added.
	b, err := Open(Config{File: path, Stdout: &buf, MaskDigits: 2}, a)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		b.Emit(callEvent(i))
	}
	a.Retire(b)
	for i := range 5 {
		b.Emit(callEvent(i))
	}
	// Without the file: Retire closes it.
	c, err := Open(Config{Stdout: &buf}, b)
	if err != nil {
		t.Fatal(err)
	}
	b.Retire(c)
	c.Emit(callEvent(9))
	c.Close()
	res, err := Verify(path)
	if err != nil || res.Records != 15 {
		t.Fatalf("%+v %v, want one chain of 15", res, err)
	}
	if res, err := VerifyReader("stdout", strings.NewReader(buf.String())); err != nil || res.Records != 11 {
		t.Fatalf("stdout %+v %v, want one chain of 11", res, err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// BenchmarkEmit is the SIP path's cost of an event: the filter and the
// enqueue (the output is stalled so that its goroutine does not compete
// for the CPU; past QueueSize records the queue_full drop is measured).
func BenchmarkEmit(b *testing.B) {
	bw := &blockingWriter{release: make(chan struct{})}
	l, err := Open(Config{Stdout: bw, QueueSize: 1 << 16}, nil)
	if err != nil {
		b.Fatal(err)
	}
	e := callEvent(1)
	b.ReportAllocs()
	for b.Loop() {
		l.Emit(e)
	}
	b.StopTimer()
	close(bw.release)
	l.Close()
}

// FuzzVerify: arbitrary input never panics Verify, and a line it accepts
// has a canonical form that parses back to the same hash.
func FuzzVerify(f *testing.F) {
	var buf syncBuffer
	l, _ := Open(Config{Stdout: &buf}, nil)
	for i := range 3 {
		l.Emit(callEvent(i))
	}
	l.Close()
	f.Add(buf.Bytes())
	f.Add([]byte(`{"seq":1,"prev":"` + strings.Repeat("0", 64) + `","hash":"` + strings.Repeat("0", 64) + `"}`))
	f.Add([]byte("{}\n[]\n\"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := VerifyReader("fuzz", bytes.NewReader(data))
		if err == nil && res.Records > 0 {
			first := bytes.SplitN(data, []byte("\n"), 2)[0]
			p, perr := parseLine(first)
			if perr != nil {
				t.Fatalf("a verified line does not parse: %v", perr)
			}
			q, qerr := parseLine(append(p.canonical[:len(p.canonical)-1:len(p.canonical)-1], []byte(fmt.Sprintf(`,"hash":"%x"}`, p.hash))...))
			if qerr != nil || !bytes.Equal(q.canonical, p.canonical) {
				t.Fatalf("canonical form unstable: %v", qerr)
			}
		}
	})
}

// BenchmarkSeal is an output's work per record: the record built from
// the event, redacted, encoded and hashed (off the SIP path).
func BenchmarkSeal(b *testing.B) {
	r := newRedactor([]string{"user_agent"}, 4)
	e := callEvent(1)
	e.Detail = map[string]string{"pool": "pbx"}
	var c chain
	b.ReportAllocs()
	for b.Loop() {
		_, next, err := c.seal(r.record(e))
		if err != nil {
			b.Fatal(err)
		}
		c = next
	}
}
