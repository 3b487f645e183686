package policy

import (
	"strings"
	"testing"
	"time"
)

// TestOperatorOutputs: [cdr], [hep] and [[webhook]] take their defaults,
// a secret from the environment, and refuse what would fail later or leak.
func TestOperatorOutputs(t *testing.T) {
	t.Setenv("SBC_TEST_HOOK_SECRET", "from-the-environment-0123")
	p := mustParse(t, minimal+`
[cdr]
enabled = true
file = "/var/lib/sbc/cdr.jsonl"
[hep]
enabled = true
address = "[::ffff:192.0.2.20]:9060"
agent_id = 4294967295
[[webhook]]
name = "ops"
url = "https://hooks.example.net/sbc"
events = ["blocked", "cdr"]
secret_env = "SBC_TEST_HOOK_SECRET"
[[webhook]]
name = "local"
url = "http://[::1]:8080/in"
events = ["reload_failed"]
secret = "0123456789abcdef"
max_attempts = 2
`)
	if c := p.CDR; c.MaxSizeMB != DefaultCDRMaxSizeMB || c.MaxFiles != DefaultCDRMaxFiles || c.Queue != DefaultCDRQueue {
		t.Errorf("cdr defaults %+v", c)
	}
	if h := p.HEP; h.Addr.String() != "192.0.2.20:9060" || h.AgentID != 1<<32-1 || h.Queue != DefaultHEPQueue {
		t.Errorf("hep %+v", h)
	}
	w := p.Webhooks[0]
	if string(w.Key) != "from-the-environment-0123" || w.Timeout.Duration != DefaultWebhookTimeout ||
		w.MaxAttempts != DefaultWebhookMaxAttempts || w.MaxBackoff.Duration != 30*time.Second || w.Queue != DefaultWebhookQueue {
		t.Errorf("webhook defaults %+v", w)
	}
	if !w.Wants("cdr") || !w.Wants("blocked") || w.Wants("unblocked") {
		t.Errorf("Wants: %v", w.Events)
	}
	if l := p.Webhooks[1]; string(l.Key) != "0123456789abcdef" || l.MaxAttempts != 2 {
		t.Errorf("second webhook %+v", l)
	}

	_, err := Parse("t.toml", []byte(minimal+`
[cdr]
enabled = true
max_files = -1
[hep]
enabled = true
address = "collector:9060"
[[webhook]]
name = "a"
url = "http://192.0.2.1/x"
events = ["blocked", "calls", "blocked"]
secret = "short"
[[webhook]]
name = "a"
url = "ftp://user:pw@hooks.example.net/"
events = []
secret = "0123456789abcdef"
secret_env = "X"
[[webhook]]
name = "b"
url = "ftp://x"
events = ["cdr"]
secret_env = "SBC_TEST_UNSET_VARIABLE"
[[webhook]]
name = "c"
url = "https://hooks.example.net/"
events = ["cdr"]
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"cdr.max_files: must be between 0 and 1000 (got -1)",
		"cdr.enabled: cdr needs file",
		`hep.address: invalid address "collector:9060"`,
		`webhook[0].url: plain http only to a loopback address`,
		`webhook[0].events[1]: unknown event "calls"`,
		`webhook[0].events[2]: duplicate event "blocked"`,
		"webhook[0].secret: the secret is 5 bytes: at least 16",
		`webhook[1].name: duplicate webhook name "a"`,
		"webhook[1].url: credentials in the url are not allowed",
		"webhook[1].events: events is required",
		"webhook[1].secret_env: give secret or secret_env, not both",
		"webhook[2].url: invalid url: want https://host/path",
		`webhook[2].secret_env: environment variable "SBC_TEST_UNSET_VARIABLE" is not set`,
		"webhook[3].secret: secret (or secret_env) is required",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in\n%v", want, err)
		}
	}
	// A secret never appears in an error.
	if strings.Contains(err.Error(), "0123456789abcdef") || strings.Contains(err.Error(), "user:pw") {
		t.Errorf("a secret in the errors:\n%v", err)
	}
}
