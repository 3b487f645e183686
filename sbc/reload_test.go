package sbc

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
)

// reloadBase returns the policy in force in the reload tests: loopback
// UDP only (the realms on sbcExtIP and sbcIntIP), no admin listener, no
// kernel fast path (xdp and nftables off), and a value of its own for
// every live setting that changeLive changes.
func reloadBase() *testpolicy.Policy {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5080").UDPOnly()
	pb.Server = testpolicy.Server{UserAgent: "ReloadSBC", LogLevel: "warn"}
	carrier := pb.Trunk("carrier")
	carrier.CPS, carrier.MaxCalls = 5, 7
	pb.Limits = &testpolicy.Limits{SourcePPS: new(50), SourceCPS: new(3), RegisterRate: new(2)}
	pb.AutoBlock = &testpolicy.AutoBlock{Threshold: 10, NeverBlock: []string{"192.0.2.0/24"}, ScannerUserAgents: []string{"sipvicious"}}
	pb.XDP = &testpolicy.XDP{Interfaces: []string{"lo"}}
	pb.Nftables = &testpolicy.Nftables{}
	return pb
}

// changeLive changes every live setting the live-state probe sees.
func changeLive(p *testpolicy.Policy) {
	p.Server.LogLevel = "error"
	p.Limits.SourcePPS = new(80)
	p.Limits.SourceCPS = new(6)
	p.Limits.RegisterRate = new(4)
	carrier := p.Trunk("carrier")
	carrier.CPS, carrier.MaxCalls = 9, 11
	p.AutoBlock.Threshold = 20
	p.AutoBlock.NeverBlock = []string{"192.0.2.0/24", "198.51.100.0/24"}
	p.AutoBlock.ScannerUserAgents = []string{"sipvicious", "evilscan"}
	p.Pool("pbx").Targets[0].Address = backendIP + ":5090"
}

// basePolicy parses reloadBase changed by edits, in order (nil: no
// change).
func basePolicy(t testing.TB, edits ...func(p *testpolicy.Policy)) *policy.Policy {
	t.Helper()
	pb := reloadBase()
	for _, e := range edits {
		if e != nil {
			e(pb)
		}
	}
	return pb.Parse(t)
}

// newReloadSBC builds an SBC on reloadBase; started: its listeners are
// open (on 127.0.0.3/4, ports chosen by the kernel).
func newReloadSBC(t *testing.T, opt Options, started bool) *SBC {
	t.Helper()
	if opt.Logger == nil && opt.LogLevel == nil {
		opt.Logger = testLogger()
	}
	if started {
		return startSBC(t, basePolicy(t), opt)
	}
	s, err := New(basePolicy(t), opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reloads(s *SBC, result string) float64 {
	return testutil.ToFloat64(s.metrics.ReloadsTotal.WithLabelValues(result))
}

// liveState is what a reload changes, read from the running SBC.
type liveState struct {
	snap     *snapshot
	level    slog.Level
	never    []netip.Prefix
	tracker  ratelimit.TrackerConfig
	scanner  []string
	maxCalls int
	// bursts: events one fresh source may send at one instant, per
	// limiter (source_pps, source_cps, register_rate).
	pps, cps, reg int
	targets       map[string]*target
}

var probeKeys atomic.Uint32

// burstOf counts how many events a source never seen before may send at
// one instant (a fixed time: nothing refills while counting).
func burstOf(l *ratelimit.Limiter) int {
	n := probeKeys.Add(1)
	key := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(n >> 8), byte(n)}), 32)
	at := time.Unix(1_700_000_000, 0)
	for i := range 1000 {
		if ok, _ := l.Check(key, at, 1, 1); !ok {
			return i
		}
	}
	return 1000
}

func captureLive(s *SBC) liveState {
	s.targets.mu.Lock()
	targets := make(map[string]*target, len(s.targets.m))
	for k, v := range s.targets.m {
		targets[k] = v
	}
	s.targets.mu.Unlock()
	lvl := slog.LevelError + 4
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if s.reload.level.Level() == l {
			lvl = l
		}
	}
	return liveState{
		snap:     s.state.Load(),
		level:    lvl,
		never:    s.def.blocklist.NeverBlock(),
		tracker:  s.def.tracker.Config(),
		scanner:  s.def.scanner.Load().Patterns(),
		maxCalls: s.def.calls.Limit("carrier"),
		pps:      burstOf(s.def.pps),
		cps:      burstOf(s.def.invites),
		reg:      burstOf(s.def.registers),
		targets:  targets,
	}
}

// diffLive names the parts of the live state that differ.
func diffLive(a, b liveState) []string {
	var out []string
	check := func(name string, same bool) {
		if !same {
			out = append(out, name)
		}
	}
	check("snapshot", a.snap == b.snap)
	check("log level", a.level == b.level)
	check("never-block list", slices.Equal(a.never, b.never))
	check("tracker", reflect.DeepEqual(a.tracker, b.tracker))
	check("scanner", slices.Equal(a.scanner, b.scanner))
	check("call cap", a.maxCalls == b.maxCalls)
	check("source_pps", a.pps == b.pps)
	check("source_cps", a.cps == b.cps)
	check("register_rate", a.reg == b.reg)
	check("targets", reflect.DeepEqual(a.targets, b.targets))
	return out
}

// TestReloadFieldsClassified walks policy.Policy by reflection: every
// field must be classified in reloadFields (a new policy field fails here
// until someone decides whether a reload applies it), every restart-only
// field must name a check that exists, and the table names no field that
// is gone.
func TestReloadFieldsClassified(t *testing.T) {
	type field struct {
		key     string
		derived bool // toml:"-"
	}
	var fields []field
	textual := reflect.TypeFor[encoding.TextUnmarshaler]()
	var walk func(rt reflect.Type, prefix string)
	walk = func(rt reflect.Type, prefix string) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			key := name
			if name == "-" || name == "" {
				key = f.Name
			}
			if prefix != "" {
				key = prefix + "." + key
			}
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if name != "-" && ft.Kind() == reflect.Struct && ft.PkgPath() == rt.PkgPath() && !reflect.PointerTo(ft).Implements(textual) {
				walk(ft, key) // a table of the policy file
				continue
			}
			fields = append(fields, field{key, name == "-"})
		}
	}
	walk(reflect.TypeFor[policy.Policy](), "")
	if len(fields) < 70 {
		t.Fatalf("walked only %d fields: %v", len(fields), fields)
	}
	checks := map[string]bool{}
	for _, c := range restartChecks {
		if checks[c.key] {
			t.Errorf("restart check %s listed twice", c.key)
		}
		checks[c.key] = true
	}
	seen := map[string]bool{}
	used := map[string]bool{}
	for _, f := range fields {
		seen[f.key] = true
		r, ok := reloadFields[f.key]
		if !ok {
			t.Errorf("policy field %s is not classified in reloadFields (sbc/reload.go): does a reload apply it, or does it need a restart? Update README's reload table too", f.key)
			continue
		}
		switch r.class {
		case applyLive, notASetting:
		case needsRestart:
			if !checks[r.check] {
				t.Errorf("%s needs a restart but its check %q is not in restartChecks", f.key, r.check)
			}
			used[r.check] = true
		case derived:
			if !f.derived {
				t.Errorf("%s is read from the file; it cannot be classified derived", f.key)
			}
		default:
			t.Errorf("%s: unknown class %d", f.key, r.class)
		}
	}
	for k := range reloadFields {
		if !seen[k] {
			t.Errorf("reloadFields classifies %s, which policy.Policy does not have", k)
		}
	}
	for k := range checks {
		if !used[k] {
			t.Errorf("restart check %s guards no field", k)
		}
	}
}

// TestRestartChecks changes each restart-only setting alone and expects
// exactly that key reported. Every check must have a case here.
func TestRestartChecks(t *testing.T) {
	xdpOn := func(p *testpolicy.Policy) { p.XDP.Enabled = true } // on lo
	nftOn := func(p *testpolicy.Policy) { p.Nftables.Enabled = true }
	cases := map[string]struct {
		old, new func(p *testpolicy.Policy) // reloadBase's change in the policy in force (nil: none), in the new one
	}{
		"server.udp_read_buffer": {nil, func(p *testpolicy.Policy) { p.Server.UDPReadBuffer = 8388608 }},
		"server.udp_write_buffer": {
			func(p *testpolicy.Policy) { p.Server.UDPWriteBuffer = 4194304 },
			func(p *testpolicy.Policy) { p.Server.UDPWriteBuffer = 1048576 },
		},
		"server.tcp_idle_timeout": {nil, func(p *testpolicy.Policy) { p.Server.TCPIdleTimeout = policy.D(2 * time.Minute) }},
		"server.state_dir":        {nil, func(p *testpolicy.Policy) { p.Server.StateDir = "/nonexistent/sbc" }},
		"admin.listen":            {nil, func(p *testpolicy.Policy) { p.Admin = "127.0.0.1:9999" }},
		"admin.scheme": {func(p *testpolicy.Policy) { p.Admin = "127.0.0.1:9999" }, func(p *testpolicy.Policy) {
			p.Admin = "127.0.0.1:9999"
			p.AdminTOML = "[admin.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
		}},
		"realm":                {nil, func(p *testpolicy.Policy) { p.Realm("external").Listeners[0].Bind = sbcExtIP + ":5999" }},
		"xdp.enabled":          {nil, xdpOn},
		"xdp.interfaces":       {xdpOn, func(p *testpolicy.Policy) { xdpOn(p); p.XDP.Interfaces = []string{"lo", "eth9"} }},
		"xdp.mode":             {xdpOn, func(p *testpolicy.Policy) { xdpOn(p); p.XDP.Mode = "generic" }},
		"xdp.pin_dir":          {xdpOn, func(p *testpolicy.Policy) { xdpOn(p); p.XDP.PinDir = "/sys/fs/bpf/other" }},
		"nftables.enabled":     {nil, nftOn},
		"nftables.table":       {nftOn, func(p *testpolicy.Policy) { nftOn(p); p.Nftables.Table = "edge" }},
		"nftables.media_ports": {nftOn, func(p *testpolicy.Policy) { nftOn(p); p.Nftables.MediaPorts = []int{30000, 40000} }},
		"nftables.trunks_only": {nftOn, func(p *testpolicy.Policy) { nftOn(p); p.Nftables.TrunksOnly = true }},
		"realm.media": {nil, func(p *testpolicy.Policy) {
			p.Realm("internal").Media = &testpolicy.RealmMedia{Ports: []int{30000, 30999}}
		}},
		"media.quarantine":   {nil, func(p *testpolicy.Policy) { p.Media = &testpolicy.Media{Quarantine: policy.D(time.Second)} }},
		"media.kernel_relay": {nil, func(p *testpolicy.Policy) { p.Media = &testpolicy.Media{KernelRelay: []string{"eth0"}} }},
		"cdr":                {nil, func(p *testpolicy.Policy) { p.CDR = &testpolicy.CDR{MaxFiles: 3} }},
		"hep":                {nil, func(p *testpolicy.Policy) { p.HEP = &testpolicy.HEP{Address: "127.0.0.1:9999"} }},
		"webhook": {
			func(p *testpolicy.Policy) {
				p.Webhooks = []testpolicy.Webhook{{Name: "ops", URL: "https://hooks.example/x", Events: []string{"cdr"}, Secret: "0123456789abcdef"}}
			},
			func(p *testpolicy.Policy) {
				p.Webhooks = []testpolicy.Webhook{{Name: "ops", URL: "https://hooks.example/x", Events: []string{"cdr"}, Secret: "0123456789abcdeX"}}
			},
		},
	}
	for _, c := range restartChecks {
		if _, ok := cases[c.key]; !ok {
			t.Errorf("restart check %s has no case in TestRestartChecks", c.key)
		}
	}
	for key, c := range cases {
		a := basePolicy(t, c.old)
		b := basePolicy(t, c.new)
		got := restartChanges(a, b)
		if len(got) != 1 || !strings.HasPrefix(got[0], key+": ") {
			t.Errorf("%s changed: restartChanges = %q, want that key alone", key, got)
		}
		if same := restartChanges(a, basePolicy(t, c.old)); len(same) != 0 {
			t.Errorf("%s: the same policy reported as changed: %q", key, same)
		}
	}
	// Keys of a disabled XDP or nftables are not in use: changing them
	// while it stays off is accepted (the restart that enables it reads
	// them). Live settings and the order of listeners never count.
	a := basePolicy(t)
	b := basePolicy(t, func(p *testpolicy.Policy) {
		p.XDP = &testpolicy.XDP{Interfaces: []string{"eth9"}, Mode: "native", RatePPS: 1000}
		p.Nftables = &testpolicy.Nftables{Table: "edge", TrunksOnly: true}
		p.Limits.SourceCPS = new(30)
	})
	if got := restartChanges(a, b); len(got) != 0 {
		t.Errorf("inert or live changes reported: %q", got)
	}
	internal := func(first, second string) func(p *testpolicy.Policy) {
		return func(p *testpolicy.Policy) {
			p.Realm("internal").Listeners = []testpolicy.Listener{
				{Transport: first, Bind: sbcIntIP + ":0"}, {Transport: second, Bind: sbcIntIP + ":0"},
			}
		}
	}
	twoListeners, swapped := basePolicy(t, internal("udp", "tcp")), basePolicy(t, internal("tcp", "udp"))
	if got := restartChanges(twoListeners, swapped); len(got) != 0 {
		t.Errorf("listeners in another order reported: %q", got)
	}
}

// TestReloadRestartOnlyRefused: a reload that changes restart-only
// settings is refused as a whole, names each key with "restart to apply",
// logs it at WARN, counts it as rejected, and applies none of the live
// changes that came with it.
func TestReloadRestartOnlyRefused(t *testing.T) {
	var buf syncBuffer
	s := newReloadSBC(t, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}, true)
	before := captureLive(s)
	inForce := s.Policy()
	err := s.Reload(basePolicy(t, changeLive, func(p *testpolicy.Policy) {
		p.Server.UDPReadBuffer = 8388608
		p.Admin = "127.0.0.1:9999"
		p.Realm("external").Listeners[0].Bind = sbcExtIP + ":5999"
	}))
	var re *RestartError
	if !errors.As(err, &re) {
		t.Fatalf("Reload = %v, want a *RestartError", err)
	}
	if want := []string{"server.udp_read_buffer", "admin.listen", "realm"}; !slices.Equal(re.Keys(), want) {
		t.Errorf("keys %q, want %q", re.Keys(), want)
	}
	msg := err.Error()
	for _, w := range []string{"restart to apply", "server.udp_read_buffer: 4194304 → 8388608", `admin.listen: "" → "127.0.0.1:9999"`, "127.0.0.3:5999"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
	if s.Policy() != inForce {
		t.Error("the policy in force changed")
	}
	if d := diffLive(before, captureLive(s)); d != nil {
		t.Errorf("a refused reload changed %v", d)
	}
	if reloads(s, ReloadRejected) != 1 || reloads(s, ReloadOK) != 0 {
		t.Errorf("sbc_reload_total: rejected %v ok %v", reloads(s, ReloadRejected), reloads(s, ReloadOK))
	}
	logged := buf.String()
	for _, w := range []string{`"level":"WARN"`, "keeping the policy in force", `"result":"rejected"`, `"restart_required":["server.udp_read_buffer","admin.listen","realm"]`} {
		if !strings.Contains(logged, w) {
			t.Errorf("log %s lacks %s", logged, w)
		}
	}
}

// TestReloadFailsLateChangesNothing makes each step that builds a piece of
// the new state fail in turn, the last ones included, with a policy that
// changes every live setting. Whatever step fails, every limit, list,
// cap, target and the snapshot are as before. Then the same policy
// without the fault applies, and every probe sees the change (the probes
// are not blind).
func TestReloadFailsLateChangesNothing(t *testing.T) {
	faults := map[string]func(p *policy.Policy){
		"snapshot (trunk table)": func(p *policy.Policy) { p.Trunks = append(p.Trunks, p.Trunks[0]) },
		"never-block list": func(p *policy.Policy) {
			p.AutoBlock.NeverBlockPrefixes = append(p.AutoBlock.NeverBlockPrefixes, netip.Prefix{})
		},
		"source_pps limiter": func(p *policy.Policy) { p.Limits.SourcePPSBurst = -1 },
		"trunk cps limiter":  func(p *policy.Policy) { p.Trunks[0].CPS = 2_000_000_000 },
		"register limiter":   func(p *policy.Policy) { p.Limits.RegisterRate = 2_000_000_000 },
		"failure tracker":    func(p *policy.Policy) { p.AutoBlock.Threshold = -1 },
		"scanner matcher":    func(p *policy.Policy) { p.AutoBlock.ScannerUserAgents = []string{"evilscan", ""} },
	}
	s := newReloadSBC(t, Options{}, true)
	before := captureLive(s)
	inForce := s.Policy()
	n := 0.0
	for name, fault := range faults {
		p := basePolicy(t, changeLive)
		fault(p)
		err := s.Reload(p)
		n++
		if err == nil {
			t.Fatalf("%s: reload with a fault accepted", name)
		}
		var re *RestartError
		if errors.As(err, &re) || errors.Is(err, ErrReloadPartial) {
			t.Fatalf("%s: %v, want a plain rejection", name, err)
		}
		if s.Policy() != inForce {
			t.Fatalf("%s: the policy in force changed", name)
		}
		if d := diffLive(before, captureLive(s)); d != nil {
			t.Errorf("%s failed, yet the reload changed %v", name, d)
		}
		if reloads(s, ReloadRejected) != n {
			t.Errorf("%s: rejected = %v, want %v", name, reloads(s, ReloadRejected), n)
		}
	}
	if err := s.Reload(basePolicy(t, changeLive)); err != nil {
		t.Fatal(err)
	}
	after := captureLive(s)
	if d := diffLive(before, after); len(d) != 10 {
		t.Errorf("the reload without a fault changed only %v", d)
	}
	if after.maxCalls != 11 || after.cps != 6 || after.tracker.Threshold != 20 || after.level != slog.LevelError {
		t.Errorf("new policy not in force: %+v", after)
	}
}

// TestReloadAfterClose: a closed SBC refuses a reload and keeps its policy.
func TestReloadAfterClose(t *testing.T) {
	s := newReloadSBC(t, Options{}, true)
	inForce := s.Policy()
	s.Close()
	err := s.Reload(basePolicy(t, changeLive))
	if !errors.Is(err, acl.ErrClosed) {
		t.Fatalf("Reload after Close = %v, want ErrClosed", err)
	}
	if s.Policy() != inForce || reloads(s, ReloadRejected) != 1 {
		t.Error("reload after Close changed the policy or was not counted")
	}
}

// TestReloadKernelFailurePartial: the kernel step runs after the commit
// point; when it fails the new policy is in force, the error wraps
// ErrReloadPartial, the WARN says what was not updated and the reload is
// counted as partial. The next reload rewrites the kernel state again.
func TestReloadKernelFailurePartial(t *testing.T) {
	var buf syncBuffer
	s := newReloadSBC(t, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}, true)
	var got []*policy.Policy
	s.reload.kernel = func(p *policy.Policy) error {
		got = append(got, p)
		return errors.New("netlink: injected failure")
	}
	p := basePolicy(t, changeLive)
	err := s.Reload(p)
	if !errors.Is(err, ErrReloadPartial) || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Reload = %v, want ErrReloadPartial with the cause", err)
	}
	if s.Policy() != p || captureLive(s).maxCalls != 11 {
		t.Error("the new policy is not in force after a partial reload")
	}
	if reloads(s, ReloadPartial) != 1 || reloads(s, ReloadOK) != 0 || reloads(s, ReloadRejected) != 0 {
		t.Error("not counted as partial")
	}
	if l := buf.String(); !strings.Contains(l, `"level":"WARN"`) || !strings.Contains(l, `"result":"partial"`) || !strings.Contains(l, "kernel fast path was not updated") {
		t.Errorf("log: %s", l)
	}
	s.reload.kernel = func(p *policy.Policy) error { got = append(got, p); return nil }
	if err := s.Reload(p); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != p || got[1] != p || reloads(s, ReloadOK) != 1 {
		t.Errorf("kernel step saw %d policies; ok = %v", len(got), reloads(s, ReloadOK))
	}
}

// TestReloadConcurrent runs reloads from several goroutines (as SIGHUP and
// the file watcher can) while the pipeline reads the state, under the race
// detector. Afterwards every piece of the live state belongs to one and
// the same policy, the one in force, and every reload was counted once.
func TestReloadConcurrent(t *testing.T) {
	s := newReloadSBC(t, Options{}, true)
	a := basePolicy(t)
	b := basePolicy(t, changeLive)
	refused := basePolicy(t, func(p *testpolicy.Policy) { p.Admin = "127.0.0.1:9999" })
	faulty := basePolicy(t, changeLive)
	faulty.AutoBlock.Threshold = -1
	pols := []*policy.Policy{a, b, refused, b, faulty, a}
	const workers, rounds = 4, 15
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		src := netip.MustParseAddr("198.51.100.7")
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.preParse(s.realms["external"], src)
			_ = s.Policy().Limits.SourceCPS
			_, _ = s.def.scanner.Load().Match("sipvicious")
			if release, ok := s.def.calls.Acquire("carrier"); ok {
				release()
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				_ = s.Reload(pols[(w+i)%len(pols)])
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	total := reloads(s, ReloadOK) + reloads(s, ReloadRejected) + reloads(s, ReloadPartial)
	if total != workers*rounds || reloads(s, ReloadPartial) != 0 {
		t.Errorf("counted %v reloads (%v partial), want %d", total, reloads(s, ReloadPartial), workers*rounds)
	}
	in := s.Policy()
	name := map[*policy.Policy]string{a: "base", b: "changed", refused: "refused", faulty: "faulty"}[in]
	if in != a && in != b {
		t.Fatalf("policy in force is %q", name)
	}
	got := captureLive(s)
	want := []struct {
		what      string
		got, want any
	}{
		{"log level", got.level, policy.SlogLevel(in.Server.LogLevel)},
		{"tracker threshold", got.tracker.Threshold, in.AutoBlock.Threshold},
		{"call cap", got.maxCalls, in.Trunks[0].MaxCalls},
		{"source_pps burst", got.pps, ppsConfig(in).Source.Burst},
		{"source_cps burst", got.cps, inviteConfig(in).Source.Burst},
		{"register burst", got.reg, registerConfig(in).Source.Burst},
		{"scanner", strings.Join(got.scanner, ","), strings.Join(in.AutoBlock.ScannerUserAgents, ",")},
		{"never-block", got.never, mustNeverList(t, in)}, // never_block, the carrier trunk's source, the target
		{"snapshot", got.snap.pol, in},
		{"targets", len(got.targets), 1},
	}
	for _, w := range want {
		if !reflect.DeepEqual(w.got, w.want) {
			t.Errorf("%s: %v, but the policy in force (%s) says %v", w.what, w.got, name, w.want)
		}
	}
	for _, tg := range got.snap.pools["pbx"].targets {
		if got.targets["pbx|"+tg.addr.String()] != tg {
			t.Errorf("target %s of the snapshot is not the one whose health is kept", tg.addr)
		}
	}
}

// mustNeverList is the never-block list a policy gives (no learnt peers).
func mustNeverList(t *testing.T, p *policy.Policy) []netip.Prefix {
	t.Helper()
	n, err := acl.NewNeverBlockList(neverBlock(p))
	if err != nil {
		t.Fatal(err)
	}
	return n.Prefixes()
}

// TestReloadLogLevel: log_level applies on reload to the SBC's default
// logger and to a caller's Logger built on Options.LogLevel; a caller's
// Logger with a fixed level is left alone (documented).
func TestReloadLogLevel(t *testing.T) {
	ctx := context.Background()
	toError := basePolicy(t, func(p *testpolicy.Policy) { p.Server.LogLevel = "error" })
	toDebug := basePolicy(t, func(p *testpolicy.Policy) { p.Server.LogLevel = "debug" })

	t.Run("default logger", func(t *testing.T) {
		// Without a Logger the SBC logs JSON to stderr; warn → error
		// keeps this test quiet.
		s, err := New(basePolicy(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !s.log.Enabled(ctx, slog.LevelWarn) || s.log.Enabled(ctx, slog.LevelInfo) {
			t.Fatal("default logger not at the policy's warn level")
		}
		if err := s.Reload(toError); err != nil {
			t.Fatal(err)
		}
		if s.log.Enabled(ctx, slog.LevelWarn) || !s.log.Enabled(ctx, slog.LevelError) {
			t.Error("log_level = error not applied to the default logger")
		}
		if s.sipLog.Enabled(ctx, slog.LevelWarn) {
			t.Error("sipgo's lines do not follow log_level")
		}
	})
	t.Run("caller's LogLevel", func(t *testing.T) {
		var buf syncBuffer
		lv := new(slog.LevelVar)
		s := newReloadSBC(t, Options{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: lv})), LogLevel: lv}, false)
		if lv.Level() != slog.LevelWarn {
			t.Fatalf("New set LogLevel to %v, want the policy's warn", lv.Level())
		}
		s.log.Debug("before the reload")
		if err := s.Reload(toDebug); err != nil {
			t.Fatal(err)
		}
		s.log.Debug("after the reload")
		out := buf.String()
		if lv.Level() != slog.LevelDebug || strings.Contains(out, "before the reload") || !strings.Contains(out, "after the reload") || !strings.Contains(out, "policy reloaded") {
			t.Errorf("level %v, log:\n%s", lv.Level(), out)
		}
		// A refused reload does not change the level either.
		refused := basePolicy(t, func(p *testpolicy.Policy) {
			p.Server.LogLevel = "error"
			p.Server.StateDir = "/nonexistent/sbc"
		})
		if err := s.Reload(refused); err == nil || lv.Level() != slog.LevelDebug {
			t.Errorf("refused reload: %v, level %v", err, lv.Level())
		}
	})
	t.Run("caller's fixed level", func(t *testing.T) {
		s := newReloadSBC(t, Options{Logger: slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))}, false)
		if err := s.Reload(toError); err != nil {
			t.Fatal(err)
		}
		if !s.log.Enabled(ctx, slog.LevelInfo) {
			t.Error("the caller's own Logger was changed")
		}
	})
}

// TestReloadMetric: sbc_reload_total has every result from the start (so
// alerts on rejected work before the first failure), the old
// sbc_policy_reloads_total is gone, and each outcome counts once; a
// policy file that does not load counts as rejected.
func TestReloadMetric(t *testing.T) {
	var mu sync.Mutex
	var evs []events.Event
	s := newReloadSBC(t, Options{Events: events.Func(func(e events.Event) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
	})}, true)
	fams, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, f := range fams {
		switch f.GetName() {
		case "sbc_policy_reloads_total":
			t.Error("sbc_policy_reloads_total still exported")
		case "sbc_reload_total":
			for _, m := range f.GetMetric() {
				results = append(results, m.GetLabel()[0].GetValue())
			}
		}
	}
	slices.Sort(results)
	if !slices.Equal(results, []string{"ok", "partial", "rejected"}) {
		t.Errorf("sbc_reload_total results %v", results)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sbc.toml")
	invalid := reloadBase()
	invalid.Extra = "no_such_key = 1" // raw TOML: a key there only to be refused
	if err := os.WriteFile(path, []byte(invalid.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadFile(path); err == nil || !strings.Contains(err.Error(), "no_such_key") {
		t.Errorf("ReloadFile(invalid) = %v", err)
	}
	changed := reloadBase()
	changeLive(changed)
	if err := os.WriteFile(path, []byte(changed.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadFile(path); err != nil {
		t.Fatal(err)
	}
	if s.Policy().Source != path {
		t.Errorf("policy in force %s", s.Policy().Source)
	}
	if reloads(s, ReloadRejected) != 1 || reloads(s, ReloadOK) != 1 || reloads(s, ReloadPartial) != 0 {
		t.Errorf("counts: rejected %v ok %v partial %v", reloads(s, ReloadRejected), reloads(s, ReloadOK), reloads(s, ReloadPartial))
	}
	// The operator events: the policy it started with, the refused file,
	// then the applied one.
	mu.Lock()
	defer mu.Unlock()
	if len(evs) != 3 || evs[0].Kind != events.ConfigChanged || evs[0].Reason != reasonStart ||
		evs[1].Kind != events.ReloadFailed || !strings.Contains(evs[1].Reason, "no_such_key") ||
		evs[2].Kind != events.ConfigChanged || evs[2].Detail["policy"] != path {
		t.Errorf("events %+v", evs)
	}
}

// syncBuffer is a bytes.Buffer safe for the SBC's goroutines to log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
