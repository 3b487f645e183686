package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needTool returns a tool's path; without it the test skips, except in
// CI, where .ci/run installs it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (install Debian package %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAlertRules: promtool accepts the rules, and their unit tests pass
// (the alerts fire on the series they are about, with their text).
func TestAlertRules(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	out := run(t, "prometheus", promtool, "check", "rules", "sbc-alerts.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	run(t, "prometheus", promtool, "test", "rules", "sbc-alerts_test.yml")
}

// TestAlertRulesCoverTheOperatorsConcerns: the alerts the operator surface
// promises exist.
func TestAlertRulesCoverTheOperatorsConcerns(t *testing.T) {
	b, err := os.ReadFile("prometheus/sbc-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"SBCBlockedSourceSurge", "SBCReloadFailed", "SBCMediaTimeouts", "SBCCertificateExpiresSoon",
		"SBCTrunkFailureRatio", "SBCWebhookDeliveryFailing", "SBCHEPDrops", "SBCCDRsLost"} {
		if !strings.Contains(string(b), "alert: "+a+"\n") {
			t.Errorf("no alert %s", a)
		}
	}
}

// documented are the metric families of docs/METRICS.md.
func documented(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (sbc_[a-z0-9_]+)$`).FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	if len(out) < 30 {
		t.Fatalf("only %d families in docs/METRICS.md", len(out))
	}
	return out
}

var metricName = regexp.MustCompile(`\bsbc_[a-z0-9_]+\b`)

// TestMetricNamesExist: every sbc_ metric the rules, their tests and the
// dashboard name is one docs/METRICS.md lists (which the SBC's own test
// keeps in step with the code).
func TestMetricNamesExist(t *testing.T) {
	doc := documented(t)
	for _, f := range []string{"prometheus/sbc-alerts.yml", "prometheus/sbc-alerts_test.yml", "grafana/sbc-dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Errorf("%s names no metric", f)
		}
		for _, n := range names {
			if !doc[n] {
				t.Errorf("%s uses %s, which docs/METRICS.md does not list", f, n)
			}
		}
	}
}

// TestDashboard: the dashboard is JSON Grafana imports: unique panel ids,
// every panel placed on the 24-column grid, every query with an
// expression on the data source variable, and the instance variable used.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/sbc-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
			Targets []struct {
				Expr       string `json:"expr"`
				RefID      string `json:"refId"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) < 10 {
		t.Fatalf("uid %q title %q panels %d", d.UID, d.Title, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["instance"] {
		t.Errorf("variables %v, want datasource and instance", vars)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q at %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			if q.Expr == "" || q.RefID == "" || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query %+v", p.Title, q)
			}
			if !strings.Contains(q.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: query %q ignores the instance variable", p.Title, q.Expr)
			}
		}
	}
	if queries < 20 {
		t.Errorf("%d queries", queries)
	}
}

// unitKeys reads the [Service] assignments of a unit file.
func unitKeys(t *testing.T, name string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = l
		case section == "[Service]":
			k, v, _ := strings.Cut(l, "=")
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TestSystemdUnit: the unit grants CAP_NET_BIND_SERVICE alone, forbids
// new privileges, makes the system read-only but the state directory;
// the kernel-defence drop-in adds exactly the XDP and nftables
// capabilities. systemd-analyze verifies both (the binary replaced by
// /bin/true: it is not installed here).
func TestSystemdUnit(t *testing.T) {
	u := unitKeys(t, "systemd/sbc.service")
	for k, want := range map[string]string{
		"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/sbc", "StateDirectory": "sbc",
		"ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
		"ProtectKernelModules": "yes", "MemoryDenyWriteExecute": "yes", "User": "sbc",
	} {
		if got := u[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	d := unitKeys(t, "systemd/sbc.service.d/kernel-defence.conf")
	if got := strings.Fields(strings.Join(d["CapabilityBoundingSet"], " ")); strings.Join(got, " ") != "CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_BPF CAP_PERFMON" {
		t.Errorf("drop-in capabilities %q", got)
	}

	analyze := needTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	unit, err := os.ReadFile("systemd/sbc.service")
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.ReplaceAll(string(unit), "/usr/local/bin/sbc", "/bin/true")
	if err := os.WriteFile(filepath.Join(dir, "sbc.service"), []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on a key it ignores (unknown, or a bad value): any
	// line it prints is a failure.
	if out := run(t, dir, analyze, "verify", filepath.Join(dir, "sbc.service")); strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify:\n%s", out)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sbc.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("systemd/sbc.service.d/kernel-defence.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sbc.service.d", "kernel-defence.conf"), dropIn, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", filepath.Join(dir, "sbc.service"))
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
	}
}
