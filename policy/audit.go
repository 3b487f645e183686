package policy

import (
	"github.com/sbc-project/sbc/audit"
	"github.com/sbc-project/sbc/events"
)

// Defaults of [audit].
const (
	DefaultAuditMaxSize   = 100 << 20
	DefaultAuditKeep      = 10
	DefaultAuditQueueSize = audit.DefaultQueueSize
	DefaultAuditFacility  = "local0"
	minAuditMaxSize       = 4096
)

// EventKinds returns the audit filter as event kinds (nil: all).
func (a *Audit) EventKinds() []events.Kind {
	var out []events.Kind
	for _, e := range a.Events {
		out = append(out, events.Kind(e))
	}
	return out
}

func (v *validator) audit() {
	a := &v.p.Audit
	if !v.ix.has("audit.max_size") {
		a.MaxSize = DefaultAuditMaxSize
	} else if a.MaxSize != 0 && a.MaxSize < minAuditMaxSize {
		v.errf("audit.max_size", "must be 0 (never rotate) or at least %d bytes (got %d)", minAuditMaxSize, a.MaxSize)
	}
	v.intField("audit.keep", &a.Keep, DefaultAuditKeep, 1, 1000)
	v.intField("audit.queue_size", &a.QueueSize, DefaultAuditQueueSize, 16, 1<<20)
	v.intField("audit.mask_numbers", &a.MaskNumbers, 0, 0, 32)
	if a.Syslog != "" {
		if _, _, err := audit.ParseSyslogURL(a.Syslog); err != nil {
			v.errf("audit.syslog", "%v", err)
		}
	}
	if a.SyslogFacility == "" {
		a.SyslogFacility = DefaultAuditFacility
	}
	if f, ok := audit.Facilities[a.SyslogFacility]; ok {
		a.Facility = f
	} else {
		v.errf("audit.syslog_facility", "unknown facility %s (want local0 … local7, audit, auth, authpriv, daemon, user or kern)", quote(a.SyslogFacility))
	}
	for i, f := range a.RedactFields {
		if err := audit.CheckRedactField(f); err != nil {
			v.errf(elemPath("audit.redact_fields", i), "%v", err)
		}
	}
	for i, e := range a.Events {
		if !events.Kind(e).Valid() {
			v.errf(elemPath("audit.events", i), "unknown event %s (want one of %v)", quote(e), events.Kinds)
		}
	}
}
