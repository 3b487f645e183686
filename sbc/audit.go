package sbc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/audit"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/secrets"
	"github.com/sbc-project/sbc/srtp"
)

// The audit log ([audit], package audit) and the master key of secrets
// at rest ([secrets], package secrets).
//
// The audit log is one events.Sink among the SBC's outputs (s.events,
// with Options.Events beside it). A reload opens the new configuration
// before its commit point, taking over the outputs it names again (the
// same file or syslog destination keeps its queue and hash chain), swaps
// it into the Mux at the commit, and then closes the outputs it dropped
// after they wrote what they had queued. A reload refused later closes
// only what it opened. The keyring is read at New and again by every
// reload (a file that changed takes effect then; a key that cannot be
// read refuses the reload).

// outputState is the SBC's audit log and keyring in service.
type outputState struct {
	mu   sync.Mutex // guards log against Close racing a reload
	log  *audit.Log // nil: no audit output configured
	keys atomic.Pointer[secrets.Keyring]
}

// auditOutputs and auditDropReasons are the label values of the audit
// metrics.
var (
	auditOutputs     = []string{audit.OutputFile, audit.OutputStdout, audit.OutputSyslog}
	auditDropReasons = []string{audit.DropQueueFull, audit.DropWriteError, audit.DropClosed}
)

// auditMetrics are the audit log's instruments (registered by newMetrics).
type auditMetrics struct {
	records *prometheus.CounterVec // output
	dropped *prometheus.CounterVec // output, reason
}

func newAuditMetrics(r *prometheus.Registry) auditMetrics {
	m := auditMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_audit_records_total", Help: "Audit records written, by output (file, stdout, syslog).",
		}, []string{"output"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbc_audit_dropped_total", Help: "Audit records lost, by output and reason: queue_full (the output could not keep up; the SIP path never waits), write_error (the write, fsync or send failed), closed (the output was being closed by a reload or shutdown).",
		}, []string{"output", "reason"}),
	}
	for _, o := range auditOutputs {
		m.records.WithLabelValues(o)
		for _, r := range auditDropReasons {
			m.dropped.WithLabelValues(o, r)
		}
	}
	r.MustRegister(m.records, m.dropped)
	return m
}

// auditConfig converts the policy's [audit].
func (s *SBC) auditConfig(p *policy.Policy) audit.Config {
	a := p.Audit
	host, _ := os.Hostname()
	cfg := audit.Config{
		Events: a.EventKinds(), RedactFields: a.RedactFields, MaskDigits: a.MaskNumbers,
		File: a.File, MaxSize: int64(a.MaxSize), Keep: a.Keep,
		Syslog: a.Syslog, SyslogFacility: a.Facility, Hostname: host, AppName: "sbc",
		QueueSize: a.QueueSize,
		Hooks: audit.Hooks{
			Written: func(o string) { s.metrics.audit.records.WithLabelValues(o).Inc() },
			Dropped: func(o, r string) { s.metrics.audit.dropped.WithLabelValues(o, r).Inc() },
		},
	}
	if a.Stdout {
		cfg.Stdout = os.Stdout
	}
	return cfg
}

// openAudit opens p's audit log, taking over the outputs of the one in
// service that it names again. Nil when p configures no output.
func (s *SBC) openAudit(p *policy.Policy) (*audit.Log, error) {
	if !p.Audit.Enabled() {
		return nil, nil
	}
	s.out.mu.Lock()
	prev := s.out.log
	s.out.mu.Unlock()
	return audit.Open(s.auditConfig(p), prev) // errors say "audit: …"
}

// currentAudit is the audit log in service.
func (s *SBC) currentAudit() *audit.Log {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.log
}

// setAudit puts l in service (and the outputs in the Mux), then closes
// what the previous log used and l does not.
func (s *SBC) setAudit(l *audit.Log) {
	s.out.mu.Lock()
	prev := s.out.log
	s.out.log = l
	s.setSinks()
	s.out.mu.Unlock()
	if prev != nil {
		prev.Retire(l)
	}
}

// setSinks sets the Mux's outputs: Options.Events, the audit log and
// the webhooks (outputs.go, between Start and Close). The caller holds
// s.out.mu.
func (s *SBC) setSinks() {
	var sinks []events.Sink
	if s.extraSink != nil {
		sinks = append(sinks, s.extraSink)
	}
	if s.out.log != nil {
		sinks = append(sinks, s.out.log)
	}
	if o := s.ops.Load(); o != nil {
		sinks = append(sinks, o.sinks()...)
	}
	s.events.Set(sinks...)
}

// closeAudit writes out and closes the audit log (Close).
func (s *SBC) closeAudit() {
	s.out.mu.Lock()
	l := s.out.log
	s.out.log = nil
	s.setSinks()
	s.out.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// loadKeyring reads the master key(s) p names (or the environment).
func loadKeyring(p *policy.Policy) (*secrets.Keyring, error) {
	// Errors say "secrets: …".
	return secrets.LoadKeyring(secrets.Sources{KeyFile: p.Secrets.MasterKeyFile, PreviousKeyFile: p.Secrets.PreviousKeyFile})
}

// openSecrets opens the sealed values of p with keys (values in clear
// pass through), into the fields the runtime reads: an error names the
// setting, so a missing or wrong master key fails the start or the
// reload clearly.
func openSecrets(p *policy.Policy, keys *secrets.Keyring) error {
	for i := range p.Pools {
		a := p.Pools[i].Auth
		if a == nil {
			continue
		}
		v, err := keys.Reveal(a.Password)
		if err != nil {
			return fmt.Errorf("pool %s: auth.password: %w", p.Pools[i].Name, err)
		}
		a.Clear = v
	}
	for i := range p.Webhooks {
		w := &p.Webhooks[i]
		if !secrets.IsSealed(string(w.Key)) {
			continue
		}
		v, err := keys.Reveal(string(w.Key))
		if err != nil {
			return fmt.Errorf("webhook %s: secret: %w", w.Name, err)
		}
		if len(v) < policy.MinWebhookSecret {
			return fmt.Errorf("webhook %s: secret: %d bytes once opened, at least %d", w.Name, len(v), policy.MinWebhookSecret)
		}
		w.Key = []byte(v)
	}
	v, err := keys.Reveal(p.HEP.Password)
	if err != nil {
		return fmt.Errorf("hep: password: %w", err)
	}
	p.HEP.AuthKey = v
	return nil
}

// resealDTLSKey re-seals the DTLS private key of state_dir
// (srtp.SealedKeyFileName) under the current master key when it is sealed
// under another one: during a rotation the SBC opens it with the previous
// key, and once previous_key_file is gone the next start must still open
// it. It is called at start and after each reload, with the keys in force;
// the file is replaced atomically, by the SBC's own user. It reports
// whether it re-sealed.
func resealDTLSKey(stateDir string, keys *secrets.Keyring) (bool, error) {
	if stateDir == "" || keys == nil {
		return false, nil
	}
	path := filepath.Join(stateDir, srtp.SealedKeyFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if id, err := secrets.KeyID(strings.TrimSpace(string(b))); err == nil && id == keys.CurrentID() {
		return false, nil
	}
	n, err := keys.ResealFile(path)
	return n > 0, err
}

// resealDTLS is resealDTLSKey with its outcome logged: a failure does not
// stop the SBC (the key in service is in memory) but must be fixed before
// the previous master key is removed.
func (s *SBC) resealDTLS(stateDir string, keys *secrets.Keyring) {
	done, err := resealDTLSKey(stateDir, keys)
	switch {
	case err != nil:
		s.log.Error("the DTLS key in state_dir could not be re-sealed under the current master key: keep the previous master key until a start or reload re-seals it, or the next start without it fails",
			"file", filepath.Join(stateDir, srtp.SealedKeyFileName), "error", err.Error())
	case done:
		s.log.Info("DTLS key re-sealed under the current master key", "file", filepath.Join(stateDir, srtp.SealedKeyFileName), "key_id", keys.CurrentID())
	}
}

// Keyring returns the master key(s) in service, nil when none is
// configured. Settings that hold secrets open sealed values with it
// (Keyring.Reveal passes a value in clear through).
func (s *SBC) Keyring() *secrets.Keyring { return s.out.keys.Load() }

// sealer is the keyring as the media plane's KeySealer (nil when no key).
func sealer(r *secrets.Keyring) srtp.KeySealer {
	if r == nil {
		return nil
	}
	return r
}

// maxEventValue caps a value a peer chose (User-Agent, From user) in an
// event: a record must not grow with what an attacker sends.
const maxEventValue = 256

// capped is v cut to maxEventValue bytes (on a rune boundary).
func capped(v string) string {
	if len(v) <= maxEventValue {
		return v
	}
	i := maxEventValue
	for i > 0 && !utf8.RuneStart(v[i]) {
		i--
	}
	return v[:i]
}

// headerValue is the value of req's header name, capped; "" if absent.
func headerValue(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return capped(h.Value())
	}
	return ""
}

// auditBlockBuffer is the change-feed buffer of auditBlocks: the
// blocklist's largest bursts (an aggregation replacing many entries) fit.
const auditBlockBuffer = 1 << 16

// auditBlocks reports every change of the blocklist as blocked or
// unblocked: automatic blocks with their failure as reason, aggregations,
// manual ones (admin API, CLI), expiries and removals by the never-block
// list. It reads the blocklist's change feed, off the SIP path. If the
// feed fell behind (more than auditBlockBuffer changes at once), the
// changes in between are not reported one by one: a WARN says so.
// The subscription is made by the caller (Start) before the goroutine
// runs: a block made right after Start is reported too.
func (s *SBC) auditBlocks(ctx context.Context, sub *acl.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-sub.C():
			if !ok {
				return
			}
			if ch.Op == acl.OpResync {
				sub.Resync()
				s.log.Warn("audit: blocklist changes were not reported one by one (the feed fell behind)")
				continue
			}
			s.emit(blockEvent(ch))
		}
	}
}

// blockEvent is the event of one blocklist change: source_ip is the
// address of a single-address prefix, else the prefix (always in
// detail.prefix).
func blockEvent(ch acl.Change) events.Event {
	e := ch.Entry
	src := e.Prefix.String()
	if e.Prefix.IsSingleIP() {
		src = e.Prefix.Addr().String()
	}
	ev := events.Event{Kind: events.Blocked, SourceIP: src, Reason: capped(e.Reason),
		Detail: map[string]string{"origin": e.Origin.String(), "prefix": e.Prefix.String()}}
	if !e.Expires.IsZero() {
		ev.Detail["expires"] = e.Expires.UTC().Format(time.RFC3339)
	}
	if e.Forced {
		ev.Detail["forced"] = "true"
	}
	if ch.Op == acl.OpRemove {
		ev.Kind = events.Unblocked
		ev.Detail["cause"] = ch.Cause.String()
	}
	return ev
}
