package sbc

import (
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/events"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/ebpf"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/ratelimit"
)

// Policy reload (SIGHUP, the file watcher, or a caller of Reload).
//
// The rule: a reload is all or nothing, and every setting either applies
// on reload or makes the reload be refused.
//
//  1. Serialised: one reload at a time (reloadState.mu), so SIGHUP and
//     the file watcher cannot interleave two policies.
//  2. Refused, with every offending key named and "restart to apply", when
//     the new policy changes a setting only a restart applies (listeners,
//     admin listener, state_dir, socket options, XDP/nftables set-up; see
//     reloadFields). Nothing changes; the policy in force stays.
//  3. Prepared: everything derived from the policy is built and checked
//     without touching live state: the snapshot (trunk table, pools,
//     header filter), the never-block list (with the peers learnt at run
//     time), the four limiters, the failure tracker, the guess guard, the
//     scanner matcher, the call caps. Any error here
//     rejects the reload; nothing changed.
//     The master key(s) are read again and the audit log's outputs
//     opened (those it names again are taken over, not reopened).
//  4. Committed: the prepared pieces are installed. The never-block list
//     goes first: its only failure (the SBC is closed) leaves everything
//     else untouched; every later step cannot fail. Then the snapshot is
//     swapped and log_level set.
//  5. Kernel: the fast path's allow-list of trunks and pool targets (XDP
//     or nftables), and the XDP rate limit and scope are rewritten. This
//     is the one step after the commit point that can fail (netlink, bpf);
//     it cannot be undone safely, so a failure leaves the new policy in
//     force in user space and is reported as result="partial" (WARN,
//     ErrReloadPartial). All are rewritten in full on every reload, so the
//     next successful reload repairs them.
//
// Every reload is counted once in sbc_reload_total{result}: ok, rejected
// (nothing changed, the previous policy stays in force) or partial.

// Results of a reload: the values of sbc_reload_total's result label.
const (
	ReloadOK       = "ok"
	ReloadRejected = "rejected"
	ReloadPartial  = "partial"
)

// ErrReloadPartial is wrapped by Reload's error when the new policy is in
// force but the kernel fast path could not be updated (it still holds the
// previous allow-list of trunks and pool targets, or XDP rate limit or
// scope). Reloading again retries.
var ErrReloadPartial = errors.New("reload partly applied: the new policy is in force, but the kernel fast path was not updated")

// RestartError is Reload's error when the new policy changes settings
// that only a restart applies. The reload was refused: nothing changed.
type RestartError struct {
	// Changes lists each such setting as "key: old → new".
	Changes []string
}

func (e *RestartError) Error() string {
	return "reload refused, restart to apply: " + strings.Join(e.Changes, "; ")
}

// Keys returns the policy keys of the changes.
func (e *RestartError) Keys() []string {
	out := make([]string, len(e.Changes))
	for i, c := range e.Changes {
		out[i], _, _ = strings.Cut(c, ":")
	}
	return out
}

// reloadState is the SBC's reload machinery.
type reloadState struct {
	mu    sync.Mutex     // serialises Reload
	level *slog.LevelVar // the level of the SBC's default logger (log_level)
	// kernel, when set (tests), replaces the kernel step.
	kernel func(*policy.Policy) error
}

// Reload swaps in a new policy, all or nothing (see the rule above).
// Calls in flight keep the snapshot they started with. It returns nil when
// the policy is in force; a *RestartError or another error when it was
// refused and the previous policy stays; an error wrapping
// ErrReloadPartial when the policy is in force but the kernel fast path
// was not updated. Reload logs the outcome itself (INFO, or WARN with the
// reason) and counts it in sbc_reload_total.
func (s *SBC) Reload(p *policy.Policy) error {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	return s.reloadLocked(p)
}

// reloadLocked is Reload under reload.mu.
func (s *SBC) reloadLocked(p *policy.Policy) error {
	old := s.state.Load().pol
	if p == nil {
		return s.reloadRejected(old, "<nil>", errors.New("nil policy"))
	}
	// Sealed secrets are opened first: the restart checks compare what
	// they hold, so a file re-sealed under a new master key (sbc secrets
	// rotate) changes nothing.
	keys, err := loadKeyring(p)
	if err != nil {
		return s.reloadRejected(old, p.Source, err)
	}
	if err := openSecrets(p, keys); err != nil {
		return s.reloadRejected(old, p.Source, err)
	}
	// Host-name targets: the policy in force has their addresses
	// (resolve.go).
	raw := p
	p = s.expand(p)
	if changes := restartChanges(old, p); len(changes) > 0 {
		return s.reloadRejected(old, p.Source, &RestartError{Changes: changes})
	}
	// Certificate files are re-read on every reload request (SIGHUP),
	// whatever becomes of the policy: each one that changed and parses
	// takes service, as when the poll finds it.
	s.tls.refresh(time.Now())
	// Prepare: nothing live changes until every piece is built.
	targets := cloneTargets(&s.targets)
	snap, err := s.buildSnapshot(p, targets)
	if err != nil {
		return s.reloadRejected(old, p.Source, err)
	}
	du, err := s.def.prepare(p)
	if err != nil {
		return s.reloadRejected(old, p.Source, err)
	}
	// The audit log: new outputs are opened now, kept ones taken over
	// (audit.go).
	al, err := s.openAudit(p)
	if err != nil {
		return s.reloadRejected(old, p.Source, err)
	}

	// Commit, excluding Start and Close.
	s.mu.Lock()
	if err := du.apply(); err != nil {
		s.mu.Unlock()
		al.Retire(s.currentAudit())
		return s.reloadRejected(old, p.Source, err)
	}
	s.out.keys.Store(keys)
	s.targets.mu.Lock()
	s.targets.m = targets.m
	s.targets.mu.Unlock()
	// Calls in progress (and one starting now) keep the previous
	// snapshot: the gate asks it too until no call uses it.
	s.retire(s.state.Swap(snap))
	s.runtime.setApplied(p)
	s.raw.Store(raw)
	s.dns.commit(raw.DNS, raw.Hosts())
	s.outreg.apply(s, p)
	s.tls.retain(snap.tls.certs, snap.tls.cas)
	s.reload.level.Set(policy.SlogLevel(p.Server.LogLevel))
	s.applyGC(p)
	kerr := s.reloadKernel(p)
	s.mu.Unlock()
	// The new outputs take the events from here on; the ones the policy
	// dropped write out their queues and close.
	s.setAudit(al)
	// A new master key (a rotation): the DTLS key of state_dir is
	// re-sealed under it, while the previous key still opens it.
	s.resealDTLS(p.Server.StateDir, keys)

	if kerr != nil {
		s.metrics.ReloadsTotal.WithLabelValues(ReloadPartial).Inc()
		s.log.Warn("policy reloaded, but the kernel fast path was not updated: it keeps the previous allow-list (trunks and pool targets), XDP rate limit or XDP scope until a reload succeeds",
			"result", ReloadPartial, "policy", p.Source, "error", kerr.Error())
		s.emit(events.Event{Kind: events.ConfigChanged, Reason: ReloadPartial, Detail: map[string]string{"policy": p.Source, "error": kerr.Error()}})
		return fmt.Errorf("%w: %w", ErrReloadPartial, kerr)
	}
	s.metrics.ReloadsTotal.WithLabelValues(ReloadOK).Inc()
	s.log.Info("policy reloaded", "result", ReloadOK, "policy", p.Source)
	s.emit(events.Event{Kind: events.ConfigChanged, Reason: ReloadOK, Detail: map[string]string{"policy": p.Source}})
	return nil
}

// ReloadFile loads, validates and reloads the policy file at path. A file
// that does not load is a rejected reload like any other: counted, logged
// at WARN, the policy in force kept.
func (s *SBC) ReloadFile(path string) error {
	p, err := policy.Load(path)
	if err != nil {
		s.reload.mu.Lock()
		defer s.reload.mu.Unlock()
		return s.reloadRejected(s.state.Load().pol, path, err)
	}
	return s.Reload(p)
}

func (s *SBC) reloadRejected(old *policy.Policy, source string, err error) error {
	s.metrics.ReloadsTotal.WithLabelValues(ReloadRejected).Inc()
	attrs := []any{"result", ReloadRejected, "policy", source, "in_force", old.Source, "error", err.Error()}
	var re *RestartError
	if errors.As(err, &re) {
		attrs = append(attrs, "restart_required", re.Keys())
	}
	s.log.Warn("policy reload rejected; keeping the policy in force", attrs...)
	s.emit(events.Event{Kind: events.ReloadFailed, Reason: err.Error(), Detail: map[string]string{"policy": source, "in_force": old.Source}})
	if re != nil {
		return err
	}
	return fmt.Errorf("reload rejected: %w", err)
}

// reloadKernel rewrites what the kernel fast path takes from the policy:
// the allow-list of trunks and pool targets, and the XDP rate limit and
// scope. The caller holds s.mu.
func (s *SBC) reloadKernel(p *policy.Policy) error {
	if s.reload.kernel != nil {
		return s.reload.kernel(p)
	}
	fp := s.fast
	if fp == nil {
		return nil // not started: Start reads the policy in force
	}
	var errs []error
	if err := fp.setPeers(p); err != nil {
		errs = append(errs, fmt.Errorf("%s allow-list (trunks and pool targets): %w", fp.path, err))
	}
	if fp.xdp != nil {
		if err := fp.xdp.SetRateLimit(uint32(p.XDP.RatePPS), uint32(p.XDP.Burst)); err != nil {
			errs = append(errs, fmt.Errorf("xdp rate limit: %w", err))
		}
		if err := fp.xdp.SetScope(ebpf.Scope(p.XDP.Scope)); err != nil {
			errs = append(errs, fmt.Errorf("xdp scope: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cloneTargets copies the health-state registry, so that building a
// snapshot (which adds new targets and forgets removed ones) changes
// nothing live until the reload commits.
func cloneTargets(ts *targetSet) *targetSet {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	c := &targetSet{m: make(map[string]*target, len(ts.m))}
	maps.Copy(c.m, ts.m)
	return c
}

// defenceUpdate is a policy's edge-defence settings, checked and compiled
// by defence.prepare; apply installs them.
type defenceUpdate struct {
	d                             *defence
	pol                           *policy.Policy
	pps, tpps, invites, registers *ratelimit.LimiterUpdate
	tracker                       *ratelimit.TrackerUpdate
	guard                         *ratelimit.GuardUpdate
	scanner                       *ratelimit.ScannerMatcher
	caps                          map[string]int
}

// prepare builds and checks everything a reload changes in d, without
// changing d. Blocklist entries, buckets, failure counts and calls in
// progress survive the reload.
func (d *defence) prepare(p *policy.Policy) (*defenceUpdate, error) {
	u := &defenceUpdate{d: d, pol: p, caps: callCaps(p)}
	var err error
	if _, err = d.neverBlockList(p); err != nil {
		return nil, fmt.Errorf("never_block: %w", err)
	}
	if u.pps, err = d.pps.Prepare(ppsConfig(p)); err != nil {
		return nil, fmt.Errorf("limits.source_pps: %w", err)
	}
	if u.tpps, err = d.tpps.Prepare(trunkPPSConfig(p)); err != nil {
		return nil, fmt.Errorf("limits.trunk_pps: %w", err)
	}
	if u.guard, err = d.guard.Prepare(guardConfig(p)); err != nil {
		return nil, fmt.Errorf("autoblock.register_guesses: %w", err)
	}
	if u.invites, err = d.invites.Prepare(inviteConfig(p)); err != nil {
		return nil, fmt.Errorf("limits.source_cps / trunk cps: %w", err)
	}
	if u.registers, err = d.registers.Prepare(registerConfig(p)); err != nil {
		return nil, fmt.Errorf("limits.register_rate: %w", err)
	}
	if u.tracker, err = d.tracker.Prepare(trackerConfig(p)); err != nil {
		return nil, fmt.Errorf("autoblock: %w", err)
	}
	pats := p.AutoBlock.ScannerUserAgents
	if pats == nil {
		pats = ratelimit.DefaultScannerPatterns
	}
	if u.scanner, err = ratelimit.NewScannerMatcher(pats); err != nil {
		return nil, fmt.Errorf("scanner_user_agents: %w", err)
	}
	return u, nil
}

// apply installs u. Only the first step can fail (the blocklist is
// closed), and then nothing changed.
func (u *defenceUpdate) apply() error {
	d := u.d
	// The list is built again with the peers learnt since prepare; p
	// built once, it cannot fail but for the blocklist's closing.
	if err := d.setNeverBlock(u.pol); err != nil {
		return err
	}
	u.pps.Apply()
	u.tpps.Apply()
	u.guard.Apply()
	u.invites.Apply()
	u.registers.Apply()
	u.tracker.Apply()
	d.scanner.Store(u.scanner)
	d.calls.SetLimits(u.caps)
	return nil
}

// How a policy setting reaches the running SBC.
type reloadClass int

const (
	// applyLive: a reload applies it (calls in flight keep the snapshot
	// they started with).
	applyLive reloadClass = iota + 1
	// needsRestart: a reload that changes it is refused.
	needsRestart
	// derived: computed by validation from the raw key next to it, which
	// carries the class.
	derived
	// notASetting: information about the file, not a setting.
	notASetting
)

// reloadRule classifies one field of policy.Policy.
type reloadRule struct {
	class reloadClass
	// check is the restartChecks entry that guards a needsRestart field.
	check string
}

var (
	ruleLive    = reloadRule{class: applyLive}
	ruleDerived = reloadRule{class: derived}
)

func ruleRestart(check string) reloadRule { return reloadRule{class: needsRestart, check: check} }

// reloadFields classifies every field of policy.Policy by its key (TOML
// path; fields that are not in the file, toml:"-", by their Go name). A
// test walks the struct and fails on a field missing here: a new policy
// field must be classified, and README's reload table updated with it.
var reloadFields = map[string]reloadRule{
	"server.user_agent":       ruleLive, // read per request from the snapshot (sipgo's own UA name is unused: the SBC builds every request)
	"server.log_level":        ruleLive, // the default logger's LevelVar, or Options.LogLevel
	"server.udp_read_buffer":  ruleRestart("server.udp_read_buffer"),
	"server.udp_write_buffer": ruleRestart("server.udp_write_buffer"),
	"server.tcp_idle_timeout": ruleRestart("server.tcp_idle_timeout"), // sipgo's TCP transport reads it at construction
	"server.state_dir":        ruleRestart("server.state_dir"),
	"server.gc_heap_floor":    ruleLive, // applied to the process at every reload (Options.ManageGC)
	"server.memory_limit":     ruleLive,
	"server.heap_huge_pages":  ruleLive, // for the heap touched from then on (a reload that raises gc_heap_floor)

	"server.tcp_message_timeout": ruleLive, // read for every message (stream.go)

	"admin.listen":                ruleRestart("admin.listen"),
	"admin.Addr":                  ruleDerived,
	"admin.plain_http":            ruleRestart("admin.scheme"), // HTTP or HTTPS is chosen when the listener opens
	"admin.tls.cert_file":         ruleLive,                    // new handshakes (HTTPS to HTTPS; a switch to or from HTTP is admin.scheme)
	"admin.tls.key_file":          ruleLive,
	"admin.tls.ca_file":           ruleLive,
	"admin.tls.min_version":       ruleLive,
	"admin.tls.client_auth":       ruleLive,
	"admin.tls.server_name":       ruleLive, // refused by validation
	"admin.tls.revoked_spki":      ruleLive,
	"admin.tls.handshake_timeout": ruleLive, // unused: the admin listener's header deadline is 5 s
	"admin.tls.Min":               ruleDerived,
	"admin.client_roles.cn":       ruleLive, // read per request
	"admin.client_roles.dns":      ruleLive,
	"admin.client_roles.uri":      ruleLive,
	"admin.client_roles.roles":    ruleLive,
	"admin.api_keys.id":           ruleLive,
	"admin.api_keys.sha256":       ruleLive,
	"admin.api_keys.roles":        ruleLive,
	"admin.keys_file":             ruleLive, // the file is also re-read when it changes
	"admin.KeysPath":              ruleDerived,
	"admin.hosts":                 ruleLive,
	"admin.origins":               ruleLive,
	"admin.rate":                  ruleLive, // a change starts every client's budget afresh
	"admin.burst":                 ruleLive,

	"realm.name":                           ruleRestart("realm"),
	"realm.listener.transport":             ruleRestart("realm"),
	"realm.listener.bind":                  ruleRestart("realm"),
	"realm.listener.advertise":             ruleRestart("realm"),
	"realm.listener.tls.cert_file":         ruleLive, // new handshakes; open connections keep what they negotiated
	"realm.listener.tls.key_file":          ruleLive,
	"realm.listener.tls.ca_file":           ruleLive,
	"realm.listener.tls.min_version":       ruleLive,
	"realm.listener.tls.client_auth":       ruleLive,
	"realm.listener.tls.server_name":       ruleLive, // refused by validation on a listener
	"realm.listener.tls.revoked_spki":      ruleLive,
	"realm.listener.tls.handshake_timeout": ruleLive,
	"realm.listener.tls.Min":               ruleDerived,
	"realm.listener.path":                  ruleLive, // new connections
	"realm.listener.origins":               ruleLive,
	"realm.listener.BindAddr":              ruleDerived,
	"realm.media.ip":                       ruleRestart("realm.media"), // the relay's port pools are built at start
	"realm.media.ports":                    ruleRestart("realm.media"),
	"realm.media.advertise":                ruleLive, // SDP of new calls
	"realm.media.Addr":                     ruleDerived,
	"realm.media.AdvertiseAddr":            ruleDerived,
	"realm.media.Min":                      ruleDerived,
	"realm.media.Max":                      ruleDerived,
	"realm.listener.AdvertiseHost":         ruleDerived,
	"realm.listener.AdvertisePort":         ruleDerived,

	"trunk.name":             ruleLive,
	"trunk.realm":            ruleLive,
	"trunk.sources":          ruleLive, // user-space trunk table; kernel allow-list after the commit
	"trunk.Prefixes":         ruleDerived,
	"trunk.tls_identities":   ruleLive, // per request, from the certificate of the connection
	"trunk.Identities":       ruleDerived,
	"trunk.media_encryption": ruleLive, // new calls
	"trunk.media_required":   ruleLive,
	"trunk.refer":            ruleLive, // new calls (a call's REFERs are handled with its snapshot)
	"trunk.max_calls":        ruleLive, // calls in progress are counted against the new cap, none is ended
	"trunk.cps":              ruleLive,
	"trunk.allow_register":   ruleLive,
	"trunk.register_domains": ruleLive,
	"trunk.transports":       ruleLive, // per request

	"pool.name":                  ruleLive,
	"pool.realm":                 ruleLive,
	"pool.transport":             ruleLive,
	"pool.tcp_for_large":         ruleLive,
	"pool.media_encryption":      ruleLive, // new calls
	"pool.refer":                 ruleLive, // new calls (a call's REFERs are handled with its snapshot)
	"pool.tls.cert_file":         ruleLive, // new connections; open ones are kept
	"pool.tls.key_file":          ruleLive,
	"pool.tls.ca_file":           ruleLive,
	"pool.tls.min_version":       ruleLive,
	"pool.tls.client_auth":       ruleLive, // refused by validation on a pool
	"pool.tls.server_name":       ruleLive,
	"pool.tls.revoked_spki":      ruleLive, // refused by validation on a pool
	"pool.tls.handshake_timeout": ruleLive,
	"pool.tls.Min":               ruleDerived,
	"pool.target.address":        ruleLive, // a target kept by pool+address keeps its health state
	"pool.target.weight":         ruleLive,
	"pool.target.priority":       ruleLive, // new calls
	"pool.auth.username":         ruleLive, // new challenges
	"pool.auth.password":         ruleLive,
	"pool.auth.realm":            ruleLive,
	"pool.auth.Clear":            ruleDerived, // password opened ([secrets])
	"pool.target.Addr":           ruleDerived,
	"pool.target.Host":           ruleDerived, // a host-name target's name (resolve.go)
	"pool.target.Port":           ruleDerived,
	"pool.target.Name":           ruleDerived, // set on the targets the SBC resolved
	// Outbound registration (outreg.go): a change of what a registration
	// sends (these, the pool's realm, transport or auth) unregisters it
	// and registers anew; a removed one is unregistered.
	"pool.register.user":         ruleLive,
	"pool.register.domain":       ruleLive,
	"pool.register.contact_user": ruleLive,
	"pool.register.expires":      ruleLive,
	"pool.register.retry_min":    ruleLive,
	"pool.register.retry_max":    ruleLive,
	"pool.target.W":              ruleDerived,
	"pool.health.interval":       ruleLive,
	"pool.health.timeout":        ruleLive,
	"pool.health.up":             ruleLive,
	"pool.health.down":           ruleLive,

	"route.trunk":  ruleLive,
	"route.prefix": ruleLive,
	"route.pool":   ruleLive,

	// Outbound routes and the toll-fraud controls: new calls. The caps'
	// counts (calls in progress, minutes of the window) carry over; a
	// lower cap refuses new calls and ends none.
	"outbound_route.prefix":       ruleLive,
	"outbound_route.source_pool":  ruleLive,
	"outbound_route.pools":        ruleLive,
	"outbound_route.strip":        ruleLive,
	"outbound_route.prepend":      ruleLive,
	"outbound_route.from_user":    ruleLive,
	"outbound_route.pai":          ruleLive,
	"outbound_route.privacy":      ruleLive,
	"outbound_route.max_duration": ruleLive,
	"outbound_route.hours":        ruleLive,
	"outbound_route.days":         ruleLive,
	"outbound_route.timezone":     ruleLive,
	"outbound_route.Window":       ruleDerived,
	// Host-name targets' resolver (resolve.go): names new to a reload
	// are resolved by it; a name no longer used is forgotten.
	"dns.servers":                        ruleLive,
	"dns.min_ttl":                        ruleLive, // from the next answer
	"dns.max_ttl":                        ruleLive,
	"dns.stale_for":                      ruleLive,
	"dns.timeout":                        ruleLive,
	"dns.ServerAddrs":                    ruleDerived,
	"outbound.deny_prefixes":             ruleLive,
	"outbound.premium_prefixes":          ruleLive,
	"outbound.deny_premium":              ruleLive,
	"outbound.home_prefix":               ruleLive,
	"outbound.deny_international":        ruleLive,
	"outbound.pool_max_calls":            ruleLive,
	"outbound.source_max_calls":          ruleLive,
	"outbound.pool_max_minutes":          ruleLive,
	"outbound.source_max_minutes":        ruleLive,
	"outbound.minutes_window":            ruleLive, // a window in progress keeps its start
	"registrations.max_bindings":         ruleLive, // checked per REGISTER; bindings over a lowered bound stay until they expire
	"registrations.max_bindings_per_aor": ruleLive, // checked per REGISTER
	"registrations.keepalive_interval":   ruleLive, // read by the registration loop at each tick
	"registrations.max_pending":          ruleLive, // checked per REGISTER
	"registrations.client_expires_max":   ruleLive, // applies to the next REGISTER

	"routing.default_pool":     ruleLive,
	"routing.follow_redirects": ruleLive,
	"routing.target_timeout":   ruleLive,
	"routing.max_attempts":     ruleLive,
	"routing.retry_after":      ruleLive,

	"calls.max_duration":       ruleLive, // new calls
	"calls.inactivity_timeout": ruleLive, // new calls
	"calls.ring_timeout":       ruleLive, // new calls

	"headers.allow":                 ruleLive,
	"headers.unknown_source_action": ruleLive,

	// Header rules are compiled into each snapshot (headerrules.go): calls
	// in progress keep the rules of the snapshot they started with.
	"header_rule.name":            ruleLive,
	"header_rule.match.trunk":     ruleLive,
	"header_rule.match.pool":      ruleLive,
	"header_rule.match.realm":     ruleLive,
	"header_rule.match.direction": ruleLive,
	"header_rule.match.methods":   ruleLive,
	"header_rule.match.messages":  ruleLive,
	"header_rule.match.status":    ruleLive,
	"header_rule.action.op":       ruleLive,
	"header_rule.action.header":   ruleLive,
	"header_rule.action.part":     ruleLive,
	"header_rule.action.value":    ruleLive,
	"header_rule.action.regexp":   ruleLive,
	"header_rule.action.replace":  ruleLive,

	"limits.source_pps":                 ruleLive,
	"limits.source_pps_burst":           ruleLive,
	"limits.trunk_pps":                  ruleLive, // buckets keep their state, like source_pps
	"limits.trunk_pps_burst":            ruleLive,
	"limits.source_cps":                 ruleLive,
	"limits.register_rate":              ruleLive,
	"limits.max_sources":                ruleLive, // tables are resized keeping the most valuable entries
	"limits.tcp_connections_per_source": ruleLive, // new connections; open ones are not closed
	"limits.tcp_connections":            ruleLive, // new connections; open ones are not closed
	"limits.udp_peers":                  ruleLive, // read at each measure of the table
	"limits.queue_delay":                ruleLive, // read for each datagram
	"limits.over_limit_action":          ruleLive,

	"autoblock.enabled":                 ruleLive,
	"autoblock.observe":                 ruleLive,
	"autoblock.threshold":               ruleLive,
	"autoblock.window":                  ruleLive,
	"autoblock.block_for":               ruleLive, // blocks already decided keep their expiry
	"autoblock.escalation":              ruleLive,
	"autoblock.max_block":               ruleLive,
	"autoblock.forget_after":            ruleLive,
	"autoblock.never_block":             ruleLive, // entries overlapping the new list are removed (forced ones stay)
	"autoblock.scanner_user_agents":     ruleLive,
	"autoblock.register_guesses":        ruleLive, // counts and locks carry over
	"autoblock.register_source_guesses": ruleLive,
	"autoblock.register_window":         ruleLive,
	"autoblock.register_lock":           ruleLive, // locks already decided keep their end
	"autoblock.aggregate_v6":            ruleLive, // from the next auto-block
	"autoblock.trunk_health_interval":   ruleLive, // from the next line
	"autoblock.NeverBlockPrefixes":      ruleDerived,

	"xdp.enabled":    ruleRestart("xdp.enabled"),
	"xdp.interfaces": ruleRestart("xdp.interfaces"),
	"xdp.mode":       ruleRestart("xdp.mode"),
	"xdp.pin_dir":    ruleRestart("xdp.pin_dir"),
	"xdp.scope":      ruleLive, // written to the running XDP program, if any
	"xdp.rate_pps":   ruleLive, // written to the running XDP program, if any
	"xdp.burst":      ruleLive,

	"nftables.enabled":     ruleRestart("nftables.enabled"),
	"nftables.table":       ruleRestart("nftables.table"),
	"nftables.media_ports": ruleRestart("nftables.media_ports"),
	"nftables.trunks_only": ruleRestart("nftables.trunks_only"),

	"media.anchor":       ruleLive, // new calls; calls in progress keep their relay (or its absence)
	"media.timeout":      ruleLive, // new calls
	"media.quarantine":   ruleRestart("media.quarantine"),
	"media.kernel_relay": ruleRestart("media.kernel_relay"),

	"cdr.enabled":     ruleRestart("cdr"), // the CDR file is opened by Start (outputs.go)
	"cdr.file":        ruleRestart("cdr"),
	"cdr.max_size_mb": ruleRestart("cdr"),
	"cdr.max_files":   ruleRestart("cdr"),
	"cdr.queue":       ruleRestart("cdr"),

	"hep.enabled":  ruleRestart("hep"), // the exporter is started by Start; sipgo's write hook is process-wide
	"hep.address":  ruleRestart("hep"),
	"hep.agent_id": ruleRestart("hep"),
	"hep.password": ruleRestart("hep"),
	"hep.queue":    ruleRestart("hep"),
	"hep.Addr":     ruleDerived,
	"hep.AuthKey":  ruleDerived,

	"webhook.name":         ruleRestart("webhook"), // the webhooks are started by Start, with their queues
	"webhook.url":          ruleRestart("webhook"),
	"webhook.events":       ruleRestart("webhook"),
	"webhook.secret":       ruleRestart("webhook"),
	"webhook.secret_env":   ruleRestart("webhook"),
	"webhook.timeout":      ruleRestart("webhook"),
	"webhook.max_attempts": ruleRestart("webhook"),
	"webhook.max_backoff":  ruleRestart("webhook"),
	"webhook.queue":        ruleRestart("webhook"),
	"webhook.Key":          ruleDerived,
	// The audit log is rebuilt on every reload: an output named again
	// (same file, same syslog destination and facility) keeps its queue
	// and hash chain, others are opened or closed (audit.go).
	"audit.file":            ruleLive,
	"audit.max_size":        ruleLive,
	"audit.keep":            ruleLive,
	"audit.stdout":          ruleLive,
	"audit.syslog":          ruleLive,
	"audit.syslog_facility": ruleLive,
	"audit.redact_fields":   ruleLive, // records emitted after the commit
	"audit.mask_numbers":    ruleLive,
	"audit.events":          ruleLive,
	"audit.queue_size":      ruleLive, // outputs opened by this reload; a kept output keeps its queue
	"audit.Facility":        ruleDerived,

	"secrets.master_key_file":   ruleLive, // read again by every reload; the DTLS key was opened at start
	"secrets.previous_key_file": ruleLive,

	"Source": {class: notASetting},
	"Digest": {class: notASetting},
}

// restartCheck compares one restart-only setting of the policy in force
// (a) and a new one (b): "" when a reload may proceed, else what changed.
type restartCheck struct {
	key  string
	diff func(a, b *policy.Policy) string
}

func changed[T comparable](x, y T) string {
	if x == y {
		return ""
	}
	return fmt.Sprintf("%v → %v", x, y)
}

func quoted(x, y string) string {
	if x == y {
		return ""
	}
	return fmt.Sprintf("%q → %q", x, y)
}

func listChanged[T any](x, y []T) string {
	if len(x) == len(y) && fmt.Sprint(x) == fmt.Sprint(y) {
		return ""
	}
	return fmt.Sprintf("%v → %v", x, y)
}

// xdpInert: XDP is off before and after, so its other keys are unused
// until a restart that enables it (and reads them then). nftInert: the
// same for nftables.
func xdpInert(a, b *policy.Policy) bool { return !a.XDP.Enabled && !b.XDP.Enabled }

func nftInert(a, b *policy.Policy) bool { return !a.Nftables.Enabled && !b.Nftables.Enabled }

// unlessInert is check, which reports no change while inert holds.
func unlessInert(inert func(a, b *policy.Policy) bool, check func(a, b *policy.Policy) string) func(a, b *policy.Policy) string {
	return func(a, b *policy.Policy) string {
		if inert(a, b) {
			return ""
		}
		return check(a, b)
	}
}

var restartChecks = []restartCheck{
	{"server.udp_read_buffer", func(a, b *policy.Policy) string {
		return changed(a.Server.UDPReadBuffer, b.Server.UDPReadBuffer)
	}},
	{"server.udp_write_buffer", func(a, b *policy.Policy) string {
		return changed(a.Server.UDPWriteBuffer, b.Server.UDPWriteBuffer)
	}},
	{"server.tcp_idle_timeout", func(a, b *policy.Policy) string {
		return changed(a.Server.TCPIdleTimeout.Duration, b.Server.TCPIdleTimeout.Duration)
	}},
	{"server.state_dir", func(a, b *policy.Policy) string { return quoted(a.Server.StateDir, b.Server.StateDir) }},
	{"admin.listen", func(a, b *policy.Policy) string { return quoted(a.Admin.Listen, b.Admin.Listen) }},
	{"admin.scheme", func(a, b *policy.Policy) string {
		if a.Admin.Listen == "" || b.Admin.Listen == "" {
			return "" // admin.listen says it
		}
		return quoted(adminScheme(a), adminScheme(b))
	}},
	{"realm", listenersChanged},
	{"realm.media", func(a, b *policy.Policy) string {
		set := func(p *policy.Policy) []string {
			var out []string
			for _, r := range p.Realms {
				out = append(out, fmt.Sprintf("realm %q media %s ports %d-%d", r.Name, r.Media.Addr, r.Media.Min, r.Media.Max))
			}
			slices.Sort(out)
			return out
		}
		return listChanged(set(a), set(b))
	}},
	{"media.kernel_relay", func(a, b *policy.Policy) string {
		return changed(strings.Join(a.Media.KernelRelay, ","), strings.Join(b.Media.KernelRelay, ","))
	}},
	{"media.quarantine", func(a, b *policy.Policy) string {
		return changed(a.Media.Quarantine.Duration, b.Media.Quarantine.Duration)
	}},
	{"cdr", func(a, b *policy.Policy) string { return changed(a.CDR, b.CDR) }},
	// The HEP password and webhook secrets are not printed.
	{"hep", func(a, b *policy.Policy) string {
		// The password as opened (AuthKey), not as written: re-sealing
		// it is no change.
		x, y := a.HEP, b.HEP
		x.Password, y.Password = "", ""
		if x == y {
			return ""
		}
		return "changed"
	}},
	{"webhook", func(a, b *policy.Policy) string {
		if webhooksEqual(a.Webhooks, b.Webhooks) {
			return ""
		}
		return "changed"
	}},
	{"xdp.enabled", func(a, b *policy.Policy) string { return changed(a.XDP.Enabled, b.XDP.Enabled) }},
	{"xdp.interfaces", unlessInert(xdpInert, func(a, b *policy.Policy) string { return listChanged(a.XDP.Interfaces, b.XDP.Interfaces) })},
	{"xdp.mode", unlessInert(xdpInert, func(a, b *policy.Policy) string { return quoted(a.XDP.Mode, b.XDP.Mode) })},
	{"xdp.pin_dir", unlessInert(xdpInert, func(a, b *policy.Policy) string { return quoted(a.XDP.PinDir, b.XDP.PinDir) })},
	{"nftables.enabled", func(a, b *policy.Policy) string { return changed(a.Nftables.Enabled, b.Nftables.Enabled) }},
	{"nftables.table", unlessInert(nftInert, func(a, b *policy.Policy) string { return quoted(a.Nftables.Table, b.Nftables.Table) })},
	{"nftables.media_ports", unlessInert(nftInert, func(a, b *policy.Policy) string {
		return listChanged(a.Nftables.MediaPorts, b.Nftables.MediaPorts)
	})},
	{"nftables.trunks_only", unlessInert(nftInert, func(a, b *policy.Policy) string {
		return changed(a.Nftables.TrunksOnly, b.Nftables.TrunksOnly)
	})},
}

func webhooksEqual(a, b []policy.Webhook) bool {
	return slices.EqualFunc(a, b, func(x, y policy.Webhook) bool {
		return x.Name == y.Name && x.URL == y.URL && slices.Equal(x.Events, y.Events) && string(x.Key) == string(y.Key) &&
			x.SecretEnv == y.SecretEnv && x.Timeout == y.Timeout && x.MaxAttempts == y.MaxAttempts &&
			x.MaxBackoff == y.MaxBackoff && x.Queue == y.Queue
	})
}

// listenersChanged compares the realms and their listeners as sets (order
// in the file does not matter).
func listenersChanged(a, b *policy.Policy) string {
	set := func(p *policy.Policy) []string {
		var out []string
		for _, r := range p.Realms {
			if len(r.Listeners) == 0 {
				out = append(out, fmt.Sprintf("realm %q", r.Name))
			}
			for _, l := range r.Listeners {
				out = append(out, fmt.Sprintf("realm %q %s %s advertise %s",
					r.Name, strings.ToLower(l.Transport), l.BindAddr, advertised(l)))
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	sa, sb := set(a), set(b)
	var added, removed []string
	for _, x := range sb {
		if _, found := slices.BinarySearch(sa, x); !found {
			added = append(added, x)
		}
	}
	for _, x := range sa {
		if _, found := slices.BinarySearch(sb, x); !found {
			removed = append(removed, x)
		}
	}
	var parts []string
	if len(removed) > 0 {
		parts = append(parts, "removed "+strings.Join(removed, ", "))
	}
	if len(added) > 0 {
		parts = append(parts, "added "+strings.Join(added, ", "))
	}
	return strings.Join(parts, "; ")
}

func advertised(l policy.Listener) string {
	if strings.Contains(l.AdvertiseHost, ":") {
		return fmt.Sprintf("[%s]:%d", l.AdvertiseHost, l.AdvertisePort)
	}
	return fmt.Sprintf("%s:%d", l.AdvertiseHost, l.AdvertisePort)
}

// restartChanges lists every restart-only setting that differs between
// the policy in force and p, as "key: what changed".
func restartChanges(old, p *policy.Policy) []string {
	var out []string
	for _, c := range restartChecks {
		if d := c.diff(old, p); d != "" {
			out = append(out, c.key+": "+d)
		}
	}
	return out
}

// adminScheme is how the admin listener serves: "http", "https", or ""
// without a listener.
func adminScheme(p *policy.Policy) string {
	switch {
	case p.Admin.Listen == "":
		return ""
	case p.Admin.TLS != nil:
		return "https"
	}
	return "http"
}
