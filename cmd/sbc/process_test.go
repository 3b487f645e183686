package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// childEnv makes the test binary run runMain on its arguments instead of
// the tests (see TestMain), so that signals can be sent to a real "sbc run"
// process.
const childEnv = "SBC_CMD_TEST_CHILD"

// loopbackPolicy binds port 0 everywhere: it stands in for the embedded
// example policy (fixed ports) in child processes, and is the policy the
// tests write or run, changed by edits (in order).
func loopbackPolicy(edits ...func(p *testpolicy.Policy)) *testpolicy.Policy {
	p := &testpolicy.Policy{
		Admin: "127.0.0.1:0",
		Realms: []testpolicy.Realm{{Name: "external", Listeners: []testpolicy.Listener{
			{Transport: "udp", Bind: "127.0.0.1:0"},
			{Transport: "tcp", Bind: "127.0.0.1:0", Advertise: "sbc.example.net"},
		}}},
		Trunks: []testpolicy.Trunk{{Name: "t", Realm: "external", Sources: []string{"127.0.0.1"}}},
		Pools: []testpolicy.Pool{{Name: "p", Realm: "external", Targets: testpolicy.Targets("127.0.0.1:9"),
			Health: &testpolicy.Health{Interval: policy.D(0)}}},
	}
	for _, e := range edits {
		e(p)
	}
	return p
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		defaultPolicy = func() *policy.Policy {
			p, err := policy.Parse(policy.EmbeddedSource, []byte(loopbackPolicy().TOML()))
			if err != nil {
				panic(err)
			}
			return p
		}
		os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// child is an "sbc" process started from the test binary, with its JSON
// log lines.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	seen  []map[string]any
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, lines: make(chan map[string]any, 100)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": sc.Text()}
			}
			c.lines <- m
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

// waitLog reads log lines until one whose msg contains substr, and returns
// it. It fails the test if the process ends first (or, as a bound on a
// hang, after a minute).
func (c *child) waitLog(substr string) map[string]any {
	c.t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				err := c.cmd.Wait()
				c.t.Fatalf("process ended (%v) before logging %q; log:\n%s", err, substr, c.dump())
			}
			c.seen = append(c.seen, m)
			if msg, _ := m["msg"].(string); strings.Contains(msg, substr) {
				return m
			}
		case <-deadline:
			c.t.Fatalf("no log line %q; log:\n%s", substr, c.dump())
		}
	}
}

// next returns the next log line (failing if the process ends first).
func (c *child) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.lines:
		if !ok {
			err := c.cmd.Wait()
			c.t.Fatalf("process ended (%v); log:\n%s", err, c.dump())
		}
		c.seen = append(c.seen, m)
		return m
	case <-time.After(time.Minute):
		c.t.Fatalf("no log line; log:\n%s", c.dump())
	}
	return nil
}

func (c *child) dump() string {
	var b strings.Builder
	for _, m := range c.seen {
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func (c *child) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// stop sends SIGTERM and expects a clean exit. Every line the process
// logged is in c.seen afterwards.
func (c *child) stop() {
	c.t.Helper()
	c.signal(syscall.SIGTERM)
	c.waitLog("shutting down")
	for m := range c.lines {
		c.seen = append(c.seen, m)
	}
	if err := c.cmd.Wait(); err != nil {
		c.t.Fatalf("exit after SIGTERM: %v; log:\n%s", err, c.dump())
	}
}

// SIGHUP to "sbc run" without a policy file is logged and ignored. Before,
// nothing caught SIGHUP without -config and it killed the process.
func TestRunWithoutFileSurvivesSIGHUP(t *testing.T) {
	c := startChild(t, "run")
	c.waitLog("sbc started")
	c.signal(syscall.SIGHUP)
	m := c.waitLog("no policy file to reload")
	if m["level"] != "INFO" {
		t.Errorf("SIGHUP line at level %v, want INFO", m["level"])
	}
	c.signal(syscall.SIGHUP)
	c.waitLog("no policy file to reload")
	c.stop()
}

// The startup log names every listener with its bound address (the
// kernel's port, not the policy's 0) and what it advertises, and the admin
// listener.
func TestRunLogsListeners(t *testing.T) {
	c := startChild(t, "run")
	c.waitLog("sbc started")
	want := []struct{ transport, advertise string }{{"udp", "127.0.0.1:"}, {"tcp", "sbc.example.net:"}}
	for _, w := range want {
		m := c.next()
		if m["msg"] != "listening" || m["realm"] != "external" || m["transport"] != w.transport {
			t.Fatalf("want a listening line for external/%s, got %v; log:\n%s", w.transport, m, c.dump())
		}
		bind, _ := m["bind"].(string)
		ap, err := netip.ParseAddrPort(bind)
		if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
			t.Errorf("external/%s: bind %q, want 127.0.0.1 and the bound port", w.transport, bind)
		}
		if adv, _ := m["advertise"].(string); adv != w.advertise+strconv.Itoa(int(ap.Port())) {
			t.Errorf("external/%s: advertise %q, want %s%d", w.transport, adv, w.advertise, ap.Port())
		}
	}
	m := c.next()
	bind, _ := m["bind"].(string)
	if ap, err := netip.ParseAddrPort(bind); m["msg"] != "admin listening" || err != nil || ap.Port() == 0 {
		t.Fatalf("want the admin listener with its bound port, got %v", m)
	}
	c.stop()
}

// SIGHUP to "sbc run FILE" reloads FILE.
func TestRunWithFileReloadsOnSIGHUP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sbc.toml")
	writePolicy(t, file, loopbackPolicy())
	c := startChild(t, "run", file)
	if m := c.waitLog("sbc started"); m["policy"] != file {
		t.Fatalf("started with policy %v, want %s", m["policy"], file)
	}
	c.signal(syscall.SIGHUP)
	if m := c.waitLog("policy reloaded"); m["policy"] != file {
		t.Fatalf("reloaded policy %v, want %s", m["policy"], file)
	}
	c.stop()
}
