package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

// writePolicy replaces file with p the way editors and config management
// do: a new file renamed over it (one event for the watcher).
func writePolicy(t *testing.T, file string, p *testpolicy.Policy) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(p.TOML()), 0o644); err != nil {
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
	writePolicy(t, file, loopbackPolicy())
	c := startChild(t, "run", file)
	if m := c.waitLog("watching the policy file"); m["policy"] != file || m["level"] != "INFO" {
		t.Fatalf("watch line %v, want INFO with policy %s", m, file)
	}
	writePolicy(t, file, loopbackPolicy(func(p *testpolicy.Policy) { p.Server.UserAgent = "changed" }))
	if m := c.waitLog("policy reloaded"); m["policy"] != file {
		t.Fatalf("reloaded policy %v, want %s", m["policy"], file)
	}
	c.stop()
}

// unloadablePolicy is loopbackPolicy with an unknown key: a file that
// does not load.
func unloadablePolicy() *testpolicy.Policy {
	return loopbackPolicy(func(p *testpolicy.Policy) {
		p.Extra = "[server]\ncolour = \"blue\"" // raw TOML: a key there only to be refused
	})
}

// binds reads the startup lines up to the admin listener's and returns
// the bound addresses: "udp" and "tcp" (the SIP listeners) and "admin".
func (c *child) binds() map[string]string {
	c.t.Helper()
	out := map[string]string{}
	for {
		m := c.next()
		bind, _ := m["bind"].(string)
		switch m["msg"] {
		case "listening":
			tr, _ := m["transport"].(string)
			out[tr] = bind
		case "admin listening":
			out["admin"] = bind
			return out
		}
	}
}

// options sends an OPTIONS (Via branch) to the SBC's UDP listener at addr
// and waits for its 200: the SBC has then handled it, and logged whatever
// it logs for it.
func options(t *testing.T, addr, branch string) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=%s\r\n"+
		"From: <sip:test@127.0.0.1>;tag=%s\r\n"+
		"To: <sip:%s>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"Max-Forwards: 70\r\n"+
		"Content-Length: 0\r\n\r\n", addr, conn.LocalAddr(), branch, branch, addr, branch)
	buf := make([]byte, 4096)
	for try := 0; try < 5; try++ { // UDP: resend on loss
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			continue
		}
		if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
			t.Fatalf("OPTIONS %s: answer %q, want 200", branch, strings.SplitN(string(buf[:n]), "\r\n", 2)[0])
		}
		return
	}
	t.Fatalf("OPTIONS %s: no answer from %s", branch, addr)
}

// debugLines returns the DEBUG lines among lines, and those that mention
// s (in any attribute).
func debugLines(lines []map[string]any, s string) (all, mentioning []string) {
	for _, m := range lines {
		if m["level"] != "DEBUG" {
			continue
		}
		j, _ := json.Marshal(m)
		all = append(all, string(j))
		if strings.Contains(string(j), s) {
			mentioning = append(mentioning, string(j))
		}
	}
	return all, mentioning
}

// A reload that changes log_level applies to "sbc run"'s own logger: it
// passes the LevelVar of its handler as Options.LogLevel. Before, its
// handler had the level read at startup, and log_level = "debug" waited
// for a restart.
func TestRunReloadAppliesLogLevel(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sbc.toml")
	writePolicy(t, file, loopbackPolicy(func(p *testpolicy.Policy) { p.Server.LogLevel = "info" }))
	c := startChild(t, "run", file)
	c.waitLog("sbc started")
	udp := c.binds()["udp"]
	c.waitLog("watching the policy file")

	// At info, handling an OPTIONS logs nothing at DEBUG (at debug, sipgo
	// logs its server transaction, tagged with the branch).
	options(t, udp, "z9hG4bK-before")
	writePolicy(t, file, loopbackPolicy(func(p *testpolicy.Policy) { p.Server.LogLevel = "debug" }))
	c.waitLog("policy reloaded")
	if all, _ := debugLines(c.seen, ""); len(all) > 0 {
		t.Fatalf("DEBUG lines at log_level info, before the reload:\n%s", strings.Join(all, "\n"))
	}

	options(t, udp, "z9hG4bK-after")
	c.stop()
	if _, after := debugLines(c.seen, "z9hG4bK-after"); len(after) == 0 {
		t.Fatalf("no DEBUG line for the OPTIONS handled after the reload to log_level debug; log:\n%s", c.dump())
	}
}

// waitReload reads log lines until the SBC's line for the outcome of a
// reload (it carries result), and fails if that is not result.
func (c *child) waitReload(result string) map[string]any {
	c.t.Helper()
	for {
		m := c.waitLog("policy reload")
		if r, ok := m["result"]; ok {
			if r != result {
				c.t.Fatalf("reload result %v, want %s; log:\n%s", r, result, c.dump())
			}
			return m
		}
	}
}

// reloads returns sbc_reload_total{result} from the admin listener.
func reloads(t *testing.T, admin, result string) float64 {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	prefix := `sbc_reload_total{result="` + result + `"} `
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", prefix, b)
	return 0
}

// waitReloads waits (a few seconds at most) until sbc_reload_total{result}
// is want, and fails if it does not get there.
func waitReloads(t *testing.T, admin, result string, want float64) {
	t.Helper()
	var n float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n = reloads(t, admin, result); n == want {
			return
		}
	}
	t.Fatalf("sbc_reload_total{result=%q} %v, want %v", result, n, want)
}

// A policy file that does not load, changed on disk or reloaded with
// SIGHUP, is a rejected reload: counted in sbc_reload_total{result=
// "rejected"} and logged by the SBC, and the policy in force stays.
// Before, "sbc run" loaded the file itself and such a reload was logged
// by cmd/sbc but never counted.
func TestRunCountsUnloadableFileAsRejected(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sbc.toml")
	writePolicy(t, file, loopbackPolicy())
	c := startChild(t, "run", file)
	c.waitLog("sbc started")
	admin := c.binds()["admin"]
	c.waitLog("watching the policy file")
	if n := reloads(t, admin, "rejected"); n != 0 {
		t.Fatalf("rejected reloads at start: %v", n)
	}

	writePolicy(t, file, unloadablePolicy())
	waitReloads(t, admin, "rejected", 1)
	if m := c.waitReload("rejected"); m["in_force"] != file || !strings.Contains(fmt.Sprint(m["error"]), "colour") {
		t.Fatalf("file change: %v, want the unknown key named and %s in force", m, file)
	}

	c.signal(syscall.SIGHUP)
	waitReloads(t, admin, "rejected", 2)
	c.waitReload("rejected")
	if n := reloads(t, admin, "ok"); n != 0 {
		t.Errorf("sbc_reload_total{result=\"ok\"} %v, want 0", n)
	}

	// Fixed: the next reload is counted ok.
	writePolicy(t, file, loopbackPolicy())
	waitReloads(t, admin, "ok", 1)
	c.waitReload("ok")
	if n := reloads(t, admin, "rejected"); n != 2 {
		t.Errorf("sbc_reload_total{result=\"rejected\"} %v after the fix, want still 2", n)
	}
	c.stop()
}

// logLines decodes JSON log lines.
func logLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// A reload in "sbc run" logs one line saying what triggered it, then the
// SBC's own line for the outcome, at the level that fits it (INFO in
// force, WARN rejected), and nothing at ERROR. Before, every rejected
// reload was logged twice: by the SBC at WARN and by cmd/sbc at ERROR.
func TestReloadPolicyLogsTheOutcomeOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sbc.toml")
	writePolicy(t, file, loopbackPolicy())
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	p, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sbc.New(p, sbc.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for _, tc := range []struct {
		name          string
		policy        *testpolicy.Policy
		result, level string
	}{
		{"in force", loopbackPolicy(func(p *testpolicy.Policy) { p.Server.UserAgent = "b" }), sbc.ReloadOK, "INFO"},
		{"file that does not load", unloadablePolicy(), sbc.ReloadRejected, "WARN"},
		{"restart-only change", loopbackPolicy(func(p *testpolicy.Policy) { p.Admin = "127.0.0.1:1" }), sbc.ReloadRejected, "WARN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writePolicy(t, file, tc.policy)
			buf.Reset()
			reloadPolicy(file, "sighup", s, log)
			lines := logLines(t, buf.Bytes())
			var outcome, trigger []map[string]any
			for _, m := range lines {
				if m["level"] == "ERROR" {
					t.Errorf("ERROR line: %v", m)
				}
				msg, _ := m["msg"].(string)
				switch {
				case m["result"] != nil:
					outcome = append(outcome, m)
				case m["trigger"] != nil:
					trigger = append(trigger, m)
				case strings.Contains(msg, "reload"):
					t.Errorf("a second line about the reload: %v", m)
				}
			}
			if len(outcome) != 1 || outcome[0]["result"] != tc.result || outcome[0]["level"] != tc.level {
				t.Errorf("outcome lines %v, want one with result %s at %s", outcome, tc.result, tc.level)
			}
			if len(trigger) != 1 || trigger[0]["trigger"] != "sighup" || trigger[0]["policy"] != file || trigger[0]["level"] != "INFO" {
				t.Errorf("trigger lines %v, want one INFO line with trigger sighup and policy %s", trigger, file)
			}
		})
	}
}

// fakeReloader returns err from ReloadFile.
type fakeReloader struct{ err error }

func (f fakeReloader) ReloadFile(string) error { return f.err }

// Whatever ReloadFile returns, cmd/sbc adds no line about the outcome: the
// SBC logged it. In particular a partial reload (the new policy IS in
// force, the kernel fast path was not updated) is not reported as
// "rejected; keeping the policy in force" at ERROR, as it was before.
func TestReloadPolicyAddsNoOutcomeLine(t *testing.T) {
	for _, err := range []error{
		nil,
		fmt.Errorf("%w: %w", sbc.ErrReloadPartial, errors.New("nftables: netlink: operation not permitted")),
		&sbc.RestartError{Changes: []string{`admin.listen: "a" → "b"`}},
		fmt.Errorf("reload rejected: %w", errors.New("t.toml:1:1: bad")),
	} {
		var buf bytes.Buffer
		reloadPolicy("sbc.toml", "file_change", fakeReloader{err}, slog.New(slog.NewJSONHandler(&buf, nil)))
		lines := logLines(t, buf.Bytes())
		if len(lines) != 1 || lines[0]["level"] != "INFO" || lines[0]["trigger"] != "file_change" || lines[0]["error"] != nil {
			t.Errorf("ReloadFile returned %v: cmd/sbc logged %v, want only its INFO trigger line", err, lines)
		}
	}
}
