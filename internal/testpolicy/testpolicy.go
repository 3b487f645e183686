package testpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/sbc-project/sbc/policy"
)

// Policy is a policy file to be written. The fields are the file's tables;
// a nil table pointer writes no table.
type Policy struct {
	// Comment lines written at the top of the file, each prefixed "# ".
	Comment string

	Server Server
	// Admin is [admin] listen; "" writes no [admin] table (no admin
	// listener).
	Admin string
	// AdminTOML is the rest of the [admin] table (raw TOML lines). Empty:
	// plain_http = true, no rate limit (tests poll) and AdminKey as an
	// api_keys entry with role "admin", so tests reach the API with
	// AdminKey.
	AdminTOML string

	Realms []Realm
	Trunks []Trunk
	Pools  []Pool
	Routes []Route
	// OutboundRoutes are [[outbound_route]]; Outbound is [outbound].
	OutboundRoutes []OutboundRoute
	Outbound       *Outbound

	Routing   *Routing
	Calls     *Calls
	Headers   *Headers
	Limits    *Limits
	AutoBlock *AutoBlock
	XDP       *XDP
	Nftables  *Nftables
	Media     *Media
	CDR       *CDR
	HEP       *HEP
	Webhooks  []Webhook
	Audit     *Audit
	Secrets   *Secrets

	// Extra is raw TOML appended at the end of the file: tables or
	// array-of-tables entries the fields do not cover. It must not repeat
	// a table the fields already write.
	Extra string
}

// Server is [server].
type Server struct {
	UserAgent         string
	LogLevel          string
	UDPReadBuffer     int
	UDPWriteBuffer    int
	TCPIdleTimeout    policy.Duration
	TCPMessageTimeout policy.Duration
	StateDir          string
}

// Realm is one [[realm]].
type Realm struct {
	Name      string
	Listeners []Listener
	Media     *RealmMedia
}

// RealmMedia is [realm.media].
type RealmMedia struct {
	IP, Advertise string
	Ports         []int
}

// Audit is [audit]. MaxSize nil writes no max_size (the default).
type Audit struct {
	File           string
	MaxSize        *int
	Keep           int
	Stdout         bool
	Syslog         string
	SyslogFacility string
	RedactFields   []string
	MaskNumbers    int
	Events         []string
	QueueSize      int
}

// Secrets is [secrets].
type Secrets struct {
	MasterKeyFile   string
	PreviousKeyFile string
}

// Media is [media].
type Media struct {
	Anchor              *bool
	Timeout, Quarantine policy.Duration
	KernelRelay         []string
}

// CDR is [cdr].
type CDR struct {
	Enabled                    bool
	File                       string
	MaxSizeMB, MaxFiles, Queue int
}

// HEP is [hep].
type HEP struct {
	Enabled  bool
	Address  string
	AgentID  int
	Password string
	Queue    int
}

// Webhook is one [[webhook]].
type Webhook struct {
	Name, URL           string
	Events              []string
	Secret, SecretEnv   string
	Timeout, MaxBackoff policy.Duration
	MaxAttempts, Queue  int
}

// Listener is one [[realm.listener]].
type Listener struct {
	Transport string // "udp", "tcp", "tls", "wss"; "" writes no key (udp)
	Bind      string
	Advertise string
	Path      string   // wss
	Origins   []string // wss
	TLS       *ListenerTLS
}

// ListenerTLS is [realm.listener.tls].
type ListenerTLS struct {
	CertFile, KeyFile, CAFile string
	MinVersion                string
	ClientAuth                string
	RevokedSPKI               []string
	HandshakeTimeout          policy.Duration
}

// PoolTLS is [pool.tls].
type PoolTLS struct {
	CertFile, KeyFile, CAFile string
	MinVersion                string
	ServerName                string
}

// Trunk is one [[trunk]].
type Trunk struct {
	Name            string
	Realm           string
	Sources         []string
	MaxCalls        int
	CPS             int
	AllowRegister   bool
	RegisterDomains []string
	TLSIdentities   []string
	Transports      []string
	MediaEncryption string // "any", "none", "sdes"; "" writes no key
	MediaRequired   bool
	Refer           string // "relay", "local", "refuse"; "" writes no key
	// Extra is raw TOML written at the end of the trunk's table (keys).
	Extra string
}

// Pool is one [[pool]].
type Pool struct {
	Name      string
	Realm     string
	Transport string
	// MediaEncryption is what the SBC offers the targets ("none",
	// "sdes", "any"); "" writes no key.
	MediaEncryption string
	Refer           string // "relay", "local", "refuse"; "" writes no key
	Targets         []Target
	Health          *Health
	TLS             *PoolTLS
	Auth            *PoolAuth
	// Extra is raw TOML written after the pool's targets and health
	// table: sub-tables such as "[pool.health]" (with Health nil), not
	// plain keys (they would belong to the last sub-table).
	Extra string
}

// Target is one [[pool.target]].
type Target struct {
	Address  string
	Weight   *int // nil: default (1); new(0) drains the target
	Priority int
}

// PoolAuth is [pool.auth].
type PoolAuth struct {
	Username, Password, Realm string
}

// OutboundRoute is one [[outbound_route]].
type OutboundRoute struct {
	Prefix, SourcePool string
	Pools              []string
	Strip              int
	Prepend, FromUser  string
	PAI, Privacy       string
	MaxDuration        policy.Duration
	// Hours, Days, Timezone: the time-of-day window ("" / nil: none).
	Hours, Timezone string
	Days            []string
}

// Outbound is [outbound].
type Outbound struct {
	DenyPrefixes, PremiumPrefixes []string
	DenyPremium                   bool
	HomePrefix                    string
	DenyInternational             bool
	PoolMaxCalls, SourceMaxCalls  int
	PoolMaxMinutes                int
	SourceMaxMinutes              int
	MinutesWindow                 policy.Duration
}

// Health is [pool.health].
type Health struct {
	Interval policy.Duration // policy.D(0) turns health checks off
	Timeout  policy.Duration
	Up       int
	Down     int
}

// Route is one [[route]].
type Route struct {
	Trunk  string
	Prefix string
	Pool   string
}

// Routing is [routing].
type Routing struct {
	DefaultPool     string
	FollowRedirects bool
	TargetTimeout   policy.Duration
	MaxAttempts     int
	RetryAfter      int
}

// Calls is [calls].
type Calls struct {
	MaxDuration       policy.Duration
	InactivityTimeout policy.Duration
	RingTimeout       policy.Duration
}

// Headers is [headers].
type Headers struct {
	Allow               []string // nil: default list; []string{}: none
	UnknownSourceAction string
}

// Limits is [limits]. The pointers are the limits that 0 disables.
type Limits struct {
	SourcePPS               *int
	SourcePPSBurst          int
	TrunkPPS                *int
	TrunkPPSBurst           int
	SourceCPS               *int
	RegisterRate            *int
	MaxSources              int
	TCPConnectionsPerSource *int
	TCPConnections          *int
	UDPPeers                int
	QueueDelay              policy.Duration
	OverLimitAction         string
}

// AutoBlock is [autoblock].
type AutoBlock struct {
	Enabled           *bool // nil: default (true)
	Observe           bool
	Threshold         int
	Window            policy.Duration
	BlockFor          policy.Duration
	Escalation        int
	MaxBlock          policy.Duration
	ForgetAfter       policy.Duration
	NeverBlock        []string
	ScannerUserAgents []string // nil: built-in list; []string{}: none

	RegisterGuesses       int
	RegisterSourceGuesses int
	RegisterWindow        policy.Duration
	RegisterLock          policy.Duration
	AggregateV6           *int // nil: default (8); new(0) disables
	TrunkHealthInterval   policy.Duration
}

// XDP is [xdp].
type XDP struct {
	Enabled    bool
	Interfaces []string
	Mode       string
	PinDir     string
	Scope      string
	RatePPS    int
	Burst      int
}

// Nftables is [nftables].
type Nftables struct {
	Enabled    bool
	Table      string
	MediaPorts []int
	TrunksOnly bool
}

// New returns the usual test policy: realms "external" on extIP and
// "internal" on intIP (IP literals, IPv6 without brackets), each with a
// UDP and a TCP listener on port 0; trunk "carrier" on "external" from
// 127.0.0.1/32; pool "pbx" on "internal" with the given target addresses
// ("ip:port") and health checks off; default_pool "pbx".
func New(extIP, intIP string, targets ...string) *Policy {
	return &Policy{
		Realms: []Realm{
			{Name: "external", Listeners: UDPTCP(net.JoinHostPort(extIP, "0"))},
			{Name: "internal", Listeners: UDPTCP(net.JoinHostPort(intIP, "0"))},
		},
		Trunks: []Trunk{{Name: "carrier", Realm: "external", Sources: []string{"127.0.0.1/32"}}},
		Pools: []Pool{{
			Name: "pbx", Realm: "internal", Targets: Targets(targets...),
			Health: &Health{Interval: policy.D(0)},
		}},
		Routing: &Routing{DefaultPool: "pbx"},
	}
}

// UDPTCP returns a UDP and a TCP listener on bind ("ip:port").
func UDPTCP(bind string) []Listener {
	return []Listener{{Transport: "udp", Bind: bind}, {Transport: "tcp", Bind: bind}}
}

// Targets returns targets of default weight at the given addresses.
func Targets(addrs ...string) []Target {
	ts := make([]Target, len(addrs))
	for i, a := range addrs {
		ts[i] = Target{Address: a}
	}
	return ts
}

// UDPOnly removes every listener that is not UDP and returns p.
func (p *Policy) UDPOnly() *Policy {
	for i := range p.Realms {
		p.Realms[i].Listeners = slices.DeleteFunc(p.Realms[i].Listeners, func(l Listener) bool {
			return l.Transport != "" && l.Transport != "udp"
		})
	}
	return p
}

// Realm returns the realm named name; it panics if there is none.
func (p *Policy) Realm(name string) *Realm {
	for i := range p.Realms {
		if p.Realms[i].Name == name {
			return &p.Realms[i]
		}
	}
	panic("testpolicy: no realm " + strconv.Quote(name))
}

// Trunk returns the trunk named name; it panics if there is none.
func (p *Policy) Trunk(name string) *Trunk {
	for i := range p.Trunks {
		if p.Trunks[i].Name == name {
			return &p.Trunks[i]
		}
	}
	panic("testpolicy: no trunk " + strconv.Quote(name))
}

// Pool returns the pool named name; it panics if there is none.
func (p *Policy) Pool(name string) *Pool {
	for i := range p.Pools {
		if p.Pools[i].Name == name {
			return &p.Pools[i]
		}
	}
	panic("testpolicy: no pool " + strconv.Quote(name))
}

// Clone returns a deep copy of p: changing the copy leaves p as it was.
func (p *Policy) Clone() *Policy {
	c := *p
	c.Realms = slices.Clone(p.Realms)
	for i := range c.Realms {
		c.Realms[i].Listeners = slices.Clone(c.Realms[i].Listeners)
		if m := clonePtr(c.Realms[i].Media); m != nil {
			m.Ports = slices.Clone(m.Ports)
			c.Realms[i].Media = m
		}
		for j := range c.Realms[i].Listeners {
			l := &c.Realms[i].Listeners[j]
			l.Origins = slices.Clone(l.Origins)
			if l.TLS = clonePtr(l.TLS); l.TLS != nil {
				l.TLS.RevokedSPKI = slices.Clone(l.TLS.RevokedSPKI)
			}
		}
	}
	c.Trunks = slices.Clone(p.Trunks)
	for i := range c.Trunks {
		t := &c.Trunks[i]
		t.Sources = slices.Clone(t.Sources)
		t.RegisterDomains = slices.Clone(t.RegisterDomains)
		t.TLSIdentities = slices.Clone(t.TLSIdentities)
	}
	c.Pools = slices.Clone(p.Pools)
	for i := range c.Pools {
		pl := &c.Pools[i]
		pl.Targets = slices.Clone(pl.Targets)
		for j := range pl.Targets {
			pl.Targets[j].Weight = clonePtr(pl.Targets[j].Weight)
		}
		pl.Health = clonePtr(pl.Health)
		pl.TLS = clonePtr(pl.TLS)
		pl.Auth = clonePtr(pl.Auth)
	}
	c.Routes = slices.Clone(p.Routes)
	c.OutboundRoutes = slices.Clone(p.OutboundRoutes)
	for i := range c.OutboundRoutes {
		c.OutboundRoutes[i].Pools = slices.Clone(c.OutboundRoutes[i].Pools)
		c.OutboundRoutes[i].Days = slices.Clone(c.OutboundRoutes[i].Days)
	}
	if c.Outbound = clonePtr(p.Outbound); c.Outbound != nil {
		c.Outbound.DenyPrefixes = slices.Clone(c.Outbound.DenyPrefixes)
		c.Outbound.PremiumPrefixes = slices.Clone(c.Outbound.PremiumPrefixes)
	}
	c.Routing = clonePtr(p.Routing)
	c.Calls = clonePtr(p.Calls)
	if c.Headers = clonePtr(p.Headers); c.Headers != nil {
		c.Headers.Allow = slices.Clone(c.Headers.Allow)
	}
	if c.Limits = clonePtr(p.Limits); c.Limits != nil {
		l := c.Limits
		l.SourcePPS = clonePtr(l.SourcePPS)
		l.SourceCPS = clonePtr(l.SourceCPS)
		l.RegisterRate = clonePtr(l.RegisterRate)
		l.TCPConnectionsPerSource = clonePtr(l.TCPConnectionsPerSource)
		l.TCPConnections = clonePtr(l.TCPConnections)
	}
	if c.AutoBlock = clonePtr(p.AutoBlock); c.AutoBlock != nil {
		a := c.AutoBlock
		a.Enabled = clonePtr(a.Enabled)
		a.NeverBlock = slices.Clone(a.NeverBlock)
		a.ScannerUserAgents = slices.Clone(a.ScannerUserAgents)
	}
	if c.XDP = clonePtr(p.XDP); c.XDP != nil {
		c.XDP.Interfaces = slices.Clone(c.XDP.Interfaces)
	}
	if c.Media = clonePtr(p.Media); c.Media != nil {
		c.Media.Anchor = clonePtr(c.Media.Anchor)
	}
	if c.Nftables = clonePtr(p.Nftables); c.Nftables != nil {
		c.Nftables.MediaPorts = slices.Clone(c.Nftables.MediaPorts)
	}
	if c.Audit = clonePtr(p.Audit); c.Audit != nil {
		c.Audit.MaxSize = clonePtr(c.Audit.MaxSize)
		c.Audit.RedactFields = slices.Clone(c.Audit.RedactFields)
		c.Audit.Events = slices.Clone(c.Audit.Events)
	}
	c.Secrets = clonePtr(p.Secrets)
	return &c
}

func clonePtr[T any](v *T) *T {
	if v == nil {
		return nil
	}
	c := *v
	return &c
}

// TB is the part of testing.TB that Parse uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Parse parses p.TOML() with policy.Parse and returns the policy; on an
// error it fails the test with the numbered text.
func (p *Policy) Parse(tb TB) *policy.Policy {
	tb.Helper()
	text := p.TOML()
	pol, err := policy.Parse("testpolicy.toml", []byte(text))
	if err != nil {
		tb.Fatalf("testpolicy: %v\n%s", err, Numbered(text))
	}
	return pol
}

// Numbered returns text with line numbers, to read a policy error's
// FILE:LINE:COL against.
func Numbered(text string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fmt.Fprintf(&b, "%4d  %s\n", i+1, l)
	}
	return b.String()
}

// TOML returns the policy file.
func (p *Policy) TOML() string {
	w := &writer{}
	if p.Comment != "" {
		for _, l := range strings.Split(strings.TrimSuffix(p.Comment, "\n"), "\n") {
			w.line("# " + l)
		}
	}

	if p.Server != (Server{}) {
		s := p.Server
		w.table("[server]")
		w.str("user_agent", s.UserAgent)
		w.str("log_level", s.LogLevel)
		w.int("udp_read_buffer", s.UDPReadBuffer)
		w.int("udp_write_buffer", s.UDPWriteBuffer)
		w.dur("tcp_idle_timeout", s.TCPIdleTimeout)
		w.dur("tcp_message_timeout", s.TCPMessageTimeout)
		w.str("state_dir", s.StateDir)
	}
	if p.Admin != "" {
		w.table("[admin]")
		w.str("listen", p.Admin)
		rest := p.AdminTOML
		if rest == "" {
			rest = "plain_http = true\nrate = 0\napi_keys = [{ id = \"" + AdminKeyID + "\", sha256 = \"" + AdminKeyHash() + "\", roles = [\"admin\"] }]\n"
		}
		w.raw(rest)
	}

	for _, r := range p.Realms {
		w.table("[[realm]]")
		w.str("name", r.Name)
		w.ind = "  "
		for _, l := range r.Listeners {
			w.line("[[realm.listener]]")
			w.str("transport", l.Transport)
			w.str("bind", l.Bind)
			w.str("advertise", l.Advertise)
			w.str("path", l.Path)
			w.strs("origins", l.Origins)
			if t := l.TLS; t != nil {
				w.line("[realm.listener.tls]")
				w.str("cert_file", t.CertFile)
				w.str("key_file", t.KeyFile)
				w.str("ca_file", t.CAFile)
				w.str("min_version", t.MinVersion)
				w.str("client_auth", t.ClientAuth)
				w.strs("revoked_spki", t.RevokedSPKI)
				w.dur("handshake_timeout", t.HandshakeTimeout)
			}
		}
		if m := r.Media; m != nil {
			w.line("[realm.media]")
			w.str("ip", m.IP)
			w.str("advertise", m.Advertise)
			if m.Ports != nil {
				w.kv("ports", "["+strconv.Itoa(m.Ports[0])+", "+strconv.Itoa(m.Ports[1])+"]")
			}
		}
		w.ind = ""
	}

	for _, t := range p.Trunks {
		w.table("[[trunk]]")
		w.str("name", t.Name)
		w.str("realm", t.Realm)
		w.strs("sources", t.Sources)
		w.int("max_calls", t.MaxCalls)
		w.int("cps", t.CPS)
		w.bool("allow_register", t.AllowRegister)
		w.strs("register_domains", t.RegisterDomains)
		w.strs("tls_identities", t.TLSIdentities)
		w.strs("transports", t.Transports)
		w.str("media_encryption", t.MediaEncryption)
		w.bool("media_required", t.MediaRequired)
		w.str("refer", t.Refer)
		w.raw(t.Extra)
	}

	for _, pl := range p.Pools {
		w.table("[[pool]]")
		w.str("name", pl.Name)
		w.str("realm", pl.Realm)
		w.str("transport", pl.Transport)
		w.str("media_encryption", pl.MediaEncryption)
		w.str("refer", pl.Refer)
		w.ind = "  "
		for _, t := range pl.Targets {
			w.line("[[pool.target]]")
			w.str("address", t.Address)
			w.intp("weight", t.Weight)
			w.int("priority", t.Priority)
		}
		if a := pl.Auth; a != nil {
			w.line("[pool.auth]")
			w.str("username", a.Username)
			w.str("password", a.Password)
			w.str("realm", a.Realm)
		}
		if h := pl.Health; h != nil {
			w.line("[pool.health]")
			w.dur("interval", h.Interval)
			w.dur("timeout", h.Timeout)
			w.int("up", h.Up)
			w.int("down", h.Down)
		}
		if t := pl.TLS; t != nil {
			w.line("[pool.tls]")
			w.str("cert_file", t.CertFile)
			w.str("key_file", t.KeyFile)
			w.str("ca_file", t.CAFile)
			w.str("min_version", t.MinVersion)
			w.str("server_name", t.ServerName)
		}
		w.ind = ""
		w.raw(pl.Extra)
	}

	for _, r := range p.Routes {
		w.table("[[route]]")
		w.str("trunk", r.Trunk)
		w.str("prefix", r.Prefix)
		w.str("pool", r.Pool)
	}

	for _, r := range p.OutboundRoutes {
		w.table("[[outbound_route]]")
		w.str("prefix", r.Prefix)
		w.str("source_pool", r.SourcePool)
		w.strs("pools", r.Pools)
		w.int("strip", r.Strip)
		w.str("prepend", r.Prepend)
		w.str("from_user", r.FromUser)
		w.str("pai", r.PAI)
		w.str("privacy", r.Privacy)
		w.dur("max_duration", r.MaxDuration)
		w.str("hours", r.Hours)
		w.strs("days", r.Days)
		w.str("timezone", r.Timezone)
	}
	if o := p.Outbound; o != nil {
		w.table("[outbound]")
		w.strs("deny_prefixes", o.DenyPrefixes)
		w.strs("premium_prefixes", o.PremiumPrefixes)
		w.bool("deny_premium", o.DenyPremium)
		w.str("home_prefix", o.HomePrefix)
		w.bool("deny_international", o.DenyInternational)
		w.int("pool_max_calls", o.PoolMaxCalls)
		w.int("source_max_calls", o.SourceMaxCalls)
		w.int("pool_max_minutes", o.PoolMaxMinutes)
		w.int("source_max_minutes", o.SourceMaxMinutes)
		w.dur("minutes_window", o.MinutesWindow)
	}

	if r := p.Routing; r != nil {
		w.table("[routing]")
		w.str("default_pool", r.DefaultPool)
		w.bool("follow_redirects", r.FollowRedirects)
		w.dur("target_timeout", r.TargetTimeout)
		w.int("max_attempts", r.MaxAttempts)
		w.int("retry_after", r.RetryAfter)
	}
	if c := p.Calls; c != nil {
		w.table("[calls]")
		w.dur("max_duration", c.MaxDuration)
		w.dur("inactivity_timeout", c.InactivityTimeout)
		w.dur("ring_timeout", c.RingTimeout)
	}
	if h := p.Headers; h != nil {
		w.table("[headers]")
		w.strs("allow", h.Allow)
		w.str("unknown_source_action", h.UnknownSourceAction)
	}
	if l := p.Limits; l != nil {
		w.table("[limits]")
		w.intp("source_pps", l.SourcePPS)
		w.int("source_pps_burst", l.SourcePPSBurst)
		w.intp("trunk_pps", l.TrunkPPS)
		w.int("trunk_pps_burst", l.TrunkPPSBurst)
		w.intp("source_cps", l.SourceCPS)
		w.intp("register_rate", l.RegisterRate)
		w.int("max_sources", l.MaxSources)
		w.intp("tcp_connections_per_source", l.TCPConnectionsPerSource)
		w.intp("tcp_connections", l.TCPConnections)
		w.int("udp_peers", l.UDPPeers)
		w.dur("queue_delay", l.QueueDelay)
		w.str("over_limit_action", l.OverLimitAction)
	}
	if a := p.AutoBlock; a != nil {
		w.table("[autoblock]")
		if a.Enabled != nil {
			w.kv("enabled", strconv.FormatBool(*a.Enabled))
		}
		w.bool("observe", a.Observe)
		w.int("threshold", a.Threshold)
		w.dur("window", a.Window)
		w.dur("block_for", a.BlockFor)
		w.int("escalation", a.Escalation)
		w.dur("max_block", a.MaxBlock)
		w.dur("forget_after", a.ForgetAfter)
		w.strs("never_block", a.NeverBlock)
		w.strs("scanner_user_agents", a.ScannerUserAgents)
		w.int("register_guesses", a.RegisterGuesses)
		w.int("register_source_guesses", a.RegisterSourceGuesses)
		w.dur("register_window", a.RegisterWindow)
		w.dur("register_lock", a.RegisterLock)
		w.intp("aggregate_v6", a.AggregateV6)
		w.dur("trunk_health_interval", a.TrunkHealthInterval)
	}
	if x := p.XDP; x != nil {
		w.table("[xdp]")
		w.bool("enabled", x.Enabled)
		w.strs("interfaces", x.Interfaces)
		w.str("mode", x.Mode)
		w.str("pin_dir", x.PinDir)
		w.str("scope", x.Scope)
		w.int("rate_pps", x.RatePPS)
		w.int("burst", x.Burst)
	}
	if n := p.Nftables; n != nil {
		w.table("[nftables]")
		w.bool("enabled", n.Enabled)
		w.str("table", n.Table)
		if n.MediaPorts != nil {
			ports := make([]string, len(n.MediaPorts))
			for i, v := range n.MediaPorts {
				ports[i] = strconv.Itoa(v)
			}
			w.kv("media_ports", "["+strings.Join(ports, ", ")+"]")
		}
		w.bool("trunks_only", n.TrunksOnly)
	}
	if m := p.Media; m != nil {
		w.table("[media]")
		if m.Anchor != nil {
			w.kv("anchor", strconv.FormatBool(*m.Anchor))
		}
		w.dur("timeout", m.Timeout)
		w.dur("quarantine", m.Quarantine)
		w.strs("kernel_relay", m.KernelRelay)
	}
	if c := p.CDR; c != nil {
		w.table("[cdr]")
		w.bool("enabled", c.Enabled)
		w.str("file", c.File)
		w.int("max_size_mb", c.MaxSizeMB)
		w.int("max_files", c.MaxFiles)
		w.int("queue", c.Queue)
	}
	if h := p.HEP; h != nil {
		w.table("[hep]")
		w.bool("enabled", h.Enabled)
		w.str("address", h.Address)
		w.int("agent_id", h.AgentID)
		w.str("password", h.Password)
		w.int("queue", h.Queue)
	}
	for _, wh := range p.Webhooks {
		w.table("[[webhook]]")
		w.str("name", wh.Name)
		w.str("url", wh.URL)
		w.strs("events", wh.Events)
		w.str("secret", wh.Secret)
		w.str("secret_env", wh.SecretEnv)
		w.dur("timeout", wh.Timeout)
		w.dur("max_backoff", wh.MaxBackoff)
		w.int("max_attempts", wh.MaxAttempts)
		w.int("queue", wh.Queue)
	}
	if a := p.Audit; a != nil {
		w.table("[audit]")
		w.str("file", a.File)
		w.intp("max_size", a.MaxSize)
		w.int("keep", a.Keep)
		w.bool("stdout", a.Stdout)
		w.str("syslog", a.Syslog)
		w.str("syslog_facility", a.SyslogFacility)
		w.strs("redact_fields", a.RedactFields)
		w.int("mask_numbers", a.MaskNumbers)
		w.strs("events", a.Events)
		w.int("queue_size", a.QueueSize)
	}
	if sc := p.Secrets; sc != nil {
		w.table("[secrets]")
		w.str("master_key_file", sc.MasterKeyFile)
		w.str("previous_key_file", sc.PreviousKeyFile)
	}

	if p.Extra != "" {
		w.line("")
		w.raw(p.Extra)
	}
	return w.b.String()
}

// writer writes TOML lines; ind indents sub-tables and their keys.
type writer struct {
	b   strings.Builder
	ind string
}

func (w *writer) line(s string) {
	if s != "" {
		w.b.WriteString(w.ind)
	}
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

// table starts a top-level table after a blank line.
func (w *writer) table(header string) {
	if w.b.Len() > 0 {
		w.b.WriteByte('\n')
	}
	w.line(header)
}

func (w *writer) kv(k, v string) { w.line(k + " = " + v) }

func (w *writer) str(k, v string) {
	if v != "" {
		w.kv(k, quote(v))
	}
}

func (w *writer) int(k string, v int) {
	if v != 0 {
		w.kv(k, strconv.Itoa(v))
	}
}

func (w *writer) intp(k string, v *int) {
	if v != nil {
		w.kv(k, strconv.Itoa(*v))
	}
}

func (w *writer) bool(k string, v bool) {
	if v {
		w.kv(k, "true")
	}
}

func (w *writer) dur(k string, d policy.Duration) {
	if d.IsSet() {
		w.kv(k, quote(d.Duration.String()))
	}
}

func (w *writer) strs(k string, v []string) {
	if v == nil {
		return
	}
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = quote(s)
	}
	w.kv(k, "["+strings.Join(q, ", ")+"]")
}

// raw writes s verbatim, ending it with a newline.
func (w *writer) raw(s string) {
	if s == "" {
		return
	}
	w.b.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		w.b.WriteByte('\n')
	}
}

// quote returns s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// AdminKey is the API key (role admin) of every test policy with an admin
// listener and no AdminTOML: tests send it as "Authorization: Bearer".
// It is a test fixture, not a secret.
const AdminKey = "sbc_" + AdminKeyID + "_dGVzdC1rZXktZm9yLXRlc3RzLW9ubHktbm90LWEtc2V"

// AdminKeyID is AdminKey's id.
const AdminKeyID = "00000000000000a1"

// AdminKeyHash is the SHA-256 (hex) of AdminKey, as api_keys stores it.
func AdminKeyHash() string { return KeyHash(AdminKey) }

// KeyHash is the SHA-256 (hex) of an API key, as api_keys stores it.
func KeyHash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}
