package sbc

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
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

// envOpts varies the test policy, which newEnv builds with
// internal/testpolicy (testpolicy.New with the addresses above). The typed
// fields and edit are the way to change it; the string fields are raw TOML
// escape hatches, kept for tests written before the builder.
type envOpts struct {
	backends  []sipua.BackendOptions // default: one answering backend
	targets   []string               // pool targets of peers the test drives itself (no default backend then)
	transport string                 // pool transport (default udp)
	admin     bool                   // start the admin listener on a free port
	stateDir  string                 // [server] state_dir
	limits    *testpolicy.Limits     // [limits]
	autoBlock *testpolicy.AutoBlock  // [autoblock]
	// edit changes the built policy last (after the fields above and the
	// raw TOML below), e.g. p.Routing.TargetTimeout or extra trunks.
	edit func(p *testpolicy.Policy)
	// log is the SBC's logger (default testLogger).
	log *slog.Logger
	// udpReaders is Options.UDPReaders (default GOMAXPROCS).
	udpReaders int

	policy  string // extra TOML appended to the generated policy
	routing string // replaces the [routing] table
	calls   string // replaces the [calls] table
	health  string // replaces [pool.health]
	headers string // replaces [headers]
	trunk   string // extra keys of the [[trunk]] table

}

type env struct {
	t        *testing.T
	sbc      *SBC
	pol      *policy.Policy
	pb       *testpolicy.Policy // the policy's builder: reload tests change a Clone
	toml     string             // the policy text
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
	var targets []string
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
		targets = append(targets, addr)
	}
	targets = append(targets, o.targets...)
	pb := envPolicy(o, transport, targets)
	p := pb.Parse(t)
	e.pb = pb
	e.toml = pb.TOML()
	e.pol = p
	lg := o.log
	if lg == nil {
		lg = testLogger()
	}
	s := startSBC(t, p, Options{Logger: lg, UDPReaders: o.udpReaders})
	e.sbc = s
	ext, _ := s.ListenAddr("external", "udp")
	e.ext = ext.String()
	e.caller = e.newCaller(callerIP + ":0")
	return e
}

// startSBC builds an SBC on p and starts it: its listeners are open (port
// 0 in p: the kernel's choice, see ListenAddr and AdminAddr). The test's
// cleanup closes it.
func startSBC(t *testing.T, p *policy.Policy, opt Options) *SBC {
	t.Helper()
	s, err := New(p, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// envPolicy builds newEnv's policy for the backends at targets.
func envPolicy(o envOpts, transport string, targets []string) *testpolicy.Policy {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, targets...)
	pb.Server = testpolicy.Server{UserAgent: "TestSBC", LogLevel: "debug", StateDir: o.stateDir}
	pb.Admin = adminListen(o.admin)
	carrier := pb.Trunk("carrier")
	carrier.Sources = []string{callerIP + "/32"}
	carrier.Extra = o.trunk
	pbx := pb.Pool("pbx")
	pbx.Transport = transport
	if o.health != "" {
		pbx.Health = nil
		pbx.Extra = "  [pool.health]\n" + o.health
	}
	pb.Routing = &testpolicy.Routing{DefaultPool: "pbx", TargetTimeout: policy.D(300 * time.Millisecond), MaxAttempts: 3, RetryAfter: 7}
	pb.Calls = &testpolicy.Calls{RingTimeout: policy.D(10 * time.Second)}
	pb.Limits = o.limits
	pb.AutoBlock = o.autoBlock
	if o.routing != "" {
		pb.Routing = nil
	}
	if o.calls != "" {
		pb.Calls = nil
	}
	pb.Extra = strings.Join(slices.DeleteFunc([]string{o.routing, o.calls, o.headers, o.policy},
		func(s string) bool { return s == "" }), "\n\n")
	if o.edit != nil {
		o.edit(pb)
	}
	return pb
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
// trunkOptionsTCP checks that the trunk (callerIP) still gets an OPTIONS
// answered over a new TCP connection to addr; what names the moment.
func (e *env) trunkOptionsTCP(addr netip.AddrPort, what string) {
	e.t.Helper()
	tc, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Transport: "tcp", Logger: testLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	defer tc.Close()
	if r, err := tc.Options(e.ctx, addr.String()); err != nil || r.StatusCode != 200 {
		e.t.Fatalf("trunk OPTIONS over TCP %s: %v %v", what, r, err)
	}
}

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
