package policy

import (
	"net/netip"
	"time"
)

// Policy is the whole policy file. After Load/Parse succeed it is validated
// and must be treated as immutable: components are built from it, and a
// reload produces a new *Policy that is swapped in atomically.
//
// Fields tagged toml:"-" are derived during validation from the raw fields
// next to them (parsed addresses, prefixes, durations with defaults applied).
type Policy struct {
	Server  Server  `toml:"server"`
	Admin   Admin   `toml:"admin"`
	Realms  []Realm `toml:"realm"`
	Trunks  []Trunk `toml:"trunk"`
	Pools   []Pool  `toml:"pool"`
	Routes  []Route `toml:"route"`
	Routing Routing `toml:"routing"`
	Calls   Calls   `toml:"calls"`
	Headers Headers `toml:"headers"`

	// Source is the file name the policy was read from ("<embedded>" for
	// the built-in default); used in error messages and logs.
	Source string `toml:"-"`
}

// Server holds process-wide settings.
type Server struct {
	// Name is the SBC's identity: used in the User-Agent/Server header
	// that replaces the peers' own, and in OPTIONS answers. Default "sbc".
	UserAgent string `toml:"user_agent"`
	// LogLevel: "debug", "info", "warn", "error". Default "info".
	LogLevel string `toml:"log_level"`
	// UDPReadBuffer / UDPWriteBuffer: SO_RCVBUF/SO_SNDBUF in bytes for UDP
	// listeners. Default 4 MiB each (0 in the file means default).
	UDPReadBuffer  int `toml:"udp_read_buffer"`
	UDPWriteBuffer int `toml:"udp_write_buffer"`
	// TCPIdleTimeout closes TCP connections idle that long. Default "10m".
	TCPIdleTimeout Duration `toml:"tcp_idle_timeout"`
}

// Admin is the admin/metrics HTTP listener.
type Admin struct {
	// Listen is "host:port"; empty disables the admin listener.
	Listen string `toml:"listen"`
	// Addr is Listen parsed (zero when disabled).
	Addr netip.AddrPort `toml:"-"`
}

// Realm is one network the SBC faces (e.g. "external" towards carriers,
// "internal" towards the PBXs), with its listeners.
type Realm struct {
	Name      string     `toml:"name"`
	Listeners []Listener `toml:"listener"`
}

// Listener is one SIP socket of a realm.
type Listener struct {
	// Transport: "udp" or "tcp" (lower case; "tls"/"wss" come later).
	Transport string `toml:"transport"`
	// Bind is "ip:port" to listen on.
	Bind string `toml:"bind"`
	// Advertise is "host[:port]" put into Via/Contact/SDP-facing headers of
	// messages sent from this listener. Default: Bind.
	Advertise string `toml:"advertise"`

	BindAddr      netip.AddrPort `toml:"-"`
	AdvertiseHost string         `toml:"-"` // host part of Advertise (default Bind's IP)
	AdvertisePort int            `toml:"-"` // port part of Advertise (default Bind's port)
}

// Trunk is a known peer (carrier), identified by its source addresses.
type Trunk struct {
	Name string `toml:"name"`
	// Realm is the realm the trunk arrives on. Required; must exist.
	Realm string `toml:"realm"`
	// Sources are the CIDRs (or bare addresses) the trunk sends from.
	Sources []string `toml:"sources"`

	Prefixes []netip.Prefix `toml:"-"` // Sources parsed, masked
}

// Pool is a group of backend targets (PBXs) reached from one realm.
type Pool struct {
	Name string `toml:"name"`
	// Realm whose listener is used to reach the targets. Required; must exist.
	Realm string `toml:"realm"`
	// Transport towards the targets: "udp" (default) or "tcp". The realm
	// must have a listener of that transport.
	Transport string   `toml:"transport"`
	Targets   []Target `toml:"target"`
	// Health is the OPTIONS health check.
	Health Health `toml:"health"`
}

// Target is one backend.
type Target struct {
	// Address is "ip:port" (or "host:port"; hosts are resolved at load).
	Address string `toml:"address"`
	// Weight for weighted random choice among healthy targets; default 1,
	// 0 means "never chosen" (drained).
	Weight *int `toml:"weight"`

	Addr netip.AddrPort `toml:"-"`
	W    int            `toml:"-"` // Weight with default applied
}

// Health configures OPTIONS pings to each target of a pool.
type Health struct {
	// Interval between pings. Default "5s"; "0s" disables health checks
	// (targets are then always considered up).
	Interval Duration `toml:"interval"`
	// Timeout for one ping. Default "2s" (must be < Interval).
	Timeout Duration `toml:"timeout"`
	// Up: consecutive successes to mark a down target up. Default 2.
	Up int `toml:"up"`
	// Down: consecutive failures to mark an up target down. Default 3.
	Down int `toml:"down"`
}

// Route maps (trunk, request-URI user prefix) to a pool. The most specific
// match wins: longest prefix; a route naming the trunk beats one that does not.
type Route struct {
	// Trunk name; empty matches any trunk.
	Trunk string `toml:"trunk"`
	// Prefix of the request-URI user part; empty matches any.
	Prefix string `toml:"prefix"`
	// Pool name; must exist.
	Pool string `toml:"pool"`
}

// Routing holds routing defaults.
type Routing struct {
	// DefaultPool is used when no route matches; empty means "no default"
	// (unmatched calls get 404).
	DefaultPool string `toml:"default_pool"`
	// FollowRedirects: if true a 3xx from a backend is followed (to a
	// target of the same pool only); otherwise it is relayed. Default false.
	FollowRedirects bool `toml:"follow_redirects"`
	// TargetTimeout: how long to wait for any response from one target
	// before failing over to the next. Default "2s".
	TargetTimeout Duration `toml:"target_timeout"`
	// MaxAttempts: targets tried per call (failover). Default 3.
	MaxAttempts int `toml:"max_attempts"`
	// RetryAfter: seconds in Retry-After of the 503 sent when no target
	// is available. Default 30.
	RetryAfter int `toml:"retry_after"`
}

// Calls holds per-call limits.
type Calls struct {
	// MaxDuration: an answered call is torn down (BYE both legs) after
	// this long. Default "4h"; "0s" disables.
	MaxDuration Duration `toml:"max_duration"`
	// InactivityTimeout: an answered call with no in-dialog request from
	// either side for this long is torn down. Default "0s" (disabled);
	// set it when peers use session timers or OPTIONS keepalives.
	InactivityTimeout Duration `toml:"inactivity_timeout"`
	// RingTimeout: an unanswered call is cancelled after this long.
	// Default "3m".
	RingTimeout Duration `toml:"ring_timeout"`
}

// Headers is the topology-hiding header policy: which headers of one leg
// are copied to the other. Everything not listed is dropped. Headers the
// B2BUA generates itself (Via, From, To, Call-ID, CSeq, Contact,
// Max-Forwards, Content-Length, Route, Record-Route) are never copied.
type Headers struct {
	// Allow lists header names (case-insensitive, long form) copied
	// between legs. Default: DefaultAllowedHeaders.
	Allow []string `toml:"allow"`
	// UnknownSourceAction: "drop" (default, silent) or "reject" (403).
	UnknownSourceAction string `toml:"unknown_source_action"`
}

// DefaultAllowedHeaders is the safe default header allow-list.
var DefaultAllowedHeaders = []string{
	"Content-Type", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Allow", "Supported", "Require", "Accept", "Accept-Encoding", "Accept-Language",
	"Session-Expires", "Min-SE", "Event", "Subscription-State", "Refer-To",
	"Referred-By", "Replaces", "RSeq", "RAck", "Reason", "Retry-After", "Expires",
	"Min-Expires", "Unsupported", "Date", "Timestamp", "Priority", "Subject",
	"Warning", "P-Asserted-Identity", "Privacy", "Allow-Events", "Info-Package",
	"Recv-Info",
}

// Duration is a time.Duration written as a Go duration string ("5s", "4h").
// It remembers whether the file set it, so that an explicit "0s" (disable)
// differs from an absent key (default).
type Duration struct {
	time.Duration
	set bool
}

// IsSet reports whether the policy file gave this duration explicitly.
func (d Duration) IsSet() bool { return d.set }

// D returns a Duration that counts as explicitly set.
func D(v time.Duration) Duration { return Duration{Duration: v, set: true} }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	d.set = true
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }
