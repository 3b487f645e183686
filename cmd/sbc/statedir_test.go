package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbc-project/sbc/internal/testpolicy"
)

// readOnlyDir returns a directory in which no file can be created: as
// root (whom permissions do not stop) a read-only tmpfs mounted for the
// test, the way a state_dir outside systemd's ReadWritePaths= looks to the
// SBC; otherwise a directory without write permission.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	} else {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=64k"); err != nil {
			if os.Getenv("SBC_REQUIRE_PRIV") == "1" {
				t.Fatalf("mount a read-only tmpfs: %v", err)
			}
			t.Skipf("cannot mount a read-only tmpfs (needs CAP_SYS_ADMIN): %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	}
	if f, err := os.CreateTemp(dir, "probe"); err == nil {
		f.Close()
		os.Remove(f.Name())
		t.Fatalf("%s is writable: the test cannot make an unwritable directory here", dir)
	}
	return dir
}

// An unwritable state_dir stops "sbc run" at startup with an error that
// names it. Before, the SBC started and every save of the blocklist failed
// in the background.
func TestRunRefusesUnwritableStateDir(t *testing.T) {
	ro := readOnlyDir(t)
	file := filepath.Join(t.TempDir(), "sbc.toml")
	writePolicy(t, file, loopbackPolicy(func(p *testpolicy.Policy) { p.Server.StateDir = ro }))
	c := startChild(t, "run", file)
	for {
		m := c.next()
		msg, _ := m["msg"].(string)
		if msg == "sbc started" {
			c.stop()
			t.Fatalf("started with the unwritable state_dir %s; log:\n%s", ro, c.dump())
		}
		if msg == "cannot build sbc" {
			if e, _ := m["error"].(string); !strings.Contains(e, "state_dir "+ro+" is not writable") {
				t.Errorf("error %q does not name the state_dir", e)
			}
			break
		}
	}
	for range c.lines {
	}
	if err := c.cmd.Wait(); err == nil || c.cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1", err)
	}
}

// "sbc block add|del" fail (exit 1, with the reason) when the change could
// not be saved, and a change that succeeded is on disk when they return.
func TestBlockCommandReportsFailedSave(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	s := startSBC(t, loopbackPolicy(func(p *testpolicy.Policy) { p.Server.StateDir = state }))
	admin := s.AdminAddr().String()
	saved := func() string {
		b, _ := os.ReadFile(filepath.Join(state, "blocklist.json"))
		return string(b)
	}

	if code, out := runBlock("add", "-admin", admin, "198.51.100.0/24"); code != 0 {
		t.Fatalf("add: %d %s", code, out)
	}
	if !strings.Contains(saved(), "198.51.100.0/24") {
		t.Fatalf("add returned before the entry was saved; state file:\n%s", saved())
	}

	// The state directory becomes a file: nothing can be saved, even as
	// root.
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runBlock("add", "-admin", admin, "203.0.113.0/24")
	if code != 1 || !strings.Contains(out, "500") || !strings.Contains(out, "could not be saved") || !strings.Contains(out, "not a directory") {
		t.Fatalf("add with an unwritable state_dir: exit %d, want 1 with the reason:\n%s", code, out)
	}
	code, out = runBlock("del", "-admin", admin, "198.51.100.0/24")
	if code != 1 || !strings.Contains(out, "500") || !strings.Contains(out, "could not be saved") {
		t.Fatalf("del with an unwritable state_dir: exit %d, want 1 with the reason:\n%s", code, out)
	}

	// Writable again: the next change saves everything pending.
	os.Remove(state)
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := runBlock("add", "-admin", admin, "192.0.2.0/24"); code != 0 {
		t.Fatalf("add once writable again: %d %s", code, out)
	}
	if got := saved(); !strings.Contains(got, "192.0.2.0/24") || !strings.Contains(got, "203.0.113.0/24") || strings.Contains(got, "198.51.100.0/24") {
		t.Fatalf("state file after the retry:\n%s", got)
	}
}
