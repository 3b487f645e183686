package main

import (
	"os"
	"path/filepath"
	"testing"
)

// writePolicy replaces file with text the way editors and config
// management do: a new file renamed over it (one event for the watcher).
func writePolicy(t *testing.T, file, text string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// A change of the policy file reloads it. "sbc run" says when the watch is
// in place, so that a change made after that line is never missed.
func TestRunWithFileReloadsOnChange(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sbc.toml")
	writePolicy(t, file, loopbackPolicy)
	c := startChild(t, "run", file)
	if m := c.waitLog("watching the policy file"); m["policy"] != file || m["level"] != "INFO" {
		t.Fatalf("watch line %v, want INFO with policy %s", m, file)
	}
	writePolicy(t, file, "[server]\nuser_agent = \"changed\"\n"+loopbackPolicy)
	if m := c.waitLog("policy reloaded"); m["policy"] != file {
		t.Fatalf("reloaded policy %v, want %s", m["policy"], file)
	}
	c.stop()
}
