package policy

import (
	"strings"
	"testing"

	"github.com/sbc-project/sbc/events"
)

func TestAuditDefaultsAndValues(t *testing.T) {
	p := mustParse(t, minimal)
	a := p.Audit
	if a.Enabled() || a.MaxSize != DefaultAuditMaxSize || a.Keep != DefaultAuditKeep || a.QueueSize != DefaultAuditQueueSize || a.Facility != 16 {
		t.Fatalf("defaults: %+v", a)
	}
	p = mustParse(t, minimal+`
[audit]
file = "/var/lib/sbc/audit.log"
max_size = 0
syslog = "tcp://127.0.0.1:601"
syslog_facility = "audit"
redact_fields = ["user_agent", "detail.error"]
mask_numbers = 4
events = ["blocked", "auth_failure"]
`)
	a = p.Audit
	if !a.Enabled() || a.MaxSize != 0 || a.Facility != 13 || a.MaskNumbers != 4 {
		t.Fatalf("values: %+v", a)
	}
	if k := a.EventKinds(); len(k) != 2 || k[0] != events.Blocked {
		t.Fatalf("kinds %v", k)
	}
}

func TestAuditErrors(t *testing.T) {
	_, err := Parse("t.toml", []byte(minimal+`
[audit]
max_size = 100
keep = 0
syslog = "tls://127.0.0.1:6514"
syslog_facility = "local9"
redact_fields = ["hash"]
events = ["call_startd"]
mask_numbers = -1
queue_size = 1
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"t.toml:8:12: audit.max_size: must be 0 (never rotate) or at least 4096",
		"t.toml:9:8: audit.keep: must be between 1 and 1000",
		"t.toml:10:10: audit.syslog:",
		`t.toml:11:19: audit.syslog_facility: unknown facility "local9"`,
		`t.toml:12:18: audit.redact_fields[0]: unknown field "hash"`,
		`t.toml:13:11: audit.events[0]: unknown event "call_startd"`,
		"t.toml:14:16: audit.mask_numbers: must be between 0 and 32",
		"t.toml:15:14: audit.queue_size: must be between 16 and 1048576",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
