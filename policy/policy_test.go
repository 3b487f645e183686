package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid policy; tests append to it.
const minimal = `
[[realm]]
name = "r"
[[realm.listener]]
bind = "127.0.0.1:5060"
`

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestDefaultParses(t *testing.T) {
	p := Default()
	if p.Source != EmbeddedSource {
		t.Errorf("Source = %q", p.Source)
	}
	if got, want := string(DefaultTOML()), string(exampleTOML); got != want {
		t.Error("DefaultTOML differs from the embedded file")
	}
	onDisk, err := os.ReadFile("sbc.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(onDisk, DefaultTOML()) {
		t.Error("DefaultTOML differs from sbc.example.toml")
	}
	b := DefaultTOML()
	b[0] = 'X'
	if DefaultTOML()[0] == 'X' {
		t.Error("DefaultTOML returns the embedded slice itself")
	}

	// What the example must describe (see the task this file answers).
	ext, in := p.Realm("external"), p.Realm("internal")
	if ext == nil || in == nil {
		t.Fatalf("realms: %+v", p.Realms)
	}
	wantListeners := func(r *Realm, bind string, transports ...string) {
		t.Helper()
		var got []string
		for _, l := range r.Listeners {
			if l.BindAddr != netip.MustParseAddrPort(bind) {
				t.Errorf("realm %s: listener %s on %s", r.Name, l.Transport, l.BindAddr)
			}
			got = append(got, l.Transport)
		}
		if !slices.Equal(got, transports) {
			t.Errorf("realm %s: transports %v, want %v", r.Name, got, transports)
		}
	}
	wantListeners(ext, "127.0.0.1:5060", "udp", "tcp")
	wantListeners(in, "127.0.0.1:5062", "udp", "tcp")
	tr := p.Trunk("local")
	if tr == nil || tr.Realm != "external" || !slices.Equal(tr.Prefixes, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}) {
		t.Errorf("trunk local: %+v", tr)
	}
	pbx := p.Pool("pbx")
	if pbx == nil || pbx.Realm != "internal" || len(pbx.Targets) != 1 ||
		pbx.Targets[0].Addr != netip.MustParseAddrPort("127.0.0.1:5080") || pbx.Targets[0].W != 1 {
		t.Fatalf("pool pbx: %+v", pbx)
	}
	if h := pbx.Health; !h.Enabled() || h.Interval.Duration != DefaultHealthInterval ||
		h.Timeout.Duration != DefaultHealthTimeout || h.Up != DefaultHealthUp || h.Down != DefaultHealthDown {
		t.Errorf("pool pbx health: %+v", h)
	}
	if p.Routing.DefaultPool != "pbx" || len(p.Routes) != 1 || p.RouteFor("", "x") != pbx {
		t.Errorf("routing: %+v %+v", p.Routing, p.Routes)
	}
	if p.Admin.Addr != netip.MustParseAddrPort("127.0.0.1:9090") {
		t.Errorf("admin: %+v", p.Admin)
	}
	if p.Headers.UnknownSourceAction != "drop" || !slices.Equal(p.Headers.Allow, DefaultAllowedHeaders) {
		t.Errorf("headers: %+v", p.Headers)
	}
	if p.Calls.MaxDuration.Duration != DefaultMaxDuration || p.Calls.RingTimeout.Duration != DefaultRingTimeout {
		t.Errorf("calls: %+v", p.Calls)
	}
	// Runs without root: no port below 1024.
	for _, r := range p.Realms {
		for _, l := range r.Listeners {
			if l.BindAddr.Port() < 1024 {
				t.Errorf("listener %s needs root", l.BindAddr)
			}
		}
	}
}

// TestExampleDocumentsEveryKey checks that every key of the schema is
// mentioned in the example file, so a new field cannot go undocumented.
func TestExampleDocumentsEveryKey(t *testing.T) {
	text := string(exampleTOML)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for _, name := range fieldNames(typ) {
			ft, _ := fieldType(typ, name)
			path := joinPath(prefix, name)
			if !regexp.MustCompile(`(?m)^[#\s]*` + regexp.QuoteMeta(name) + `\b|\[+` + regexp.QuoteMeta(path) + `\]`).MatchString(text) {
				t.Errorf("key %s is not documented in sbc.example.toml", path)
			}
			switch {
			case isTable(ft):
				walk(path, ft)
			case isTableArray(ft):
				walk(path, ft.Elem())
			}
		}
	}
	walk("", policyType)
}

// SlogLevel is the one mapping of server.log_level to slog (the SBC and
// "sbc run" both use it): every value validation accepts has its own
// level, the default is Info, and a value validation refuses has none.
func TestSlogLevel(t *testing.T) {
	for name, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
	} {
		p := mustParse(t, minimal+"[server]\nlog_level = \""+name+"\"\n")
		if got := SlogLevel(p.Server.LogLevel); got != want {
			t.Errorf("log_level %q: %v, want %v", name, got, want)
		}
	}
	if got := SlogLevel(mustParse(t, minimal).Server.LogLevel); got != slog.LevelInfo {
		t.Errorf("default log_level: %v, want INFO", got)
	}
	for _, name := range []string{"DEBUG", "warning", "debug+2", "trace"} {
		if _, err := Parse("t.toml", []byte(minimal+"[server]\nlog_level = \""+name+"\"\n")); err == nil {
			t.Errorf("log_level %q accepted", name)
		}
		if got := SlogLevel(name); got != slog.LevelInfo {
			t.Errorf("SlogLevel(%q) = %v, want INFO (not a log_level)", name, got)
		}
	}
}

func TestDefaultsApplied(t *testing.T) {
	p := mustParse(t, minimal+`
[[pool]]
name = "p"
realm = "r"
[[pool.target]]
address = "127.0.0.1:5080"
`)
	s := p.Server
	if s.UserAgent != "sbc" || s.LogLevel != "info" || s.UDPReadBuffer != 4<<20 || s.UDPWriteBuffer != 4<<20 ||
		s.TCPIdleTimeout.Duration != 10*time.Minute || s.TCPIdleTimeout.IsSet() || !s.HugePages() {
		t.Errorf("server defaults: %+v", s)
	}
	if off := mustParse(t, minimal+"[server]\nheap_huge_pages = false\n"); off.Server.HugePages() {
		t.Error("heap_huge_pages = false: HugePages() still true")
	}
	if p.Admin.Listen != "" || p.Admin.Addr.IsValid() {
		t.Errorf("admin: %+v", p.Admin)
	}
	l := p.Realms[0].Listeners[0]
	if l.Transport != "udp" || l.AdvertiseHost != "127.0.0.1" || l.AdvertisePort != 5060 {
		t.Errorf("listener defaults: %+v", l)
	}
	pl := p.Pools[0]
	if pl.Transport != "udp" || pl.Targets[0].W != 1 || pl.Targets[0].Weight != nil {
		t.Errorf("pool defaults: %+v", pl)
	}
	h := pl.Health
	if h.Interval.Duration != 5*time.Second || h.Timeout.Duration != 2*time.Second || h.Up != 2 || h.Down != 3 ||
		h.Interval.IsSet() || h.Timeout.IsSet() || !h.Enabled() {
		t.Errorf("health defaults: %+v", h)
	}
	r := p.Routing
	if r.DefaultPool != "" || r.FollowRedirects || r.TargetTimeout.Duration != 2*time.Second || r.MaxAttempts != 3 || r.RetryAfter != 30 {
		t.Errorf("routing defaults: %+v", r)
	}
	c := p.Calls
	if c.MaxDuration.Duration != 4*time.Hour || c.InactivityTimeout.Duration != 2*time.Hour || c.RingTimeout.Duration != 3*time.Minute {
		t.Errorf("calls defaults: %+v", c)
	}
	if !slices.Equal(p.Headers.Allow, DefaultAllowedHeaders) || p.Headers.UnknownSourceAction != "drop" {
		t.Errorf("headers defaults: %+v", p.Headers)
	}
	if &p.Headers.Allow[0] == &DefaultAllowedHeaders[0] {
		t.Error("Headers.Allow shares DefaultAllowedHeaders' array")
	}
	if p.RouteFor("", "123") != nil {
		t.Error("RouteFor without routes or default pool must be nil")
	}
	if p.XDP.Scope != "sip" || p.XDP.Mode != "auto" {
		t.Errorf("xdp defaults: %+v", p.XDP)
	}
	if l := p.Limits; l.TrunkPPS != 20000 || l.TrunkPPSBurst != 40000 {
		t.Errorf("trunk_pps defaults: %+v", l)
	}
	a := p.AutoBlock
	if a.RegisterGuesses != 5 || a.RegisterSourceGuesses != 20 || a.RegisterWindow.Duration != 10*time.Minute ||
		a.RegisterLock.Duration != 15*time.Minute || a.AggregateV6 != 8 || a.TrunkHealthInterval.Duration != 5*time.Minute {
		t.Errorf("autoblock defaults: %+v", a)
	}
}

// The trust model's keys: trunk transports, the guess guard, aggregation,
// and the key it removed.
func TestTrustKeys(t *testing.T) {
	p := mustParse(t, minimal+`
[[trunk]]
name = "t"
realm = "r"
sources = ["10.0.0.0/8"]
transports = ["udp"]
`)
	tr := p.Trunk("t")
	if !tr.OnTransport("UDP") || tr.OnTransport("tcp") {
		t.Errorf("OnTransport with transports = [udp]: %+v", tr.Transports)
	}
	if any := (&Trunk{}); !any.OnTransport("tls") {
		t.Error("a trunk without transports refuses tls")
	}
	for _, tc := range []struct{ src, want string }{
		{minimal + "[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = [\"10.0.0.0/8\"]\ntransports = [\"tcp\", \"sctp\", \"udp\", \"udp\"]\n",
			"t.toml:10:15: trunk[0].transports[0]: realm \"r\" has no tcp listener\n" +
				"t.toml:10:22: trunk[0].transports[1]: unknown transport \"sctp\" (want \"udp\", \"tcp\", \"tls\" or \"wss\")\n" +
				"t.toml:10:37: trunk[0].transports[3]: udp is listed twice"},
		{minimal + "[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = [\"10.0.0.0/8\"]\ntransports = []\n",
			"t.toml:10:14: trunk[0].transports: must not be empty (leave it out for any transport)"},
		{minimal + "[autoblock]\naggregate_v6 = 1\nregister_window = \"10ms\"\nregister_guesses = 0\ntrunk_health_interval = \"1ms\"\n",
			"t.toml:7:16: autoblock.aggregate_v6: must be 0 (off) or at least 2: with 1, every /64 block would widen to a /48\n" +
				"t.toml:8:19: autoblock.register_window: must be at least 1s (got 10ms)\n" +
				"t.toml:9:20: autoblock.register_guesses: must be between 1 and 65535 (got 0)\n" +
				"t.toml:10:25: autoblock.trunk_health_interval: must be \"0s\" (off) or at least 1s (got 1ms)"},
		{minimal + "[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = [\"10.0.0.0/8\"]\nrefer = \"bounce\"\n",
			"t.toml:10:9: trunk[0].refer: unknown refer \"bounce\" (want \"relay\", \"local\" or \"refuse\")"},
		{minimal + "[autoblock]\nblock_trunks = true\n",
			"t.toml:7:1: autoblock.block_trunks: removed: trunks are never blocked or demoted for failures a forged source address can cause (see README, Edge defence: the trust model); delete the line"},
	} {
		_, err := Parse("t.toml", []byte(tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("got\n%v\nwant\n%s", err, tc.want)
		}
	}
}

func TestDurationZeroVersusAbsent(t *testing.T) {
	p := mustParse(t, minimal+`
[calls]
max_duration = "0s"
[[pool]]
name = "off"
realm = "r"
health.interval = "0s"
[[pool.target]]
address = "127.0.0.1:5080"
[[pool]]
name = "fast"
realm = "r"
health.interval = "1s"
[[pool.target]]
address = "127.0.0.1:5080"
`)
	if d := p.Calls.MaxDuration; d.Duration != 0 || !d.IsSet() {
		t.Errorf("max_duration \"0s\": %v set=%v, want 0 set", d.Duration, d.IsSet())
	}
	if d := p.Calls.RingTimeout; d.Duration != DefaultRingTimeout || d.IsSet() {
		t.Errorf("ring_timeout absent: %v set=%v, want default, not set", d.Duration, d.IsSet())
	}
	off := p.Pool("off").Health
	if off.Enabled() || !off.Interval.IsSet() {
		t.Errorf("interval \"0s\" must disable health checks: %+v", off)
	}
	fast := p.Pool("fast").Health
	if fast.Timeout.Duration != 500*time.Millisecond || fast.Timeout.IsSet() {
		t.Errorf("timeout default with a 1s interval: %v, want 500ms", fast.Timeout.Duration)
	}
}

func TestParseGood(t *testing.T) {
	p := mustParse(t, `
[server]
user_agent = "Edge SBC 1.0"
udp_read_buffer = 0x100000
[admin]
listen = "[::1]:0"
plain_http = true
[[realm]]
name = "ext"
listener = [
  { transport = "udp", bind = "0.0.0.0:5060", advertise = "sbc.example.com" },
  { transport = "tcp", bind = "[::1]:5061", advertise = "[2001:db8::1]:5070" },
  { transport = "udp", bind = "[::ffff:127.0.0.2]:5062", advertise = "192.0.2.1:5064" },
  { transport = "tcp", bind = "127.0.0.1:0" },
  { transport = "tcp", bind = "127.0.0.2:0" },
]
media = { ip = "127.0.0.1" }
[[realm]]
name = "int.1"
[[realm.listener]]
bind = "[::1]:5070"
advertise = "2001:db8::2"
[[trunk]]
name = "carrier-a"
realm = "ext"
sources = ["192.0.2.77/24", "198.51.100.1", "2001:db8:1::1/48", "2001:db8:2::1", "::ffff:203.0.113.0/120"]
[[trunk]]
name = "carrier-b"
realm = "ext"
sources = ["192.0.2.0/25"]
[[pool]]
name = "pbx_1"
realm = "int.1"
target = [{ address = "[::1]:5080", weight = 0 }, { address = "[::1]:5081", weight = 5 }]
[pool.health]
interval = "1s"
timeout = "100ms"
up = 1
down = 1000
[headers]
allow = ["content-type", "X-Custom"]
unknown_source_action = "reject"
`)
	ls := p.Realm("ext").Listeners
	type adv struct {
		host string
		port int
	}
	want := []adv{{"sbc.example.com", 5060}, {"2001:db8::1", 5070}, {"192.0.2.1", 5064}, {"127.0.0.1", 0}, {"127.0.0.2", 0}}
	for i, l := range ls {
		if (adv{l.AdvertiseHost, l.AdvertisePort}) != want[i] {
			t.Errorf("listener %d advertise = %s %d, want %v", i, l.AdvertiseHost, l.AdvertisePort, want[i])
		}
	}
	if ls[2].BindAddr != netip.MustParseAddrPort("127.0.0.2:5062") {
		t.Errorf("v4-mapped bind not unmapped: %v", ls[2].BindAddr)
	}
	if l := p.Realm("int.1").Listeners[0]; l.AdvertiseHost != "2001:db8::2" || l.AdvertisePort != 5070 {
		t.Errorf("advertise without port: %+v", l)
	}
	wantPfx := []string{"192.0.2.0/24", "198.51.100.1/32", "2001:db8:1::/48", "2001:db8:2::1/128", "203.0.113.0/24"}
	var gotPfx []string
	for _, pf := range p.Trunk("carrier-a").Prefixes {
		gotPfx = append(gotPfx, pf.String())
	}
	if !slices.Equal(gotPfx, wantPfx) {
		t.Errorf("prefixes = %v, want %v", gotPfx, wantPfx)
	}
	pl := p.Pool("pbx_1")
	if pl.Targets[0].W != 0 || pl.Targets[1].W != 5 || *pl.Targets[0].Weight != 0 {
		t.Errorf("weights: %+v", pl.Targets)
	}
	if h := pl.Health; h.Timeout.Duration != 100*time.Millisecond || h.Up != 1 || h.Down != 1000 {
		t.Errorf("health: %+v", h)
	}
	if p.Server.UDPReadBuffer != 1<<20 || p.Server.UDPWriteBuffer != DefaultUDPBuffer {
		t.Errorf("buffers: %+v", p.Server)
	}
	if p.Admin.Addr != netip.MustParseAddrPort("[::1]:0") {
		t.Errorf("admin: %v", p.Admin.Addr)
	}
	if !p.AllowedHeader("Content-Type") || !p.AllowedHeader("x-custom") || p.AllowedHeader("Subject") {
		t.Error("explicit allow list not applied")
	}
}

func TestEmptyAllowList(t *testing.T) {
	p := mustParse(t, minimal+"[headers]\nallow = []\n")
	if p.Headers.Allow == nil || len(p.Headers.Allow) != 0 {
		t.Errorf("allow = %#v", p.Headers.Allow)
	}
	for _, h := range DefaultAllowedHeaders {
		if p.AllowedHeader(h) {
			t.Errorf("%s allowed by an empty allow list", h)
		}
	}
}

// TestParseErrors checks the exact error lines of bad policies; each case
// has several problems that must all be reported.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"empty", "", []string{
			"t.toml:1:1: no realm: define at least one [[realm]] with a [[realm.listener]]",
		}},
		{"comments only", "# nothing\n\n", []string{
			"t.toml:1:1: no realm: define at least one [[realm]] with a [[realm.listener]]",
		}},
		{"admin", minimal + `
[admin]
listen = "0.0.0.0:9090"
plain_http = true
client_roles = [{ cn = "a", dns = "b", roles = ["root"] }, { uri = "spiffe://x/y", roles = [] }]
api_keys = [{ id = "XYZ", sha256 = "00", roles = ["read"] }, { id = "0123456789abcdef", sha256 = "` + strings.Repeat("ab", 32) + `", roles = ["audit"] }, { id = "0123456789abcdef", sha256 = "` + strings.Repeat("cd", 32) + `", roles = ["read"] }]
origins = ["evil.example", "https://ok.example"]
hosts = ["bad host"]
burst = 0
`, []string{
			`t.toml:9:14: admin.plain_http: plain HTTP on 0.0.0.0 would serve the admin API, credentials in clear, on every interface: bind it to loopback, or use [admin.tls]`,
			`t.toml:10:16: admin.client_roles: client certificates need [admin.tls] with ca_file and client_auth "request" or "require"`,
			`t.toml:10:17: admin.client_roles[0]: exactly one of cn, dns or uri names the certificates`,
			`t.toml:10:49: admin.client_roles[0].roles[0]: unknown role "root" (want one of admin, operator, read, audit)`,
			`t.toml:10:92: admin.client_roles[1].roles: at least one role (admin, operator, read, audit)`,
			`t.toml:11:20: admin.api_keys[0].id: invalid key id "XYZ": want 16 lowercase hex digits`,
			`t.toml:11:36: admin.api_keys[0].sha256: want the key's SHA-256 as 64 lowercase hex digits`,
			`t.toml:11:194: admin.api_keys[2].id: key id "0123456789abcdef" is also at 11:62`,
			`t.toml:12:12: admin.origins[0]: invalid origin "evil.example": want scheme://host[:port], e.g. "https://ops.example"`,
			`t.toml:13:10: admin.hosts[0]: invalid host name "bad host"`,
			`t.toml:14:9: admin.burst: must be at least 1 while rate is set`,
		}},
		{"admin plain http off loopback", minimal + `
[admin]
listen = "192.0.2.10:9090"
plain_http = true
`, []string{
			`t.toml:9:14: admin.plain_http: plain HTTP is for a loopback listen address only (127.0.0.0/8, ::1); on 192.0.2.10 API keys would cross the network in clear: use [admin.tls] (HTTPS, with cert_file and key_file; ca_file and client_roles for client certificates)`,
		}},
		{"admin plain http off loopback v6", minimal + `
[admin]
listen = "[2001:db8::10]:9090"
plain_http = true
`, []string{
			`t.toml:9:14: admin.plain_http: plain HTTP is for a loopback listen address only (127.0.0.0/8, ::1); on 2001:db8::10 API keys would cross the network in clear: use [admin.tls] (HTTPS, with cert_file and key_file; ca_file and client_roles for client certificates)`,
		}},
		{"admin without transport", minimal + `
[admin]
listen = "127.0.0.1:9090"
`, []string{
			`t.toml:8:10: admin.listen: the admin API needs [admin.tls] (HTTPS, with cert_file and key_file) or plain_http = true (HTTP, for loopback)`,
		}},
		{"admin tls", minimal + `
[admin]
listen = "[::]:9443"
plain_http = true
  [admin.tls]
  key_file = "k.pem"
  client_auth = "require"
`, []string{
			`t.toml:9:14: admin.plain_http: plain_http and [admin.tls] exclude each other`,
			`t.toml:10:10: admin.tls: cert_file and key_file go together`,
			`t.toml:10:10: admin.tls: cert_file and key_file are required (the admin listener's certificate)`,
			`t.toml:12:17: admin.tls.client_auth: client_auth "require" needs ca_file (the CA of the admin clients' certificates)`,
		}},
		{"xdp scope", minimal + `
[xdp]
scope = "all"
`, []string{
			`t.toml:8:9: xdp.scope: unknown scope "all" (want "sip" or "host")`,
		}},
		{"syntax", minimal + "[server\n", []string{
			"t.toml:6:8: syntax error: expected ']' to close table name",
		}},
		{"tls", `
[[realm]]
name = "r"
  [[realm.listener]]
  transport = "tls"
  bind = "127.0.0.1:5061"
    [realm.listener.tls]
    cert_file = "c.pem"
    client_auth = "maybe"
    min_version = "1.1"
    server_name = "x.example"
    revoked_spki = ["abc"]
  [[realm.listener]]
  transport = "wss"
  bind = "127.0.0.1:8443"
  path = "sip"
  origins = ["ftp://x", "https://ok.example:8443"]
    [realm.listener.tls]
    cert_file = "c.pem"
    key_file = "k.pem"
    client_auth = "require"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:5060"
  origins = ["*"]
    [realm.listener.tls]
    cert_file = "c.pem"
    key_file = "k.pem"
[[trunk]]
name = "t"
realm = "r"
tls_identities = ["dns:ok.example", "ip:1.2.3.4", "spki:00"]
[[trunk]]
name = "u"
realm = "r"
tls_identities = ["dns:OK.example"]
[[pool]]
name = "p"
realm = "r"
transport = "tls"
  [[pool.target]]
  address = "127.0.0.1:5080"
  [pool.tls]
  client_auth = "require"
  handshake_timeout = "1s"
`, []string{
			`t.toml:7:21: realm[0].listener[0].tls: cert_file and key_file go together`,
			`t.toml:7:21: realm[0].listener[0].tls: cert_file and key_file are required (the listener's certificate)`,
			`t.toml:9:19: realm[0].listener[0].tls.client_auth: unknown client_auth "maybe" (want "none", "request" or "require")`,
			`t.toml:10:19: realm[0].listener[0].tls.min_version: unsupported min_version "1.1" (want "1.2" or "1.3"; nothing older is ever accepted)`,
			`t.toml:11:19: realm[0].listener[0].tls.server_name: server_name is a pool setting`,
			`t.toml:12:21: realm[0].listener[0].tls.revoked_spki[0]: invalid SPKI hash "abc": want 64 hex digits (SHA-256 of the SubjectPublicKeyInfo)`,
			`t.toml:16:10: realm[0].listener[1].path: path "sip" must start with /`,
			`t.toml:17:14: realm[0].listener[1].origins[0]: invalid origin "ftp://x": want scheme://host[:port] as a browser sends it (e.g. "https://app.example.com"), "*" or ""`,
			`t.toml:18:21: realm[0].listener[1].tls.ca_file: client_auth "require" needs ca_file (the CAs client certificates must chain to)`,
			`t.toml:25:13: realm[0].listener[2].origins: origins is a wss setting`,
			`t.toml:26:21: realm[0].listener[2].tls: tls settings need transport "tls" or "wss" (this listener is "udp")`,
			`t.toml:32:37: trunk[0].tls_identities[1]: invalid identity "ip:1.2.3.4": want "dns:NAME", "uri:URI", "cn:NAME" or "spki:HEX"`,
			`t.toml:32:51: trunk[0].tls_identities[2]: invalid SPKI hash "00": want 64 hex digits (SHA-256 of the SubjectPublicKeyInfo)`,
			`t.toml:36:19: trunk[1].tls_identities[0]: identity "dns:ok.example" is also at 32:19: an identity may belong to one trunk only`,
			`t.toml:44:17: pool[0].tls.client_auth: client_auth is a listener setting (a pool presents cert_file/key_file to its targets)`,
			`t.toml:45:23: pool[0].tls.handshake_timeout: handshake_timeout is a listener setting (towards targets, routing.target_timeout bounds the connection)`,
		}},
		{"unknown keys and tables", minimal + `
[server]
log_levl = "debug"
Log_Level = "debug"
[realm.x]
[[bogus]]
a = 1
b = 2
[[realm.listener]]
bind = "127.0.0.1:6000"
nope = 1
[pool.health]
`, []string{
			`t.toml:8:1: server.log_levl: unknown key (did you mean "log_level"?)`,
			`t.toml:9:1: server.Log_Level: unknown key (did you mean "log_level"?)`,
			`t.toml:10:8: realm[0].x: unknown table (known here: name, listener, media)`,
			`t.toml:11:3: bogus: unknown table (known here: server, admin, realm, trunk, pool, route, outbound_route, outbound, registrations, dns, routing, calls, headers, header_rule, limits, autoblock, xdp, nftables, media, cdr, hep, webhook, audit, secrets)`,
			`t.toml:16:1: realm[0].listener[1].nope: unknown key (known here: transport, bind, advertise, tls, path, origins)`,
			`t.toml:17:2: pool: [pool.health] needs a [[pool]] before it`,
		}},
		{"table shapes", minimal + `
[route]
pool = "x"
[[server]]
log_level = "x"
[server.log_level]
[admin]
listen.port = 1
realm = []
`, []string{
			"t.toml:7:2: route: is an array of tables: write [[route]]",
			"t.toml:9:3: server: is a table, not an array of tables: write [server]",
			"t.toml:11:9: server.log_level: is a string, not a table",
			"t.toml:13:1: admin.listen: is a string, not a table",
			"t.toml:14:1: admin.realm: unknown key (known here: listen, plain_http, tls, client_roles, api_keys, keys_file, hosts, origins, rate, burst)",
		}},
		{"wrong types", `
[server]
user_agent = 1
udp_read_buffer = "4M"
tcp_idle_timeout = 10
[admin]
listen = ["127.0.0.1:9090"]
[[realm]]
name = "r"
listener = { bind = "127.0.0.1:5060" }
[[realm]]
name = "s"
[[realm.listener]]
bind = "127.0.0.1:5070"
[[pool]]
name = "p"
realm = "s"
health = "on"
[[pool.target]]
address = "127.0.0.1:1"
weight = 1.5
[calls]
ring_timeout = "3 minutes"
max_duration = 2024-01-01
[routing]
follow_redirects = "yes"
max_attempts = 99999999999999999999
`, []string{
			`t.toml:3:14: server.user_agent: expected string, got integer`,
			`t.toml:4:19: server.udp_read_buffer: expected integer, got string`,
			`t.toml:5:20: server.tcp_idle_timeout: expected duration string, got integer`,
			`t.toml:7:10: admin.listen: expected string, got array`,
			`t.toml:10:12: realm[0].listener: expected array of tables, got table`,
			`t.toml:18:10: pool[0].health: expected table, got string`,
			`t.toml:21:10: pool[0].target[0].weight: expected integer, got float`,
			`t.toml:23:16: calls.ring_timeout: invalid duration "3 minutes" (write a number and a unit: "500ms", "5s", "10m", "4h")`,
			`t.toml:24:16: calls.max_duration: expected duration string, got date`,
			`t.toml:26:20: routing.follow_redirects: expected boolean, got string`,
			`t.toml:27:16: routing.max_attempts: integer "99999999999999999999" is out of range`,
		}},
		{"structural and semantic together", minimal + `
[server]
log_level = 3
[[trunk]]
name = "t"
realm = "nowhere"
sources = ["10.0.0.0/8"]
`, []string{
			`t.toml:8:13: server.log_level: expected string, got integer`,
			`t.toml:11:9: trunk[0].realm: unknown realm "nowhere" (defined: "r")`,
		}},
		{"duplicate key reported by go-toml", minimal + `
[server]
log_level = "info"
log_level = "debug"
`, []string{
			`t.toml:9:1: log_level: key log_level is already defined`,
		}},
		{"media kernel_relay", minimal + `
[media]
kernel_relay = ["eth0", "", "eth0", "a-name-far-too-long"]
`, []string{
			`t.toml:8:16: media.kernel_relay: invalid interface name ""`,
			`t.toml:8:16: media.kernel_relay: interface "eth0" listed twice`,
			`t.toml:8:16: media.kernel_relay: invalid interface name "a-name-far-too-long"`,
		}},
		{"server values", minimal + `
[server]
user_agent = "bad\r\nInjected: yes"
log_level = "verbose"
udp_read_buffer = -1
udp_write_buffer = 2000000000
tcp_idle_timeout = "0s"
gc_heap_floor = 1000
memory_limit = 1
`, []string{
			`t.toml:8:14: server.user_agent: must be printable ASCII, at most 128 bytes`,
			`t.toml:9:13: server.log_level: unknown log level "verbose" (want "debug", "info", "warn" or "error")`,
			`t.toml:10:19: server.udp_read_buffer: must be between 0 (default, 4194304) and 1073741824 bytes (got -1)`,
			`t.toml:11:20: server.udp_write_buffer: must be between 0 (default, 4194304) and 1073741824 bytes (got 2000000000)`,
			`t.toml:12:20: server.tcp_idle_timeout: must be positive`,
			`t.toml:13:17: server.gc_heap_floor: must be 0 (default, 536870912), -1 (off) or between 16777216 and 1099511627776 bytes (got 1000)`,
			`t.toml:14:16: server.memory_limit: must be 0 (none) or at least 67108864 bytes (got 1)`,
		}},
		{"realms and listeners", `
[admin]
listen = "localhost:9090"
[[realm]]
name = "a"
[[realm.listener]]
transport = "UDP"
bind = "127.0.0.1:5060"
[[realm.listener]]
transport = "tls"
bind = "127.0.0.1:5061"
[[realm.listener]]
bind = "127.0.0.1"
[[realm.listener]]
bind = "0.0.0.0:5062"
[[realm.listener]]
transport = "udp"
bind = "127.0.0.1:5063"
advertise = "[127.0.0.1]:5063"
[[realm]]
name = "a"
[[realm.listener]]
bind = "127.0.0.1:5063"
[[realm.listener]]
bind = "[::]:5063"
advertise = "sbc-.example.com"
[[realm.listener]]
transport = "tcp"
[[realm]]
name = "bad name"
[[realm]]
`, []string{
			`t.toml:3:10: admin.listen: invalid address "localhost:9090": want ip:port with an IP literal, e.g. "127.0.0.1:9090"`,
			`t.toml:7:13: realm[0].listener[0].transport: unknown transport "UDP" (want "udp", "tcp", "tls" or "wss")`,
			`t.toml:10:13: realm[0].listener[1].transport: a tls listener needs a [realm.listener.tls] table with cert_file and key_file`,
			`t.toml:13:8: realm[0].listener[2].bind: invalid address "127.0.0.1": want ip:port with an IP literal, e.g. "127.0.0.1:5060" or "[::1]:5060"`,
			`t.toml:15:8: realm[0].listener[3].bind: advertise is required when bind is the unspecified address 0.0.0.0`,
			`t.toml:19:13: realm[0].listener[4].advertise: invalid advertise "[127.0.0.1]:5063": IPv6 addresses, and only they, are written in brackets`,
			`t.toml:21:8: realm[1].name: duplicate realm name "a" (first at 5:8)`,
			`t.toml:23:8: realm[1].listener[0].bind: duplicate listener udp 127.0.0.1:5063 (first at 18:8)`,
			`t.toml:25:8: realm[1].listener[1].bind: listener udp [::]:5063 overlaps the listener at 18:8 (a wildcard address covers the other)`,
			`t.toml:26:13: realm[1].listener[1].advertise: invalid advertise "sbc-.example.com": want host[:port] with an IP address or a DNS name`,
			`t.toml:27:9: realm[1].listener[2].bind: bind is required (e.g. bind = "127.0.0.1:5060")`,
			`t.toml:29:3: realm[2].listener: realm "bad name" has no listener (add a [[realm.listener]])`,
			`t.toml:30:8: realm[2].name: invalid realm name "bad name": use letters, digits, '_', '-' and '.', at most 64`,
			`t.toml:31:3: realm[3].name: realm without a name (add name = "...")`,
			`t.toml:31:3: realm[3].listener: realm "" has no listener (add a [[realm.listener]])`,
		}},
		{"trunks", minimal + `
[[trunk]]
name = "a"
realm = "r"
sources = ["10.0.0.0/8", "10.1.2.3/8", "10.0.0.300", "fe80::1%eth0", "192.0.2.1", ""]
[[trunk]]
name = "b"
sources = ["192.0.2.1/32", "::ffff:10.0.0.0/104", "2001:db8::/32"]
[[trunk]]
name = "c"
realm = "r"
sources = []
[[trunk]]
realm = "elsewhere"
`, []string{
			`t.toml:10:26: trunk[0].sources[1]: 10.0.0.0/8 is listed twice (first at 10:12)`,
			`t.toml:10:40: trunk[0].sources[2]: invalid source "10.0.0.300": want a CIDR ("192.0.2.0/24") or an address ("192.0.2.1")`,
			`t.toml:10:54: trunk[0].sources[3]: invalid source "fe80::1%eth0": want a CIDR ("192.0.2.0/24") or an address ("192.0.2.1")`,
			`t.toml:10:83: trunk[0].sources[5]: invalid source "": want a CIDR ("192.0.2.0/24") or an address ("192.0.2.1")`,
			`t.toml:11:3: trunk[1].realm: realm is required`,
			`t.toml:13:12: trunk[1].sources[0]: 192.0.2.1/32 is also a source of trunk "a" (at 10:70): a prefix may belong to one trunk only`,
			`t.toml:13:28: trunk[1].sources[1]: 10.0.0.0/8 is also a source of trunk "a" (at 10:12): a prefix may belong to one trunk only`,
			`t.toml:17:11: trunk[2].sources: trunk "c" has no sources (e.g. sources = ["192.0.2.0/24"]) and no tls_identities`,
			`t.toml:18:3: trunk[3].name: trunk without a name (add name = "...")`,
			`t.toml:18:3: trunk[3].sources: trunk "" has no sources (e.g. sources = ["192.0.2.0/24"]) and no tls_identities`,
			`t.toml:19:9: trunk[3].realm: unknown realm "elsewhere" (defined: "r")`,
		}},
		{"pools", minimal + `
[[pool]]
name = "p"
realm = "r"
transport = "tcp"
[[pool.target]]
address = "pbx_example.com:5060"
[[pool.target]]
address = "127.0.0.1:0"
weight = -1
[[pool.target]]
address = "0.0.0.0:5060"
[[pool.target]]
weight = 2
[pool.health]
interval = "5ms"
timeout = "-1s"
up = 0
down = 1001
[[pool]]
name = "p"
realm = "r"
[[pool.target]]
address = "127.0.0.1:5080"
weight = 0
[[pool.target]]
address = "127.0.0.1:5080"
weight = 0
[pool.health]
interval = "1s"
timeout = "1s"
[[pool]]
name = "q"
[[pool]]
name = "z"
realm = "r"
transport = "sctp"
[[pool.target]]
address = "[::1]:5080"
weight = 1000001
`, []string{
			`t.toml:10:13: pool[0].transport: realm "r" has no tcp listener to reach the targets from`,
			`t.toml:12:11: pool[0].target[0].address: invalid address "pbx_example.com:5060": want ip:port (e.g. "127.0.0.1:5080" or "[::1]:5080") or host:port with a DNS name (e.g. "sip.carrier.example:5060")`,
			`t.toml:14:11: pool[0].target[1].address: port must not be 0`,
			`t.toml:15:10: pool[0].target[1].weight: must be between 0 and 1000000 (got -1)`,
			`t.toml:17:11: pool[0].target[2].address: 0.0.0.0 is not a unicast address`,
			`t.toml:18:8: pool[0].target[3].address: address is required (e.g. address = "127.0.0.1:5080")`,
			`t.toml:21:12: pool[0].health.interval: must be 0s (disabled) or at least 10ms (got 5ms)`,
			`t.toml:22:11: pool[0].health.timeout: must not be negative (got -1s)`,
			`t.toml:23:6: pool[0].health.up: must be between 1 and 1000 (got 0)`,
			`t.toml:24:8: pool[0].health.down: must be between 1 and 1000 (got 1001)`,
			`t.toml:26:8: pool[1].name: duplicate pool name "p" (first at 8:8)`,
			`t.toml:28:8: pool[1].target: all targets of pool "p" have weight 0: none can be chosen`,
			`t.toml:32:11: pool[1].target[1].address: target 127.0.0.1:5080 is listed twice (first at 29:11)`,
			`t.toml:36:11: pool[1].health.timeout: timeout 1s must be shorter than the interval 1s`,
			`t.toml:37:3: pool[2].realm: realm is required`,
			`t.toml:37:3: pool[2].target: pool "q" has no target (add a [[pool.target]])`,
			`t.toml:42:13: pool[3].transport: transport "sctp" is not supported (want "udp", "tcp", "tls" or "wss")`,
			`t.toml:45:10: pool[3].target[0].weight: must be between 0 and 1000000 (got 1000001)`,
		}},
		{"routes and routing", minimal + `
[[trunk]]
name = "t"
realm = "r"
sources = ["10.0.0.0/8"]
[[pool]]
name = "p"
realm = "r"
target = [{ address = "127.0.0.1:5080" }]
[[route]]
prefix = "1"
pool = "p"
[[route]]
trunk = "t"
prefix = "1"
pool = "p"
[[route]]
prefix = "1"
pool = "q"
[[route]]
trunk = "u"
prefix = "has space"
[routing]
default_pool = "nope"
target_timeout = "0s"
max_attempts = 0
retry_after = 0
[calls]
max_duration = "-1h"
inactivity_timeout = "-1s"
ring_timeout = "0s"
[headers]
unknown_source_action = "ignore"
allow = ["Subject", "subject", "CSeq", "k", "X Bad", "Content-Type"]
`, []string{
			`t.toml:22:3: route[2]: duplicate route for trunk "" and prefix "1" (first at 15:3)`,
			`t.toml:24:8: route[2].pool: unknown pool "q" (defined: "p")`,
			`t.toml:25:3: route[3].pool: pool is required`,
			`t.toml:26:9: route[3].trunk: unknown trunk "u" (defined: "t")`,
			`t.toml:27:10: route[3].prefix: invalid prefix "has space": visible ASCII characters only, at most 128`,
			`t.toml:29:16: routing.default_pool: unknown pool "nope" (defined: "p")`,
			`t.toml:30:18: routing.target_timeout: must be positive`,
			`t.toml:31:16: routing.max_attempts: must be between 1 and 100 (got 0)`,
			`t.toml:32:15: routing.retry_after: must be between 1 and 86400 (got 0)`,
			`t.toml:34:16: calls.max_duration: must not be negative (got -1h0m0s)`,
			`t.toml:35:22: calls.inactivity_timeout: must not be negative (got -1s)`,
			`t.toml:36:16: calls.ring_timeout: must be positive`,
			`t.toml:38:25: headers.unknown_source_action: unknown action "ignore" (want "drop" or "reject")`,
			`t.toml:39:21: headers.allow[1]: header subject is listed twice (first at 39:10)`,
			`t.toml:39:32: headers.allow[2]: CSeq is generated by the SBC and never copied between legs`,
			`t.toml:39:40: headers.allow[3]: "k" is the compact form of Supported: write the long form`,
			`t.toml:39:45: headers.allow[4]: invalid header name "X Bad"`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("t.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", p)
			}
			if p != nil {
				t.Error("Parse returned a policy with an error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not Errors: %v", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(errs) {
				t.Errorf("Errors.Error() has %d lines for %d errors", len(got), len(errs))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	es := Errors{{File: "a.toml", Line: 3, Col: 7, Msg: "x"}, {File: "a.toml", Line: 4, Col: 1, Msg: "y"}}
	if got, want := es.Error(), "a.toml:3:7: x\na.toml:4:1: y"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
	if got := es[0].Error(); got != "a.toml:3:7: x" {
		t.Errorf("Error.Error() = %q", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, DefaultTOML(), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != good {
		t.Errorf("Source = %q, want %q", p.Source, good)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(minimal+"[calls]\nring_timeout = \"0s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if want := bad + ":7:16: calls.ring_timeout: must be positive"; err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v, want %s", err, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want not-exist", err)
	}

	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(big)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(errs[0].Msg, "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func TestParseName(t *testing.T) {
	_, err := Parse("", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "<policy>:1:1: ") {
		t.Errorf("Parse with empty name: %v", err)
	}
}

// TestHostileInputs feeds inputs meant to exhaust the stack or the CPU;
// they must be rejected (or accepted) without crashing.
func TestHostileInputs(t *testing.T) {
	deep := "x = " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"
	deepSources := minimal + "[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "\n"
	var many strings.Builder
	many.WriteString(minimal + "[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = [")
	for i := 0; i < 60000; i++ {
		fmt.Fprintf(&many, "\"10.%d.%d.0/24\",", i>>8&255, i&255)
	}
	many.WriteString("]\n")
	longKey := minimal + "[server]\n" + strings.Repeat("k", 100000) + " = 1\n" + strings.Repeat("k", 100000) + " = 1\n"
	for name, src := range map[string]string{
		"deep nesting":        deep,
		"deep nesting typed":  deepSources,
		"long key":            longKey,
		"NUL bytes":           "\x00\x00\x00",
		"invalid UTF-8":       minimal + "[server]\nuser_agent = \"\xff\xfe\"\n",
		"CRLF":                strings.ReplaceAll(minimal, "\n", "\r\n") + "[server]\r\nlog_level = 1\r\n",
		"many duplicate srcs": strings.Replace(many.String(), "sources = [", "sources = [\"10.0.0.0/24\",", 1),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("h.toml", []byte(src))
			if err == nil {
				t.Fatal("accepted")
			}
			if len(err.Error()) > 2000 {
				t.Errorf("error text of %d bytes", len(err.Error()))
			}
		})
	}
	_, err := Parse("h.toml", []byte(strings.ReplaceAll(many.String(), "/24", "/33")))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != MaxErrors || errs[MaxErrors-1].Msg != "too many errors: 59901 more not shown" {
		t.Errorf("60000 errors reported as %d, last %v", len(errs), errs[len(errs)-1])
	}
	_, err = Parse("h.toml", []byte(strings.ReplaceAll(minimal, "\n", "\r\n")+"[server]\r\nlog_level = 1\r\n"))
	if want := "h.toml:7:13: server.log_level: expected string, got integer"; err == nil || err.Error() != want {
		t.Errorf("CRLF file: %v, want %s", err, want)
	}
	p := mustParse(t, many.String())
	if n := len(p.Trunk("t").Prefixes); n != 60000 {
		t.Errorf("%d prefixes, want 60000", n)
	}
}

// TestLoadResolvesFilesNextToThePolicy: relative certificate paths are
// read from the policy file's directory, whatever the working directory.
func TestLoadResolvesFilesNextToThePolicy(t *testing.T) {
	dir := t.TempDir()
	text := `
[[realm]]
name = "r"
  [[realm.listener]]
  transport = "tls"
  bind = "127.0.0.1:0"
    [realm.listener.tls]
    cert_file = "certs/sbc.pem"
    key_file = "/abs/sbc-key.pem"
[[realm]]
name = "i"
  [[realm.listener]]
  transport = "tls"
  bind = "127.0.0.2:0"
    [realm.listener.tls]
    cert_file = "sbc.pem"
    key_file = "sbc-key.pem"
[[trunk]]
name = "t"
realm = "r"
sources = ["127.0.0.1"]
[[pool]]
name = "p"
realm = "i"
transport = "tls"
  [[pool.target]]
  address = "127.0.0.3:5061"
  [pool.tls]
  ca_file = "../ca.pem"
`
	file := filepath.Join(dir, "p.toml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	l := p.Realms[0].Listeners[0].TLS
	if l.CertFile != filepath.Join(dir, "certs/sbc.pem") || l.KeyFile != "/abs/sbc-key.pem" {
		t.Errorf("listener files %q %q", l.CertFile, l.KeyFile)
	}
	if got := p.Pools[0].TLS.CAFile; got != filepath.Join(filepath.Dir(dir), "ca.pem") {
		t.Errorf("pool ca_file %q", got)
	}
}

// plain_http is for loopback only: every loopback form is accepted, any
// other address refused with what to do instead.
func TestAdminPlainHTTPLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:9090", true}, {"127.0.0.2:0", true}, {"[::1]:9090", true}, {"[::ffff:127.0.0.1]:9090", true},
		{"10.0.0.1:9090", false}, {"192.168.1.1:9090", false}, {"[fe80::1]:9090", false}, {"[::ffff:10.0.0.1]:9090", false},
	} {
		_, err := Parse("t.toml", []byte(minimal+"\n[admin]\nlisten = \""+tc.listen+"\"\nplain_http = true\n"))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.listen, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "use [admin.tls]")):
			t.Errorf("%s: %v, want refused with use [admin.tls]", tc.listen, err)
		}
	}
}

// TestWebRTCMediaProfile: WebRTC peers take DTLS-SRTP only. A pool over
// wss defaults to media_encryption "dtls" and refuses another; a trunk
// reached only over wss refuses "none" and "sdes" (every call would fail);
// without anchoring nothing is checked (the SDP passes untouched).
func TestWebRTCMediaProfile(t *testing.T) {
	base := `
[[realm]]
name = "r"
  [[realm.listener]]
  bind = "127.0.0.1:5060"
  [[realm.listener]]
  transport = "wss"
  bind = "127.0.0.1:8443"
  origins = ["*"]
    [realm.listener.tls]
    cert_file = "c.pem"
    key_file = "k.pem"
[[trunk]]
name = "browsers"
realm = "r"
sources = ["192.0.2.0/24"]
transports = ["wss"]
%s
[[pool]]
name = "webrtc"
realm = "r"
transport = "wss"
%s
  [[pool.target]]
  address = "192.0.2.9:5060"
`
	p := mustParse(t, fmt.Sprintf(base, "", ""))
	if got := p.Pools[0].MediaEncryption; got != "dtls" {
		t.Errorf("a wss pool's media_encryption defaults to %q, want dtls", got)
	}
	_, err := Parse("t.toml", []byte(fmt.Sprintf(base, `media_encryption = "sdes"`, `media_encryption = "any"`)))
	if err == nil {
		t.Fatal("SDES towards WebRTC accepted")
	}
	for _, want := range []string{
		`trunk[0].media_encryption: a trunk reached only over wss is WebRTC`,
		`pool[0].media_encryption: a pool over wss reaches WebRTC peers, which take DTLS-SRTP only`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
	mustParse(t, fmt.Sprintf(base, `media_encryption = "dtls"`, `media_encryption = "dtls"`))
	mustParse(t, fmt.Sprintf(base, `media_encryption = "any"`, ""))
	mustParse(t, fmt.Sprintf(base, `media_encryption = "none"`, `media_encryption = "none"`)+"[media]\nanchor = false\n")
}
