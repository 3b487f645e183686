package testpolicy

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/policy"
)

// full sets every field of the builder to a value other than the policy
// default, so that parsing it checks each key the builder writes.
func full() *Policy {
	return &Policy{
		Comment: "written by a test\nsecond line",
		Server: Server{
			UserAgent: `Test "SBC" \ 1`, LogLevel: "warn",
			UDPReadBuffer: 1 << 20, UDPWriteBuffer: 2 << 20,
			TCPIdleTimeout: policy.D(90 * time.Second), TCPMessageTimeout: policy.D(3 * time.Second), StateDir: "/tmp/sbc-state",
		},
		Admin:     "127.0.0.1:0",
		AdminTOML: "plain_http = true\nrate = 3\n",
		Realms: []Realm{
			{Name: "external", Listeners: []Listener{
				{Transport: "udp", Bind: "127.0.0.3:0", Advertise: "203.0.113.1:5060"},
				{Transport: "tcp", Bind: "127.0.0.3:0"},
				{Transport: "tls", Bind: "127.0.0.3:0", TLS: &ListenerTLS{CertFile: "sbc.pem", KeyFile: "sbc-key.pem",
					CAFile: "ca.pem", MinVersion: "1.3", ClientAuth: "require",
					RevokedSPKI: []string{strings.Repeat("ab", 32)}, HandshakeTimeout: policy.D(3 * time.Second)}},
				{Transport: "wss", Bind: "127.0.0.3:0", Path: "/ws", Origins: []string{"https://app.example.com"},
					TLS: &ListenerTLS{CertFile: "sbc.pem", KeyFile: "sbc-key.pem"}},
			}},
			{Name: "internal", Media: &RealmMedia{IP: "::1", Advertise: "2001:db8::9", Ports: []int{30000, 30099}},
				Listeners: []Listener{{Bind: "[::1]:0"}, {Transport: "tcp", Bind: "[::1]:0"},
					{Transport: "tls", Bind: "[::1]:0", TLS: &ListenerTLS{CertFile: "sbc.pem", KeyFile: "sbc-key.pem"}}}},
		},
		Trunks: []Trunk{
			{Name: "carrier", Realm: "external", Sources: []string{"127.0.0.1/32", "2001:db8::/48"},
				MaxCalls: 5, CPS: 7, AllowRegister: true, RegisterDomains: []string{"pbx.example.com"},
				Extra: "# a comment in the trunk"},
			{Name: "other", Realm: "external", Sources: []string{"192.0.2.1"}, MediaEncryption: "sdes", MediaRequired: true, Refer: "local",
				Transports: []string{"tcp", "tls"}},
			{Name: "tlsonly", Realm: "external", TLSIdentities: []string{"dns:sip.carrier.example"}},
		},
		Pools: []Pool{
			{Name: "pbx", Realm: "internal", Transport: "tcp",
				Targets: []Target{{Address: "[::1]:5080", Weight: new(3)}, {Address: "[::1]:5081", Weight: new(0)}},
				Health:  &Health{Interval: policy.D(50 * time.Millisecond), Timeout: policy.D(40 * time.Millisecond), Up: 4, Down: 5},
				Extra:   "# a comment after the pool"},
			{Name: "reg", Realm: "internal", Targets: Targets("[::1]:5090"), MediaEncryption: "sdes", Refer: "refuse"},
			{Name: "secure", Realm: "internal", Transport: "tls", Targets: Targets("[::1]:5091"),
				TLS: &PoolTLS{CertFile: "sbc.pem", KeyFile: "sbc-key.pem", CAFile: "ca.pem", MinVersion: "1.2", ServerName: "pbx.example.com"}},
			{Name: "carrier-a", Realm: "external", Targets: []Target{{Address: "[::1]:5070", Priority: 2}},
				Auth: &PoolAuth{Username: "acct", Password: "pw", Realm: "carrier.example"}},
		},
		Routes: []Route{{Trunk: "carrier", Prefix: "100", Pool: "reg"}},
		OutboundRoutes: []OutboundRoute{{Prefix: "0", SourcePool: "pbx", Pools: []string{"carrier-a"}, Strip: 1, Prepend: "+44",
			FromUser: "+441234", PAI: "from", Privacy: "id", MaxDuration: policy.D(time.Hour),
			Hours: "08:00-18:00", Days: []string{"mon-fri"}, Timezone: "Europe/London"}},
		Outbound: &Outbound{DenyPrefixes: []string{"+882"}, PremiumPrefixes: []string{"+449"}, DenyPremium: true,
			HomePrefix: "+44", DenyInternational: true, PoolMaxCalls: 10, SourceMaxCalls: 5, PoolMaxMinutes: 600,
			SourceMaxMinutes: 300, MinutesWindow: policy.D(24 * time.Hour)},
		Routing: &Routing{DefaultPool: "pbx", FollowRedirects: true,
			TargetTimeout: policy.D(300 * time.Millisecond), MaxAttempts: 4, RetryAfter: 7},
		Calls: &Calls{MaxDuration: policy.D(time.Hour), InactivityTimeout: policy.D(time.Minute),
			RingTimeout: policy.D(10 * time.Second)},
		Headers: &Headers{Allow: []string{"Content-Type", "X-Custom"}, UnknownSourceAction: "reject"},
		Limits: &Limits{SourcePPS: new(300), SourcePPSBurst: 301, TrunkPPS: new(900), TrunkPPSBurst: 901,
			SourceCPS: new(20), RegisterRate: new(3),
			MaxSources: 256, TCPConnectionsPerSource: new(4), TCPConnections: new(64), UDPPeers: 100, QueueDelay: policy.D(300 * time.Millisecond), OverLimitAction: "drop"},
		AutoBlock: &AutoBlock{Enabled: new(false), Observe: true, Threshold: 4,
			Window: policy.D(30 * time.Second), BlockFor: policy.D(time.Minute), Escalation: 2,
			MaxBlock: policy.D(time.Hour), ForgetAfter: policy.D(2 * time.Hour),
			NeverBlock: []string{"10.0.0.0/8"}, ScannerUserAgents: []string{"evil-scanner"},
			RegisterGuesses: 3, RegisterSourceGuesses: 9, RegisterWindow: policy.D(5 * time.Minute),
			RegisterLock: policy.D(7 * time.Minute), AggregateV6: new(4), TrunkHealthInterval: policy.D(time.Minute)},
		XDP: &XDP{Enabled: true, Interfaces: []string{"veth0"}, Mode: "generic", PinDir: "/sys/fs/bpf/test", Scope: "host",
			RatePPS: 1000, Burst: 2000},
		Nftables: &Nftables{Enabled: true, Table: "sbctest", MediaPorts: []int{10000, 20000}, TrunksOnly: true},
		Media:    &Media{Anchor: new(false), Timeout: policy.D(30 * time.Second), Quarantine: policy.D(time.Second), KernelRelay: []string{"veth0"}},
		CDR:      &CDR{Enabled: true, File: "/tmp/sbctest-cdr.jsonl", MaxSizeMB: 5, MaxFiles: 3, Queue: 100},
		HEP:      &HEP{Enabled: true, Address: "127.0.0.1:9060", AgentID: 7, Password: "hep-pw", Queue: 100},
		Webhooks: []Webhook{
			{Name: "ops", URL: "https://hooks.example/sbc", Events: []string{"blocked", "cdr"}, Secret: "0123456789abcdef",
				Timeout: policy.D(2 * time.Second), MaxBackoff: policy.D(10 * time.Second), MaxAttempts: 3, Queue: 50},
			{Name: "audit", URL: "http://127.0.0.1:8081/in", Events: []string{"config_changed"}, SecretEnv: "SBC_TESTPOLICY_HOOK"},
		},
		Audit: &Audit{File: "/tmp/sbc-audit/audit.log", MaxSize: new(8192), Keep: 3, Stdout: true, Syslog: "udp://127.0.0.1:514",
			SyslogFacility: "audit", RedactFields: []string{"user_agent"}, MaskNumbers: 4, Events: []string{"blocked"}, QueueSize: 64},
		Secrets: &Secrets{MasterKeyFile: "/etc/sbc/master.key", PreviousKeyFile: "/etc/sbc/old.key"},
		Extra:   "[[route]]\ntrunk = \"other\"\npool = \"pbx\"\n",
	}
}

// TestFullSetsEveryField keeps full() complete: a field added to the
// builder must be set there (in at least one element of a list), and so
// be checked by TestEveryOptionParses.
func TestFullSetsEveryField(t *testing.T) {
	durType := reflect.TypeFor[policy.Duration]()
	// leaf: a field full() must set; pointers to scalars are set when
	// non-nil (new(0) is a setting).
	var paths func(prefix string, ty reflect.Type, out map[string]bool)
	paths = func(prefix string, ty reflect.Type, out map[string]bool) {
		switch {
		case ty.Kind() == reflect.Pointer && ty.Elem().Kind() == reflect.Struct:
			paths(prefix, ty.Elem(), out)
		case ty.Kind() == reflect.Slice && ty.Elem().Kind() == reflect.Struct:
			paths(prefix, ty.Elem(), out)
		case ty.Kind() == reflect.Struct && ty != durType:
			for i := 0; i < ty.NumField(); i++ {
				paths(prefix+"."+ty.Field(i).Name, ty.Field(i).Type, out)
			}
		default:
			out[prefix] = false
		}
	}
	var set func(prefix string, v reflect.Value, out map[string]bool)
	set = func(prefix string, v reflect.Value, out map[string]bool) {
		ty := v.Type()
		switch {
		case ty.Kind() == reflect.Pointer && ty.Elem().Kind() == reflect.Struct:
			if !v.IsNil() {
				set(prefix, v.Elem(), out)
			}
		case ty.Kind() == reflect.Slice && ty.Elem().Kind() == reflect.Struct:
			for i := 0; i < v.Len(); i++ {
				set(prefix, v.Index(i), out)
			}
		case ty == durType:
			out[prefix] = out[prefix] || v.Interface().(policy.Duration).IsSet()
		case ty.Kind() == reflect.Struct:
			for i := 0; i < ty.NumField(); i++ {
				set(prefix+"."+ty.Field(i).Name, v.Field(i), out)
			}
		case ty.Kind() == reflect.Slice:
			out[prefix] = out[prefix] || v.Len() > 0
		default:
			out[prefix] = out[prefix] || !v.IsZero()
		}
	}
	covered := map[string]bool{}
	paths("Policy", reflect.TypeFor[Policy](), covered)
	set("Policy", reflect.ValueOf(*full()), covered)
	for path, ok := range covered {
		if !ok {
			t.Errorf("%s is not set in full()", path)
		}
	}
}

func TestEveryOptionParses(t *testing.T) {
	t.Setenv("SBC_TESTPOLICY_HOOK", "a-secret-from-the-environment")
	b := full()
	text := b.TOML()
	p := b.Parse(t)

	if !strings.HasPrefix(text, "# written by a test\n# second line\n") {
		t.Errorf("comment not at the top:\n%s", text)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	s := p.Server
	check("server.user_agent", s.UserAgent, `Test "SBC" \ 1`)
	check("server.log_level", s.LogLevel, "warn")
	check("server.udp_read_buffer", s.UDPReadBuffer, 1<<20)
	check("server.udp_write_buffer", s.UDPWriteBuffer, 2<<20)
	check("server.tcp_idle_timeout", s.TCPIdleTimeout.Duration, 90*time.Second)
	check("server.tcp_message_timeout", s.TCPMessageTimeout.Duration, 3*time.Second)
	check("server.state_dir", s.StateDir, "/tmp/sbc-state")
	check("admin.listen", p.Admin.Listen, "127.0.0.1:0")
	check("admin.rate", p.Admin.Rate, 3)

	check("realms", len(p.Realms), 2)
	ext := p.Realms[0]
	check("realm[0].name", ext.Name, "external")
	check("realm[0].listeners", len(ext.Listeners), 4)
	check("listener[0].transport", ext.Listeners[0].Transport, "udp")
	check("listener[0].bind", ext.Listeners[0].BindAddr, netip.MustParseAddrPort("127.0.0.3:0"))
	check("listener[0].advertise", ext.Listeners[0].Advertise, "203.0.113.1:5060")
	check("listener[1].transport", ext.Listeners[1].Transport, "tcp")
	check("realm[1].bind", p.Realms[1].Listeners[0].BindAddr, netip.MustParseAddrPort("[::1]:0"))
	check("realm[1].media", [3]any{p.Realms[1].Media.Addr, p.Realms[1].Media.AdvertiseAddr, [2]int{p.Realms[1].Media.Min, p.Realms[1].Media.Max}},
		[3]any{netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::9"), [2]int{30000, 30099}})
	check("media", [3]any{p.Media.Anchored(), p.Media.Timeout.Duration, p.Media.Quarantine.Duration}, [3]any{false, 30 * time.Second, time.Second})
	check("media.kernel_relay", p.Media.KernelRelay, []string{"veth0"})
	lt := ext.Listeners[2].TLS
	check("listener[2].tls", *lt, policy.TLS{CertFile: "sbc.pem", KeyFile: "sbc-key.pem", CAFile: "ca.pem",
		MinVersion: "1.3", Min: tls.VersionTLS13, ClientAuth: "require", RevokedSPKI: []string{strings.Repeat("ab", 32)},
		HandshakeTimeout: policy.D(3 * time.Second)})
	check("listener[3].path", ext.Listeners[3].Path, "/ws")
	check("listener[3].origins", ext.Listeners[3].Origins, []string{"https://app.example.com"})
	check("trunk[1].media_encryption", [2]any{p.Trunks[1].MediaEncryption, p.Trunks[1].MediaRequired}, [2]any{"sdes", true})
	check("pool[1].media_encryption", p.Pools[1].MediaEncryption, "sdes")
	check("trunk[1].refer", p.Trunks[1].Refer, "local")
	check("pool[1].refer", p.Pools[1].Refer, "refuse")
	check("trunk[2].tls_identities", p.Trunks[2].Identities, []policy.TLSIdentity{{Kind: "dns", Value: "sip.carrier.example"}})
	check("pool[2].tls.server_name", p.Pools[2].TLS.ServerName, "pbx.example.com")
	check("pool[2].tls.cert_file", p.Pools[2].TLS.CertFile, "sbc.pem")

	check("trunks", len(p.Trunks), 3)
	tr := p.Trunks[0]
	check("trunk.name", tr.Name, "carrier")
	check("trunk.realm", tr.Realm, "external")
	check("trunk.sources", tr.Sources, []string{"127.0.0.1/32", "2001:db8::/48"})
	check("trunk.max_calls", tr.MaxCalls, 5)
	check("trunk.cps", tr.CPS, 7)
	check("trunk.allow_register", tr.AllowRegister, true)
	check("trunk.register_domains", tr.RegisterDomains, []string{"pbx.example.com"})
	check("trunk[1].transports", p.Trunks[1].Transports, []string{"tcp", "tls"})

	check("pools", len(p.Pools), 4)
	ca := p.Pools[3]
	check("carrier.priority", ca.Targets[0].Priority, 2)
	check("carrier.auth", *ca.Auth, policy.PoolAuth{Username: "acct", Password: "pw", Realm: "carrier.example"})
	or := p.OutboundRoutes[0]
	check("outbound_route", [...]any{or.Prefix, or.SourcePool, or.Pools, or.Strip, or.Prepend, or.FromUser, or.PAI, or.Privacy, or.MaxDuration.Duration,
		or.Hours, or.Days, or.Timezone, or.Window != nil},
		[...]any{"0", "pbx", []string{"carrier-a"}, 1, "+44", "+441234", "from", "id", time.Hour,
			"08:00-18:00", []string{"mon-fri"}, "Europe/London", true})
	o := p.Outbound
	check("outbound", [...]any{o.DenyPrefixes, o.PremiumPrefixes, o.DenyPremium, o.HomePrefix, o.DenyInternational,
		o.PoolMaxCalls, o.SourceMaxCalls, o.PoolMaxMinutes, o.SourceMaxMinutes, o.MinutesWindow.Duration},
		[...]any{[]string{"+882"}, []string{"+449"}, true, "+44", true, 10, 5, 600, 300, 24 * time.Hour})
	pl := p.Pools[0]
	check("pool.name", pl.Name, "pbx")
	check("pool.realm", pl.Realm, "internal")
	check("pool.transport", pl.Transport, "tcp")
	check("pool.targets", len(pl.Targets), 2)
	check("target[0].address", pl.Targets[0].Addr, netip.MustParseAddrPort("[::1]:5080"))
	check("target[0].weight", pl.Targets[0].W, 3)
	check("target[1].weight", pl.Targets[1].W, 0)
	check("health.interval", pl.Health.Interval.Duration, 50*time.Millisecond)
	check("health.timeout", pl.Health.Timeout.Duration, 40*time.Millisecond)
	check("health.up", pl.Health.Up, 4)
	check("health.down", pl.Health.Down, 5)
	check("pool[1].target weight", p.Pools[1].Targets[0].W, 1)

	check("routes", p.Routes, []policy.Route{{Trunk: "carrier", Prefix: "100", Pool: "reg"}, {Trunk: "other", Pool: "pbx"}})
	r := p.Routing
	check("routing.default_pool", r.DefaultPool, "pbx")
	check("routing.follow_redirects", r.FollowRedirects, true)
	check("routing.target_timeout", r.TargetTimeout.Duration, 300*time.Millisecond)
	check("routing.max_attempts", r.MaxAttempts, 4)
	check("routing.retry_after", r.RetryAfter, 7)

	check("calls.max_duration", p.Calls.MaxDuration.Duration, time.Hour)
	check("calls.inactivity_timeout", p.Calls.InactivityTimeout.Duration, time.Minute)
	check("calls.ring_timeout", p.Calls.RingTimeout.Duration, 10*time.Second)

	check("headers.allow", p.Headers.Allow, []string{"Content-Type", "X-Custom"})
	check("headers.unknown_source_action", p.Headers.UnknownSourceAction, "reject")

	l := p.Limits
	check("limits.source_pps", l.SourcePPS, 300)
	check("limits.source_pps_burst", l.SourcePPSBurst, 301)
	check("limits.trunk_pps", l.TrunkPPS, 900)
	check("limits.trunk_pps_burst", l.TrunkPPSBurst, 901)
	check("limits.source_cps", l.SourceCPS, 20)
	check("limits.register_rate", l.RegisterRate, 3)
	check("limits.max_sources", l.MaxSources, 256)
	check("limits.tcp_connections_per_source", l.TCPConnectionsPerSource, 4)
	check("limits.tcp_connections", l.TCPConnections, 64)
	check("limits.udp_peers", l.UDPPeers, 100)
	check("limits.queue_delay", l.QueueDelay.Duration, 300*time.Millisecond)
	check("limits.over_limit_action", l.OverLimitAction, "drop")

	a := p.AutoBlock
	check("autoblock.enabled", a.Enabled, false)
	check("autoblock.observe", a.Observe, true)
	check("autoblock.threshold", a.Threshold, 4)
	check("autoblock.window", a.Window.Duration, 30*time.Second)
	check("autoblock.block_for", a.BlockFor.Duration, time.Minute)
	check("autoblock.escalation", a.Escalation, 2)
	check("autoblock.max_block", a.MaxBlock.Duration, time.Hour)
	check("autoblock.forget_after", a.ForgetAfter.Duration, 2*time.Hour)
	check("autoblock.never_block", a.NeverBlock, []string{"10.0.0.0/8"})
	check("autoblock.scanner_user_agents", a.ScannerUserAgents, []string{"evil-scanner"})
	check("autoblock.register_guesses", a.RegisterGuesses, 3)
	check("autoblock.register_source_guesses", a.RegisterSourceGuesses, 9)
	check("autoblock.register_window", a.RegisterWindow.Duration, 5*time.Minute)
	check("autoblock.register_lock", a.RegisterLock.Duration, 7*time.Minute)
	check("autoblock.aggregate_v6", a.AggregateV6, 4)
	check("autoblock.trunk_health_interval", a.TrunkHealthInterval.Duration, time.Minute)

	x := p.XDP
	check("xdp.enabled", x.Enabled, true)
	check("xdp.interfaces", x.Interfaces, []string{"veth0"})
	check("xdp.mode", x.Mode, "generic")
	check("xdp.pin_dir", x.PinDir, "/sys/fs/bpf/test")
	check("xdp.scope", x.Scope, "host")
	check("xdp.rate_pps", x.RatePPS, 1000)
	check("xdp.burst", x.Burst, 2000)

	au := p.Audit
	check("audit", [10]any{au.File, au.MaxSize, au.Keep, au.Stdout, au.Syslog, au.Facility, au.RedactFields, au.MaskNumbers, au.Events, au.QueueSize},
		[10]any{"/tmp/sbc-audit/audit.log", 8192, 3, true, "udp://127.0.0.1:514", 13, []string{"user_agent"}, 4, []string{"blocked"}, 64})
	check("secrets", [2]any{p.Secrets.MasterKeyFile, p.Secrets.PreviousKeyFile}, [2]any{"/etc/sbc/master.key", "/etc/sbc/old.key"})
	n := p.Nftables
	check("nftables.enabled", n.Enabled, true)
	check("nftables.table", n.Table, "sbctest")
	check("nftables.media_ports", n.MediaPorts, []int{10000, 20000})
	check("nftables.trunks_only", n.TrunksOnly, true)
}

// TestExplicitZeros: the pointer fields, policy.D(0) and empty lists write
// a zero that differs from the default.
func TestExplicitZeros(t *testing.T) {
	b := New("127.0.0.3", "127.0.0.4", "127.0.0.2:5080")
	b.Limits = &Limits{SourcePPS: new(0), SourceCPS: new(0), RegisterRate: new(0), TCPConnectionsPerSource: new(0)}
	b.AutoBlock = &AutoBlock{Enabled: new(false), ScannerUserAgents: []string{}}
	b.Headers = &Headers{Allow: []string{}}
	b.Calls = &Calls{MaxDuration: policy.D(0)}
	b.Pool("pbx").Targets = append(b.Pool("pbx").Targets, Target{Address: "127.0.0.2:5081", Weight: new(0)})
	p := b.Parse(t)
	if l := p.Limits; l.SourcePPS != 0 || l.SourceCPS != 0 || l.RegisterRate != 0 || l.TCPConnectionsPerSource != 0 {
		t.Errorf("limits %+v: want the zeros written", l)
	}
	if p.AutoBlock.Enabled || p.AutoBlock.ScannerUserAgents == nil || len(p.AutoBlock.ScannerUserAgents) != 0 {
		t.Errorf("autoblock %+v: want disabled, no scanner list", p.AutoBlock)
	}
	if len(p.Headers.Allow) != 0 {
		t.Errorf("headers.allow %v: want empty", p.Headers.Allow)
	}
	if p.Calls.MaxDuration.Duration != 0 || !p.Calls.MaxDuration.IsSet() {
		t.Errorf("calls.max_duration %v: want 0s", p.Calls.MaxDuration)
	}
	if p.Pools[0].Health.Enabled() {
		t.Error("health checks on: New turns them off")
	}
	if w := p.Pools[0].Targets[1].W; w != 0 {
		t.Errorf("drained target weight %d", w)
	}

	// Unset fields keep the policy defaults.
	d := New("127.0.0.3", "127.0.0.4", "127.0.0.2:5080")
	d.Limits, d.AutoBlock, d.Headers, d.Calls = &Limits{}, &AutoBlock{}, &Headers{}, &Calls{}
	dp := d.Parse(t)
	if l := dp.Limits; l.SourcePPS != policy.DefaultSourcePPS || l.SourceCPS != policy.DefaultSourceCPS {
		t.Errorf("empty [limits]: %+v, want the defaults", l)
	}
	if !dp.AutoBlock.Enabled || !slices.Equal(dp.Headers.Allow, policy.DefaultAllowedHeaders) {
		t.Errorf("empty [autoblock]/[headers]: enabled=%v allow=%v", dp.AutoBlock.Enabled, dp.Headers.Allow)
	}
}

func TestNew(t *testing.T) {
	b := New("127.0.0.3", "::1", "127.0.0.2:5080", "127.0.0.2:5081")
	p := b.Parse(t)
	if len(p.Realms) != 2 || p.Realms[0].Name != "external" || p.Realms[1].Name != "internal" {
		t.Fatalf("realms %+v", p.Realms)
	}
	for _, r := range p.Realms {
		if len(r.Listeners) != 2 || r.Listeners[0].Transport != "udp" || r.Listeners[1].Transport != "tcp" {
			t.Errorf("realm %s listeners %+v", r.Name, r.Listeners)
		}
	}
	if got := p.Realms[1].Listeners[0].BindAddr; got != netip.MustParseAddrPort("[::1]:0") {
		t.Errorf("internal bind %v", got)
	}
	if tr := p.Trunk("carrier"); tr == nil || tr.Realm != "external" || !slices.Equal(tr.Sources, []string{"127.0.0.1/32"}) {
		t.Errorf("trunk %+v", tr)
	}
	if pl := p.RouteFor("carrier", "100"); pl == nil || pl.Name != "pbx" || len(pl.Targets) != 2 || pl.Realm != "internal" {
		t.Errorf("default route to %+v", pl)
	}

	b.UDPOnly()
	for _, r := range b.Parse(t).Realms {
		if len(r.Listeners) != 1 || r.Listeners[0].Transport != "udp" {
			t.Errorf("UDPOnly: realm %s listeners %+v", r.Name, r.Listeners)
		}
	}
}

func TestExtraHatches(t *testing.T) {
	b := New("127.0.0.3", "127.0.0.4", "127.0.0.2:5080")
	b.Trunk("carrier").Extra = "max_calls = 9"
	b.Pool("pbx").Health = nil
	b.Pool("pbx").Extra = "  [pool.health]\n  interval = \"1s\""
	b.Routing = nil
	b.Extra = "[routing]\ndefault_pool = \"pbx\"\nretry_after = 9\n[limits]\nsource_cps = 11"
	p := b.Parse(t)
	if p.Trunks[0].MaxCalls != 9 || p.Pools[0].Health.Interval.Duration != time.Second ||
		p.Routing.RetryAfter != 9 || p.Limits.SourceCPS != 11 {
		t.Errorf("raw TOML not applied: trunk %+v health %+v routing %+v limits %+v",
			p.Trunks[0], p.Pools[0].Health, p.Routing, p.Limits)
	}
}

func TestParseFailsWithNumberedText(t *testing.T) {
	b := New("127.0.0.3", "127.0.0.4") // no target: invalid
	ft := &fakeTB{}
	b.Parse(ft)
	if !strings.Contains(ft.msg, "pool") || !strings.Contains(ft.msg, "   1  ") {
		t.Errorf("failure message:\n%s", ft.msg)
	}
}

type fakeTB struct{ msg string }

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	if f.msg == "" {
		f.msg = fmt.Sprintf(format, args...)
	}
}

func TestClone(t *testing.T) {
	a := full()
	before := a.TOML()
	c := a.Clone()
	c.Realms[0].Listeners[0].Bind = "127.0.0.9:0"
	c.Trunks[0].Sources[0] = "10.0.0.1/32"
	c.Trunks[0].RegisterDomains[0] = "x"
	*c.Pools[0].Targets[0].Weight = 9
	c.Pools[0].Health.Up = 9
	c.Pools[0].Targets[0].Address = "[::1]:1"
	c.Routes[0].Prefix = "9"
	c.Routing.RetryAfter = 9
	c.Calls.RingTimeout = policy.D(time.Second)
	c.Headers.Allow[0] = "Subject"
	*c.Limits.SourcePPS = 9
	*c.Limits.SourceCPS = 9
	*c.Limits.RegisterRate = 9
	*c.Limits.TCPConnectionsPerSource = 9
	*c.AutoBlock.Enabled = true
	c.AutoBlock.NeverBlock[0] = "x"
	c.AutoBlock.ScannerUserAgents[0] = "x"
	c.XDP.Interfaces[0] = "x"
	c.Nftables.MediaPorts[0] = 1
	if after := a.TOML(); after != before {
		t.Errorf("changing the clone changed the original:\n%s\nvs\n%s", before, after)
	}
}
