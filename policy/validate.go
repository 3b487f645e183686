package policy

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by validation (see the doc comments in types.go).
const (
	DefaultUserAgent           = "sbc"
	DefaultLogLevel            = "info"
	DefaultUDPBuffer           = 4 << 20
	DefaultGCHeapFloor         = 512 << 20
	DefaultTCPIdleTimeout      = 10 * time.Minute
	DefaultTCPMessageTimeout   = 10 * time.Second
	DefaultTransport           = "udp"
	DefaultHealthInterval      = 5 * time.Second
	DefaultHealthTimeout       = 2 * time.Second
	DefaultHealthUp            = 2
	DefaultHealthDown          = 3
	DefaultTargetTimeout       = 2 * time.Second
	DefaultMaxAttempts         = 3
	DefaultRetryAfter          = 30
	DefaultMaxDuration         = 4 * time.Hour
	DefaultInactivityTimeout   = 2 * time.Hour
	DefaultRingTimeout         = 3 * time.Minute
	DefaultUnknownSourceAction = "drop"
	DefaultSourcePPS           = 200
	DefaultTrunkPPS            = 20000
	DefaultSourceCPS           = 10
	DefaultRegisterRate        = 2
	DefaultMaxSources          = 100000
	DefaultTCPConnsPerSource   = 16
	DefaultTCPConns            = 4096
	DefaultUDPPeers            = 16384
	DefaultQueueDelay          = 200 * time.Millisecond
	DefaultOverLimitAction     = "reject"
	DefaultBlockThreshold      = 10
	DefaultBlockWindow         = time.Minute
	DefaultBlockFor            = 10 * time.Minute
	DefaultBlockEscalation     = 4
	DefaultMaxBlock            = 24 * time.Hour
	DefaultForgetAfter         = 24 * time.Hour
	DefaultRegisterGuesses     = 5
	DefaultRegisterSrcGuesses  = 20
	DefaultRegisterWindow      = 10 * time.Minute
	DefaultRegisterLock        = 15 * time.Minute
	DefaultAggregateV6         = 8
	DefaultTrunkHealthInterval = 5 * time.Minute
	DefaultXDPMode             = "auto"
	DefaultXDPPinDir           = "/sys/fs/bpf/sbc"
	DefaultXDPScope            = "sip"
	DefaultNftTable            = "sbc"
	DefaultTLSHandshakeTimeout = 10 * time.Second
	DefaultMediaTimeout        = 60 * time.Second
	DefaultMediaQuarantine     = 5 * time.Second
	DefaultMediaPortMin        = 16384
	DefaultMediaPortMax        = 32767
	DefaultMinutesWindow       = time.Hour
	DefaultMaxBindings         = 10000
	DefaultMaxBindingsPerAoR   = 10
	DefaultRegisterMaxPending  = 256
)

const (
	maxUDPBuffer      = 1 << 30
	minGCHeapFloor    = 16 << 20
	maxGCHeapFloor    = 1 << 40
	minMemoryLimit    = 64 << 20
	maxWeight         = 1000000
	maxNameLen        = 64
	maxUserAgentLen   = 128
	maxPrefixLen      = 128
	maxNumberLen      = 32
	maxPriority       = 1000
	minHealthInterval = 10 * time.Millisecond
)

// generatedHeaders are written by the B2BUA itself and never copied.
var generatedHeaders = map[string]string{
	"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
	"contact": "Contact", "max-forwards": "Max-Forwards", "content-length": "Content-Length",
	"route": "Route", "record-route": "Record-Route",
}

// compactHeaders maps the compact header forms (RFC 3261 7.3.3 and later
// RFCs) to their long forms.
var compactHeaders = map[byte]string{
	'a': "Accept-Contact", 'b': "Referred-By", 'c': "Content-Type", 'd': "Request-Disposition",
	'e': "Content-Encoding", 'f': "From", 'i': "Call-ID", 'j': "Reject-Contact",
	'k': "Supported", 'l': "Content-Length", 'm': "Contact", 'n': "Identity-Info",
	'o': "Event", 'r': "Refer-To", 's': "Subject", 't': "To", 'u': "Allow-Events",
	'v': "Via", 'x': "Session-Expires", 'y': "Identity",
}

type validator struct {
	p  *Policy
	ix *index

	realms map[string]int // name -> index in p.Realms
	trunks map[string]int
	pools  map[string]int

	// badNames[kind]: a name of that kind was blanked out for a structural
	// error, so references to unknown names of that kind are not reported.
	badNames map[string]bool
}

func validate(p *Policy, ix *index) {
	v := &validator{p: p, ix: ix, badNames: map[string]bool{}}
	v.server()
	v.realms = v.names("realm", len(p.Realms), func(i int) string { return p.Realms[i].Name })
	v.trunks = v.names("trunk", len(p.Trunks), func(i int) string { return p.Trunks[i].Name })
	v.pools = v.names("pool", len(p.Pools), func(i int) string { return p.Pools[i].Name })
	v.listeners()
	v.admin()
	v.trunkList()
	v.poolList()
	v.routes()
	v.routing()
	v.calls()
	v.outbound()
	v.registrations()
	v.dns()
	v.headers()
	v.headerRules()
	v.limits()
	v.autoBlock()
	v.xdp()
	v.nftables()
	v.media()
	v.operator()
	v.audit()
	if len(ix.errs) == 0 {
		p.look = buildLookup(p)
	}
}

// errf reports a problem at the value of path (or its closest ancestor),
// unless path was blanked out for a structural error already reported.
func (v *validator) errf(path, format string, args ...any) {
	if v.ix.isBad(path) {
		return
	}
	v.ix.add(v.ix.at(path, true), "%s: %s", path, fmt.Sprintf(format, args...))
}

// where formats the position of path for "also at" remarks.
func (v *validator) where(path string) string {
	p := v.ix.at(path, true)
	return fmt.Sprintf("%d:%d", p.line, p.col)
}

// duration applies a default to an absent duration and checks a given one.
func (v *validator) duration(path string, d *Duration, def time.Duration, positive bool) {
	if !d.IsSet() {
		d.Duration = def
		return
	}
	switch {
	case d.Duration < 0:
		v.errf(path, "must not be negative (got %s)", d.Duration)
	case positive && d.Duration == 0:
		v.errf(path, "must be positive")
	}
}

// intField applies a default to an absent integer and range-checks a given one.
func (v *validator) intField(path string, x *int, def, lo, hi int) {
	if !v.ix.has(path) {
		*x = def
		return
	}
	if *x < lo || *x > hi {
		v.errf(path, "must be between %d and %d (got %d)", lo, hi, *x)
	}
}

// logLevels are the values server.log_level accepts, with their levels.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// SlogLevel returns the slog level of a server.log_level value: "debug",
// "info", "warn" or "error", the values validation accepts. Anything else
// (the field of a Policy that was not validated) is slog.LevelInfo, the
// default.
func SlogLevel(logLevel string) slog.Level {
	if l, ok := logLevels[logLevel]; ok {
		return l
	}
	return slog.LevelInfo
}

func (v *validator) server() {
	s := &v.p.Server
	switch {
	case s.UserAgent == "":
		s.UserAgent = DefaultUserAgent
	case len(s.UserAgent) > maxUserAgentLen || !printableASCII(s.UserAgent, true):
		v.errf("server.user_agent", "must be printable ASCII, at most %d bytes", maxUserAgentLen)
	}
	if s.LogLevel == "" {
		s.LogLevel = DefaultLogLevel
	} else if _, ok := logLevels[s.LogLevel]; !ok {
		v.errf("server.log_level", "unknown log level %s (want \"debug\", \"info\", \"warn\" or \"error\")", quote(s.LogLevel))
	}
	for _, b := range []struct {
		path string
		x    *int
	}{{"server.udp_read_buffer", &s.UDPReadBuffer}, {"server.udp_write_buffer", &s.UDPWriteBuffer}} {
		switch {
		case *b.x == 0:
			*b.x = DefaultUDPBuffer
		case *b.x < 0 || *b.x > maxUDPBuffer:
			v.errf(b.path, "must be between 0 (default, %d) and %d bytes (got %d)", DefaultUDPBuffer, maxUDPBuffer, *b.x)
		}
	}
	switch {
	case s.GCHeapFloor == 0:
		s.GCHeapFloor = DefaultGCHeapFloor
	case s.GCHeapFloor == -1:
	case s.GCHeapFloor < minGCHeapFloor || s.GCHeapFloor > maxGCHeapFloor:
		v.errf("server.gc_heap_floor", "must be 0 (default, %d), -1 (off) or between %d and %d bytes (got %d)",
			DefaultGCHeapFloor, minGCHeapFloor, maxGCHeapFloor, s.GCHeapFloor)
	}
	if s.MemoryLimit != 0 && s.MemoryLimit < minMemoryLimit {
		v.errf("server.memory_limit", "must be 0 (none) or at least %d bytes (got %d)", minMemoryLimit, s.MemoryLimit)
	}
	v.duration("server.tcp_idle_timeout", &s.TCPIdleTimeout, DefaultTCPIdleTimeout, true)
	v.duration("server.tcp_message_timeout", &s.TCPMessageTimeout, DefaultTCPMessageTimeout, true)
}

// names checks the names of the realms, trunks or pools and returns the
// name -> index map (first definition wins).
func (v *validator) names(kind string, n int, name func(int) string) map[string]int {
	m := make(map[string]int, n)
	for i := 0; i < n; i++ {
		path := elemPath(kind, i)
		nm := name(i)
		if v.ix.isBad(path + ".name") {
			v.badNames[kind] = true
		}
		switch {
		case nm == "":
			v.errf(path+".name", "%s without a name (add name = \"...\")", kind)
			continue
		case !validName(nm):
			v.errf(path+".name", "invalid %s name %s: use letters, digits, '_', '-' and '.', at most %d", kind, quote(nm), maxNameLen)
		}
		if j, dup := m[nm]; dup {
			v.errf(path+".name", "duplicate %s name %q (first at %s)", kind, nm, v.where(elemPath(kind, j)+".name"))
			continue
		}
		m[nm] = i
	}
	if kind == "realm" && n == 0 {
		v.ix.add(pos{1, 1}, "no realm: define at least one [[realm]] with a [[realm.listener]]")
	}
	return m
}

// ref checks a reference to a realm, trunk or pool by name.
func (v *validator) ref(path, kind, name string, required bool, known map[string]int) bool {
	if name == "" {
		if required {
			v.errf(path, "%s is required", kind)
		}
		return false
	}
	if _, ok := known[name]; ok {
		return true
	}
	if v.badNames[kind] {
		return false
	}
	defined := make([]string, 0, len(known))
	for n := range known {
		defined = append(defined, strconv.Quote(n))
	}
	slices.Sort(defined)
	list := "none is defined"
	switch {
	case len(defined) > 10:
		list = "defined: " + strings.Join(defined[:10], ", ") + ", ..."
	case len(defined) > 0:
		list = "defined: " + strings.Join(defined, ", ")
	}
	v.errf(path, "unknown %s %s (%s)", kind, quote(name), list)
	return false
}

// listenerKey identifies a socket for duplicate detection.
type listenerKey struct {
	transport string
	port      uint16
}

func (v *validator) listeners() {
	exact := map[string]string{}          // "udp 1.2.3.4:5" -> path
	wild4 := map[listenerKey]string{}     // 0.0.0.0:port
	wild6 := map[listenerKey]string{}     // [::]:port (dual stack)
	specific4 := map[listenerKey]string{} // first specific IPv4 address on port
	specific6 := map[listenerKey]string{}
	for i := range v.p.Realms {
		r := &v.p.Realms[i]
		rp := elemPath("realm", i)
		if len(r.Listeners) == 0 {
			v.errf(rp+".listener", "realm %s has no listener (add a [[realm.listener]])", quote(r.Name))
		}
		for j := range r.Listeners {
			l := &r.Listeners[j]
			lp := elemPath(rp+".listener", j)
			transportOK := v.transport(lp+".transport", &l.Transport)
			if l.Bind == "" {
				v.errf(lp+".bind", "bind is required (e.g. bind = \"127.0.0.1:5060\")")
				continue
			}
			ap, err := netip.ParseAddrPort(l.Bind)
			if err != nil {
				v.errf(lp+".bind", "invalid address %s: want ip:port with an IP literal, e.g. \"127.0.0.1:5060\" or \"[::1]:5060\"", quote(l.Bind))
				continue
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			l.BindAddr = ap
			v.advertise(lp, l)
			v.listenerTLS(lp, l)
			if !transportOK || ap.Port() == 0 {
				continue
			}
			// Sockets that cannot both be bound: the same address, or an
			// address and a wildcard covering it ([::] is dual stack).
			a := ap.Addr().WithZone("")
			k := listenerKey{l.Transport, ap.Port()}
			desc := l.Transport + " " + ap.String()
			if prev, dup := exact[desc]; dup {
				v.errf(lp+".bind", "duplicate listener %s (first at %s)", desc, v.where(prev+".bind"))
				continue
			}
			exact[desc] = lp
			var clash string
			switch {
			case a == netip.IPv4Unspecified():
				clash = first(wild6[k], specific4[k])
			case a == netip.IPv6Unspecified():
				clash = first(wild4[k], specific4[k], specific6[k])
			case a.Is4():
				clash = first(wild4[k], wild6[k])
			default:
				clash = wild6[k]
			}
			if clash != "" {
				v.errf(lp+".bind", "listener %s overlaps the listener at %s (a wildcard address covers the other)", desc, v.where(clash+".bind"))
			}
			switch {
			case a == netip.IPv4Unspecified():
				setFirst(wild4, k, lp)
			case a == netip.IPv6Unspecified():
				setFirst(wild6, k, lp)
			case a.Is4():
				setFirst(specific4, k, lp)
			default:
				setFirst(specific6, k, lp)
			}
		}
	}
}

func first(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func setFirst(m map[listenerKey]string, k listenerKey, path string) {
	if _, ok := m[k]; !ok {
		m[k] = path
	}
}

// transport defaults and checks a transport value.
func (v *validator) transport(path string, t *string) bool {
	switch *t {
	case "":
		*t = DefaultTransport
		return true
	case "udp", "tcp", "tls", "wss":
		return true
	case "ws", "sctp":
		v.errf(path, "transport %q is not supported (want \"udp\", \"tcp\", \"tls\" or \"wss\")", *t)
	default:
		v.errf(path, "unknown transport %s (want \"udp\", \"tcp\", \"tls\" or \"wss\")", quote(*t))
	}
	return false
}

// advertise derives AdvertiseHost/AdvertisePort of a listener whose
// BindAddr is set.
func (v *validator) advertise(lp string, l *Listener) {
	bind := l.BindAddr
	if l.Advertise == "" {
		if bind.Addr().IsUnspecified() {
			v.errf(lp+".bind", "advertise is required when bind is the unspecified address %s", bind.Addr())
			return
		}
		l.AdvertiseHost = bind.Addr().WithZone("").String()
		l.AdvertisePort = int(bind.Port())
		return
	}
	host, port, err := parseAdvertise(l.Advertise)
	if err != nil {
		v.errf(lp+".advertise", "invalid advertise %s: %v", quote(l.Advertise), err)
		return
	}
	if port == 0 {
		port = int(bind.Port())
	}
	l.AdvertiseHost, l.AdvertisePort = host, port
}

// parseAdvertise splits "host[:port]"; port is 0 when absent.
func parseAdvertise(s string) (host string, port int, err error) {
	checkIP := func(a netip.Addr) (string, error) {
		switch {
		case a.Zone() != "":
			return "", fmt.Errorf("an address with a zone cannot be advertised")
		case a.IsUnspecified():
			return "", fmt.Errorf("the unspecified address cannot be advertised")
		}
		return a.Unmap().String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil { // bare IPv4 or IPv6
		h, err := checkIP(a)
		return h, 0, err
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") { // [v6]
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil || !a.Is6() {
			return "", 0, fmt.Errorf("want an IPv6 address in brackets")
		}
		h, err := checkIP(a)
		return h, 0, err
	}
	h, p, splitErr := net.SplitHostPort(s)
	if splitErr != nil {
		h, p = s, "" // a name without port, or garbage
	}
	if p != "" || splitErr == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("want a port between 1 and 65535")
		}
		port = n
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if strings.HasPrefix(s, "[") != a.Is6() {
			return "", 0, fmt.Errorf("IPv6 addresses, and only they, are written in brackets")
		}
		h, err := checkIP(a)
		return h, port, err
	}
	if !validHostname(h) {
		return "", 0, fmt.Errorf("want host[:port] with an IP address or a DNS name")
	}
	return h, port, nil
}

func (v *validator) admin() {
	a := &v.p.Admin
	if a.Listen == "" {
		return
	}
	ap, err := netip.ParseAddrPort(a.Listen)
	if err != nil {
		v.errf("admin.listen", "invalid address %s: want ip:port with an IP literal, e.g. \"127.0.0.1:9090\"", quote(a.Listen))
		return
	}
	a.Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	v.adminAuth()
	if a.Addr.Port() == 0 {
		return
	}
	for i := range v.p.Realms {
		for j, l := range v.p.Realms[i].Listeners {
			if l.Transport == "tcp" && l.BindAddr == a.Addr {
				v.errf("admin.listen", "%s is also the bind of a tcp listener (at %s)", a.Addr, v.where(elemPath(elemPath("realm", i)+".listener", j)+".bind"))
			}
		}
	}
}

// Admin API defaults.
const (
	DefaultAdminRate = 20
	// AdminKeysFile is the API key store's name in server.state_dir.
	AdminKeysFile = "admin_keys.json"
)

// ValidRole reports whether r is one of AdminRoles.
func ValidRole(r string) bool { return slices.Contains(AdminRoles, r) }

// adminAuth checks the admin listener's transport and authentication.
func (v *validator) adminAuth() {
	a := &v.p.Admin
	switch {
	case a.TLS == nil && !a.PlainHTTP:
		v.errf("admin.listen", "the admin API needs [admin.tls] (HTTPS, with cert_file and key_file) or plain_http = true (HTTP, for loopback)")
	case a.TLS != nil && a.PlainHTTP:
		v.errf("admin.plain_http", "plain_http and [admin.tls] exclude each other")
	case a.PlainHTTP && a.Addr.Addr().IsUnspecified():
		v.errf("admin.plain_http", "plain HTTP on %s would serve the admin API, credentials in clear, on every interface: bind it to loopback, or use [admin.tls]", a.Addr.Addr())
	case a.PlainHTTP && !a.Addr.Addr().IsLoopback():
		v.errf("admin.plain_http", "plain HTTP is for a loopback listen address only (127.0.0.0/8, ::1); on %s API keys would cross the network in clear: use [admin.tls] (HTTPS, with cert_file and key_file; ca_file and client_roles for client certificates)", a.Addr.Addr())
	}
	if t := a.TLS; t != nil {
		v.tlsCommon("admin.tls", t)
		if t.CertFile == "" || t.KeyFile == "" {
			v.errf("admin.tls", "cert_file and key_file are required (the admin listener's certificate)")
		}
		if t.ServerName != "" {
			v.errf("admin.tls.server_name", "server_name is a pool setting")
		}
		if len(t.RevokedSPKI) > 0 {
			for j, h := range t.RevokedSPKI {
				if _, ok := parseSPKI(h); !ok {
					v.errf(elemPath("admin.tls.revoked_spki", j), "invalid SPKI hash %s: want 64 hex digits", quote(h))
				}
			}
		}
		switch t.ClientAuth {
		case "":
			t.ClientAuth = "none"
			if t.CAFile != "" {
				t.ClientAuth = "request"
			}
		case "none", "request", "require":
		default:
			v.errf("admin.tls.client_auth", "unknown client_auth %s (want \"none\", \"request\" or \"require\")", quote(t.ClientAuth))
		}
		if t.ClientAuth != "none" && t.CAFile == "" {
			v.errf("admin.tls.client_auth", "client_auth %s needs ca_file (the CA of the admin clients' certificates)", quote(t.ClientAuth))
		}
	}
	if len(a.ClientRoles) > 0 && (a.TLS == nil || a.TLS.CAFile == "" || a.TLS.ClientAuth == "none") {
		v.errf("admin.client_roles", "client certificates need [admin.tls] with ca_file and client_auth \"request\" or \"require\"")
	}
	roles := func(path string, rs []string) {
		if len(rs) == 0 {
			v.errf(path, "at least one role (%s)", strings.Join(AdminRoles, ", "))
		}
		for j, r := range rs {
			if !ValidRole(r) {
				v.errf(elemPath(path, j), "unknown role %s (want one of %s)", quote(r), strings.Join(AdminRoles, ", "))
			}
		}
	}
	seen := map[string]string{}
	for i, cr := range a.ClientRoles {
		cp := elemPath("admin.client_roles", i)
		n := 0
		for _, x := range []string{cr.CN, cr.DNS, cr.URI} {
			if x != "" {
				n++
			}
			if strings.ContainsFunc(x, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				v.errf(cp, "control characters in a certificate name")
			}
		}
		if n != 1 {
			v.errf(cp, "exactly one of cn, dns or uri names the certificates")
		}
		id := "cn:" + cr.CN + "dns:" + strings.ToLower(cr.DNS) + "uri:" + cr.URI
		if prev, dup := seen[id]; dup {
			v.errf(cp, "the same certificate name is also at %s", v.where(prev))
		}
		seen[id] = cp
		roles(cp+".roles", cr.Roles)
	}
	ids := map[string]string{}
	for i := range a.APIKeys {
		k := &a.APIKeys[i]
		kp := elemPath("admin.api_keys", i)
		if !ValidKeyID(k.ID) {
			v.errf(kp+".id", "invalid key id %s: want 16 lowercase hex digits", quote(k.ID))
		}
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 || strings.ToLower(k.SHA256) != k.SHA256 {
			v.errf(kp+".sha256", "want the key's SHA-256 as 64 lowercase hex digits")
		}
		if prev, dup := ids[k.ID]; dup {
			v.errf(kp+".id", "key id %s is also at %s", quote(k.ID), v.where(prev))
		}
		ids[k.ID] = kp
		roles(kp+".roles", k.Roles)
	}
	a.KeysPath = a.KeysFile
	if a.KeysPath == "" && v.p.Server.StateDir != "" {
		a.KeysPath = filepath.Join(v.p.Server.StateDir, AdminKeysFile)
	}
	for j, h := range a.Hosts {
		if !validHostname(h) {
			v.errf(elemPath("admin.hosts", j), "invalid host name %s", quote(h))
		}
	}
	for j, o := range a.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			v.errf(elemPath("admin.origins", j), "invalid origin %s: want scheme://host[:port], e.g. \"https://ops.example\"", quote(o))
		}
	}
	v.intField("admin.rate", &a.Rate, DefaultAdminRate, 0, 100000)
	v.intField("admin.burst", &a.Burst, 2*a.Rate, 0, 200000)
	if a.Rate > 0 && a.Burst == 0 {
		v.errf("admin.burst", "must be at least 1 while rate is set")
	}
}

// ValidKeyID reports whether id is an API key id: 16 lowercase hex digits.
func ValidKeyID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (v *validator) trunkList() {
	type seen struct {
		trunk int
		path  string
	}
	prefixes := map[netip.Prefix]seen{}
	ids := map[TLSIdentity]string{}
	for i := range v.p.Trunks {
		t := &v.p.Trunks[i]
		tp := elemPath("trunk", i)
		v.ref(tp+".realm", "realm", t.Realm, true, v.realms)
		v.identities(tp, t, ids)
		if len(t.Sources) == 0 && len(t.TLSIdentities) == 0 {
			v.errf(tp+".sources", "trunk %s has no sources (e.g. sources = [\"192.0.2.0/24\"]) and no tls_identities", quote(t.Name))
		}
		t.Prefixes = make([]netip.Prefix, 0, len(t.Sources))
		for j, s := range t.Sources {
			sp := elemPath(tp+".sources", j)
			pfx, err := parseSource(s)
			if err != nil {
				v.errf(sp, "invalid source %s: want a CIDR (\"192.0.2.0/24\") or an address (\"192.0.2.1\")", quote(s))
				continue
			}
			if prev, dup := prefixes[pfx]; dup {
				if prev.trunk == i {
					v.errf(sp, "%s is listed twice (first at %s)", pfx, v.where(prev.path))
				} else {
					v.errf(sp, "%s is also a source of trunk %s (at %s): a prefix may belong to one trunk only", pfx, quote(v.p.Trunks[prev.trunk].Name), v.where(prev.path))
				}
				continue
			}
			prefixes[pfx] = seen{i, sp}
			t.Prefixes = append(t.Prefixes, pfx)
		}
		if t.MaxCalls < 0 {
			v.errf(tp+".max_calls", "must not be negative (0 = no cap)")
		}
		if t.CPS < 0 {
			v.errf(tp+".cps", "must not be negative (0 = no cap)")
		}
		if t.AllowRegister && len(t.RegisterDomains) == 0 {
			v.errf(tp+".allow_register", "allow_register needs register_domains (the domains extensions may register in)")
		}
		for j, d := range t.RegisterDomains {
			if !validHostname(d) {
				if _, err := netip.ParseAddr(d); err != nil {
					v.errf(elemPath(tp+".register_domains", j), "invalid domain %s", quote(d))
				}
			}
		}
		v.trunkTransports(tp, t)
	}
}

// trunkTransports checks a trunk's transports: known, each once, and each
// served by a listener of the trunk's realm.
func (v *validator) trunkTransports(tp string, t *Trunk) {
	seen := map[string]bool{}
	for j, tr := range t.Transports {
		jp := elemPath(tp+".transports", j)
		switch tr {
		case "udp", "tcp", "tls", "wss":
		default:
			v.errf(jp, "unknown transport %s (want \"udp\", \"tcp\", \"tls\" or \"wss\")", quote(tr))
			continue
		}
		if seen[tr] {
			v.errf(jp, "%s is listed twice", tr)
			continue
		}
		seen[tr] = true
		if !v.realmHasTransport(t.Realm, tr) {
			v.errf(jp, "realm %s has no %s listener", quote(t.Realm), tr)
		}
	}
	if t.Transports != nil && len(t.Transports) == 0 {
		v.errf(tp+".transports", "must not be empty (leave it out for any transport)")
	}
}

// realmHasTransport reports whether realm has a listener of transport
// (true when the realm is unknown: that is reported elsewhere).
func (v *validator) realmHasTransport(realm, transport string) bool {
	for _, r := range v.p.Realms {
		if r.Name != realm {
			continue
		}
		for _, l := range r.Listeners {
			lt := l.Transport
			if lt == "" {
				lt = DefaultTransport
			}
			if lt == transport {
				return true
			}
		}
		return false
	}
	return true
}

// parseSource parses a CIDR or a bare address (a /32 or /128) into a masked
// prefix; IPv4-mapped IPv6 prefixes become IPv4 prefixes.
func parseSource(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zone not allowed")
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}

func (v *validator) poolList() {
	for i := range v.p.Pools {
		pl := &v.p.Pools[i]
		pp := elemPath("pool", i)
		realmOK := v.ref(pp+".realm", "realm", pl.Realm, true, v.realms)
		if v.transport(pp+".transport", &pl.Transport) && realmOK {
			r := &v.p.Realms[v.realms[pl.Realm]]
			if !slices.ContainsFunc(r.Listeners, func(l Listener) bool { return l.Transport == pl.Transport }) {
				at := pp + ".transport"
				if !v.ix.has(at) {
					at = pp + ".realm"
				}
				v.errf(at, "realm %s has no %s listener to reach the targets from", quote(pl.Realm), pl.Transport)
			}
		}
		v.targets(pp, pl)
		v.register(pp, pl)
		v.health(pp+".health", &pl.Health)
		if a := pl.Auth; a != nil {
			if a.Username == "" || !printableASCII(a.Username, false) || strings.ContainsAny(a.Username, `"\\`) {
				v.errf(pp+".auth.username", "a username is required: visible ASCII, no quote or backslash")
			}
			if a.Password == "" {
				v.errf(pp+".auth.password", "a password is required")
			}
			if a.Realm != "" && (!printableASCII(a.Realm, true) || strings.ContainsAny(a.Realm, `"\\`)) {
				v.errf(pp+".auth.realm", "invalid realm %s: printable ASCII, no quote or backslash", quote(a.Realm))
			}
		}
		switch {
		case pl.TLS != nil && pl.Transport != "tls":
			v.errf(pp+".tls", "tls settings need transport = \"tls\" (the pool's transport is %q)", pl.Transport)
		case pl.TLS != nil:
			v.tlsCommon(pp+".tls", pl.TLS)
			if pl.TLS.ClientAuth != "" {
				v.errf(pp+".tls.client_auth", "client_auth is a listener setting (a pool presents cert_file/key_file to its targets)")
			}
			if pl.TLS.HandshakeTimeout.IsSet() {
				v.errf(pp+".tls.handshake_timeout", "handshake_timeout is a listener setting (towards targets, routing.target_timeout bounds the connection)")
			}
			if len(pl.TLS.RevokedSPKI) > 0 {
				v.errf(pp+".tls.revoked_spki", "revoked_spki is a listener setting")
			}
			if pl.TLS.ServerName != "" && !validHostname(pl.TLS.ServerName) {
				v.errf(pp+".tls.server_name", "invalid server name %s: want a DNS name", quote(pl.TLS.ServerName))
			}
		case pl.Transport == "tls":
			pl.TLS = &TLS{Min: tls.VersionTLS12, HandshakeTimeout: Duration{Duration: DefaultTLSHandshakeTimeout}}
		}
	}
}

func (v *validator) targets(pp string, pl *Pool) {
	if len(pl.Targets) == 0 {
		v.errf(pp+".target", "pool %s has no target (add a [[pool.target]])", quote(pl.Name))
		return
	}
	addrs := map[netip.AddrPort]string{}
	hosts := map[string]string{}
	anyWeight, weightErr := false, false
	for j := range pl.Targets {
		t := &pl.Targets[j]
		tp := elemPath(pp+".target", j)
		switch {
		case t.Weight == nil:
			t.W = 1
		case *t.Weight < 0 || *t.Weight > maxWeight:
			v.errf(tp+".weight", "must be between 0 and %d (got %d)", maxWeight, *t.Weight)
			weightErr = true
		default:
			t.W = *t.Weight
		}
		anyWeight = anyWeight || t.W > 0
		if t.Priority < 0 || t.Priority > maxPriority {
			v.errf(tp+".priority", "must be between 0 and %d (got %d)", maxPriority, t.Priority)
		}
		if t.Address == "" {
			v.errf(tp+".address", "address is required (e.g. address = \"127.0.0.1:5080\")")
			continue
		}
		ap, err := netip.ParseAddrPort(t.Address)
		if err != nil {
			host, port, herr := hostTarget(t.Address)
			if herr != nil {
				v.errf(tp+".address", "invalid address %s: want ip:port (e.g. \"127.0.0.1:5080\" or \"[::1]:5080\") or host:port with a DNS name (e.g. \"sip.carrier.example:5060\")", quote(t.Address))
				continue
			}
			if prev, dup := hosts[host+":"+strconv.Itoa(int(port))]; dup {
				v.errf(tp+".address", "target %s is listed twice (first at %s)", t.Address, v.where(prev+".address"))
				continue
			}
			hosts[host+":"+strconv.Itoa(int(port))] = tp
			t.Host, t.Port = host, port
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		switch {
		case ap.Port() == 0:
			v.errf(tp+".address", "port must not be 0")
			continue
		case ap.Addr().IsUnspecified() || ap.Addr().IsMulticast():
			v.errf(tp+".address", "%s is not a unicast address", ap.Addr())
			continue
		}
		if prev, dup := addrs[ap]; dup {
			v.errf(tp+".address", "target %s is listed twice (first at %s)", ap, v.where(prev+".address"))
			continue
		}
		addrs[ap] = tp
		t.Addr = ap
	}
	if !anyWeight && !weightErr {
		v.errf(pp+".target", "all targets of pool %s have weight 0: none can be chosen", quote(pl.Name))
	}
}

func (v *validator) health(hp string, h *Health) {
	v.duration(hp+".interval", &h.Interval, DefaultHealthInterval, false)
	if h.Interval.Duration > 0 && h.Interval.Duration < minHealthInterval {
		v.errf(hp+".interval", "must be 0s (disabled) or at least %s (got %s)", minHealthInterval, h.Interval.Duration)
	}
	if !h.Timeout.IsSet() {
		h.Timeout.Duration = DefaultHealthTimeout
		if h.Enabled() && h.Interval.Duration <= DefaultHealthTimeout {
			h.Timeout.Duration = h.Interval.Duration / 2
		}
	} else {
		v.duration(hp+".timeout", &h.Timeout, DefaultHealthTimeout, true)
		if h.Enabled() && h.Timeout.Duration >= h.Interval.Duration {
			v.errf(hp+".timeout", "timeout %s must be shorter than the interval %s", h.Timeout.Duration, h.Interval.Duration)
		}
	}
	v.intField(hp+".up", &h.Up, DefaultHealthUp, 1, 1000)
	v.intField(hp+".down", &h.Down, DefaultHealthDown, 1, 1000)
}

func (v *validator) routes() {
	type key struct{ trunk, prefix string }
	seen := map[key]string{}
	for i := range v.p.Routes {
		r := &v.p.Routes[i]
		rp := elemPath("route", i)
		v.ref(rp+".pool", "pool", r.Pool, true, v.pools)
		v.ref(rp+".trunk", "trunk", r.Trunk, false, v.trunks)
		if len(r.Prefix) > maxPrefixLen || !printableASCII(r.Prefix, false) {
			v.errf(rp+".prefix", "invalid prefix %s: visible ASCII characters only, at most %d", quote(r.Prefix), maxPrefixLen)
		}
		k := key{r.Trunk, r.Prefix}
		if prev, dup := seen[k]; dup {
			v.errf(rp, "duplicate route for trunk %q and prefix %q (first at %s)", r.Trunk, r.Prefix, v.where(prev))
			continue
		}
		seen[k] = rp
	}
}

// validNumber reports whether s is a dialled-number prefix: "+" then
// digits, or digits ("" when empty is allowed).
func validNumber(s string, emptyOK bool) bool {
	if s == "" {
		return emptyOK
	}
	d := strings.TrimPrefix(s, "+")
	if len(s) > maxNumberLen || (d == "" && s != "+") {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// numberList checks a list of number prefixes: valid, none twice, none a
// prefix of another (the longer one could never decide anything).
func (v *validator) numberList(path string, list []string) {
	for i, x := range list {
		ip := elemPath(path, i)
		if !validNumber(x, false) {
			v.errf(ip, "invalid number prefix %s: \"+\" then digits, or digits, at most %d bytes", quote(x), maxNumberLen)
			continue
		}
		for j, y := range list[:i] {
			switch {
			case x == y:
				v.errf(ip, "prefix %s is listed twice (first at %s)", quote(x), v.where(elemPath(path, j)))
			case strings.HasPrefix(x, y) || strings.HasPrefix(y, x):
				v.errf(ip, "prefixes %s and %s overlap (first at %s): keep the shorter one", quote(x), quote(y), v.where(elemPath(path, j)))
			}
		}
	}
}

// registrations checks [registrations].
func (v *validator) registrations() {
	r := &v.p.Registrations
	v.intField("registrations.max_bindings", &r.MaxBindings, DefaultMaxBindings, 1, 10000000)
	v.intField("registrations.max_bindings_per_aor", &r.MaxBindingsPerAoR, DefaultMaxBindingsPerAoR, 1, 1000)
	v.intField("registrations.max_pending", &r.MaxPending, DefaultRegisterMaxPending, 1, 100000)
	v.duration("registrations.keepalive_interval", &r.KeepaliveInterval, 0, false)
	if d := r.KeepaliveInterval.Duration; d > 0 && d < time.Second {
		v.errf("registrations.keepalive_interval", "must be 0 (off) or at least 1s (got %s)", d)
	}
	v.duration("registrations.client_expires_max", &r.ClientExpiresMax, 0, false)
	if d := r.ClientExpiresMax.Duration; d > 0 && (d < 10*time.Second || d%time.Second != 0) {
		v.errf("registrations.client_expires_max", "must be 0 (off) or whole seconds, at least 10s (got %s)", d)
	}
}

// outbound checks the outbound routes and the toll-fraud controls.
func (v *validator) outbound() {
	o := &v.p.Outbound
	v.numberList("outbound.deny_prefixes", o.DenyPrefixes)
	v.numberList("outbound.premium_prefixes", o.PremiumPrefixes)
	if o.DenyPremium && len(o.PremiumPrefixes) == 0 {
		v.errf("outbound.deny_premium", "deny_premium needs premium_prefixes")
	}
	if o.HomePrefix != "" && (!strings.HasPrefix(o.HomePrefix, "+") || !validNumber(o.HomePrefix, false) || o.HomePrefix == "+") {
		v.errf("outbound.home_prefix", "invalid home prefix %s: \"+\" then the country code, e.g. \"+44\"", quote(o.HomePrefix))
	}
	if o.DenyInternational && o.HomePrefix == "" {
		v.errf("outbound.deny_international", "deny_international needs home_prefix")
	}
	for _, k := range []struct {
		path string
		x    *int
	}{{"outbound.pool_max_calls", &o.PoolMaxCalls}, {"outbound.source_max_calls", &o.SourceMaxCalls},
		{"outbound.pool_max_minutes", &o.PoolMaxMinutes}, {"outbound.source_max_minutes", &o.SourceMaxMinutes}} {
		v.intField(k.path, k.x, 0, 0, 10000000)
	}
	v.duration("outbound.minutes_window", &o.MinutesWindow, DefaultMinutesWindow, true)

	// Carrier pools: every pool an outbound route sends to. Calls from
	// their targets are never routed out again.
	carrier := map[string]bool{}
	for _, r := range v.p.OutboundRoutes {
		for _, n := range r.Pools {
			carrier[n] = true
		}
	}
	type key struct{ src, prefix, hours, days, tz string }
	seen := map[key]string{}
	for i := range v.p.OutboundRoutes {
		r := &v.p.OutboundRoutes[i]
		rp := elemPath("outbound_route", i)
		if !validNumber(r.Prefix, true) {
			v.errf(rp+".prefix", "invalid prefix %s: \"+\" then digits, or digits, at most %d bytes (empty matches any number)", quote(r.Prefix), maxNumberLen)
		}
		if v.ref(rp+".source_pool", "pool", r.SourcePool, false, v.pools) && carrier[r.SourcePool] {
			v.errf(rp+".source_pool", "pool %s is a carrier pool (in the pools of an outbound route): calls from carriers are never routed out, so this route is unreachable", quote(r.SourcePool))
		}
		if r.Strip < 0 || r.Strip > len(r.Prefix) {
			v.errf(rp+".strip", "must be between 0 and the prefix's length %d (got %d)", len(r.Prefix), r.Strip)
		}
		if r.Prepend != "" && !validNumber(r.Prepend, false) {
			v.errf(rp+".prepend", "invalid prepend %s: \"+\" then digits, or digits", quote(r.Prepend))
		}
		if r.FromUser != "" && (!validNumber(r.FromUser, false) || r.FromUser == "+") {
			v.errf(rp+".from_user", "invalid caller-ID %s: \"+\" then digits, or digits", quote(r.FromUser))
		}
		switch r.PAI {
		case "":
			r.PAI = "keep"
		case "keep", "from", "remove":
		default:
			v.errf(rp+".pai", "unknown value %s (want \"keep\", \"from\" or \"remove\")", quote(r.PAI))
		}
		switch r.Privacy {
		case "":
			r.Privacy = "keep"
		case "keep", "id", "none":
		default:
			v.errf(rp+".privacy", "unknown value %s (want \"keep\", \"id\" or \"none\")", quote(r.Privacy))
		}
		if !r.MaxDuration.IsSet() {
			r.MaxDuration = v.p.Calls.MaxDuration
			r.MaxDuration.set = false
		} else {
			v.duration(rp+".max_duration", &r.MaxDuration, 0, false)
		}
		if len(r.Pools) == 0 {
			v.errf(rp+".pools", "at least one carrier pool is required")
		}
		var first *Pool
		for j, n := range r.Pools {
			pp := elemPath(rp+".pools", j)
			if !v.ref(pp, "pool", n, true, v.pools) {
				continue
			}
			if slices.Index(r.Pools, n) != j {
				v.errf(pp, "pool %s is listed twice", quote(n))
				continue
			}
			if n == r.SourcePool {
				v.errf(pp, "pool %s is the route's source pool: a call would go back where it came from", quote(n))
				continue
			}
			pl := &v.p.Pools[v.pools[n]]
			if first == nil {
				first = pl
				continue
			}
			if pl.Realm != first.Realm || pl.MediaEncryption != first.MediaEncryption {
				v.errf(pp, "pool %s (realm %s, media_encryption %s) differs from %s (realm %s, media_encryption %s): the pools of one route share realm and media_encryption (the media relay is set up before the first carrier is tried)",
					quote(n), quote(pl.Realm), quote(pl.MediaEncryption), quote(first.Name), quote(first.Realm), quote(first.MediaEncryption))
			}
		}
		for _, d := range v.p.Outbound.DenyPrefixes {
			if d != "" && strings.HasPrefix(r.Prefix, d) {
				v.errf(rp+".prefix", "unreachable: every number of prefix %s is refused by outbound.deny_prefixes %s", quote(r.Prefix), quote(d))
			}
		}
		v.window(rp, r)
		k := key{r.SourcePool, r.Prefix, r.Hours, strings.Join(r.Days, ","), r.Timezone}
		if prev, dup := seen[k]; dup {
			v.errf(rp, "duplicate outbound route for source_pool %q and prefix %q (first at %s)", r.SourcePool, r.Prefix, v.where(prev))
			continue
		}
		seen[k] = rp
	}
}

func (v *validator) routing() {
	r := &v.p.Routing
	v.ref("routing.default_pool", "pool", r.DefaultPool, false, v.pools)
	v.duration("routing.target_timeout", &r.TargetTimeout, DefaultTargetTimeout, true)
	v.intField("routing.max_attempts", &r.MaxAttempts, DefaultMaxAttempts, 1, 100)
	v.intField("routing.retry_after", &r.RetryAfter, DefaultRetryAfter, 1, 86400)
}

func (v *validator) calls() {
	c := &v.p.Calls
	v.duration("calls.max_duration", &c.MaxDuration, DefaultMaxDuration, false)
	v.duration("calls.inactivity_timeout", &c.InactivityTimeout, DefaultInactivityTimeout, false)
	v.duration("calls.ring_timeout", &c.RingTimeout, DefaultRingTimeout, true)
}

func (v *validator) headers() {
	h := &v.p.Headers
	switch h.UnknownSourceAction {
	case "":
		h.UnknownSourceAction = DefaultUnknownSourceAction
	case "drop", "reject":
	default:
		v.errf("headers.unknown_source_action", "unknown action %s (want \"drop\" or \"reject\")", quote(h.UnknownSourceAction))
	}
	if !v.ix.has("headers.allow") {
		h.Allow = slices.Clone(DefaultAllowedHeaders)
		return
	}
	if h.Allow == nil {
		h.Allow = []string{}
	}
	seen := map[string]string{}
	for i, name := range h.Allow {
		hp := elemPath("headers.allow", i)
		lower := strings.ToLower(name)
		if !validToken(name) {
			v.errf(hp, "invalid header name %s", quote(name))
			continue
		}
		if long, ok := compactHeaders[lower[0]]; ok && len(lower) == 1 {
			v.errf(hp, "%q is the compact form of %s: write the long form", name, long)
			continue
		}
		if g, ok := generatedHeaders[lower]; ok {
			v.errf(hp, "%s is generated by the SBC and never copied between legs", g)
			continue
		}
		if prev, dup := seen[lower]; dup {
			v.errf(hp, "header %s is listed twice (first at %s)", name, v.where(prev))
			continue
		}
		seen[lower] = hp
	}
}

func (v *validator) limits() {
	l := &v.p.Limits
	v.intField("limits.source_pps", &l.SourcePPS, DefaultSourcePPS, 0, 1e7)
	v.intField("limits.source_cps", &l.SourceCPS, DefaultSourceCPS, 0, 1e7)
	v.intField("limits.register_rate", &l.RegisterRate, DefaultRegisterRate, 0, 1e7)
	v.intField("limits.source_pps_burst", &l.SourcePPSBurst, 2*l.SourcePPS, 0, 1e8)
	if l.SourcePPSBurst == 0 && l.SourcePPS > 0 {
		l.SourcePPSBurst = max(1, 2*l.SourcePPS)
	}
	v.intField("limits.trunk_pps", &l.TrunkPPS, DefaultTrunkPPS, 0, 1e7)
	v.intField("limits.trunk_pps_burst", &l.TrunkPPSBurst, 2*l.TrunkPPS, 0, 1e8)
	if l.TrunkPPSBurst == 0 && l.TrunkPPS > 0 {
		l.TrunkPPSBurst = max(1, 2*l.TrunkPPS)
	}
	v.intField("limits.max_sources", &l.MaxSources, DefaultMaxSources, 16, 1e8)
	v.intField("limits.tcp_connections_per_source", &l.TCPConnectionsPerSource, DefaultTCPConnsPerSource, 0, 1e6)
	v.intField("limits.tcp_connections", &l.TCPConnections, DefaultTCPConns, 0, 1e7)
	v.intField("limits.udp_peers", &l.UDPPeers, DefaultUDPPeers, 64, 1e7)
	v.duration("limits.queue_delay", &l.QueueDelay, DefaultQueueDelay, false)
	switch l.OverLimitAction {
	case "":
		l.OverLimitAction = DefaultOverLimitAction
	case "reject", "drop":
	default:
		v.errf("limits.over_limit_action", "unknown action %s (want \"reject\" or \"drop\")", quote(l.OverLimitAction))
	}
}

func (v *validator) autoBlock() {
	a := &v.p.AutoBlock
	if !v.ix.has("autoblock.enabled") {
		a.Enabled = true
	}
	v.intField("autoblock.threshold", &a.Threshold, DefaultBlockThreshold, 1, 1e6)
	v.duration("autoblock.window", &a.Window, DefaultBlockWindow, true)
	v.duration("autoblock.block_for", &a.BlockFor, DefaultBlockFor, true)
	v.duration("autoblock.max_block", &a.MaxBlock, DefaultMaxBlock, true)
	v.duration("autoblock.forget_after", &a.ForgetAfter, DefaultForgetAfter, true)
	v.intField("autoblock.escalation", &a.Escalation, DefaultBlockEscalation, 1, 1000)
	if a.MaxBlock.Duration < a.BlockFor.Duration {
		v.errf("autoblock.max_block", "must be at least block_for (%s)", a.BlockFor.Duration)
	}
	a.NeverBlockPrefixes = nil
	for i, s := range a.NeverBlock {
		pfx, err := parseSource(s)
		if err != nil {
			v.errf(elemPath("autoblock.never_block", i), "invalid prefix %s: want a CIDR or an address", quote(s))
			continue
		}
		a.NeverBlockPrefixes = append(a.NeverBlockPrefixes, pfx)
	}
	for i, ua := range a.ScannerUserAgents {
		if ua == "" || !printableASCII(ua, true) {
			v.errf(elemPath("autoblock.scanner_user_agents", i), "must be non-empty printable ASCII")
		}
	}
	v.intField("autoblock.register_guesses", &a.RegisterGuesses, DefaultRegisterGuesses, 1, 65535)
	v.intField("autoblock.register_source_guesses", &a.RegisterSourceGuesses, DefaultRegisterSrcGuesses, 1, 65535)
	v.duration("autoblock.register_window", &a.RegisterWindow, DefaultRegisterWindow, true)
	v.duration("autoblock.register_lock", &a.RegisterLock, DefaultRegisterLock, true)
	if a.RegisterWindow.Duration > 0 && a.RegisterWindow.Duration < time.Second {
		v.errf("autoblock.register_window", "must be at least 1s (got %s)", a.RegisterWindow.Duration)
	}
	v.intField("autoblock.aggregate_v6", &a.AggregateV6, DefaultAggregateV6, 0, 256)
	if a.AggregateV6 == 1 {
		v.errf("autoblock.aggregate_v6", "must be 0 (off) or at least 2: with 1, every /64 block would widen to a /48")
	}
	v.duration("autoblock.trunk_health_interval", &a.TrunkHealthInterval, DefaultTrunkHealthInterval, false)
	if d := a.TrunkHealthInterval.Duration; d > 0 && d < time.Second {
		v.errf("autoblock.trunk_health_interval", "must be \"0s\" (off) or at least 1s (got %s)", d)
	}
}

func (v *validator) xdp() {
	x := &v.p.XDP
	switch x.Mode {
	case "":
		x.Mode = DefaultXDPMode
	case "auto", "native", "generic":
	default:
		v.errf("xdp.mode", "unknown mode %s (want \"auto\", \"native\" or \"generic\")", quote(x.Mode))
	}
	if x.PinDir == "" {
		x.PinDir = DefaultXDPPinDir
	}
	switch x.Scope {
	case "":
		x.Scope = DefaultXDPScope
	case "sip", "host":
	default:
		v.errf("xdp.scope", "unknown scope %s (want \"sip\" or \"host\")", quote(x.Scope))
	}
	v.intField("xdp.rate_pps", &x.RatePPS, 0, 0, 1e8)
	v.intField("xdp.burst", &x.Burst, 0, 0, 1e8)
	if x.Enabled && len(x.Interfaces) == 0 {
		v.errf("xdp.enabled", "xdp needs interfaces = [\"eth0\", ...]")
	}
	for i, n := range x.Interfaces {
		if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ \t") {
			v.errf(elemPath("xdp.interfaces", i), "invalid interface name %s", quote(n))
		}
	}
}

func (v *validator) nftables() {
	n := &v.p.Nftables
	if n.Table == "" {
		n.Table = DefaultNftTable
	} else if !validName(n.Table) {
		v.errf("nftables.table", "invalid table name %s", quote(n.Table))
	}
	switch len(n.MediaPorts) {
	case 0:
	case 2:
		if n.MediaPorts[0] < 1 || n.MediaPorts[1] > 65535 || n.MediaPorts[0] > n.MediaPorts[1] {
			v.errf("nftables.media_ports", "want [low, high] with 1 <= low <= high <= 65535")
		}
	default:
		v.errf("nftables.media_ports", "want [low, high]")
	}
}

func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// printableASCII reports whether s has only 0x21..0x7e (and spaces if
// spaceOK).
func printableASCII(s string, spaceOK bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x21 || c > 0x7e) && !(spaceOK && c == ' ') {
			return false
		}
	}
	return true
}

// validToken reports whether s is an RFC 3261 token (a header name).
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHostname reports whether s is a DNS name (letters, digits, hyphens;
// labels of 1..63, 253 in all, no trailing dot).
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// listenerTLS checks the TLS and WebSocket settings of a listener.
func (v *validator) listenerTLS(lp string, l *Listener) {
	secure := l.Transport == "tls" || l.Transport == "wss"
	switch {
	case l.TLS == nil && secure:
		v.errf(lp+".transport", "a %s listener needs a [realm.listener.tls] table with cert_file and key_file", l.Transport)
	case l.TLS != nil && !secure:
		v.errf(lp+".tls", "tls settings need transport \"tls\" or \"wss\" (this listener is %q)", l.Transport)
	case l.TLS != nil:
		tp := lp + ".tls"
		t := l.TLS
		v.tlsCommon(tp, t)
		if t.CertFile == "" || t.KeyFile == "" {
			v.errf(tp, "cert_file and key_file are required (the listener's certificate)")
		}
		if t.ServerName != "" {
			v.errf(tp+".server_name", "server_name is a pool setting")
		}
		authOK := true
		switch t.ClientAuth {
		case "":
			t.ClientAuth = "none"
		case "none", "request", "require":
		default:
			authOK = false
			v.errf(tp+".client_auth", "unknown client_auth %s (want \"none\", \"request\" or \"require\")", quote(t.ClientAuth))
		}
		if authOK && t.ClientAuth != "none" && t.CAFile == "" {
			v.errf(tp+".ca_file", "client_auth %q needs ca_file (the CAs client certificates must chain to)", t.ClientAuth)
		}
		for i, h := range t.RevokedSPKI {
			if _, ok := parseSPKI(h); !ok {
				v.errf(elemPath(tp+".revoked_spki", i), "invalid SPKI hash %s: want 64 hex digits (SHA-256 of the SubjectPublicKeyInfo)", quote(h))
			}
		}
	}
	if l.Transport != "wss" {
		if l.Path != "" {
			v.errf(lp+".path", "path is a wss setting")
		}
		if l.Origins != nil {
			v.errf(lp+".origins", "origins is a wss setting")
		}
		return
	}
	if l.Path != "" && !strings.HasPrefix(l.Path, "/") {
		v.errf(lp+".path", "path %s must start with /", quote(l.Path))
	}
	if len(l.Origins) == 0 {
		v.errf(lp+".origins", "a wss listener needs origins: the web origins allowed to connect (e.g. [\"https://app.example.com\"], or [\"*\"] for any)")
	}
	for i, o := range l.Origins {
		if o == "*" || o == "" {
			continue
		}
		if !validOrigin(o) {
			v.errf(elemPath(lp+".origins", i), "invalid origin %s: want scheme://host[:port] as a browser sends it (e.g. \"https://app.example.com\"), \"*\" or \"\"", quote(o))
		}
	}
}

// validOrigin accepts a serialised web origin: http or https, a host, an
// optional port, nothing else.
func validOrigin(o string) bool {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || (scheme != "https" && scheme != "http") || rest == "" {
		return false
	}
	if strings.ContainsAny(rest, "/?#@ ") {
		return false
	}
	host := rest
	if h, p, err := net.SplitHostPort(rest); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	return validHostname(host)
}

// tlsCommon checks what listeners and pools share.
func (v *validator) tlsCommon(tp string, t *TLS) {
	switch t.MinVersion {
	case "", "1.2":
		t.MinVersion, t.Min = "1.2", tls.VersionTLS12
	case "1.3":
		t.Min = tls.VersionTLS13
	default:
		v.errf(tp+".min_version", "unsupported min_version %s (want \"1.2\" or \"1.3\"; nothing older is ever accepted)", quote(t.MinVersion))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.errf(tp, "cert_file and key_file go together")
	}
	v.duration(tp+".handshake_timeout", &t.HandshakeTimeout, DefaultTLSHandshakeTimeout, true)
}

// parseSPKI parses a SHA-256 SPKI hash given as hex (colons allowed).
func parseSPKI(h string) (string, bool) {
	h = strings.ToLower(strings.ReplaceAll(h, ":", ""))
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return "", false
	}
	return h, true
}

// identities parses a trunk's tls_identities.
func (v *validator) identities(tp string, t *Trunk, seen map[TLSIdentity]string) {
	t.Identities = nil
	for j, s := range t.TLSIdentities {
		ip := elemPath(tp+".tls_identities", j)
		kind, val, _ := strings.Cut(s, ":")
		id := TLSIdentity{Kind: kind, Value: val}
		switch kind {
		case "dns":
			if !validHostname(strings.TrimPrefix(val, "*.")) {
				v.errf(ip, "invalid DNS name %s", quote(val))
				continue
			}
			id.Value = strings.ToLower(val)
		case "cn", "uri":
			if val == "" || strings.ContainsFunc(val, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				v.errf(ip, "invalid %s identity %s", kind, quote(val))
				continue
			}
		case "spki":
			h, ok := parseSPKI(val)
			if !ok {
				v.errf(ip, "invalid SPKI hash %s: want 64 hex digits (SHA-256 of the SubjectPublicKeyInfo)", quote(val))
				continue
			}
			id.Value = h
		default:
			v.errf(ip, "invalid identity %s: want \"dns:NAME\", \"uri:URI\", \"cn:NAME\" or \"spki:HEX\"", quote(s))
			continue
		}
		if prev, dup := seen[id]; dup {
			v.errf(ip, "identity %s is also at %s: an identity may belong to one trunk only", quote(id.String()), v.where(prev))
			continue
		}
		seen[id] = ip
		t.Identities = append(t.Identities, id)
	}
}

// media checks [media], each realm's [realm.media] and the trunks' and
// pools' media_encryption.
func (v *validator) media() {
	m := &v.p.Media
	v.duration("media.timeout", &m.Timeout, DefaultMediaTimeout, false)
	v.duration("media.quarantine", &m.Quarantine, DefaultMediaQuarantine, false)
	seen := map[string]bool{}
	for _, name := range m.KernelRelay {
		switch {
		case name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t"):
			v.errf("media.kernel_relay", "invalid interface name %s", quote(name))
		case seen[name]:
			v.errf("media.kernel_relay", "interface %s listed twice", quote(name))
		}
		seen[name] = true
	}
	for i := range v.p.Realms {
		r := &v.p.Realms[i]
		mp := elemPath("realm", i) + ".media"
		rm := &r.Media
		switch {
		case rm.IP != "":
			a, err := netip.ParseAddr(rm.IP)
			if err != nil || a.Zone() != "" {
				v.errf(mp+".ip", "invalid address %s: want an IP literal", quote(rm.IP))
				break
			}
			if a.IsUnspecified() {
				v.errf(mp+".ip", "the unspecified address %s cannot be the relay's: give the address the peers send media to", a)
				break
			}
			rm.Addr = a.Unmap()
		case len(r.Listeners) > 0 && r.Listeners[0].BindAddr.IsValid():
			rm.Addr = r.Listeners[0].BindAddr.Addr()
			if rm.Addr.IsUnspecified() && v.p.Media.Anchored() {
				v.errf(mp, "realm %s listens on %s: set [realm.media] ip, the address media is relayed on", quote(r.Name), rm.Addr)
			}
		}
		rm.AdvertiseAddr = rm.Addr
		if rm.Advertise != "" {
			a, err := netip.ParseAddr(rm.Advertise)
			if err != nil || a.Zone() != "" || a.IsUnspecified() {
				v.errf(mp+".advertise", "invalid address %s: want an IP literal (it goes into SDP c= lines)", quote(rm.Advertise))
			} else {
				rm.AdvertiseAddr = a.Unmap()
			}
		}
		rm.Min, rm.Max = DefaultMediaPortMin, DefaultMediaPortMax
		if rm.Ports != nil {
			if len(rm.Ports) != 2 || rm.Ports[0] < 1024 || rm.Ports[1] > 65535 || rm.Ports[0] >= rm.Ports[1] {
				v.errf(mp+".ports", "want [min, max] with 1024 <= min < max <= 65535 (got %v)", rm.Ports)
			} else {
				rm.Min, rm.Max = rm.Ports[0], rm.Ports[1]
			}
		}
	}
	enc := func(path string, val *string, def string, allowed ...string) {
		if *val == "" {
			*val = def
			return
		}
		want := make([]string, len(allowed))
		for i, a := range allowed {
			want[i] = quote(a)
		}
		if !slices.Contains(allowed, *val) {
			v.errf(path, "unknown media_encryption %s (want %s)", quote(*val), strings.Join(want, ", "))
		}
	}
	// WebRTC peers (a pool over wss, a trunk reached only over wss) take
	// DTLS-SRTP only (RFC 8827 forbids SDES; browsers refuse plain RTP):
	// another profile would fail every call, so it is refused here.
	anchored := v.p.Media.Anchored()
	for i := range v.p.Trunks {
		t := &v.p.Trunks[i]
		tp := elemPath("trunk", i)
		enc(tp+".media_encryption", &t.MediaEncryption, "any", "any", "none", "sdes", "dtls")
		if t.MediaRequired && t.MediaEncryption != "sdes" && t.MediaEncryption != "dtls" {
			v.errf(tp+".media_required", "media_required needs media_encryption \"sdes\" or \"dtls\" (what is required)")
		}
		if anchored && len(t.Transports) == 1 && t.Transports[0] == "wss" && (t.MediaEncryption == "none" || t.MediaEncryption == "sdes") {
			v.errf(tp+".media_encryption", "a trunk reached only over wss is WebRTC, whose peers offer DTLS-SRTP only (no SDES, RFC 8827; no plain RTP): media_encryption %s would refuse every call; use \"dtls\" or \"any\"", quote(t.MediaEncryption))
		}
	}
	for i := range v.p.Pools {
		pl := &v.p.Pools[i]
		pp := elemPath("pool", i) + ".media_encryption"
		def := "none"
		if pl.Transport == "wss" {
			def = "dtls" // WebRTC
		}
		enc(pp, &pl.MediaEncryption, def, "none", "sdes", "dtls", "any")
		if anchored && pl.Transport == "wss" && pl.MediaEncryption != "dtls" {
			v.errf(pp, "a pool over wss reaches WebRTC peers, which take DTLS-SRTP only (no SDES, RFC 8827; no plain RTP): media_encryption must be \"dtls\" (its default there), not %s", quote(pl.MediaEncryption))
		}
	}
	v.refer()
}

// ReferModes are the values of trunk and pool refer: what the SBC does
// with a REFER the trunk or the pool's targets send inside a call.
var ReferModes = []string{"relay", "local", "refuse"}

// refer validates trunk and pool refer (default "relay").
func (v *validator) refer() {
	check := func(path string, val *string) {
		if *val == "" {
			*val = "relay"
			return
		}
		if !slices.Contains(ReferModes, *val) {
			v.errf(path, "unknown refer %s (want \"relay\", \"local\" or \"refuse\")", quote(*val))
		}
	}
	for i := range v.p.Trunks {
		check(elemPath("trunk", i)+".refer", &v.p.Trunks[i].Refer)
	}
	for i := range v.p.Pools {
		check(elemPath("pool", i)+".refer", &v.p.Pools[i].Refer)
	}
}
