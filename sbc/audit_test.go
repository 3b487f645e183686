package sbc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/audit"
	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/secrets"
	"github.com/sbc-project/sbc/srtp"
)

// auditRecords reads the audit file's records (those written so far).
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func recordsOf(recs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["event"] == kind {
			out = append(out, r)
		}
	}
	return out
}

// TestAuditLogOfAnSBC runs an SBC with an audit file and checks the
// records of what happens to it: the policy it starts with, a call
// (started, terminated with its duration, numbers masked), failed
// REGISTER guesses (auth_failure, the last with the AoR's lock), a manual
// block that expires (blocked, unblocked), a reload that changes the
// redaction (the same file keeps its chain); after Close the file
// verifies as one chain.
func TestAuditLogOfAnSBC(t *testing.T) {
	users := map[string]string{"1001": "Rq7-1001-xz"}
	reg := newDigestRegistrar(t, "pbx.example.com", users)
	path := filepath.Join(t.TempDir(), "audit", "audit.log")
	e := newEnv(t, envOpts{
		limits: &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "customers", Realm: "external", Sources: []string{strangerIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{"pbx.example.com"},
			})
			p.Pools = append(p.Pools, testpolicy.Pool{
				Name: "reg", Realm: "internal", Targets: testpolicy.Targets(reg.addr),
				Health: &testpolicy.Health{Interval: policy.D(0)},
			})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "customers", Pool: "reg"})
			p.Audit = &testpolicy.Audit{File: path, MaskNumbers: 4}
		},
	})
	wait := func(what string, cond func([]map[string]any) bool) []map[string]any {
		t.Helper()
		var recs []map[string]any
		e.eventually(what, func() bool { recs = auditRecords(t, path); return cond(recs) })
		return recs
	}
	wait("config_changed at start", func(r []map[string]any) bool { return len(recordsOf(r, "config_changed")) == 1 })

	// A call, answered and hung up by the caller.
	call, res := e.dial(sipuaDial("+4930123456", "+14155550100"))
	if res.StatusCode != 200 {
		t.Fatalf("call answered %d", res.StatusCode)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	recs := wait("call_terminated", func(r []map[string]any) bool { return len(recordsOf(r, "call_terminated")) == 1 })
	st, end := recordsOf(recs, "call_started")[0], recordsOf(recs, "call_terminated")[0]
	for _, r := range []map[string]any{st, end} {
		if r["session_id"] == nil || r["session_id"] != st["session_id"] || r["call_id"] != call.CallID() ||
			r["caller_id"] != "+******3456" || r["called_number"] != "+*******0100" || r["source_ip"] != callerIP ||
			r["user_agent"] != "CarrierSwitch/1.0" || r["trunk"] != "carrier" || r["realm"] != "external" {
			t.Errorf("call record %v", r)
		}
	}
	if end["reason"] != resultAnswered || end["duration_ms"] == nil {
		t.Errorf("call_terminated %v: want reason answered and a duration", end)
	}
	if bytes.Contains(must(os.ReadFile(path)), []byte("30123456")) {
		t.Error("an unmasked number is in the audit log")
	}

	// Five wrong passwords for one AoR: five auth_failure records, the
	// fifth locks the AoR.
	wrong := []string{"g1", "g2", "g3", "g4", "g5"}
	rep, err := attack.DigestBruteForce(e.ctx, attack.DigestBruteForceConfig{
		Target: e.extAddr(), Local: netip.MustParseAddrPort(strangerIP + ":0"), Domain: "pbx.example.com",
		Extension: "1001", Passwords: wrong, UserAgent: "Zoiper rv2.10", Timeout: 2 * time.Second, MaxTimeouts: 1,
	})
	if err != nil || rep.Refused != 5 {
		t.Fatalf("guesses: %v %+v", err, rep)
	}
	recs = wait("5 auth_failure", func(r []map[string]any) bool { return len(recordsOf(r, "auth_failure")) == 5 })
	af := recordsOf(recs, "auth_failure")
	for i, r := range af {
		d, _ := r["detail"].(map[string]any)
		if r["source_ip"] != strangerIP || r["reason"] != reasonRegisterGuess || r["user_agent"] != "Zoiper rv2.10" ||
			r["trunk"] != "customers" || d["aor"] != "1001@pbx.example.com" || d["proof"] != proofNonce {
			t.Errorf("auth_failure %d: %v", i, r)
		}
		if _, locked := d["locked_until"]; locked != (i == 4) {
			t.Errorf("auth_failure %d: locked_until %v", i, d["locked_until"])
		}
	}

	// A manual block that expires.
	blocked := netip.MustParsePrefix("192.0.2.0/24")
	if err := e.sbc.def.blocklist.Add(acl.Entry{Prefix: blocked, Reason: "ticket 42", Origin: acl.OriginManual,
		Expires: time.Now().Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	recs = wait("unblocked", func(r []map[string]any) bool { return len(recordsOf(r, "unblocked")) == 1 })
	b, u := recordsOf(recs, "blocked")[0], recordsOf(recs, "unblocked")[0]
	if b["source_ip"] != blocked.String() || b["reason"] != "ticket 42" || b["detail"].(map[string]any)["origin"] != "manual" ||
		b["detail"].(map[string]any)["expires"] == nil {
		t.Errorf("blocked %v", b)
	}
	if u["source_ip"] != blocked.String() || u["detail"].(map[string]any)["cause"] != "expired" {
		t.Errorf("unblocked %v", u)
	}

	// A reload that redacts user_agent: the file output is kept, its
	// chain continues.
	pb := e.pb.Clone()
	pb.Audit.RedactFields = []string{"user_agent"}
	if err := e.sbc.Reload(pb.Parse(t)); err != nil {
		t.Fatal(err)
	}
	call2, _ := e.dial(sipuaDial("100", "200"))
	_ = call2.Bye(e.ctx)
	recs = wait("second call_terminated", func(r []map[string]any) bool { return len(recordsOf(r, "call_terminated")) == 2 })
	if ua := recordsOf(recs, "call_terminated")[1]["user_agent"]; ua != audit.Redacted {
		t.Errorf("after the reload, user_agent %v, want redacted", ua)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.audit.records.WithLabelValues(audit.OutputFile)); int(n) != len(recs) {
		t.Errorf("sbc_audit_records_total{output=file} %v, %d records in the file", n, len(recs))
	}
	e.sbc.Close()
	res2, err := audit.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Anchored || res2.Records < 13 {
		t.Fatalf("%+v: want one anchored chain of every record", res2)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.audit.dropped.WithLabelValues(audit.OutputFile, audit.DropQueueFull)); n != 0 {
		t.Errorf("%v records dropped", n)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestAuditOutputsFollowReload: a reload that names a file the SBC cannot
// open is refused and keeps the log in service; one that moves the log to
// another file closes the first (its chain ends there) and starts the
// second.
func TestAuditOutputsFollowReload(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Audit = &testpolicy.Audit{File: first} }})
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := e.pb.Clone()
	bad.Audit.File = filepath.Join(blocker, "audit.log") // a file is no directory
	if err := e.sbc.Reload(bad.Parse(t)); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("reload to an unusable file: %v", err)
	}
	moved := e.pb.Clone()
	moved.Audit.File = second
	if err := e.sbc.Reload(moved.Parse(t)); err != nil {
		t.Fatal(err)
	}
	e.eventually("records in both files", func() bool {
		a, b := auditRecords(t, first), auditRecords(t, second)
		return len(recordsOf(a, "reload_failed")) == 1 && len(recordsOf(b, "config_changed")) == 1
	})
	if n := len(recordsOf(auditRecords(t, first), "config_changed")); n != 1 {
		t.Errorf("the first file has %d config_changed, want only the start's", n)
	}
	e.sbc.Close()
	for _, f := range []string{first, second} {
		if _, err := audit.Verify(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSecretsSealDTLSKey: with a master key the DTLS key in state_dir is
// sealed; the same key starts again with the same certificate; another
// key, no key, or an unreadable key file fail New with the reason.
func TestSecretsSealDTLSKey(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	keyFile := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(secrets.GenerateKey()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k1, k2 := keyFile("k1"), keyFile("k2")
	build := func(key string) (*SBC, error) {
		pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5999")
		pb.Server.StateDir = state
		if key != "" {
			pb.Secrets = &testpolicy.Secrets{MasterKeyFile: key}
		}
		s, err := New(pb.Parse(t), Options{Logger: testLogger()})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	t.Setenv(secrets.EnvKey, "")
	s1, err := build(k1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, srtp.KeyFileName)); !os.IsNotExist(err) {
		t.Fatal("a plain DTLS key was written with a master key")
	}
	if s1.Keyring() == nil {
		t.Fatal("no keyring")
	}
	s1b, err := build(k1)
	if err != nil || s1b.media.cert.Fingerprint.String() != s1.media.cert.Fingerprint.String() {
		t.Fatalf("restart with the same key: %v", err)
	}
	for _, tc := range []struct{ key, want string }{
		{k2, "does not open"},
		{"", "no master key"},
		{filepath.Join(dir, "missing"), "master key file"},
	} {
		_, err := build(tc.key)
		t.Logf("key %q: %v", tc.key, err)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("key %q: %v, want an error with %q", tc.key, err, tc.want)
		}
	}
	// The environment variable works as the file does.
	raw, _ := os.ReadFile(k1)
	t.Setenv(secrets.EnvKey, strings.TrimSpace(string(raw)))
	if _, err := build(""); err != nil {
		t.Fatalf("key from %s: %v", secrets.EnvKey, err)
	}
}

func sipuaDial(from, to string) sipua.DialOptions { return sipua.DialOptions{From: from, User: to} }

// TestSecretsSealedWebhookSecretEnv: a webhook secret given through
// secret_env may be sealed too (docs/OPERATOR.md says so): it is opened
// with the master key; without the key the policy does not apply.
func TestSecretsSealedWebhookSecretEnv(t *testing.T) {
	const secret = "a-webhook-secret-for-the-test"
	sealed, keys := sealUnderKey(t, secrets.GenerateKey(), secret)
	t.Setenv("SBC_TEST_WEBHOOK_SECRET", sealed)
	pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5999")
	pb.Webhooks = []testpolicy.Webhook{{Name: "ops", URL: "http://127.0.0.1:9/hook", Events: []string{"cdr"}, SecretEnv: "SBC_TEST_WEBHOOK_SECRET"}}
	p := pb.Parse(t)
	if err := openSecrets(p, keys); err != nil {
		t.Fatal(err)
	}
	if string(p.Webhooks[0].Key) != secret {
		t.Errorf("webhook key %q, want the opened secret", p.Webhooks[0].Key)
	}
	if err := openSecrets(pb.Parse(t), nil); err == nil || !strings.Contains(err.Error(), "webhook ops: secret") {
		t.Errorf("without a master key: %v, want an error naming the webhook's secret", err)
	}
}

// TestSecretsRotationKeepsDTLSKey: a master key rotation (new key
// current, the old one previous; later the previous removed) keeps the
// DTLS certificate: the SBC re-seals state_dir/dtls-key.sealed under the
// current key when it starts, or reloads, with both keys, so the start
// after previous_key_file is gone opens it. Before, it stayed sealed
// under the old key and that start failed.
func TestSecretsRotationKeepsDTLSKey(t *testing.T) {
	t.Setenv(secrets.EnvKey, "")
	t.Setenv(secrets.EnvPreviousKey, "")
	dir := t.TempDir()
	keyFile := func(name string) (string, string) {
		p := filepath.Join(dir, name)
		k := secrets.GenerateKey()
		if err := os.WriteFile(p, []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := secrets.ParseKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return p, key.ID()
	}
	k1, _ := keyFile("k1")
	k2, id2 := keyFile("k2")
	pol := func(state, cur, prev string) *testpolicy.Policy {
		pb := testpolicy.New(sbcExtIP, sbcIntIP, backendIP+":5999")
		pb.Server.StateDir = state
		pb.Secrets = &testpolicy.Secrets{MasterKeyFile: cur, PreviousKeyFile: prev}
		return pb
	}
	build := func(pb *testpolicy.Policy) (*SBC, error) {
		s, err := New(pb.Parse(t), Options{Logger: testLogger()})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	sealedUnder := func(state string) string {
		b, err := os.ReadFile(filepath.Join(state, srtp.SealedKeyFileName))
		if err != nil {
			t.Fatal(err)
		}
		id, err := secrets.KeyID(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, how := range []string{"restart", "reload"} {
		t.Run(how, func(t *testing.T) {
			state := filepath.Join(dir, how)
			s1, err := build(pol(state, k1, ""))
			if err != nil {
				t.Fatal(err)
			}
			fp := s1.media.cert.Fingerprint.String()
			both := pol(state, k2, k1)
			if how == "restart" {
				s1.Close()
				if _, err := build(both); err != nil {
					t.Fatalf("start with both keys: %v", err)
				}
			} else if err := s1.Reload(both.Parse(t)); err != nil {
				t.Fatalf("reload with both keys: %v", err)
			}
			if got := sealedUnder(state); got != id2 {
				t.Errorf("after the %s with both keys the DTLS key is sealed under %s, want the new key %s", how, got, id2)
			}
			s3, err := build(pol(state, k2, ""))
			if err != nil {
				t.Fatalf("start with the new key only: %v", err)
			}
			if got := s3.media.cert.Fingerprint.String(); got != fp {
				t.Errorf("fingerprint changed across the rotation: %s, was %s", got, fp)
			}
			// Keys that do not open it: an error (logged), the file kept.
			old, err := secrets.LoadKeyring(secrets.Sources{KeyFile: k1})
			if err != nil {
				t.Fatal(err)
			}
			if done, err := resealDTLSKey(state, old); done || !errors.Is(err, secrets.ErrNoKey) {
				t.Errorf("re-seal without the key it is sealed under: %v %v, want ErrNoKey", done, err)
			}
			if got := sealedUnder(state); got != id2 {
				t.Errorf("a failed re-seal changed the file: sealed under %s", got)
			}
		})
	}
}
