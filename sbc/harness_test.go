package sbc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/policy"
)

// Addresses of the in-process integration tests. Each side has its own
// loopback address so topology-hiding checks can look for it.
const (
	callerIP   = "127.0.0.1"  // the trunk
	sbcExtIP   = "127.0.0.3"  // SBC external realm
	sbcIntIP   = "127.0.0.4"  // SBC internal realm
	backendIP  = "127.0.0.2"  // backends (several on distinct ports)
	strangerIP = "127.0.0.66" // not a trunk
)

type envOpts struct {
	backends  []sipua.BackendOptions // default: one answering backend
	targets   []string               // pool targets of peers the test drives itself (no default backend then)
	policy    string                 // extra TOML appended to the generated policy
	routing   string                 // replaces the [routing] table
	calls     string                 // replaces the [calls] table
	health    string                 // replaces [pool.health]
	headers   string                 // replaces [headers]
	transport string                 // pool transport (default udp)
	trunk     string                 // extra keys of the [[trunk]] table
	admin     bool                   // start the admin listener on a free port
	stateDir  string                 // [server] state_dir
}

type env struct {
	t        *testing.T
	sbc      *SBC
	pol      *policy.Policy
	toml     string // the policy text, for reload tests
	caller   *sipua.Caller
	backends []*sipua.Backend
	ext      string // SBC external UDP address
	ctx      context.Context
}

func testLogger() *slog.Logger {
	if os.Getenv("SBC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx}
	if o.backends == nil && o.targets == nil {
		o.backends = []sipua.BackendOptions{{}}
	}
	transport := o.transport
	if transport == "" {
		transport = "udp"
	}
	var targets strings.Builder
	for i, bo := range o.backends {
		if bo.UDP == "" {
			bo.UDP = backendIP + ":0"
		}
		if transport == "tcp" && bo.TCP == "" {
			bo.TCP = backendIP + ":0"
		}
		if bo.Logger == nil {
			bo.Logger = testLogger()
		}
		b, err := sipua.NewBackend(bo)
		if err != nil {
			t.Fatalf("backend %d: %v", i, err)
		}
		t.Cleanup(func() { b.Close() })
		e.backends = append(e.backends, b)
		addr := b.Addr()
		if transport == "tcp" {
			addr = b.TCPAddr()
		}
		fmt.Fprintf(&targets, "  [[pool.target]]\n  address = %q\n", addr)
	}
	for _, addr := range o.targets {
		fmt.Fprintf(&targets, "  [[pool.target]]\n  address = %q\n", addr)
	}
	orDefault := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	toml := fmt.Sprintf(`
[server]
user_agent = "TestSBC"
log_level = "debug"
state_dir = %[11]q

[admin]
listen = %[12]q

[[realm]]
name = "external"
  [[realm.listener]]
  transport = "udp"
  bind = "%[1]s:0"
  [[realm.listener]]
  transport = "tcp"
  bind = "%[1]s:0"

[[realm]]
name = "internal"
  [[realm.listener]]
  transport = "udp"
  bind = "%[2]s:0"
  [[realm.listener]]
  transport = "tcp"
  bind = "%[2]s:0"

[[trunk]]
name = "carrier"
realm = "external"
sources = ["%[3]s/32"]
%[13]s

[[pool]]
name = "pbx"
realm = "internal"
transport = %[4]q
%[5]s
  [pool.health]
%[6]s

%[7]s

%[8]s

%[9]s

%[10]s
`, sbcExtIP, sbcIntIP, callerIP, transport, targets.String(),
		orDefault(o.health, `  interval = "0s"`),
		orDefault(o.routing, "[routing]\ndefault_pool = \"pbx\"\ntarget_timeout = \"300ms\"\nmax_attempts = 3\nretry_after = 7"),
		orDefault(o.calls, "[calls]\nring_timeout = \"10s\""),
		orDefault(o.headers, ""),
		o.policy, o.stateDir, adminListen(o.admin), o.trunk)
	p, err := policy.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, toml)
	}
	e.pol = p
	e.toml = toml
	s, err := New(p, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.sbc = s
	ext, _ := s.ListenAddr("external", "udp")
	e.ext = ext.String()
	e.caller = e.newCaller(callerIP + ":0")
	return e
}

func adminListen(on bool) string {
	if on {
		return "127.0.0.1:0"
	}
	return ""
}

func (e *env) newCaller(addr string) *sipua.Caller {
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: addr, Logger: testLogger(), UserAgent: "CarrierSwitch/1.0"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// dial places a call to the SBC and waits for its final response.
func (e *env) dial(opts sipua.DialOptions) (*sipua.Call, *sip.Response) {
	e.t.Helper()
	if opts.SDP == nil && !opts.DelayedOffer {
		opts.SDP = sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")
	}
	call, err := e.caller.Dial(e.ctx, e.ext, opts)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	res, err := call.WaitFinal(e.ctx)
	if err != nil {
		e.t.Fatalf("final response: %v", err)
	}
	return call, res
}

// counter reads one labelled value of a counter vector.
func (e *env) calls(result string) float64 {
	return testutil.ToFloat64(e.sbc.metrics.Calls.WithLabelValues(result))
}

func (e *env) dropped(stage, reason string) float64 {
	return testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(stage, reason))
}

// eventually polls cond until it holds or the test context ends. It is
// for state the SBC updates asynchronously (metrics after a BYE); it never
// asserts on how long that took.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// assertHidden checks that no message received by a side carries any of
// the given strings in its start line or headers (bodies excluded: SDP is
// passed through untouched until media anchoring).
func assertHidden(t *testing.T, side string, msgs []sipua.Msg, secrets ...string) {
	t.Helper()
	if len(msgs) == 0 {
		t.Fatalf("%s received nothing", side)
	}
	for _, m := range msgs {
		head := m.Head()
		for _, s := range secrets {
			if s != "" && strings.Contains(head, s) {
				t.Errorf("%s received %q in:\n%s", side, s, head)
			}
		}
	}
}

func testutilValue(c interface{ Desc() *prometheus.Desc }) float64 {
	if cc, ok := c.(prometheus.Collector); ok {
		return testutil.ToFloat64(cc)
	}
	return 0
}
