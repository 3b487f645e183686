package sbc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"

	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin API: JSON over HTTPS (or plain HTTP on loopback when the
// policy says so), every route with the role it needs (adminRoutes), the
// authentication and checks of adminauth.go in front. docs/openapi.yaml
// describes the same routes; admin_openapi_test.go keeps the two in step.

// adminRoute is one endpoint: a Go 1.22 ServeMux pattern, the role it
// needs (rolePublic: none), its largest body, and its handler.
type adminRoute struct {
	pattern string
	role    string
	maxBody int64 // 0: 64 KiB
	h       func(s *SBC, w http.ResponseWriter, r *http.Request)
}

// adminRoutes is the admin API. Every endpoint is here, with its role.
var adminRoutes = []adminRoute{
	{pattern: "GET /healthz", role: rolePublic, h: (*SBC).handleHealthz},
	{pattern: "GET /metrics", role: rolePublic, h: (*SBC).handleMetrics},
	{pattern: "GET /readyz", role: roleRead, h: (*SBC).handleReady},
	{pattern: "GET /v1/status", role: roleRead, h: (*SBC).handleStatus},
	{pattern: "GET /v1/version", role: roleRead, h: (*SBC).handleVersion},

	{pattern: "GET /v1/calls", role: roleRead, h: (*SBC).handleCalls},
	{pattern: "GET /v1/calls/{id}", role: roleRead, h: (*SBC).handleCall},
	{pattern: "DELETE /v1/calls/{id}", role: roleOperator, h: (*SBC).handleHangup},

	{pattern: "GET /v1/trunks", role: roleRead, h: (*SBC).handleTrunks},
	{pattern: "POST /v1/trunks/{name}/disable", role: roleOperator, h: (*SBC).handleTrunkDisable},
	{pattern: "POST /v1/trunks/{name}/enable", role: roleOperator, h: (*SBC).handleTrunkEnable},
	{pattern: "GET /v1/pools", role: roleRead, h: (*SBC).handlePools},
	{pattern: "POST /v1/pools/{pool}/targets/{target}/drain", role: roleOperator, h: (*SBC).handleTargetDrain},
	{pattern: "POST /v1/pools/{pool}/targets/{target}/undrain", role: roleOperator, h: (*SBC).handleTargetUndrain},

	{pattern: "GET /v1/blocklist", role: roleRead, h: (*SBC).handleBlocklistList},
	{pattern: "POST /v1/blocklist", role: roleOperator, h: (*SBC).handleBlocklistAdd},
	{pattern: "DELETE /v1/blocklist", role: roleOperator, h: (*SBC).handleBlocklistDel},
	{pattern: "GET /v1/blocklist/test", role: roleRead, h: (*SBC).handleBlocklistTest},

	{pattern: "GET /v1/policy", role: roleRead, h: (*SBC).handlePolicy},
	{pattern: "POST /v1/policy/validate", role: roleAdmin, maxBody: policy.MaxFileSize + 64<<10, h: (*SBC).handlePolicyValidate},
	{pattern: "POST /v1/policy/reload", role: roleAdmin, h: (*SBC).handlePolicyReload},

	{pattern: "GET /v1/drain", role: roleRead, h: (*SBC).handleDrainGet},
	{pattern: "POST /v1/drain", role: roleOperator, h: (*SBC).handleDrainStart},
	{pattern: "DELETE /v1/drain", role: roleOperator, h: (*SBC).handleDrainStop},

	{pattern: "GET /v1/log-level", role: roleRead, h: (*SBC).handleLogLevelGet},
	{pattern: "PUT /v1/log-level", role: roleAdmin, h: (*SBC).handleLogLevelSet},

	{pattern: "GET /v1/audit", role: roleAudit, h: (*SBC).handleAuditRead},
	{pattern: "GET /v1/cdrs", role: roleAudit, h: (*SBC).handleCDRRead},

	{pattern: "GET /debug/pprof/", role: roleAdmin, h: (*SBC).handlePprof},
	{pattern: "GET /debug/pprof/{profile}", role: roleAdmin, h: (*SBC).handlePprof},
}

// handlePprof serves Go's runtime profiles (net/http/pprof) behind the
// admin role: the index, the named profiles (heap, allocs, goroutine,
// block, mutex, threadcreate; ?debug=1 for text, ?gc=1 for a heap after a
// collection), a CPU profile (profile?seconds=N, N under the listener's
// 60 s write timeout), an execution trace (trace?seconds=N), symbol and
// cmdline.
func (s *SBC) handlePprof(w http.ResponseWriter, r *http.Request) {
	switch r.PathValue("profile") {
	case "":
		pprof.Index(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	default:
		pprof.Handler(r.PathValue("profile")).ServeHTTP(w, r)
	}
}

// adminServer is the admin listener.
type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

// adminMux builds the handler of the admin API.
func (s *SBC) adminMux(g *adminGuard) http.Handler {
	mux := http.NewServeMux()
	for i := range adminRoutes {
		mux.Handle(adminRoutes[i].pattern, g.guard(&adminRoutes[i]))
	}
	return g.front(mux)
}

func (s *SBC) startAdmin(a policy.Admin) (*adminServer, error) {
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return nil, err
	}
	g := &adminGuard{s: s}
	var l net.Listener = adminListener{Listener: ln, s: s}
	scheme := "http"
	if a.TLS != nil {
		l = tls.NewListener(l, s.adminTLSConfig(g))
		scheme = "https"
	}
	srv := &http.Server{
		Handler:           s.adminMux(g),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	as := &adminServer{ln: ln, srv: srv}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "error", err)
		}
	}()
	s.log.Info("admin API listening", "address", ln.Addr().String(), "scheme", scheme)
	return as, nil
}

func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// APIError is the body of every error answer of the admin API.
type APIError struct {
	Error string `json:"error"`
}

func adminError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, code, APIError{Error: msg})
}

// decodeBody reads a JSON body strictly into v; an empty body leaves v.
// The body is one JSON value and nothing after it but white space (400
// otherwise). The guard has read it whole and bounded (413 beyond: it
// never reaches here).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr == nil {
			err = errors.New("data after the JSON value")
		} else if !errors.Is(terr, io.EOF) {
			err = terr
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		adminError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func (s *SBC) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("ok\n"))
}

func (s *SBC) handleMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// PoolReadiness is one pool in the answer of /readyz.
type PoolReadiness struct {
	Targets int `json:"targets"`
	Up      int `json:"up"` // targets up, not drained and of weight > 0
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready    bool                     `json:"ready"`
	Draining bool                     `json:"draining,omitempty"`
	Down     []string                 `json:"pools_down,omitempty"` // pools with no target up, sorted
	Pools    map[string]PoolReadiness `json:"pools"`
}

// handleReady is readiness: 200 when every pool has at least one target
// that can take calls (up by its health checks, not drained, weight > 0)
// and the node is not draining, else 503. Targets count as up until their
// health checks say otherwise.
func (s *SBC) handleReady(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	rd := Readiness{Pools: make(map[string]PoolReadiness, len(st.pools)), Draining: s.runtime.drain.Load() != nil}
	for name, pl := range st.pools {
		pr := PoolReadiness{Targets: len(pl.targets)}
		for i, t := range pl.targets {
			if pl.weights[i] > 0 && t.isUp() && !t.drained.Load() {
				pr.Up++
			}
		}
		rd.Pools[name] = pr
		if pr.Up == 0 {
			rd.Down = append(rd.Down, name)
		}
	}
	slices.Sort(rd.Down)
	rd.Ready = len(rd.Down) == 0 && !rd.Draining
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

// Status is the body of /v1/status.
type Status struct {
	Version  string         `json:"version"`
	Calls    int            `json:"calls"`
	Policy   appliedPolicy  `json:"policy"`
	Draining *drainState    `json:"draining,omitempty"`
	Realms   map[string]int `json:"realms"` // listeners per realm
	LogLevel string         `json:"log_level"`
}

func (s *SBC) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := Status{Version: s.versionString(), Calls: s.calls.len(), Policy: *s.runtime.applied.Load(),
		Draining: s.runtime.drain.Load(), Realms: map[string]int{}, LogLevel: levelName(s.reload.level.Level())}
	for name, ep := range s.realms {
		st.Realms[name] = len(ep.laddr)
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *SBC) versionString() string {
	if s.version != "" {
		return s.version
	}
	return "(unknown)"
}

func (s *SBC) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.versionString(), "go": runtime.Version()})
}

// BlockRequest is the body of POST /v1/blocklist.
type BlockRequest struct {
	Prefix string `json:"prefix"`
	Reason string `json:"reason"`
	TTL    string `json:"ttl"` // Go duration; empty: until removed
	// Force blocks a prefix that overlaps the never-block list (a trunk
	// that may not register, a pool target, an admin client, never_block);
	// without it such a block is refused with 409 naming what it covers.
	Force bool `json:"force,omitempty"`
}

func (s *SBC) handleBlocklistList(w http.ResponseWriter, r *http.Request) {
	list := s.def.blocklist.List()
	if list == nil {
		list = []acl.Entry{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *SBC) handleBlocklistDel(w http.ResponseWriter, r *http.Request) {
	bl := s.def.blocklist
	pfx, err := acl.ParsePrefix(r.URL.Query().Get("prefix"))
	if err != nil {
		adminError(w, http.StatusBadRequest, "prefix: "+err.Error())
		return
	}
	if !bl.Remove(pfx) {
		adminError(w, http.StatusNotFound, "no entry for "+pfx.String())
		return
	}
	s.log.Info("blocklist entry removed", "prefix", pfx.String(), "by", actor(r))
	if err := bl.Persist(); err != nil {
		s.log.Error("blocklist not saved after a manual removal", "prefix", pfx.String(), "error", err.Error())
		adminError(w, http.StatusInternalServerError, fmt.Sprintf("removed %s, but the blocklist could not be saved (the entry comes back after a restart): %v", pfx, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": pfx.String()})
}

// actor names the principal of a request in log lines.
func actor(r *http.Request) string {
	if p := principalOf(r); p != nil {
		return p.name
	}
	return "admin"
}

// handleBlocklistAdd adds a manual entry, with the same guards as the
// CLI: a prefix overlapping the never-block list is refused unless forced.
func (s *SBC) handleBlocklistAdd(w http.ResponseWriter, r *http.Request) {
	bl := s.def.blocklist
	var req BlockRequest
	if !decodeBody(w, r, &req) {
		return
	}
	pfx, err := acl.ParsePrefix(req.Prefix)
	if err != nil {
		adminError(w, http.StatusBadRequest, "prefix: "+err.Error())
		return
	}
	now := time.Now()
	e := acl.Entry{Prefix: pfx, Reason: req.Reason, Origin: acl.OriginManual, Created: now, Forced: req.Force}
	if e.Reason == "" {
		e.Reason = "manual"
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			adminError(w, http.StatusBadRequest, "ttl: want a positive duration such as \"10m\"")
			return
		}
		e.Expires = now.Add(d)
	}
	if err := bl.Add(e); err != nil {
		code := http.StatusBadRequest
		msg := err.Error()
		switch {
		case errors.Is(err, acl.ErrFull):
			code = http.StatusInsufficientStorage
		case errors.Is(err, acl.ErrNeverBlock):
			code = http.StatusConflict
			msg = fmt.Sprintf("refused: %s covers %s, which is never blocked; to block it anyway, add it with force (sbc block add -force)",
				pfx, s.protectedBy(pfx))
		}
		adminError(w, code, msg)
		return
	}
	// The entry keeps the operator's free text; the metric's label is
	// a closed set, so every manual block counts as reason "manual".
	s.metrics.Blocks.WithLabelValues(blockOriginManual, blockReasonManual).Inc()
	expires := "never"
	if !e.Expires.IsZero() {
		expires = e.Expires.UTC().Format(time.RFC3339)
	}
	s.log.Info("blocklist entry added", "prefix", pfx.String(), "reason", e.Reason, "expires", expires, "by", actor(r), "forced", e.Forced)
	if err := bl.Persist(); err != nil {
		s.log.Error("blocklist not saved after a manual block", "prefix", pfx.String(), "error", err.Error())
		adminError(w, http.StatusInternalServerError, fmt.Sprintf("blocked %s, but the blocklist could not be saved (the block is lost at a restart): %v", pfx, err))
		return
	}
	got, _ := bl.Get(pfx)
	writeJSON(w, http.StatusCreated, got)
}

// AddressTest is the answer of GET /v1/blocklist/test.
type AddressTest struct {
	Address     string     `json:"address"`
	Blocked     bool       `json:"blocked"`
	Entry       *acl.Entry `json:"entry,omitempty"`         // the entry that blocks it
	NeverBlock  string     `json:"never_blocked,omitempty"` // what protects it from blocks, if anything
	Trunk       string     `json:"trunk,omitempty"`         // the trunk its address belongs to
	DataPlane   string     `json:"data_plane"`              // where a block of it is enforced: xdp, nftables or userspace
	FailureRisk bool       `json:"chargeable"`              // failures from it can block it (no trunk, target or learnt peer)
}

func (s *SBC) handleBlocklistTest(w http.ResponseWriter, r *http.Request) {
	a, err := netip.ParseAddr(r.URL.Query().Get("addr"))
	if err != nil {
		adminError(w, http.StatusBadRequest, "addr: want an IP address")
		return
	}
	a = a.Unmap()
	st := s.state.Load()
	out := AddressTest{Address: a.String(), DataPlane: s.dataPlane()}
	if e, ok := s.def.blocklist.Match(a); ok {
		out.Blocked, out.Entry = true, &e
	}
	out.NeverBlock = s.protectedBy(netip.PrefixFrom(a, a.BitLen()))
	if name, ok := st.trunks.Lookup(a); ok {
		out.Trunk = name
	}
	_, learnt := s.def.peers.has(a)
	out.FailureRisk = out.Trunk == "" && !st.backends[a] && !learnt && out.NeverBlock == ""
	writeJSON(w, http.StatusOK, out)
}

// dataPlane names where blocks are enforced.
func (s *SBC) dataPlane() string {
	if s.fast != nil && s.fast.path != "" {
		return s.fast.path
	}
	return "userspace"
}

// CallLeg is one leg of a call in the admin API.
type CallLeg struct {
	CallID    string `json:"call_id"`
	Peer      string `json:"peer"`
	Transport string `json:"transport"`
	LocalTag  string `json:"local_tag"`
	RemoteTag string `json:"remote_tag,omitempty"`
}

// CallMediaLeg is one leg's media counters of a stream.
type CallMediaLeg struct {
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	RTCP      uint64 `json:"rtcp_packets"`
	Forwarded uint64 `json:"forwarded"`
	Dropped   uint64 `json:"dropped"`
}

// CallStream is one media stream of a call: what came in on each leg.
type CallStream struct {
	A CallMediaLeg `json:"a"`
	B CallMediaLeg `json:"b"`
}

// CallInfo is a call in the admin API.
type CallInfo struct {
	ID       string       `json:"id"`
	State    string       `json:"state"` // setup, answered, ended
	Trunk    string       `json:"trunk,omitempty"`
	Pool     string       `json:"pool,omitempty"`
	Source   string       `json:"source"`
	User     string       `json:"user,omitempty"` // request-URI user
	Created  time.Time    `json:"created"`
	Answered *time.Time   `json:"answered,omitempty"`
	A        CallLeg      `json:"a"`
	B        *CallLeg     `json:"b,omitempty"`
	Media    []CallStream `json:"media,omitempty"`
}

// info describes the call. It takes the call's lock (no socket is touched).
func (c *call) info(withMedia bool) CallInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := CallInfo{ID: c.id, Source: c.src.String(), User: c.user, Created: c.created.UTC()}
	switch c.phase {
	case phEnded:
		ci.State = "ended"
	case phSetup:
		ci.State = "setup"
	default:
		ci.State = "answered"
	}
	if c.trunk != nil {
		ci.Trunk = c.trunk.Name
	}
	if c.pool != nil {
		ci.Pool = c.pool.cfg.Name
	}
	if !c.answered.IsZero() {
		t := c.answered.UTC()
		ci.Answered = &t
	}
	ci.A = legInfo(c.a)
	if b := c.b(); b != nil {
		bl := legInfo(b)
		ci.B = &bl
	}
	if withMedia && c.media != nil {
		for _, ms := range c.media.streams {
			if ms.st == nil {
				continue
			}
			stats := ms.st.Stats()
			ci.Media = append(ci.Media, CallStream{A: mediaLeg(stats.A), B: mediaLeg(stats.B)})
		}
	}
	return ci
}

func mediaLeg(l srtp.LegStats) CallMediaLeg {
	m := CallMediaLeg{Packets: l.Packets, Bytes: l.Bytes, RTCP: l.RTCPPackets, Forwarded: l.Forwarded}
	for _, d := range l.Dropped {
		m.Dropped += d
	}
	return m
}

func legInfo(l *leg) CallLeg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return CallLeg{CallID: l.callID, Peer: l.peer.String(), Transport: l.transport, LocalTag: l.localTag, RemoteTag: l.remoteTag}
}

// findCall finds a call in progress by its id.
func (s *SBC) findCall(id string) *call {
	var found *call
	s.calls.each(func(c *call) {
		if c.id == id {
			found = c
		}
	})
	return found
}

// handleCalls lists the calls in progress, filtered by trunk, source
// (an address or prefix) and state (setup, answered).
func (s *SBC) handleCalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var src netip.Prefix
	if v := q.Get("source"); v != "" {
		var err error
		if src, err = acl.ParsePrefix(v); err != nil {
			adminError(w, http.StatusBadRequest, "source: "+err.Error())
			return
		}
	}
	state := q.Get("state")
	if state != "" && state != "setup" && state != "answered" {
		adminError(w, http.StatusBadRequest, `state: want "setup" or "answered"`)
		return
	}
	out := []CallInfo{}
	s.calls.each(func(c *call) {
		if tr := q.Get("trunk"); tr != "" && (c.trunk == nil || c.trunk.Name != tr) {
			return
		}
		if src.IsValid() && !src.Contains(c.src.Addr().Unmap()) {
			return
		}
		ci := c.info(false)
		if state != "" && ci.State != state {
			return
		}
		out = append(out, ci)
	})
	slices.SortFunc(out, func(a, b CallInfo) int { return a.Created.Compare(b.Created) })
	writeJSON(w, http.StatusOK, out)
}

func (s *SBC) handleCall(w http.ResponseWriter, r *http.Request) {
	c := s.findCall(r.PathValue("id"))
	if c == nil {
		adminError(w, http.StatusNotFound, "no call in progress with this id")
		return
	}
	writeJSON(w, http.StatusOK, c.info(true))
}

// handleHangup ends a call: BYE on both legs (CANCEL and 503 before the
// answer), by the call's own state machine.
func (s *SBC) handleHangup(w http.ResponseWriter, r *http.Request) {
	c := s.findCall(r.PathValue("id"))
	if c == nil {
		adminError(w, http.StatusNotFound, "no call in progress with this id")
		return
	}
	c.post(event{kind: evTerminate, reason: resultAdminHangup})
	writeJSON(w, http.StatusOK, map[string]string{"ended": c.id})
}

// TrunkInfo is a trunk in the admin API.
type TrunkInfo struct {
	Name     string            `json:"name"`
	Realm    string            `json:"realm"`
	Enabled  bool              `json:"enabled"`
	Calls    int               `json:"calls"`
	MaxCalls int               `json:"max_calls"` // 0: no cap
	CPS      int               `json:"cps"`       // calls admitted in the last complete second
	MaxCPS   int               `json:"max_cps"`   // 0: no limit
	Health   map[string]uint64 `json:"failures"`  // failures seen from it since the last trunk health line, by class
}

func (s *SBC) handleTrunks(w http.ResponseWriter, r *http.Request) {
	p := s.state.Load().pol
	now := time.Now()
	inCall := map[string]int{}
	s.calls.each(func(c *call) {
		if c.trunk != nil {
			inCall[c.trunk.Name]++
		}
	})
	out := make([]TrunkInfo, 0, len(p.Trunks))
	s.def.health.mu.Lock()
	for _, t := range p.Trunks {
		ti := TrunkInfo{Name: t.Name, Realm: t.Realm, Enabled: !s.runtime.trunkDisabled(t.Name),
			Calls: inCall[t.Name], MaxCalls: t.MaxCalls, MaxCPS: t.CPS, Health: map[string]uint64{}}
		if tt := s.def.health.t[t.Name]; tt != nil {
			for k, v := range tt.failures {
				ti.Health[k] = v
			}
		}
		out = append(out, ti)
	}
	s.def.health.mu.Unlock()
	for i := range out {
		out[i].CPS = s.runtime.meter(out[i].Name).lastSecond(now)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *SBC) trunkSwitch(w http.ResponseWriter, r *http.Request, enable bool) {
	name := r.PathValue("name")
	if s.state.Load().pol.Trunk(name) == nil {
		adminError(w, http.StatusNotFound, "no trunk "+fmt.Sprintf("%q", truncate(name)))
		return
	}
	s.runtime.setTrunk(name, enable)
	s.log.Info("trunk switched by the admin API", "trunk", name, "enabled", enable, "by", actor(r))
	writeJSON(w, http.StatusOK, map[string]any{"trunk": name, "enabled": enable})
}

func (s *SBC) handleTrunkDisable(w http.ResponseWriter, r *http.Request) { s.trunkSwitch(w, r, false) }
func (s *SBC) handleTrunkEnable(w http.ResponseWriter, r *http.Request)  { s.trunkSwitch(w, r, true) }

// TargetInfo is a pool target in the admin API.
type TargetInfo struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Up      bool   `json:"up"`
	Drained bool   `json:"drained"`
}

// PoolInfo is a pool in the admin API.
type PoolInfo struct {
	Name    string       `json:"name"`
	Realm   string       `json:"realm"`
	Targets []TargetInfo `json:"targets"`
}

func (s *SBC) handlePools(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	out := []PoolInfo{}
	for _, pc := range st.pol.Pools {
		pl := st.pools[pc.Name]
		if pl == nil {
			continue
		}
		pi := PoolInfo{Name: pc.Name, Realm: pc.Realm, Targets: []TargetInfo{}}
		for i, t := range pl.targets {
			pi.Targets = append(pi.Targets, TargetInfo{Address: t.addr.String(), Weight: pl.weights[i], Up: t.isUp(), Drained: t.drained.Load()})
		}
		out = append(out, pi)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *SBC) targetSwitch(w http.ResponseWriter, r *http.Request, drain bool) {
	pl := s.state.Load().pools[r.PathValue("pool")]
	if pl == nil {
		adminError(w, http.StatusNotFound, "no such pool")
		return
	}
	ap, err := netip.ParseAddrPort(r.PathValue("target"))
	if err != nil {
		adminError(w, http.StatusBadRequest, "target: want ip:port")
		return
	}
	for _, t := range pl.targets {
		if t.addr == ap {
			t.drained.Store(drain)
			s.log.Info("pool target switched by the admin API", "pool", pl.cfg.Name, "target", ap.String(), "drained", drain, "by", actor(r))
			writeJSON(w, http.StatusOK, map[string]any{"pool": pl.cfg.Name, "target": ap.String(), "drained": drain})
			return
		}
	}
	adminError(w, http.StatusNotFound, "no such target in the pool")
}

func (s *SBC) handleTargetDrain(w http.ResponseWriter, r *http.Request) { s.targetSwitch(w, r, true) }
func (s *SBC) handleTargetUndrain(w http.ResponseWriter, r *http.Request) {
	s.targetSwitch(w, r, false)
}

func (s *SBC) handlePolicy(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.runtime.applied.Load())
}

// PolicyCandidate is the body of POST /v1/policy/validate.
type PolicyCandidate struct {
	Name   string `json:"name"`   // file name in messages; default "candidate.toml"
	Policy string `json:"policy"` // the TOML text
}

// PolicyVerdict is the answer of POST /v1/policy/validate.
type PolicyVerdict struct {
	Valid           bool     `json:"valid"`
	Digest          string   `json:"digest,omitempty"`
	Errors          []string `json:"errors,omitempty"`
	RestartRequired []string `json:"restart_required,omitempty"` // keys a reload to it would refuse (old → new)
}

func (s *SBC) handlePolicyValidate(w http.ResponseWriter, r *http.Request) {
	var c PolicyCandidate
	if !decodeBody(w, r, &c) {
		return
	}
	if c.Name == "" {
		c.Name = "candidate.toml"
	}
	p, err := policy.Parse(c.Name, []byte(c.Policy))
	if err != nil {
		v := PolicyVerdict{}
		var errs policy.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				v.Errors = append(v.Errors, e.Error())
			}
		} else {
			v.Errors = []string{err.Error()}
		}
		writeJSON(w, http.StatusUnprocessableEntity, v)
		return
	}
	v := PolicyVerdict{Valid: true, Digest: p.Digest}
	v.RestartRequired = restartChanges(s.state.Load().pol, p)
	writeJSON(w, http.StatusOK, v)
}

// handlePolicyReload reloads the policy file in force (as SIGHUP does).
func (s *SBC) handlePolicyReload(w http.ResponseWriter, r *http.Request) {
	src := s.state.Load().pol.Source
	if src == policy.EmbeddedSource {
		adminError(w, http.StatusConflict, "the policy in force is the embedded example: there is no file to reload")
		return
	}
	if err := s.ReloadFile(src); err != nil && !errors.Is(err, ErrReloadPartial) {
		adminError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.runtime.applied.Load())
}

// DrainRequest is the body of POST /v1/drain.
type DrainRequest struct {
	// Deadline: how long calls in progress may go on (Go duration);
	// those left then are hung up. Default "1h".
	Deadline string `json:"deadline"`
}

// DrainInfo is the answer of the drain endpoints.
type DrainInfo struct {
	Draining bool        `json:"draining"`
	State    *drainState `json:"state,omitempty"`
	Calls    int         `json:"calls"`
}

func (s *SBC) drainInfo() DrainInfo {
	d := s.runtime.drain.Load()
	return DrainInfo{Draining: d != nil, State: d, Calls: s.calls.len()}
}

func (s *SBC) handleDrainGet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.drainInfo())
}

// handleDrainStart drains the node: new calls get 503 with Retry-After
// (and /readyz 503), calls in progress go on until the deadline, when the
// ones left are hung up.
func (s *SBC) handleDrainStart(w http.ResponseWriter, r *http.Request) {
	var req DrainRequest
	if !decodeBody(w, r, &req) {
		return
	}
	d := time.Hour
	if req.Deadline != "" {
		var err error
		if d, err = time.ParseDuration(req.Deadline); err != nil || d <= 0 {
			adminError(w, http.StatusBadRequest, "deadline: want a positive duration such as \"10m\"")
			return
		}
	}
	ds := s.runtime.startDrain(d, func() {
		n := 0
		s.calls.each(func(c *call) {
			n++
			c.post(event{kind: evTerminate, reason: resultAdminHangup})
		})
		s.log.Warn("drain deadline reached: calls left hung up", "calls", n)
	})
	s.log.Warn("node draining: no new calls", "deadline", ds.Deadline.Format(time.RFC3339), "calls", s.calls.len(), "by", actor(r))
	writeJSON(w, http.StatusOK, s.drainInfo())
}

func (s *SBC) handleDrainStop(w http.ResponseWriter, r *http.Request) {
	if s.runtime.stopDrain() {
		s.log.Info("node drain ended: new calls taken again", "by", actor(r))
	}
	writeJSON(w, http.StatusOK, s.drainInfo())
}

// LogLevel is the body of the log-level endpoints.
type LogLevel struct {
	Level string `json:"level"` // debug, info, warn, error
}

func levelName(l slog.Level) string {
	return strings.ToLower(l.String())
}

func (s *SBC) handleLogLevelGet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, LogLevel{Level: levelName(s.reload.level.Level())})
}

// handleLogLevelSet sets the log level until the next reload (which sets
// server.log_level again).
func (s *SBC) handleLogLevelSet(w http.ResponseWriter, r *http.Request) {
	var req LogLevel
	if !decodeBody(w, r, &req) {
		return
	}
	switch req.Level {
	case "debug", "info", "warn", "error":
	default:
		adminError(w, http.StatusBadRequest, `level: want "debug", "info", "warn" or "error"`)
		return
	}
	s.reload.level.Set(policy.SlogLevel(req.Level))
	s.log.Warn("log level set by the admin API (until the next reload)", "level", req.Level, "by", actor(r))
	writeJSON(w, http.StatusOK, req)
}
