package policy

import (
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sbc-project/sbc/events"
)

// CDRKind is the webhook event name of call detail records: webhooks
// select it in events next to the kinds of package events.
const CDRKind = "cdr"

// Defaults of [cdr], [hep] and [[webhook]].
const (
	DefaultCDRMaxSizeMB       = 100
	DefaultCDRMaxFiles        = 10
	DefaultCDRQueue           = 4096
	DefaultHEPQueue           = 8192
	DefaultWebhookTimeout     = 5 * time.Second
	DefaultWebhookMaxAttempts = 6
	DefaultWebhookMaxBackoff  = 30 * time.Second
	DefaultWebhookQueue       = 1024
	// MinWebhookSecret is the shortest webhook secret accepted, in bytes.
	MinWebhookSecret = 16
)

// operator validates the operator outputs: [cdr], [hep], [[webhook]].
func (v *validator) operator() {
	c := &v.p.CDR
	v.intField("cdr.max_size_mb", &c.MaxSizeMB, DefaultCDRMaxSizeMB, 1, 100000)
	v.intField("cdr.max_files", &c.MaxFiles, DefaultCDRMaxFiles, 0, 1000)
	v.intField("cdr.queue", &c.Queue, DefaultCDRQueue, 1, 1000000)
	if c.Enabled && c.File == "" {
		v.errf("cdr.enabled", "cdr needs file = \"/var/lib/sbc/cdr.jsonl\" (or another path)")
	}

	h := &v.p.HEP
	v.intField("hep.queue", &h.Queue, DefaultHEPQueue, 1, 1000000)
	v.intField("hep.agent_id", &h.AgentID, 0, 0, 1<<32-1)
	if h.Address != "" {
		ap, err := netip.ParseAddrPort(h.Address)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			v.errf("hep.address", "invalid address %s: want the collector's ip:port with an IP literal, e.g. \"192.0.2.20:9060\"", quote(h.Address))
		} else {
			h.Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	} else if h.Enabled {
		v.errf("hep.enabled", "hep needs address = \"ip:port\" of the collector")
	}

	v.names("webhook", len(v.p.Webhooks), func(i int) string { return v.p.Webhooks[i].Name })
	for i := range v.p.Webhooks {
		v.webhook(elemPath("webhook", i), &v.p.Webhooks[i])
	}
}

func (v *validator) webhook(wp string, w *Webhook) {
	u, err := url.Parse(w.URL)
	switch {
	case w.URL == "":
		v.errf(wp+".url", "url is required")
	case err == nil && u.User != nil:
		v.errf(wp+".url", "credentials in the url are not allowed (they would be logged): the signature authenticates the SBC")
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		v.errf(wp+".url", "invalid url: want https://host/path")
	case u.Scheme == "http":
		ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]"))
		if err != nil || !ip.IsLoopback() {
			v.errf(wp+".url", "plain http only to a loopback address (got %s): use https", quote(u.Host))
		}
	}
	if len(w.Events) == 0 {
		v.errf(wp+".events", "events is required: some of %s, or %q", kindList(), CDRKind)
	}
	seen := map[string]bool{}
	for j, e := range w.Events {
		switch {
		case seen[e]:
			v.errf(elemPath(wp+".events", j), "duplicate event %s", quote(e))
		case e != CDRKind && !events.Kind(e).Valid():
			v.errf(elemPath(wp+".events", j), "unknown event %s (want one of %s, or %q)", quote(e), kindList(), CDRKind)
		}
		seen[e] = true
	}
	switch {
	case w.Secret != "" && w.SecretEnv != "":
		v.errf(wp+".secret_env", "give secret or secret_env, not both")
	case w.Secret != "":
		w.Key = []byte(w.Secret)
	case w.SecretEnv != "":
		val, ok := os.LookupEnv(w.SecretEnv)
		if !ok {
			v.errf(wp+".secret_env", "environment variable %s is not set", quote(w.SecretEnv))
			return
		}
		w.Key = []byte(val)
	default:
		v.errf(wp+".secret", "secret (or secret_env) is required: the HMAC-SHA256 key receivers check")
		return
	}
	if len(w.Key) > 0 && len(w.Key) < MinWebhookSecret {
		path := wp + ".secret"
		if w.SecretEnv != "" {
			path = wp + ".secret_env"
		}
		v.errf(path, "the secret is %d bytes: at least %d", len(w.Key), MinWebhookSecret)
	}
	v.duration(wp+".timeout", &w.Timeout, DefaultWebhookTimeout, true)
	v.duration(wp+".max_backoff", &w.MaxBackoff, DefaultWebhookMaxBackoff, true)
	v.intField(wp+".max_attempts", &w.MaxAttempts, DefaultWebhookMaxAttempts, 1, 20)
	v.intField(wp+".queue", &w.Queue, DefaultWebhookQueue, 1, 100000)
}

func kindList() string {
	out := make([]string, len(events.Kinds))
	for i, k := range events.Kinds {
		out[i] = string(k)
	}
	return strings.Join(out, ", ")
}

// Wants reports whether the webhook selects kind (an events.Kind or
// CDRKind).
func (w *Webhook) Wants(kind string) bool {
	for _, e := range w.Events {
		if e == kind {
			return true
		}
	}
	return false
}
