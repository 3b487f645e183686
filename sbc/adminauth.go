package sbc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
)

// Authentication and authorisation of the admin API.
//
// A request passes, in this order: the listener (a blocked source's
// connection is closed at accept; over HTTPS the client certificate, if
// any, is verified at the handshake), the Host check (DNS rebinding), the
// per-client rate limit, the route's checks (cross-origin requests that
// change something are refused, bodies must be JSON and are bounded), the
// credentials (client certificate or API key → principal), and the role
// the route declares (adminRoutes). Every failed authentication is an
// auth_failure event, a count in sbc_admin_auth_failures_total and, when
// it was a guess (a wrong key or certificate, not a missing one), a
// failure charged to its source like a SIP failure (trust.go's charge:
// trunks, pool targets and clients that authenticated before are never
// blocked). A client that authenticates joins the learnt peers: never
// blocked.

// Roles. admin may do everything; operator includes read; audit is apart.
const (
	roleAdmin    = "admin"
	roleOperator = "operator"
	roleRead     = "read"
	roleAudit    = "audit"
	rolePublic   = "" // no authentication (/metrics, /healthz)
)

// principal is who made a request: a certificate or a key, and its roles.
type principal struct {
	name  string // "cert:<CN or SAN>" or "key:<id>"
	roles []string
}

// may reports whether the principal may use a route of role r.
func (p *principal) may(r string) bool {
	for _, have := range p.roles {
		switch {
		case have == roleAdmin, have == r:
			return true
		case have == roleOperator && r == roleRead:
			return true
		}
	}
	return false
}

// Reasons of failed authentication: the reason label of
// sbc_admin_auth_failures_total and of auth_failure events.
const (
	authNoCredentials = "no_credentials" // neither a client certificate with roles nor an Authorization header (not charged)
	authMalformedKey  = "malformed_key"  // an Authorization header that is not "Bearer sbc_<id>_<secret>"
	authUnknownKey    = "unknown_key"    // a well-formed key whose id is not known
	authWrongKey      = "wrong_key"      // a known key id with the wrong secret
	authCertInvalid   = "cert_invalid"   // a client certificate refused at the handshake (missing where required, expired, unknown CA, revoked)
	authCertNoRole    = "cert_no_role"   // a verified client certificate that client_roles gives no role, and no key
)

// adminAuthReasons is every value of that label.
var adminAuthReasons = []string{authNoCredentials, authMalformedKey, authUnknownKey, authWrongKey, authCertInvalid, authCertNoRole}

// Results of admin requests: the result label of sbc_admin_requests_total.
const (
	adminOK              = "ok"               // the route's handler answered (any status it chose)
	adminUnauthenticated = "unauthenticated"  // 401
	adminForbidden       = "forbidden"        // 403: the principal's roles do not include the route's
	adminRateLimited     = "rate_limited"     // 429: the client is over admin.rate
	adminCrossOrigin     = "cross_origin"     // 403: a cross-origin request that changes something
	adminBadHost         = "bad_host"         // 421: a Host that is no IP literal, localhost or admin.hosts name
	adminBadContentType  = "bad_content_type" // 415: a body that is not application/json
	adminTooLarge        = "too_large"        // 413: a body over the route's bound
)

var adminResults = []string{adminOK, adminUnauthenticated, adminForbidden, adminRateLimited, adminCrossOrigin, adminBadHost, adminBadContentType, adminTooLarge}

// failAdminAuth is a failed authentication on the admin API.
const failAdminAuth failure = ratelimit.ReasonAdminAuth

type ctxKey int

const principalKey ctxKey = 1

func principalOf(r *http.Request) *principal {
	p, _ := r.Context().Value(principalKey).(*principal)
	return p
}

// adminGuard holds the admin API's per-listener state.
type adminGuard struct {
	s    *SBC
	keys keyStore
	lim  atomic.Pointer[adminLimiter]
	cop  sync.Map // *snapshot → *http.CrossOriginProtection
}

type adminLimiter struct {
	rate, burst int
	l           *ratelimit.Limiter
}

// limiter is the per-client limiter of the policy in force (rebuilt when
// rate or burst change); nil when unlimited.
func (g *adminGuard) limiter(a *policy.Admin) *ratelimit.Limiter {
	if a.Rate <= 0 {
		return nil
	}
	cur := g.lim.Load()
	if cur != nil && cur.rate == a.Rate && cur.burst == a.Burst {
		return cur.l
	}
	l, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Source: ratelimit.Limit{Rate: float64(a.Rate), Burst: a.Burst}, MaxSources: 4096})
	if err != nil {
		return nil
	}
	g.lim.Store(&adminLimiter{rate: a.Rate, burst: a.Burst, l: l})
	return l
}

// crossOrigin is the cross-origin protection of a snapshot's policy.
func (g *adminGuard) crossOrigin(st *snapshot) *http.CrossOriginProtection {
	if v, ok := g.cop.Load(st); ok {
		return v.(*http.CrossOriginProtection)
	}
	c := http.NewCrossOriginProtection()
	for _, o := range st.pol.Admin.Origins {
		_ = c.AddTrustedOrigin(o) // validated
	}
	g.cop.Clear() // one snapshot in force at a time
	g.cop.Store(st, c)
	return c
}

func clientAddr(r *http.Request) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// hostAllowed is the DNS rebinding defence: the Host header must be an IP
// literal, "localhost" or a name of admin.hosts.
func hostAllowed(host string, a *policy.Admin) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	return h == "localhost" || slices.ContainsFunc(a.Hosts, func(x string) bool { return strings.EqualFold(x, h) })
}

// front is the handler of every request before the mux: Host and rate.
func (g *adminGuard) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := g.s
		a := &s.state.Load().pol.Admin
		if !hostAllowed(r.Host, a) {
			s.metrics.AdminRequests.WithLabelValues(adminBadHost).Inc()
			adminError(w, http.StatusMisdirectedRequest, "Host "+strconv.Quote(truncate(r.Host))+" is not served here (admin.hosts)")
			return
		}
		// /healthz and /metrics are for probes and scrapers that come
		// often: they do not use up a client's budget.
		if r.URL.Path != "/healthz" && r.URL.Path != "/metrics" {
			if l := g.limiter(a); l != nil {
				src := clientAddr(r)
				if ok, wait := l.Check(ratelimit.SourceKey(src.Addr()), time.Now(), 1, 1); !ok {
					s.metrics.AdminRequests.WithLabelValues(adminRateLimited).Inc()
					w.Header().Set("Retry-After", strconv.Itoa(max(ratelimit.RetryAfterSeconds(wait), 1)))
					adminError(w, http.StatusTooManyRequests, "too many requests (admin.rate)")
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// guard wraps a route's handler with its checks and its role.
func (g *adminGuard) guard(rt *adminRoute) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := g.s
		if rt.role == rolePublic {
			rt.h(s, w, r)
			return
		}
		st := s.state.Load()
		if err := g.crossOrigin(st).Check(r); err != nil {
			s.metrics.AdminRequests.WithLabelValues(adminCrossOrigin).Inc()
			adminError(w, http.StatusForbidden, "cross-origin request refused (admin.origins)")
			return
		}
		if hasBody(r) {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if mt != "application/json" {
				s.metrics.AdminRequests.WithLabelValues(adminBadContentType).Inc()
				adminError(w, http.StatusUnsupportedMediaType, "bodies must be JSON (Content-Type: application/json)")
				return
			}
		}
		limit := rt.maxBody
		if limit == 0 {
			limit = 64 << 10
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		src := clientAddr(r)
		p, why, detail := g.authenticate(st, r)
		if p == nil {
			g.authFailed(src, why, detail, r)
			s.metrics.AdminRequests.WithLabelValues(adminUnauthenticated).Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="sbc"`)
			adminError(w, http.StatusUnauthorized, "authentication required: a client certificate with a role, or Authorization: Bearer <API key>")
			return
		}
		s.def.learn(src.Addr(), "") // authenticated: never blocked
		if !p.may(rt.role) {
			s.metrics.AdminRequests.WithLabelValues(adminForbidden).Inc()
			adminError(w, http.StatusForbidden, "role "+rt.role+" required; "+p.name+" has "+strings.Join(p.roles, ", "))
			return
		}
		// The body is read here, whole and bounded, before the handler
		// (which may not read a body at all): one over the bound, declared
		// or sent chunked, changes nothing on any route. Only a principal
		// with the route's role gets this far.
		if hasBody(r) {
			var body []byte
			var err error
			if r.ContentLength > limit {
				err = &http.MaxBytesError{Limit: limit} // declared: not read
			} else {
				body, err = io.ReadAll(r.Body) // r.Body: MaxBytesReader(limit)
			}
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
				s.metrics.AdminRequests.WithLabelValues(adminTooLarge).Inc()
				adminError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", limit))
				return
			case err != nil:
				adminError(w, http.StatusBadRequest, "body: "+err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		s.metrics.AdminRequests.WithLabelValues(adminOK).Inc()
		sw := &statusWriter{ResponseWriter: w}
		rt.h(s, sw, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
		if r.Method != http.MethodGet && r.Method != http.MethodHead && sw.status() < 400 && rt.role != rolePublic {
			s.emit(events.Event{Kind: events.AdminAction, Actor: p.name, SourceIP: src.Addr().String(), Reason: rt.pattern,
				Detail: map[string]string{"method": r.Method, "path": truncate(r.URL.Path), "status": strconv.Itoa(sw.status())}})
			s.log.Info("admin action", "actor", p.name, "source", src.Addr().String(), "route", rt.pattern, "path", r.URL.Path, "status", sw.status())
		}
	})
}

func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.Header.Get("Content-Type") != ""
}

// authenticate finds the principal of a request: its verified client
// certificate if client_roles gives it roles, else its API key. Without
// one, why says what failed and detail what may be told of it (a key's
// id, never the key).
func (g *adminGuard) authenticate(st *snapshot, r *http.Request) (p *principal, why, detail string) {
	a := &st.pol.Admin
	var certName string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// Verified at the handshake (adminTLSConfig).
		c := r.TLS.PeerCertificates[0]
		if name, roles := certRoles(c, a.ClientRoles); len(roles) > 0 {
			return &principal{name: "cert:" + name, roles: roles}, "", ""
		}
		certName = certLabel(c)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		if certName != "" {
			return nil, authCertNoRole, certName
		}
		return nil, authNoCredentials, ""
	}
	scheme, key, _ := strings.Cut(h, " ")
	key = strings.TrimSpace(key)
	id, ok := parseAPIKey(key)
	if !strings.EqualFold(scheme, "Bearer") || !ok {
		return nil, authMalformedKey, ""
	}
	hash := HashAPIKey(key)
	for _, k := range a.APIKeys {
		if k.ID == id {
			if hashEqual(k.SHA256, hash) {
				return &principal{name: "key:" + id, roles: k.Roles}, "", ""
			}
			return nil, authWrongKey, "key " + id
		}
	}
	sk, found, err := g.keys.lookup(a.KeysPath, id, time.Now())
	if err != nil {
		g.s.log.Warn("admin: the API key store cannot be read; using the keys last read", "file", a.KeysPath, "error", err.Error())
	}
	if !found {
		return nil, authUnknownKey, "key " + id
	}
	if !hashEqual(sk.SHA256, hash) {
		return nil, authWrongKey, "key " + id
	}
	return &principal{name: "key:" + id, roles: sk.Roles}, "", ""
}

// certRoles gives the roles client_roles maps a certificate to (the union
// of every entry that names it) and the name it was known by.
func certRoles(c *x509.Certificate, crs []policy.ClientRole) (name string, roles []string) {
	for _, cr := range crs {
		var match string
		switch {
		case cr.CN != "" && c.Subject.CommonName == cr.CN:
			match = "cn=" + cr.CN
		case cr.DNS != "" && slices.ContainsFunc(c.DNSNames, func(d string) bool { return strings.EqualFold(d, cr.DNS) }):
			match = "dns=" + strings.ToLower(cr.DNS)
		case cr.URI != "" && slices.ContainsFunc(c.URIs, func(u *url.URL) bool { return u.String() == cr.URI }):
			match = "uri=" + cr.URI
		default:
			continue
		}
		if name == "" {
			name = match
		}
		for _, r := range cr.Roles {
			if !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	return name, roles
}

// certLabel names a certificate in logs and events.
func certLabel(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "cn=" + truncate(c.Subject.CommonName)
	}
	return "spki=" + spkiSHA256(c)[:16]
}

// authFailed reports a failed authentication: event, metric, log line
// and, for a guess, a failure charged to the source.
func (g *adminGuard) authFailed(src netip.AddrPort, why, detail string, r *http.Request) {
	s := g.s
	s.metrics.AdminAuthFailures.WithLabelValues(why).Inc()
	ev := events.Event{Kind: events.AuthFailure, SourceIP: src.Addr().String(), Reason: why,
		Detail: map[string]string{"service": "admin"}}
	if detail != "" {
		ev.Detail["credential"] = detail
	}
	if r != nil {
		ev.UserAgent = truncate(r.UserAgent())
		ev.Detail["path"] = truncate(r.URL.Path)
	}
	s.emit(ev)
	if why == authNoCredentials {
		return
	}
	if s.def.logLimit.Allow() {
		s.log.Warn("admin: authentication failed", "source", src.Addr().String(), "reason", why, "credential", detail)
	}
	s.charge(peer{src: src}, failAdminAuth)
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// adminTLS is the admin listener's TLS material from one snapshot.
type adminTLS struct {
	cfg     *policy.TLS
	cert    *certEntry
	ca      *caEntry
	revoked map[string]bool
}

// adminTLSConfig is the listener's tls.Config: each handshake takes its
// certificate, CA and client_auth from the snapshot in force (reloads and
// file changes apply to new connections). A client certificate is
// verified here; one that fails is an authentication failure.
func (s *SBC) adminTLSConfig(g *adminGuard) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			at := s.state.Load().tls.admin
			if at == nil {
				return nil, errors.New("admin: no TLS settings in force")
			}
			src, _ := netip.ParseAddrPort(hi.Conn.RemoteAddr().String())
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			cfg := &tls.Config{MinVersion: at.cfg.Min, Certificates: []tls.Certificate{*at.cert.cur.Load()}}
			if at.cfg.ClientAuth == "none" {
				return cfg, nil
			}
			// "require" is enforced below, where a missing certificate is
			// counted too (crypto/tls would refuse it before any callback).
			cfg.ClientAuth = tls.RequestClientCert
			cfg.SessionTicketsDisabled = true // every connection shows its certificate
			cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					if at.cfg.ClientAuth == "require" {
						g.authFailed(src, authCertInvalid, "no certificate", nil)
						return errors.New("client certificate required")
					}
					return nil
				}
				leaf, err := verifyChain(raw, at.ca.cur.Load(), x509.ExtKeyUsageClientAuth, "")
				if err == nil && at.revoked[spkiSHA256(leaf)] {
					err = &certError{reasonCertRevoked, errors.New("client certificate revoked (revoked_spki)")}
				}
				if err != nil {
					detail := "certificate"
					var ce *certError
					if errors.As(err, &ce) {
						detail = string(ce.r)
					}
					g.authFailed(src, authCertInvalid, detail, nil)
					return err
				}
				return nil
			}
			return cfg, nil
		},
	}
}

// adminListener closes the connections of blocked sources at accept,
// but those of clients that authenticated before (learnt peers): a
// forced block over an operator's own address must not lock the operator
// out of the API that can lift it.
type adminListener struct {
	net.Listener
	s *SBC
}

func (l adminListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		a := ap.Addr().Unmap()
		if _, learnt := l.s.def.peers.has(a); !learnt && l.s.def.blocklist.Blocked(a) {
			l.s.drop(stageAdmin, reasonBlocked)
			c.Close()
			continue
		}
		return c, nil
	}
}
