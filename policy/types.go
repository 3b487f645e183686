package policy

import (
	"net/netip"
	"strings"
	"time"
)

// Policy is the whole policy file. After Load/Parse succeed it is validated
// and must be treated as immutable: components are built from it, and a
// reload produces a new *Policy that is swapped in atomically.
//
// Fields tagged toml:"-" are derived during validation from the raw fields
// next to them (parsed addresses, prefixes, durations with defaults applied).
type Policy struct {
	Server Server  `toml:"server"`
	Admin  Admin   `toml:"admin"`
	Realms []Realm `toml:"realm"`
	Trunks []Trunk `toml:"trunk"`
	Pools  []Pool  `toml:"pool"`
	Routes []Route `toml:"route"`
	// OutboundRoutes route calls from the backends (pool targets) to
	// carriers (pools of the carrier-facing realm).
	OutboundRoutes []OutboundRoute `toml:"outbound_route"`
	// Outbound holds the toll-fraud controls of calls to carriers.
	Outbound Outbound `toml:"outbound"`
	// Registrations bounds the registration cache of remote users (trunks
	// with allow_register) and keeps their NAT bindings alive.
	Registrations Registrations `toml:"registrations"`
	// DNS is how host-name pool targets are resolved (outreg.go).
	DNS     DNS     `toml:"dns"`
	Routing Routing `toml:"routing"`
	Calls   Calls   `toml:"calls"`
	Headers Headers `toml:"headers"`
	// HeaderRules manipulate the headers of call messages (headerrules.go).
	HeaderRules []HeaderRule `toml:"header_rule"`
	// Limits are the per-source rate limits (edge defence, stage admit and
	// the read filter).
	Limits Limits `toml:"limits"`
	// AutoBlock is failure tracking and automatic blocking (stage watch).
	AutoBlock AutoBlock `toml:"autoblock"`
	// XDP is the kernel fast path: blocked sources dropped in the driver.
	XDP XDP `toml:"xdp"`
	// Nftables mirrors the blocklist into an nftables table.
	Nftables Nftables `toml:"nftables"`
	// Media is media anchoring (the relay of RTP through the SBC).
	Media Media `toml:"media"`
	// CDR is the call detail records: one JSON line per call at its end.
	CDR CDR `toml:"cdr"`
	// HEP is the HEP3 export of every SIP message to a capture server
	// (Homer).
	HEP HEP `toml:"hep"`
	// Webhooks POST selected operator events (and CDRs) as signed JSON.
	Webhooks []Webhook `toml:"webhook"`
	// Audit is the audit log (package audit).
	Audit Audit `toml:"audit"`
	// Secrets is where the master key that seals secrets at rest is
	// (package secrets).
	Secrets Secrets `toml:"secrets"`

	// Source is the file name the policy was read from ("<embedded>" for
	// the built-in default); used in error messages and logs.
	Source string `toml:"-"`
	// Digest is the lowercase hex SHA-256 of the file's bytes: the
	// version of the policy (admin API, config_changed events).
	Digest string `toml:"-"`

	// look holds the lookup tables built by validation (name maps, the
	// route table, the header allow set). Nil for a Policy that was not
	// produced by Parse/Load; the lookup methods then fall back to scans.
	look *lookup
}

// Server holds process-wide settings.
type Server struct {
	// UserAgent is the SBC's identity: used in the User-Agent/Server header
	// that replaces the peers' own, and in OPTIONS answers. Default "sbc".
	// Printable ASCII only, at most 128 bytes.
	UserAgent string `toml:"user_agent"`
	// LogLevel: "debug", "info", "warn", "error". Default "info".
	LogLevel string `toml:"log_level"`
	// UDPReadBuffer / UDPWriteBuffer: SO_RCVBUF/SO_SNDBUF in bytes for UDP
	// listeners. Default 4 MiB each (0 in the file means default); at most
	// 1 GiB.
	UDPReadBuffer  int `toml:"udp_read_buffer"`
	UDPWriteBuffer int `toml:"udp_write_buffer"`
	// TCPIdleTimeout closes TCP connections that carried no complete
	// message that long (bytes of a message do not count). Default "10m";
	// must be positive (idle connections are always closed eventually).
	TCPIdleTimeout Duration `toml:"tcp_idle_timeout"`
	// TCPMessageTimeout closes a TCP or TLS connection whose message is
	// not complete (header and body) this long after its first byte.
	// Default "10s"; must be positive.
	TCPMessageTimeout Duration `toml:"tcp_message_timeout"`
	// StateDir is where the SBC keeps state that must survive a restart
	// (the blocklist). Empty (default): nothing is persisted. Created if
	// missing.
	StateDir string `toml:"state_dir"`
	// GCHeapFloor: Go's collector is not started before the heap reaches
	// this many bytes, however little is live (a floor under GOGC's
	// goal, sbc/gcpace.go), capped at a quarter of the memory the
	// process may use. Default (0) 512 MiB; -1 turns the floor off (Go's
	// own pacing); else between 16 MiB and 1 TiB.
	GCHeapFloor int `toml:"gc_heap_floor"`
	// HeapHugePages: the heap the SBC touches up to GCHeapFloor is
	// advised to the kernel as transparent huge pages (madvise
	// MADV_HUGEPAGE), so that it is mapped by 2 MiB pages rather than
	// 4 KiB ones (sbc/gcpace.go). Default (unset) true.
	HeapHugePages *bool `toml:"heap_huge_pages"`
	// MemoryLimit is Go's soft memory limit in bytes (GOMEMLIMIT, which
	// wins when set in the environment): near it the collector runs as
	// often as it must, floor or not. 0 (default): none; else at least
	// 64 MiB.
	MemoryLimit int `toml:"memory_limit"`
}

// HugePages reports whether the heap touched up to the GC floor is
// advised as transparent huge pages (server.heap_huge_pages).
func (s Server) HugePages() bool { return s.HeapHugePages == nil || *s.HeapHugePages }

// Admin is the admin API and metrics listener. Every endpoint but
// /metrics and /healthz requires authentication: a client certificate
// mapped to roles (ClientRoles) or an API key (APIKeys, KeysFile).
type Admin struct {
	// Listen is "ip:port" (IP literal; port 0 lets the kernel choose);
	// empty disables the admin listener.
	Listen string `toml:"listen"`
	// PlainHTTP serves the API over HTTP without TLS, on a loopback
	// listen address only (127.0.0.0/8, ::1): any other address is a
	// validation error (API keys would cross the network in clear; use
	// TLS). Either this or TLS is required.
	PlainHTTP bool `toml:"plain_http"`
	// TLS serves the API over HTTPS: cert_file and key_file required;
	// ca_file verifies client certificates (client_auth "request", the
	// default with ca_file, or "require": mutual TLS only).
	TLS *TLS `toml:"tls"`
	// ClientRoles map verified client certificates to roles, by subject
	// CN, SAN DNS name or SAN URI.
	ClientRoles []ClientRole `toml:"client_roles"`
	// APIKeys are API keys given in the policy, by id and SHA-256 hash
	// (sbc admin key create -print prints an entry).
	APIKeys []APIKey `toml:"api_keys"`
	// KeysFile is the API key store (JSON, hashes only) that "sbc admin
	// key create" writes and the SBC reads when it changes. Default:
	// admin_keys.json in server.state_dir, none without a state_dir. A
	// relative path is from the policy file's directory.
	KeysFile string `toml:"keys_file"`
	// Hosts are the Host header names accepted besides IP literals and
	// "localhost" (DNS rebinding defence). Default none.
	Hosts []string `toml:"hosts"`
	// Origins are the browser origins ("https://ops.example") allowed to
	// send requests that change something; default none (a cross-origin
	// request is refused).
	Origins []string `toml:"origins"`
	// Rate is the requests per second one client address may make,
	// Burst its burst. Defaults 20 and 2 x Rate; 0 disables.
	Rate  int `toml:"rate"`
	Burst int `toml:"burst"`

	// Addr is Listen parsed (zero when disabled).
	Addr netip.AddrPort `toml:"-"`
	// KeysPath is KeysFile, or its default ("" for none).
	KeysPath string `toml:"-"`
}

// AdminRoles are the roles of the admin API, in the order of their power.
var AdminRoles = []string{"admin", "operator", "read", "audit"}

// ClientRole maps client certificates to roles: exactly one of CN, DNS
// (a SAN DNS name) or URI (a SAN URI) names them.
type ClientRole struct {
	CN    string   `toml:"cn"`
	DNS   string   `toml:"dns"`
	URI   string   `toml:"uri"`
	Roles []string `toml:"roles"`
}

// APIKey is an API key known by its hash: ID is the key's id (16 hex
// digits, the middle of "sbc_<id>_<secret>"), SHA256 the lowercase hex
// SHA-256 of the whole key.
type APIKey struct {
	ID     string   `toml:"id"`
	SHA256 string   `toml:"sha256"`
	Roles  []string `toml:"roles"`
}

// Realm is one network the SBC faces (e.g. "external" towards carriers,
// "internal" towards the PBXs), with its listeners.
type Realm struct {
	// Name is unique among realms: letters, digits, '_', '-', '.'.
	Name string `toml:"name"`
	// Listeners: at least one.
	Listeners []Listener `toml:"listener"`
	// Media is where the realm's media relay sockets live.
	Media RealmMedia `toml:"media"`
}

// RealmMedia is a realm's media relay: the address its relay sockets bind
// to, the address written into the SDP sent on the realm, and the port
// range.
type RealmMedia struct {
	// IP the relay sockets bind to: an IP literal, not the unspecified
	// address. Default: the bind address of the realm's first listener
	// (then required when that is 0.0.0.0 or ::).
	IP string `toml:"ip"`
	// Advertise is the address in the c= lines of SDP sent on the realm
	// (the public address in front of a NAT). Default: IP.
	Advertise string `toml:"advertise"`
	// Ports is [min, max], the inclusive UDP port range of the relay
	// (RTP on even ports, RTCP on the next odd one). Default [16384,
	// 32767], below Linux's ephemeral ports (32768-60999); 1024..65535.
	Ports []int `toml:"ports"`

	Addr          netip.Addr `toml:"-"` // IP parsed
	AdvertiseAddr netip.Addr `toml:"-"` // Advertise parsed
	Min, Max      int        `toml:"-"` // Ports with the default applied
}

// Media configures media anchoring.
type Media struct {
	// Anchor: the media of every call flows through the SBC's relay, and
	// each side's SDP carries only the SBC's addresses. Default true.
	// false passes SDP through untouched (the two sides see each other's
	// media addresses).
	Anchor *bool `toml:"anchor"`
	// Timeout: an answered call whose media stops in both directions for
	// this long is ended (BYE to both legs), unless it is on hold. Default
	// "60s"; "0s" disables.
	Timeout Duration `toml:"timeout"`
	// Quarantine: a relay port released by a call rests this long before
	// another call gets it (late packets of the old call stay out). Default
	// "5s".
	Quarantine Duration `toml:"quarantine"`
	// KernelRelay names the network interfaces media arrives on whose
	// ingress gets the SBC's in-kernel relay for plain RTP (srtp/kfwd, a
	// TC eBPF program): once both legs of a plain↔plain call are latched,
	// their packets are forwarded in the kernel and never reach the
	// process. IPv4 only; needs root (CAP_BPF, CAP_NET_ADMIN) and Linux
	// 6.6 or later, or the SBC does not start. Empty (default): every
	// packet is relayed in user space.
	KernelRelay []string `toml:"kernel_relay"`
}

// Anchored reports whether media anchoring is on.
func (m Media) Anchored() bool { return m.Anchor == nil || *m.Anchor }

// Listener is one SIP socket of a realm.
type Listener struct {
	// Transport: "udp" (default), "tcp", "tls" (SIP over TLS, RFC 3261
	// 26.2) or "wss" (SIP over secure WebSocket, RFC 7118, for WebRTC
	// clients); lower case. The same transport+bind may appear only once
	// in the policy.
	Transport string `toml:"transport"`
	// Bind is "ip:port" to listen on (IP literal). Port 0 lets the kernel
	// choose (useful in tests); the listener's actual port is then the one
	// to advertise.
	Bind string `toml:"bind"`
	// Advertise is "host[:port]" put into Via/Contact/SDP-facing headers of
	// messages sent from this listener: an IP literal (IPv6 in brackets when
	// a port follows) or a DNS name. Default: Bind. Required when Bind is an
	// unspecified address (0.0.0.0 or ::).
	Advertise string `toml:"advertise"`

	// TLS is the server side of a "tls" or "wss" listener: certificate,
	// client authentication, versions. Required for those transports,
	// refused for the others.
	TLS *TLS `toml:"tls"`
	// Path: a "wss" listener accepts the WebSocket upgrade only on this
	// HTTP path (exact match); empty (default) accepts any path.
	Path string `toml:"path"`
	// Origins: a "wss" listener accepts the WebSocket upgrade only from a
	// page of one of these origins ("https://app.example.com", scheme,
	// host and port as browsers send them, compared case-insensitively),
	// or from a client that sends no Origin when "" is listed. "*" allows
	// any origin. Required for "wss" (browsers always send Origin, and a
	// listener open to any page lets any web site drive a visitor's
	// browser against it).
	Origins []string `toml:"origins"`

	BindAddr      netip.AddrPort `toml:"-"` // Bind parsed (an IPv4-mapped address unmapped)
	AdvertiseHost string         `toml:"-"` // host part of Advertise, no brackets (default Bind's IP)
	AdvertisePort int            `toml:"-"` // port part of Advertise (default Bind's port; 0 if that is 0)
}

// TLS is the TLS side of a listener (server) or of a pool (client).
// Certificate, key and CA files are read when the policy is applied and
// re-read when they change on disk (and on reload); a file that cannot be
// used keeps the previous one in service.
type TLS struct {
	// CertFile / KeyFile: PEM certificate chain and private key. A
	// listener requires them (its server certificate); for a pool they
	// are the client certificate presented to the targets (mutual TLS),
	// optional.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// CAFile: PEM bundle of CA certificates. A listener verifies client
	// certificates against it (required when client_auth is not "none");
	// a pool verifies the targets' certificates against it (default: the
	// system's roots).
	CAFile string `toml:"ca_file"`
	// MinVersion: "1.2" (default) or "1.3". Nothing older is ever
	// accepted; cipher suites are Go's defaults (no weak ones).
	MinVersion string `toml:"min_version"`
	// ClientAuth (listeners only): "none" (default, no client certificate
	// asked), "request" (asked; verified against ca_file when sent), or
	// "require" (a verified client certificate is required).
	ClientAuth string `toml:"client_auth"`
	// ServerName (pools only): the DNS name the targets' certificates must
	// carry. Empty (default): the target's IP address must be in the
	// certificate's subject alternative names.
	ServerName string `toml:"server_name"`
	// RevokedSPKI (listeners only): SHA-256 hashes (64 hex digits) of the
	// SubjectPublicKeyInfo of client certificates refused at the handshake
	// even though they chain to the CA.
	RevokedSPKI []string `toml:"revoked_spki"`
	// HandshakeTimeout: a peer must complete the TLS handshake (and, on
	// "wss", the WebSocket upgrade) within this time. Default "10s".
	HandshakeTimeout Duration `toml:"handshake_timeout"`

	Min uint16 `toml:"-"` // MinVersion as a crypto/tls version
}

// TLSIdentity is one parsed trunk identity: Kind is "dns", "uri", "cn"
// or "spki".
type TLSIdentity struct {
	Kind, Value string
}

// String gives the identity as written in the policy ("dns:sip.example").
func (id TLSIdentity) String() string { return id.Kind + ":" + id.Value }

// Trunk is a known peer (carrier), identified by its source addresses,
// by its TLS certificate, or by both.
type Trunk struct {
	// Name is unique among trunks: letters, digits, '_', '-', '.'.
	Name string `toml:"name"`
	// Realm is the realm the trunk arrives on. Required; must exist.
	Realm string `toml:"realm"`
	// Sources are the CIDRs (or bare addresses, meaning /32 or /128) the
	// trunk sends from. At least one unless tls_identities are given. A
	// prefix may not be listed twice,
	// neither in one trunk nor in two trunks (overlapping prefixes of
	// different lengths are fine: the longest match wins).
	Sources []string `toml:"sources"`

	// Sources parsed and masked, in file order; IPv4-mapped IPv6 prefixes
	// (::ffff:a.b.c.d/n, n >= 96) are stored as IPv4 prefixes.
	Prefixes []netip.Prefix `toml:"-"`

	// TLSIdentities identify the trunk by the certificate it presents on a
	// "tls" or "wss" listener with client_auth "request" or "require":
	// "dns:NAME" or "uri:URI" (a subject alternative name), "cn:NAME"
	// (the subject common name), or "spki:HEX" (SHA-256 of the
	// SubjectPublicKeyInfo, 64 hex digits, a pin). With identities, the
	// trunk is recognised only on a TLS connection whose verified
	// certificate matches one of them, and, when Sources are also given,
	// only from those sources. An identity may belong to one trunk only.
	TLSIdentities []string `toml:"tls_identities"`
	// Identities is TLSIdentities parsed (spki values lower-cased).
	Identities []TLSIdentity `toml:"-"`

	// MaxCalls caps the trunk's concurrent calls; 0 (default) = no cap.
	MaxCalls int `toml:"max_calls"`
	// CPS caps the trunk's new calls (INVITEs) per second, all sources
	// together; 0 (default) = no cap.
	CPS int `toml:"cps"`
	// AllowRegister lets the trunk send REGISTER (relayed to the pool its
	// routes give); default false: REGISTER is refused with 403.
	AllowRegister bool `toml:"allow_register"`
	// RegisterDomains are the domains (request-URI host) a REGISTER may
	// name; required when allow_register is true ("no public extensions").
	RegisterDomains []string `toml:"register_domains"`
	// Transports the trunk is recognised on: "udp", "tcp", "tls", "wss".
	// Empty (default): any. A request from the trunk's sources over
	// another transport is not the trunk's (dropped, never charged to
	// it): a trunk that sends over TCP or TLS only and says so cannot be
	// impersonated with forged UDP datagrams. Each must be a transport of
	// a listener of the trunk's realm.
	Transports []string `toml:"transports"`
	// MediaEncryption is what the SBC accepts in the trunk's offers:
	// "any" (default: plain RTP, SDES-SRTP or DTLS-SRTP, as the trunk
	// offers), "none" (plain RTP only: an offer with SRTP gets 488),
	// "sdes" (SDES-SRTP, RFC 4568), "dtls" (DTLS-SRTP, RFC 5763; with
	// ICE-lite towards WebRTC clients). It is also the profile of the
	// SBC's own offers to the trunk.
	MediaEncryption string `toml:"media_encryption"`
	// MediaRequired: an offer without the encryption media_encryption
	// names ("sdes" or "dtls") gets 488. Default false.
	MediaRequired bool `toml:"media_required"`
	// Refer is what the SBC does with a REFER (call transfer) the trunk
	// sends inside a call: "relay" (default: to the other side, with
	// Refer-To re-homed on the SBC), "local" (the SBC carries out the
	// transfer itself, 3PCC: the other side never sees the REFER) or
	// "refuse" (403).
	Refer string `toml:"refer"`
}

// OnTransport reports whether the trunk may be recognised on transport
// ("udp", "TCP", ...; case-insensitive): true when Transports is empty.
func (t *Trunk) OnTransport(transport string) bool {
	if len(t.Transports) == 0 {
		return true
	}
	for _, x := range t.Transports {
		if strings.EqualFold(x, transport) {
			return true
		}
	}
	return false
}

// Pool is a group of backend targets (PBXs) reached from one realm.
type Pool struct {
	// Name is unique among pools: letters, digits, '_', '-', '.'.
	Name string `toml:"name"`
	// Realm whose listener is used to reach the targets. Required; must exist.
	Realm string `toml:"realm"`
	// Transport towards the targets: "udp" (default), "tcp" or "tls". The
	// realm must have a listener of that transport.
	Transport string `toml:"transport"`
	// TLS is the client side towards the targets when transport is "tls":
	// CA bundle, client certificate, server name. Optional (default: the
	// system's roots, no client certificate, the target's IP checked).
	TLS *TLS `toml:"tls"`
	// Targets: at least one; not all of weight 0; no address twice.
	Targets []Target `toml:"target"`
	// Health is the OPTIONS health check.
	Health Health `toml:"health"`
	// MediaEncryption is what the SBC offers the targets: "none"
	// (default: plain RTP), "sdes" (SDES-SRTP with keys of the SBC),
	// "dtls" (DTLS-SRTP, actpass, no ICE), or "any" (the profile of the
	// caller's leg; SDES for a DTLS caller).
	MediaEncryption string `toml:"media_encryption"`
	// TCPForLarge: with transport "udp", an INVITE larger than 1300 bytes
	// goes to the target over TCP instead (RFC 3261 18.1.1); the target
	// must listen on TCP at the same address. Default true.
	TCPForLarge *bool `toml:"tcp_for_large"`
	// Auth: digest credentials the SBC answers the targets' 401/407
	// challenges to its INVITEs with (a carrier pool). Absent: challenges
	// are relayed to the caller as any other final response.
	Auth *PoolAuth `toml:"auth"`
	// Refer is what the SBC does with a REFER the pool's targets send
	// inside a call: "relay" (default), "local" (3PCC) or "refuse", as
	// for a trunk.
	Refer string `toml:"refer"`
	// Register: the SBC registers with each target of the pool (a
	// carrier's registrar), with Auth's credentials (outreg.go).
	Register *PoolRegister `toml:"register"`
}

// PoolAuth are digest credentials towards a pool's targets (RFC 3261
// 22.2, RFC 8760): one challenge per INVITE is answered; a second one is
// a failure of that target (the call fails over).
type PoolAuth struct {
	// Username: required.
	Username string `toml:"username"`
	// Password: required. In clear, or sealed under the master key
	// (`sbc secrets seal`; [secrets]): a sealed value is opened when the
	// policy is applied, and one that does not open refuses the start or
	// the reload.
	Password string `toml:"password"`
	// Clear is Password opened (set by the SBC when it applies the policy).
	Clear string `toml:"-"`
	// Realm: when given, only challenges of this realm are answered (a
	// challenge of another realm is a failure of the target). Empty: any.
	Realm string `toml:"realm"`
}

// LargeOverTCP reports whether large requests go to this pool over TCP.
func (p *Pool) LargeOverTCP() bool { return p.TCPForLarge == nil || *p.TCPForLarge }

// Target is one backend.
type Target struct {
	// Address is "ip:port" with an IP literal (IPv6 in brackets) and a
	// non-zero port, or "host:port" with a DNS name: the SBC resolves it
	// (A and AAAA, [dns]) and every address becomes a target with this
	// target's weight and priority. A policy load does no DNS.
	Address string `toml:"address"`
	// Weight for weighted random choice among healthy targets; default 1,
	// 0 means "never chosen" (drained); at most 1000000.
	Weight *int `toml:"weight"`
	// Priority: targets of the lowest priority are tried first (weighted
	// among themselves), the next priority only when all of those are
	// down or tried. Default 0; 0..1000.
	Priority int `toml:"priority"`

	Addr netip.AddrPort `toml:"-"` // invalid for a host-name target
	W    int            `toml:"-"` // Weight with default applied
	// Host is the DNS name of a host-name target (lower case), Port its
	// port; "" for an IP target. Name is the name a resolved address
	// came from (set by the SBC on the targets it resolved).
	Host string `toml:"-"`
	Port uint16 `toml:"-"`
	Name string `toml:"-"`
}

// Health configures OPTIONS pings to each target of a pool.
type Health struct {
	// Interval between pings. Default "5s"; "0s" disables health checks
	// (targets are then always considered up). Otherwise at least "10ms".
	Interval Duration `toml:"interval"`
	// Timeout for one ping. Must be positive and < Interval. Default "2s",
	// or half the Interval when the Interval is 2s or less.
	Timeout Duration `toml:"timeout"`
	// Up: consecutive successes to mark a down target up. Default 2;
	// when given, 1..1000.
	Up int `toml:"up"`
	// Down: consecutive failures (unanswered pings, INVITEs unanswered
	// within routing.target_timeout) to mark an up target down. Default 3;
	// when given, 1..1000.
	Down int `toml:"down"`
}

// Enabled reports whether health checks run (Interval > 0).
func (h Health) Enabled() bool { return h.Interval.Duration > 0 }

// Route maps (trunk, request-URI user prefix) to a pool. The most specific
// match wins: longest prefix; a route naming the trunk beats one that does not.
type Route struct {
	// Trunk name; empty matches any trunk. Must exist when given.
	Trunk string `toml:"trunk"`
	// Prefix of the request-URI user part (compared byte-wise, case
	// sensitive); empty matches any. Visible ASCII, at most 128 bytes.
	// The same trunk+prefix may appear only once.
	Prefix string `toml:"prefix"`
	// Pool name; must exist.
	Pool string `toml:"pool"`
}

// OutboundRoute routes calls from the backends (a PBX: a pool target
// sending on its pool's realm) to carriers: the request-URI user (the
// dialled number) is matched by prefix, the longest prefix winning; at
// equal length a route naming the call's source pool beats one that does
// not.
type OutboundRoute struct {
	// Prefix of the request-URI user: "+" then digits (E.164) or digits
	// (national and local forms); empty matches any number. At most 32
	// bytes. The same source_pool+prefix may appear only once.
	Prefix string `toml:"prefix"`
	// SourcePool: the route applies to calls from this pool's targets
	// only; empty: from any pool that is not a carrier's.
	SourcePool string `toml:"source_pool"`
	// Pools: the carrier pools, in order of preference: the call fails
	// over to the next one when every target of one failed (408, 5xx, no
	// answer, a second digest challenge). At least one; all of the same
	// realm and media_encryption; none may be the source pool.
	Pools []string `toml:"pools"`
	// Strip: leading characters removed from the number (after the
	// match); at most len(prefix). Prepend is then put in front. E.g.
	// prefix "0", strip 1, prepend "+44": 02079460000 -> +442079460000.
	Strip   int    `toml:"strip"`
	Prepend string `toml:"prepend"`
	// FromUser: the caller-ID (From user) sent to the carrier; empty
	// keeps the caller's From user. "+" then digits, or digits.
	FromUser string `toml:"from_user"`
	// PAI: P-Asserted-Identity towards the carrier: "keep" (default: the
	// caller's, if headers.allow lets it through), "from" (set to the
	// From user sent, at the SBC's host) or "remove".
	PAI string `toml:"pai"`
	// Privacy towards the carrier: "keep" (default: the caller's, if
	// allowed), "id" (Privacy: id, RFC 3325) or "none" (removed).
	Privacy string `toml:"privacy"`
	// MaxDuration: an answered call on this route is torn down after
	// this long. Absent: calls.max_duration; "0s" disables.
	MaxDuration Duration `toml:"max_duration"`
	// Hours, Days, Timezone: the route applies only within this time
	// window (outreg.go); all absent: always.
	Hours    string   `toml:"hours"`
	Days     []string `toml:"days"`
	Timezone string   `toml:"timezone"`
	Window   *Window  `toml:"-"`
}

// Outbound holds the toll-fraud controls of outbound calls (from the
// backends to carriers). The caps count per source pool (a trunk of the
// PBX side) and per source address (an IPv4 address or IPv6 /64).
type Outbound struct {
	// DenyPrefixes: destinations refused (403, reason denied_destination),
	// matched against the dialled number and the number after
	// normalisation. "+" then digits, or digits; no prefix of another.
	DenyPrefixes []string `toml:"deny_prefixes"`
	// PremiumPrefixes: premium-rate destinations; refused only when
	// DenyPremium is true (reason premium_destination). Default none.
	PremiumPrefixes []string `toml:"premium_prefixes"`
	DenyPremium     bool     `toml:"deny_premium"`
	// HomePrefix: the E.164 country prefix of the deployment ("+44").
	// With DenyInternational (default false), a number that after
	// normalisation starts with "+" or "00" and not with HomePrefix (nor
	// "00" + its digits) is refused (reason international_destination).
	HomePrefix        string `toml:"home_prefix"`
	DenyInternational bool   `toml:"deny_international"`
	// PoolMaxCalls / SourceMaxCalls: concurrent outbound calls per source
	// pool / per source address; 0 (default) = no cap.
	PoolMaxCalls   int `toml:"pool_max_calls"`
	SourceMaxCalls int `toml:"source_max_calls"`
	// PoolMaxMinutes / SourceMaxMinutes: answered minutes of outbound
	// calls per source pool / per source address within MinutesWindow
	// (counted when a call ends); past it new calls are refused until the
	// window ends. 0 (default) = no cap.
	PoolMaxMinutes   int `toml:"pool_max_minutes"`
	SourceMaxMinutes int `toml:"source_max_minutes"`
	// MinutesWindow: the window of the minute caps, fixed, starting with
	// the first call counted. Default "1h"; must be positive.
	MinutesWindow Duration `toml:"minutes_window"`
}

// Registrations configures the registration cache: the bindings of the
// devices that registered through the SBC (sbc/regcache.go).
type Registrations struct {
	// MaxBindings bounds the cache (all realms, all AoRs). A REGISTER
	// that would add bindings past it is answered 503 with Retry-After
	// (reason registrations_full). Default 10000; 1 to 10,000,000.
	MaxBindings int `toml:"max_bindings"`
	// MaxBindingsPerAoR bounds the bindings of one address-of-record (the
	// devices of one user), and the Contacts one REGISTER may carry (more
	// is answered 400, reason register_contacts). Default 10; 1 to 1000.
	MaxBindingsPerAoR int `toml:"max_bindings_per_aor"`
	// KeepaliveInterval: every binding over UDP is sent an OPTIONS this
	// often, to keep the device's NAT binding open. Default "0s": off
	// (most phones send their own keep-alives); "30s" suits most NATs.
	KeepaliveInterval Duration `toml:"keepalive_interval"`
	// ClientExpiresMax shortens the expiry the devices see (NAT bindings
	// need refreshes more often than a registrar wants them): a device is
	// granted at most this, and its refreshes are answered by the SBC
	// without the registrar while the registrar's binding has more than
	// this plus 32 s to live, provided they come from the same flow
	// (source address and port, transport), with the same Call-ID, a
	// higher CSeq and the same single Contact. Default "0s": off.
	ClientExpiresMax Duration `toml:"client_expires_max"`
	// MaxPending bounds the REGISTERs relayed to registrars at once; one
	// more is answered 503 with Retry-After (reason register_busy).
	// Default 256; 1 to 100,000.
	MaxPending int `toml:"max_pending"`
}

// Routing holds routing defaults.
type Routing struct {
	// DefaultPool is used when no route matches; empty means "no default"
	// (unmatched calls get 404). Must exist when given.
	DefaultPool string `toml:"default_pool"`
	// FollowRedirects: if true a 3xx from a backend is followed (to a
	// target of the same pool only); otherwise it is relayed. Default false.
	FollowRedirects bool `toml:"follow_redirects"`
	// TargetTimeout: how long to wait for any response from one target
	// before failing over to the next. Default "2s"; must be positive.
	TargetTimeout Duration `toml:"target_timeout"`
	// MaxAttempts: targets tried per call (failover). Default 3; when
	// given, 1..100.
	MaxAttempts int `toml:"max_attempts"`
	// RetryAfter: seconds in Retry-After of the 503 sent when no target
	// is available. Default 30; when given, 1..86400.
	RetryAfter int `toml:"retry_after"`
}

// Calls holds per-call limits.
type Calls struct {
	// MaxDuration: an answered call is torn down (BYE both legs) after
	// this long. Default "4h"; "0s" disables.
	MaxDuration Duration `toml:"max_duration"`
	// InactivityTimeout: an answered call with no in-dialog request from
	// either side for this long is torn down (BYE both legs): it ends calls
	// whose peer vanished without a BYE long before max_duration. Calls
	// with session timers (RFC 4028) are also ended when a refresh is
	// missed. Default "2h"; "0s" disables.
	InactivityTimeout Duration `toml:"inactivity_timeout"`
	// RingTimeout: an unanswered call is cancelled after this long.
	// Default "3m"; must be positive.
	RingTimeout Duration `toml:"ring_timeout"`
}

// Headers is the topology-hiding header policy: which headers of one leg
// are copied to the other. Everything not listed is dropped. Headers the
// B2BUA generates itself (Via, From, To, Call-ID, CSeq, Contact,
// Max-Forwards, Content-Length, Route, Record-Route) are never copied.
type Headers struct {
	// Allow lists header names (case-insensitive, long form) copied
	// between legs. Absent: DefaultAllowedHeaders; an explicit empty list
	// allows nothing. Compact forms, duplicates and the headers the B2BUA
	// generates are rejected. Query it with Policy.AllowedHeader.
	Allow []string `toml:"allow"`
	// UnknownSourceAction: "drop" (default, silent) or "reject" (403).
	UnknownSourceAction string `toml:"unknown_source_action"`
}

// Limits are per-source rate limits. A source is one IPv4 address or one
// IPv6 /64. Over a limit, a request is answered 503 with Retry-After (or
// dropped, per OverLimitAction); a packet over the packet budget is dropped
// before the SIP parser.
type Limits struct {
	// SourcePPS: datagrams per second one source may send, checked before
	// parsing; default 200; 0 disables. SourcePPSBurst defaults to 2x.
	// Trunk sources and pool targets, on their own realm, have
	// TrunkPPS instead.
	SourcePPS      int `toml:"source_pps"`
	SourcePPSBurst int `toml:"source_pps_burst"`
	// TrunkPPS: datagrams per second one source address (or IPv6 /64) of
	// a trunk may send on the trunk's realm, and a pool target on its
	// pool's realm; default 20000; 0 disables (no packet budget for them).
	// TrunkPPSBurst defaults to 2x. On any other realm their addresses
	// are ordinary sources (SourcePPS).
	TrunkPPS      int `toml:"trunk_pps"`
	TrunkPPSBurst int `toml:"trunk_pps_burst"`
	// SourceCPS: new calls (INVITE) per second per source that is not a
	// trunk (a trunk's calls are limited by its own CPS and MaxCalls);
	// default 10; 0 disables. Trusted sources (that completed calls) get
	// more (4x), failing ones less.
	SourceCPS int `toml:"source_cps"`
	// RegisterRate: REGISTER per second per source, trunk sources
	// included (REGISTER has no per-trunk cap); default 2; 0 disables.
	RegisterRate int `toml:"register_rate"`
	// MaxSources bounds the per-source state (LRU); default 100000.
	MaxSources int `toml:"max_sources"`
	// TCPConnectionsPerSource caps the open TCP (TLS, WSS) connections of
	// one source, an IPv4 address or an IPv6 /64 (trunks and pool targets
	// exempt); default 16; 0 = no cap.
	TCPConnectionsPerSource int `toml:"tcp_connections_per_source"`
	// TCPConnections caps the open TCP (TLS, WSS) connections peers hold
	// on all listeners together (pool targets exempt); default 4096;
	// 0 = no cap.
	TCPConnections int `toml:"tcp_connections"`
	// UDPPeers bounds the source address:port entries the UDP transport
	// of a realm remembers (to answer from the right socket): past it
	// they are forgotten (the read loops are renewed), past 4x datagrams
	// from new addresses are dropped. Default 16384; 64 to 10000000.
	UDPPeers int `toml:"udp_peers"`
	// QueueDelay: under overload, a UDP request other than ACK, BYE and
	// CANCEL that waited longer than this in the socket's receive queue
	// (the kernel's receive time against the read) is dropped before
	// parsing (filter/overload), never charged to its source. Default
	// "200ms"; "0s" disables.
	QueueDelay Duration `toml:"queue_delay"`
	// OverLimitAction: "reject" (default: 503 + Retry-After) or "drop".
	OverLimitAction string `toml:"over_limit_action"`
}

// AutoBlock configures failure tracking: a source with more than Threshold
// failures within Window is blocked for BlockFor; each repeat offence
// multiplies the duration by Escalation, up to MaxBlock.
type AutoBlock struct {
	// Enabled: default true.
	Enabled bool `toml:"enabled"`
	// Observe: log "would block" instead of blocking (tuning on live
	// traffic). Default false.
	Observe bool `toml:"observe"`
	// Threshold: more than Threshold failures within Window block the
	// source. Default 10.
	Threshold int `toml:"threshold"`
	// Window: sliding window of the failure count. Default "60s".
	Window Duration `toml:"window"`
	// BlockFor: first block's duration. Default "10m".
	BlockFor Duration `toml:"block_for"`
	// Escalation: multiplier for each repeat offence. Default 4.
	Escalation int `toml:"escalation"`
	// MaxBlock: longest block. Default "24h".
	MaxBlock Duration `toml:"max_block"`
	// ForgetAfter: offences older than this no longer escalate. Default "24h".
	ForgetAfter Duration `toml:"forget_after"`
	// NeverBlock: prefixes never blocked, manually (unless forced) or
	// automatically. The sources of trunks that may not register, the
	// pool targets and the admin listener's peers are always added.
	NeverBlock []string `toml:"never_block"`
	// ScannerUserAgents: User-Agent substrings (case-insensitive) that mark
	// a request as a scanner's (a failure; the request is dropped). Absent:
	// a built-in list (friendly-scanner, sipvicious, ...).
	ScannerUserAgents []string `toml:"scanner_user_agents"`

	// RegisterGuesses: this many failed digest challenges of one
	// address-of-record from one source within RegisterWindow lock that
	// AoR for that source for RegisterLock (its REGISTERs are dropped
	// without asking the registrar). Default 5.
	RegisterGuesses int `toml:"register_guesses"`
	// RegisterSourceGuesses: this many failed challenges from one source
	// within RegisterWindow, all AoRs together, block the source (with
	// escalation, like any block). Default 20.
	RegisterSourceGuesses int `toml:"register_source_guesses"`
	// RegisterWindow: the window of both counts. Default "10m".
	RegisterWindow Duration `toml:"register_window"`
	// RegisterLock: how long a locked AoR stays locked. Default "15m".
	RegisterLock Duration `toml:"register_lock"`
	// AggregateV6: this many auto-blocked IPv6 /64s inside one /56 make
	// the block the /56, and this many auto-blocked /56s inside one /48
	// the /48 (never where the wider prefix would overlap a never-block
	// prefix). Default 8; 0 disables.
	AggregateV6 int `toml:"aggregate_v6"`
	// TrunkHealthInterval: every this long, one log line per trunk with
	// traffic sums up its calls (answered/failed by result) and the
	// failures seen from its addresses, which are not charged to it.
	// Default "5m"; "0s" disables the lines (the metrics stay).
	TrunkHealthInterval Duration `toml:"trunk_health_interval"`

	NeverBlockPrefixes []netip.Prefix `toml:"-"`
}

// XDP configures the XDP/eBPF fast path.
type XDP struct {
	// Enabled: attach the XDP program. Default false. When it cannot run
	// (no privilege, no bpffs, kernel refuses) the SBC logs why and falls
	// back to nftables (if enabled) and the user-space filter.
	Enabled bool `toml:"enabled"`
	// Interfaces to attach to (required when enabled).
	Interfaces []string `toml:"interfaces"`
	// Mode: "auto" (default: native, else generic), "native", "generic".
	Mode string `toml:"mode"`
	// PinDir: bpffs directory for pinned maps and links. Default
	// "/sys/fs/bpf/sbc".
	PinDir string `toml:"pin_dir"`
	// Scope: which packets of a blocked source the program drops. "sip"
	// (default): only UDP and TCP to the SBC's listening ports (every
	// listener of every realm, TLS and WSS included) and UDP to the
	// realms' media relay ports, so that a block a spoofed source earned
	// cannot cut the host off from its DNS resolver, NTP server or SSH jump
	// host. "host": every packet, whatever its protocol and port. Applies
	// on reload.
	Scope string `toml:"scope"`
	// RatePPS / Burst: per-source packet rate limit for UDP to the SBC's
	// UDP ports, in the program itself; trunk sources and pool targets are
	// exempt. 0 (default) = off.
	RatePPS int `toml:"rate_pps"`
	Burst   int `toml:"burst"`
}

// Nftables configures the nftables mirror of the blocklist.
type Nftables struct {
	// Enabled: default false.
	Enabled bool `toml:"enabled"`
	// Table: name of the inet table the SBC owns. Default "sbc".
	Table string `toml:"table"`
	// MediaPorts: [low, high] UDP/TCP port range also guarded; optional
	// (for a media relay other than the SBC's own, whose realm ranges are
	// guarded anyway, over UDP). The table guards only these ports: other
	// traffic from a blocked source passes.
	MediaPorts []int `toml:"media_ports"`
	// TrunksOnly: drop packets to the SIP ports from any source that is
	// neither a trunk source nor a pool target (the backends' answers and
	// requests come from those). Default false.
	TrunksOnly bool `toml:"trunks_only"`
}

// CDR configures call detail records (package cdr).
type CDR struct {
	// Enabled: write one JSON line per call at its end. Default false.
	Enabled bool `toml:"enabled"`
	// File is the CDR file (JSON lines). Required when enabled; relative
	// paths are relative to the policy file's directory. Its directory is
	// created if missing (mode 0750).
	File string `toml:"file"`
	// MaxSizeMB rotates the file when it would grow past this many MiB:
	// FILE becomes FILE.1 (FILE.1 becomes FILE.2, ...). Default 100;
	// 1..100000.
	MaxSizeMB int `toml:"max_size_mb"`
	// MaxFiles is how many rotated files are kept. Default 10; 0..1000
	// (0: the file is truncated at rotation, nothing kept).
	MaxFiles int `toml:"max_files"`
	// Queue bounds the records waiting for the writer; more are dropped
	// and counted (sbc_cdr_records_total{result="dropped"}). Default 4096;
	// 1..1000000.
	Queue int `toml:"queue"`
}

// HEP configures the HEP3 export (package hep).
type HEP struct {
	// Enabled: send every SIP message the SBC reads or writes to Address.
	// Default false.
	Enabled bool `toml:"enabled"`
	// Address is the collector's UDP "ip:port" (IP literal). Required
	// when enabled.
	Address string `toml:"address"`
	// AgentID is the capture agent id chunk (0x000c). Default 0;
	// 0..4294967295.
	AgentID int `toml:"agent_id"`
	// Password is the auth key chunk (0x000e): sent in clear; a
	// collector that checks it. Default "" (no chunk).
	// It may be sealed under the master key ([secrets]) like every secret
	// of the policy.
	Password string `toml:"password"`
	// Queue bounds the packets waiting to be sent; more are dropped and
	// counted (sbc_hep_packets_total{result="dropped"}). Default 8192;
	// 1..1000000.
	Queue int `toml:"queue"`

	Addr    netip.AddrPort `toml:"-"` // Address parsed
	AuthKey string         `toml:"-"` // Password opened (set by the SBC when it applies the policy)
}

// Webhook is one [[webhook]]: an HTTP(S) endpoint that receives the
// selected events as signed JSON (package webhook).
type Webhook struct {
	// Name identifies the webhook in metrics and logs; unique; letters,
	// digits, '_', '-', '.'.
	Name string `toml:"name"`
	// URL is where events are POSTed: https, or http to a loopback
	// address only.
	URL string `toml:"url"`
	// Events are the event kinds sent (package events: call_started,
	// call_terminated, config_changed, reload_failed, auth_failure,
	// blocked, unblocked, admin_action) and "cdr" for the call detail
	// records. At least one.
	Events []string `toml:"events"`
	// Secret is the HMAC-SHA256 key of the signature (at least 16 bytes).
	// SecretEnv names an environment variable that holds it instead; one
	// of the two is required. Either may hold a value sealed under the
	// master key ([secrets]; `sbc secrets seal`), opened when the policy
	// is applied.
	Secret    string `toml:"secret"`
	SecretEnv string `toml:"secret_env"`
	// Timeout of one delivery attempt. Default "5s".
	Timeout Duration `toml:"timeout"`
	// MaxAttempts per event (the first included); retries back off
	// exponentially from 500ms, doubling, capped at MaxBackoff. Default 6;
	// 1..20.
	MaxAttempts int `toml:"max_attempts"`
	// MaxBackoff caps the wait between two attempts. Default "30s".
	MaxBackoff Duration `toml:"max_backoff"`
	// Queue bounds the events waiting for delivery; more are dropped and
	// counted. Default 1024; 1..100000.
	Queue int `toml:"queue"`

	Key []byte `toml:"-"` // the secret, from Secret or SecretEnv
}

// DefaultAllowedHeaders is the safe default header allow-list.
var DefaultAllowedHeaders = []string{
	"Content-Type", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Allow", "Supported", "Require", "Accept", "Accept-Encoding", "Accept-Language",
	"Session-Expires", "Min-SE", "Event", "Subscription-State", "Refer-To",
	"Replaces", "RSeq", "RAck", "Reason", "Retry-After", "Expires",
	"Min-Expires", "Unsupported", "Date", "Timestamp", "Priority", "Subject",
	"P-Asserted-Identity", "Privacy", "Allow-Events", "Info-Package",
	"Recv-Info", "Authorization", "Proxy-Authorization", "WWW-Authenticate",
	"Proxy-Authenticate", "Authentication-Info", "Identity",
}

// Duration is a time.Duration written as a Go duration string ("5s", "4h").
// It remembers whether the file set it, so that an explicit "0s" (disable)
// differs from an absent key (default).
// Defaults applied by validation leave IsSet false. Negative durations are
// rejected by validation.
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

// Audit configures the audit log: JSON lines with a hash chain, to a
// file, stdout and/or syslog. No output: no audit log.
type Audit struct {
	// File is the audit log's path; empty: no file. Created mode 0600
	// (and its directory 0700); appended to, the chain continuing from
	// its last record.
	File string `toml:"file"`
	// MaxSize rotates the file when a record would take it past this many
	// bytes. Default 100 MiB; 0 never rotates; else at least 4096.
	MaxSize int `toml:"max_size"`
	// Keep is how many rotated files (FILE.1 … FILE.keep) are kept.
	// Default 10; 1 to 1000.
	Keep int `toml:"keep"`
	// Stdout writes the records to standard output too.
	Stdout bool `toml:"stdout"`
	// Syslog is "udp://host:port" or "tcp://host:port" (RFC 5424; octet
	// counting over TCP); empty: none.
	Syslog string `toml:"syslog"`
	// SyslogFacility: "local0" (default) … "local7", "audit", "auth",
	// "authpriv", "daemon", "user", "kern".
	SyslogFacility string `toml:"syslog_facility"`
	// RedactFields are record members whose value is replaced by
	// "[redacted]": session_id, call_id, caller_id, called_number,
	// source_ip, user_agent, realm, trunk, actor, reason, duration_ms,
	// detail, or detail.KEY.
	RedactFields []string `toml:"redact_fields"`
	// MaskNumbers, when positive, keeps only the last MaskNumbers digits
	// of caller_id and called_number (the others become '*'). 0 (default):
	// no masking; at most 32.
	MaskNumbers int `toml:"mask_numbers"`
	// Events are the event kinds written (events.Kinds); empty: all.
	Events []string `toml:"events"`
	// QueueSize bounds each output's queue of records not yet written;
	// a record that finds it full is dropped and counted. Default 4096;
	// 16 to 1048576.
	QueueSize int `toml:"queue_size"`

	// Facility is SyslogFacility's code (set by validation).
	Facility int `toml:"-"`
}

// Enabled reports whether the audit log has an output.
func (a *Audit) Enabled() bool { return a.File != "" || a.Stdout || a.Syslog != "" }

// Secrets configures the master key of secrets at rest.
type Secrets struct {
	// MasterKeyFile holds the master key (32 bytes, base64), mode 0600 or
	// stricter. Empty: the environment variable SBC_MASTER_KEY; neither:
	// no master key, secrets are kept in clear.
	MasterKeyFile string `toml:"master_key_file"`
	// PreviousKeyFile holds the previous master key during a rotation
	// (values sealed under it still open). Empty: the environment
	// variable SBC_MASTER_KEY_PREVIOUS, if set.
	PreviousKeyFile string `toml:"previous_key_file"`
}
