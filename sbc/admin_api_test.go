package sbc

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/internal/certgen"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// roleKeys makes one API key per role and the api_keys TOML line that
// gives them.
func roleKeys(t *testing.T) (keys map[string]string, toml string) {
	t.Helper()
	keys = map[string]string{}
	var entries []string
	for _, r := range []string{roleAdmin, roleOperator, roleRead, roleAudit} {
		k, sk, err := NewAPIKey([]string{r}, "")
		if err != nil {
			t.Fatal(err)
		}
		keys[r] = k
		entries = append(entries, fmt.Sprintf("{ id = %q, sha256 = %q, roles = [%q] }", sk.ID, sk.SHA256, r))
	}
	return keys, "plain_http = true\nrate = 0\napi_keys = [" + strings.Join(entries, ", ") + "]\n"
}

// recorder collects the events the SBC emits.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Emit(e events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) of(k events.Kind) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.evs {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// The roles each endpoint needs, as issue 10 gives them: admin may do
// everything; operator hangs up, blocks and unblocks, drains (trunks,
// targets, the node) and reads; read sees status, calls, trunks, pools,
// blocklist, policy version; audit reads the audit log and CDRs. The
// route table must say the same (a route missing here fails the test).
var wantRouteRoles = map[string]string{
	"GET /debug/pprof/": roleAdmin, "GET /debug/pprof/{profile}": roleAdmin,
	"GET /healthz":   rolePublic,
	"GET /metrics":   rolePublic,
	"GET /readyz":    roleRead,
	"GET /v1/status": roleRead, "GET /v1/version": roleRead,
	"GET /v1/calls": roleRead, "GET /v1/calls/{id}": roleRead, "DELETE /v1/calls/{id}": roleOperator,
	"GET /v1/trunks": roleRead, "POST /v1/trunks/{name}/disable": roleOperator, "POST /v1/trunks/{name}/enable": roleOperator,
	"GET /v1/pools": roleRead, "POST /v1/pools/{pool}/targets/{target}/drain": roleOperator,
	"POST /v1/pools/{pool}/targets/{target}/undrain": roleOperator,
	"GET /v1/blocklist": roleRead, "POST /v1/blocklist": roleOperator, "DELETE /v1/blocklist": roleOperator,
	"GET /v1/blocklist/test": roleRead,
	"GET /v1/policy":         roleRead, "POST /v1/policy/validate": roleAdmin, "POST /v1/policy/reload": roleAdmin,
	"GET /v1/drain": roleRead, "POST /v1/drain": roleOperator, "DELETE /v1/drain": roleOperator,
	"GET /v1/log-level": roleRead, "PUT /v1/log-level": roleAdmin,
	"GET /v1/audit": roleAudit, "GET /v1/cdrs": roleAudit,
}

// allowed is the role model: admin everything, operator also read.
func allowed(have, need string) bool {
	return need == rolePublic || have == roleAdmin || have == need || (have == roleOperator && need == roleRead)
}

// concrete turns a route pattern into a request path.
func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	r := strings.NewReplacer("{id}", "0123abcd", "{name}", "carrier", "{profile}", "heap", "{pool}", "pbx", "{target}", "127.0.0.9:5060")
	path = r.Replace(path)
	switch path {
	case "/v1/blocklist/test":
		path += "?addr=192.0.2.1"
	case "/v1/blocklist":
		if method == http.MethodDelete {
			path += "?prefix=192.0.2.200"
		}
	}
	return method, path
}

// The whole matrix: every role × every endpoint, plus anonymous. Public
// endpoints answer everyone; the others 401 without credentials, 403 to
// a role without the endpoint's, and reach the handler otherwise.
func TestAdminRBACMatrix(t *testing.T) {
	keys, adminTOML := roleKeys(t)
	e := newEnv(t, envOpts{admin: true, edit: func(p *testpolicy.Policy) { p.AdminTOML = adminTOML }})
	base := "http://" + e.sbc.AdminAddr().String()
	if len(adminRoutes) != len(wantRouteRoles) {
		t.Errorf("%d routes, %d in wantRouteRoles", len(adminRoutes), len(wantRouteRoles))
	}
	for _, rt := range adminRoutes {
		need, ok := wantRouteRoles[rt.pattern]
		if !ok || need != rt.role {
			t.Errorf("%s: role %q, want %q (listed: %v)", rt.pattern, rt.role, need, ok)
		}
	}
	for _, rt := range adminRoutes {
		method, path := concrete(rt.pattern)
		body := ""
		if method != http.MethodGet && method != http.MethodDelete {
			body = "{}"
		}
		for _, who := range []string{"", roleAdmin, roleOperator, roleRead, roleAudit} {
			res, err := adminDoKey(keys[who], method, base+path, body)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			got := res.StatusCode
			switch {
			case rt.role == rolePublic:
				if got != http.StatusOK {
					t.Errorf("%s as %q: %d, want 200 (public)", rt.pattern, who, got)
				}
			case who == "":
				if got != http.StatusUnauthorized || res.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s anonymous: %d, want 401 with WWW-Authenticate", rt.pattern, got)
				}
			case allowed(who, rt.role):
				if got == http.StatusUnauthorized || got == http.StatusForbidden {
					t.Errorf("%s as %s: %d %s, want the handler's answer", rt.pattern, who, got, b)
				}
			default:
				if got != http.StatusForbidden {
					t.Errorf("%s as %s: %d, want 403", rt.pattern, who, got)
				}
			}
		}
	}
	// A 405 for a method no route has, after the checks.
	if res, err := adminDo(http.MethodPatch, base+"/v1/status", ""); err != nil || res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PATCH /v1/status: %v %v, want 405", res.StatusCode, err)
	}
}

// A browser page cannot change anything: a cross-origin request is
// refused even with valid credentials (a browser sends a client
// certificate by itself), a text/plain or form body is refused, and a
// Host that is not the listener's (DNS rebinding) is refused. Nothing
// reaches the blocklist.
func TestAdminBrowserCrossOriginRefused(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	base := "http://" + e.sbc.AdminAddr().String()
	send := func(ct, origin, site, host, body string) int {
		t.Helper()
		r, _ := http.NewRequest(http.MethodPost, base+"/v1/blocklist", strings.NewReader(body))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		if host != "" {
			r.Host = host
		}
		r.Header.Set("Authorization", "Bearer "+testpolicy.AdminKey)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	block := `{"prefix":"::/0","force":true}`
	for _, c := range []struct {
		name                   string
		ct, origin, site, host string
		want                   int
	}{
		{"cross-site fetch", "application/json", "http://evil.example", "cross-site", "", http.StatusForbidden},
		{"cross-origin, no fetch metadata", "application/json", "http://evil.example", "", "", http.StatusForbidden},
		{"text/plain form post", "text/plain", "", "", "", http.StatusUnsupportedMediaType},
		{"urlencoded form", "application/x-www-form-urlencoded", "", "", "", http.StatusUnsupportedMediaType},
		{"no content type", "", "", "", "", http.StatusUnsupportedMediaType},
		{"DNS rebinding", "application/json", "", "", "evil.example:9090", http.StatusMisdirectedRequest},
	} {
		if got := send(c.ct, c.origin, c.site, c.host, block); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if n := len(e.sbc.def.blocklist.List()); n != 0 {
		t.Fatalf("blocklist has %d entries after refused requests", n)
	}
	for _, r := range []string{adminCrossOrigin, adminBadContentType, adminBadHost} {
		if testutil.ToFloat64(e.sbc.metrics.AdminRequests.WithLabelValues(r)) == 0 {
			t.Errorf("sbc_admin_requests_total{result=%q} not counted", r)
		}
	}
	// The same request from the same origin, as JSON, passes the checks
	// (and is refused by the blocklist's own guard: ::/0 covers trunks).
	if got := send("application/json", "http://"+e.sbc.AdminAddr().String(), "same-origin", "", `{"prefix":"::/0"}`); got != http.StatusCreated && got != http.StatusConflict {
		t.Errorf("same-origin JSON: %d", got)
	}
}

// Failed authentications are events, counted, logged without the key,
// and charged to their source: repeated guesses block it, and its next
// connection is closed at accept. A request without credentials is not a
// guess (not charged), and a client that authenticated before is never
// blocked.
func TestAdminAuthFailuresBlockSource(t *testing.T) {
	var logBuf syncBuffer
	rec := &recorder{}
	e := newEnv(t, envOpts{admin: true, autoBlock: &testpolicy.AutoBlock{Threshold: 3},
		log: slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.sbc.events.Set(rec)
	base := "http://" + e.sbc.AdminAddr().String() + "/v1/status"
	from := func(ip string) *http.Client {
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}}
	}
	get := func(cl *http.Client, key string) (int, error) {
		r, _ := http.NewRequest(http.MethodGet, base, nil)
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := cl.Do(r)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	wrong, _, _ := NewAPIKey([]string{roleAdmin}, "")
	// A guess of the test key's secret: its id is known.
	guess := testpolicy.AdminKey[:len(testpolicy.AdminKey)-4] + "AAAA"

	// Anonymous requests: 401, counted, not charged.
	anon := from("127.0.0.67")
	for range 5 {
		if code, err := get(anon, ""); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("anonymous: %d %v", code, err)
		}
	}
	if e.sbc.def.blocklist.Blocked(netip.MustParseAddr("127.0.0.67")) {
		t.Fatal("requests without credentials blocked their source")
	}

	attacker := from(strangerIP)
	// More than autoblock.threshold (3) failures block.
	for i, k := range []string{wrong, guess, "sbc_not_a_key", wrong} {
		if code, err := get(attacker, k); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d %v, want 401", i, code, err)
		}
	}
	e.eventually("the guesser blocked", func() bool { return e.sbc.def.blocklist.Blocked(netip.MustParseAddr(strangerIP)) })
	if _, err := get(attacker, testpolicy.AdminKey); err == nil {
		t.Fatal("a blocked source still served, even with the right key")
	}
	if e.dropped("admin", "blocked") < 1 {
		t.Error("admin/blocked drop not counted")
	}
	for r, want := range map[string]float64{authNoCredentials: 5, authUnknownKey: 2, authWrongKey: 1, authMalformedKey: 1} {
		if got := testutil.ToFloat64(e.sbc.metrics.AdminAuthFailures.WithLabelValues(r)); got != want {
			t.Errorf("sbc_admin_auth_failures_total{reason=%q} = %v, want %v", r, got, want)
		}
	}
	fails := rec.of(events.AuthFailure)
	if len(fails) != 9 {
		t.Errorf("%d auth_failure events, want 9", len(fails))
	}
	sawID := false
	for _, ev := range fails {
		if ev.SourceIP == "" || ev.Reason == "" || ev.Detail["service"] != "admin" {
			t.Errorf("event lacks source, reason or service: %+v", ev)
		}
		if ev.Detail["credential"] == "key "+testpolicy.AdminKeyID {
			sawID = true
		}
	}
	if !sawID {
		t.Error("no event names the guessed key's id")
	}

	// A client that authenticated is never blocked by its later failures.
	ops := from("127.0.0.68")
	if code, err := get(ops, testpolicy.AdminKey); err != nil || code != http.StatusOK {
		t.Fatalf("operator: %d %v", code, err)
	}
	for range 5 {
		get(ops, wrong)
	}
	if e.sbc.def.blocklist.Blocked(netip.MustParseAddr("127.0.0.68")) {
		t.Fatal("an authenticated client was blocked")
	}
	// Keys never appear in logs or events (their ids may).
	all, _ := json.Marshal(rec.evs)
	for _, secret := range []string{wrong, guess, testpolicy.AdminKey} {
		s := secret[len(secret)-20:]
		if strings.Contains(logBuf.String(), s) || bytes.Contains(all, []byte(s)) {
			t.Errorf("a key's secret is in the logs or events")
		}
	}
}

// Keys made by "sbc admin key create" land in the key store as hashes
// only; the SBC takes them without a reload, and drops revoked ones.
func TestAdminKeyStoreFile(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOpts{admin: true, stateDir: dir})
	url := "http://" + e.sbc.AdminAddr().String() + "/v1/status"
	key, sk, err := NewAPIKey([]string{roleRead}, "monitoring")
	if err != nil {
		t.Fatal(err)
	}
	status := func() int {
		res, err := adminDoKey(key, http.MethodGet, url, "")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := status(); got != http.StatusUnauthorized {
		t.Fatalf("before the key exists: %d", got)
	}
	path := filepath.Join(dir, "admin_keys.json")
	if err := UpdateKeyFile(path, func(ks []StoredKey) ([]StoredKey, error) { return append(ks, sk), nil }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	secret := key[len(keyPrefix)+17:]
	if strings.Contains(string(b), secret) || !strings.Contains(string(b), HashAPIKey(key)) {
		t.Fatalf("key store holds the key or lacks its hash:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key store mode %v, want 0600", fi.Mode().Perm())
	}
	e.eventually("the new key taken", func() bool { return status() == http.StatusOK })
	if err := UpdateKeyFile(path, func(ks []StoredKey) ([]StoredKey, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	e.eventually("the revoked key refused", func() bool { return status() == http.StatusUnauthorized })
}

// Over HTTPS, verified client certificates get the roles client_roles
// gives their CN, SAN DNS name or SAN URI; a certificate without a role
// is refused (401), one of another CA fails the handshake, counted as an
// authentication failure. With client_auth "require" a client without a
// certificate cannot even connect.
func TestAdminClientCertificateRoles(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("admin CA", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certgen.LeafOptions{CN: "sbc", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsServer: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(dir, "sbc"); err != nil {
		t.Fatal(err)
	}
	spiffe, _ := url.Parse("spiffe://ops.example/noc")
	leaf := func(ca *certgen.CA, o certgen.LeafOptions) tls.Certificate {
		o.IsClient = true
		l, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return l.TLSCertificate()
	}
	monitoring := leaf(ca, certgen.LeafOptions{CN: "monitoring"})
	noc := leaf(ca, certgen.LeafOptions{CN: "noc-7", URIs: []*url.URL{spiffe}})
	nobody := leaf(ca, certgen.LeafOptions{CN: "nobody"})
	other, _ := certgen.NewCA("other CA", time.Time{}, time.Time{})
	forged := leaf(other, certgen.LeafOptions{CN: "monitoring"})

	for _, mode := range []string{"request", "require"} {
		t.Run(mode, func(t *testing.T) {
			adminTOML := fmt.Sprintf(`rate = 0
client_roles = [{ cn = "monitoring", roles = ["read"] }, { uri = %q, roles = ["operator"] }]
api_keys = [{ id = %q, sha256 = %q, roles = ["admin"] }]
[admin.tls]
cert_file = %q
key_file = %q
ca_file = %q
client_auth = %q
`, spiffe.String(), testpolicy.AdminKeyID, testpolicy.AdminKeyHash(), filepath.Join(dir, "sbc.pem"), filepath.Join(dir, "sbc-key.pem"), filepath.Join(dir, "ca.pem"), mode)
			e := newEnv(t, envOpts{admin: true, edit: func(p *testpolicy.Policy) { p.AdminTOML = adminTOML }})
			base := "https://" + e.sbc.AdminAddr().String()
			do := func(cert *tls.Certificate, method, path, body string) (int, error) {
				cfg := &tls.Config{RootCAs: ca.Pool()}
				if cert != nil {
					cfg.Certificates = []tls.Certificate{*cert}
				}
				cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
				var rd io.Reader
				if body != "" {
					rd = strings.NewReader(body)
				}
				r, _ := http.NewRequest(method, base+path, rd)
				if body != "" {
					r.Header.Set("Content-Type", "application/json")
				}
				res, err := cl.Do(r)
				if err != nil {
					return 0, err
				}
				res.Body.Close()
				return res.StatusCode, nil
			}
			if code, err := do(&monitoring, http.MethodGet, "/v1/status", ""); err != nil || code != http.StatusOK {
				t.Errorf("monitoring reads status: %d %v", code, err)
			}
			if code, err := do(&monitoring, http.MethodPost, "/v1/drain", "{}"); err != nil || code != http.StatusForbidden {
				t.Errorf("monitoring drains: %d %v, want 403", code, err)
			}
			if code, err := do(&noc, http.MethodPost, "/v1/trunks/carrier/disable", "{}"); err != nil || code != http.StatusOK {
				t.Errorf("noc (SAN URI) disables a trunk: %d %v", code, err)
			}
			if code, err := do(&nobody, http.MethodGet, "/v1/status", ""); err != nil || code != http.StatusUnauthorized {
				t.Errorf("a certificate without a role: %d %v, want 401", code, err)
			}
			if _, err := do(&forged, http.MethodGet, "/v1/status", ""); err == nil {
				t.Error("a certificate of another CA was served")
			}
			_, err := do(nil, http.MethodGet, "/healthz", "")
			if mode == "require" && err == nil {
				t.Error("client_auth require: served a client without a certificate")
			}
			if mode == "request" && err != nil {
				t.Errorf("client_auth request: /healthz without a certificate: %v", err)
			}
			m := e.sbc.metrics.AdminAuthFailures
			if testutil.ToFloat64(m.WithLabelValues(authCertNoRole)) != 1 {
				t.Error("cert_no_role not counted once")
			}
			e.eventually("cert_invalid counted", func() bool {
				want := 1.0
				if mode == "require" {
					want = 2
				}
				return testutil.ToFloat64(m.WithLabelValues(authCertInvalid)) == want
			})
		})
	}
}

// A node drain: new calls get 503 with Retry-After, the call in progress
// goes on, and is hung up at the deadline; undrain takes calls again.
func TestAdminDrainNode(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	base := "http://" + e.sbc.AdminAddr().String()
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("call before the drain: %d", res.StatusCode)
	}
	r, err := adminDo(http.MethodPost, base+"/v1/drain", `{"deadline":"1h"}`)
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("drain: %v %v", r, err)
	}
	var di DrainInfo
	json.NewDecoder(r.Body).Decode(&di)
	r.Body.Close()
	if !di.Draining || di.Calls != 1 || di.State == nil {
		t.Fatalf("drain answer %+v", di)
	}
	_, res = e.dial(sipua.DialOptions{})
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("a new call while draining: %d, want 503 with Retry-After", res.StatusCode)
	}
	if e.dropped("admit", "draining") != 1 {
		t.Error("admit/draining not counted")
	}
	if rd, err := adminDo(http.MethodGet, base+"/readyz", ""); err != nil || rd.StatusCode != 503 {
		t.Errorf("/readyz while draining: %v %v, want 503", rd.StatusCode, err)
	}
	select {
	case <-call.Ended():
		t.Fatal("the call in progress ended when the drain began")
	default:
	}
	// A short deadline now: the call left is hung up.
	if r, err := adminDo(http.MethodPost, base+"/v1/drain", `{"deadline":"50ms"}`); err != nil || r.StatusCode != 200 {
		t.Fatalf("drain again: %v", err)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the call outlived the drain's deadline")
	}
	if r, err := adminDo(http.MethodDelete, base+"/v1/drain", ""); err != nil || r.StatusCode != 200 {
		t.Fatalf("undrain: %v", err)
	}
	c2, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("a call after the drain: %d", res.StatusCode)
	}
	c2.Bye(e.ctx)
}

// Calls: list (with filters), one call with both legs, hang up.
func TestAdminCallsListShowHangup(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	base := "http://" + e.sbc.AdminAddr().String()
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	getJSON := func(path string, v any) int {
		t.Helper()
		r, err := adminDo(http.MethodGet, base+path, "")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if r.StatusCode == 200 {
			if err := json.NewDecoder(r.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return r.StatusCode
	}
	var list []CallInfo
	if getJSON("/v1/calls?trunk=carrier&state=answered", &list); len(list) != 1 || list[0].Trunk != "carrier" || list[0].A.CallID != call.CallID() {
		t.Fatalf("calls: %+v", list)
	}
	if getJSON("/v1/calls?trunk=other", &list); len(list) != 0 {
		t.Fatalf("filter trunk=other: %+v", list)
	}
	if getJSON("/v1/calls?source=192.0.2.0/24", &list); len(list) != 0 {
		t.Fatalf("filter by another source: %+v", list)
	}
	var one CallInfo
	if code := getJSON("/v1/calls/"+list0(t, e, base).ID, &one); code != 200 || one.B == nil || one.B.CallID == one.A.CallID || one.State != "answered" {
		t.Fatalf("one call: %d %+v", code, one)
	}
	if one.A.Peer == "" || one.B.Peer == "" || one.Pool != "pbx" {
		t.Errorf("legs: %+v", one)
	}
	r, err := adminDo(http.MethodDelete, base+"/v1/calls/"+one.ID, "")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("hang up: %v %v", r, err)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the caller got no BYE")
	}
	if call.EndedBy() != sipua.Remote {
		t.Errorf("ended by %v, want the SBC (remote)", call.EndedBy())
	}
	if code := getJSON("/v1/calls/"+one.ID, &one); code != http.StatusNotFound {
		t.Errorf("the call after hang-up: %d, want 404", code)
	}
}

func list0(t *testing.T, e *env, base string) CallInfo {
	t.Helper()
	r, err := adminDo(http.MethodGet, base+"/v1/calls", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var l []CallInfo
	json.NewDecoder(r.Body).Decode(&l)
	if len(l) == 0 {
		t.Fatal("no call listed")
	}
	return l[0]
}

// Trunks and pools: a disabled trunk's calls are refused (503), a
// drained target takes no new call; both undone.
func TestAdminTrunkDisableAndTargetDrain(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	rec := &recorder{}
	e.sbc.events.Set(rec)
	base := "http://" + e.sbc.AdminAddr().String()
	post := func(path string) {
		t.Helper()
		r, err := adminDo(http.MethodPost, base+path, "")
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", path, r, err)
		}
		r.Body.Close()
	}
	post("/v1/trunks/carrier/disable")
	if _, res := e.dial(sipua.DialOptions{}); res.StatusCode != 503 {
		t.Fatalf("call of a disabled trunk: %d", res.StatusCode)
	}
	if e.dropped("admit", "trunk_disabled") != 1 {
		t.Error("admit/trunk_disabled not counted")
	}
	r, _ := adminDo(http.MethodGet, base+"/v1/trunks", "")
	var trunks []TrunkInfo
	json.NewDecoder(r.Body).Decode(&trunks)
	r.Body.Close()
	if len(trunks) != 1 || trunks[0].Enabled {
		t.Fatalf("trunks: %+v", trunks)
	}
	post("/v1/trunks/carrier/enable")
	// Each change is an admin_action event naming who made it.
	acts := rec.of(events.AdminAction)
	if len(acts) != 2 || acts[0].Actor != "key:"+testpolicy.AdminKeyID || acts[0].Reason != "POST /v1/trunks/{name}/disable" ||
		acts[0].Detail["path"] != "/v1/trunks/carrier/disable" || acts[0].SourceIP != "127.0.0.1" {
		t.Errorf("admin_action events: %+v", acts)
	}
	target := e.backends[0].Addr()
	post("/v1/pools/pbx/targets/" + target + "/drain")
	if _, res := e.dial(sipua.DialOptions{}); res.StatusCode != 503 {
		t.Fatalf("call with the only target drained: %d", res.StatusCode)
	}
	r, _ = adminDo(http.MethodGet, base+"/v1/pools", "")
	var pools []PoolInfo
	json.NewDecoder(r.Body).Decode(&pools)
	r.Body.Close()
	if len(pools) != 1 || len(pools[0].Targets) != 1 || !pools[0].Targets[0].Drained {
		t.Fatalf("pools: %+v", pools)
	}
	post("/v1/pools/pbx/targets/" + target + "/undrain")
	c, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("call after undrain: %d", res.StatusCode)
	}
	r, _ = adminDo(http.MethodGet, base+"/v1/trunks", "")
	json.NewDecoder(r.Body).Decode(&trunks)
	r.Body.Close()
	if trunks[0].Calls != 1 || !trunks[0].Enabled {
		t.Errorf("trunk after a call: %+v", trunks[0])
	}
	c.Bye(e.ctx)
}

// Policy: validate a candidate (errors with positions, restart-only
// changes named), show the version in force; log level; blocklist test.
func TestAdminPolicyLogLevelAndAddressTest(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	base := "http://" + e.sbc.AdminAddr().String()
	call := func(method, path, body string, v any) int {
		t.Helper()
		r, err := adminDo(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if v != nil {
			json.NewDecoder(r.Body).Decode(v)
		}
		return r.StatusCode
	}
	var ap appliedPolicy
	if call(http.MethodGet, "/v1/policy", "", &ap); ap.Digest != e.pol.Digest || len(ap.Digest) != 64 {
		t.Fatalf("policy in force: %+v, want digest %s", ap, e.pol.Digest)
	}
	var v PolicyVerdict
	bad, _ := json.Marshal(PolicyCandidate{Policy: "[server]\nlog_level = \"loud\"\n"})
	if code := call(http.MethodPost, "/v1/policy/validate", string(bad), &v); code != 422 || v.Valid || !strings.Contains(strings.Join(v.Errors, "\n"), "candidate.toml:2:13: server.log_level") {
		t.Fatalf("bad candidate: %d %+v", code, v)
	}
	cand := e.pb.Clone()
	cand.Server.UDPReadBuffer = 1 << 23
	good, _ := json.Marshal(PolicyCandidate{Policy: cand.TOML()})
	if code := call(http.MethodPost, "/v1/policy/validate", string(good), &v); code != 200 || !v.Valid || len(v.RestartRequired) != 1 || !strings.HasPrefix(v.RestartRequired[0], "server.udp_read_buffer") {
		t.Fatalf("good candidate: %d %+v", code, v)
	}
	var ll LogLevel
	if code := call(http.MethodPut, "/v1/log-level", `{"level":"warn"}`, &ll); code != 200 || e.sbc.reload.level.Level() != slog.LevelWarn {
		t.Fatalf("set log level: %d %+v", code, ll)
	}
	if code := call(http.MethodPut, "/v1/log-level", `{"level":"loud"}`, nil); code != 400 {
		t.Errorf("bad level: %d", code)
	}
	var at AddressTest
	call(http.MethodGet, "/v1/blocklist/test?addr="+callerIP, "", &at)
	if at.Blocked || at.Trunk != "carrier" || at.NeverBlock == "" || at.FailureRisk {
		t.Errorf("the trunk's address: %+v", at)
	}
	if code := call(http.MethodPost, "/v1/blocklist", `{"prefix":"192.0.2.0/24","reason":"test"}`, nil); code != 201 {
		t.Fatalf("block: %d", code)
	}
	call(http.MethodGet, "/v1/blocklist/test?addr=192.0.2.7", "", &at)
	if !at.Blocked || at.Entry == nil || at.Entry.Prefix.String() != "192.0.2.0/24" || !at.FailureRisk || at.DataPlane == "" {
		t.Errorf("a blocked address: %+v", at)
	}
	if code := call(http.MethodGet, "/v1/blocklist/test?addr=nope", "", nil); code != 400 {
		t.Errorf("bad address: %d", code)
	}
}

// The per-client rate limit answers 429 with Retry-After.
func TestAdminRateLimit(t *testing.T) {
	e := newEnv(t, envOpts{admin: true, edit: func(p *testpolicy.Policy) {
		p.AdminTOML = "plain_http = true\nrate = 1\nburst = 2\napi_keys = [{ id = \"" + testpolicy.AdminKeyID + "\", sha256 = \"" + testpolicy.AdminKeyHash() + "\", roles = [\"read\"] }]\n"
	}})
	base := "http://" + e.sbc.AdminAddr().String()
	got429 := false
	for i := 0; i < 10 && !got429; i++ {
		r, err := adminDo(http.MethodGet, base+"/v1/status", "")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode == http.StatusTooManyRequests {
			got429 = r.Header.Get("Retry-After") != ""
		}
	}
	if !got429 {
		t.Fatal("10 requests at once with rate 1, burst 2: no 429 with Retry-After")
	}
	// Probes and scrapers are not limited.
	for range 5 {
		r, err := http.Get(base + "/metrics")
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("/metrics: %v %v", r, err)
		}
		r.Body.Close()
	}
}

// POST /v1/policy/reload reloads the file in force, as SIGHUP does: a
// valid change is in force (new digest), an invalid one is refused with
// its reason and changes nothing.
func TestAdminPolicyReload(t *testing.T) {
	pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":9")
	pb.Admin = "127.0.0.1:0"
	file := filepath.Join(t.TempDir(), "sbc.toml")
	if err := os.WriteFile(file, []byte(pb.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s := startSBC(t, p, Options{Logger: testLogger()})
	url := "http://" + s.AdminAddr().String() + "/v1/policy/reload"
	pb.Server.UserAgent = "Reloaded"
	if err := os.WriteFile(file, []byte(pb.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := adminDo(http.MethodPost, url, "")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("reload: %v %v", r, err)
	}
	var ap appliedPolicy
	json.NewDecoder(r.Body).Decode(&ap)
	r.Body.Close()
	if ap.Digest == p.Digest || s.Policy().Server.UserAgent != "Reloaded" || ap.Digest != s.Policy().Digest {
		t.Fatalf("after the reload: %+v, user agent %q", ap, s.Policy().Server.UserAgent)
	}
	if err := os.WriteFile(file, []byte("[server]\nlog_level = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = adminDo(http.MethodPost, url, "")
	if err != nil || r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("reload of a bad file: %v %v, want 422", r, err)
	}
	var ae APIError
	json.NewDecoder(r.Body).Decode(&ae)
	r.Body.Close()
	if !strings.Contains(ae.Error, "log_level") || s.Policy().Server.UserAgent != "Reloaded" {
		t.Fatalf("bad reload: %q, policy changed: %q", ae.Error, s.Policy().Server.UserAgent)
	}
}

// /debug/pprof serves Go's runtime profiles to the admin role only: a
// heap profile in pprof's gzipped format, goroutines as text.
func TestAdminPprof(t *testing.T) {
	keys, adminTOML := roleKeys(t)
	e := newEnv(t, envOpts{admin: true, edit: func(p *testpolicy.Policy) { p.AdminTOML = adminTOML }})
	base := "http://" + e.sbc.AdminAddr().String()
	get := func(who, path string) (int, []byte) {
		t.Helper()
		res, err := adminDoKey(keys[who], http.MethodGet, base+path, "")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	if code, b := get(roleAdmin, "/debug/pprof/heap?gc=1"); code != http.StatusOK || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("heap profile as admin: %d, %d bytes, want 200 and a gzipped profile", code, len(b))
	}
	if code, b := get(roleAdmin, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(string(b), "goroutine profile:") {
		t.Fatalf("goroutines as admin: %d %.80q", code, b)
	}
	if code, b := get(roleAdmin, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(string(b), "heap") {
		t.Fatalf("index as admin: %d %.80q", code, b)
	}
	if code, _ := get(roleAdmin, "/debug/pprof/nosuch"); code != http.StatusNotFound {
		t.Fatalf("unknown profile: %d, want 404", code)
	}
	for _, who := range []string{roleOperator, roleRead, roleAudit} {
		if code, _ := get(who, "/debug/pprof/heap"); code != http.StatusForbidden {
			t.Fatalf("heap profile as %s: %d, want 403", who, code)
		}
	}
}

// The shipped policy (sbc.example.toml, embedded: what "sbc run" runs
// without a file) requires authentication on the admin API for every
// endpoint but /metrics and /healthz. The policy is used exactly as
// shipped; only the admin listener is opened on a free port instead of
// 127.0.0.1:9090 (the SBC is not started: its SIP listeners would take
// the example's fixed ports). Then the way README gives the first key
// (sbc admin key create: the example's keys_file, ./sbc-admin-keys.json)
// opens the API. One request per route: the example's admin.rate (20/s,
// burst 40) lets the walk through; a 429 here means the table outgrew it.
func TestShippedPolicyAdminRequiresAuth(t *testing.T) {
	t.Chdir(t.TempDir()) // the example's keys_file is relative to the working directory
	p := policy.Default()
	if p.Source != policy.EmbeddedSource {
		t.Fatalf("policy.Default() source %q", p.Source)
	}
	s, err := New(p, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a := p.Admin
	if a.Listen == "" {
		t.Fatal("the shipped policy has no admin listener")
	}
	a.Listen = "127.0.0.1:0"
	as, err := s.startAdmin(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.close)
	base := "http://" + as.ln.Addr().String()
	do := func(key, pattern string) int {
		t.Helper()
		method, path := concrete(pattern)
		body := ""
		if method == http.MethodPost || method == http.MethodPut {
			body = "{}"
		}
		res, err := adminDoKey(key, method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusUnauthorized && res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", pattern)
		}
		return res.StatusCode
	}
	public := map[string]bool{"GET /healthz": true, "GET /metrics": true}
	seen := 0
	for _, rt := range adminRoutes {
		got := do("", rt.pattern)
		switch {
		case public[rt.pattern]:
			seen++
			if got != http.StatusOK {
				t.Errorf("%s anonymous: %d, want 200", rt.pattern, got)
			}
		case got != http.StatusUnauthorized:
			t.Errorf("%s anonymous: %d, want 401", rt.pattern, got)
		}
	}
	if seen != len(public) {
		t.Errorf("%d of the public routes in the route table, want %d", seen, len(public))
	}
	// The first key, as README says: written to the example's keys_file.
	key, sk, err := NewAPIKey([]string{roleAdmin}, "first")
	if err != nil {
		t.Fatal(err)
	}
	if p.Admin.KeysPath == "" {
		t.Fatal("the shipped policy has no key store")
	}
	if err := UpdateKeyFile(p.Admin.KeysPath, func(ks []StoredKey) ([]StoredKey, error) { return append(ks, sk), nil }); err != nil {
		t.Fatal(err)
	}
	if got := do(key, "GET /v1/status"); got != http.StatusOK {
		t.Errorf("GET /v1/status with the first key: %d, want 200", got)
	}
}

// Request bodies are bounded: 64 KiB, and for a policy candidate the
// largest policy file (policy.MaxFileSize) plus 64 KiB of JSON. A body
// over its route's bound is refused with 413 before the handler, on every
// route, and changes nothing: with a Content-Length over it or sent
// chunked, whether the JSON itself is too long or a short JSON value is
// followed by more bytes. A body under the bound is taken.
func TestAdminBodyLimits(t *testing.T) {
	e := newEnv(t, envOpts{admin: true})
	base := "http://" + e.sbc.AdminAddr().String()
	send := func(method, path, body string, chunked bool) (int, string) {
		t.Helper()
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // unknown length: sent chunked
		}
		r, err := http.NewRequest(method, base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+testpolicy.AdminKey)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b)
	}
	const small = 64 << 10
	pad := func(n int) string { return strings.Repeat(" ", n) }
	blocked := func(a string) bool { return e.sbc.def.blocklist.Blocked(netip.MustParseAddr(a)) }
	for _, tc := range []struct {
		name, method, path, body string
		applied                  func() bool
	}{
		{"block, long reason", http.MethodPost, "/v1/blocklist",
			`{"prefix":"192.0.2.71","reason":"` + strings.Repeat("x", small) + `"}`, func() bool { return blocked("192.0.2.71") }},
		{"block, trailing bytes", http.MethodPost, "/v1/blocklist",
			`{"prefix":"192.0.2.72"}` + pad(small), func() bool { return blocked("192.0.2.72") }},
		{"log level", http.MethodPut, "/v1/log-level",
			`{"level":"error"}` + pad(small), func() bool { return e.sbc.reload.level.Level() == slog.LevelError }},
		{"drain", http.MethodPost, "/v1/drain",
			`{"deadline":"1m"}` + pad(small), func() bool { return e.sbc.runtime.drain.Load() != nil }},
		{"trunk disable", http.MethodPost, "/v1/trunks/carrier/disable",
			`{}` + pad(small), func() bool { return e.sbc.runtime.trunkDisabled("carrier") }},
		{"policy candidate", http.MethodPost, "/v1/policy/validate",
			`{"policy":"` + strings.Repeat("#", policy.MaxFileSize+small) + `"}`, func() bool { return false }},
	} {
		for _, chunked := range []bool{false, true} {
			tooLarge := testutil.ToFloat64(e.sbc.metrics.AdminRequests.WithLabelValues(adminTooLarge))
			code, msg := send(tc.method, tc.path, tc.body, chunked)
			if code != http.StatusRequestEntityTooLarge {
				t.Errorf("%s (chunked %v): %d %.200s, want 413", tc.name, chunked, code, msg)
			}
			if tc.applied() {
				t.Fatalf("%s (chunked %v): applied although refused", tc.name, chunked)
			}
			if got := testutil.ToFloat64(e.sbc.metrics.AdminRequests.WithLabelValues(adminTooLarge)); got != tooLarge+1 {
				t.Errorf("%s (chunked %v): sbc_admin_requests_total{result=too_large} %v, want %v", tc.name, chunked, got, tooLarge+1)
			}
		}
	}
	// Under the bounds: taken. Another value after the JSON one: 400.
	if code, msg := send(http.MethodPost, "/v1/blocklist", `{"prefix":"192.0.2.73"}`+pad(small-100), true); code != http.StatusCreated || !blocked("192.0.2.73") {
		t.Errorf("block under 64 KiB: %d %s", code, msg)
	}
	if code, msg := send(http.MethodPost, "/v1/blocklist", `{"prefix":"192.0.2.74"} {"prefix":"192.0.2.75"}`, false); code != http.StatusBadRequest || blocked("192.0.2.74") || blocked("192.0.2.75") {
		t.Errorf("two JSON values: %d %s, want 400 and nothing blocked", code, msg)
	}
	// A policy candidate of 2 MiB (comments): over 1 MiB, under the bound.
	cand, _ := json.Marshal(PolicyCandidate{Policy: strings.Repeat("# padding\n", 2<<20/10) + e.toml})
	if code, msg := send(http.MethodPost, "/v1/policy/validate", string(cand), false); code != http.StatusOK {
		t.Errorf("a 2 MiB policy candidate: %d %.300s, want 200", code, msg)
	}
}
