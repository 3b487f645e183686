package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

func TestCheckReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	// Hand-written, not internal/testpolicy: the text is deliberately
	// invalid and the test checks the FILE:LINE:COL of each problem.
	os.WriteFile(bad, []byte(`[[realm]]
name = "external"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:5060"
  colour = "blue"

[[trunk]]
name = "t"
realm = "external"
sources = ["10.0.0.0/33"]

[routing]
default_pool = "nope"
`), 0o644)
	var out, errb bytes.Buffer
	if code := runMain([]string{"check", "-config", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; out=%s err=%s", code, out.String(), errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("want at least 3 problems (unknown key, bad CIDR, unknown pool), got:\n%s", out.String())
	}
	for _, want := range []string{bad + ":6:3:", bad + ":11:", bad + ":14:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no problem reported at %s in:\n%s", want, out.String())
		}
	}
}

func TestCheckShippedExample(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"check", "-config", "../../sbc.example.toml"}, &out, &errb); code != 0 {
		t.Fatalf("shipped example policy invalid (exit %d): %s%s", code, out.String(), errb.String())
	}
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("places real calls on loopback")
	}
	var out, errb bytes.Buffer
	if code := runMain([]string{"demo"}, &out, &errb); code != 0 {
		t.Fatalf("demo exit %d:\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "of the callers it saw: nothing") {
		t.Fatalf("demo output:\n%s", out.String())
	}
	// The drops are reported with the reason the SBC gave: sources that
	// are no trunk die before the parser, scanner or not (the gate); a
	// scanner from a trunk's address is told by its User-Agent.
	results := map[string]string{} // scenario → result column
	for _, line := range strings.Split(out.String(), "\n") {
		if f := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1); len(f) == 5 {
			results[f[1]] = f[3]
		}
	}
	for scenario, want := range map[string]string{
		"scanner User-Agent, not a trunk":         "dropped: filter/unknown_source",
		"unknown source (not a trunk)":            "dropped: filter/unknown_source",
		"scanner User-Agent from a trunk address": "dropped: classify/scanner_ua",
	} {
		if results[scenario] != want {
			t.Errorf("%s: result %q, want %q; output:\n%s", scenario, results[scenario], want, out.String())
		}
	}
	for _, want := range []string{"classify/scanner_ua=", "filter/unknown_source="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain(nil, &out, &errb); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
	if code := runMain([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "sbc ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

// startSBC builds an SBC in this process on pb and starts it (ports 0:
// the kernel's choice); the test's cleanup closes it.
func startSBC(t *testing.T, pb *testpolicy.Policy) *sbc.SBC {
	t.Helper()
	s, err := sbc.New(pb.Parse(t), sbc.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runBlock runs "sbc block ARGS..." and returns its exit code and output
// (stdout then stderr).
func runBlock(args ...string) (int, string) {
	var out, errb bytes.Buffer
	t := os.Getenv("SBC_API_KEY")
	os.Setenv("SBC_API_KEY", testpolicy.AdminKey)
	defer os.Setenv("SBC_API_KEY", t)
	code := runMain(append([]string{"block"}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

func TestBlockCommandAgainstRunningSBC(t *testing.T) {
	s := startSBC(t, &testpolicy.Policy{
		Admin:  "127.0.0.1:0",
		Realms: []testpolicy.Realm{{Name: "external", Listeners: []testpolicy.Listener{{Bind: "127.0.0.1:0"}}}},
		Trunks: []testpolicy.Trunk{{Name: "t", Realm: "external", Sources: []string{"127.0.0.1"}}},
		Pools: []testpolicy.Pool{{Name: "p", Realm: "external", Targets: testpolicy.Targets("127.0.0.1:9"),
			Health: &testpolicy.Health{Interval: policy.D(0)}}},
	})
	admin := s.AdminAddr().String()
	if code, out := runBlock("add", "-admin", admin, "-reason", "fraud", "-ttl", "1h", "198.51.100.0/24"); code != 0 {
		t.Fatalf("add: %d %s", code, out)
	}
	code, out := runBlock("list", "-admin", admin)
	if code != 0 || !strings.Contains(out, "198.51.100.0/24") || !strings.Contains(out, "fraud") || !strings.Contains(out, "manual") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, out := runBlock("add", "-admin", admin, "not-an-ip"); code != 2 {
		t.Fatalf("bad prefix: exit %d, want 2: %s", code, out)
	}
	if code, out := runBlock("del", "-admin", admin, "198.51.100.0/24"); code != 0 {
		t.Fatalf("del: %d %s", code, out)
	}
	if code, out := runBlock("del", "-admin", admin, "198.51.100.0/24"); code != 1 || !strings.Contains(out, "404") {
		t.Fatalf("del of a missing entry: %d %s", code, out)
	}
	// The trunk's address is never blocked unless forced, and the answer
	// says why.
	code, out = runBlock("add", "-admin", admin, "127.0.0.0/30")
	if code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, `trunk "t"`) || !strings.Contains(out, "-force") {
		t.Fatalf("add over a trunk: %d %s", code, out)
	}
	if code, out := runBlock("add", "-admin", admin, "-force", "-ttl", "1m", "127.0.0.0/30"); code != 0 {
		t.Fatalf("forced add: %d %s", code, out)
	}
	if code, out := runBlock("list", "-admin", admin); code != 0 || !strings.Contains(out, "manual (forced)") {
		t.Fatalf("list after a forced add: %d\n%s", code, out)
	}
}

// The first key on a fresh install: "sbc admin key create" stores its
// hash in the policy's state_dir and prints it once; the CLI verbs then
// reach the running SBC with it ($SBC_API_KEY), and fail clearly without
// it. A revoked key is refused.
func TestAdminKeyCreateAndCLIVerbs(t *testing.T) {
	state := t.TempDir()
	pb := loopbackPolicy(func(p *testpolicy.Policy) {
		p.Server.StateDir = state
		p.AdminTOML = "plain_http = true\nrate = 0\n"
	})
	file := filepath.Join(t.TempDir(), "sbc.toml")
	if err := os.WriteFile(file, []byte(pb.TOML()), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSBC(t, pb)
	admin := s.AdminAddr().String()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runMain(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	t.Setenv("SBC_API_KEY", "")
	if code, _, stderr := run("api", "-admin", admin, "GET", "/v1/status"); code != 1 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "sbc admin key create") {
		t.Fatalf("without a key: %d %s", code, stderr)
	}
	code, out, stderr := run("admin", "key", "create", "-role", "operator", "-name", "noc", "-config", file)
	if code != 0 {
		t.Fatalf("key create: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := lines[len(lines)-1]
	if !strings.HasPrefix(key, "sbc_") {
		t.Fatalf("no key printed:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(state, "admin_keys.json"))
	if err != nil || strings.Contains(string(b), key[21:]) || !strings.Contains(string(b), sbc.HashAPIKey(key)) {
		t.Fatalf("key store %v:\n%s", err, b)
	}
	t.Setenv("SBC_API_KEY", key)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, stderr = run("api", "-admin", admin, "GET", "/v1/status")
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, `"calls": 0`) {
		t.Fatalf("api GET /v1/status with the key: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := run("block", "add", "-admin", admin, "198.51.100.7"); code != 0 {
		t.Fatalf("block add as operator: %s", stderr)
	}
	if code, _, stderr := run("api", "-admin", admin, "PUT", "/v1/log-level", `{"level":"debug"}`); code != 1 || !strings.Contains(stderr, "403") {
		t.Fatalf("log level as operator: %d %s, want 403", code, stderr)
	}
	code, out, _ = run("admin", "key", "list", "-config", file)
	id := key[4:20]
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "noc") || strings.Contains(out, key[21:]) {
		t.Fatalf("key list: %d\n%s", code, out)
	}
	if code, _, stderr := run("admin", "key", "revoke", "-config", file, id); code != 0 {
		t.Fatalf("revoke: %s", stderr)
	}
	for {
		code, _, stderr = run("api", "-admin", admin, "GET", "/v1/status")
		if code != 0 || time.Now().After(deadline.Add(10*time.Second)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("revoked key: %d %s", code, stderr)
	}
	// -print stores nothing and prints the policy entry.
	code, out, _ = run("admin", "key", "create", "-role", "read", "-print")
	if code != 0 || !strings.Contains(out, "api_keys entry") || !strings.Contains(out, `roles = ["read"]`) {
		t.Fatalf("create -print: %d\n%s", code, out)
	}
}
