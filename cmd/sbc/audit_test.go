package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/audit"
	"github.com/sbc-project/sbc/events"
)

// TestAuditVerifyCommand: a clean log exits 0; one with an edited or a
// deleted line exits 1 naming the line.
func TestAuditVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := audit.Open(audit.Config{File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		l.Emit(events.Event{Kind: events.Blocked, SourceIP: "192.0.2." + string(rune('1'+i)), Reason: "scanner_ua"})
	}
	l.Close()
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := runMain(append([]string{"audit", "verify"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := run(path); code != 0 || !strings.Contains(out, "OK 5 records") {
		t.Fatalf("clean log: %d %s", code, out)
	}
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	edited := filepath.Join(dir, "edited.log")
	_ = os.WriteFile(edited, []byte(strings.Join(lines[:3], "")+strings.Replace(lines[3], "192.0.2.4", "192.0.2.9", 1)+strings.Join(lines[4:], "")), 0o600)
	if code, out := run(edited); code != 1 || !strings.Contains(out, "edited.log:4:") || !strings.Contains(out, "edited") {
		t.Fatalf("edited log: %d %s", code, out)
	}
	deleted := filepath.Join(dir, "deleted.log")
	_ = os.WriteFile(deleted, []byte(lines[0]+strings.Join(lines[2:], "")), 0o600)
	if code, out := run(deleted); code != 1 || !strings.Contains(out, "deleted.log:2:") || !strings.Contains(out, "removed") {
		t.Fatalf("deleted line: %d %s", code, out)
	}
	if code, _ := run(); code != 2 {
		t.Fatal("no file: want usage, exit 2")
	}
	if code, _ := run(filepath.Join(dir, "missing")); code != 1 {
		t.Fatal("missing file: want exit 1")
	}
}
