package sbc

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/secrets"
	"github.com/sbc-project/sbc/webhook"
)

// TestWebhookFromPolicy: a [[webhook]] of the policy receives, signed, the
// CDR of a call and the config_changed event of a reload; the kinds it
// did not select (reload_failed here) are not sent; every request passes
// the receiver's Verify.
func TestWebhookFromPolicy(t *testing.T) {
	const secret = "a-webhook-secret-for-the-test"
	type got struct {
		kind string
		data map[string]any
	}
	var mu sync.Mutex
	var recv []got
	var bad []error
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.SignatureHeader), body, time.Now(), 0); err != nil {
			bad = append(bad, err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var env struct {
			Kind string         `json:"kind"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil || env.Kind != r.Header.Get(webhook.EventHeader) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		recv = append(recv, got{env.Kind, env.Data})
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	// The secret is sealed in the policy (sbc secrets seal): the SBC
	// signs with the secret it opens, at start and after the reload.
	sealed, _ := sealUnderKey(t, secrets.GenerateKey(), secret)
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Webhooks = []testpolicy.Webhook{{Name: "ops", URL: srv.URL + "/hook", Events: []string{"cdr", "config_changed"}, Secret: sealed}}
	}})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	// The policy re-sealed under a new master key (sbc secrets rotate),
	// the old one kept as the previous key: the same secret, so the
	// reload is no restart change.
	oldKey := os.Getenv(secrets.EnvKey)
	t.Setenv(secrets.EnvKey, secrets.GenerateKey())
	t.Setenv(secrets.EnvPreviousKey, oldKey)
	rotated, err := secrets.LoadKeyring(secrets.Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if e.pb.Webhooks[0].Secret, err = rotated.Seal([]byte(secret)); err != nil || e.pb.Webhooks[0].Secret == sealed {
		t.Fatalf("re-sealed: %v", err)
	}
	if err := e.sbc.Reload(e.pb.Parse(t)); err != nil {
		t.Fatal(err)
	}
	e.eventually("the CDR and the reload delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(recv) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) != 0 {
		t.Fatalf("signatures refused: %v", bad)
	}
	kinds := map[string]map[string]any{}
	for _, g := range recv {
		kinds[g.kind] = g.data
	}
	if c := kinds["cdr"]; c == nil || c["call_id_a"] != call.CallID() || c["sbc_reason"] != "answered" {
		t.Errorf("cdr %v", c)
	}
	if c := kinds["config_changed"]; c == nil || c["reason"] != ReloadOK {
		t.Errorf("config_changed %v", c)
	}
	if len(recv) != 2 {
		t.Errorf("received %d events, want 2: %v", len(recv), recv)
	}
	mu.Unlock()
	// The hook counts a delivery once the receiver's answer is back.
	e.eventually("both deliveries counted", func() bool { return e.sbc.ops.Load().stats().hooks["ops"].Delivered == 2 })
	if st := e.sbc.ops.Load().stats().hooks["ops"]; st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	mu.Lock()
}

// sealUnderKey makes key the master key (SBC_MASTER_KEY, for the test)
// and returns clear sealed under it, as "sbc secrets seal" writes it, and
// the keyring.
func sealUnderKey(t *testing.T, key, clear string) (string, *secrets.Keyring) {
	t.Helper()
	t.Setenv(secrets.EnvKey, key)
	keys, err := secrets.LoadKeyring(secrets.Sources{})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := keys.Seal([]byte(clear))
	if err != nil {
		t.Fatal(err)
	}
	return sealed, keys
}
