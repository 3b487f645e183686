package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	writePolicy(t, file, "[server]\nlog_level = \"info\"\n"+loopbackPolicy)
	c := startChild(t, "run", file)
	c.waitLog("sbc started")
	udp := c.binds()["udp"]
	c.waitLog("watching the policy file")

	// At info, handling an OPTIONS logs nothing at DEBUG (at debug, sipgo
	// logs its server transaction, tagged with the branch).
	options(t, udp, "z9hG4bK-before")
	writePolicy(t, file, "[server]\nlog_level = \"debug\"\n"+loopbackPolicy)
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
