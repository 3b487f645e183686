//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"golang.org/x/sys/unix"
)

// Addresses inside the test's namespaces (never on the host).
const (
	sbcIP     = "10.77.0.1" // the SBC's external listener, on the veth in ns "sbc"
	attackIP  = "10.77.0.2" // the attacker, on the veth in ns "peer"
	trunkIP   = "10.77.0.3" // trunk "carrier", on the veth in ns "peer"
	backendIP = "10.77.0.4" // the SIPp UAS when policyOpts.backendOnVeth, on the veth in ns "peer"
	sipPort   = 5060
	uasPort   = 5080 // SIPp UAS in ns "sbc", on 127.0.0.1
	uacPort   = 5070 // SIPp UAC in ns "peer", on trunkIP
	adminAddr = "127.0.0.1:9090"
)

var attackPrefix = netip.MustParsePrefix(attackIP + "/32")

// Bounds of every wait: generous, so that only a real failure trips them.
const (
	startTimeout = 20 * time.Second // binary up and answering the admin API
	stopTimeout  = 15 * time.Second // binary gone after SIGTERM
	waitTimeout  = 10 * time.Second // a counter or a list reaching a value
	sippTimeout  = 30 * time.Second // one SIPp UAC run
)

// requirePriv skips a test that needs root, or fails it when the CI demands
// privileged tests (SBC_REQUIRE_PRIV=1).
func requirePriv(t testing.TB) {
	t.Helper()
	netnstest.RequirePriv(t)
}

// requireTools skips the test when a needed program is missing (Debian:
// iproute2, util-linux, nftables, sip-tester), or fails it when
// SBC_REQUIRE_PRIV=1 (CI, where they are installed).
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("SBC_REQUIRE_PRIV") == "1" {
				t.Fatalf("%s is needed: %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// ---- the binary ----

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// sbcBinary returns the sbc binary: $SBC_BIN, or built once per test run
// from ../cmd/sbc.
func sbcBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("SBC_BIN"); p != "" {
			binPath, buildErr = filepath.Abs(p)
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		if buildDir, buildErr = os.MkdirTemp("", "sbc-e2e-bin-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "sbc")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", binPath, "./cmd/sbc")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sbc: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// ---- namespaces ----

// testNet is a pair of network namespaces made by the test, joined by a
// veth: "peer" (attacker and trunk addresses) and "sbc" (the SBC, the
// backend, the admin API on loopback). Neighbours are static: no ARP
// traffic depends on an address a test blocks.
type testNet struct {
	sbcNS, peerNS string
	sbcIf, peerIf string
	admin         *http.Client
}

var netSeq atomic.Int32

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	requirePriv(t)
	requireTools(t, "ip", "nsenter")
	netSeq.Add(1) // numbers the nftables table names of the tests
	tn := &testNet{
		sbcNS:  netnstest.New(t, "sbc-e2e"),
		peerNS: netnstest.New(t, "sbc-e2e"),
		sbcIf:  "sbc0",
		peerIf: "peer0",
	}
	// Returns once a datagram from the trunk reaches the sbc namespace:
	// link activation is asynchronous and drops what is sent before.
	netnstest.Veth(t, netns.Veth{
		A: netns.End{NS: tn.peerNS, Name: tn.peerIf,
			Addrs: []netip.Prefix{netip.MustParsePrefix(attackIP + "/24"), netip.MustParsePrefix(trunkIP + "/24"),
				netip.MustParsePrefix(backendIP + "/24")}},
		B:                netns.End{NS: tn.sbcNS, Name: tn.sbcIf, Addrs: []netip.Prefix{netip.MustParsePrefix(sbcIP + "/24")}},
		StaticNeighbours: true,
		Probes:           []netns.Probe{{Src: netip.MustParseAddr(trunkIP), Dst: netip.MustParseAddr(sbcIP)}},
		ProbeTimeout:     waitTimeout,
	})
	tn.admin = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			// The admin API listens on the loopback of ns "sbc": dial
			// from a socket made in that namespace.
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := netns.Do(tn.sbcNS, func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
			MaxIdleConnsPerHost: 2,
		},
	}
	t.Cleanup(tn.admin.CloseIdleConnections)
	return tn
}

// udpFrom returns a UDP socket in the peer namespace bound to src and
// connected to the SBC's address and port.
func (tn *testNet) udpFrom(t testing.TB, src string, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := netns.Do(tn.peerNS, func() error {
		var err error
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(sbcIP), Port: port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nsCommand runs a program in a namespace's network only (nsenter --net),
// keeping the test's mount namespace: the private bpffs stays visible.
// The process is killed if the test process dies.
func nsCommand(ctx context.Context, ns string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns.Path(ns), "--"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// nsOutput runs a short command in a namespace and returns its output.
func nsOutput(t testing.TB, ns string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := nsCommand(ctx, ns, args...).CombinedOutput()
	return string(out), err
}

// xdpAttached reports whether an XDP program is attached to the SBC's veth.
func (tn *testNet) xdpAttached(t testing.TB) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", tn.sbcNS, "link", "show", "dev", tn.sbcIf).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v\n%s", err, out)
	}
	return strings.Contains(string(out), "prog/xdp")
}

// mountBPFFS mounts a private bpf filesystem on a temporary directory,
// unmounted at cleanup (which drops every pin in it).
func mountBPFFS(t testing.TB) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// ---- policy ----

type policyOpts struct {
	stateDir string
	// XDP
	xdp       bool
	xdpIfaces []string
	xdpMode   string
	xdpScope  string // "" (default "sip") or "host"
	ratePPS   int    // xdp.rate_pps
	burst     int    // xdp.burst
	pinDir    string // always set: with XDP off, the SBC removes pins found there
	// nftables
	nft        bool
	nftTable   string
	trunksOnly bool
	// backendOnVeth: the internal realm listens on sbcIP:5062 and the pool
	// target is backendIP:uasPort in ns "peer" (startUASAt), so that the
	// backend's traffic crosses the veth (and XDP); otherwise both are on
	// the loopback of ns "sbc".
	backendOnVeth bool
	// auto-block
	autoblock bool
	threshold int
	// unknownSourceAction is headers.unknown_source_action; default
	// "drop" (the gate drops a stranger's datagrams before the parser).
	unknownSourceAction string
	// path: write the policy there (a rewrite for a reload); default a
	// new temporary file.
	path string
}

func writePolicy(t testing.TB, o policyOpts) string {
	t.Helper()
	if o.pinDir == "" {
		t.Fatal("policyOpts.pinDir must be set (never the host's default)")
	}
	if o.nftTable == "" {
		o.nftTable = "sbc"
	}
	if o.xdpMode == "" {
		o.xdpMode = "generic"
	}
	if o.threshold == 0 {
		o.threshold = 10
	}
	if o.unknownSourceAction == "" {
		o.unknownSourceAction = "drop"
	}
	lo := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	internal, target := lo(5062), lo(uasPort)
	if o.backendOnVeth {
		internal, target = fmt.Sprintf("%s:5062", sbcIP), fmt.Sprintf("%s:%d", backendIP, uasPort)
	}
	pol := &testpolicy.Policy{
		Comment: "written by the e2e tests",
		Server:  testpolicy.Server{LogLevel: "info", StateDir: o.stateDir},
		Admin:   adminAddr,
		Realms: []testpolicy.Realm{
			// The relay range overlaps the kernel's ephemeral ports on
			// purpose: the scope tests check the start-up warning.
			{Name: "external", Listeners: []testpolicy.Listener{{Transport: "udp", Bind: fmt.Sprintf("%s:%d", sbcIP, sipPort)}},
				Media: &testpolicy.RealmMedia{Ports: []int{20000, 39999}}},
			{Name: "internal", Listeners: []testpolicy.Listener{{Transport: "udp", Bind: internal}},
				Media: &testpolicy.RealmMedia{Ports: []int{20000, 39999}}},
		},
		Trunks: []testpolicy.Trunk{{Name: "carrier", Realm: "external", Sources: []string{trunkIP + "/32"}}},
		Pools: []testpolicy.Pool{{Name: "uas", Realm: "internal", Targets: testpolicy.Targets(target),
			Health: &testpolicy.Health{Interval: policy.D(0)}}},
		Routing: &testpolicy.Routing{DefaultPool: "uas"},
		Headers: &testpolicy.Headers{UnknownSourceAction: o.unknownSourceAction},
		Limits:  &testpolicy.Limits{SourcePPS: new(100000), SourcePPSBurst: 100000, SourceCPS: new(1000)},
		AutoBlock: &testpolicy.AutoBlock{Enabled: new(o.autoblock), Threshold: o.threshold,
			Window: policy.D(60 * time.Second), BlockFor: policy.D(10 * time.Minute),
			ScannerUserAgents: []string{"friendly-scanner"}},
		XDP: &testpolicy.XDP{Enabled: o.xdp, Interfaces: o.xdpIfaces, Mode: o.xdpMode, PinDir: o.pinDir,
			Scope: o.xdpScope, RatePPS: o.ratePPS, Burst: o.burst},
		Nftables: &testpolicy.Nftables{Enabled: o.nft, Table: o.nftTable, TrunksOnly: o.trunksOnly},
	}
	text := pol.TOML()
	path := o.path
	if path == "" {
		path = filepath.Join(t.TempDir(), "policy.toml")
	}
	// Written next to it and renamed over it: a running SBC watching the
	// file never reads half of it.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- the SBC process ----

type sbcProc struct {
	tn   *testNet
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// startSBC runs the binary in the sbc namespace and waits until its admin
// API answers. It is stopped at cleanup if the test has not stopped it.
func startSBC(t testing.TB, tn *testNet, cfg string) *sbcProc {
	t.Helper()
	bin := sbcBinary(t)
	p := &sbcProc{tn: tn, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = nsCommand(context.Background(), tn.sbcNS, bin, "run", "-config", cfg)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sbc: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || os.Getenv("SBC_E2E_LOGS") == "1" {
			t.Logf("sbc log (pid %d):\n%s", p.cmd.Process.Pid, tail(p.logs.String(), 6000))
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("sbc exited during start-up: %v\n%s", p.err, tail(p.logs.String(), 4000))
		default:
		}
		if res, err := tn.admin.Get("http://" + adminAddr + "/healthz"); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sbc admin API not answering after %s\n%s", startTimeout, tail(p.logs.String(), 4000))
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a clean exit (status 0); idempotent.
func (p *sbcProc) stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("sbc exit after SIGTERM: %v\n%s", p.err, tail(p.logs.String(), 4000))
		}
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("sbc still running %s after SIGTERM: killed\n%s", stopTimeout, tail(p.logs.String(), 4000))
	}
	p.tn.admin.CloseIdleConnections()
}

// logLine returns the first log line containing every one of subs
// (case-insensitive).
func (p *sbcProc) logLine(subs ...string) (string, bool) {
	for line := range strings.SplitSeq(p.logs.String(), "\n") {
		l := strings.ToLower(line)
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, strings.ToLower(s))
		}
		if ok {
			return line, true
		}
	}
	return "", false
}

// ---- admin API ----

type blockEntry struct {
	Prefix  string    `json:"prefix"`
	Reason  string    `json:"reason"`
	Origin  string    `json:"origin"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

func (tn *testNet) do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+adminAddr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+testpolicy.AdminKey) // the test policy's key (role admin)
	res, err := tn.admin.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return res.StatusCode, b
}

// block adds a prefix through the admin API and expects 201.
func (tn *testNet) block(t testing.TB, prefix netip.Prefix, reason, ttl string) {
	t.Helper()
	body := map[string]string{"prefix": prefix.String(), "reason": reason}
	if ttl != "" {
		body["ttl"] = ttl
	}
	if code, b := tn.do(t, http.MethodPost, "/v1/blocklist", body); code != http.StatusCreated {
		t.Fatalf("POST /v1/blocklist %s: %d %s, want 201", prefix, code, b)
	}
}

// unblock removes a prefix through the admin API and returns the status.
func (tn *testNet) unblock(t testing.TB, prefix netip.Prefix) int {
	t.Helper()
	code, _ := tn.do(t, http.MethodDelete, "/v1/blocklist?prefix="+prefix.String(), nil)
	return code
}

func (tn *testNet) blocklist(t testing.TB) []blockEntry {
	t.Helper()
	code, b := tn.do(t, http.MethodGet, "/v1/blocklist", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/blocklist: %d %s", code, b)
	}
	var out []blockEntry
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("GET /v1/blocklist: %v\n%s", err, b)
	}
	return out
}

func findEntry(es []blockEntry, p netip.Prefix) (blockEntry, bool) {
	for _, e := range es {
		if q, err := netip.ParsePrefix(e.Prefix); err == nil && q == p {
			return e, true
		}
	}
	return blockEntry{}, false
}

// ---- metrics ----

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []sample

func (tn *testNet) metrics(t testing.TB) metrics {
	t.Helper()
	code, b := tn.do(t, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	m, err := parseMetrics(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// parseMetrics reads the Prometheus text format as client_golang writes
// it. Enough for the SBC's metrics: label values with a '"' escape or a
// space are not handled.
func parseMetrics(b []byte) (metrics, error) {
	var out metrics
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		s := sample{labels: map[string]string{}, value: v}
		head := line[:sp]
		if i := strings.IndexByte(head, '{'); i >= 0 {
			s.name = head[:i]
			body := strings.TrimSuffix(head[i+1:], "}")
			for body != "" {
				eq := strings.Index(body, `="`)
				if eq < 0 {
					return nil, fmt.Errorf("metrics labels %q", head)
				}
				end := strings.Index(body[eq+2:], `"`)
				if end < 0 {
					return nil, fmt.Errorf("metrics labels %q", head)
				}
				s.labels[body[:eq]] = body[eq+2 : eq+2+end]
				body = strings.TrimPrefix(body[eq+2+end+1:], ",")
			}
		} else {
			s.name = head
		}
		out = append(out, s)
	}
	return out, nil
}

// sum adds the samples of name whose labels include every (key, value)
// of kv; 0 when none.
func (m metrics) sum(name string, kv ...string) float64 {
	var total float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// Names of the counters the tests compare.
var (
	xdpDeny     = []string{"sbc_xdp_packets_total", "action", "drop_deny"}
	nftDropped  = []string{"sbc_nft_dropped_packets_total"}
	attackSeen  = []string{"sbc_dropped_total", "stage", "filter", "reason", "unknown_source"} // the attacker's datagrams past the blocklist: no trunk, dropped at the gate (sbc/gate.go)
	filterBlock = []string{"sbc_dropped_total", "stage", "filter", "reason", "blocked"}
	answered    = []string{"sbc_calls_total", "result", "answered"}
)

func (m metrics) get(c []string) float64 { return m.sum(c[0], c[1:]...) }

// waitMetric polls /metrics until cond holds for the value of counter c,
// for at most waitTimeout, and returns the last value.
func (tn *testNet) waitMetric(t testing.TB, what string, c []string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		v := tn.metrics(t).get(c)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v = %v after %s", what, c[0], c[1:], v, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond) // polling another process's counter
	}
}

// waitCond polls cond for at most waitTimeout; it fails the test with
// what and the last detail cond gave.
func waitCond(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (%s)", what, waitTimeout, detail)
		}
		time.Sleep(20 * time.Millisecond) // polling kernel or process state
	}
}

// ---- traffic ----

var msgSeq atomic.Int64

// sendOptions sends n OPTIONS requests (each its own transaction) from
// src in the peer namespace to the SBC's SIP port, one datagram each.
func (tn *testNet) sendOptions(t testing.TB, src string, n int, userAgent string) {
	t.Helper()
	c := tn.udpFrom(t, src, sipPort)
	defer c.Close()
	lport := c.LocalAddr().(*net.UDPAddr).Port
	for range n {
		i := msgSeq.Add(1)
		msg := fmt.Sprintf("OPTIONS sip:probe@%[1]s:%[2]d SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[3]s:%[4]d;branch=z9hG4bK-e2e-%[5]d\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:e2e@%[3]s>;tag=e2e%[5]d\r\n"+
			"To: <sip:probe@%[1]s>\r\n"+
			"Call-ID: e2e-%[5]d@%[3]s\r\n"+
			"CSeq: 1 OPTIONS\r\n"+
			"User-Agent: %[6]s\r\n"+
			"Content-Length: 0\r\n\r\n", sbcIP, sipPort, src, lport, i, userAgent)
		_, err := c.Write([]byte(msg))
		if errors.Is(err, syscall.ECONNREFUSED) {
			// An ICMP error for an earlier datagram was reported
			// instead of sending this one: send it again.
			_, err = c.Write([]byte(msg))
		}
		if err != nil {
			t.Fatalf("send OPTIONS from %s: %v", src, err)
		}
	}
}

// ---- SIPp ----

// startUAS runs a SIPp UAS (built-in scenario) on 127.0.0.1:uasPort in the
// sbc namespace for the whole test; it answers every call.
func startUAS(t testing.TB, tn *testNet) {
	t.Helper()
	startUASAt(t, tn.sbcNS, "127.0.0.1")
}

// startUASAt runs the SIPp UAS on ip:uasPort in namespace ns (for
// policyOpts.backendOnVeth: backendIP in tn.peerNS).
func startUASAt(t testing.TB, ns, ip string) {
	t.Helper()
	startSIPpUAS(t, ns, ip, "-sn", "uas")
}

// startSIPpUAS runs SIPp on ip:uasPort in namespace ns with the scenario
// arguments given ("-sn uas", "-sf FILE") and waits until it is bound.
// The returned function stops it (idempotent; also run at cleanup).
func startSIPpUAS(t testing.TB, ns, ip string, scenario ...string) (stop func()) {
	t.Helper()
	requireTools(t, "sipp")
	out := &syncBuffer{}
	args := append([]string{"sipp"}, scenario...)
	args = append(args, "-i", ip, "-p", strconv.Itoa(uasPort), "-nostdin", "-trace_err")
	cmd := nsCommand(context.Background(), ns, args...)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("sipp uas %v output:\n%s", scenario, tail(out.String(), 2000))
		}
	})
	// Wait until bound: /proc/PID/net/udp lists the sockets of the
	// process's network namespace (addresses in host byte order, hex).
	a4 := netip.MustParseAddr(ip).As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a4[3], a4[2], a4[1], a4[0], uasPort)
	deadline := time.Now().Add(waitTimeout)
	for {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", cmd.Process.Pid)); err == nil && bytes.Contains(b, []byte(want)) {
			return stop
		}
		select {
		case <-done:
			t.Fatalf("sipp uas exited before binding: %v\n%s", werr, tail(out.String(), 2000))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sipp uas did not bind %s:%d in %s", ip, uasPort, waitTimeout)
		}
	}
}

// runUAC places calls from the trunk address with SIPp's built-in UAC
// scenario (INVITE, 200, ACK, BYE) and returns nil when SIPp exits 0:
// every call completed.
func runUAC(tn *testNet, calls int, dir string) error {
	return runSIPpUAC(tn, calls, dir, "-sn", "uac")
}

// runSIPpUAC places calls from the trunk address with the SIPp scenario
// the arguments name ("-sn uac", "-sf FILE") and returns nil when SIPp
// exits 0: every call went through its scenario.
func runSIPpUAC(tn *testNet, calls int, dir string, scenario ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), sippTimeout)
	defer cancel()
	args := append([]string{"sipp"}, scenario...)
	cmd := nsCommand(ctx, tn.peerNS, append(args, "-i", trunkIP, "-p", strconv.Itoa(uacPort),
		"-s", "1000", "-m", strconv.Itoa(calls), "-r", "20", "-nostdin", "-trace_err",
		"-timeout", strconv.Itoa(int(sippTimeout/time.Second)-5), "-timeout_error",
		fmt.Sprintf("%s:%d", sbcIP, sipPort))...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var errs string
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			errs += string(b)
		}
		return fmt.Errorf("sipp uac %v (%d calls from %s): %v\n%s\n%s", scenario, calls, trunkIP, err, tail(string(out), 1500), tail(errs, 1500))
	}
	return nil
}

// callsComplete runs calls from the trunk and checks that the SBC counts
// them answered.
func (tn *testNet) callsComplete(t testing.TB, calls int) {
	t.Helper()
	before := tn.metrics(t).get(answered)
	if err := runUAC(tn, calls, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	tn.waitMetric(t, "trunk calls answered", answered, func(v float64) bool { return v >= before+float64(calls) })
}

// ---- pinned XDP maps (read by the test itself) ----

// pinnedDenyDrops sums the pinned per-CPU counter of packets dropped as
// denied (index 1 of sbc_counters).
func pinnedDenyDrops(t testing.TB, pinDir string) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "sbc_counters"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("pinned counters: %v", err)
	}
	defer m.Close()
	var per []uint64
	if err := m.Lookup(uint32(1), &per); err != nil {
		t.Fatalf("pinned counters: %v", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// lpmV4Key is the key of the sbc_deny_v4 LPM trie: prefix length in host
// order, address in network order.
type lpmV4Key struct {
	PrefixLen uint32
	Addr      [4]byte
}

func openDenyV4(t testing.TB, pinDir string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "sbc_deny_v4"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("pinned deny map: %v", err)
	}
	return m
}

// denied reports whether the deny map holds exactly the prefix p.
func denied(m *ebpf.Map, p netip.Prefix) (bool, error) {
	var v uint8
	err := m.Lookup(lpmV4Key{PrefixLen: uint32(p.Bits()), Addr: p.Addr().As4()}, &v)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return false, nil
	}
	return false, err
}

func waitDenied(t testing.TB, pinDir string, p netip.Prefix, want bool) {
	t.Helper()
	m := openDenyV4(t, pinDir)
	defer m.Close()
	waitCond(t, fmt.Sprintf("pinned deny map holds %s = %v", p, want), func() (bool, string) {
		got, err := denied(m, p)
		return err == nil && got == want, fmt.Sprintf("holds=%v err=%v", got, err)
	})
}

// ---- small things ----

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Bounded: a runaway log cannot exhaust the test's memory.
	if s.b.Len() > 32<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
